"""What decides a run's numbers besides its settings, recorded in ``config.json``, and
what a rerun from that file (``segkit run --config RUN/config.json``) finds different.

A run records its environment (:func:`environment`: Python, segkit and the libraries
that compute its numbers, the platform and the CPU) beside the runtime and the plugins'
distributions. A rerun from a run folder's ``config.json`` compares what it resolves to
with what the file recorded (:func:`rerun_notes`) and says, in one line before the first
epoch, what differs and that the numbers may differ accordingly, and in a warning where
the data's splits are not the samples the run recorded. Neither refuses: a new machine or
new data is a choice, and the lines say what it changes.
"""

from __future__ import annotations

import functools
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: The distributions whose versions a run records, by the name ``config.json`` gives them
#: (``None`` where not installed). DALI is recorded where it is installed under any of its
#: CUDA builds' names.
LIBRARIES = {"numpy": "numpy", "timm": "timm", "albumentations": "albumentations"}

#: DALI's distributions, one per CUDA build.
DALI_DISTRIBUTIONS = ("nvidia-dali-cuda130", "nvidia-dali-cuda120", "nvidia-dali-cuda110")

#: The loaders whose library decides the training batches (its version: the augmentations'
#: numbers), by loader plugin name.
LOADER_LIBRARY = {"albumentations": "albumentations", "dali": "dali"}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s on Linux, else :func:`platform.processor`,
    else the machine type): another CPU may round a seeded run differently."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


#: The most bytes read of a file of ``.git`` (HEAD, a ref, ``packed-refs``).
_GIT_READ = 1 << 20


def _git_text(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(_GIT_READ)
    except (OSError, ValueError):
        return None


def _git_dirs(root: Path) -> tuple[Path, Path] | None:
    """The git directory of the checkout at ``root`` and its common directory (where a
    worktree's shared refs are; the same folder for a plain checkout); None where
    ``root`` is no checkout."""
    dot = root / ".git"
    if dot.is_dir():
        return dot, dot
    text = _git_text(dot) if dot.is_file() else None  # a worktree: "gitdir: PATH"
    if not text or not text.startswith("gitdir:"):
        return None
    gitdir = (root / text[len("gitdir:") :].strip()).resolve()
    common = _git_text(gitdir / "commondir")
    return gitdir, (gitdir / common.strip()).resolve() if common else gitdir


def _is_commit(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def _resolve_ref(ref: str, dirs: tuple[Path, Path]) -> str | None:
    """The commit ``ref`` (``refs/heads/main``) names: its file in the git directory or the
    common one, else its line in ``packed-refs``; None where neither holds it."""
    if not ref.startswith("refs/") or ".." in ref.split("/"):  # inside .git only
        return None
    for folder in dict.fromkeys(dirs):
        text = _git_text(folder / ref)
        if text is not None and _is_commit(text.strip()):
            return text.strip()
    for line in (_git_text(dirs[1] / "packed-refs") or "").splitlines():
        commit, _, name = line.partition(" ")
        if name.strip() == ref and _is_commit(commit):
            return commit
    return None


def git_commit(package: Path | str) -> str | None:
    """The commit checked out where the package folder ``package`` is a git checkout's
    (its parent holds ``.git``: a clone, or a worktree), read from ``.git``'s files
    (``HEAD``, the branch's ref, ``packed-refs``) without running git; None where it is
    not (a wheel, installed in ``site-packages``) or they cannot be read. Uncommitted
    changes are not told: that needs git itself, a process at every run."""
    dirs = _git_dirs(Path(package).resolve().parent)
    if dirs is None:
        return None
    head = (_git_text(dirs[0] / "HEAD") or "").strip()
    if head.startswith("ref:"):
        return _resolve_ref(head[len("ref:") :].strip(), dirs)
    return head if _is_commit(head) else None


@functools.cache
def segkit_commit() -> str | None:
    """:func:`git_commit` of the segkit package running (read once a process)."""
    module = sys.modules.get("segkit")
    where = getattr(module, "__file__", None)
    return git_commit(Path(where).parent) if where else None


def describe_segkit() -> str:
    """``segkit 0.1.0`` and, run from a git checkout, its commit: ``segkit 0.1.0 (git
    1a2b3c4d5e6f)`` (``segkit --version``)."""
    version = getattr(sys.modules.get("segkit"), "__version__", None)
    commit = segkit_commit()
    return f"segkit {version}" + (f" (git {commit[:12]})" if commit else "")


def environment() -> dict[str, Any]:
    """What ``config.json`` records under ``resolved.environment``: the versions of Python,
    segkit and the libraries that compute a run's numbers (:data:`LIBRARIES`, DALI), the
    platform and the CPU's name (torch's and CUDA's versions and the GPU's name are
    ``resolved``'s own keys); run from a git checkout, ``segkit_commit``, the commit
    checked out (:func:`git_commit`; absent for an installed wheel)."""
    # The package this module is in is imported first (imported by name, it would be a
    # cycle: segkit imports the engine, which imports this module).
    version = getattr(sys.modules.get("segkit"), "__version__", None)
    dali = next((v for d in DALI_DISTRIBUTIONS if (v := _version(d)) is not None), None)
    commit = segkit_commit()
    return {
        "python": platform.python_version(),
        "segkit": version,
        **({"segkit_commit": commit} if commit else {}),
        **{key: _version(dist) for key, dist in LIBRARIES.items()},
        "dali": dali,
        "platform": f"{sys.platform} {platform.machine()}",
        "cpu": cpu_name(),
    }


def _plugin_versions(resolved: dict[str, Any]) -> dict[str, str]:
    """``plugin kind name`` -> ``distribution version`` of a ``resolved`` record."""
    out = {}
    for kind, info in (resolved.get("plugins") or {}).items():
        if isinstance(info, dict):
            out[f"{kind[:-1]} {info.get('name')}"] = (
                f"{info.get('distribution')} {info.get('version')}"
            )
    return out


def differences(recorded: dict[str, Any], now: dict[str, Any], loader: str) -> list[str]:
    """What decides the numbers and differs between a run's ``resolved`` record and a
    rerun's, each as ``what RECORDED -> NOW``: torch, segkit (and its commit, where both
    ran from git checkouts: ``segkit commit 1a2b3c4d5e6f -> 9f8e7d6c5b4a``), the plugins' distributions,
    the loader's library (albumentations, DALI), CPU threads, the device and its name, the
    precision, and (on the CPU) the CPU. A key the old record lacks (a run of an older
    segkit) is not compared."""
    out = []

    def compare(what: str, before: Any, after: Any) -> None:
        if before is not None and before != after:
            out.append(f"{what} {before} -> {after}")

    old_env, new_env = recorded.get("environment") or {}, now.get("environment") or {}
    compare("torch", recorded.get("torch"), now.get("torch"))
    compare("segkit", old_env.get("segkit"), new_env.get("segkit"))
    if old_env.get("segkit_commit") and new_env.get("segkit_commit"):  # both from checkouts
        compare(
            "segkit commit",
            str(old_env["segkit_commit"])[:12],
            str(new_env["segkit_commit"])[:12],
        )
    old_plugins, new_plugins = _plugin_versions(recorded), _plugin_versions(now)
    for key, before in old_plugins.items():
        if key in new_plugins:  # a plugin the rerun's settings changed is a setting, not this
            compare(key, before, new_plugins[key])
    library = LOADER_LIBRARY.get(loader)
    if library is not None:
        compare(library, old_env.get(library), new_env.get(library))
    compare("threads", recorded.get("threads"), now.get("threads"))
    compare("device", recorded.get("device_name"), now.get("device_name"))
    compare("precision", recorded.get("precision"), now.get("precision"))
    if now.get("device_name") == "cpu" and recorded.get("device_name") == "cpu":
        compare("CPU", old_env.get("cpu"), new_env.get("cpu"))
    return out


def split_differences(recorded: dict[str, Any] | None, now: dict[str, Any] | None) -> list[str]:
    """The splits whose samples differ between a run's record (``resolved.splits``: each
    split's count and ids' digest) and a rerun's data, each as ``train: 27 images -> 30``
    or ``train: other images, 27 as recorded``; none where either side records no splits."""
    if not recorded or not now:
        return []
    out = []
    for split, before in recorded.items():
        after = now.get(split)
        if not isinstance(before, dict) or not isinstance(after, dict) or before == after:
            continue
        if before.get("count") != after.get("count"):
            out.append(f"{split}: {before.get('count')} images -> {after.get('count')}")
        else:
            out.append(f"{split}: other images, {after.get('count')} as recorded")
    return out


def rerun_notes(
    source: str, recorded: dict[str, Any], now: dict[str, Any], loader: str
) -> tuple[str | None, str | None]:
    """The two lines a rerun from ``source`` (a ``config.json`` whose ``resolved`` is
    ``recorded``) prints before its first epoch, each None when there is nothing to say:
    a note naming what decides the numbers and differs (:func:`differences`), and a
    warning where the data's splits are not the recorded ones (:func:`split_differences`).
    """
    changed = differences(recorded, now, loader)
    note = None
    if changed:
        note = (
            f"segkit: note: rerunning {source} with {', '.join(changed)}: the numbers may "
            "differ from the recorded run's accordingly"
        )
    splits = split_differences(recorded.get("splits"), now.get("splits"))
    warning = None
    if splits:
        warning = (
            f"data {now.get('data_root')} is not the data {source} recorded "
            f"({'; '.join(splits)}): the splits hold other samples, so the numbers will "
            "differ; pass --data with the run's data to repeat it"
        )
    return note, warning
