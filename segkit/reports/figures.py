"""The run folder's pictures: loss and Dice curves, and the prediction grid.

(Where each file goes, and the text files, are :mod:`segkit.training.run_folder`'s.)

The prediction grid shows the informative test images, not the first ones: the best,
the median and the worst by per-image Dice (:func:`grid_rows` has the rule). The scores
come from the test pass itself (:class:`segkit.metrics.binary.DiceMeter` with ``per_image``),
so drawing the grid runs the model on the chosen images only."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from segkit.task import Task

if TYPE_CHECKING:
    from segkit.contracts import Loader
    from segkit.training.loops import EvalContext


def write_curves(
    path: Path,
    history: Sequence[dict[str, Any]],
    best_epoch: int | None = None,
    *,
    multiclass: bool = False,
) -> None:
    """Loss and Dice per epoch, train and valid, side by side, with the best epoch (by
    validation Dice; ``best_epoch``, or the first highest valid Dice of ``history``)
    marked on both. Epochs that were not validated (``--validate-every``) are left out of
    the valid curves. For K classes (``multiclass``) the Dice is mDice, and the valid
    mIoU is drawn too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    validated = [r for r in history if _finite(r["valid_dice"])]
    if best_epoch is None and validated:
        best_epoch = max(validated, key=lambda r: r["valid_dice"])["epoch"]  # the first max
    v_epochs = [r["epoch"] for r in validated]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.plot(v_epochs, [r["valid_loss"] for r in validated], label="valid", marker=".")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_dice.plot(epochs, [r["train_dice"] for r in history], label="train")
    ax_dice.plot(v_epochs, [r["valid_dice"] for r in validated], label="valid", marker=".")
    title = "Dice"
    if multiclass:
        title = "mDice and mIoU (means over classes)"
        ax_dice.lines[0].set_label("train mDice")
        ax_dice.lines[1].set_label("valid mDice")
        ax_dice.plot(v_epochs, [r["valid_iou"] for r in validated], label="valid mIoU", marker=".")
    ax_dice.set(title=title, xlabel="epoch", ylim=(0, 1))
    best = [r for r in validated if r["epoch"] == best_epoch]
    for ax in (ax_loss, ax_dice):
        if best:
            ax.axvline(best_epoch, color="gray", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    if best:
        key = "valid_iou" if multiclass else "valid_dice"
        ax_dice.plot(
            [best_epoch],
            [best[0][key]],
            "*",
            color="black",
            markersize=12,
            label=f"best epoch {best_epoch} (valid {best[0][key]:.3f})",
        )
    for ax in (ax_loss, ax_dice):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


#: The smallest side of a tile in predictions.png; smaller images are enlarged by an
#: integer factor (images bilinear, masks nearest) to reach it.
MIN_TILE = 160
#: Column headings of predictions.png.
COLUMNS = ("image", "truth", "prediction", "overlay")
#: Overlay colours: (name, RGB) for true positives, false positives and misses.
HIT, FALSE_POSITIVE, MISS = (0, 200, 0), (230, 0, 0), (0, 80, 255)
LEGEND = (
    ("hit (predicted and true)", HIT),
    ("false positive", FALSE_POSITIVE),
    ("miss (true, not predicted)", MISS),
)


@dataclass(frozen=True)
class GridRow:
    """One row of predictions.png: test image ``index`` (its position in the test
    loader's order), its group (``best``, ``median`` or ``worst``), its rank by Dice (1:
    the highest) and its scores."""

    index: int
    group: str
    rank: int
    dice: float
    iou: float
    id: str | None = None


def grid_rows(dice: Sequence[float], n: int = 8) -> list[tuple[int, str, int]]:
    """Which test images the grid shows, top to bottom: ``(index, group, rank)``.

    The images are ranked by Dice, highest first (ties: the earlier image first; rank 1 is
    the best). Of ``n`` rows, ``n // 4`` are ``median``, then half the rest (rounded up)
    ``best`` and the others ``worst``: for the default 8, the best 3, the median 2 and the
    worst 3. The median rows are the middle of the ranking (for an even count of them,
    centred on the median). With ``n`` images or fewer every image is shown once, in rank
    order, split into the groups in the same proportions (5 images: 2 best, 1 median,
    2 worst).
    """
    total = len(dice)
    # An image with no score (NaN: a K-class image whose pixels are all ignored) ranks last.
    ranked = sorted(
        range(total), key=lambda i: (-float(dice[i]) if dice[i] == dice[i] else math.inf, i)
    )
    shown = min(n, total)
    n_median = shown // 4
    n_best = math.ceil((shown - n_median) / 2)
    n_worst = shown - n_median - n_best
    if total <= n:
        median_start = n_best
    else:
        median_start = (total - n_median) // 2  # never overlaps best or worst: total > n
    picks = (
        [(r, "best") for r in range(n_best)]
        + [(r, "median") for r in range(median_start, median_start + n_median)]
        + [(r, "worst") for r in range(total - n_worst, total)]
    )
    return [(ranked[r], group, r + 1) for r, group in picks]


@dataclass(frozen=True)
class ImageScores:
    """Each test image's scores, in the test loader's order, as the test pass measured
    them: Dice and IoU (mDice and mIoU for K classes), and the sample ids where known."""

    dice: torch.Tensor | Sequence[float]
    iou: torch.Tensor | Sequence[float]
    ids: Sequence[str] | None = None


@torch.no_grad()
def write_prediction_grid(
    path: Path,
    model: torch.nn.Module,
    loader: Loader,
    context: EvalContext,
    scores: ImageScores,
    n: int = 8,
) -> list[GridRow]:
    """A PNG of ``n`` test images chosen by :func:`grid_rows` from their Dice (the best,
    the median and the worst), one per row under the column headings image, truth,
    prediction and overlay (the prediction over the image; a legend under the grid names
    the colours: green hit, red false positive, blue miss). Each row is captioned with its
    group, rank, Dice and IoU (``scores``: every test image's, in the loader's order) and
    its sample id where ``scores.ids`` are given. Tiles are at least :data:`MIN_TILE`
    pixels.

    ``context`` (a :class:`segkit.training.loops.EvalContext`) says how the model is
    called (device, precision, layout, native forward) and how batches become pictures
    (``normalization``). For K classes (``context.task``) the scores are each image's
    mDice and mIoU, the truth and prediction tiles are drawn in the task's palette
    (ignored pixels grey), the overlay tints the image with the predicted classes, and
    the legend names the classes.

    The loader is read until the chosen images have come by; the model runs on those
    alone, as one batch. Writes nothing where ``n`` is 0 or the loader is empty.

    Native-size evaluation (``context.forward``, a
    :class:`segkit.inference.native.NativeForward`; or images of different sizes): each
    chosen image is predicted alone at its own size, as the test pass scored it, and
    image, truth and prediction are resized together for display only
    (:func:`display_set`).

    Returns:
        The rows drawn, top to bottom.
    """
    dice = [float(x) for x in scores.dice]
    iou = [float(x) for x in scores.iou]
    picks = grid_rows(dice, n)
    found = _find_images(loader, {i for i, _, _ in picks})
    picks = [p for p in picks if p[0] in found]  # a loader shorter than its scores
    if not picks:
        return []
    model.eval()
    shown = predict_pictures(model, [found[i] for i, _, _ in picks], context)
    ids = scores.ids
    rows = [
        GridRow(i, group, rank, dice[i], iou[i], ids[i] if ids is not None else None)
        for i, group, rank in picks
    ]
    task = context.task if context.task.multiclass else None
    _draw_grid(path, shown, rows, total=len(dice), task=task)
    return rows


def _find_images(loader: Loader, wanted: set[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """The ``(image, mask)`` of each wanted position in ``loader``'s order (on the CPU),
    reading no further than the last of them."""
    found: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    if not wanted:
        return found
    seen = 0
    for batch in loader:
        for j in range(len(batch.images)):
            if seen + j in wanted:
                found[seen + j] = (batch.images[j].float().cpu(), batch.masks[j].cpu())
        seen += len(batch.images)
        if len(found) == len(wanted):
            break
    return found


@dataclass
class Pictures:
    """Images predicted for display: ``rgb`` ``(N, H, W, 3)`` uint8, ``true`` and ``pred``
    ``(N, H, W)`` (booleans for binary, class indices for K classes), all of one size;
    and the logits with the masks they were predicted for, as the model ran (one batch,
    or one pair per image), for scoring (:meth:`scores`)."""

    rgb: np.ndarray
    true: np.ndarray
    pred: np.ndarray
    runs: list[tuple[torch.Tensor, torch.Tensor]]
    task: Any

    def scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's (Dice, IoU), or (mDice, mIoU), as the engine's meters score them."""
        pairs = [per_image_scores(logits, masks, self.task) for logits, masks in self.runs]
        return torch.cat([d for d, _ in pairs]), torch.cat([i for _, i in pairs])


def predict_pictures(
    model: torch.nn.Module,
    samples: Sequence[tuple[torch.Tensor, torch.Tensor]],
    context: EvalContext,
) -> Pictures:
    """``model``'s predictions of ``samples`` (``(image, mask)`` pairs, normalized images
    on the CPU) as pictures. Images of one size without a native forward run as one
    batch; otherwise each runs alone at its own size (as native evaluation scored it) and
    image, truth and prediction are resized together for display (:func:`display_set`).
    The model's mode is left as it is."""
    task = context.task
    mean, std = context.normalization
    images = [image for image, _ in samples]
    masks = [mask for _, mask in samples]
    if context.forward is None and len({tuple(i.shape) for i in images}) == 1:
        batch, target = torch.stack(images), torch.stack(masks)
        logits = context.logits(model, batch)
        true = target.numpy() if task.multiclass else target[:, 0].numpy() > 0.5
        return Pictures(
            to_rgb(batch, mean, std),
            true,
            predicted(logits, task),
            [(logits, target)],
            task,
        )
    rgbs, trues, preds, runs = [], [], [], []
    for image, mask in samples:
        logits = context.logits(model, image[None])
        preds.append(predicted(logits, task)[0])
        trues.append(mask.numpy() if task.multiclass else mask[0].numpy() > 0.5)
        rgbs.append(to_rgb(image[None], mean, std)[0])
        runs.append((logits, mask[None]))
    rgb, true, pred = display_set(rgbs, trues, preds, task.multiclass)
    return Pictures(rgb, true, pred, runs, task)


#: Native-size images are drawn within a square of this side (or their longest, if less).
DISPLAY_MAX = 384


def display_set(
    rgbs: Sequence[np.ndarray],
    trues: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    multiclass: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pictures, truths and predictions of different sizes (native-size evaluation) as
    three stacked arrays of one size, for display only: each fitted into a square of the
    longest side up to :data:`DISPLAY_MAX`, aspect kept (image bilinear, masks nearest),
    centred; the border is black, and ignore (grey) in K-class masks. Arrays of one size
    within the bound are stacked as they are."""
    from PIL import Image

    sizes = {r.shape[:2] for r in rgbs}
    longest = max(max(r.shape[:2]) for r in rgbs)
    if len(sizes) == 1 and longest <= DISPLAY_MAX:
        return np.stack(rgbs), np.stack(trues), np.stack(preds)
    side = min(DISPLAY_MAX, longest)
    fill = 255 if multiclass else 0
    out_rgb, out_true, out_pred = [], [], []
    for rgb, true, pred in zip(rgbs, trues, preds, strict=True):
        h, w = rgb.shape[:2]
        f = side / max(h, w)
        dh, dw = max(1, round(h * f)), max(1, round(w * f))
        top, left = (side - dh) // 2, (side - dw) // 2
        canvas = np.zeros((side, side, 3), np.uint8)
        canvas[top : top + dh, left : left + dw] = np.asarray(
            Image.fromarray(rgb).resize((dw, dh), Image.BILINEAR)
        )
        out_rgb.append(canvas)
        for mask, dest in ((true, out_true), (pred, out_pred)):
            m = np.full((side, side), fill, np.uint8)
            small = Image.fromarray(mask.astype(np.uint8)).resize((dw, dh), Image.NEAREST)
            m[top : top + dh, left : left + dw] = np.asarray(small)
            dest.append(m if multiclass else m.astype(bool))
    return np.stack(out_rgb), np.stack(out_true), np.stack(out_pred)


def to_rgb(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalized ``(N, 3, H, W)`` batch images back to ``(N, H, W, 3)`` uint8 pictures."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (
        ((images.float().cpu() * s + m).clamp(0, 1) * 255)
        .round()
        .byte()
        .permute(0, 2, 3, 1)
        .numpy()
    )


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default()


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """``text``, cut with "..." to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _wrap(draw: Any, text: str, font: Any, width: int) -> list[str]:
    """``text`` broken at spaces into lines of at most ``width`` pixels (a word wider than
    that is cut with "...")."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(_fit(draw, line, font, width))
            line = word
        else:
            line = candidate
    lines.append(_fit(draw, line, font, width))
    return lines


def _draw_grid(
    path: Path, shown: Pictures, rows: Sequence[GridRow], total: int, task: Any = None
) -> None:
    scale = tile_scale(*shown.rgb.shape[1:3])
    scores = ("mDice", "mIoU") if task is not None else ("Dice", "IoU")
    lines = []
    for k, row in enumerate(rows):
        label = (
            f"{row.group}  (rank {row.rank} of {total})  {scores[0]} {row.dice:.3f}  "
            f"{scores[1]} {row.iou:.3f}"
        )
        if row.id is not None:
            label += f"  {row.id}"
        lines.append(TileRow(label, picture_row(shown, k, scale, task)))
    draw_tiles(COLUMNS, lines, legend_of(task)).save(path)


def picture_row(shown: Pictures, k: int, scale: int, task: Any = None) -> list[np.ndarray]:
    """The image, truth, prediction and overlay tiles of picture ``k`` of ``shown``."""
    image = image_tile(shown.rgb[k], scale)
    return [image, *segment_tiles(image, shown.true[k], shown.pred[k], scale, task)]


# ----------------------------------------------------------------------------- tiles
# The pieces of every grid of pictures segkit draws: a run's predictions.png, the
# TensorBoard grid (segkit.reports.tb_log) and segkit compare's predictions.png (segkit.reports.compare).


def tile_scale(h: int, w: int) -> int:
    """The integer factor that enlarges an ``h x w`` picture to at least :data:`MIN_TILE`."""
    return max(1, math.ceil(MIN_TILE / min(h, w)))


def image_tile(rgb: np.ndarray, scale: int) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 image enlarged ``scale`` times (bilinear)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((w * scale, h * scale), Image.BILINEAR))


def mask_tile(mask: np.ndarray, scale: int) -> np.ndarray:
    """A boolean ``(H, W)`` mask enlarged ``scale`` times (nearest: masks stay crisp)."""
    return mask.astype(bool).repeat(scale, axis=0).repeat(scale, axis=1)


def gray_tile(mask: np.ndarray) -> np.ndarray:
    """A boolean mask as a white-on-black RGB tile."""
    return np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)


def overlay_tile(image: np.ndarray, true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``pred`` over ``image`` against ``true`` (all the same size): green hit, red false
    positive, blue miss (:data:`LEGEND`), mixed 45% into the image."""
    colour = np.zeros((*true.shape, 3), np.float32)
    colour[pred & true] = HIT
    colour[pred & ~true] = FALSE_POSITIVE
    colour[~pred & true] = MISS
    hit = (pred | true)[..., None]
    base = image.astype(np.float32)
    return np.where(hit, 0.55 * base + 0.45 * colour, base).astype(np.uint8)


def class_tile(classes: np.ndarray, scale: int) -> np.ndarray:
    """An ``(H, W)`` class map enlarged ``scale`` times (nearest)."""
    return classes.repeat(scale, axis=0).repeat(scale, axis=1)


def class_overlay_tile(image: np.ndarray, pred: np.ndarray, task: Any) -> np.ndarray:
    """The predicted classes over ``image`` in the task's colours, mixed 50% into it;
    class 0 (background) is left untinted."""
    base = image.astype(np.float32)
    tint = (pred != 0)[..., None]
    return np.where(tint, 0.5 * base + 0.5 * task.colorize(pred), base).astype(np.uint8)


def legend_of(task: Any) -> Sequence[tuple[str, Any]]:
    """The legend of a grid: hit / false positive / miss for binary (``task`` None or
    binary), the classes and their colours (and grey for ignored pixels, where the task
    has them) for K classes."""
    if task is None or not task.multiclass:
        return LEGEND
    legend = list(zip(task.classes, task.palette, strict=True))
    if task.ignore_index is not None:
        legend.append(("ignored", (128, 128, 128)))
    return legend


def segment_tiles(
    image: np.ndarray, true: np.ndarray, pred: np.ndarray, scale: int, task: Any = None
) -> list[np.ndarray]:
    """The truth, prediction and overlay tiles of one image (``image``: its tile, already
    enlarged ``scale`` times): white-on-black masks and a hit/miss overlay for binary
    (``true``, ``pred`` boolean ``(H, W)``), or for K classes (``task``) class maps
    ``(H, W)`` in the task's colours and the predicted classes over the image."""
    if task is not None and task.multiclass:
        t, p = class_tile(true, scale), class_tile(pred, scale)
        return [task.colorize(t), task.colorize(p), class_overlay_tile(image, p, task)]
    t, p = mask_tile(true, scale), mask_tile(pred, scale)
    return [gray_tile(t), gray_tile(p), overlay_tile(image, t, p)]


def predicted(logits: torch.Tensor, task: Any = None) -> np.ndarray:
    """Hard predictions of ``(N, C, H, W)`` logits: ``(N, H, W)`` booleans (logit > 0)
    for binary, class indices (argmax) for K classes."""
    if task is not None and task.multiclass:
        return logits.float().argmax(1).cpu().numpy()
    return (logits.float() > 0)[:, 0].cpu().numpy()


def per_image_scores(
    logits: torch.Tensor, masks: torch.Tensor, task: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's (Dice, IoU), or (mDice, mIoU) over its classes for K classes, as the
    engine's meters score them."""

    meter = (task or Task()).meter("cpu", per_image=True)
    meter.update(logits.float().cpu(), (task or Task()).target(masks.cpu()))
    return meter.per_image_scores()


@dataclass
class TileRow:
    """One row of :func:`draw_tiles`: a caption over the row, its tiles (``(h, w, 3)``
    uint8, every tile of the grid the same size) and optionally a label over each tile."""

    caption: str
    tiles: Sequence[np.ndarray]
    labels: Sequence[str] | None = None


def draw_tiles(
    headings: Sequence[str],
    rows: Sequence[TileRow],
    legend: Sequence[tuple[str, Any]] = LEGEND,
    *,
    title: Sequence[str] = (),
    boxes: list[list[tuple[int, int]]] | None = None,
) -> Any:
    """A grid of tiles under column ``headings``, each row under its caption (and its
    tiles under their labels, where given), with ``legend`` (colour swatches and names)
    at the bottom, on light grey paper. Returns the PIL image.

    ``title``: lines of text above the headings, each wrapped at word boundaries to the
    grid's width. ``boxes``: a list that receives, row by row, the ``(left, top)`` pixel
    of each tile in the picture (tests and callers that point at a tile)."""
    from PIL import Image, ImageDraw

    th, tw = rows[0].tiles[0].shape[:2]
    page = _Page(tw, th, len(headings))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_lines = [part for line in title for part in _wrap(probe, line, page.font, page.width - 4)]
    title_h = 18 * len(title_lines) + (6 if title_lines else 0)
    legend_items, legend_lines = _legend_layout(probe, legend, page)
    row_h = [page.caption + (page.label_h if r.labels else 0) + th + page.row_gap for r in rows]
    height = title_h + page.heading + sum(row_h) + 8 + 20 * legend_lines
    # Light grey paper: white mask pixels stay visible against it.
    canvas = Image.new("RGB", (page.width, height), (225, 225, 225))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((2, 3 + 18 * i), line, fill=(0, 0, 0), font=page.font)
    for c, name in enumerate(headings):
        _centred(draw, page.column(c), title_h + 5, _fit(draw, name, page.font, tw), page)
    y = title_h + page.heading
    for row in rows:
        y = _draw_row(canvas, draw, row, y, page, boxes)
    for x0, line, name, colour in legend_items:
        top = y + 4 + 20 * line
        draw.rectangle((x0 + 2, top + 2, x0 + 15, top + 15), fill=colour, outline=(0, 0, 0))
        draw.text((x0 + 20, top), name, fill=(0, 0, 0), font=page.font)
    return canvas


class _Page:
    """The measures of a grid of ``columns`` tiles of ``tw x th`` pixels."""

    gap, heading, caption, label_h, row_gap = 4, 26, 22, 18, 8

    def __init__(self, tw: int, th: int, columns: int) -> None:
        self.tw, self.th = tw, th
        self.width = columns * tw + (columns - 1) * self.gap
        self.font = _font(14)
        self.small = _font(12)

    def column(self, c: int) -> int:
        """The left edge of column ``c``."""
        return c * (self.tw + self.gap)


def _legend_layout(
    probe: Any, legend: Sequence[tuple[str, Any]], page: _Page
) -> tuple[list[tuple[int, int, str, Any]], int]:
    """The legend's swatches and names, wrapped to the grid's width: ``(x, line, name,
    colour)`` each, and the number of lines."""
    items, x, line = [], 0, 0
    for name, colour in legend:
        item = 18 + int(probe.textlength(name, font=page.font)) + 16
        if x and x + item > page.width:
            x, line = 0, line + 1
        items.append((x, line, name, colour))
        x += item
    return items, line + 1


def _centred(draw: Any, x0: int, y: int, text: str, page: _Page, font: Any = None) -> None:
    """``text`` centred over the tile whose left edge is ``x0``."""
    font = font or page.font
    text_w = draw.textlength(text, font=font)
    draw.text((x0 + (page.tw - text_w) / 2, y), text, fill=(0, 0, 0), font=font)


def _draw_row(
    canvas: Any,
    draw: Any,
    row: TileRow,
    y: int,
    page: _Page,
    boxes: list[list[tuple[int, int]]] | None,
) -> int:
    """Draw ``row`` from height ``y`` (caption, labels, tiles); return the next row's ``y``."""
    from PIL import Image

    draw.text(
        (2, y + 3),
        _fit(draw, row.caption, page.font, page.width - 4),
        fill=(0, 0, 0),
        font=page.font,
    )
    y += page.caption
    if row.labels:
        for c, label in enumerate(row.labels):
            text = _fit(draw, label, page.small, page.tw)
            _centred(draw, page.column(c), y + 1, text, page, page.small)
        y += page.label_h
    for c, tile in enumerate(row.tiles):
        canvas.paste(Image.fromarray(tile), (page.column(c), y))
    if boxes is not None:
        boxes.append([(page.column(c), y) for c in range(len(row.tiles))])
    return y + page.th + page.row_gap
