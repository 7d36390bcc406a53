"""The DALI loader's photometric ops for real datasets (``segkit_dali._color``), in
DALI's CPU mode (``device_id=None``).

Parity with albumentations is checked two ways: each compiled op run alone on real
photo pixels in a small pipeline (:func:`run_op`: the op's own ``draw`` and ``build``,
compared pixel by pixel with albumentations' transform given the same parameters), and
through the loader with degenerate ranges (the pattern of
``test_photometric_ops_compute_what_albumentations_computes`` in test_dali_loader.py).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip(
    "nvidia.dali", reason="NVIDIA DALI is not installed (pip install 'segkit[dali]')"
)

import albumentations as A  # noqa: E402
from dali_helpers import SIZE, collect, recipe  # noqa: E402
from dali_helpers import pixels as unnormalize  # noqa: E402
from PIL import Image  # noqa: E402

from segkit import recipes as R  # noqa: E402
from segkit_dali import create_loader  # noqa: E402
from segkit_dali._color import blur_widths  # noqa: E402
from segkit_dali._graph import compile_ops  # noqa: E402
from segkit_dali._loader import draw_params  # noqa: E402


def per_op(dataset, *ops: R.Op, epochs=(0,), batch=8, seed=0, **options):
    loader = create_loader(
        dataset, "train", recipe(*ops), batch, train=True, seed=seed, num_workers=2, **options
    )
    return collect(loader, epochs=epochs)


def run_op(
    op: R.Op, images: Sequence[np.ndarray], seed: int = 0, epoch: int = 0
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Run ``op`` compiled for DALI alone on uint8 HWC ``images`` (CPU pipeline).

    Returns the output images and the parameters drawn (as the loader draws them, for
    rows ``0..len(images)-1`` of ``len(images)`` samples).
    """
    from nvidia.dali import fn, pipeline_def

    (compiled,) = compile_ops([op])
    n = len(images)
    shapes = np.array([im.shape[:2] for im in images])
    columns = draw_params([compiled], seed, epoch, n, np.arange(n), shapes)
    params = {p.name: c for p, c in zip(compiled.params, columns, strict=True)}

    @pipeline_def(batch_size=n, num_threads=1, device_id=None, enable_conditionals=True)
    def pipe():
        image, mask, *nodes = fn.external_source(
            source=lambda: [
                list(images),
                [np.zeros((*im.shape[:2], 1), np.uint8) for im in images],
                *columns,
            ],
            num_outputs=2 + len(columns),
            batch=True,
            layout=["HWC", "HWC", *[""] * len(columns)],
        )
        image, mask = compiled.build(image, mask, dict(zip(params, nodes)))  # noqa: B905
        return image, mask

    pipeline = pipe()
    pipeline.build()
    out, _ = pipeline.run()
    return [np.array(out[i]) for i in range(n)], params


@pytest.fixture(scope="module")
def photos(tiny_pets_dataset) -> list[np.ndarray]:
    """Six train photos of tiny_pets, cropped to 72 x 88 px (real pixel statistics)."""
    out = []
    for sample in tiny_pets_dataset.samples("train")[:6]:
        with Image.open(sample.image) as im:
            out.append(np.asarray(im.convert("RGB"))[:72, :88].copy())
    return out


@pytest.fixture(scope="module")
def reference(tiny_pets_dataset):
    """Resize + Normalize outputs for train epoch 0 (13 samples), unnormalized."""
    images, masks = per_op(tiny_pets_dataset, R.Resize(size=SIZE))
    return unnormalize(images), masks


def albumentations_on(transform: Any, images: torch.Tensor) -> torch.Tensor:
    """``transform`` (an albumentations transform) applied to each CHW 0..255 image."""
    out = []
    for base in images:
        image = base.permute(1, 2, 0).numpy().astype(np.uint8)
        out.append(torch.from_numpy(transform(image=image)["image"]).permute(2, 0, 1).float())
    return torch.stack(out)


def fired(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per image: did the op change it?"""
    return (images - reference).abs().flatten(1).amax(1) > 0


# ------------------------------------------------------------------------ GaussianBlur


@pytest.mark.parametrize(
    "blur_limit, sigma_limit",
    [((0, 0), (0.5, 3.0)), ((3, 9), (0.3, 2.0)), ((7, 7), (4.0, 5.0))],
)
def test_gaussian_blur_is_albumentations_blur(photos, blur_limit, sigma_limit):
    """Per sample, the sigma and width drawn: albumentations' own kernel through
    cv2.sepFilter2D (BORDER_REFLECT_101) gives DALI's output, borders included, but for
    rare pixels one level off (float32 sums landing on the other side of a .5: measured
    1.5e-5 of pixels over 8.8 M; docs/dali.md)."""
    from albumentations.augmentations.blur import functional as fblur
    from albumentations.augmentations.pixel import functional as fpixel

    op = R.GaussianBlur(blur_limit=blur_limit, sigma_limit=sigma_limit, p=1.0)
    outs, params = run_op(op, photos)
    for out, photo, sigma, width in zip(
        outs, photos, params["sigma"], params["width"], strict=True
    ):
        assert sigma_limit[0] <= sigma <= sigma_limit[1] and width % 2 == 1
        kernel = fblur.create_gaussian_kernel_1d(float(sigma), int(width))
        diff = np.abs(out.astype(int) - fpixel.separable_convolve(photo, kernel=kernel))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def test_gaussian_blur_through_the_loader_is_a_gaussian_blur(tiny_pets_dataset, reference):
    op = R.GaussianBlur(blur_limit=(5, 5), sigma_limit=(1.5, 1.5), p=1.0)
    images, masks = per_op(tiny_pets_dataset, R.Resize(size=SIZE), op)
    expected = albumentations_on(
        A.GaussianBlur(blur_limit=(5, 5), sigma_limit=(1.5, 1.5), p=1.0), reference[0]
    )
    diff = (unnormalize(images) - expected).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    assert torch.equal(masks, reference[1])


def test_gaussian_blur_widths_follow_albumentations():
    """blur_limit=(0, 0): PIL's int(sigma * 3.5) * 2 + 1; a range: random.randint made
    odd, so each odd width but the lowest is drawn twice as often."""
    sigma = np.array([0.5, 0.57, 0.58, 1.0, 2.99, 3.0])
    assert blur_widths((0, 0), sigma, np.zeros(6)).tolist() == [int(s * 3.5) * 2 + 1 for s in sigma]
    u = np.random.default_rng(0).random(40_000)
    ours = np.bincount(blur_widths((3, 9), sigma[:1], u))[3::2] / len(u)
    rng = random.Random(0)
    theirs = [rng.randint(3, 9) for _ in range(40_000)]
    theirs = np.bincount([w + (w % 2 == 0) for w in theirs])[3::2] / len(theirs)
    np.testing.assert_allclose(ours, [1 / 7, 2 / 7, 2 / 7, 2 / 7], atol=0.01)
    np.testing.assert_allclose(theirs, [1 / 7, 2 / 7, 2 / 7, 2 / 7], atol=0.01)


# ------------------------------------------------------------------ HueSaturationValue


def run_graph(body, image: np.ndarray) -> np.ndarray:
    """``body(node)`` on one uint8 HWC image in a CPU pipeline."""
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        return body(fn.external_source(source=lambda: [image], batch=True, layout="HWC"))

    pipeline = pipe()
    pipeline.build()
    (out,) = pipeline.run()
    return np.array(out[0])


@pytest.mark.slow  # every colour: 16.8M pixels through DALI and OpenCV
def test_rgb_to_hsv_is_opencv_on_every_colour():
    import cv2
    from nvidia.dali import fn

    from segkit_dali._color import rgb_to_hsv8

    every = np.arange(2**24, dtype=np.uint32)
    image = np.stack([every >> 16, (every >> 8) & 255, every & 255], -1).astype(np.uint8)
    image = image.reshape(4096, 4096, 3)
    out = run_graph(lambda x: fn.stack(*rgb_to_hsv8(x), axis=2), image)
    np.testing.assert_array_equal(out, cv2.cvtColor(image, cv2.COLOR_RGB2HSV))


@pytest.mark.slow  # every HSV value: 11.8M pixels through DALI and OpenCV
def test_hsv_to_rgb_is_opencv_on_every_hsv_value():
    import cv2
    from nvidia.dali import fn, types

    from segkit_dali._color import hsv8_to_rgb

    h, s, v = np.meshgrid(np.arange(180), np.arange(256), np.arange(256), indexing="ij")
    image = np.stack([h, s, v], -1).astype(np.uint8).reshape(180 * 256, 256, 3)

    def body(x):
        x = fn.cast(x, dtype=types.INT32)
        return hsv8_to_rgb(x[:, :, 0], x[:, :, 1], x[:, :, 2])

    np.testing.assert_array_equal(run_graph(body, image), cv2.cvtColor(image, cv2.COLOR_HSV2RGB))


def test_hue_saturation_value_is_albumentations_bit_for_bit(photos):
    """Per sample, the shifts drawn: albumentations' shift_hsv gives exactly DALI's output.
    DALI is fed floor(hue) mod 180 and trunc(sat), trunc(val), which is what
    albumentations' LUTs use; the +-0.5 keeps albumentations' shifts non-zero (so it
    makes the HSV round trip, as it does for every non-degenerate draw)."""
    from albumentations.augmentations.pixel import functional as fpixel

    op = R.HueSaturationValue(
        hue_shift_limit=(-40, 40), sat_shift_limit=(-60, 60), val_shift_limit=(-50, 50), p=1.0
    )
    # 64 px rows: whole SIMD blocks for OpenCV's HSV -> RGB (see the test below).
    photos = [photo[:, :64].copy() for photo in photos]
    outs, params = run_op(op, photos * 3, seed=5)
    assert params["apply"].all()
    for out, photo, hue, sat, val in zip(
        outs, photos * 3, params["hue"], params["sat"], params["val"], strict=True
    ):
        assert 0 <= hue < 180 and -60 <= sat <= 60 and -50 <= val <= 50
        half = lambda k: k + (0.5 if k >= 0 else -0.5)  # noqa: E731
        expected = fpixel.shift_hsv(photo, float(hue) + 0.5, half(sat), half(val))
        np.testing.assert_array_equal(out, expected)


def test_hue_saturation_value_draws_cover_the_limits_and_fire_with_p():
    op = R.HueSaturationValue(
        hue_shift_limit=(-20, 30), sat_shift_limit=(-10, 10), val_shift_limit=(5, 25), p=0.4
    )
    (compiled,) = compile_ops([op])
    n = 4000
    columns = draw_params([compiled], 1, 0, n, np.arange(n), np.full((n, 2), 64))
    apply, hue, sat, val = columns
    assert 0.37 <= apply.mean() <= 0.43
    assert set(np.unique(np.where(hue >= 150, hue - 180, hue))) == set(range(-20, 30))
    assert set(np.unique(sat)) == set(range(-9, 10))  # trunc: 0 twice as likely
    assert set(np.unique(val)) == set(range(5, 25))


def test_hue_saturation_value_through_the_loader(tiny_pets_dataset, reference):
    """Degenerate integer limits: the same shifts on both loaders, bit for bit; masks
    untouched; zero shifts leave the image alone (no HSV round trip), as in
    albumentations."""
    op = R.HueSaturationValue(
        hue_shift_limit=(10, 10), sat_shift_limit=(-25, -25), val_shift_limit=(15, 15), p=1.0
    )
    images, masks = per_op(tiny_pets_dataset, R.Resize(size=SIZE), op)
    expected = albumentations_on(
        A.HueSaturationValue((10, 10), (-25, -25), (15, 15), p=1.0), reference[0]
    )
    assert torch.equal(unnormalize(images), expected)
    assert torch.equal(masks, reference[1])
    zero = R.HueSaturationValue(
        hue_shift_limit=(0, 0), sat_shift_limit=(0, 0), val_shift_limit=(0, 0), p=1.0
    )
    images, _ = per_op(tiny_pets_dataset, R.Resize(size=SIZE), zero)
    assert torch.equal(unnormalize(images), reference[0])


def test_hue_saturation_value_differs_only_in_opencvs_scalar_tail(photos):
    """OpenCV's HSV -> RGB truncates in its vectorized loop and rounds in the scalar loop
    that finishes each row (the last width mod 16/32/64 pixels, by CPU): on 88 px rows
    DALI (truncating everywhere) may be one level below cv2 only in the last 24 columns."""
    from albumentations.augmentations.pixel import functional as fpixel

    op = R.HueSaturationValue(
        hue_shift_limit=(-40, 40), sat_shift_limit=(-60, 60), val_shift_limit=(-50, 50), p=1.0
    )
    outs, params = run_op(op, photos, seed=6)
    for out, photo, hue, sat, val in zip(
        outs, photos, params["hue"], params["sat"], params["val"], strict=True
    ):
        half = lambda k: k + (0.5 if k >= 0 else -0.5)  # noqa: E731
        expected = fpixel.shift_hsv(photo, float(hue) + 0.5, half(sat), half(val))
        diff = expected.astype(int) - out
        assert diff.min() >= 0 and diff.max() <= 1
        assert not diff[:, :64].any()


# -------------------------------------------------------------------------- GaussNoise


@pytest.mark.parametrize("mean", [0.1, -0.3])
def test_gauss_noise_adds_and_truncates_as_albumentations(tiny_pets_dataset, reference, mean):
    """std 0: the noise is the mean alone on both loaders (-76.5 levels for -0.3); it is
    truncated toward zero, added and clipped the same way, bit for bit."""
    op = R.GaussNoise(std_range=(0.0, 0.0), mean_range=(mean, mean), p=1.0)
    images, masks = per_op(tiny_pets_dataset, R.Resize(size=SIZE), op)
    transform = A.GaussNoise(std_range=(0.0, 0.0), mean_range=(mean, mean), p=1.0)
    assert torch.equal(unnormalize(images), albumentations_on(transform, reference[0]))
    assert torch.equal(masks, reference[1])


@pytest.mark.parametrize("per_channel", [True, False])
def test_gauss_noise_has_the_drawn_std_and_mean(per_channel):
    """On a flat grey image (no clipping) each sample's noise has the drawn std and mean
    (up to the truncation toward zero), is Gaussian (68.3% within one std) and is
    uncorrelated between neighbours; per_channel=False adds the same noise to R, G, B."""
    grey = np.full((96, 96, 3), 128, np.uint8)
    op = R.GaussNoise(std_range=(0.04, 0.1), mean_range=(-0.05, 0.05), per_channel=per_channel)
    outs, params = run_op(R.GaussNoise(**{**op.__dict__, "p": 1.0}), [grey] * 12, seed=2)
    assert (params["std"] >= 0.04 * 255 - 1e-3).all() and (params["std"] <= 0.1 * 255).all()
    assert (np.abs(params["mean"]) <= 0.05 * 255 + 1e-3).all()
    assert np.ptp(params["std"]) > 0.3 * 0.06 * 255  # spread over the range
    for out, std, mean in zip(outs, params["std"], params["mean"], strict=True):
        noise = out.astype(np.float64) - 128
        assert abs(noise.std() - std) < 0.03 * std + 0.3
        assert abs(noise.mean() - mean) < 0.5 + 3 * std / np.sqrt(noise.size)
        within = (np.abs(noise - mean) < std).mean()
        assert abs(within - 0.683) < 0.04
        r = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
        assert abs(r) < 0.03
        same = (noise[..., 0] == noise[..., 1]) & (noise[..., 1] == noise[..., 2])
        assert same.all() if not per_channel else same.mean() < 0.2


def test_gauss_noise_fires_with_p_and_differs_per_sample():
    grey = np.full((16, 16, 3), 128, np.uint8)
    outs, params = run_op(R.GaussNoise(std_range=(0.1, 0.2), p=0.5), [grey] * 200, seed=3)
    changed = np.array([(out != grey).any() for out in outs])
    np.testing.assert_array_equal(changed, params["apply"])
    assert 0.4 <= changed.mean() <= 0.6
    noisy = [out for out in outs if (out != grey).any()]
    assert len({out.tobytes() for out in noisy}) == len(noisy)


def test_gauss_noise_depends_only_on_seed_epoch_and_index(tiny_pets_dataset):
    """The noise is drawn from per-sample keys of the epoch's parameter table, so a
    sample's noisy image is the same for any batch size (batch position, pipeline state),
    on a rebuilt loader, and differs in another epoch or with another seed."""
    ops = (R.Resize(size=SIZE), R.GaussNoise(std_range=(0.1, 0.2), p=1.0))
    a, masks = per_op(tiny_pets_dataset, *ops, epochs=(0, 1), batch=8)
    b, _ = per_op(tiny_pets_dataset, *ops, epochs=(0, 1), batch=5)
    assert torch.equal(a, b)
    n = len(a) // 2
    assert not torch.equal(a[:n], a[n:])  # epochs 0 and 1: the same order, new noise
    c, _ = per_op(tiny_pets_dataset, *ops, epochs=(0,), seed=1)
    assert not torch.equal(a[:n], c)


def test_gauss_noise_refuses_images_it_cannot_number():
    from segkit.errors import DataError
    from segkit_dali._color import MAX_SIDE

    (compiled,) = compile_ops([R.GaussNoise(p=1.0)])
    with pytest.raises(DataError, match=r"GaussNoise .*Resize or crop before GaussNoise"):
        draw_params([compiled], 0, 0, 1, np.arange(1), np.array([[10, MAX_SIDE + 1]]))


def test_gaussian_blur_draws_cover_sigma_and_fire_with_p():
    op = R.GaussianBlur(blur_limit=(0, 0), sigma_limit=(0.5, 3.0), p=0.3)
    (compiled,) = compile_ops([op])
    n = 4000
    apply, sigma, width = draw_params([compiled], 1, 0, n, np.arange(n), np.full((n, 2), 64))
    assert 0.27 <= apply.mean() <= 0.33
    assert 0.5 <= sigma.min() < 0.52 and 2.98 < sigma.max() <= 3.0
    assert set(np.unique(width)) == {3, 5, 7, 9, 11, 13, 15, 17, 19, 21}


def test_channel_shuffle_moves_past_gaussian_blur_only():
    from segkit_dali._graph import graph_order

    shuffle = R.ChannelShuffle(p=1.0)
    ops = compile_ops([shuffle, R.GaussianBlur(p=1.0), R.GaussNoise(p=1.0)])
    assert graph_order(ops) == [1, 0, 2]
    ops = compile_ops([shuffle, R.HueSaturationValue(p=1.0)])
    assert graph_order(ops) == [0, 1]


def test_gauss_noise_field_is_computed_on_the_gpu_in_a_gpu_graph():
    """On a GPU image the noise field (pixel counter, hashes, Box-Muller) must be GPU
    nodes: DALI's arithmetic takes the device of its inputs, and CPU slices of the iota
    constant would compute the whole field on the CPU, then copy it over. The graph is
    defined, not run (no CUDA needed)."""
    from nvidia.dali import fn, pipeline_def

    from segkit_dali._color import gaussian_noise, pixel_counter

    (compiled,) = compile_ops([R.GaussNoise(p=1.0)], gpu=True)
    columns = draw_params([compiled], 0, 0, 1, np.arange(1), np.array([[20, 30]]))
    devices = []

    @pipeline_def(batch_size=1, num_threads=1, device_id=0)
    def pipe():
        image, *nodes = fn.external_source(
            source=lambda: [[np.zeros((20, 30, 3), np.uint8)], *columns],
            num_outputs=1 + len(columns),
            batch=True,
        )
        image = image.gpu()
        params = dict(zip([p.name for p in compiled.params], nodes, strict=True))
        for per_channel in (True, False):
            counter = pixel_counter(image, per_channel)
            z = gaussian_noise(counter, params["key0"], params["key1"])
            devices.append((counter.device, z.device))
        image, _ = compiled.build(image, image, params)
        return image

    pipe()._build_graph()  # the Python half of build(): no CUDA needed
    assert devices == [("gpu", "gpu"), ("gpu", "gpu")]
