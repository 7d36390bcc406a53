"""The data's fingerprint: what ``segkit data check`` measured, plus the width of the
structures to segment.

Everything but the width comes from :class:`segkit.data.check.Report` (sizes, formats,
foreground fraction, classes and their pixel shares, the suggested image size and
``pos_weight``). The width is what decides between resizing and native crops (a 3 px
vessel resized by 0.2 is gone): :func:`structure_width` measures it on the train masks.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from segkit.contracts import Dataset
    from segkit.data.check import Report

#: Train masks :func:`structure_width` reads (evenly spaced over the split): enough for a
#: stable median, few enough to take a second or two on large images.
WIDTH_MASKS = 24

#: PIL modes of grey images (``segkit data check`` reports ``"<format> <mode>"``).
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


@dataclass
class Fingerprint:
    """What the planner knows about a dataset.

    Attributes:
        dataset: The dataset plugin's name.
        root: Its folder.
        classes: Class names (empty: binary).
        images: Images per split.
        size_median: The median image's ``[W, H]`` (by area).
        short_side: The median of the images' shorter sides, in pixels.
        foreground: Train foreground fraction (K classes: every class but class 0).
        class_shares: K classes: each class's share of the labelled train pixels.
        grey: Every image is single-channel (no colour to augment).
        structure_width: Median width of the foreground structures in pixels
            (:func:`structure_width`), None when no train mask holds foreground.
        width_masks: The train masks the width was measured on.
        suggested_size: ``segkit data check``'s suggested image size.
        pos_weight: Its BCE ``pos_weight`` balancing the pixels (binary; None without
            foreground), whether or not the check advises it.
        class_weights: Its median-frequency class weights (K classes).
        ignored: K classes: the share of the train pixels marked 'ignore' (neither
            trained nor scored).
        empty_masks: The share of the train masks with no foreground (a defect set's
            images without defects).
    """

    dataset: str
    root: str
    classes: list[str]
    images: dict[str, int]
    size_median: list[int]
    short_side: int
    foreground: float | None
    class_shares: dict[str, float] = field(default_factory=dict)
    grey: bool = False
    structure_width: float | None = None
    width_masks: int = 0
    suggested_size: int | None = None
    pos_weight: float | None = None
    class_weights: list[float] | None = None
    ignored: float = 0.0
    empty_masks: float = 0.0

    @property
    def multiclass(self) -> bool:
        return bool(self.classes)

    def describe(self) -> str:
        """One line: images per split, median size, target, foreground, width."""
        n = self.images
        w, h = self.size_median
        target = f"{len(self.classes)} classes" if self.classes else "binary"
        fg = f", foreground {self.foreground:.1%}" if self.foreground is not None else ""
        if self.empty_masks:
            fg += f", {self.empty_masks:.0%} of the train masks empty"
        width = (
            f", structures {self.structure_width:.1f} px wide"
            if self.structure_width is not None
            else ""
        )
        return (
            f"{n.get('train', 0)}/{n.get('valid', 0)}/{n.get('test', 0)} train/valid/test "
            f"images, median {w}x{h}, {target}{fg}{width}" + (", grey" if self.grey else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fingerprint(report: Report, dataset: Dataset) -> Fingerprint:
    """The fingerprint of ``dataset`` from its data check ``report`` and its train masks.

    Raises:
        DataError: the report holds no image size (no image could be read).
    """
    from segkit.errors import DataError

    sizes = [st.size_median for st in report.splits.values() if st.size_median]
    if not sizes:
        raise DataError(f"{report.root}: no image could be read; run `segkit data check`")
    train = report.splits["train"]
    median = train.size_median or sizes[0]
    shares: dict[str, float] = {}
    total = sum(v for k, v in train.class_pixels.items() if k != "ignored")
    if total:
        shares = {k: v / total for k, v in train.class_pixels.items() if k != "ignored"}
    labelled = sum(train.class_pixels.values())
    ignored = train.class_pixels.get("ignored", 0) / labelled if labelled else 0.0
    width, measured = structure_width(dataset)
    suggested = report.suggestions.get("image_size", {}).get("value")
    pos = report.suggestions.get("pos_weight", {}).get("value")
    weights = report.suggestions.get("class_weights", {}).get("value")
    modes = {fmt.split()[-1] for fmt in report.image_formats}
    return Fingerprint(
        dataset=report.dataset,
        root=report.root,
        classes=list(report.classes),
        images={split: st.count for split, st in report.splits.items()},
        size_median=list(median),
        short_side=_median_short_side(report),
        foreground=train.foreground_fraction,
        class_shares=shares,
        grey=bool(modes) and modes <= GREY_MODES,
        structure_width=width,
        width_masks=measured,
        suggested_size=suggested,
        pos_weight=pos,
        class_weights=weights,
        ignored=ignored,
        empty_masks=len(train.empty_masks) / train.count if train.count else 0.0,
    )


def _median_short_side(report: Report) -> int:
    """The train split's median short side (the other splits' when train has none)."""
    for split in ("train", "valid", "test"):
        size = report.splits[split].size_median
        if size:
            return int(min(size))
    raise AssertionError("fingerprint() checked that some split has sizes")


def mask_width(foreground: np.ndarray) -> float | None:
    """The mean width of the structures in a boolean mask: ``2 * area / boundary``, the
    boundary counted as the 4-neighbour edges between foreground and background pixels
    (edges on the image's border left out: a structure cut by the frame is not thinner).

    A strip ``w`` pixels wide has ``2 * w * L / 2L = w``; a disc of radius ``r`` gives
    ``r``. None for a mask without foreground or without background.
    """
    fg = np.asarray(foreground, dtype=bool)
    area = int(fg.sum())
    edges = int(np.count_nonzero(fg[1:, :] != fg[:-1, :])) + int(
        np.count_nonzero(fg[:, 1:] != fg[:, :-1])
    )
    if area == 0 or edges == 0:
        return None
    return 2.0 * area / edges


def structure_width(dataset: Dataset, masks: int = WIDTH_MASKS) -> tuple[float | None, int]:
    """The median :func:`mask_width` of up to ``masks`` train masks, evenly spaced over
    the split, and how many were measured. Foreground: every pixel that is not
    background (K classes: every class but class 0; ignored pixels are not foreground).

    Returns:
        ``(width in pixels or None when no mask holds foreground, masks measured)``.
    """
    from segkit.contracts import IGNORE_INDEX
    from segkit.data.check import split_samples
    from segkit.data.reading import read_raw_mask, to_target
    from segkit.errors import DataError

    spec = dataset.mask_spec
    samples = split_samples(dataset, "train")
    if not samples:
        return None, 0
    step = max(1, len(samples) // masks)
    widths = []
    for sample in samples[::step][:masks]:
        try:
            target = to_target(read_raw_mask(sample.mask, spec), spec)
        except DataError:  # unreadable: refused by the data check, or skipped by the run
            continue
        foreground = (target != 0) & (target != IGNORE_INDEX)
        width = mask_width(foreground)
        if width is not None:
            widths.append(width)
    if not widths:
        return None, 0
    return float(statistics.median(widths)), len(widths)
