"""``segkit preview``: augmented image/mask pairs drawn before training.

For the first ``n`` samples of a split, each loader asked for (one, or every installed
loader plugin) runs the recipe's train (or eval) ops on exactly those samples; each
result is turned back into pixels with the stage's own ``Normalize`` and drawn with the outline of
its augmented mask over it. One row per sample, one column per loader, a header naming
the recipe, its ops, the loaders, the seed and the epoch. A wrong pairing (a flip
applied to the image only), a crop too strong or a colour change too wild shows at a
glance.

Everything is built the way ``segkit run`` builds it (:mod:`segkit.build`): the
dataset, the recipe (a plugin's name or a recipe file), the runtime and the loaders.
Each loader reads a view of the dataset holding the first ``n`` samples of the split
(:class:`FirstSamples`), so it decodes and augments those alone. A loader that seeds
a sample's augmentation from ``(seed, epoch, index)`` only (as the albumentations loader
does) draws exactly what ``segkit run --seed S`` trains on in that epoch; one that draws
an epoch's parameters for the whole split at once (as the DALI loader does) draws a
sample of the same distribution, not the run's exact draw. Loaders draw their parameters
differently, so their columns differ.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segkit import recipes as R
from segkit import registry
from segkit.build import build_dataset, build_loader, build_recipe, normalization, resolve_runtime
from segkit.config import RunConfig
from segkit.contracts import Dataset, MaskSpec, Sample
from segkit.data.check import split_samples
from segkit.data.reading import open_image
from segkit.data.sampling import epoch_order
from segkit.errors import ConfigError, DataError
from segkit.reports.figures import MIN_TILE, TileRow, draw_tiles, tile_scale, to_rgb
from segkit.system.files import atomic_path, check_writable
from segkit.task import Task

#: The ``--loader`` value that draws with every installed loader plugin, side by side
#: (named when there were two: albumentations and DALI).
EVERY_LOADER = "both"
#: The colour of a binary mask's outline (and of the legend's swatch).
OUTLINE = (0, 255, 0)
#: The outline's width in display pixels, inside each region's edge.
OUTLINE_WIDTH = 2
#: The least width of the grid's columns together, in pixels: room for the header.
MIN_WIDTH = 512
#: The largest side of a displayed tile: larger outputs are shrunk for display only.
MAX_TILE = 512
#: The colour of the margin around a tile whose aspect differs from the grid's.
PAPER = (225, 225, 225)


class FirstSamples:
    """A :class:`~segkit.contracts.Dataset` holding the first ``n`` samples of ``split``
    of ``dataset`` (its other splits as they are): what each loader reads, so a preview
    decodes and augments only the samples it draws, at the indices a run gives them."""

    def __init__(self, dataset: Dataset, split: str, n: int, name: str = "") -> None:
        self.dataset = dataset
        self.root = dataset.root
        self.mask_spec: MaskSpec = dataset.mask_spec
        self.split = split
        self.name = name  # the dataset plugin's, for the message of an error in samples()
        self.chosen = list(split_samples(dataset, split, name))[:n]

    def samples(self, split: str) -> list[Sample]:
        if split == self.split:
            return list(self.chosen)
        return split_samples(self.dataset, split, self.name)

    def __repr__(self) -> str:
        return f"FirstSamples({self.dataset!r}, {self.split!r}, {len(self.chosen)})"


@dataclass
class Augmented:
    """One sample as a loader delivered it: ``image`` (H, W, 3) uint8 (un-normalized),
    ``mask`` (H, W): bool for binary, class indices (uint8, 255 ignored) for K classes."""

    image: np.ndarray
    mask: np.ndarray


@dataclass
class Tile:
    """A drawn tile: the displayed picture before the outline (``image``), the mask at
    display size (``mask``: background on the margin), where its outline went
    (``outline``: bool), the sample's place in the tile (``area``: left, top, width,
    height; the rest is margin) and the tile's place in the PNG (``box``: left, top,
    width, height)."""

    image: np.ndarray
    mask: np.ndarray
    outline: np.ndarray
    area: tuple[int, int, int, int]
    box: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass
class PreviewResult:
    """What :func:`write_preview` drew.

    Attributes:
        path: The PNG.
        size: Its (width, height) in pixels.
        recipe: The recipe drawn.
        stage: ``train`` or ``eval``.
        loaders: The loaders drawn, left to right (each with its mode, e.g. ``dali (cpu)``,
            in ``columns``).
        refused: Loader -> the one-line reason it drew nothing (with several loaders).
        samples: The rows' samples, top to bottom.
        tiles: ``tiles[row][column]``.
        header: The header lines, as written above the grid.
    """

    path: Path
    size: tuple[int, int]
    recipe: R.Recipe
    stage: str
    loaders: list[str]
    columns: list[str]
    refused: dict[str, str]
    samples: list[Sample]
    tiles: list[list[Tile]] = field(default_factory=list)
    header: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Draw:
    """What :func:`write_preview` draws.

    Attributes:
        loaders: Loader plugins, one column each. With several, a loader that cannot
            compile an op is left out, its reason in the header; with one, that is the
            error.
        n: Samples, the first ``n`` of ``split`` (fewer if the split is smaller).
        split: ``train``, ``valid`` or ``test``.
        stage: ``train`` (the augmentations) or ``eval`` (what validation and test see).
        epoch: The epoch whose augmentations are drawn.
    """

    loaders: Sequence[str] = ("albumentations",)
    n: int = 8
    split: str = "train"
    stage: str = "train"
    epoch: int = 0

    @property
    def train(self) -> bool:
        """The train stage's ops are drawn (not the eval stage's)."""
        return self.stage == "train"


@dataclass(frozen=True)
class Built:
    """What every column of a preview is drawn from, built once the way ``segkit run``
    builds it: the settings (``num_workers=0``), the runtime, the view of the first
    samples, the recipe and the dataset's task."""

    config: RunConfig
    runtime: Any
    view: FirstSamples
    recipe: R.Recipe
    task: Task


@dataclass
class _Columns:
    """The loaders' columns as drawn: each column's samples and label, the loaders that
    drew them, and loader -> the one-line reason it drew nothing."""

    samples: list[list[Augmented]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    drawn: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- outlines


def outline(mask: np.ndarray, width: int = OUTLINE_WIDTH) -> np.ndarray:
    """The pixels of ``mask`` (H, W: bool or class indices) within ``width`` pixels
    (8-neighbourhood steps) of a pixel of another value: a band ``width`` pixels wide
    along the inside of every region's edge. The picture's own border is no edge."""
    values = np.asarray(mask)
    h, w = values.shape
    padded = np.pad(values, width, mode="edge")
    band = np.zeros((h, w), dtype=bool)
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            if dy or dx:
                band |= padded[width + dy : width + dy + h, width + dx : width + dx + w] != values
    return band


def draw_outline(
    image: np.ndarray, mask: np.ndarray, task: Any = None, width: int = OUTLINE_WIDTH
) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (H, W, 3) uint8 with the outline of ``mask`` (the same H, W) over it.

    Binary (``task`` None or binary): the foreground's edge in :data:`OUTLINE`. K classes:
    each class region's edge in its class colour (``task.colorize``), ignored pixels'
    in grey; background (class 0) is not outlined, so a boundary between two classes
    shows both colours side by side.

    Returns:
        The picture, and where the outline was drawn (bool (H, W)).
    """
    band = outline(mask, width)
    out = image.copy()
    if task is not None and task.multiclass:
        drawn = band & (mask != 0)
        out[drawn] = task.colorize(mask)[drawn]
    else:
        drawn = band & mask.astype(bool)
        out[drawn] = OUTLINE
    return out, drawn


def legend(task: Any = None) -> list[tuple[str, Any]]:
    """The preview's legend: the outline colour (binary) or each outlined class's colour,
    and grey for ignored pixels where the dataset has them."""
    if task is None or not task.multiclass:
        return [("mask outline (foreground edge)", OUTLINE)]
    items = [
        (f"outline: {name}", colour)
        for name, colour in zip(task.classes[1:], task.palette[1:], strict=True)
    ]
    if task.ignore_index is not None:
        items.append(("outline: ignored", (128, 128, 128)))
    return items


# ----------------------------------------------------------------------------- loading


def augmented_samples(
    built: Built, loader: str, *, train: bool, epoch: int
) -> tuple[list[Augmented], str]:
    """The samples of ``built.view`` as loader ``loader`` delivers them in ``epoch``, in the
    split's order, and the loader's label (its name, with its mode where it has one:
    ``dali (cpu)``).

    Built with :func:`segkit.build.build_loader` (one sample a batch: native-size
    evaluation gives every image its own size). A shuffled (train) epoch visits the
    samples in :func:`segkit.data.sampling.epoch_order`, the order every loader follows; the
    results are put back in the split's order.

    Raises:
        ConfigError: the loader cannot compile an op of the recipe (one line).
        DataError: a file is unreadable.
    """
    config, view, recipe = built.config, built.view, built.recipe
    n = len(view.chosen)
    cfg = dataclasses.replace(config, loader=loader, batch_size=1)
    batches = build_loader(cfg, built.runtime, view, recipe, view.split, train=train)
    batches.set_epoch(epoch)
    order = epoch_order(n, shuffle=train, seed=config.seed, epoch=epoch, shard=(0, 1))
    mean, std = normalization(recipe, train)
    multiclass = view.mask_spec.is_multiclass
    found: dict[int, Augmented] = {}
    for k, batch in enumerate(batches):
        rgb = to_rgb(batch.images[:1].float().cpu(), mean, std)[0]
        m = batch.masks[0].cpu()
        if multiclass:
            mask = m.numpy().astype(np.uint8)
        else:
            mask = (m[0] if m.ndim == 3 else m).numpy() > 0.5
        found[order[k]] = Augmented(rgb, mask)
    if len(found) != n:
        raise ConfigError(
            f"loader '{loader}' delivered {len(found)} of the {n} samples of "
            f"split {view.split}; a loader must yield every sample once per epoch"
        )
    mode = getattr(batches, "mode", None)
    label = f"{loader} ({mode})" if isinstance(mode, str) else loader
    return [found[i] for i in range(n)], label


# ----------------------------------------------------------------------------- tiles


def display_box(sizes: Sequence[tuple[int, int]], columns: int = 1) -> tuple[int, int]:
    """The (height, width) every tile of the grid is drawn at, from the outputs'
    ``(height, width)`` and the number of columns.

    One size for all: enlarged by the integer factor that reaches
    :data:`segkit.reports.figures.MIN_TILE` and makes the columns at least :data:`MIN_WIDTH` wide
    together (the header needs the room), so each output pixel is a crisp block. Sizes
    that differ (native-size evaluation): a square of the longest side, within the same
    bounds. No side goes above :data:`MAX_TILE`; larger outputs are shrunk for display.
    """
    if len(set(sizes)) == 1:
        h, w = sizes[0]
        if max(h, w) > MAX_TILE:
            f = MAX_TILE / max(h, w)
            return max(1, round(h * f)), max(1, round(w * f))
        s = max(tile_scale(h, w), math.ceil(MIN_WIDTH / (columns * w)))
        s = max(1, min(s, MAX_TILE // max(h, w)))
        return h * s, w * s
    side = max(max(s) for s in sizes)
    side = max(side, MIN_TILE, math.ceil(MIN_WIDTH / columns))
    return min(side, MAX_TILE), min(side, MAX_TILE)


def fit_tile(sample: Augmented, box: tuple[int, int], task: Any = None) -> tuple[np.ndarray, Tile]:
    """A sample drawn in a ``box`` (height, width) tile, resized for display only and
    centred on :data:`PAPER`: enlarged by the largest integer factor that fits, each
    pixel a block (image and mask alike: what the model sees, pixel for pixel), or, if
    larger than the box, shrunk to fit with its aspect kept (image bilinear, mask
    nearest). The mask's outline is drawn at display size.

    Returns:
        The tile's pixels, and the :class:`Tile` describing them (``box`` not set yet).
    """
    bh, bw = box
    h, w = sample.mask.shape
    image = sample.image
    mask = sample.mask
    f = min(bh / h, bw / w)
    if f >= 1:
        s = int(f)
        dh, dw = h * s, w * s
        image = image.repeat(s, axis=0).repeat(s, axis=1)
        mask = mask.repeat(s, axis=0).repeat(s, axis=1)
    else:
        dh, dw = max(1, round(h * f)), max(1, round(w * f))
        image = np.asarray(Image.fromarray(image).resize((dw, dh), Image.BILINEAR))
        rows = np.minimum((np.arange(dh) + 0.5) * h / dh, h - 1).astype(int)
        cols = np.minimum((np.arange(dw) + 0.5) * w / dw, w - 1).astype(int)
        mask = mask[rows][:, cols]
    drawn_img, drawn = draw_outline(image, mask, task)
    top, left = (bh - dh) // 2, (bw - dw) // 2
    inside = (slice(top, top + dh), slice(left, left + dw))
    tile = np.empty((bh, bw, 3), np.uint8)
    tile[:] = PAPER
    plain = tile.copy()
    tile[inside] = drawn_img
    plain[inside] = image
    full_mask = np.zeros((bh, bw), mask.dtype)
    full_mask[inside] = mask
    full_outline = np.zeros((bh, bw), bool)
    full_outline[inside] = drawn
    return tile, Tile(plain, full_mask, full_outline, (left, top, dw, dh))


def describe_op(op: R.Op) -> str:
    """An op in a header: its name, its size where it sets one, and its probability
    where it is below 1 (``RandomResizedCrop(128, p=0.5)``)."""
    parts = []
    size = getattr(op, "size", None)
    if isinstance(size, int):
        parts.append(str(size))
    if op.p < 1:
        parts.append(f"p={op.p:g}")
    name = type(op).__name__
    return f"{name}({', '.join(parts)})" if parts else name


# ----------------------------------------------------------------------------- the preview


def loader_names(loader: str) -> list[str]:
    """``--loader``: ``both`` (:data:`EVERY_LOADER`) is every installed loader plugin, in
    the registry's order (by name); any other value is one loader plugin."""
    if loader == EVERY_LOADER:
        return registry.list_plugins("loaders")
    return [loader]


def write_preview(
    config: RunConfig,
    out: Path | str,
    draw: Draw | None = None,
    *,
    dataset: Dataset | None = None,
    warn: Any = None,
) -> PreviewResult:
    """Draw the preview of ``config``'s recipe on its dataset into ``out`` (a PNG).

    Args:
        config: The settings a run would use: recipe (name or file), data, dataset and
            its options, image size, seed, device (where DALI runs: ``auto`` is the GPU
            when there is one, in DALI's GPU mode).
        out: The PNG to write (whole or not at all); its folder is made if missing.
        draw: The loaders, samples, split, stage and epoch to draw (default:
            :class:`Draw`'s). A loader refused is passed to ``warn`` as well.
        dataset: The dataset to read instead of the one ``config`` names (tests, API).
        warn: Called with each refusal's line (default: print it on stderr).

    Raises:
        ConfigError: a bad value, or every loader refused the recipe (the loader's own
            one-line message; with several, each one's).
        DataError: the split is missing or a file is unreadable.
    """
    draw = draw or Draw()
    out = _check_arguments(out, draw)
    warn = warn or (lambda line: print(f"segkit: {line}", file=sys.stderr))

    _check_names(config, draw.loaders, named_dataset=dataset is None)
    check_writable(out.parent, "--out")  # read-only, full, a file in the way: before any work

    built = _build(config, draw, dataset)
    columns = _draw_columns(built, draw, warn)
    header = _header(built, draw, columns)
    picture, tiles = _picture(
        built.view, columns.samples, columns.labels, header, built.task, draw.stage
    )
    _save(picture, out)
    return PreviewResult(
        out,
        picture.size,
        built.recipe,
        draw.stage,
        columns.drawn,
        columns.labels,
        columns.refused,
        built.view.chosen,
        tiles,
        header,
    )


def _build(config: RunConfig, draw: Draw, dataset: Dataset | None) -> Built:
    """The recipe, the dataset (``dataset``, or the one ``config`` names), the view of its
    first samples and the runtime, built as ``segkit run`` builds them (no workers)."""
    config = dataclasses.replace(config, num_workers=0)
    recipe = build_recipe(config)
    named = dataset is None
    if dataset is None:
        dataset = build_dataset(config)
    view = FirstSamples(dataset, draw.split, draw.n, config.resolved_dataset() if named else "")
    runtime = resolve_runtime(config)
    return Built(config, runtime, view, recipe, Task.of(dataset))


def _draw_columns(built: Built, draw: Draw, warn: Any) -> _Columns:
    """Each loader's column; with several loaders, one that refuses the recipe is left
    out (its reason passed to ``warn``).

    Raises:
        ConfigError: the one loader refused the recipe, or every loader did.
    """
    columns = _Columns()
    for name in draw.loaders:
        try:
            samples, label = augmented_samples(built, name, train=draw.train, epoch=draw.epoch)
        except ConfigError as e:
            if len(draw.loaders) == 1:
                raise
            columns.refused[name] = str(e).splitlines()[0] if str(e) else type(e).__name__
            warn(f"{name} left out of the preview: {columns.refused[name]}")
            continue
        columns.samples.append(samples)
        columns.labels.append(label)
        columns.drawn.append(name)
    if not columns.samples:
        raise ConfigError(
            "no loader can run recipe "
            f"'{built.recipe.name}': " + "; ".join(f"{k}: {v}" for k, v in columns.refused.items())
        )
    return columns


def _check_arguments(out: Path | str, draw: Draw) -> Path:
    """:func:`write_preview`'s values checked before any work; ``out`` as a path."""
    n, epoch, stage = draw.n, draw.epoch, draw.stage
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--n {n!r}: expected a positive number of samples to draw")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ConfigError(f"--epoch {epoch!r}: expected 0 or a later epoch")
    if stage not in ("train", "eval"):
        raise ConfigError(f"--stage {stage!r}: expected train or eval")
    if not draw.loaders:
        raise ConfigError("no loader to draw with; name one with --loader")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(
            f"--out {out} is a folder; name the PNG to write, e.g. {out / 'preview.png'}"
        )
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: expected a .png file name, e.g. --out preview.png")
    return out


def _check_names(config: RunConfig, loaders: Sequence[str], *, named_dataset: bool) -> None:
    """Misspelt names fail first, with the close ones, before data is generated or read:
    the loaders, the recipe (unless given as a file) and, with ``named_dataset``, the
    dataset ``config`` names."""
    reg = registry.default_registry()
    for name in loaders:
        reg.info("loaders", name)
    if config.recipe_definition is None:
        reg.info("recipes", config.recipe)
    if named_dataset:
        reg.info("datasets", config.resolved_dataset())


def _save(picture: Image.Image, out: Path) -> None:
    """Write ``picture`` to ``out``, whole or not at all.

    Raises:
        ConfigError: ``out`` cannot be written, with the reason.
    """
    try:
        with atomic_path(out) as tmp:
            picture.save(tmp, optimize=True)
    except OSError as e:
        raise ConfigError(
            f"--out {out}: cannot write there ({e.strerror or type(e).__name__}); choose "
            "another path"
        ) from None


def _header(built: Built, draw: Draw, columns: _Columns) -> list[str]:
    """The picture's header lines: what was drawn, the ops, how to read the columns."""
    recipe, labels, stage, train = built.recipe, columns.labels, draw.stage, draw.train
    header = [
        f"segkit preview: recipe {recipe.name}, {stage} ops, split {draw.split}, seed "
        f"{built.config.seed}, epoch {draw.epoch}; loader{'s' if len(labels) > 1 else ''} "
        f"{', '.join(labels)}",
        f"{stage} ops: " + ", ".join(describe_op(op) for op in recipe.ops(train)),
    ]
    if len(labels) > 1 and train:
        header.append(
            "each loader draws its own random parameters, so the columns differ; check "
            "that each outline fits its own image"
        )
    elif len(labels) > 1:
        header.append("the same eval ops in each loader: the columns should agree")
    for name, reason in columns.refused.items():
        header.append(f"{name}: not drawn: {reason}")
    return header


def _picture(
    view: FirstSamples,
    columns: list[list[Augmented]],
    labels: list[str],
    header: list[str],
    task: Task,
    stage: str,
) -> tuple[Any, list[list[Tile]]]:
    """The grid (one row per sample, one column per loader, captioned) and each tile's
    place in it."""
    sizes = [s.mask.shape for col in columns for s in col]
    box = display_box(sizes, len(columns))
    rows: list[TileRow] = []
    tiles: list[list[Tile]] = []
    for i, sample in enumerate(view.chosen):
        row_tiles, row_info = [], []
        for col in columns:
            pixels, tile = fit_tile(col[i], box, task)
            row_tiles.append(pixels)
            row_info.append(tile)
        out_sizes = sorted(
            {f"{s.mask.shape[1]}x{s.mask.shape[0]}" for s in (c[i] for c in columns)}
        )
        source = _file_size(sample)
        caption = f"{sample.id}  file {source} px -> {stage} output {' / '.join(out_sizes)}"
        rows.append(TileRow(caption, row_tiles))
        tiles.append(row_info)
    boxes: list[list[tuple[int, int]]] = []
    picture = draw_tiles(labels, rows, legend(task), title=header, boxes=boxes)
    for row_info, row_boxes in zip(tiles, boxes, strict=True):
        for info, (left, top) in zip(row_info, row_boxes, strict=True):
            info.box = (left, top, box[1], box[0])
    return picture, tiles


def _file_size(sample: Sample) -> str:
    """``WxH`` of the sample's image file, read from its header."""
    try:
        with open_image(sample.image) as im:
            return f"{im.width}x{im.height}"
    except (OSError, DataError):  # the loaders have read it; here it is only a caption
        return "?x?"
