"""Which dataset layout a ``--data`` folder is in, found rather than guessed.

A dataset plugin whose layout a user's folder may be in declares ``recognizes(root) ->
bool`` and a one-line ``layout`` (see :class:`segkit.contracts.DatasetFactory`). With
``--data`` and no ``--dataset``, :func:`detect_layout` asks every installed dataset
plugin that declares ``recognizes``: the one that says yes is used; none or several, and
the run is refused with every layout named. The core names no layout here: the built-ins
(``oxford_pet``, ``folder``) answer exactly as a third party's plugin would.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from segkit.errors import DataError
from segkit.registry import default_registry
from segkit.wording import PYTHON, given, named_as

#: Entries of the folder shown in a refusal before "and N more".
SHOW_ENTRIES = 8


def layouts() -> dict[str, str]:
    """Installed dataset plugins that can recognise a folder: name -> its ``layout`` text.

    A plugin that does not load is left out (``segkit list --check`` reports it)."""
    return {name: text for name, (_, text) in _recognizers().items()}


def _recognizers() -> dict[str, tuple[object, str]]:

    reg = default_registry()
    out: dict[str, tuple[object, str]] = {}
    for name in reg.names("datasets"):
        try:
            info = reg.info("datasets", name)
            recognizes = info.capability("recognizes")
            text = info.capability("layout")
        except Exception:  # noqa: BLE001 -- a broken plugin is `segkit list`'s to report
            continue
        if callable(recognizes):
            out[name] = (recognizes, text or "(the plugin describes no layout)")
    return out


def detect_layout(root: Path) -> str:
    """The name of the one installed dataset plugin that recognises ``root``.

    Raises:
        DataError: ``root`` is not a folder, or no layout (or more than one) recognises
            it; the message names every layout and how its files are laid out, and what
            the folder holds. The settings to pass are named as they were given
            (:func:`segkit.wording.named_as`): ``--dataset`` on the command line,
            ``dataset='folder'`` from Python.
    """
    root = Path(root).expanduser()
    known = _recognizers()
    described = "; ".join(f"{name}: {text}" for name, (_, text) in sorted(known.items()))
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "data folder not found"
        raise DataError(
            f"{root}: {what}; {named_as('data')} names a dataset folder in one of these layouts: "
            f"{described}"
        )
    found = [name for name, (recognizes, _) in sorted(known.items()) if _asks(recognizes, root)]
    if len(found) == 1:
        return found[0]
    if found:
        raise DataError(
            f"{root}: the folder fits {len(found)} layouts ({', '.join(found)}); name the one "
            f"to read with {named_as('dataset', found[0], as_typed=True)} (or "
            f"{', '.join(map(repr if given() == PYTHON else str, found[1:]))})"
        )
    notes = [note for name in sorted(known) if (note := _near_miss(name, root))]
    if notes:  # a layout that comes close says what is missing, then the layouts
        listed = "".join(f"\n  {name}: {text}" for name, (_, text) in sorted(known.items()))
        raise DataError(
            "\n".join(notes) + f"\nthe layouts segkit reads (docs/data.md):{listed}\n"
            f"or name a layout with {named_as('dataset')}"
        )
    raise DataError(
        f"{root}: no dataset layout recognises this folder (it holds {_entries(root)}); "
        f"lay the files out as one of: {described}; or name a layout with {named_as('dataset')}"
    )


def _near_miss(name: str, root: Path) -> str | None:
    """Plugin ``name``'s ``near_miss(root)`` (what keeps its layout from reading a folder
    that comes close, such as images without masks), or None: it declares none, says
    nothing, or fails."""
    try:
        near_miss = default_registry().info("datasets", name).capability("near_miss")
        note = near_miss(root) if callable(near_miss) else None
    except Exception:  # noqa: BLE001 -- like "recognizes", it must not raise: then it says nothing
        return None
    return note.strip() if isinstance(note, str) and note.strip() else None


def _asks(recognizes: object, root: Path) -> bool:
    try:
        return bool(recognizes(root))  # type: ignore[operator]
    except Exception:  # noqa: BLE001 -- "recognizes" must not raise; a plugin that does says no
        return False


def _entries(root: Path) -> str:
    """What ``root`` holds, folders first with a slash: ``imgs/, labels/, notes.txt``."""
    try:
        entries = sorted(
            (not e.is_dir(), e.name + ("/" if e.is_dir() else ""))
            for e in os.scandir(root)
            if not e.name.startswith(".")
        )
    except OSError as e:
        return f"nothing readable: {e.strerror}"
    if not entries:
        return "nothing"
    names = [name for _, name in entries[:SHOW_ENTRIES]]
    more = f" and {len(entries) - SHOW_ENTRIES} more" if len(entries) > SHOW_ENTRIES else ""
    return ", ".join(names) + more


def close_names(stem: str, names: Iterable[str], n: int = 2) -> list[str]:
    """Up to ``n`` of the file ``names`` whose stem is close to ``stem``, for "not found"
    messages that name the near miss: the same name but for case, zero padding or
    extension (``Cell05.PNG`` for ``cell005``); the name with a word before or after it
    (``cell005_mask.png``, ``mask-cell005.png``); or a typo by difflib. A sibling in a
    numbered series (``cell006`` for ``cell005``) is not close."""
    by_stem = {Path(name).stem: name for name in names}
    target = _numbers_as_ints(stem)
    hits = [
        name
        for s, name in by_stem.items()
        if _numbers_as_ints(s) == target or _holds(s, stem) or _holds(stem, s)
    ]
    if not hits:
        skeleton = re.sub(r"\d+", "#", stem.lower())
        typos = [s for s in by_stem if re.sub(r"\d+", "#", s.lower()) != skeleton]
        hits = [by_stem[s] for s in difflib.get_close_matches(stem, typos, n=n, cutoff=0.8)]
    return hits[:n]


def _holds(longer: str, name: str) -> bool:
    """``longer`` is ``name`` with a word before or after it, at a boundary: ``cell005_mask``
    holds ``cell005``; ``cell0051`` does not."""
    if len(longer) <= len(name) or not name:
        return False
    if longer.startswith(name):
        return not longer[len(name)].isalnum()
    return longer.endswith(name) and not longer[-len(name) - 1].isalnum()


def _numbers_as_ints(name: str) -> str:
    return re.sub(r"\d+", lambda m: str(int(m.group())), name.lower())
