"""Multi-class segmentation metrics (issue 12), accumulated on the device.

:class:`ConfusionMeter` keeps the ``K x K`` confusion matrix of a pass (rows: target
class, columns: predicted class = ``argmax`` of the logits) as int64 counts on the device,
plus per-image sums for the per-image means, and reads them once in
:meth:`ConfusionMeter.compute`. The binary :class:`segkit.metrics.binary.DiceMeter` is separate
and unchanged.

Definitions (``TP_c``, ``FP_c``, ``FN_c`` from the confusion matrix ``C``: ``TP_c =
C[c, c]``, ``FP_c`` = column sum - ``TP_c``, ``FN_c`` = row sum - ``TP_c``):

- ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``, ``Dice_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``.
- A class that appears in neither the target nor the prediction (its union is 0) has no
  score: its IoU and Dice are NaN and it is left out of every mean (never counted as 1 or 0).
- Pixels whose target is ``ignore_index`` are not counted at all (neither their target nor
  their prediction). A target outside ``[0, K)`` that is not ``ignore_index`` is a label
  bug: it is counted apart (``invalid_pixels``), kept out of the matrix, and
  :meth:`ConfusionMeter.compute` raises ``ValueError`` for it (checked there, not in
  :meth:`~ConfusionMeter.update`, so that update never waits for the device). The
  ignored pixels are counted apart too (``ignored_pixels``), to say how much of the
  truth no score sees.
- Dataset means (``miou``, ``mdice``): the mean over classes of the dataset-level
  ``IoU_c`` / ``Dice_c`` above (NaN classes left out).
- Per-image means (``miou_images``, ``mdice_images``): for each image, the IoU and Dice of
  each class on that image alone, averaged over the classes *present in that image's
  target or prediction* (union > 0 on that image, non-ignored pixels only); then the mean
  of those per-image values over images. An image with no non-ignored pixel has no score:
  it is NaN in :meth:`~ConfusionMeter.per_image_scores` and left out of the mean.
- ``pixel_acc``: ``trace(C) / sum(C)``, over non-ignored pixels.

Why not ``torch.bincount``: on CUDA it reads the input's maximum to the host to size its
output, which synchronizes every step. The counts are the same bincount (one index per
pixel, ``image * K * K + target * K + pred``) done as one ``index_add_`` into a tensor of
fixed size, which needs no host value (and is deterministic on CUDA under
``torch.use_deterministic_algorithms``).
"""

from __future__ import annotations

import math

import torch

#: ``ConfusionMeter.state()`` after the ``K * K`` confusion counts:
#: [miou_image_sum, mdice_image_sum, images_scored, images, loss_sum, loss_batches,
#:  invalid_pixels, ignored_pixels]
_TAIL = 8
#: The tail of a state from before ``ignored_pixels`` (read as 0 ignored pixels).
_OLD_TAIL = 7


def per_image_confusion(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's ``K x K`` confusion matrix (rows target, columns prediction).

    Args:
        pred: ``(N, H, W)`` integer class indices in ``[0, K)``.
        target: ``(N, H, W)`` integer labels; ``ignore_index`` pixels are skipped, and so
            are labels outside ``[0, K)`` (counted in the second return value).
        num_classes: ``K``.
        ignore_index: the label to skip, or None.

    Returns:
        ``(N, K, K)`` int64 counts and a 0-d int64 count of invalid (out-of-range,
        not ignored) target pixels, both on the input's device, with no host sync
        (:func:`ignored_pixels` counts the ignored ones).
    """
    k = num_classes
    n = pred.shape[0]
    pred = pred.reshape(n, -1).long()
    target = target.reshape(n, -1).long()
    in_range = (target >= 0) & (target < k)
    if ignore_index is not None:
        not_ignored = target != ignore_index
    else:
        not_ignored = torch.ones_like(in_range)
    valid = in_range & not_ignored
    invalid = (not_ignored & ~in_range).sum()
    base = torch.arange(n, device=pred.device).unsqueeze(1) * (k * k)
    # Skipped pixels go to one extra bin at the end, dropped below: no boolean indexing
    # (which would read the number of valid pixels back to the host).
    idx = torch.where(valid, base + target * k + pred, n * k * k)
    counts = torch.zeros(n * k * k + 1, dtype=torch.int64, device=pred.device)
    counts.index_add_(0, idx.reshape(-1), torch.ones_like(idx).reshape(-1))
    return counts[:-1].view(n, k, k), invalid


def ignored_pixels(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """A 0-d int64 count of ``target``'s pixels equal to ``ignore_index`` (0 for None),
    on its device, with no host sync."""
    if ignore_index is None:
        return torch.zeros((), dtype=torch.int64, device=target.device)
    return (target == ignore_index).sum()


def scores_from_confusion(conf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and Dice per class from confusion matrices ``(..., K, K)``, float64, NaN
    where the class is in neither target nor prediction."""
    conf = conf.double()
    tp = conf.diagonal(dim1=-2, dim2=-1)
    true = conf.sum(-1)  # row sums: target pixels of each class
    pred = conf.sum(-2)  # column sums: predicted pixels of each class
    union = true + pred - tp
    nan = torch.full_like(tp, math.nan)
    present = union > 0
    iou = torch.where(present, tp / union.clamp_min(1), nan)
    dice = torch.where(present, 2 * tp / (true + pred).clamp_min(1), nan)
    return iou, dice


class ConfusionMeter:
    """Confusion matrix, per-image mean IoU / Dice and loss of a pass, on the device.

    ``update`` launches device work only (no ``.item()``, no host copy, no boolean
    indexing), so a loop that updates every step never waits for the GPU; ``compute``
    reads everything back once. See the module docstring for the exact definitions.

    Args:
        num_classes: ``K``; logits are ``(N, K, H, W)``.
        device: where the counts live (the logits' device).
        ignore_index: target label left out of every count (None: none).
        per_image: also keep each image's mIoU and mDice for :meth:`per_image_scores`
            (the means are the same either way).
    """

    def __init__(
        self,
        num_classes: int,
        device: torch.device | str = "cpu",
        *,
        ignore_index: int | None = 255,
        per_image: bool = False,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"ConfusionMeter needs num_classes >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.ignore_index = ignore_index
        self.keep_per_image = per_image
        self.reset()

    def reset(self) -> None:
        k = self.num_classes
        self._conf = torch.zeros(k, k, dtype=torch.int64, device=self.device)
        # [miou_image_sum, mdice_image_sum, images_scored, images, loss_sum, loss_batches,
        #  invalid_pixels, ignored_pixels]
        self._acc = torch.zeros(_TAIL, dtype=torch.float64, device=self.device)
        self._miou: list[torch.Tensor] = []
        self._mdice: list[torch.Tensor] = []
        self._counts: list[torch.Tensor] = []

    @torch.no_grad()
    def update(
        self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | None = None
    ) -> None:
        """Add a batch: ``logits`` ``(N, K, H, W)``, ``target`` ``(N, H, W)`` integer
        labels (a ``(N, 1, H, W)`` target is accepted too), ``loss`` a 0-d tensor."""
        if logits.ndim != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits must be (N, {self.num_classes}, H, W), got {tuple(logits.shape)}"
            )
        if target.ndim == 4 and target.shape[1] == 1:
            target = target[:, 0]
        n, _, h, w = logits.shape
        if tuple(target.shape) != (n, h, w):
            raise ValueError(
                f"target must be {(n, h, w)} to match logits, got {tuple(target.shape)}"
            )
        pred = logits.detach().argmax(1)
        per, invalid = per_image_confusion(
            pred, target.detach(), self.num_classes, self.ignore_index
        )
        self._conf += per.sum(0)

        iou, dice = scores_from_confusion(per)  # (N, K), NaN where absent on that image
        present = ~torch.isnan(iou)
        n_present = present.sum(1)
        scored = n_present > 0
        denom = n_present.clamp_min(1).double()
        img_miou = torch.where(present, iou, 0.0).sum(1) / denom
        img_mdice = torch.where(present, dice, 0.0).sum(1) / denom
        zero = img_miou.new_zeros(())
        upd = torch.stack(
            [
                torch.where(scored, img_miou, 0.0).sum(),
                torch.where(scored, img_mdice, 0.0).sum(),
                scored.sum().double(),
                img_miou.new_full((), float(n)),
                loss.detach().double().reshape(()) if loss is not None else zero,
                zero + 1 if loss is not None else zero,
                invalid.double(),
                ignored_pixels(target, self.ignore_index).double(),
            ]
        )
        self._acc += upd
        if self.keep_per_image:
            nan = torch.full_like(img_miou, math.nan)
            self._miou.append(torch.where(scored, img_miou, nan))
            self._mdice.append(torch.where(scored, img_mdice, nan))
            tp = per.diagonal(dim1=-2, dim2=-1)
            # (N, K, 3): TP, FP (predicted minus TP), FN (target minus TP) of each class.
            self._counts.append(torch.stack([tp, per.sum(-2) - tp, per.sum(-1) - tp], -1))

    def state(self) -> torch.Tensor:
        """Everything to sum across ranks, as one flat float64 tensor (a new one):
        the ``K * K`` confusion counts then the 8 sums above. Unlike
        ``DiceMeter.state()`` it is a copy (the counts are int64 here): all-reduce it,
        then :meth:`load_state` it back. Counts travel exactly below 2**53 pixels."""
        return torch.cat([self._conf.reshape(-1).double(), self._acc])

    def load_state(self, state: torch.Tensor) -> None:
        """Replace the sums with ``state`` (e.g. :meth:`state` summed over ranks). The
        per-image scores kept for :meth:`per_image_scores` are this rank's, unchanged. A
        state of a segkit before the ignored pixels were counted (7 sums) reads as none
        ignored."""
        k = self.num_classes
        state = state.to(self.device, torch.float64)
        if state.shape == (k * k + _OLD_TAIL,):
            state = torch.cat([state, state.new_zeros(_TAIL - _OLD_TAIL)])
        if state.shape != (k * k + _TAIL,):
            raise ValueError(f"state must have shape ({k * k + _TAIL},), got {tuple(state.shape)}")
        self._conf = state[: k * k].round().long().view(k, k).clone()
        self._acc = state[k * k :].clone()

    def per_image_scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's mIoU and mDice so far (mean over the classes present in that
        image's target or prediction; NaN for an image with no non-ignored pixel),
        float64 on the CPU, in update order: one copy from the device for the whole
        pass. Needs ``per_image``."""
        if not self.keep_per_image:
            raise RuntimeError("ConfusionMeter(per_image=True) keeps per-image scores")
        if not self._miou:
            empty = torch.zeros(0, dtype=torch.float64)
            return empty, empty.clone()
        both = torch.stack([torch.cat(self._miou), torch.cat(self._mdice)]).cpu()
        return both[0], both[1]

    def per_image_counts(self) -> torch.Tensor:
        """Each image's ``TP, FP, FN`` per class so far (ignored pixels not counted):
        ``(N, K, 3)`` float64 on the CPU, in update order (for
        :func:`segkit.metrics.definitions.side_by_side`). Needs ``per_image``."""
        if not self.keep_per_image:
            raise RuntimeError("ConfusionMeter(per_image=True) keeps per-image counts")
        if not self._counts:
            return torch.zeros(0, self.num_classes, 3, dtype=torch.float64)
        return torch.cat(self._counts).double().cpu()

    def compute(self) -> dict[str, object]:
        """Read the metrics (one host sync). Keys:

        - ``miou``, ``mdice``: dataset-level means over classes (from the confusion matrix).
        - ``miou_images``, ``mdice_images``: means over images of each image's mean.
        - ``pixel_acc``: correct / counted pixels.
        - ``iou_<c>``, ``dice_<c>`` for ``c`` in ``0..K-1``: dataset-level per class (NaN
          for a class in neither target nor prediction).
        - ``loss``: mean of the losses passed to update (NaN if none).
        - ``images``: images seen; ``images_scored``: those with a non-ignored pixel;
          ``pixels``: counted (non-ignored) pixels; ``ignored_pixels``: the target pixels
          equal to ``ignore_index``, left out of every score.
        - ``confusion``: the matrix as a nested list of ints (rows target, columns
          prediction) -- the one non-scalar value: a metrics.csv writer leaves it out.

        Raises:
            ValueError: some target pixels were outside ``[0, K)`` and not ``ignore_index``.
        """
        k = self.num_classes
        flat = self.state().cpu()
        conf = flat[: k * k].round().long().view(k, k)
        miou_s, mdice_s, scored, images, loss_s, loss_b, invalid, ignored = flat[k * k :].tolist()
        if invalid:
            raise ValueError(
                f"{int(invalid)} target pixels are outside [0, {k}) and not the ignore_index "
                f"{self.ignore_index}: the labels do not match num_classes={k}"
            )
        iou, dice = scores_from_confusion(conf)
        total = int(conf.sum())
        out: dict[str, object] = {
            "miou": _nanmean(iou),
            "mdice": _nanmean(dice),
            "miou_images": miou_s / scored if scored else math.nan,
            "mdice_images": mdice_s / scored if scored else math.nan,
            "pixel_acc": int(conf.diagonal().sum()) / total if total else math.nan,
            "loss": loss_s / loss_b if loss_b else math.nan,
            "images": int(images),
            "images_scored": int(scored),
            "pixels": total,
            "ignored_pixels": int(ignored),
        }
        for c in range(k):
            out[f"iou_{c}"] = float(iou[c])
        for c in range(k):
            out[f"dice_{c}"] = float(dice[c])
        out["confusion"] = conf.tolist()
        return out


def _absent_notes(names: list[str], true: list[int], pred: list[int]) -> list[str]:
    """What the mean row means where a class has no pixel in the truth: left out of the
    mean when never predicted either, else counted as 0 for its false positives."""
    out = []
    left_out = [names[c] for c in range(len(names)) if not true[c] and not pred[c]]
    if left_out:
        they = "is" if len(left_out) == 1 else "are"
        out.append(
            f"mean over {len(names) - len(left_out)} of {len(names)} classes: "
            f"{', '.join(left_out)} {they} in neither the truth nor the prediction ('-')"
        )
    for c in range(len(names)):
        if not true[c] and pred[c]:
            out.append(
                f"{names[c]}: no pixel of it in the truth, so its 0 counts only the "
                f"{pred[c]} pixel{'s' if pred[c] != 1 else ''} predicted as it (false positives)"
            )
    return out


def _nanmean(x: torch.Tensor) -> float:
    keep = x[~torch.isnan(x)]
    return float(keep.mean()) if keep.numel() else math.nan


def confusion_table(
    result: dict[str, object],
    class_names: list[str] | None = None,
    ignored_as: str | None = None,
) -> str:
    """A readable per-class table from :meth:`ConfusionMeter.compute`'s result.

    One row per class: name, IoU, Dice, target pixels (row sum of the confusion matrix)
    and predicted pixels (column sum), with ``-`` for a class absent from both; the mean
    row, with a note for each class absent from the truth (left out of the mean, or
    scoring 0 for its false positives); then the per-image means, the pixel accuracy,
    the share of the truth's pixels ignored (:func:`ignored_line`) and the confusion
    matrix in pixels (up to :data:`CONFUSION_SHOWN` classes). ``class_names`` defaults
    to the class indices; ``ignored_as`` says what marks the ignored pixels in the masks
    (``value 255``): with it the ignored line is shown even when none is ignored.
    """
    conf = result["confusion"]
    assert isinstance(conf, list)
    k = len(conf)
    names = [str(c) for c in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    true = [sum(row) for row in conf]
    pred = [sum(conf[r][c] for r in range(k)) for c in range(k)]

    def num(v: object) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    rows = [["class", "IoU", "Dice", "pixels", "predicted"]]
    for c in range(k):
        rows.append(
            [
                names[c],
                num(result[f"iou_{c}"]),
                num(result[f"dice_{c}"]),
                str(true[c]),
                str(pred[c]),
            ]
        )
    rows.append(["mean", num(result["miou"]), num(result["mdice"]), str(sum(true)), str(sum(pred))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(r: list[str]) -> str:
        return "  ".join(
            r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i]) for i in range(len(r))
        ).rstrip()

    out = [line(rows[0]), line(["-" * w for w in widths])]
    out += [line(r) for r in rows[1:-1]]
    out += [line(["-" * w for w in widths]), line(rows[-1])]
    out += _absent_notes(names, true, pred)
    out.append(
        f"per-image mean: IoU {num(result['miou_images'])}  Dice {num(result['mdice_images'])}"
        f"  ({result['images_scored']} images)"
    )
    out.append(f"pixel accuracy: {num(result['pixel_acc'])}")
    ignored = ignored_line(result, ignored_as)
    if ignored:
        out.append(ignored)
    out += _confusion_lines(names, conf)
    return "\n".join(out)


def ignored_line(result: dict[str, object], ignored_as: str | None = None) -> str:
    """``ignored: 3.1% of pixels (12403 pixels, value 255)``: the truth's pixels left out
    of every score (``ignored_pixels``) over all its pixels; "" where none is ignored
    and ``ignored_as`` (what marks them) is not given, or the result does not count them."""
    ignored = result.get("ignored_pixels")
    if not isinstance(ignored, int) or (not ignored and not ignored_as):
        return ""
    scored = result.get("pixels")
    total = ignored + (scored if isinstance(scored, int) else 0)
    share = ignored / total if total else 0.0
    pct = "0%" if not share else f"{100 * share:.1f}%" if share >= 0.001 else f"{100 * share:.2g}%"
    count = f"{ignored} pixel{'s' if ignored != 1 else ''}"
    return f"ignored: {pct} of pixels ({count}, {ignored_as or 'the ignore index'})"


#: The confusion matrix is printed under the table up to this many classes (beyond, it
#: is too wide to read; ``summary.json`` keeps it as ``test_confusion``).
CONFUSION_SHOWN = 12


def _confusion_lines(names: list[str], conf: list[list[int]]) -> list[str]:
    """The confusion matrix in pixels, rows the truth and columns the prediction."""
    if len(names) > CONFUSION_SHOWN:
        return [f"confusion matrix: {len(names)} classes, too many to print (summary.json)"]
    rows = [["truth \\ predicted", *names]]
    rows += [[names[r], *map(str, conf[r])] for r in range(len(names))]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["confusion matrix (pixels):"]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(r))]
        lines.append("  ".join(cells).rstrip())
    return lines
