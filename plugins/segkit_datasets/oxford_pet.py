"""Reader for the official Oxford-IIIT Pet layout."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from segkit.config import named, named_options
from segkit.contracts import (
    LayoutAudit,
    MaskSpec,
    Sample,
    check_disjoint,
    check_samples,
    check_split,
)
from segkit.errors import ConfigError, DataError

#: Where ``segkit data fetch`` downloads the official archives from.
OFFICIAL_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data"
ARCHIVES = ("images.tar.gz", "annotations.tar.gz")

_LAYOUT = (
    "expected the Oxford-IIIT Pet layout (images/, annotations/trimaps/, "
    "annotations/trainval.txt, annotations/test.txt)"
)
#: The layout in one line (the ``layout`` capability, shown when a folder is refused).
LAYOUT = (
    "images/<name>.jpg, annotations/trimaps/<name>.png (1 pet, 2 background, 3 border), "
    "annotations/trainval.txt and test.txt (the official Oxford-IIIT Pet layout)"
)

#: Names shown in one message before "and N more".
SHOW = 3


def _how_to_get() -> str:
    """Where a dataset comes from, naming ``data`` as the settings are given."""
    return (
        f"pass {named('data')} pointing at a folder with images/ and annotations/, "
        "or run `segkit data fetch` or `segkit data synth PATH`"
    )


def fetch_oxford_pet(root: Path, base_url: str | None = None) -> Path:
    """Download ``images.tar.gz`` and ``annotations.tar.gz`` into ``root`` and unpack them
    (``segkit data fetch``; nothing else in segkit downloads).

    Each archive is downloaded and unpacked in a temporary folder inside ``root``, then its
    folder is renamed into place: an interrupted or failed fetch leaves no partial
    ``images/`` or ``annotations/`` behind, so running the command again completes the
    set. A folder already unpacked is kept. Archives are unpacked with tarfile's ``data``
    filter, which refuses members that would land outside the folder.

    Args:
        root: The dataset folder (created).
        base_url: Where the archives are (default: :data:`OFFICIAL_URL`).

    Returns:
        ``root``.

    Raises:
        DataError: the download failed or an archive is corrupt; names the URL.
    """
    import shutil
    import tarfile
    import tempfile
    import urllib.error
    import urllib.request

    base = (base_url or OFFICIAL_URL).rstrip("/")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for archive in ARCHIVES:
        folder = root / archive.split(".")[0]
        if folder.is_dir() and any(folder.iterdir()):
            continue
        url = f"{base}/{archive}"
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{folder.name}.fetch-") as tmp:
            target = Path(tmp) / archive
            try:
                with urllib.request.urlopen(url, timeout=60) as r, target.open("wb") as f:
                    shutil.copyfileobj(r, f, length=1 << 20)
            except (urllib.error.URLError, OSError) as e:
                raise DataError(
                    f"{url}: download failed ({getattr(e, 'reason', e)}). Without a network, "
                    f"download {archive} elsewhere and unpack it into {root}"
                ) from None
            staging = Path(tmp) / "unpacked"
            try:
                with tarfile.open(target) as tar:
                    tar.extractall(staging, filter="data")
            except (tarfile.TarError, OSError, EOFError) as e:
                raise DataError(f"{url}: archive is corrupt ({e}); run the command again") from None
            unpacked = staging / folder.name
            if not unpacked.is_dir():
                found = sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []
                raise DataError(
                    f"{url}: the archive holds {found or 'nothing'}, not a folder "
                    f"'{folder.name}/'; check --url"
                )
            if folder.is_dir():
                folder.rmdir()  # empty (checked above)
            unpacked.rename(folder)  # same file system: atomic
    return root


class OxfordPet:
    """The Oxford-IIIT Pet dataset in its official layout::

        root/images/<id>.jpg
        root/annotations/trimaps/<id>.png     1 pet, 2 background, 3 border
        root/annotations/trainval.txt         lines "Abyssinian_100 1 1 1"; '#' = comment
        root/annotations/test.txt

    Targets (``target`` option):
        * ``binary`` (the default): ``trimap != 2``; the border counts as foreground, as
          in the lab.
        * ``trimap``: 3 classes, 0 background, 1 pet, 2 border (from trimap values 2, 1
          and 3).

    Splits:
        * ``test``: the ids of ``test.txt``, in file order.
        * ``train`` / ``valid``: the ids of ``trainval.txt`` are sorted, shuffled with
          ``random.Random(split_seed).shuffle``; the first ``round(valid_fraction * n)``
          are ``valid``, the rest ``train``. Each list is returned sorted. With the
          official 3680 trainval ids and the defaults that is 368 valid and 3312 train,
          the lab's split sizes.

    Files are only checked to exist here (all of a split up front, one directory listing);
    decoding and checking values and sizes is the loader's job
    (:func:`segkit.data.reading.read_sample`).

    Args:
        root: The dataset folder.
        valid_fraction: Fraction of ``trainval.txt`` held out as ``valid``, in [0, 1).
        split_seed: Seed of the train/valid shuffle.
        target: ``binary`` or ``trimap`` (see above).

    Raises:
        DataError: ``root`` is ``None``, missing, or lacks ``images/`` or
            ``annotations/trimaps/``.
        ConfigError: ``valid_fraction`` is outside [0, 1), or an unknown ``target``.
    """

    #: The spec of the default target (``binary``); an instance's is that of its target.
    mask_spec = MaskSpec(background=2, allowed=(1, 2, 3))
    #: trainval.txt and test.txt name the samples (see :class:`segkit.contracts.Dataset`).
    split_lists = True

    #: Target name -> mask spec.
    TARGETS: dict[str, MaskSpec] = {
        "binary": mask_spec,
        # No palette: trimaps are grayscale files (a palette would decode RGB masks by
        # colour); reports use the default colours.
        "trimap": MaskSpec.multiclass(("background", "pet", "border"), values=(2, 1, 3)),
    }

    #: ``segkit data fetch PATH`` calls ``fetch(path, base_url=...)`` (a declared capability).
    fetch = staticmethod(fetch_oxford_pet)

    #: ``layout`` capability: the layout in one line.
    layout = LAYOUT

    @staticmethod
    def recognizes(root: Path) -> bool:
        """``recognizes`` capability: an ``annotations/`` folder marks this layout (what it
        lacks is then reported in this layout's words), unless it holds mask files itself
        and no ``trimaps/``: that is a user's masks folder by another name (``folder``)."""
        annotations = Path(root) / "annotations"
        if not annotations.is_dir():
            return False
        if (annotations / "trimaps").is_dir():
            return True
        masks = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
        return not any(p.suffix.lower() in masks for p in annotations.iterdir())

    @classmethod
    def audit(cls, root: Path, **options: Any) -> LayoutAudit:
        """``audit`` capability: every problem of the split lists (missing, repeated or
        shared names) and every file they name that is missing (with the files whose
        names are close), the files in ``images/`` and ``annotations/trimaps/`` that no
        list names or that have another extension, and the samples whose files exist.

        Raises:
            DataError, ConfigError: as the constructor (no such folder, no ``images/``
                or ``annotations/trimaps/``, a bad option).
        """
        ds = cls(root, **options)
        problems: list[tuple[Path, str]] = []
        paths = {n: ds.root / "annotations" / n for n in ("trainval.txt", "test.txt")}
        ids: dict[str, list[str]] = {}
        for name, path in paths.items():
            try:
                ids[name] = _read_split_list(path, problems)
            except DataError as e:
                problems.append((path, str(e)))
                ids[name] = []
        try:
            check_disjoint({paths[n]: ids[n] for n in paths})
        except DataError as e:
            problems.append((paths["test.txt"], str(e)))
        in_test = set(ids["test.txt"])
        trainval = [i for i in ids["trainval.txt"] if i not in in_test]
        folders = {"image": ds.root / "images", "trimap": ds.root / "annotations" / "trimaps"}
        listing = {kind: _listing(folder) for kind, folder in folders.items()}
        suffix = {"image": ".jpg", "trimap": ".png"}
        listed = set(trainval) | in_test
        unnamed = {
            kind: [f for f in files if Path(f).stem not in listed or not f.endswith(suffix[kind])]
            for kind, files in listing.items()
        }
        present: set[str] = set()
        for split_ids, source in (
            (trainval, paths["trainval.txt"]),
            (ids["test.txt"], paths["test.txt"]),
        ):
            for i in split_ids:
                ok = True
                for kind, folder in folders.items():
                    if f"{i}{suffix[kind]}" in listing[kind]:
                        continue
                    ok = False
                    close = _near(i, unnamed[kind])
                    problems.append(
                        (
                            folder / f"{i}{suffix[kind]}",
                            f"{folder / (i + suffix[kind])}: {kind} named in {source} not found"
                            f"{close}; restore the file or remove its name from the split list",
                        )
                    )
                if ok:
                    present.add(i)
        skipped = []
        for kind, folder in folders.items():
            for f in sorted(listing[kind]):
                if f.startswith("."):
                    why = "a hidden file"
                elif not f.endswith(suffix[kind]):
                    why = (
                        f"not {suffix[kind]} (this layout reads {folder.name}/<name>{suffix[kind]})"
                    )
                elif Path(f).stem not in listed:
                    why = "in neither trainval.txt nor test.txt"
                else:
                    continue
                skipped.append((folder / f, why))
        parts = train_valid_split(trainval, ds.valid_fraction, ds.split_seed)
        parts["test"] = ids["test.txt"]
        splits: dict[str, list[Sample]] = {}
        for split in ("train", "valid", "test"):
            splits[split] = [ds._sample(i) for i in parts[split] if i in present]
            source = paths["test.txt" if split == "test" else "trainval.txt"]
            if not splits[split] and not any(f == source for f, _ in problems):
                try:
                    check_samples([], split, source)
                except DataError as e:
                    problems.append((source, str(e)))
        return LayoutAudit(ds.root, ds.mask_spec, splits, problems, skipped, split_lists=True)

    def _sample(self, i: str) -> Sample:
        return Sample(
            id=i,
            image=self.root / "images" / f"{i}.jpg",
            mask=self.root / "annotations" / "trimaps" / f"{i}.png",
        )

    def __init__(
        self,
        root: Path | None,
        valid_fraction: float = 0.1,
        split_seed: int = 0,
        target: str = "binary",
    ) -> None:
        if target not in self.TARGETS:
            raise ConfigError(
                f"target={target!r}: {type(self).__name__} targets are "
                f"{', '.join(self.TARGETS)} ({named_options('dataset_options', {'target': '...'})})"
            )
        if root is None:
            raise DataError(f"no data folder given; {_how_to_get()}")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"{root}: data folder not found; {_how_to_get()}")
        for sub in (root / "images", root / "annotations" / "trimaps"):
            if not sub.is_dir():
                raise DataError(f"{sub}: folder not found; {_LAYOUT}; {_how_to_get()}")
        if not 0.0 <= valid_fraction < 1.0:
            raise ConfigError(
                f"valid_fraction={valid_fraction}: expected a value in [0, 1), e.g. 0.1"
            )
        self.root = root
        self.valid_fraction = valid_fraction
        self.split_seed = split_seed
        self.target = target
        self.mask_spec = self.TARGETS[target]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def samples(self, split: str) -> list[Sample]:
        """Return the samples of ``split``; see the class docstring for the split rule.

        Raises:
            ConfigError: ``split`` is not "train", "valid" or "test".
            DataError: the split list or a file it names is missing, a name is in both
                trainval.txt and test.txt, or the split is empty.
        """
        check_split(split)
        lists = {name: self.root / "annotations" / name for name in ("trainval.txt", "test.txt")}
        source = lists["test.txt" if split == "test" else "trainval.txt"]
        ids = _read_split_list(source)
        check_disjoint({source: ids, **_readable_lists(p for p in lists.values() if p != source)})
        if split != "test":
            ids = train_valid_split(ids, self.valid_fraction, self.split_seed)[split]
        samples = [self._sample(i) for i in ids]
        _check_files_exist(samples, source)
        return check_samples(samples, split, source)


def train_valid_split(ids: list[str], valid_fraction: float, seed: int) -> dict[str, list[str]]:
    """Split ``ids`` into sorted ``train`` and ``valid`` lists (the rule of :class:`OxfordPet`).

    The ids are sorted, shuffled with ``random.Random(seed)``; the first
    ``round(valid_fraction * len(ids))`` are ``valid``, the rest ``train``.
    """
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_valid = round(valid_fraction * len(order))
    return {"valid": sorted(order[:n_valid]), "train": sorted(order[n_valid:])}


def _readable_lists(paths: Iterable[Path]) -> dict[Path, list[str]]:
    """The ids of the split lists that read; a list's own problem is reported when its
    split is asked for."""
    out = {}
    for path in paths:
        try:
            out[path] = _read_split_list(path)
        except DataError:
            pass
    return out


def _read_split_list(path: Path, problems: list[tuple[Path, str]] | None = None) -> list[str]:
    """Ids (first token of each line) of an official split list; '#' lines are comments.
    With ``problems`` (an audit), a repeated name is recorded there and read once."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: split list not found; {_LAYOUT}; {_how_to_get()}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read split list ({e})") from None
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split()[0]
        if name in first_line:
            message = (
                f"{path}: line {lineno} repeats '{name}' (first on line {first_line[name]}); "
                "each image may be listed once"
            )
            if problems is None:
                raise DataError(message)
            problems.append((path, message))
            continue
        first_line[name] = lineno
        ids.append(name)
    return ids


def _check_files_exist(samples: list[Sample], source: Path) -> None:
    """Raise naming the first missing image or mask, with the number missing."""
    listings: dict[Path, set[str]] = {}

    def exists(path: Path) -> bool:
        if path.parent not in listings:
            try:
                listings[path.parent] = set(os.listdir(path.parent))
            except OSError:
                listings[path.parent] = set()
        return path.name in listings[path.parent]

    missing = [p for s in samples for p in (s.image, s.mask) if not exists(p)]
    if missing:
        kind = "image" if missing[0].suffix == ".jpg" else "trimap"
        more = ""
        if len(missing) > 1:
            rest = missing[1:]
            shown = ", ".join(p.name for p in rest[:SHOW])
            shown += f" and {len(rest) - SHOW} more" if len(rest) > SHOW else ""
            more = f" ({len(rest)} more files it names are missing too: {shown})"
        listing = listings.get(missing[0].parent, set())
        close = _near(
            missing[0].stem,
            [
                f
                for f in listing
                if Path(f).stem != missing[0].stem or not f.endswith(missing[0].suffix)
            ],
        )
        raise DataError(
            f"{missing[0]}: {kind} named in {source} not found{close}{more}; restore the "
            "file or remove its name from the split list"
        )


def _listing(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def _near(stem: str, names: Iterable[str]) -> str:
    """`` (the folder holds X)`` when a file's name is close to the missing ``stem``."""
    from segkit.data.layouts import close_names

    close = close_names(stem, names)
    return f" ({' and '.join(close)} {'is' if len(close) == 1 else 'are'} there)" if close else ""
