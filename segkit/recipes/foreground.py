"""Crops placed on the foreground: where :class:`~segkit.recipes.ops.RandomCrop` with
``foreground > 0`` puts a window, the same arithmetic for every loader.

Small crops of large images with sparse structures (a few cells, one defect, thin
vessels) are mostly background: a uniform window often holds no foreground at all, and
the model sees few positives. nnU-Net centres a third of its patches on a foreground
voxel (``oversample_foreground_percent = 0.33``), MONAI's ``RandCropByPosNegLabeld``
centres ``pos / (pos + neg)`` of them on one. A crop of this kind draws a class among
those the mask holds (binary: the foreground; K classes: each class but class 0 alike,
so a rare class is drawn as often as a common one), then one of its pixels, and centres
the window on it, moved inside the (padded) image.

The pixels of each class are recorded once per mask (:func:`foreground_points`: at most
:data:`MAX_POINTS` of them, evenly spaced in raster order, as nnU-Net samples its class
locations), so a loader that plans an epoch's windows ahead (DALI) keeps them per image,
and one that crops the mask in hand (albumentations) gets the same points: given the
same three uniform numbers, both loaders place the same window.
"""

from __future__ import annotations

import numpy as np

from segkit.contracts import IGNORE_INDEX

#: Pixels recorded per class and mask (nnU-Net records up to 10,000 per class, on disk):
#: 8 KiB a class and mask, which the DALI loader holds in memory for every image it reads.
MAX_POINTS = 1024

Points = list[np.ndarray]  # per class present (ascending), (k, 2) int32 (row, column)


def foreground_points(target: np.ndarray) -> Points:
    """The pixels of each foreground class of ``target`` (an HW mask of class indices:
    0 background, :data:`~segkit.contracts.IGNORE_INDEX` ignored, anything else
    foreground), at most :data:`MAX_POINTS` a class, evenly spaced in raster order.
    An empty list for a mask without foreground."""
    target = np.asarray(target)
    if target.ndim == 3:
        target = target[..., 0]
    flat = target.ravel()
    if flat.dtype == np.uint8:
        present = np.flatnonzero(np.bincount(flat, minlength=256))
    else:
        present = np.unique(flat)
    width = target.shape[1]
    points: Points = []
    for c in present:
        if c == 0 or c == IGNORE_INDEX:
            continue
        idx = np.flatnonzero(flat == c)
        if len(idx) > MAX_POINTS:
            idx = idx[np.linspace(0, len(idx) - 1, MAX_POINTS).astype(np.int64)]
        points.append(np.stack(np.divmod(idx, width), 1).astype(np.int32))
    return points


def pick_centre(points: Points, u_class: float, u_point: float) -> tuple[int, int] | None:
    """The (row, column) a window centres on, from two numbers in [0, 1): the class
    ``points[floor(u_class * classes)]``, then its pixel ``floor(u_point * pixels)``.
    None for a mask without foreground."""
    if not points:
        return None
    cls = points[min(int(u_class * len(points)), len(points) - 1)]
    y, x = cls[min(int(u_point * len(cls)), len(cls) - 1)]
    return int(y), int(x)


def centred_start(centre: int, before: int, padded: int, size: int) -> int:
    """The window's first row (or column) in the padded image: ``size`` pixels centred on
    ``centre`` (a pixel of the image before padding; ``before`` pixels are padded in
    front of it), moved inside the ``padded`` length."""
    return int(min(max(centre + before - size // 2, 0), max(padded - size, 0)))
