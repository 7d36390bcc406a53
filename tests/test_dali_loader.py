"""The ``dali`` loader, exercised in DALI's CPU mode (``device_id=None``).

CI has no GPU, so everything here runs the CPU graph; the GPU mode differs only in
device strings (``segkit_dali._graph.Placement``), which are checked on their own.
Images are small (64 px outputs from ~250-500 px synthetic photos) so the module runs in
well under a minute on two cores.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip(
    "nvidia.dali", reason="NVIDIA DALI is not installed (pip install 'segkit[dali]')"
)

from dali_helpers import (  # noqa: E402
    SIZE,
    collect,
    recipe,
    unnormalize,  # noqa: E402
)
from PIL import Image  # noqa: E402

from segkit import recipes as R  # noqa: E402
from segkit import registry  # noqa: E402
from segkit.contracts import Batch, MaskSpec, Sample  # noqa: E402
from segkit.errors import ConfigError, DataError  # noqa: E402
from segkit_dali import create_loader  # noqa: E402


class ListDataset:
    """A dataset held to the contract only (root, mask_spec, samples)."""

    def __init__(self, root: Path, samples: list[Sample], spec: MaskSpec) -> None:
        self.root = root
        self.mask_spec = spec
        self._samples = samples

    def samples(self, split: str) -> list[Sample]:
        return list(self._samples)


# ------------------------------------------------------------------------------ fixtures


# The data are conftest's: ``tiny_pets_dataset`` (pet-like photos of 250-500 px, 13 train
# samples) and ``shapes`` (the kit's bright L shapes, 10 train samples).

#: Training epochs each per-op test draws: 5 x 13 samples = 65 draws.
EPOCHS = tuple(range(5))


@pytest.fixture(scope="module")
def reference(tiny_pets_dataset):
    """Resize + Normalize outputs for train epochs 0-4 (65 draws of 13 samples), the
    baseline each random op's effect is measured against (same shuffle: same seed)."""
    loader = create_loader(
        tiny_pets_dataset, "train", recipe(R.Resize(size=SIZE)), 8, train=True, num_workers=2
    )
    return collect(loader, epochs=EPOCHS)


# ------------------------------------------------------------------- batches and epochs


def test_batches_have_the_engine_shapes_and_binary_masks(tiny_pets_dataset):
    loader = create_loader(
        tiny_pets_dataset,
        "train",
        registry.create("recipes", "type3", image_size=SIZE),
        8,
        train=True,
        num_workers=2,
    )
    assert [s.id for s in loader.samples] == [s.id for s in tiny_pets_dataset.samples("train")]
    batches = list(loader)
    assert len(batches) == len(loader) == 2  # 13 samples: 8 + 5
    for batch in batches:
        assert isinstance(batch, Batch)
        n = len(batch.images)
        assert batch.images.dtype == torch.float32 and batch.images.shape == (n, 3, SIZE, SIZE)
        assert batch.masks.dtype == torch.float32 and batch.masks.shape == (n, 1, SIZE, SIZE)
        assert set(batch.masks.unique().tolist()) <= {0.0, 1.0}
        assert torch.isfinite(batch.images).all()
    assert [len(b.images) for b in batches] == [8, 5]


@pytest.mark.parametrize(("drop_last", "sizes"), [(False, [5, 5, 3]), (True, [5, 5])])
def test_len_counts_the_partial_last_batch_unless_drop_last(tiny_pets_dataset, drop_last, sizes):
    loader = create_loader(
        tiny_pets_dataset,
        "train",
        recipe(R.Resize(size=SIZE)),
        5,
        train=True,
        num_workers=1,
        drop_last=drop_last,
    )
    for epoch in (0, 1):  # the length must not change after the first epoch (DALI #4440)
        loader.set_epoch(epoch)
        assert len(loader) == len(sizes)
        assert [len(b.images) for b in loader] == sizes


def test_same_seed_and_epoch_give_the_same_batches(tiny_pets_dataset):
    type3 = registry.create("recipes", "type3", image_size=SIZE)
    a = create_loader(tiny_pets_dataset, "train", type3, 8, train=True, seed=5, num_workers=2)
    b = create_loader(tiny_pets_dataset, "train", type3, 8, train=True, seed=5, num_workers=1)
    a_epoch1 = collect(a, epochs=(1,))
    assert all(torch.equal(x, y) for x, y in zip(a_epoch1, collect(b, epochs=(1,)), strict=True))
    a_epoch0 = collect(a, epochs=(0,))
    assert not torch.equal(a_epoch0[0], a_epoch1[0])  # reshuffled and re-augmented
    again = collect(a, epochs=(1,))  # back to epoch 1 on the same (reset) pipeline
    assert torch.equal(again[0], a_epoch1[0]) and torch.equal(again[1], a_epoch1[1])
    other_seed = create_loader(
        tiny_pets_dataset, "train", type3, 8, train=True, seed=6, num_workers=1
    )
    assert not torch.equal(collect(other_seed, epochs=(1,))[0], a_epoch1[0])


def test_an_abandoned_epoch_does_not_disturb_the_next(tiny_pets_dataset):
    loader = create_loader(
        tiny_pets_dataset, "train", recipe(R.Resize(size=SIZE)), 4, train=True, num_workers=1
    )
    full = collect(loader, epochs=(0,))
    loader.set_epoch(0)
    for _ in loader:  # the engine's prediction grid stops after the first batches
        break
    assert torch.equal(collect(loader, epochs=(0,))[0], full[0])


def test_each_file_is_read_once_per_loader(tiny_pets_dataset, monkeypatch):
    """The feed keeps each file's bytes and size: later epochs read nothing from disk,
    and what DALI gets is the file's own bytes. The cache is the loader's own."""
    import segkit_dali._loader as impl

    reads: Counter[str] = Counter()
    read_encoded = impl.read_encoded

    def counting(sample, spec):
        reads[sample.id] += 1
        return read_encoded(sample, spec)

    monkeypatch.setattr(impl, "read_encoded", counting)
    ops = recipe(R.Resize(size=SIZE))
    loader = create_loader(tiny_pets_dataset, "train", ops, 8, train=True, num_workers=1)
    first = collect(loader, epochs=(0,))
    collect(loader, epochs=(1, 2))
    loader.set_epoch(0)
    assert len(list(loader.feed_batches())) == len(loader)
    assert torch.equal(collect(loader, epochs=(0,))[0], first[0])  # the cache changes nothing
    ids = [s.id for s in loader.samples]
    assert reads == Counter(ids)  # once each, over 5 epochs (4 through DALI)
    for i, sample in enumerate(loader.samples):
        assert np.array_equal(loader._feed.images[i], np.fromfile(sample.image, np.uint8))
        assert np.array_equal(loader._feed.masks[i], np.fromfile(sample.mask, np.uint8))
        with Image.open(sample.image) as im:
            assert tuple(loader._feed.shapes[i]) == (im.height, im.width)
    other = create_loader(tiny_pets_dataset, "train", ops, 8, train=True, num_workers=1)
    list(other.feed_batches())
    assert reads == Counter(ids * 2)


def _feed_epoch(loader, epoch: int) -> list[list]:
    loader.set_epoch(epoch)
    return list(loader.feed_batches())


def test_the_epoch_parameter_table_is_seeded_by_seed_and_epoch(tiny_pets_dataset):
    """One table of parameters per epoch: the same for the same seed and epoch (any batch
    size), different for another epoch or seed, and a sample's row is the same on every
    shard. Each batch gets a slice: one array per parameter, batch first."""
    from segkit_dali._loader import draw_params

    type3 = registry.create("recipes", "type3", image_size=SIZE)

    def make(batch=8, seed=3, shard=(0, 1)):
        return create_loader(
            tiny_pets_dataset, "train", type3, batch, train=True, seed=seed, shard=shard
        )

    def by_sample(loader, epoch):
        """{sample index: its parameters (one array per column)} in ``epoch``."""
        batches = _feed_epoch(loader, epoch)
        order = [i for batch in loader._plan() for i in batch]
        rows = [[c[k] for c in columns[2:]] for columns in batches for k in range(len(columns[0]))]
        assert len(rows) == len(order)
        return dict(zip(order, rows, strict=True))

    def same(a, b):
        return a.keys() == b.keys() and all(
            all(np.array_equal(x, y) for x, y in zip(a[i], b[i], strict=True)) for i in a
        )

    loader = make()
    params = [p for op in loader.ops for p in op.params]
    for columns in _feed_epoch(loader, 1):
        n = len(columns[0])
        assert len(columns) == 2 + len(params)
        for column, p in zip(columns[2:], params, strict=True):
            assert column.dtype == p.dtype and column.shape == (n, *p.shape)
    epoch1 = by_sample(loader, 1)
    assert same(epoch1, by_sample(make(batch=5), 1))  # reproducible, any batch size
    assert same(epoch1, by_sample(loader, 1))  # back to epoch 1 on the same loader
    assert not same(epoch1, by_sample(loader, 2))
    assert not same(epoch1, by_sample(make(seed=4), 1))
    for rank in range(3):  # a sample's parameters do not depend on the shard reading it
        shard = by_sample(make(shard=(rank, 3)), 1)
        assert same(shard, {i: epoch1[i] for i in shard})
    # The table is draw_params' for the epoch's order: reproducible from (seed, epoch).
    order = np.array([i for batch in loader._plan() for i in batch])
    table = draw_params(loader.ops, 3, 2, len(loader.samples), order, loader._feed.shapes[order])
    assert all(np.array_equal(a, b) for a, b in zip(table, loader._feed.params, strict=True))


def _identify(images: torch.Tensor, references: torch.Tensor) -> list[int]:
    """Index of the reference image each image equals (deterministic eval recipe)."""
    flat = references.flatten(1)
    return [int((flat - img.flatten()).abs().amax(1).argmin()) for img in images]


def test_order_and_pixels_match_the_albumentations_loader_on_the_eval_recipe(tiny_pets_dataset):
    """Same samples in the same order (same shuffle rule); pixels within rounding.

    Both decode JPEGs with libjpeg-turbo (identical pixels on the CPU); the resizes round
    differently (OpenCV's fixed point vs DALI's float). Masks: OpenCV's INTER_NEAREST
    samples source pixel floor(x * scale), DALI the pixel centre floor((x + 0.5) * scale)
    (what OpenCV calls INTER_NEAREST_EXACT), so albumentations' masks sit up to half an
    output pixel off; at the lab's 256 px that is under 1% of the pixels.
    """
    import cv2

    from segkit.data.reading import read_sample
    from segkit_albumentations import create_loader as create_albumentations

    type3 = registry.create("recipes", "type3", image_size=256)
    ours = collect(create_loader(tiny_pets_dataset, "train", type3, 8, train=False, num_workers=2))
    theirs = collect(
        create_albumentations(tiny_pets_dataset, "train", type3, 8, train=False, num_workers=0)
    )
    diff = (ours[0] - theirs[0]).abs()
    assert diff.mean() < 0.01, f"mean |diff| {diff.mean():.4f} (normalized units)"
    assert diff.max() < 0.05, f"max |diff| {diff.max():.4f} (normalized units; 1/255 is ~0.017)"
    assert (ours[1] == theirs[1]).float().mean() >= 0.99

    # The masks are exactly OpenCV's pixel-centre nearest neighbour, at any size.
    masks = collect(
        create_loader(
            tiny_pets_dataset, "train", recipe(R.Resize(size=SIZE)), 8, train=False, num_workers=2
        )
    )[1]
    for sample, mask in zip(tiny_pets_dataset.samples("train"), masks, strict=True):
        _, binary = read_sample(sample, tiny_pets_dataset.mask_spec)
        exact = cv2.resize(binary, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST_EXACT)
        assert np.array_equal(mask[0].numpy(), exact.astype(np.float32))

    # Shuffled (train=True) with the same seed and epoch: the same order.
    eval_recipe = recipe(R.Resize(size=SIZE))
    ours = collect(
        create_loader(
            tiny_pets_dataset, "train", eval_recipe, 8, train=True, seed=2, num_workers=2
        ),
        (3,),
    )
    theirs = collect(
        create_albumentations(
            tiny_pets_dataset, "train", eval_recipe, 8, train=True, seed=2, num_workers=0
        ),
        (3,),
    )
    assert (ours[0] - theirs[0]).abs().mean() < 0.01


def test_shards_are_disjoint_and_cover_the_split(tiny_pets_dataset):
    eval_recipe = recipe(R.Resize(size=SIZE))
    full = collect(
        create_loader(tiny_pets_dataset, "train", eval_recipe, 4, train=False, num_workers=1)
    )[0]
    n = len(full)  # 13: world 2 and 3 both pad
    for world in (2, 3):
        seen: list[int] = []
        for rank in range(world):
            shard = create_loader(
                tiny_pets_dataset,
                "train",
                eval_recipe,
                4,
                train=True,
                seed=1,
                num_workers=1,
                shard=(rank, world),
            )
            assert len(shard) == math.ceil(math.ceil(n / world) / 4)
            ids = _identify(collect(shard, epochs=(4,))[0], full)
            assert len(ids) == math.ceil(n / world)
            seen += ids
        assert set(seen) == set(range(n))  # covering
        # Disjoint, but for the DistributedSampler padding that evens out the ranks.
        assert sum(c - 1 for c in Counter(seen).values()) == math.ceil(n / world) * world - n


# ---------------------------------------------------------------------- pairing, per op


@pytest.mark.parametrize("flip_p", [0.5, 1.0])
def test_image_and_mask_stay_paired_through_every_op(shapes, flip_p):
    """The mask must be recoverable from the augmented image by a threshold on the mean
    of the channels (which a channel shuffle leaves alone): the kit's L shapes are bright
    (200-240) on dark (15-50)."""
    train = recipe(
        R.HorizontalFlip(p=flip_p),
        R.RandomGamma(gamma_limit=(80, 120), p=0.5),
        R.CLAHE(clip_limit=(1.0, 4.0), tile_grid_size=(8, 8), p=0.5),
        R.ChannelShuffle(p=0.5),
        R.RandomResizedCrop(size=SIZE, scale=(0.08, 1.0), ratio=(0.75, 4 / 3), p=1.0),
        R.RandomBrightnessContrast(brightness_limit=(-0.2, 0.2), contrast_limit=(-0.2, 0.2), p=0.5),
        R.Resize(size=SIZE),
    )
    # The coverage bounds below are a statistic of 50 draws: about 2% of crops cover over
    # 0.6, so about a third of seeds miss them, with the per-sample draws of old and the
    # per-epoch tables alike (measured over 24 seeds each). Seed 2 meets them with a
    # margin for both flip_p (max coverage 0.76 and 0.79).
    loader = create_loader(shapes, "train", train, 8, train=True, seed=2, num_workers=2)
    images, masks = collect(loader, epochs=EPOCHS)  # 50 draws of the 10 L shapes
    # Threshold each image midway between what its mask calls shape and background (the
    # kit's alignment measure): the ops move both levels, and the kit's shapes differ in
    # colour, so no one threshold fits every draw.
    agreement = []
    for gray, inside in zip(unnormalize(images).mean(1), masks[:, 0] == 1, strict=True):
        if min(int(inside.sum()), int((~inside).sum())) < 20:
            continue  # a crop of one class only says nothing about pairing
        threshold = (gray[inside].mean() + gray[~inside].mean()) / 2
        agreement.append(float(((gray > threshold) == inside).float().mean()))
    assert len(agreement) >= 0.8 * len(images), f"only {len(agreement)} two-class crops"
    assert min(agreement) >= 0.97, f"worst sample agrees on {min(agreement):.3f} of its pixels"
    # The crops do vary the picture: some samples are mostly shape, some mostly background.
    coverage = masks.mean((1, 2, 3))
    assert coverage.min() < 0.2 and coverage.max() > 0.6


def _per_op(dataset, *ops: R.Op, epochs=EPOCHS, **options) -> tuple[torch.Tensor, torch.Tensor]:
    loader = create_loader(dataset, "train", recipe(*ops), 8, train=True, num_workers=2, **options)
    return collect(loader, epochs=epochs)


def test_flip_fires_about_half_the_time_on_image_and_mask_together(tiny_pets_dataset, reference):
    images, masks = _per_op(tiny_pets_dataset, R.HorizontalFlip(p=0.5), R.Resize(size=SIZE))
    ref_images, ref_masks = reference
    flipped = []
    for img, msk, ref, ref_msk in zip(images, masks, ref_images, ref_masks, strict=True):
        same = bool((img - ref).abs().max() < 1e-4)
        mirrored = bool((img - ref.flip(-1)).abs().max() < 0.05)  # up to resampling rounding
        assert same != mirrored
        if same:
            assert torch.equal(msk, ref_msk)
        else:
            # Not exactly the mirror: nearest neighbour breaks ties toward one side, so
            # flip-then-resize may pick the neighbouring source pixel on a few edges.
            assert (msk == ref_msk.flip(-1)).float().mean() >= 0.98
            assert (msk == ref_msk).float().mean() < (msk == ref_msk.flip(-1)).float().mean()
        flipped.append(mirrored)
    assert 0.35 <= np.mean(flipped) <= 0.65, f"flipped {np.mean(flipped):.2f} of {len(flipped)}"


def test_gamma_stays_within_its_limits(tiny_pets_dataset, reference):
    images, _ = _per_op(
        tiny_pets_dataset, R.Resize(size=SIZE), R.RandomGamma(gamma_limit=(80, 120), p=1.0)
    )
    out, ref = unnormalize(images).round(), unnormalize(reference[0]).round()
    gammas = []
    for o, r in zip(out, ref, strict=True):
        keep = (r > 40) & (r < 215)
        g = torch.log((o[keep] + 0.5) / 255) / torch.log(r[keep] / 255)  # floor() -> +0.5
        gammas.append(float(g.median()))
    assert 0.79 <= min(gammas) and max(gammas) <= 1.21, (min(gammas), max(gammas))
    assert min(gammas) < 0.88 and max(gammas) > 1.12  # the range is used, not one value


def test_brightness_and_contrast_stay_within_their_limits(tiny_pets_dataset, reference):
    images, _ = _per_op(
        tiny_pets_dataset,
        R.Resize(size=SIZE),
        R.RandomBrightnessContrast(brightness_limit=(-0.2, 0.2), contrast_limit=(-0.2, 0.2), p=1.0),
    )
    out, ref = unnormalize(images).round(), unnormalize(reference[0]).round()
    alphas, betas = [], []
    for o, r in zip(out, ref, strict=True):
        keep = (o > 0) & (o < 255)  # unclipped pixels: o = floor(alpha * r + beta)
        x, y = r[keep].double(), o[keep].double() + 0.5
        alpha = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
        alphas.append(alpha)
        betas.append(float(y.mean() - alpha * x.mean()))
    assert 0.79 <= min(alphas) and max(alphas) <= 1.21
    assert -52 <= min(betas) and max(betas) <= 52
    assert min(alphas) < 0.9 and max(alphas) > 1.1 and min(betas) < -30 and max(betas) > 30


def test_channel_shuffle_permutes_channels(tiny_pets_dataset, reference):
    images, masks = _per_op(tiny_pets_dataset, R.Resize(size=SIZE), R.ChannelShuffle(p=1.0))
    out, ref = unnormalize(images), unnormalize(reference[0])
    seen = Counter()
    for o, r in zip(out, ref, strict=True):
        perm = tuple(int((r - o[c]).abs().flatten(1).amax(1).argmin()) for c in range(3))
        assert sorted(perm) == [0, 1, 2]
        assert (o - r[list(perm)]).abs().max() < 0.01  # exact up to float normalization
        seen[perm] += 1
    assert len(seen) >= 5  # 65 draws over the 6 permutations (identity included)
    assert torch.equal(masks, reference[1])  # photometric: masks untouched


def test_tone_curve_is_the_albumentations_bezier(tiny_pets_dataset, reference):
    images, _ = _per_op(tiny_pets_dataset, R.Resize(size=SIZE), R.RandomToneCurve(scale=0.0, p=1.0))
    out, ref = unnormalize(images).round(), unnormalize(reference[0]).round()
    t = ref / 255  # scale 0: control points at exactly 0.25 and 0.75
    expected = torch.round((3 * (1 - t) ** 2 * t * 0.25 + 3 * (1 - t) * t**2 * 0.75 + t**3) * 255)
    assert (out - expected).abs().max() <= 1
    images, _ = _per_op(tiny_pets_dataset, R.Resize(size=SIZE), R.RandomToneCurve(scale=0.1, p=1.0))
    out = unnormalize(images).round()
    for o, r in zip(out, ref, strict=True):  # one global curve: each input level -> one output
        pairs = torch.unique(torch.stack([r.flatten(), o.flatten()]), dim=1)
        assert pairs.shape[1] == torch.unique(r).numel()


def test_random_resized_crop_windows_follow_scale_and_ratio(tmp_path):
    """Images whose red channel is x and green channel y: the output's ranges tell the
    crop window, and the mask (top half) must follow it."""
    h, w = 160, 200
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    image = np.stack([xs * 255 // (w - 1), ys * 255 // (h - 1), np.zeros_like(xs)], -1)
    samples = []
    for i in range(12):
        sample = Sample(f"g{i}", tmp_path / f"g{i}.png", tmp_path / f"g{i}_mask.png")
        Image.fromarray(image.astype(np.uint8)).save(sample.image)
        Image.fromarray(np.where(ys < h // 2, 1, 0).astype(np.uint8)).save(sample.mask)
        samples.append(sample)
    dataset = ListDataset(tmp_path, samples, MaskSpec(background=0, allowed=(0, 1)))
    rrc = R.RandomResizedCrop(size=SIZE, scale=(0.08, 1.0), ratio=(0.75, 4 / 3), p=1.0)
    images, masks = collect(
        create_loader(dataset, "train", recipe(rrc), 6, train=True, num_workers=1), epochs=range(5)
    )
    out = unnormalize(images)
    areas = []
    for o, m in zip(out, masks, strict=True):
        cw = (o[0].max() - o[0].min()) / 255 * (w - 1) + 1
        ch = (o[1].max() - o[1].min()) / 255 * (h - 1) + 1
        areas.append(float(cw * ch / (w * h)))
        assert 0.75 * 0.8 <= cw / ch <= 4 / 3 * 1.25, f"aspect {cw / ch:.2f}"
        top = (o[1] < 127.5).float()  # rows above the middle are the mask's foreground
        assert (top == m[0]).float().mean() >= 0.97
    assert min(areas) >= 0.08 * 0.8 and max(areas) <= 1.0
    assert min(areas) < 0.3 and max(areas) > 0.6


def test_random_resized_crop_is_crop_then_resize_of_the_drawn_window(tiny_pets_dataset):
    """Recompute each sample's window from (seed, epoch, index) and do what
    albumentations does with it (OpenCV crop, then linear resize; masks with pixel-centre
    nearest neighbour): DALI's image is within one level, its mask identical."""
    import cv2

    from segkit.data.reading import read_sample
    from segkit_dali._loader import draw_params

    loader = create_loader(
        tiny_pets_dataset,
        "train",
        recipe(R.RandomResizedCrop(size=SIZE, p=1.0)),
        8,
        train=True,
        seed=9,
        num_workers=2,
    )
    images, masks = collect(loader, epochs=(2,))
    order = [i for batch in loader._plan() for i in batch]
    raw = [read_sample(loader.samples[i], tiny_pets_dataset.mask_spec) for i in order]
    shapes = [raw_image.shape[:2] for raw_image, _ in raw]
    starts, ends = draw_params(loader.ops, 9, 2, len(loader.samples), np.array(order), shapes)
    for image, mask, (raw_image, raw_mask), start, end in zip(
        unnormalize(images).round(), masks, raw, starts, ends, strict=True
    ):
        (y0, x0), (y1, x1) = start, end
        expected = cv2.resize(raw_image[y0:y1, x0:x1], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        assert (image - torch.from_numpy(expected).permute(2, 0, 1)).abs().max() <= 1
        expected_mask = cv2.resize(
            raw_mask[y0:y1, x0:x1], (SIZE, SIZE), interpolation=cv2.INTER_NEAREST_EXACT
        )
        assert np.array_equal(mask[0].numpy(), expected_mask.astype(np.float32))


def test_channel_shuffle_runs_late_with_identical_output(tiny_pets_dataset, monkeypatch):
    """The graph applies ChannelShuffle after the resizes (cheaper; see graph_order):
    the batches must be bit for bit those of the recipe's own order."""
    import segkit_dali._graph as ops

    names = [
        type(ops.compile_ops(r.train)[k]).__name__
        for r in (registry.create("recipes", "type3"),)
        for k in ops.graph_order(ops.compile_ops(r.train))
    ]
    assert names.index("ChannelShuffle") == len(names) - 2 and names.index("CLAHE") < 3
    type3 = registry.create("recipes", "type3", image_size=SIZE)
    late = collect(
        create_loader(tiny_pets_dataset, "train", type3, 11, train=True, num_workers=2), (1,)
    )
    monkeypatch.setattr(ops, "graph_order", lambda compiled: list(range(len(compiled))))
    in_order = collect(
        create_loader(tiny_pets_dataset, "train", type3, 11, train=True, num_workers=2), (1,)
    )
    assert torch.equal(late[0], in_order[0]) and torch.equal(late[1], in_order[1])


def test_crop_window_draws_within_the_image():
    from segkit_dali._geometry import crop_window

    rng = np.random.default_rng(0)
    for shape in ((300, 400), (500, 250), (64, 64)):
        for _ in range(300):
            y0, x0, y1, x1 = crop_window(rng, shape, (0.08, 1.0), (0.75, 4 / 3))
            assert 0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]
            area = (y1 - y0) * (x1 - x0) / (shape[0] * shape[1])
            assert 0.07 <= area <= 1.0
    # No window of the ratio fits ten times in a sliver: albumentations' centre crop.
    assert crop_window(rng, (10, 1000), (0.08, 0.1), (0.75, 4 / 3)) == (0, 493, 10, 506)


@pytest.mark.parametrize(
    "op",
    [
        R.RandomGamma(gamma_limit=(85, 85), p=1.0),
        R.RandomGamma(gamma_limit=(115, 115), p=1.0),
        R.RandomBrightnessContrast(
            brightness_limit=(0.1, 0.1), contrast_limit=(-0.15, -0.15), p=1.0
        ),
        R.RandomBrightnessContrast(brightness_limit=(-0.2, -0.2), contrast_limit=(0.2, 0.2), p=1.0),
        R.RandomToneCurve(scale=0.0, p=1.0),
        R.CLAHE(clip_limit=(2.0, 2.0), tile_grid_size=(8, 8), p=1.0),
        R.CLAHE(clip_limit=(4.0, 4.0), tile_grid_size=(4, 4), p=1.0),
    ],
    ids=["gamma0.85", "gamma1.15", "bc1", "bc2", "tone_curve", "clahe2", "clahe4"],
)
def test_photometric_ops_compute_what_albumentations_computes(tiny_pets_dataset, reference, op):
    """With a degenerate range both backends use the same parameters, so the op can be
    checked pixel by pixel: albumentations' own transform (compiled by the albumentations
    loader) applied to the DALI pipeline's resized image must give DALI's output, within
    one level (float32 vs float64 rounding at the truncation)."""
    from segkit_albumentations import compile_ops

    ours = unnormalize(_per_op(tiny_pets_dataset, R.Resize(size=SIZE), op, epochs=(0,))[0]).round()
    resized = unnormalize(reference[0][: len(ours)]).round()
    transform = compile_ops([op])
    for out, base in zip(ours, resized, strict=True):
        image = base.permute(1, 2, 0).numpy().astype(np.uint8)
        expected = torch.from_numpy(transform(image=image)["image"]).permute(2, 0, 1).float()
        diff = (out - expected).abs()
        assert diff.max() <= 1, f"max |diff| {diff.max():.0f} levels"
        assert (diff > 0).float().mean() < 0.01, f"{(diff > 0).float().mean():.4f} of pixels differ"


def test_clahe_fires_per_its_probability(tiny_pets_dataset, reference):
    images, masks = _per_op(
        tiny_pets_dataset, R.Resize(size=SIZE), R.CLAHE(clip_limit=(1.0, 4.0), p=0.5)
    )
    changed = ((images - reference[0]).abs().flatten(1).amax(1) > 0.05).float().mean()
    assert 0.3 <= changed <= 0.7
    assert torch.equal(masks, reference[1])


# ------------------------------------------------------------------------------ errors


class Blur(R.Op):
    """An op the vocabulary does not have."""


def test_an_unknown_op_is_a_config_error_naming_it(tiny_pets_dataset):
    with pytest.raises(ConfigError, match=r"cannot compile op Blur"):
        create_loader(
            tiny_pets_dataset, "train", recipe(Blur(), R.Resize(size=SIZE)), 4, train=True
        )


def test_unknown_options_and_bad_arguments_are_config_errors(tiny_pets_dataset):
    with pytest.raises(ConfigError, match=r"does not accept option\(s\) colour"):
        create_loader(
            tiny_pets_dataset, "train", recipe(R.Resize(size=SIZE)), 4, train=True, colour=1
        )
    with pytest.raises(ConfigError, match=r"antialias='yes'"):
        create_loader(
            tiny_pets_dataset, "train", recipe(R.Resize(size=SIZE)), 4, train=True, antialias="yes"
        )
    with pytest.raises(ConfigError, match=r"batch_size=0"):
        create_loader(tiny_pets_dataset, "train", recipe(R.Resize(size=SIZE)), 0, train=True)
    with pytest.raises(ConfigError, match=r"shard=\(2, 2\)"):
        create_loader(
            tiny_pets_dataset, "train", recipe(R.Resize(size=SIZE)), 4, train=True, shard=(2, 2)
        )


@pytest.fixture
def broken_copy(broken_pets):
    """The oxford_pet reader over a writable copy of tiny_pets, and its train samples to
    damage."""
    dataset = registry.create("datasets", "oxford_pet", broken_pets)
    return dataset, dataset.samples("train")


def _first_error(dataset) -> DataError:
    loader = create_loader(
        dataset, "train", recipe(R.Resize(size=SIZE)), 4, train=True, num_workers=1
    )
    with pytest.raises(DataError) as info:
        for _ in loader:
            pass
    return info.value


def test_a_truncated_jpeg_is_a_data_error_naming_the_file(broken_copy):
    dataset, samples = broken_copy
    bad = samples[10].image
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # header intact: only decoding can tell
    error = _first_error(dataset)
    assert str(bad) in str(error) and "truncated" in str(error)
    assert str(bad) in str(_first_error(dataset))  # the loader still works afterwards


def test_a_file_that_is_not_an_image_is_a_data_error_naming_it(broken_copy):
    dataset, samples = broken_copy
    samples[3].image.write_bytes(b"not a jpeg at all" * 20)
    assert str(samples[3].image) in str(_first_error(dataset))


def test_a_file_only_dali_rejects_is_named_too(broken_copy, monkeypatch):
    """If PIL reads every in-flight file, each is decoded alone with DALI to find the
    culprit (here PIL is made to accept a truncated JPEG)."""
    import segkit_dali._loader as impl

    dataset, samples = broken_copy
    bad = samples[2].image
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(impl, "read_sample", lambda sample, spec: None)
    error = _first_error(dataset)
    assert str(bad) in str(error) and "DALI cannot decode this file although PIL can" in str(error)


def test_mask_values_outside_the_spec_are_a_data_error(broken_copy):
    dataset, samples = broken_copy
    raw = np.asarray(Image.open(samples[5].mask)).copy()
    raw[:3, :3] = 7
    Image.fromarray(raw).save(samples[5].mask)
    error = _first_error(dataset)
    assert str(samples[5].mask) in str(error) and "{7}" in str(error)


def test_an_image_and_mask_of_different_sizes_is_a_data_error(broken_copy):
    dataset, samples = broken_copy
    raw = np.asarray(Image.open(samples[8].mask))
    Image.fromarray(raw[:-4]).save(samples[8].mask)
    error = _first_error(dataset)
    assert str(samples[8].mask) in str(error) and "same size" in str(error)


@pytest.mark.parametrize("train", [True, False])
def test_a_recipe_that_sizes_nothing_gets_the_albumentations_loaders_line(shapes, train):
    """The shapes' images are all of different sizes: a recipe whose ops size nothing
    leaves a batch DALI cannot hand over as one tensor. The loader says so as the
    albumentations loader does, word for word, instead of DALI's "must have uniform
    shape" assertion."""
    unsized = R.Recipe("unsized", train=(R.HorizontalFlip(p=0.5), R.Normalize()),
                       eval=(R.Normalize(),))  # fmt: skip
    split = "train" if train else "valid"
    args = (shapes, split, unsized, 2)
    with pytest.raises(ConfigError) as dali:
        next(iter(create_loader(*args, train=train, num_workers=1)))
    stage = "train" if train else "eval"
    assert re.match(
        rf"recipe 'unsized': its {stage} ops left the images of one batch at different "
        r"sizes \(\d+x\d+ and \d+x\d+\), which cannot be stacked into a batch: .* End "
        r"them with Resize\(size=N\)",
        str(dali.value),
    ), dali.value
    with pytest.raises(ConfigError) as albumentations:
        next(iter(registry.create("loaders", "albumentations", *args, train=train)))
    assert str(dali.value) == str(albumentations.value)
    # One image a batch is not stacked: it works, at each image's own size.
    batch = next(iter(create_loader(shapes, split, unsized, 1, train=train)))
    assert batch.images.shape[:2] == (1, 3)


def test_palette_masks_are_read_by_their_indices(tmp_path, shapes):
    """A palette PNG's values are its indices (as segkit.data.reading reads them), not colours."""
    samples = []
    for s in shapes.samples("train")[:4]:
        mask = Image.open(s.mask).convert("P")
        mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
        path = tmp_path / f"{s.id}.png"
        mask.save(path)
        samples.append(Sample(s.id, s.image, path))
    palette = ListDataset(tmp_path, samples, shapes.mask_spec)
    grey = ListDataset(tmp_path, shapes.samples("train")[:4], shapes.mask_spec)
    ops = recipe(R.Resize(size=SIZE))
    a = collect(create_loader(palette, "valid", ops, 4, train=False, num_workers=1))[1]
    b = collect(create_loader(grey, "valid", ops, 4, train=False, num_workers=1))[1]
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- devices


def test_cpu_mode_says_so_once(tiny_pets_dataset, capsys):
    import segkit_dali._loader as impl

    impl._notice_shown = False
    first = create_loader(
        tiny_pets_dataset, "valid", recipe(R.Resize(size=SIZE)), 4, train=False, device="cuda"
    )
    create_loader(
        tiny_pets_dataset, "test", recipe(R.Resize(size=SIZE)), 4, train=False, device="cpu"
    )
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("segkit dali")]
    if torch.cuda.is_available():
        assert first.mode == "gpu" and lines == [
            "segkit dali: device is cpu, running the DALI pipeline on the CPU (device_id=None)"
        ]
    else:
        assert first.mode == "cpu" and first.device == torch.device("cpu")
        assert lines == [
            "segkit dali: no CUDA device, running the DALI pipeline on the CPU (device_id=None)"
        ]


def test_gpu_mode_picks_the_cuda_index_and_nvjpeg(monkeypatch):
    from segkit_dali._graph import Placement
    from segkit_dali._loader import choose_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert choose_device("cuda:1") == (1, torch.device("cuda", 1), "gpu")
    assert choose_device(torch.device("cuda")) == (0, torch.device("cuda", 0), "gpu")
    gpu, cpu = Placement(1), Placement(None)
    assert (gpu.image_decoder, gpu.mask_decoder, gpu.gpu) == ("mixed", "cpu", True)
    assert (cpu.image_decoder, cpu.mask_decoder, cpu.gpu) == ("cpu", "cpu", False)


# -------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_segkit_run_with_the_dali_loader(tiny_pets, tmp_path):
    """Train, validate, test and report through the registry's ``dali`` entry point:
    two epochs of the UNet at 32 px on tiny_pets (13 train, 2 valid, 5 test images)."""
    import csv
    import json

    from segkit import cli
    from segkit.training import checkpoint as ckpt_io

    assert "dali" in registry.list_plugins("loaders")
    epochs, batch_size = 2, 4
    code = cli.main(
        [
            "run",
            "--loader",
            "dali",
            "--model",
            "unet",
            "--image-size",
            "32",
            "--epochs",
            str(epochs),
            "--batch-size",
            str(batch_size),
            "--data",
            str(tiny_pets),
            "--out",
            str(tmp_path / "runs"),
            "--name",
            "dali",
            "--num-workers",
            "1",
            "-q",
        ]
    )
    assert code == 0
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["dali"]
    run = tmp_path / "runs" / "dali"

    config = json.loads((run / "config.json").read_text())
    assert config["loader"] == "dali" and config["model"] == "unet"
    assert config["image_size"] == 32 and config["epochs"] == epochs

    n_train = len(registry.create("datasets", "oxford_pet", tiny_pets).samples("train"))
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    from segkit.build import drops_last_batch

    # Every image once but a partial last batch (--last-batch drop, see drops_last_batch).
    seen = n_train - (n_train % 4 if drops_last_batch(n_train, 4) else 0)
    for row in rows:
        assert int(row["train_images"]) == seen
        assert math.isfinite(float(row["train_loss"])) and float(row["epoch_seconds"]) > 0
        assert 0.0 <= float(row["valid_dice"]) <= 1.0

    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["test_dice"] <= 1.0 and 0.0 <= summary["test_iou"] <= 1.0
    assert math.isfinite(summary["epoch_seconds"]) and summary["epoch_seconds"] > 0
    assert summary["images_per_second"] > 0 and summary["best_epoch"] in (1, 2)

    # The best checkpoint is a segkit checkpoint whose weights load into a fresh UNet.
    ckpt = ckpt_io.load(run / "best.pt")
    assert ckpt["config"]["loader"] == "dali" and ckpt["epoch"] == summary["best_epoch"]
    model = registry.create("models", "unet", in_channels=3, out_channels=1)
    model.load_state_dict(ckpt["model"])  # strict: every key, every shape
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 32, 32))).all()
