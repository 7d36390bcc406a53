"""Sliding-window (tiled) prediction of images larger than what a model was trained on.

The image is padded by reflection, cut into overlapping square tiles on a regular grid
whose last row and column end at the padded border (MMSegmentation's ``slide`` mode),
and the tiles' probabilities are blended back with a weight map that favours tile
centres (MONAI's ``sliding_window_inference`` with ``mode="gaussian"``): a CNN sees less
context near a tile's edge and predicts worse there.

Memory is bounded by the tile batch, not the image: the image stays ``uint8`` (3 bytes a
pixel) and only ``batch`` tiles at a time are normalized and run; the blended sums are
two float32 maps of the image's size (``C + 1`` channels). A 10000x10000 binary
prediction peaks at 1.9 GB for the whole process (tests/test_predict.py measures it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from segkit.config import BLENDS
from segkit.config import BlendName as Blend
from segkit.errors import ConfigError

#: Blending sums larger than this go to host memory instead of the model's device.
DEVICE_ACCUMULATOR_BYTES = 1 << 30


def check_overlap(overlap: float) -> float:
    """Raises:
    ConfigError: ``overlap`` is outside [0, 1)."""
    if not 0 <= overlap < 1:
        raise ConfigError(
            f"--overlap {overlap}: expected a fraction of the tile in [0, 1), e.g. 0.25"
        )
    return overlap


def blend_weights(tile: int, blend: Blend = "gaussian") -> torch.Tensor:
    """The ``(tile, tile)`` float32 weight of each pixel of a tile, 1 at the centre.

    ``gaussian``: a Gaussian of sigma ``tile / 8`` in each direction (MONAI's
    ``sigma_scale=0.125``), floored at 1e-3 so a pixel that only one tile covers (an
    image border) still gets that tile's prediction. ``linear``: a tent falling linearly
    to ``1 / (tile / 2)`` at the edges.

    Raises:
        ConfigError: an unknown ``blend``.
    """
    centre = (tile - 1) / 2
    pos = torch.arange(tile, dtype=torch.float64) - centre
    if blend == "gaussian":
        sigma = tile / 8
        line = torch.exp(-0.5 * (pos / sigma) ** 2)
    elif blend == "linear":
        line = 1 - pos.abs() / (centre + 1)
    else:
        raise ConfigError(f"--blend {blend!r}: expected one of {', '.join(BLENDS)}")
    w = torch.outer(line, line)
    return (w / w.max()).clamp_min(1e-3).float()


def starts(size: int, tile: int, stride: int) -> list[int]:
    """Tile offsets along one axis of ``size >= tile`` pixels: every ``stride``, the last
    one moved back so the last tile ends at ``size``."""
    if size <= tile:
        return [0]
    count = math.ceil((size - tile) / stride) + 1
    return sorted({min(i * stride, size - tile) for i in range(count)})


def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Pad a CPU ``(C, H, W)`` tensor by reflection (without repeating the edge pixel),
    any amount, in its own dtype: numpy reflects again and again where a pad is larger
    than the side (torch's reflection refuses that, and works in float only, which would
    quadruple a uint8 image's memory)."""
    import numpy as np

    pads = ((0, 0), (top, bottom), (left, right))
    return torch.from_numpy(np.pad(x.numpy(), pads, mode="reflect"))


def pad_to_multiple(
    x: torch.Tensor, multiple: int
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad an ``(N, C, H, W)`` batch by reflection so both sides are multiples of
    ``multiple`` (a model's ``min_input_multiple``), centred as ``PadIfNeeded`` centres
    (an odd extra pixel goes to the bottom and right).

    Returns:
        The padded batch (``x`` itself where nothing is needed) and the ``(top, left,
        height, width)`` box of the original in it, for :func:`crop_box`.
    """
    h, w = x.shape[-2:]
    extra_h, extra_w = -h % multiple, -w % multiple
    top, left = extra_h // 2, extra_w // 2
    box = (top, left, h, w)
    if not (extra_h or extra_w):
        return x, box
    pads = (left, extra_w - left, top, extra_h - top)
    if max(pads[0], pads[1]) < w and max(pads[2], pads[3]) < h:
        return torch.nn.functional.pad(x, pads, mode="reflect"), box
    # A side shorter than its pad: reflect again and again (numpy), on the host.
    padded = torch.stack(
        [reflect_pad(item.cpu(), top, extra_h - top, left, extra_w - left) for item in x]
    )
    return padded.to(x.device), box


def crop_box(y: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """The ``(top, left, height, width)`` box of an ``(N, C, H, W)`` output: what
    :func:`pad_to_multiple` padded, cut away again."""
    top, left, h, w = box
    if (top, left) == (0, 0) and tuple(y.shape[-2:]) == (h, w):
        return y
    return y[..., top : top + h, left : left + w]


@torch.no_grad()
def padded_forward(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, multiple: int
) -> torch.Tensor:
    """``forward`` of an ``(N, C, H, W)`` batch of any size, for a model that needs
    sides divisible by ``multiple``: padded by :func:`pad_to_multiple`, the output
    cropped back to ``H x W``. Exact for a model that copies its input."""
    padded, box = pad_to_multiple(x, multiple)
    return crop_box(forward(padded), box)


def windows(height: int, width: int, tile: int, overlap: float) -> Iterator[tuple[int, int]]:
    """The ``(top, left)`` of every tile over a padded ``height x width`` image."""
    stride = max(1, int(tile * (1 - overlap)))
    for top in starts(height, tile, stride):
        for left in starts(width, tile, stride):
            yield top, left


@dataclass(frozen=True)
class Tiling:
    """How :func:`sliding_window` cuts an image into tiles and blends them back.

    Attributes:
        tile: Side of the square tiles.
        overlap: Fraction of a tile shared with the next one, in [0, 1).
        blend: The weight map (:func:`blend_weights`): ``gaussian`` or ``linear``.
        batch: Tiles per call of the prediction: what bounds memory.

    Raises:
        ConfigError: an overlap outside [0, 1).
    """

    tile: int
    overlap: float = 0.25
    blend: Blend = "gaussian"
    batch: int = 8

    def __post_init__(self) -> None:
        check_overlap(self.overlap)


@torch.no_grad()
def sliding_window(
    image: torch.Tensor,
    predict: Callable[[torch.Tensor], torch.Tensor],
    tiling: Tiling,
    *,
    channels: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Blended probabilities of a whole image from tiles.

    Args:
        image: ``(3, H, W)`` uint8 (or float) on the CPU, as read.
        predict: Maps a ``(B, 3, tile, tile)`` batch of raw tiles (float32, 0-255, on
            ``device``) to ``(B, channels, tile, tile)`` probabilities; normalization and
            test-time augmentation happen in it.
        tiling: Tile side, overlap, blend and tiles per batch.
        channels: Probability channels ``predict`` returns.
        device: Where ``predict`` runs.

    Returns:
        ``(channels, H, W)`` float32 probabilities, on the CPU.
    """
    tile = tiling.tile
    _, height, width = image.shape
    # A margin of half the overlap all round keeps the image's own border away from the
    # edges of the tiles, where the model has the least context; then enough to fill
    # one tile.
    margin = int(tile * tiling.overlap / 2)
    extra_h = max(0, tile - (height + 2 * margin))
    extra_w = max(0, tile - (width + 2 * margin))
    padded = reflect_pad(image, margin, margin + extra_h, margin, margin + extra_w)
    ph, pw = padded.shape[-2:]
    device = torch.device(device)
    big = (channels + 1) * ph * pw * 4 > DEVICE_ACCUMULATOR_BYTES
    where = torch.device("cpu") if big else device
    total = torch.zeros((channels, ph, pw), dtype=torch.float32, device=where)
    weight_sum = torch.zeros((ph, pw), dtype=torch.float32, device=where)
    weight = blend_weights(tile, tiling.blend).to(device)
    spots = list(windows(ph, pw, tile, tiling.overlap))
    for i in range(0, len(spots), tiling.batch):
        group = spots[i : i + tiling.batch]
        tiles = torch.stack([padded[:, t : t + tile, s : s + tile] for t, s in group])
        probs = predict(tiles.to(device, non_blocking=True).float()).float() * weight
        probs = probs.to(where)
        w = weight.to(where)
        for (t, s), p in zip(group, probs, strict=True):
            total[:, t : t + tile, s : s + tile] += p
            weight_sum[t : t + tile, s : s + tile] += w
    total /= weight_sum
    return total[:, margin : margin + height, margin : margin + width].cpu()
