"""Reader for a user's own dataset, binary or multi-class: ``images/`` and ``masks/``
with matching names, in one pair of folders or one per split."""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import random
import re
import shlex
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkit.config import named, named_options
from segkit.contracts import (
    IGNORE_INDEX,
    SPLITS,
    LayoutAudit,
    MaskSpec,
    Sample,
    check_disjoint,
    check_samples,
    check_split,
)
from segkit.errors import ConfigError, DataError, plural

#: Image names read (PIL decodes them all; the dali loader re-encodes what it cannot):
#: those ``segkit predict`` reads (an animated GIF by its first frame, as predict does).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")

#: Mask names read: lossless formats, the first in this order when one name has several.
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")

#: Mask names refused with the advice to threshold them: JPEG changes label values.
JPEG_SUFFIXES = (".jpg", ".jpeg")

#: The masks folder's name, then its synonyms, read where there is no ``masks/``
#: (``annotations/`` only without ``trimaps/``, which marks the Oxford-IIIT Pet layout).
MASK_FOLDERS = ("masks", "labels", "gt", "ground_truth", "annotations")

#: Split folder names (any case) and the split each one is.
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "valid",
    "valid": "valid",
    "validation": "valid",
    "test": "test",
    "testing": "test",
}

#: The layout in one line (the ``layout`` capability, shown when a folder is refused).
LAYOUT = (
    "images/<name>.jpg|.jpeg|.png|.tif|.tiff|.bmp|.webp|.gif and masks/<name>.png|.tif|.tiff|.bmp "
    "with the same names (binary 0/1 or 0/255; K classes: classes.txt; optional "
    "splits/train.txt, valid.txt, test.txt; or already split: train/, val/, test/ each with "
    "images/ and masks/, or images/train/ ... with masks/train/ ...)"
)

_LAYOUT = f"expected {LAYOUT}"

#: Names shown in a one-line summary of many problems before "and N more".
SHOW = 3


class FolderDataset:
    """A segmentation dataset in plain folders::

        root/images/<stem>.jpg | .jpeg | .png | .tif | .tiff | .bmp | .webp | .gif
        root/masks/<stem>.png | .tif | .tiff | .bmp
                                       binary: 0 background; 1 or 255 foreground
                                       K classes: 0..K-1, 255 ignored (or colours)
        root/classes.txt               optional: the class names (multi-class)
        root/splits/train.txt          optional: one stem per line ('#' = comment)
        root/splits/valid.txt
        root/splits/test.txt

    or already split, either way::

        root/train/images/, root/train/masks/      root/images/train/, root/masks/train/
        root/val/images/,   root/val/masks/        root/images/val/,   root/masks/val/
        root/test/images/,  root/test/masks/       root/images/test/,  root/masks/test/

    Split folders may be named ``train`` or ``training``; ``val``, ``valid`` or
    ``validation``; ``test`` or ``testing``. Where there is no ``masks/`` folder,
    ``labels/``, ``gt/``, ``ground_truth/`` or ``annotations/`` (without ``trimaps/``,
    which marks the Oxford-IIIT Pet layout) is read as it.

    Binary unless classes are named, by ``classes.txt`` or the ``classes`` option
    (``--dataset-opt classes=background,cell,nucleus``; the option wins). Then masks are
    class maps: index PNGs (8-bit grayscale, or palette PNGs, whose indices are read)
    holding ``0..K-1``, with ``ignore`` (default 255) for pixels to leave out of loss and
    metrics. ``classes.txt`` holds one class per line, class 0 first, optionally with its
    grey value in the masks and its colour: ``background``, ``road 50``,
    ``road 128 64 128`` or ``road 50 128 64 128`` (every line alike). Grey values other
    than ``0..K-1`` (``0, 50, 100, 150``) are declared there or by the ``values`` option.
    Colours (there, or the ``palette`` option: ``palette="0,0,0;255,0,0;0,0,255"``; else
    those of palette PNG masks, read from the first mask) colour the reports and predicted
    masks, and let masks be RGB images in those colours (``ignore_color=r,g,b`` is the colour of ignored pixels there).
    A ``classes.txt`` line starting with the word ``ignore`` is no class: it declares the
    ignored pixels, ``ignore 255`` (their mask value, as the ``ignore`` option),
    ``ignore 255 255 255`` (their colour in RGB masks, as ``ignore_color``) or
    ``ignore 255 255 255 255`` (both); an option that says otherwise is an error.

    Every image needs a mask with the same stem (in the same split) and every mask an
    image. Masks must be lossless: PNG, TIFF or BMP (of one name, ``.png`` is read first,
    then ``.tif``, ``.tiff``, ``.bmp``); JPEG masks, and TIFFs with JPEG compression, are
    refused: JPEG compression would invent values between 0 and 255. Hidden files and files
    with other suffixes are ignored.

    Splits:
        * With split folders, each split is the images of its folder, sorted, each id
          ``<split folder>/<stem>`` (``val/cell001``). A split without a folder (no
          ``test/``, say) is carved from ``train``'s images as a random split carves from
          all: ``train``'s ids sorted, shuffled with ``random.Random(split_seed)``, the
          first ``round(test_fraction * n)`` are ``test``, the next
          ``round(valid_fraction * n)`` ``valid``. There must be a ``train`` folder, and no
          ``splits/`` folder beside split folders.
        * With a ``splits/`` folder, each split is the stems its list names, in file order.
        * Otherwise the stems are sorted and shuffled with
          ``random.Random(split_seed).shuffle``; the first ``round(test_fraction * n)``
          are ``test``, the next ``round(valid_fraction * n)`` ``valid``, the rest
          ``train``. Each list is returned sorted.

    Args:
        root: The dataset folder.
        valid_fraction: Fraction of the images held out as ``valid`` (no ``splits/``; with
            split folders, of ``train``'s images, without a ``valid`` folder only).
        test_fraction: Fraction of the images held out as ``test`` (likewise).
        split_seed: Seed of the shuffle (no ``splits/``, no folder of every split).
        classes: Class names, class 0 first (a list, or one comma-separated string).
        palette: One colour per class (a list of ``[r, g, b]``, or ``"r,g,b;r,g,b;..."``).
        ignore: The mask value of ignored pixels (multi-class; ``auto``: 255; ``None`` for
            none).
        ignore_color: The colour of ignored pixels in RGB masks (``[r, g, b]`` or
            ``"r,g,b"``).
        values: The grey value of each class in the masks, class 0 first, where they are
            not ``0..K-1`` (a list, or ``"0,50,100,150"``; masks exported by an annotation
            tool often spread the classes over 0..255). The default ignore value 255 is
            then none where 255 is a class's value.

    Raises:
        DataError: ``root``, ``images/`` or ``masks/`` is missing, there are no images,
            an image has no mask, a mask has no image, two images share a stem, a mask is
            lossy, split folders lack ``train`` (or come with ``splits/``), the masks lie
            beside the images (the message prints the commands that move them), or
            ``classes.txt`` is malformed.
        ConfigError: the fractions are outside [0, 1) or add up to 1 or more, a class
            option is malformed (or given for a binary dataset), or ``ignore`` or
            ``ignore_color`` differs from the ``ignore`` line of ``classes.txt``.
    """

    #: The binary spec; an instance with classes has its own.
    mask_spec = MaskSpec(background=0, allowed=(0, 1, 255))

    #: ``layout`` capability: the layout in one line.
    layout = LAYOUT

    @staticmethod
    def recognizes(root: Path) -> bool:
        """``recognizes`` capability: a ``masks/`` folder marks this layout (a missing
        ``images/`` is then reported in this layout's words), as do ``images/`` with a
        synonym of ``masks/``, split folders holding them, and images with their masks
        beside them in ``root`` itself (the constructor then prints the commands that
        lay them out as ``images/`` + ``masks/``)."""
        root = Path(root)
        return (
            _marks(root)
            or any(_marks(folder) for folder in _split_named(root))
            or _masks_beside(root) is not None
        )

    @staticmethod
    def near_miss(root: Path) -> str | None:
        """``near_miss`` capability: for a folder of images with no masks anywhere this
        layout looks (``recognizes`` said no), that no masks were found and where segkit
        looked; None for any other folder. Cheap, never raises."""
        return _no_masks(Path(root))

    def __init__(
        self,
        root: Path | None,
        valid_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        classes: Sequence[str] | str | None = None,
        palette: Sequence[Sequence[int]] | str | None = None,
        ignore: int | str | None = "auto",
        ignore_color: Sequence[int] | str | None = None,
        values: Sequence[int] | str | None = None,
        *,
        _lenient: bool = False,  # audit(): keep unpaired files as problems, not an error
    ) -> None:
        if root is None:
            raise DataError(
                f"no data folder given; pass {named('data')} pointing at a folder with images/ "
                "and masks/"
            )
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"{root}: data folder not found; {_LAYOUT}")
        for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name}={value}: expected a value in [0, 1), e.g. 0.1")
        if valid_fraction + test_fraction >= 1.0:
            raise ConfigError(
                f"valid_fraction={valid_fraction} + test_fraction={test_fraction} leave no "
                "training images; their sum must be below 1"
            )
        self.root = root
        self.valid_fraction = valid_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.mask_spec = _mask_spec(root, classes, palette, ignore, ignore_color, values)
        self._scan = _scan(root)
        self._pairs = self._scan.pairs
        if self.mask_spec.is_multiclass and not self.mask_spec.palette and self._pairs:
            self.mask_spec = _with_png_palette(self.mask_spec, self._pairs[min(self._pairs)][1])
        #: With split folders: split -> its folders (a split without any is carved).
        self._parts = {p.split: p for p in self._scan.parts if p.split is not None}
        if self._parts and (root / "splits").is_dir():
            raise DataError(
                f"{root / 'splits'}: split lists beside split folders "
                f"({', '.join(p.folder + '/' for p in self._parts.values())}), which split "
                "the images already; remove splits/, or lay the images out in one images/ "
                "and masks/ to split them by the lists"
            )
        if self._scan.problems and not _lenient:
            raise DataError(_summary(self._scan, root))

    @classmethod
    def audit(cls, root: Path, **options: Any) -> LayoutAudit:
        """``audit`` capability: every image without a mask (each with the files whose
        names are close), every mask without an image, every bad split list, every file
        left unread, and the samples that pair up (see
        :class:`segkit.contracts.LayoutAudit`).

        Raises:
            DataError, ConfigError: as the constructor, for a folder it cannot read at
                all (no ``images/`` or ``masks/``, no images, a malformed option).
        """
        ds = cls(root, **options, _lenient=True)
        problems = list(ds._scan.problems)
        skipped = list(ds._scan.skipped)
        splits: dict[str, list[Sample]] = {}
        listed: set[str] = set()
        for split in SPLITS:
            try:
                stems = ds._split_stems(split, problems)
            except DataError as e:
                problems.append((ds.root / "splits" / f"{split}.txt", str(e)))
                stems = []
            listed.update(stems)
            splits[split] = [
                Sample(id=s, image=ds._pairs[s][0], mask=ds._pairs[s][1]) for s in stems
            ]
        if (ds.root / "splits").is_dir():
            for stem in sorted(set(ds._pairs) - listed):
                for path in ds._pairs[stem]:
                    skipped.append((path, "in no split list (splits/*.txt)"))
        for split, samples in splits.items():
            if not ds._pairs:  # every image lacks its mask: those problems say it all
                break
            if not samples and not any(f.name == f"{split}.txt" for f, _ in problems):
                try:
                    ds._check_empty(split)
                    check_samples(samples, split, ds._split_source(split))
                except DataError as e:
                    problems.append((ds._split_source(split), str(e)))
        return LayoutAudit(
            ds.root, ds.mask_spec, splits, problems, skipped, ds._scan.advice, ds.split_lists
        )

    @property
    def split_lists(self) -> bool:
        """Whether ``splits/*.txt`` name the samples (see :class:`segkit.contracts.Dataset`):
        not with split folders, nor where the splits are carved at random."""
        return not self._parts and (self.root / "splits").is_dir()

    @staticmethod
    def declare_classes(
        root: Path,
        classes: list[str],
        palette: list[tuple[int, int, int]] | None,
        values: list[int] | None = None,
    ) -> str:
        """``declare_classes`` capability: the ``classes.txt`` that names ``classes`` (with
        their grey values in the masks, where those are not ``0..K-1``, and their colours:
        RGB masks are then read by colour, palette PNGs keep their colours in the
        reports), and the equivalent dataset options (``--dataset-opt`` flags on the
        command line, ``dataset_options`` from Python: :func:`segkit.config.named_options`)."""
        lines = []
        for i, name in enumerate(classes):
            words = [name]
            if values:
                words.append(str(values[i]))
            if palette:
                words += map(str, palette[i])
            lines.append(" ".join(words))
        options = {"classes": ",".join(classes)}
        if values:
            options["values"] = ",".join(map(str, values))
        if palette:
            options["palette"] = ";".join(",".join(map(str, c)) for c in palette)
        flags = named_options("dataset_options", options)
        body = "".join(f"\n      {line}" for line in lines)
        return (
            f"pass {flags}, or write {Path(root) / 'classes.txt'} with these lines (one class "
            f"per line, class 0 first; rename the classes as you like):{body}"
        )

    @staticmethod
    def declare_ignore(root: Path, colour: tuple[int, int, int], **options: Any) -> str:
        """``declare_ignore`` capability: the ``classes.txt`` ``ignore`` line that makes
        ``colour`` the colour of ignored pixels, where the folder read with ``options``
        takes its classes from its ``classes.txt`` (not from a ``classes`` option, which
        leaves the file unread); ``""`` otherwise, or where the file's ignore line
        declares a colour already."""
        listed = Path(root) / "classes.txt"
        if options.get("classes") is not None or not listed.is_file():
            return ""
        try:
            declared = _read_classes_txt(listed)[3]
        except DataError:  # a malformed file is reported for itself
            return ""
        rgb = " ".join(map(str, colour))
        if declared is None:
            return f"add the line 'ignore {rgb}' to {listed}"
        if declared.colour is None and declared.value is not None:
            return f"change {declared.where} to 'ignore {declared.value} {rgb}'"
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    @property
    def stems(self) -> list[str]:
        """All sample names, sorted."""
        return sorted(self._pairs)

    def samples(self, split: str) -> list[Sample]:
        """Return the samples of ``split``; see the class docstring for the split rule.

        Raises:
            ConfigError: ``split`` is not "train", "valid" or "test".
            DataError: a split list is missing or names an unknown stem, two lists name
                one stem, or the split is empty.
        """
        check_split(split)
        stems = self._split_stems(split)
        if not stems:
            self._check_empty(split)
        samples = [Sample(id=s, image=self._pairs[s][0], mask=self._pairs[s][1]) for s in stems]
        return check_samples(samples, split, self._split_source(split))

    def _check_empty(self, split: str) -> None:
        """Raise why ``split`` is empty, where this layout knows better words than
        :func:`check_samples` (a random or carved split, an empty split folder)."""
        if self._parts:
            part = self._parts.get(split)
            if part is None:
                raise DataError(self._too_few(split))
            fix = f"add images with their masks to {part.images} and {part.masks}"
            if split != "train":
                fix += (
                    f", or remove {' and '.join(map(str, part.remove))} to carve '{split}' "
                    f"from train by {split}_fraction"
                )
            raise DataError(
                f"{part.images}: split '{split}' has no samples: no image there has its mask "
                f"in {part.masks}; {fix}"
            )
        if split != "train" and not (self.root / "splits").is_dir():
            raise DataError(self._too_few(split))

    def _too_few(self, split: str) -> str:
        """Why a random (or carved) split left ``split`` empty, and the fraction that
        fills it."""
        option = f"{split}_fraction"
        fraction = getattr(self, option)
        if self._parts:
            train = self._parts["train"]
            n = len(self._scan.by_split.get("train", []))
            enough = math.ceil(100 / n) / 100 if n else 1.0
            return (
                f"{train.images}: split '{split}' has no samples: there is no {split} "
                f"folder beside {train.folder}/, and {n} train images x {option} {fraction} "
                f"rounds to 0; pass {named_options('dataset_options', {option: enough})}, "
                "add images, or add a "
                f"folder of the split ({'val' if split == 'valid' else split}/, with its "
                "images and masks as in train/)"
            )
        n = len(self._pairs)
        enough = math.ceil(100 / n) / 100 if n else 1.0
        return (
            f"{self.root / 'images'}: split '{split}' has no samples: {n} images x "
            f"{option} {fraction} rounds to 0; pass "
            f"{named_options('dataset_options', {option: enough})}, add "
            "images, or list the splits in splits/train.txt, valid.txt and test.txt"
        )

    def _split_source(self, split: str) -> Path:
        if self._parts:
            return self._parts.get(split, self._parts["train"]).images
        splits_dir = self.root / "splits"
        return splits_dir / f"{split}.txt" if splits_dir.is_dir() else self.root / "images"

    def _split_stems(self, split: str, problems: list[tuple[Path, str]] | None = None) -> list[str]:
        """The stems of ``split``. With ``problems`` (an audit), names that have no image
        and names in two lists are recorded there and left out instead of raising."""
        if self._parts:
            return self._folder_split()[split]
        splits_dir = self.root / "splits"
        if not splits_dir.is_dir():
            return self._random_split()[split]
        source = splits_dir / f"{split}.txt"
        stems = self._read_split_list(source, problems)
        lists: dict[Path, list[str]] = {source: stems}
        for other in (splits_dir / f"{s}.txt" for s in SPLITS if s != split):
            try:
                lists[other] = self._read_split_list(other, [])
            except DataError:
                pass  # that list's own problem is reported when its split is read
        if problems is None:
            check_disjoint(lists)
            return stems
        # An audit: report a shared name once (with the later list), and keep it in the
        # earlier split only, so the samples read stay disjoint.
        earlier = [p for p in lists if p != source and SPLITS.index(p.stem) < SPLITS.index(split)]
        try:
            check_disjoint({p: lists[p] for p in [*earlier, source]})
        except DataError as e:
            problems.append((source, str(e)))
        shared = {n for p in earlier for n in lists[p]}
        return [n for n in stems if n not in shared]

    def _folder_split(self) -> dict[str, list[str]]:
        """The ids of each split folder; a split without a folder carved from train's."""
        ids = {s: sorted(self._scan.by_split.get(s, [])) for s in SPLITS}
        missing = [s for s in ("test", "valid") if s not in self._parts]
        if not missing:
            return ids
        carved = self._carve(
            ids["train"],
            self.test_fraction if "test" in missing else 0.0,
            self.valid_fraction if "valid" in missing else 0.0,
        )
        return {s: carved[s] if s in missing or s == "train" else ids[s] for s in SPLITS}

    def _random_split(self) -> dict[str, list[str]]:
        return self._carve(self._pairs, self.test_fraction, self.valid_fraction)

    def _carve(
        self, ids: Iterable[str], test_fraction: float, valid_fraction: float
    ) -> dict[str, list[str]]:
        """``ids`` sorted and shuffled with ``random.Random(split_seed)``: the first
        ``round(test_fraction * n)`` are ``test``, the next ``round(valid_fraction * n)``
        ``valid``, the rest ``train``; each list sorted."""
        order = sorted(ids)
        random.Random(self.split_seed).shuffle(order)
        n_test = round(test_fraction * len(order))
        n_valid = round(valid_fraction * len(order))
        return {
            "test": sorted(order[:n_test]),
            "valid": sorted(order[n_test : n_test + n_valid]),
            "train": sorted(order[n_test + n_valid :]),
        }

    def _read_split_list(
        self, path: Path, problems: list[tuple[Path, str]] | None = None
    ) -> list[str]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise DataError(
                f"{path}: split list not found; a splits/ folder must hold train.txt, "
                "valid.txt and test.txt (one image name per line), or remove splits/ to "
                "split at random"
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read split list ({e})") from None
        stems: list[str] = []
        unknown: list[tuple[int, str]] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            stem = unicodedata.normalize("NFC", line.split()[0])
            if stem in self._pairs:
                stems.append(stem)
            else:
                unknown.append((lineno, stem))
        if unknown:
            lineno, stem = unknown[0]
            more = ""
            if len(unknown) > 1:
                others = ", ".join(f"'{n}' (line {i})" for i, n in unknown[1 : 1 + SHOW])
                extra = len(unknown) - 1 - SHOW
                more = f" ({len(unknown) - 1} more unknown names: {others}"
                more += f" and {extra} more)" if extra > 0 else ")"
            close = _close(stem, list(self._pairs))
            hint = f"; images/ holds {_or(close)}" if close else ""
            message = (
                f"{path}: line {lineno} names '{stem}', which has no image in images/{more}"
                f"{hint}; list image names without their suffix"
            )
            if problems is None:
                raise DataError(message)
            problems.append((path, message))
        return stems


@dataclass(frozen=True)
class _Part:
    """One images folder with its masks folder: the whole dataset (``split`` None), or one
    split of a dataset whose folders split it (``folder``: the split folder's name, which
    prefixes the sample ids: ``val/cell001``; ``remove``: what to remove to drop it)."""

    images: Path
    masks: Path
    split: str | None = None
    folder: str = ""
    remove: tuple[Path, ...] = ()

    def id(self, stem: str) -> str:
        return f"{self.folder}/{stem}" if self.folder else stem


@dataclass
class _Scan:
    """The pairing of each images folder with its masks folder: the pairs (by sample id),
    every problem (file, message), every file left unread (file, why), and advice that
    fixes many problems at once; with split folders, the ids each one paired."""

    parts: list[_Part] = field(default_factory=list)
    pairs: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    by_split: dict[str, list[str]] = field(default_factory=dict)
    problems: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    images: int = 0  # the images found, paired or not
    kinds: list[str] = field(default_factory=list)  # per problem: lacking, orphan, ...
    keys: list[Any] = field(default_factory=list)  # per problem: what a condensing matches

    def problem(self, kind: str, path: Path, message: str, key: Any = None) -> None:
        self.problems.append((path, message))
        self.kinds.append(kind)
        self.keys.append(key)


def _or_list(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else "".join(items)


_IMAGES_TEXT = _or_list(IMAGE_SUFFIXES)
_MASKS_TEXT = _or_list(MASK_SUFFIXES)


def _rel(path: Path, root: Path) -> str:
    """``path`` as the messages show a folder of the layout: ``images``, ``val/masks``."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _mask_dirs(parent: Path) -> list[Path]:
    """The folders of ``parent`` that may hold its masks: ``masks/``; without it, each of
    its synonyms (``annotations/`` only without ``trimaps/``, the Oxford-IIIT Pet's)."""
    if (parent / "masks").is_dir():
        return [parent / "masks"]
    return [
        parent / name
        for name in MASK_FOLDERS[1:]
        if (parent / name).is_dir()
        and not (name == "annotations" and (parent / name / "trimaps").is_dir())
    ]


def _mask_dir(parent: Path) -> Path | None:
    """The masks folder of ``parent``, or None.

    Raises:
        DataError: two synonyms of ``masks/`` (``labels/`` and ``gt/``) and no ``masks/``.
    """
    found = _mask_dirs(parent)
    if len(found) > 1:
        raise DataError(
            f"{parent}: {' and '.join(d.name + '/' for d in found)} could each be the masks "
            "folder; rename the one that holds the masks to masks/ (masks/ is read first)"
        )
    return found[0] if found else None


def _marks(folder: Path) -> bool:
    """``masks/``, or ``images/`` with a synonym of ``masks/``: this layout's mark."""
    return (folder / "masks").is_dir() or (
        (folder / "images").is_dir() and bool(_mask_dirs(folder))
    )


def _split_named(folder: Path) -> list[Path]:
    """The subfolders of ``folder`` named as a split (``train/``, ``val/``, ...)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [e for e in entries if e.name.lower() in SPLIT_FOLDERS and e.is_dir()]


def _split_dirs(folder: Path) -> dict[str, Path]:
    """The split folders of ``folder`` by split, in the order train, valid, test.

    Raises:
        DataError: two folders name one split (``val/`` and ``valid/``).
    """
    found: dict[str, Path] = {}
    for entry in _split_named(folder):
        split = SPLIT_FOLDERS[entry.name.lower()]
        if split in found:
            raise DataError(
                f"{found[split]} and {entry}: two folders of the split '{split}'; merge them "
                "into one"
            )
        found[split] = entry
    return {s: found[s] for s in SPLITS if s in found}


def _folders(dirs: dict[str, Path]) -> str:
    return ", ".join(f"{d.name}/" for d in dirs.values())


def _parts(root: Path) -> tuple[list[_Part], list[Path]]:
    """The images/masks folder pairs of ``root``'s layout (one, or one per split folder),
    and, for ``images/<split>/`` + ``masks/<split>/``, those two parent folders.

    Raises:
        DataError: a folder of the layout is missing (or two folders claim one role), or
            the masks lie beside the images (the message prints the commands that move
            them).
    """
    images, masks = root / "images", _mask_dir(root)
    if images.is_dir() or masks is not None:
        if not images.is_dir():
            raise DataError(f"{images}: folder not found; {_LAYOUT}")
        if masks is None:
            missing = _no_masks(root)
            if missing is not None:
                raise DataError(f"{missing}\nthe layout (docs/data.md): {LAYOUT}")
            raise DataError(f"{root / 'masks'}: folder not found; {_LAYOUT}")
        by_split = _split_dirs(images)
        if not by_split:
            return [_Part(images, masks)], []
        parts = []
        for split, folder in by_split.items():
            sub = masks / folder.name
            if not sub.is_dir():
                raise DataError(
                    f"{sub}: folder not found; {images} is split into {_folders(by_split)} so "
                    f"{masks} holds one folder of the same name per split, with the masks of "
                    f"its images ({masks.name}/{folder.name}/<name>.png)"
                )
            parts.append(_Part(folder, sub, split, folder.name, (folder, sub)))
        if "train" not in by_split:
            raise _no_train(images, by_split)
        return parts, [images, masks]
    by_split = _split_dirs(root)
    if by_split:
        parts = []
        for split, folder in by_split.items():
            sub_images, sub_masks = folder / "images", _mask_dir(folder)
            if not sub_images.is_dir():
                raise DataError(
                    f"{sub_images}: folder not found; each split folder ({_folders(by_split)}) "
                    f"holds images/ and masks/ ({LAYOUT})"
                )
            if sub_masks is None:
                n = sum(1 for p in sub_images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                raise DataError(
                    f"{folder / 'masks'}: folder not found; each split folder "
                    f"({_folders(by_split)}) holds images/ and masks/, and {sub_images} holds "
                    f"{n} images without masks: add their masks as {folder.name}/masks/<name>"
                    ".png"
                    + (
                        f", or move {folder} out of {root} (the split '{split}' is then carved "
                        f"from train/, see {split}_fraction)"
                        if split != "train"
                        else ""
                    )
                )
            parts.append(_Part(sub_images, sub_masks, split, folder.name, (folder,)))
        if "train" not in by_split:
            raise _no_train(root, by_split)
        return parts, []
    beside = _masks_beside(root)
    if beside is not None:
        raise DataError(beside)
    raise DataError(f"{images}: folder not found; {_LAYOUT}")


def _no_train(parent: Path, by_split: dict[str, Path]) -> DataError:
    return DataError(
        f"{parent}: split folders {_folders(by_split)} but no train/; add train/ (the images "
        "to train on, with their masks), or rename the folder that holds them to train/"
    )


def _affix(stem: str, stems: set[str]) -> tuple[str, str] | None:
    """How ``stem`` names the mask of another image in ``stems``: ``("suffix", "_mask")``
    for ``cell001_mask``, ``("prefix", "mask_")`` for ``mask_cell001``; the word added
    must hold a letter (``cell001_2`` is an image of its own)."""
    for i in range(len(stem) - 1, 0, -1):  # the longest image name first
        if not stem[i].isalnum() and stem[:i] in stems and re.search(r"[A-Za-z]", stem[i:]):
            return "suffix", stem[i:]
    for i in range(len(stem) - 1):
        if (
            not stem[i].isalnum()
            and stem[i + 1 :] in stems
            and re.search(r"[A-Za-z]", stem[: i + 1])
        ):
            return "prefix", stem[: i + 1]
    return None


def _no_masks(root: Path) -> str | None:
    """ "no masks found" and where segkit looked, for a folder holding images (in
    ``images/``, a split folder's ``images/``, or itself) and no masks folder; else None."""
    if _marks(root) or any(_marks(folder) for folder in _split_named(root)):
        return None
    where = [root / "images", *(folder / "images" for folder in _split_named(root)), root]
    found: list[tuple[Path, int]] = []
    for folder in where:
        try:
            files = folder.rglob("*") if folder != root else folder.iterdir()
            count = sum(
                1
                for p in files
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
        except OSError:
            continue
        if count:
            found.append((folder, count))
    if not found:
        return None
    images = ", ".join(
        f"{plural(n, 'image')} in {folder.relative_to(root)}/"
        if folder != root
        else f"{plural(n, 'image')} in the folder itself"
        for folder, n in found
    )
    synonyms = ", ".join(f"{name}/" for name in MASK_FOLDERS[1:])
    return (
        f"{root}: no masks found ({images}); segkit looked for masks/ beside images/ (or "
        f"{synonyms}), masks/ in each split folder (train/masks/ ...), and masks named "
        "<name>_mask.png beside their images\n"
        "put each image's mask in masks/ under the image's name (images/a.jpg, masks/a.png: "
        "0/1 or 0/255, or class indices 0..K-1 named in classes.txt)"
    )


def _masks_beside(root: Path) -> str | None:
    """When ``root`` holds images with their masks beside them (``cell001.jpg`` and
    ``cell001_mask.png``), what segkit expects and the commands that lay them out so;
    else None."""
    try:
        files = [
            p
            for p in root.iterdir()
            if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        ]
    except OSError:
        return None
    stems = {p.stem for p in files}
    named: dict[tuple[str, str, str], list[Path]] = {}
    for p in sorted(files):
        if p.suffix.lower() in MASK_SUFFIXES and (how := _affix(p.stem, stems)):
            named.setdefault((*how, p.suffix), []).append(p)
    if not named:
        return None
    (where, affix, suffix), masks = max(named.items(), key=lambda kv: len(kv[1]))
    if where == "suffix":
        pattern, new = f"*{affix}{suffix}", f'"masks/${{f%{affix}{suffix}}}{suffix}"'
        how = f"<image name>{affix}{suffix}"
    else:
        pattern, new = f"{affix}*{suffix}", f'"masks/${{f#{affix}}}"'
        how = f"{affix}<image name>{suffix}"
    image_suffixes = sorted({p.suffix for p in files if not fnmatch.fnmatchcase(p.name, pattern)})
    if not image_suffixes:
        return None
    example = masks[0]
    image = next(p for p in sorted(files) if p.stem == _unaffixed(example.stem, where, affix))
    return (
        f"{root}: images and masks are in one folder ({len(masks)} mask"
        f"{'s' if len(masks) > 1 else ''} named {how}, e.g. {example.name} beside "
        f"{image.name}); segkit reads images/<name>.* with masks/<name>.png (or {_or_list(MASK_SUFFIXES[1:])}"
        f"), so move them: cd {shlex.quote(str(root))} && mkdir -p images masks && for f in "
        f'{pattern}; do mv -- "$f" {new}; done && mv -- '
        + " ".join(f"*{s}" for s in image_suffixes)
        + " images/"
    )


def _unaffixed(stem: str, where: str, affix: str) -> str:
    return stem[: -len(affix)] if where == "suffix" else stem[len(affix) :]


def _tiff_compression(path: Path) -> str | None:
    """The compression a TIFF's header declares (``jpeg``, ``tiff_lzw``, ``raw``...), or
    None when PIL cannot open it (the check reports that when it reads the mask)."""
    from segkit.data.reading import open_image

    try:
        with open_image(path) as im:  # the header only: no pixel is decoded
            return im.info.get("compression")
    except Exception:  # noqa: BLE001 -- a damaged file makes PIL raise many types
        return None


def _scan(root: Path) -> _Scan:
    """Pair each images folder's ``<stem>.*`` with its masks folder's ``<stem>.png`` (or
    ``.tif``, ``.tiff``, ``.bmp``), recording every file without its partner (with the
    files whose names are close) rather than stopping at the first.

    Raises:
        DataError: a folder of the layout is missing, or no images folder holds an image.
    """
    parts, tops = _parts(root)
    scan = _Scan(parts=parts)
    for top in tops:  # images/ and masks/ of images/<split>/ + masks/<split>/
        _scan_top(root, top, parts, scan)
    near: list[tuple[_Part, str, list[str]]] = []
    for part in parts:
        _scan_part(root, part, scan, near)
    if not scan.images:  # split folders, all empty (one images/ folder raised already)
        raise DataError(
            f"{', '.join(str(p.images) for p in parts)}: no images ({_IMAGES_TEXT}) found; "
            f"{_LAYOUT}"
        )
    advice, covered = _renaming_advice(near)
    scan.advice = advice + scan.advice
    if covered:
        _condense(root, scan, covered)
    return scan


def _scan_top(root: Path, top: Path, parts: list[_Part], scan: _Scan) -> None:
    """What lies beside the split folders of ``images/`` or ``masks/``: images and masks
    there belong to no split (problems); anything else is skipped."""
    folders = {p.images for p in parts} | {p.masks for p in parts}
    names = ", ".join(f"{p.folder}/" for p in parts)
    for path in sorted(top.iterdir()):
        if path in folders:
            continue
        if path.name.startswith("."):
            scan.skipped.append((path, "a hidden file"))
        elif path.is_dir():
            scan.skipped.append((path, "not a split folder (train, val, test)"))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            scan.problem(
                "stray",
                path,
                f"{path}: a file beside the split folders of {_rel(top, root)}/ ({names}), "
                "in no split; move it into the folder of its split, or out of "
                f"{_rel(top, root)}/",
            )
        else:
            scan.skipped.append((path, f"not an image name ({_IMAGES_TEXT})"))


def _scan_part(
    root: Path, part: _Part, scan: _Scan, near: list[tuple[_Part, str, list[str]]]
) -> None:
    images_rel, masks_rel = _rel(part.images, root), _rel(part.masks, root)
    images: dict[str, Path] = {}
    folders: list[Path] = []
    for path in sorted(part.images.iterdir()):
        if path.name.startswith("."):
            scan.skipped.append((path, "a hidden file"))
            continue
        if path.is_dir():
            folders.append(path)
            scan.skipped.append((path, "a folder (subfolders are not read)"))
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            scan.skipped.append((path, _not_an_image(path)))
            continue
        stem = _stem(path)
        if stem in images:
            scan.problem(
                "duplicate",
                path,
                f"{path}: two images are named '{stem}' ({images[stem].name} and "
                f"{path.name}); keep one, so each mask belongs to one image",
            )
            continue
        images[stem] = path
    scan.images += len(images)
    if not images and part.split is None:
        held = ""
        if folders:
            held = (
                f"; it holds the folders {', '.join(f.name + '/' for f in folders[:SHOW])}"
                f"{f' and {len(folders) - SHOW} more' if len(folders) > SHOW else ''}, whose "
                "images are not read: put the images in images/ itself, or in split folders "
                "images/train/, images/val/, images/test/ (with masks/train/, ...)"
            )
        raise DataError(f"{part.images}: no images ({_IMAGES_TEXT}) found{held}; {_LAYOUT}")

    by_stem: dict[str, list[Path]] = {}
    other: dict[str, Path] = {}
    for path in sorted(part.masks.iterdir()):
        if path.name.startswith("."):
            scan.skipped.append((path, "a hidden file"))
        elif path.is_dir():
            scan.skipped.append((path, "a folder (subfolders are not read)"))
        elif path.suffix.lower() in MASK_SUFFIXES:
            by_stem.setdefault(_stem(path), []).append(path)
        elif _stem(path) in other:
            scan.skipped.append((path, f"not a mask name ({_MASKS_TEXT})"))
        else:
            other[_stem(path)] = path
    masks: dict[str, Path] = {}
    for stem, paths in by_stem.items():
        paths.sort(key=lambda p: (MASK_SUFFIXES.index(p.suffix.lower()), p.name))
        masks[stem] = chosen = paths[0]
        read = chosen.suffix.lower()
        for path in paths[1:]:
            scan.skipped.append(
                (path, f"not {read} (the {read} of the same name is the mask read)")
            )

    lossy: dict[str, Path] = {}
    for stem, path in masks.items():
        if stem in images and path.suffix.lower() in (".tif", ".tiff"):
            compression = _tiff_compression(path)
            if compression in ("jpeg", "tiff_jpeg"):
                lossy[stem] = path
                scan.problem(
                    "lossy",
                    path,
                    f"{path}: a JPEG-compressed TIFF (compression {compression}), so not read "
                    f"as the mask of {images[stem].name}: JPEG compression changes label "
                    "values; save it again without compression or with LZW or Deflate "
                    "(how: below)",
                )
    for stem in lossy:
        del masks[stem]

    unpaired = [p for stem, p in masks.items() if stem not in images]
    unpaired += [p for stem, p in other.items() if stem not in masks]
    lacking = [stem for stem in sorted(images) if stem not in masks and stem not in lossy]
    for stem in lacking:
        close: list[str] = []
        if stem in other:
            found = other[stem]
            if found.suffix.lower() in JPEG_SUFFIXES:
                hint = (
                    f"found {found.name}, but masks must be lossless, {_MASKS_TEXT} (JPEG "
                    "compression changes label values)"
                )
            else:
                hint = f"found {found.name}, but masks are read from {_MASKS_TEXT} files"
        else:
            close = _close(stem, [p.name for p in unpaired])
            hint = (
                f"{masks_rel}/ holds {_or(close)}: name the mask {stem}.png"
                if close
                else f"every image needs {masks_rel}/<same name>.png"
            )
            near.append((part, stem, close))
        scan.problem(
            "lacking",
            part.masks / f"{stem}.png",
            f"{part.masks / (stem + '.png')}: mask for image {images[stem].name} not found; {hint}",
            (part.masks, stem),
        )
    for stem in (stem for stem in sorted(masks) if stem not in images):
        close = _close(stem, [images[s].name for s in lacking])
        hint = f" ({images_rel}/ holds {_or(close)})" if close else ""
        scan.problem(
            "orphan",
            masks[stem],
            f"{masks[stem]}: mask has no image {images_rel}/{stem}{_IMAGES_TEXT}{hint}; add "
            "the image or remove the mask",
            masks[stem],
        )
    for stem, path in other.items():
        if stem in masks:
            read = masks[stem].suffix.lower()
            scan.skipped.append(
                (path, f"not {read} (the {read} of the same name is the mask read)")
            )
        elif stem not in images or stem in lossy:
            scan.skipped.append((path, f"not a mask name ({_MASKS_TEXT})"))

    from segkit.data.encoding import threshold_command

    unread = [other[s] for s in lacking if s in other]
    if unread:
        scan.advice.append(
            f"{masks_rel}/ holds {len(unread)} mask{'s' if len(unread) > 1 else ''} in a "
            f"format segkit does not read as masks ({_first(unread)}); JPEG compression blurs "
            f"label values, so segkit reads lossless masks only ({_MASKS_TEXT}). Export them "
            "as PNG from the labelling tool, or, for black and white masks, threshold them "
            "into PNGs next to them: "
            + threshold_command(part.masks, sorted({p.suffix for p in unread}))
        )
    if lossy:
        found = list(lossy.values())
        scan.advice.append(
            f"{masks_rel}/ holds {len(found)} JPEG-compressed TIFF mask"
            f"{'s' if len(found) > 1 else ''} ({_first(found)}); JPEG compression blurs label "
            "values. Export them again without compression (or LZW, Deflate) from the "
            "labelling tool, or, for black and white masks, threshold them into PNGs next to "
            "them (the PNG is then the mask read): "
            + threshold_command(part.masks, sorted({p.suffix for p in found}))
        )
    ids = []
    for stem in images:
        if stem in masks:
            scan.pairs[part.id(stem)] = (images[stem], masks[stem])
            ids.append(part.id(stem))
    if part.split is not None:
        scan.by_split[part.split] = ids


def _not_an_image(path: Path) -> str:
    """Why a file in an images folder is skipped: not an image name, or a photo format
    segkit does not read (a phone's HEIC), with what to convert it to."""
    from segkit.data.reading import UNREAD_PHOTOS

    kind = UNREAD_PHOTOS.get(path.suffix.lower())
    if kind:
        return f"a {kind} photo, which segkit does not read (convert it to JPEG or PNG)"
    return f"not an image name ({_IMAGES_TEXT})"


def _stem(path: Path) -> str:
    """A file's name without its suffix, as images and masks are paired by it: in Unicode's
    composed form (NFC), so that ``café.jpg`` and a ``café.png`` whose accent is stored
    decomposed (NFD, as macOS writes names, kept by copies and archives) are one name,
    as they look; on Linux they are two file names."""
    return unicodedata.normalize("NFC", path.stem)


def _close(stem: str, names: list[str]) -> list[str]:
    from segkit.data.layouts import close_names

    return close_names(stem, names)


def _or(names: list[str]) -> str:
    return " and ".join(names)


def _first(paths: Sequence[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:SHOW])
    return shown + (f" and {len(paths) - SHOW} more" if len(paths) > SHOW else "")


@dataclass
class _Renamed:
    """Masks named ``<image name><affix>`` (or ``<affix><image name>``) in their folders:
    ``stems[masks folder]`` the images lacking their mask, ``names[masks folder]`` the
    masks so named."""

    where: str
    affix: str
    suffix: str
    stems: dict[Path, list[str]] = field(default_factory=dict)
    names: dict[Path, list[str]] = field(default_factory=dict)

    @property
    def how(self) -> str:
        if self.where == "suffix":
            return f"<image name>{self.affix}{self.suffix}"
        return f"{self.affix}<image name>{self.suffix}"


def _renaming_advice(near: list[tuple[_Part, str, list[str]]]) -> tuple[list[str], _Renamed | None]:
    """When two or more images lack their mask and each has one near-miss named
    ``<stem><affix>.png`` (or ``<affix><stem>.png``) with the same affix, the command that
    renames them all, in every masks folder, and what it covers."""
    near = [(part, stem, names) for part, stem, names in near if names]
    if len(near) < 2:
        return [], None
    affixes = set()
    for _, stem, names in near:
        if len(names) != 1:
            return [], None
        other = Path(names[0])
        if other.suffix.lower() not in MASK_SUFFIXES:
            return [], None
        if other.stem.startswith(stem) and other.stem != stem:
            affixes.add(("suffix", other.stem[len(stem) :], other.suffix))
        elif other.stem.endswith(stem) and other.stem != stem:
            affixes.add(("prefix", other.stem[: -len(stem)], other.suffix))
        else:
            return [], None
    if len(affixes) != 1:
        return [], None
    renamed = _Renamed(*affixes.pop())
    for part, stem, names in near:
        renamed.stems.setdefault(part.masks, []).append(stem)
        renamed.names.setdefault(part.masks, []).append(names[0])
    affix, suffix = renamed.affix, renamed.suffix
    if renamed.where == "suffix":
        pattern, new = f"*{affix}{suffix}", f'"${{f%{affix}{suffix}}}{suffix}"'
    else:
        pattern, new = f"{affix}*{suffix}", f'"${{f#{affix}}}"'
    rename = f'for f in {pattern}; do mv "$f" {new}; done'
    folders = list(renamed.stems)
    if len(folders) == 1:
        command = f"cd {shlex.quote(str(folders[0]))} && {rename}"
    else:
        listed = " ".join(shlex.quote(str(f)) for f in folders)
        command = f'for d in {listed}; do (cd "$d" && {rename}); done'
    return [
        f"{len(near)} masks are named {renamed.how}; segkit pairs masks/<image name>"
        f"{suffix} with images/<image name>.*: rename them with {command}"
    ], renamed


def _condense(root: Path, scan: _Scan, renamed: _Renamed) -> None:
    """One problem per masks folder for the images that lack their mask and the masks
    without an image that the renaming advice pairs, where that problem's first was."""
    covered_lacking = {(d, s) for d, stems in renamed.stems.items() for s in stems}
    covered_masks = {d / n for d, names in renamed.names.items() for n in names}
    kept: list[tuple[str, tuple[Path, str], Any]] = []
    placed: set[Path] = set()
    for kind, problem, key in zip(scan.kinds, scan.problems, scan.keys, strict=True):
        folder = None
        if kind == "lacking" and key in covered_lacking:
            folder = key[0]
        elif kind == "orphan" and key in covered_masks:
            folder = key.parent
        if folder is None:
            kept.append((kind, problem, key))
            continue
        if folder in placed:
            continue
        placed.add(folder)
        n, names = len(renamed.stems[folder]), renamed.names[folder]
        shown = ", ".join(names[:SHOW]) + (f" and {n - SHOW} more" if n > SHOW else "")
        kept.append(
            (
                "renamed",
                (
                    folder,
                    f"{folder}: {n} image{'s lack their masks' if n > 1 else ' lacks its mask'} "
                    f"and {n} mask{'s' if n > 1 else ''} {'their' if n > 1 else 'its'} image: "
                    f"the masks are named {renamed.how} ({shown}); segkit pairs "
                    f"{_rel(folder, root)}/<image name>{renamed.suffix} with the image of that "
                    "name: the command below renames them",
                ),
                folder,
            )
        )
    scan.kinds = [k for k, _, _ in kept]
    scan.problems = [p for _, p, _ in kept]
    scan.keys = [k for _, _, k in kept]


def _summary(scan: _Scan, root: Path) -> str:
    """The constructor's one line for every pairing problem: the first in full, then how
    many more of each kind with the first few names, the advice, and where to see all."""
    (_, first), rest = scan.problems[0], scan.problems[1:]
    counts = []
    for kind, words in (("lacking", "images lack masks"), ("orphan", "masks lack images")):
        names = [p.stem for (p, _), k in zip(rest, scan.kinds[1:], strict=True) if k == kind]
        if names:
            counts.append(f"{len(names)} more {words}: {_stems_shown(names)}")
    others = sum(1 for k in scan.kinds[1:] if k not in ("lacking", "orphan"))
    if others:
        counts.append(f"{others} more problem{'s' if others > 1 else ''}")
    message = first.replace("; ", f" ({'; '.join(counts)}); ", 1) if counts else first
    message += "".join(f"; {a}" for a in scan.advice)
    if rest:
        message += f"; `segkit data check --data {root}` lists every problem"
    return message


def _stems_shown(stems: list[str]) -> str:
    shown = ", ".join(stems[:SHOW])
    return shown + (f" and {len(stems) - SHOW} more" if len(stems) > SHOW else "")


# ----------------------------------------------------------------------------- classes


def _mask_spec(
    root: Path,
    classes: Sequence[str] | str | None,
    palette: Sequence[Sequence[int]] | str | None,
    ignore: int | str | None,
    ignore_color: Sequence[int] | str | None,
    values: Sequence[int] | str | None = None,
) -> MaskSpec:
    """The binary spec, or the K-class one from the options and ``classes.txt``."""
    names: list[str] | None = None
    colours: list[tuple[int, int, int]] | None = None
    raw: list[int] | None = None
    listed = root / "classes.txt"
    said = "ignore"  # what set the ignore value, for its errors
    if classes is not None:
        names = _names(classes)
    elif listed.is_file():
        names, raw, colours, declared = _read_classes_txt(listed)
        if declared is not None:
            ignore, ignore_color, said = _file_ignore(declared, ignore, ignore_color)
    if palette is not None:
        colours = [_colour(c, "palette") for c in _palette_items(palette)]
    if values is not None:
        raw = _values(values)
    if names is None:
        given = [
            name
            for name, value in (
                ("palette", palette),
                ("values", values),
                ("ignore", ignore),
                ("ignore_color", ignore_color),
            )
            if value is not None and not (name == "ignore" and value == "auto")
        ]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} describe{'s' if len(given) == 1 else ''} class maps, and "
                "this folder dataset is binary (0 background, 1 or 255 foreground); name its "
                f"classes too ({named_options('dataset_options', {'classes': 'background,...'})} "
                f"or {listed})"
            )
        return FolderDataset.mask_spec
    if raw is not None and len(raw) != len(names):
        raise ConfigError(
            f"values={','.join(map(str, raw))}: {len(raw)} mask values for {len(names)} classes "
            f"({', '.join(names)}); give the grey value of each class, class 0 first"
        )
    taken = set(raw) if raw is not None else set(range(len(names)))
    if ignore == "auto":
        ignore = None if IGNORE_INDEX in taken else IGNORE_INDEX
    if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int)):
        raise ConfigError(f"ignore={ignore!r}: expected the mask value of ignored pixels (255)")
    if ignore is not None and (not 0 <= ignore <= 255 or ignore in taken):
        if raw is None:
            expected = (
                f"a mask value in {len(names)}..255, above the class values 0..{len(names) - 1}"
            )
        else:
            expected = f"a mask value in 0..255 that no class has ({_ints(raw)} are classes)"
        if said != "ignore":  # from classes.txt
            raise DataError(f"{said}: ignore value {ignore}: expected {expected}")
        raise ConfigError(f"ignore={ignore}: expected {expected} (or ignore=null for none)")
    if colours is not None and len(colours) != len(names):
        raise ConfigError(
            f"{len(colours)} palette colours for {len(names)} classes ({', '.join(names)}); "
            "give one colour per class"
        )
    spec_ignore_color = _colour(ignore_color, "ignore_color") if ignore_color is not None else None
    if spec_ignore_color is not None and ignore is None:
        raise ConfigError("ignore_color needs an ignore value; drop ignore=null")
    return MaskSpec.multiclass(
        names, values=raw, ignore=ignore, palette=colours, ignore_color=spec_ignore_color
    )


@dataclasses.dataclass(frozen=True)
class _Ignore:
    """A ``classes.txt`` ``ignore`` line: the mask value and/or RGB colour of ignored
    pixels, and where it is (``path: line N 'ignore 255'``)."""

    value: int | None
    colour: tuple[int, int, int] | None
    where: str


def _file_ignore(
    declared: _Ignore, ignore: int | str | None, ignore_color: Sequence[int] | str | None
) -> tuple[int | str | None, Sequence[int] | str | None, str]:
    """The ignore value and colour from a ``classes.txt`` ``ignore`` line and the
    options, and what to name in the ignore value's errors.

    Raises:
        ConfigError: an option declares the ignored pixels otherwise than the line.
    """
    if declared.value is not None and ignore != "auto" and ignore != declared.value:
        raise ConfigError(
            f"{named_options('dataset_options', {'ignore': ignore})} and {declared.where} "
            "both declare the mask value of "
            f"ignored pixels, differently; keep one (drop the option, or the line)"
        )
    if declared.colour is not None and ignore_color is not None:
        given = _colour(ignore_color, "ignore_color")
        if given != declared.colour:
            raise ConfigError(
                f"{named_options('dataset_options', {'ignore_color': ','.join(map(str, given))})} "
                f"and {declared.where} "
                "both declare the colour of ignored pixels, differently; keep one (drop the "
                "option, or the line)"
            )
    if declared.colour is not None and ignore is None:
        raise ConfigError(
            f"{named_options('dataset_options', {'ignore': None})} and {declared.where}: the "
            "line's colour of ignored "
            "pixels needs an ignore value; drop the option, or the line"
        )
    value = declared.value if declared.value is not None else ignore
    colour = declared.colour if declared.colour is not None else ignore_color
    return value, colour, declared.where if declared.value is not None else "ignore"


def _with_png_palette(spec: MaskSpec, mask: Path) -> MaskSpec:
    """``spec`` with the colours of the palette PNG ``mask`` (the first mask) for its
    classes, so that reports and predicted masks keep the colours the masks were drawn
    in; ``spec`` as it is when ``mask`` is no palette PNG, gives two classes one colour
    or is a grey ramp (the default palette shows classes better)."""
    from segkit.data.reading import open_image

    try:
        with open_image(mask) as im:
            if im.mode != "P":
                return spec
            flat = im.getpalette() or []
    except Exception:  # noqa: BLE001 -- an unreadable mask is reported when it is read
        return spec
    raw = spec.allowed[: len(spec.classes)]
    if 3 * (max(raw) + 1) > len(flat):
        return spec
    colours = [tuple(flat[3 * v : 3 * v + 3]) for v in raw]
    if len(set(colours)) != len(colours) or all(r == g == b for r, g, b in colours):
        return spec
    try:
        return dataclasses.replace(spec, palette=tuple(colours))
    except ConfigError:  # a class colour is the ignore colour: keep the default palette
        return spec


def _ints(values: Iterable[int]) -> str:
    return ", ".join(map(str, values))


def _values(values: Sequence[int] | str) -> list[int]:
    """The ``values`` option: distinct mask values 0..255, one per class."""
    items = values.split(",") if isinstance(values, str) else values
    try:
        raw = [int(str(v).strip()) for v in items]
    except (TypeError, ValueError):
        raw = []
    if len(raw) < 2 or len(set(raw)) != len(raw) or not all(0 <= v <= 255 for v in raw):
        raise ConfigError(
            f"values={values!r}: expected the distinct grey value (0..255) of each class in "
            "the masks, class 0 first, e.g. values=0,50,100,150"
        )
    return raw


def _names(classes: Sequence[str] | str) -> list[str]:
    items = classes.split(",") if isinstance(classes, str) else list(classes)
    names = [str(n).strip() for n in items]
    if len(names) < 2 or not all(names) or len(set(names)) != len(names):
        raise ConfigError(
            f"classes={classes!r}: expected 2 or more distinct names, class 0 first, e.g. "
            "classes=background,cell,nucleus"
        )
    return names


def _palette_items(palette: Sequence[Sequence[int]] | str) -> list[Any]:
    return palette.split(";") if isinstance(palette, str) else list(palette)


def _colour(value: Any, what: str) -> tuple[int, int, int]:
    parts = value.replace(",", " ").split() if isinstance(value, str) else value
    try:
        rgb = tuple(int(v) for v in parts)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ConfigError(f"{what}: {value!r} is not a colour r,g,b with values 0..255")
    return rgb  # type: ignore[return-value]


#: The first word of the ``classes.txt`` line that declares ignored pixels (any case).
IGNORE_WORD = "ignore"
#: What a ``classes.txt`` ``ignore`` line may be.
IGNORE_FORMS = (
    "'ignore 255' (their mask value), 'ignore 255 255 255' (their colour in RGB masks) or "
    "'ignore 255 255 255 255' (both)"
)
#: Class names that look like ignored pixels written as a class (named in errors).
VOID_NAMES = ("void", "ignored", "unlabeled", "unlabelled", "dontcare", "don't_care")


def _read_classes_txt(
    path: Path,
) -> tuple[list[str], list[int] | None, list[tuple[int, int, int]] | None, _Ignore | None]:
    """Names, grey values and colours from ``classes.txt``: a line per class, ``name``,
    ``name value``, ``name r g b`` or ``name value r g b`` (values and colours: on every
    line or none); and its ``ignore`` line, if any (:data:`IGNORE_FORMS`: the mask value
    and/or colour of ignored pixels; not a class)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the class list ({e})") from None
    names: list[str] = []
    raw: list[int] = []
    colours: list[tuple[int, int, int]] = []
    declared: _Ignore | None = None
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if parts[0].lower() == IGNORE_WORD:
            if declared is not None:
                raise DataError(
                    f"{path}: line {lineno} {line!r}: a second ignore line ({declared.where} "
                    "is the first); keep one"
                )
            declared = _ignore_line(path, lineno, line, parts)
            continue
        if len(parts) not in (1, 2, 4, 5):
            raise DataError(
                f"{path}: line {lineno} {line!r}: expected a class name, optionally followed "
                "by its grey value in the masks and its colour r g b (e.g. 'cell', "
                "'cell 50', 'cell 255 0 0' or 'cell 50 255 0 0')"
            )
        names.append(parts[0])
        if len(parts) in (2, 5):
            try:
                value = int(parts[1])
            except ValueError:
                value = -1
            if not 0 <= value <= 255:
                raise DataError(
                    f"{path}: line {lineno} {line!r}: {parts[1]!r} is not a grey value 0..255 "
                    "(the class's value in the masks); a class name is one word (write "
                    "traffic_light, not traffic light)"
                )
            raw.append(value)
        if len(parts) in (4, 5):
            try:
                colours.append(_colour(parts[-3:], f"{path}: line {lineno}"))
            except ConfigError as e:
                raise DataError(str(e)) from None
    for what, got in (("a colour r g b", colours), ("a grey value", raw)):
        if got and len(got) != len(names):
            void = [n for n in names if n.lower() in VOID_NAMES]
            hint = (
                f" ({void[0]}: if it marks pixels to leave out of training and scores, write "
                f"its line as {IGNORE_FORMS})"
                if void
                else ""
            )
            raise DataError(
                f"{path}: {len(got)} of {len(names)} classes have {what}; give every class "
                f"{what}, or none{hint}"
            )
    if raw and len(set(raw)) != len(raw):
        raise DataError(f"{path}: grey values {_ints(raw)} repeat one; give each class its own")
    try:
        _names(names)
    except ConfigError:
        raise DataError(
            f"{path}: names {names}; expected 2 or more distinct class names, class 0 first"
        ) from None
    return names, raw or None, colours or None, declared


def _ignore_line(path: Path, lineno: int, line: str, parts: list[str]) -> _Ignore:
    """A ``classes.txt`` ``ignore`` line read.

    Raises:
        DataError: it is not one of :data:`IGNORE_FORMS`.
    """
    where = f"{path}: line {lineno} {line!r}"
    numbers = parts[1:]
    try:
        ints = [int(v) for v in numbers]
    except ValueError:
        ints = []
    if len(numbers) not in (1, 3, 4) or len(ints) != len(numbers):
        raise DataError(
            f"{where}: an ignore line declares the pixels to leave out of training and "
            f"scores: {IGNORE_FORMS}; a class cannot be named ignore"
        )
    value = ints[0] if len(ints) in (1, 4) else None
    if value is not None and not 0 <= value <= 255:
        raise DataError(f"{where}: {value} is not a mask value 0..255")
    colour = None
    if len(ints) in (3, 4):
        try:
            colour = _colour(ints[-3:], where)
        except ConfigError as e:
            raise DataError(str(e)) from None
    return _Ignore(value, colour, where)
