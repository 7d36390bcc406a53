"""Reader for a user's own dataset, binary or multi-class: ``images/`` and ``masks/``
with matching names."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segkit.contracts import (
    IGNORE_INDEX,
    SPLITS,
    MaskSpec,
    Sample,
    check_disjoint,
    check_samples,
    check_split,
)
from segkit.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

_LAYOUT = (
    "expected images/<name>.jpg|.jpeg|.png and masks/<name>.png "
    "(optionally splits/train.txt, valid.txt, test.txt)"
)


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
        self._pairs = _scan(root)

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
        splits_dir = self.root / "splits"
        if splits_dir.is_dir():
            source = splits_dir / f"{split}.txt"
            stems = self._read_split_list(source)
            lists: dict[Path, list[str]] = {source: stems}
            for other in (splits_dir / f"{s}.txt" for s in SPLITS if s != split):
                try:
                    lists[other] = self._read_split_list(other)
                except DataError:
                    pass  # that list's own problem is reported when its split is read
            check_disjoint(lists)
        else:
            source = self.root / "images"
            stems = self._random_split()[split]
        samples = [Sample(id=s, image=self._pairs[s][0], mask=self._pairs[s][1]) for s in stems]
        return check_samples(samples, split, source)

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

    def _read_split_list(self, path: Path) -> list[str]:
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
            more = f" ({len(unknown) - 1} more unknown names)" if len(unknown) > 1 else ""
            raise DataError(
                f"{path}: line {lineno} names '{stem}', which has no image in images/{more}; "
                "list image names without their suffix"
            )
        return stems


def _scan(root: Path) -> dict[str, tuple[Path, Path]]:
    """Pair ``images/<stem>.*`` with ``masks/<stem>.png``; every file must have its partner."""
    images_dir, masks_dir = root / "images", root / "masks"
    for sub in (images_dir, masks_dir):
        if not sub.is_dir():
            raise DataError(f"{sub}: folder not found; {_LAYOUT}")

    images: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in images:
            raise DataError(
                f"{path}: two images are named '{path.stem}' ({images[path.stem].name} and "
                f"{path.name}); keep one, so each mask belongs to one image"
            )
        images[path.stem] = path
    if not images:
        raise DataError(f"{images_dir}: no images (.jpg, .jpeg, .png) found; {_LAYOUT}")

    masks: dict[str, Path] = {}
    other_masks: dict[str, Path] = {}
    for path in sorted(masks_dir.iterdir()):
        if path.name.startswith("."):
            continue
        (masks if path.suffix.lower() == ".png" else other_masks)[path.stem] = path

    lacking = [stem for stem in sorted(images) if stem not in masks]
    if lacking:
        stem = lacking[0]
        more = f" ({len(lacking) - 1} more images lack masks)" if len(lacking) > 1 else ""
        hint = "every image needs masks/<same name>.png"
        if stem in other_masks:
            hint = (
                f"found {other_masks[stem].name}, but masks must be PNG "
                "(JPEG compression changes label values)"
            )
        raise DataError(
            f"{masks_dir / (stem + '.png')}: mask for image {images[stem].name} not found"
            f"{more}; {hint}"
        )
    orphans = [stem for stem in sorted(masks) if stem not in images]
    if orphans:
        more = f" ({len(orphans) - 1} more masks lack images)" if len(orphans) > 1 else ""
        raise DataError(
            f"{masks[orphans[0]]}: mask has no image images/{orphans[0]}.jpg, .jpeg or .png"
            f"{more}; add the image or remove the mask"
        )
    return {stem: (images[stem], masks[stem]) for stem in images}


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
