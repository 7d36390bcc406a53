"""Segmentation metrics accumulated on the device.

Dice and IoU are computed per image on the hard prediction (``logit > 0``, i.e.
probability > 0.5) and averaged over images; an image whose true and predicted masks are
both empty scores 1. Sums run in float32: a 512x512 mask summed in fp16 overflows 65504
(smp #463). Nothing here calls ``.item()`` until :meth:`DiceMeter.compute`, so a training
loop that updates every step never waits for the GPU.
"""

from __future__ import annotations

import torch


def dice_iou_per_image(
    logits: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard Dice and IoU for each image of a batch.

    Args:
        logits: ``(N, 1, H, W)`` logits, any float dtype.
        target: ``(N, 1, H, W)`` in {0, 1}.

    Returns:
        Two float32 tensors of shape ``(N,)``.
    """
    dice, iou, _, _ = _per_image(logits, target)
    return dice, iou


def _per_image(
    logits: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's Dice and IoU, and its ``TP`` and ``2 TP + FP + FN`` (predicted plus
    true pixels), float32 ``(N,)`` each."""
    pred = (logits.detach() > 0).flatten(1).float()
    true = target.detach().flatten(1).float()
    inter = (pred * true).sum(1)
    total = pred.sum(1) + true.sum(1)
    union = total - inter
    empty = total == 0
    dice = torch.where(empty, torch.ones_like(inter), 2 * inter / total.clamp_min(1))
    iou = torch.where(empty, torch.ones_like(inter), inter / union.clamp_min(1))
    return dice, iou, inter, total


class DiceMeter:
    """Running mean of per-image Dice, IoU and loss, kept as device tensors, and the
    pixels pooled over the pass for the dataset-level Dice (``dice_dataset``:
    ``2 TP / (2 TP + FP + FN)`` over all images' pixels, what ``--monitor
    valid_dice_dataset`` follows).

    With ``per_image`` it also keeps each image's Dice and IoU (on the device, in the
    order of the updates) for :meth:`per_image_scores`, and its pixel counts for
    :meth:`per_image_counts` (the other definitions of
    :mod:`segkit.metrics.definitions`); the means are the same either way.
    """

    def __init__(self, device: torch.device | str = "cpu", *, per_image: bool = False) -> None:
        self.device = torch.device(device)
        self.keep_per_image = per_image
        self.reset()

    def reset(self) -> None:
        # [dice_sum, iou_sum, images, loss_sum, loss_batches, TP, 2 TP + FP + FN]
        self._acc = torch.zeros(7, dtype=torch.float64, device=self.device)
        self._dice: list[torch.Tensor] = []
        self._iou: list[torch.Tensor] = []
        self._counts: list[torch.Tensor] = []

    @torch.no_grad()
    def update(
        self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | None = None
    ) -> None:
        dice, iou, inter, total = _per_image(logits, target)
        # new_full fills on the device; torch.tensor(..., device="cuda") would copy from the
        # host and synchronize every step.
        zero = dice.new_zeros((), dtype=torch.float64)
        upd = torch.stack(
            [
                dice.sum().double(),
                iou.sum().double(),
                dice.new_full((), float(dice.numel()), dtype=torch.float64),
                loss.detach().double() if loss is not None else zero,
                zero + 1 if loss is not None else zero,
                inter.sum().double(),
                total.sum().double(),
            ]
        )
        self._acc += upd
        if self.keep_per_image:
            from segkit.metrics.definitions import binary_counts

            self._dice.append(dice)
            self._iou.append(iou)
            self._counts.append(binary_counts(logits, target))

    def per_image_scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's Dice and IoU so far, float32 on the CPU, in update order: one
        copy from the device (and one sync) for the whole pass. Needs ``per_image``."""
        if not self.keep_per_image:
            raise RuntimeError("DiceMeter(per_image=True) keeps per-image scores")
        if not self._dice:
            empty = torch.zeros(0, dtype=torch.float32)
            return empty, empty.clone()
        both = torch.stack([torch.cat(self._dice), torch.cat(self._iou)]).cpu()
        return both[0], both[1]

    def per_image_counts(self) -> torch.Tensor:
        """Each image's foreground ``TP, FP, FN`` so far: ``(N, 1, 3)`` float64 on the
        CPU, in update order (for :func:`segkit.metrics.definitions.side_by_side`). Needs
        ``per_image``."""
        if not self.keep_per_image:
            raise RuntimeError("DiceMeter(per_image=True) keeps per-image counts")
        if not self._counts:
            return torch.zeros(0, 1, 3, dtype=torch.float64)
        return torch.cat(self._counts).cpu()

    def state(self) -> torch.Tensor:
        """The raw accumulator (for all-reduce across ranks)."""
        return self._acc

    def load_state(self, state: torch.Tensor) -> None:
        """Replace the accumulator with ``state`` (e.g. :meth:`state` summed over ranks)."""
        self._acc = state

    def compute(self) -> dict[str, float]:
        """Read the means and the pooled Dice (one host sync). ``dice_dataset`` is 1 for
        a pass in which no image holds or is predicted any foreground (nothing to find,
        nothing marked: the per-image rule for an empty image), NaN for no image."""
        d, i, n, ls, lb, tp, total = self._acc.tolist()
        nan = float("nan")
        return {
            "dice": d / n if n else nan,
            "iou": i / n if n else nan,
            "loss": ls / lb if lb else nan,
            "images": n,
            "dice_dataset": (2 * tp / total if total else 1.0) if n else nan,
        }
