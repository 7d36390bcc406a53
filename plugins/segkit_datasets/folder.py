"""Reader for a user's own dataset, binary or multi-class: ``images/`` and ``masks/``
with matching names."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from segkit.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

#: The layout in one line (the ``layout`` capability, shown when a folder is refused).
LAYOUT = (
    "images/<name>.jpg|.jpeg|.png and masks/<name>.png with the same names (binary 0/1 or "
    "0/255; K classes: classes.txt; optional splits/train.txt, valid.txt, test.txt)"
)

_LAYOUT = f"expected {LAYOUT}"

#: Names shown in a one-line summary of many problems before "and N more".
SHOW = 3


class FolderDataset:
    """A segmentation dataset in plain folders::

        root/images/<stem>.jpg | .jpeg | .png
        root/masks/<stem>.png          binary: 0 background; 1 or 255 foreground
                                       K classes: 0..K-1, 255 ignored (or colours)
        root/classes.txt               optional: the class names (multi-class)
        root/splits/train.txt          optional: one stem per line ('#' = comment)
        root/splits/valid.txt
        root/splits/test.txt

    Binary unless classes are named, by ``classes.txt`` or the ``classes`` option
    (``--dataset-opt classes=background,cell,nucleus``; the option wins). Then masks are
    class maps: index PNGs (8-bit grayscale, or palette PNGs, whose indices are read)
    holding ``0..K-1``, with ``ignore`` (default 255) for pixels to leave out of loss and
    metrics. ``classes.txt`` holds one class per line, class 0 first, optionally with its
    colour: ``background 0 0 0``. Colours (there, or the ``palette`` option:
    ``palette="0,0,0;255,0,0;0,0,255"``) colour the reports, and let masks be RGB images
    in those colours (``ignore_color=r,g,b`` is the colour of ignored pixels there).

    Every image needs a mask with the same stem and every mask an image. Masks must be
    PNG: JPEG compression would invent values between 0 and 255. Hidden files and files
    with other suffixes are ignored.

    Splits:
        * With a ``splits/`` folder, each split is the stems its list names, in file order.
        * Otherwise the stems are sorted and shuffled with
          ``random.Random(split_seed).shuffle``; the first ``round(test_fraction * n)``
          are ``test``, the next ``round(valid_fraction * n)`` ``valid``, the rest
          ``train``. Each list is returned sorted.

    Args:
        root: The dataset folder.
        valid_fraction: Fraction of the images held out as ``valid`` (no ``splits/``).
        test_fraction: Fraction of the images held out as ``test`` (no ``splits/``).
        split_seed: Seed of the shuffle (no ``splits/``).
        classes: Class names, class 0 first (a list, or one comma-separated string).
        palette: One colour per class (a list of ``[r, g, b]``, or ``"r,g,b;r,g,b;..."``).
        ignore: The mask value of ignored pixels (multi-class; ``auto``: 255; ``None`` for
            none).
        ignore_color: The colour of ignored pixels in RGB masks (``[r, g, b]`` or
            ``"r,g,b"``).

    Raises:
        DataError: ``root``, ``images/`` or ``masks/`` is missing, there are no images,
            an image has no mask, a mask has no image, two images share a stem, or
            ``classes.txt`` is malformed.
        ConfigError: the fractions are outside [0, 1) or add up to 1 or more, or a class
            option is malformed (or given for a binary dataset).
    """

    #: The binary spec; an instance with classes has its own.
    mask_spec = MaskSpec(background=0, allowed=(0, 1, 255))

    #: ``layout`` capability: the layout in one line.
    layout = LAYOUT

    @staticmethod
    def recognizes(root: Path) -> bool:
        """``recognizes`` capability: a ``masks/`` folder marks this layout (a missing
        ``images/`` is then reported in this layout's words)."""
        return (Path(root) / "masks").is_dir()

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
        *,
        _lenient: bool = False,  # audit(): keep unpaired files as problems, not an error
    ) -> None:
        if root is None:
            raise DataError(
                "no data folder given; pass --data pointing at a folder with images/ and masks/"
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
        self.mask_spec = _mask_spec(root, classes, palette, ignore, ignore_color)
        self._scan = _scan(root)
        self._pairs = self._scan.pairs
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
                    if split != "train" and not (ds.root / "splits").is_dir():
                        raise DataError(ds._too_few(split))
                    check_samples(samples, split, ds._split_source(split))
                except DataError as e:
                    problems.append((ds._split_source(split), str(e)))
        return LayoutAudit(ds.root, ds.mask_spec, splits, problems, skipped, ds._scan.advice)

    @staticmethod
    def declare_classes(
        root: Path, classes: list[str], palette: list[tuple[int, int, int]] | None
    ) -> str:
        """``declare_classes`` capability: the ``classes.txt`` that names ``classes`` (with
        their colours: RGB masks are then read by colour, palette PNGs keep their
        colours in the reports), and the equivalent ``--dataset-opt`` flags."""
        lines = [
            f"{name} {' '.join(map(str, palette[i]))}" if palette else name
            for i, name in enumerate(classes)
        ]
        flags = f"--dataset-opt classes={','.join(classes)}"
        if palette:
            flags += " --dataset-opt 'palette=" + ";".join(",".join(map(str, c)) for c in palette)
            flags += "'"
        body = "".join(f"\n      {line}" for line in lines)
        return (
            f"pass {flags}, or write {Path(root) / 'classes.txt'} with these lines (one class "
            f"per line, class 0 first; rename the classes as you like):{body}"
        )

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
        if not stems and split != "train" and not (self.root / "splits").is_dir():
            raise DataError(self._too_few(split))
        samples = [Sample(id=s, image=self._pairs[s][0], mask=self._pairs[s][1]) for s in stems]
        return check_samples(samples, split, self._split_source(split))

    def _too_few(self, split: str) -> str:
        """Why a random split left ``split`` empty, and the fraction that fills it."""
        n = len(self._pairs)
        option = f"{split}_fraction"
        fraction = getattr(self, option)
        enough = math.ceil(100 / n) / 100 if n else 1.0
        return (
            f"{self.root / 'images'}: split '{split}' has no samples: {n} images x "
            f"{option} {fraction} rounds to 0; pass --dataset-opt {option}={enough}, add "
            "images, or list the splits in splits/train.txt, valid.txt and test.txt"
        )

    def _split_source(self, split: str) -> Path:
        splits_dir = self.root / "splits"
        return splits_dir / f"{split}.txt" if splits_dir.is_dir() else self.root / "images"

    def _split_stems(self, split: str, problems: list[tuple[Path, str]] | None = None) -> list[str]:
        """The stems of ``split``. With ``problems`` (an audit), names that have no image
        and names in two lists are recorded there and left out instead of raising."""
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

    def _random_split(self) -> dict[str, list[str]]:
        order = sorted(self._pairs)
        random.Random(self.split_seed).shuffle(order)
        n_test = round(self.test_fraction * len(order))
        n_valid = round(self.valid_fraction * len(order))
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
            stem = line.split()[0]
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


@dataclass
class _Scan:
    """The pairing of ``images/`` with ``masks/``: the pairs, every problem (file, message),
    every file left unread (file, why), and advice that fixes many problems at once."""

    pairs: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    problems: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # per problem: lacking, orphan, duplicate

    def problem(self, kind: str, path: Path, message: str) -> None:
        self.problems.append((path, message))
        self.kinds.append(kind)


def _scan(root: Path) -> _Scan:
    """Pair ``images/<stem>.*`` with ``masks/<stem>.png``, recording every file without its
    partner (with the files whose names are close) rather than stopping at the first.

    Raises:
        DataError: ``images/`` or ``masks/`` is missing, or ``images/`` holds no image.
    """
    images_dir, masks_dir = root / "images", root / "masks"
    for sub in (images_dir, masks_dir):
        if not sub.is_dir():
            raise DataError(f"{sub}: folder not found; {_LAYOUT}")
    scan = _Scan()

    images: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if path.name.startswith("."):
            scan.skipped.append((path, "a hidden file"))
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            scan.skipped.append((path, "not an image name (.jpg, .jpeg or .png)"))
            continue
        if path.stem in images:
            scan.problem(
                "duplicate",
                path,
                f"{path}: two images are named '{path.stem}' ({images[path.stem].name} and "
                f"{path.name}); keep one, so each mask belongs to one image",
            )
            continue
        images[path.stem] = path
    if not images:
        raise DataError(f"{images_dir}: no images (.jpg, .jpeg, .png) found; {_LAYOUT}")

    masks: dict[str, Path] = {}
    other_masks: dict[str, Path] = {}
    for path in sorted(masks_dir.iterdir()):
        if path.name.startswith("."):
            scan.skipped.append((path, "a hidden file"))
            continue
        (masks if path.suffix.lower() == ".png" else other_masks)[path.stem] = path

    unpaired_masks = [p for stem, p in masks.items() if stem not in images]
    unpaired_masks += [p for stem, p in other_masks.items() if stem not in masks]
    lacking = [stem for stem in sorted(images) if stem not in masks]
    near: dict[str, list[str]] = {}
    for stem in lacking:
        if stem in other_masks:
            hint = (
                f"found {other_masks[stem].name}, but masks must be PNG "
                "(JPEG compression changes label values)"
            )
        else:
            near[stem] = _close(stem, [p.name for p in unpaired_masks])
            hint = (
                f"masks/ holds {_or(near[stem])}: name the mask {stem}.png"
                if near[stem]
                else "every image needs masks/<same name>.png"
            )
        scan.problem(
            "lacking",
            masks_dir / f"{stem}.png",
            f"{masks_dir / (stem + '.png')}: mask for image {images[stem].name} not found; {hint}",
        )
    for stem in (stem for stem in sorted(masks) if stem not in images):
        close = _close(stem, [images[s].name for s in lacking])
        hint = f" (images/ holds {_or(close)})" if close else ""
        scan.problem(
            "orphan",
            masks[stem],
            f"{masks[stem]}: mask has no image images/{stem}.jpg, .jpeg or .png{hint}; add "
            "the image or remove the mask",
        )
    for stem, path in other_masks.items():
        if stem in masks or stem not in images:
            why = "not a PNG mask (masks/<name>.png)"
            if stem in masks:
                why = "not .png (the .png of the same name is the mask read)"
            scan.skipped.append((path, why))
    scan.advice += _renaming_advice(masks_dir, near)
    jpeg = [other_masks[s] for s in lacking if s in other_masks]
    if jpeg:
        from segkit.data.encoding import threshold_command

        scan.advice.append(
            f"masks/ holds {len(jpeg)} mask{'s' if len(jpeg) > 1 else ''} in another format "
            f"than PNG ({_first(jpeg)}); JPEG compression blurs label values, so segkit reads "
            "PNG masks only. Export them as PNG from the labelling tool, or, for black and "
            "white masks, threshold them into PNGs next to them: "
            + threshold_command(masks_dir, sorted({p.suffix for p in jpeg}))
        )
    scan.pairs = {stem: (images[stem], masks[stem]) for stem in images if stem in masks}
    return scan


def _close(stem: str, names: list[str]) -> list[str]:
    from segkit.data.layouts import close_names

    return close_names(stem, names)


def _or(names: list[str]) -> str:
    return " and ".join(names)


def _first(paths: Sequence[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:SHOW])
    return shown + (f" and {len(paths) - SHOW} more" if len(paths) > SHOW else "")


def _renaming_advice(masks_dir: Path, near: dict[str, list[str]]) -> list[str]:
    """When every mask not found has one near-miss named ``<stem><affix>.png`` (or
    ``<affix><stem>.png``) with the same affix, the command that renames them all."""
    if len(near) < 2:
        return []
    affixes = set()
    for stem, names in near.items():
        if len(names) != 1:
            return []
        other = Path(names[0])
        if other.suffix.lower() != ".png":
            return []
        if other.stem.startswith(stem) and other.stem != stem:
            affixes.add(("suffix", other.stem[len(stem) :], other.suffix))
        elif other.stem.endswith(stem) and other.stem != stem:
            affixes.add(("prefix", other.stem[: -len(stem)], other.suffix))
        else:
            return []
    if len(affixes) != 1:
        return []
    where, affix, suffix = affixes.pop()
    if where == "suffix":
        pattern, new = f"*{affix}{suffix}", f'"${{f%{affix}{suffix}}}.png"'
    else:
        pattern, new = f"{affix}*{suffix}", f'"${{f#{affix}}}"'
    return [
        f"{len(near)} masks are named <image name>{affix if where == 'suffix' else ''}.png"
        f"{'' if where == 'suffix' else f' with {affix!r} before the name'}; segkit pairs "
        f"masks/<image name>.png with images/<image name>.*: rename them with "
        f'cd {masks_dir} && for f in {pattern}; do mv "$f" {new}; done'
    ]


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
) -> MaskSpec:
    """The binary spec, or the K-class one from the options and ``classes.txt``."""
    names: list[str] | None = None
    colours: list[tuple[int, int, int]] | None = None
    listed = root / "classes.txt"
    if classes is not None:
        names = _names(classes)
    elif listed.is_file():
        names, colours = _read_classes_txt(listed)
    if palette is not None:
        colours = [_colour(c, "palette") for c in _palette_items(palette)]
    if names is None:
        given = [
            name
            for name, value in (
                ("palette", palette),
                ("ignore", ignore),
                ("ignore_color", ignore_color),
            )
            if value is not None and not (name == "ignore" and value == "auto")
        ]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} describe{'s' if len(given) == 1 else ''} class maps, and "
                "this folder dataset is binary (0 background, 1 or 255 foreground); name its "
                f"classes too (--dataset-opt classes=background,... or {listed})"
            )
        return FolderDataset.mask_spec
    if ignore == "auto":
        ignore = IGNORE_INDEX
    if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int)):
        raise ConfigError(f"ignore={ignore!r}: expected the mask value of ignored pixels (255)")
    if ignore is not None and not len(names) <= ignore <= 255:
        raise ConfigError(
            f"ignore={ignore}: expected a mask value in {len(names)}..255, above the class "
            f"values 0..{len(names) - 1} (or ignore=null for none)"
        )
    if colours is not None and len(colours) != len(names):
        raise ConfigError(
            f"{len(colours)} palette colours for {len(names)} classes ({', '.join(names)}); "
            "give one colour per class"
        )
    spec_ignore_color = _colour(ignore_color, "ignore_color") if ignore_color is not None else None
    if spec_ignore_color is not None and ignore is None:
        raise ConfigError("ignore_color needs an ignore value; drop ignore=null")
    return MaskSpec.multiclass(
        names, ignore=ignore, palette=colours, ignore_color=spec_ignore_color
    )


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


def _read_classes_txt(path: Path) -> tuple[list[str], list[tuple[int, int, int]] | None]:
    """Names (and colours, if every line gives one) from ``classes.txt``."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the class list ({e})") from None
    names: list[str] = []
    colours: list[tuple[int, int, int]] = []
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (1, 4):
            raise DataError(
                f"{path}: line {lineno} {line!r}: expected a class name, optionally followed "
                "by its colour r g b (e.g. 'cell 255 0 0')"
            )
        names.append(parts[0])
        if len(parts) == 4:
            try:
                colours.append(_colour(parts[1:], f"{path}: line {lineno}"))
            except ConfigError as e:
                raise DataError(str(e)) from None
    if colours and len(colours) != len(names):
        raise DataError(
            f"{path}: {len(colours)} of {len(names)} classes have a colour; give every class "
            "a colour r g b, or none"
        )
    try:
        _names(names)
    except ConfigError:
        raise DataError(
            f"{path}: names {names}; expected 2 or more distinct class names, class 0 first"
        ) from None
    return names, colours or None
