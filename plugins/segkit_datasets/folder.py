"""Reader for a user's own binary dataset: ``images/`` and ``masks/`` with matching names."""

from __future__ import annotations

import random
from pathlib import Path

from segkit.contracts import SPLITS, MaskSpec, Sample, check_disjoint, check_samples, check_split
from segkit.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

_LAYOUT = (
    "expected images/<name>.jpg|.jpeg|.png and masks/<name>.png "
    "(optionally splits/train.txt, valid.txt, test.txt)"
)


class FolderDataset:
    """A binary segmentation dataset in plain folders::

        root/images/<stem>.jpg | .jpeg | .png
        root/masks/<stem>.png          0 background; 1 or 255 foreground
        root/splits/train.txt          optional: one stem per line ('#' = comment)
        root/splits/valid.txt
        root/splits/test.txt

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

    Raises:
        DataError: ``root``, ``images/`` or ``masks/`` is missing, there are no images,
            an image has no mask, a mask has no image, or two images share a stem.
        ConfigError: the fractions are outside [0, 1) or add up to 1 or more.
    """

    mask_spec = MaskSpec(background=0, allowed=(0, 1, 255))

    def __init__(
        self,
        root: Path | None,
        valid_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
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
