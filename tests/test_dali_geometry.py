"""The DALI loader's geometric ops for real datasets (``segkit_dali._geometry``), in
DALI's CPU mode (``device_id=None``).

Parity with albumentations (the reference: what the ``albumentations`` loader runs) is
checked on real photo pixels: each compiled op runs alone in a small pipeline
(:func:`run_op`: the op's own ``draw`` and ``build``) and its drawn parameters are
replayed through albumentations' transform at those parameters (or numpy / OpenCV);
ops without randomness are compared with albumentations' output directly. Pairing is
checked through both loaders on the kit's L shapes, binary and K-class.
``ElasticTransform`` needs DALI's GPU remap: here only its refusal, its field and its
border arithmetic are tested; tests/cuda/test_cuda_dali_elastic.py runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip(
    "nvidia.dali", reason="NVIDIA DALI is not installed (pip install 'segkit[dali]')"
)

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
from dali_helpers import SIZE, collect, recipe  # noqa: E402
from dali_helpers import pixels as unnormalize  # noqa: E402
from PIL import Image  # noqa: E402

from segkit import recipes as R  # noqa: E402
from segkit.config import COMMAND_LINE, given_as  # noqa: E402
from segkit.contracts import IGNORE_INDEX  # noqa: E402
from segkit.errors import ConfigError  # noqa: E402
from segkit_dali import create_loader  # noqa: E402
from segkit_dali._base import PerBatch  # noqa: E402
from segkit_dali._geometry import (  # noqa: E402
    border_coordinates,
    elastic_maps,
    rot90_steps,
)
from segkit_dali._graph import compile_ops  # noqa: E402
from segkit_dali._loader import draw_params, epoch_rng  # noqa: E402

#: Affine against A.Affine at the same parameters, on the CPU: the documented tolerance
#: (docs/dali.md). Measured here: 0 of 55.8 M image values and 0 of 18.6 M mask pixels
#: differ (8 photos, 5 parameter sets, 3 border modes). DALI's CPU warp and
#: albumentations' cv2 are separate OpenCV builds, whose vector code may differ on
#: another CPU: the bound allows one level on 0.1 % of pixels (masks: 0.1 % off).
AFFINE_MAX_LEVELS = 1
AFFINE_MAX_FRACTION = 1e-3


def run_op(
    op: R.Op,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray] | None = None,
    *,
    multiclass: bool = False,
    seed: int = 0,
    epoch: int = 0,
) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, Any]]:
    """Run ``op`` compiled for DALI alone on uint8 HWC ``images`` and HW ``masks`` (CPU).

    Returns the output images, the output masks (HW) and the parameters drawn (as the
    loader draws them, for rows ``0..n-1`` of ``n`` samples).
    """
    from nvidia.dali import fn, pipeline_def

    (compiled,) = compile_ops([op], multiclass=multiclass)
    n = len(images)
    if masks is None:
        masks = [np.zeros(im.shape[:2], np.uint8) for im in images]
    shapes = np.array([im.shape[:2] for im in images])
    columns = draw_params([compiled], seed, epoch, n, np.arange(n), shapes)
    params = {p.name: c for p, c in zip(compiled.params, columns, strict=True)}

    @pipeline_def(batch_size=n, num_threads=1, device_id=None, enable_conditionals=True)
    def pipe():
        image, mask, *nodes = fn.external_source(
            source=lambda: [list(images), [m[..., None] for m in masks], *columns],
            num_outputs=2 + len(columns),
            batch=True,
            layout=["HWC", "HWC", *[""] * len(columns)],
        )
        return compiled.build(image, mask, dict(zip(params, nodes)))  # noqa: B905

    pipeline = pipe()
    pipeline.build()
    out, out_masks = pipeline.run()
    return (
        [np.array(out[i]) for i in range(n)],
        [np.array(out_masks[i])[..., 0] for i in range(n)],
        params,
    )


#: Crop sizes of the test photos: some below 64 px on a side (RandomCrop and
#: PadIfNeeded pad them), none square but one.
PHOTO_SHAPES = ((72, 88), (61, 47), (40, 53), (90, 90), (33, 70), (80, 64), (57, 101), (48, 36))


@pytest.fixture(scope="module")
def photos(tiny_pets_dataset) -> list[np.ndarray]:
    """Eight train photos of tiny_pets, cropped to PHOTO_SHAPES (real pixel statistics)."""
    out = []
    for sample, (h, w) in zip(tiny_pets_dataset.samples("train"), PHOTO_SHAPES, strict=False):
        with Image.open(sample.image) as im:
            out.append(np.asarray(im.convert("RGB"))[:h, :w].copy())
    return out


@pytest.fixture(scope="module")
def class_maps(photos) -> list[np.ndarray]:
    """K-class masks for ``photos``: classes 0-2 in bands of the red channel, 255 on a
    few pixels (so an op must carry the ignore index too)."""
    out = []
    for image in photos:
        mask = (image[..., 0] // 86).astype(np.uint8)
        mask[:3, -3:] = IGNORE_INDEX
        out.append(mask)
    return out


@pytest.fixture(scope="module")
def shapes_classes(tmp_path_factory):
    """The kit's L shapes with K-class masks (bar 1, foot 2, an ignored corner)."""
    from segkit.testing import ShapesDataset, write_shapes_dataset

    root = write_shapes_dataset(tmp_path_factory.mktemp("shapes-classes"), classes=True)
    return ShapesDataset(root, classes=True)


# ------------------------------------------------------------------------- flips


def test_vertical_flip_mirrors_image_and_mask_top_bottom_with_p(photos, class_maps):
    images, masks, params = run_op(R.VerticalFlip(p=0.5), photos, class_maps, multiclass=True)
    flips = params["flip"].astype(bool)
    for image, mask, out, out_mask, flip in zip(
        photos, class_maps, images, masks, flips, strict=True
    ):
        assert np.array_equal(out, image[::-1] if flip else image)
        assert np.array_equal(out_mask, mask[::-1] if flip else mask)
    assert 0 < flips.sum() < len(flips)
    (always,) = compile_ops([R.VerticalFlip(p=1.0)])
    assert always.params == ()  # p=1: no flag, every sample flipped


def test_rot90_steps_are_np_rot90():
    x = np.arange(3 * 5 * 2).reshape(3, 5, 2)
    for k in range(4):
        transpose, horizontal, vertical = (int(step[0]) for step in rot90_steps(np.array([k])))
        y = x.swapaxes(0, 1) if transpose else x
        y = y[:, ::-1] if horizontal else y
        y = y[::-1] if vertical else y
        assert np.array_equal(y, np.rot90(x, k)), k


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_random_rotate90_is_albumentations_rot90_of_the_drawn_k(photos, class_maps, p):
    """Bit-identical to A.RandomRotate90 at the drawn k, masks too; the draw returns the
    rotated sizes (a later RandomResizedCrop depends on them), and every k is drawn."""
    images, masks, params = run_op(
        R.RandomRotate90(p=p), photos * 3, class_maps * 3, multiclass=True, epoch=1
    )
    transform = A.RandomRotate90(p=1.0)
    ks = []
    for image, mask, out, out_mask, t, h, v in zip(
        photos * 3,
        class_maps * 3,
        images,
        masks,
        params["transpose"],
        params["horizontal"],
        params["vertical"],
        strict=True,
    ):
        k = {(0, 0, 0): 0, (1, 0, 1): 1, (0, 1, 1): 2, (1, 1, 0): 3}[(int(t), int(h), int(v))]
        ks.append(k)
        assert np.array_equal(out, transform.apply(image, factor=k))
        assert np.array_equal(out_mask, transform.apply_to_mask(mask, factor=k))
    assert set(ks) == {0, 1, 2, 3}
    (op,) = compile_ops([R.RandomRotate90(p=p)])
    shapes = np.array([im.shape[:2] for im in photos * 3])
    _, after = op.draw(epoch_rng(0, 1), len(shapes), np.arange(len(shapes)), shapes)
    assert [tuple(s) for s in after] == [im.shape[:2] for im in images]


def test_random_resized_crop_after_a_rotation_sees_the_rotated_size(shapes):
    """Windows are drawn on the rotated sizes: through the loader, no window leaves the
    image (DALI's slice would fail) and the masks stay binary."""
    ops = (R.RandomRotate90(p=1.0), R.RandomResizedCrop(size=SIZE, scale=(0.9, 1.0), p=1.0))
    loader = create_loader(shapes, "train", recipe(*ops), 4, train=True, num_workers=1)
    images, masks = collect(loader, epochs=(0, 1, 2))
    assert images.shape == (30, 3, SIZE, SIZE) and set(masks.unique().tolist()) <= {0.0, 1.0}


# ------------------------------------------------------------------------ Affine


def _affine(scale, rotate, translate, border, fill=0.0, fill_mask=None, p=1.0) -> R.Affine:
    return R.Affine(
        scale=scale,
        rotate=rotate,
        translate_percent=translate,
        border_mode=border,
        fill=fill,
        fill_mask=fill_mask,
        p=p,
    )


@pytest.mark.parametrize("border", ["constant", "replicate", "reflect"])
@pytest.mark.parametrize(
    "scale, rotate, translate",
    [((1.1, 1.1), (17.0, 17.0), (0.05, 0.05)), ((0.7, 0.7), (200.0, 200.0), (-0.1, -0.1))],
    ids=["s1.1-r17-t0.05", "s0.7-r200-t-0.1"],
)
def test_affine_is_albumentations_affine(photos, class_maps, scale, rotate, translate, border):
    """Degenerate ranges: both loaders use the same matrix; DALI's output against
    A.Affine (as the albumentations loader compiles it), within AFFINE_MAX_*."""
    from segkit_albumentations import compile_ops as compile_albumentations

    op = _affine(scale, rotate, translate, border, fill=37.0)
    images, masks, _ = run_op(op, photos, class_maps, multiclass=True)
    transform = compile_albumentations([op], multiclass=True)
    diffs, mask_diffs = [], []
    for image, mask, out, out_mask in zip(photos, class_maps, images, masks, strict=True):
        expected = transform(image=image, mask=mask)
        diffs.append(np.abs(out.astype(int) - expected["image"]).ravel())
        mask_diffs.append((out_mask != expected["mask"]).ravel())
    diff, mask_diff = np.concatenate(diffs), np.concatenate(mask_diffs)
    assert diff.max() <= AFFINE_MAX_LEVELS, f"max |diff| {diff.max()} levels"
    assert (diff > 0).mean() <= AFFINE_MAX_FRACTION, f"{(diff > 0).mean():.2e} of values"
    assert mask_diff.mean() <= AFFINE_MAX_FRACTION, f"{mask_diff.mean():.2e} of mask pixels"
    assert set(np.unique(np.concatenate([m.ravel() for m in masks]))) <= {0, 1, 2, 255}


def test_affine_draws_are_albumentations_matrices_in_range(photos):
    """Random ranges: each drawn matrix is albumentations' for some shift (whole pixels),
    per-axis scales and angle within the op's ranges, and cv2.warpAffine with it gives
    DALI's picture. Samples the op does not fire for are untouched."""
    op = _affine((0.8, 1.2), (-30.0, 30.0), (-0.1, 0.1), "reflect", p=0.75)
    images, _, params = run_op(op, photos * 2, epoch=3)
    angles = []
    for image, out, fire, inverse in zip(
        photos * 2, images, params["apply"], params["matrix"], strict=True
    ):
        if not fire:
            assert np.array_equal(out, image)
            continue
        h, w = image.shape[:2]
        forward = np.linalg.inv(inverse.astype(np.float64))
        (a, b, tx), (c, d, ty) = forward[:2]
        sx, sy = np.hypot(a, c), np.hypot(b, d)
        angle = np.degrees(np.arctan2(-c, a))
        assert 0.8 - 1e-5 <= sx <= 1.2 + 1e-5 and 0.8 - 1e-5 <= sy <= 1.2 + 1e-5
        assert -30 - 1e-3 <= angle <= 30 + 1e-3
        angles.append(angle)
        # The shift: forward maps the centre to centre + (whole-pixel) translation.
        centre = np.array([w / 2 - 0.5, h / 2 - 0.5, 1.0])
        shift = (forward @ centre)[:2] - centre[:2]
        assert np.allclose(shift, np.round(shift), atol=1e-3)
        assert abs(shift[0]) <= 0.1 * w + 1e-3 and abs(shift[1]) <= 0.1 * h + 1e-3
        expected = cv2.warpAffine(
            image,
            forward[:2],
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )
        diff = np.abs(out.astype(int) - expected)
        assert diff.max() <= AFFINE_MAX_LEVELS and (diff > 0).mean() <= AFFINE_MAX_FRACTION
    assert 0 < len(angles) < 2 * len(photos) and min(angles) < -10 and max(angles) > 10


def test_affine_replicate_repeats_the_edge_pixel():
    """A shift right by a quarter: the new columns on the left are copies of column 0."""
    image = np.random.default_rng(0).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    op = _affine((1.0, 1.0), (0.0, 0.0), (0.25, 0.25), "replicate")
    (out,), (mask,), _ = run_op(op, [image], [np.eye(20, 40, dtype=np.uint8)])
    assert np.array_equal(out[5:, :10], np.repeat(image[:15, :1], 10, axis=1))
    assert np.array_equal(out[5:, 10:], image[:15, :30])
    assert np.array_equal(out[:5], np.repeat(out[5:6], 5, axis=0))  # the top row, repeated
    assert set(np.unique(mask)) == {0, 1}


# ------------------------------------------------------------------- RandomCrop


@pytest.mark.parametrize("multiclass", [False, True])
def test_random_crop_is_albumentations_crop_of_the_drawn_window(photos, class_maps, multiclass):
    """Replay each drawn window through A.RandomCrop(pad_if_needed, centred) at those
    parameters: bit-identical, for photos larger and smaller than the crop."""
    size, fill = 64, 100.5  # OpenCV rounds a fill half to even: 100
    op = R.RandomCrop(size=size, fill=fill, p=1.0)
    masks_in = class_maps if multiclass else [(m == 1).astype(np.uint8) for m in class_maps]
    images, masks, params = run_op(op, photos * 2, masks_in * 2, multiclass=multiclass)
    mask_fill = IGNORE_INDEX if multiclass else 0
    transform = A.RandomCrop(
        height=size,
        width=size,
        pad_if_needed=True,
        pad_position="center",
        border_mode=cv2.BORDER_CONSTANT,
        fill=fill,
        fill_mask=mask_fill,
    )
    for image, mask, out, out_mask, (y0, x0) in zip(
        photos * 2, masks_in * 2, images, masks, params["start"], strict=True
    ):
        h, w = image.shape[:2]
        top, left = max(0, size - h) // 2, max(0, size - w) // 2
        pad = {
            "pad_top": top,
            "pad_bottom": max(0, size - h) - top,
            "pad_left": left,
            "pad_right": max(0, size - w) - left,
        }
        y, x = int(y0) + top, int(x0) + left  # in the padded image
        assert 0 <= y <= max(h, size) - size and 0 <= x <= max(w, size) - size
        coords = (x, y, x + size, y + size)
        pad_params = pad if any(pad.values()) else None
        expected = transform.apply(image, crop_coords=coords, pad_params=pad_params)
        expected_mask = transform.apply_to_mask(mask, crop_coords=coords, pad_params=pad_params)
        assert np.array_equal(out, expected)
        assert np.array_equal(out_mask, expected_mask)
    assert len({tuple(s) for s in params["start"]}) > len(photos)  # windows vary


# ------------------------------------------------------------------ PadIfNeeded


@pytest.mark.parametrize("border", ["constant", "replicate", "reflect"])
@pytest.mark.parametrize(
    "size, divisor", [(64, None), (None, 32), (80, 48)], ids=["size", "divisor", "both"]
)
def test_pad_if_needed_is_the_albumentations_loaders_padding(
    photos, class_maps, border, size, divisor
):
    """Deterministic: DALI's output equals the albumentations loader's (two
    A.PadIfNeeded when both size and divisor are given), bit for bit, including a 3x5
    image reflected over several folds and photos already large enough."""
    from segkit_albumentations import compile_ops as compile_albumentations

    tiny = np.random.default_rng(1).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    images_in = [*photos, tiny]
    masks_in = [
        *class_maps,
        np.array([[0, 1, 2, 1, 0], [1, 2, 0, 0, 1], [2, 0, 255, 1, 2]], np.uint8),
    ]
    op = R.PadIfNeeded(size=size, divisor=divisor, border_mode=border, fill=17.0, fill_mask=7)
    images, masks, _ = run_op(op, images_in, masks_in, multiclass=True)
    transform = compile_albumentations([op], multiclass=True)
    for image, mask, out, out_mask in zip(images_in, masks_in, images, masks, strict=True):
        expected = transform(image=image, mask=mask)
        assert out.shape == expected["image"].shape
        assert np.array_equal(out, expected["image"])
        assert np.array_equal(out_mask, expected["mask"])
        h, w = out.shape[:2]
        assert size is None or min(h, w) >= size
        assert divisor is None or (h % divisor, w % divisor) == (0, 0) or size is not None


def test_pad_if_needed_draws_the_padded_sizes_and_skips_large_images(photos):
    (op,) = compile_ops([R.PadIfNeeded(size=64, divisor=32)])
    shapes = np.array([[72, 88], [64, 64], [33, 70], [129, 130]])
    params, after = op.draw(np.random.default_rng(0), 4, np.arange(4), shapes)
    assert after.tolist() == [[96, 96], [64, 64], [64, 96], [160, 160]]
    assert params["apply"].tolist() == [True, False, True, True]
    assert params["start0"].tolist() == [[-12, -4], [0, 0], [-15, -13], [-15, -15]]


# ---------------------------------------------------------------- CoarseDropout


@pytest.mark.parametrize("mask_mode", ["keep", "ignore"])
def test_coarse_dropout_is_albumentations_dropout_of_the_drawn_holes(photos, class_maps, mask_mode):
    """Replay each sample's drawn holes through A.CoarseDropout at those holes: bit
    identical (fill 200.7 truncated to 200 as albumentations' uint8 array), the mask
    kept or set to the ignore index in the holes. Holes follow the op's ranges."""
    op = R.CoarseDropout(
        num_holes_range=(1, 4),
        hole_height_range=(0.05, 0.3),
        hole_width_range=(0.1, 0.25),
        fill=200.7,
        mask=mask_mode,
        p=0.8,
    )
    images, masks, params = run_op(op, photos * 3, class_maps * 3, multiclass=True, epoch=2)
    fill_mask = IGNORE_INDEX if mask_mode == "ignore" else None
    transform = A.CoarseDropout(fill=200.7, fill_mask=fill_mask)
    counts = []
    for image, mask, out, out_mask, fire, anchor, shape in zip(
        photos * 3,
        class_maps * 3,
        images,
        masks,
        params["apply"],
        params["anchor"],
        params["shape"],
        strict=True,
    ):
        if not fire:
            assert np.array_equal(out, image) and np.array_equal(out_mask, mask)
            continue
        h, w = image.shape[:2]
        holes = []
        for (y0, x0), (hh, ww) in zip(anchor.reshape(-1, 2), shape.reshape(-1, 2), strict=True):
            if hh == 0 and ww == 0 and y0 == 0 and x0 == 0:
                continue  # past the drawn count (or an empty hole at the corner)
            assert int(h * 0.05) <= hh <= int(h * 0.3) and int(w * 0.1) <= ww <= int(w * 0.25)
            assert 0 <= y0 <= h - hh and 0 <= x0 <= w - ww
            holes.append([x0, y0, x0 + ww, y0 + hh])
        counts.append(len(holes))
        holes_array = np.array(holes, dtype=np.int64).reshape(-1, 4)
        assert np.array_equal(out, transform.apply(image, holes=holes_array, seed=0))
        expected_mask = transform.apply_to_mask(mask, holes=holes_array, seed=0)
        assert np.array_equal(out_mask, expected_mask)
    assert min(counts) <= 2 and max(counts) == 4 and len(counts) < 3 * len(photos)


def test_coarse_dropout_ignore_needs_a_k_class_dataset(shapes):
    with pytest.raises(ConfigError, match=r"CoarseDropout: mask='ignore' needs a K-class"):
        create_loader(
            shapes,
            "train",
            recipe(R.CoarseDropout(mask="ignore"), R.Resize(size=SIZE)),
            4,
            train=True,
        )


# ---------------------------------------------------------------- ElasticTransform


def test_elastic_transform_is_refused_in_cpu_mode_in_one_line(shapes):
    op = R.ElasticTransform(alpha=25.6, sigma=2.56, p=0.5)
    with pytest.raises(ConfigError) as error:
        create_loader(shapes, "train", recipe(R.RandomCrop(size=SIZE), op), 4, train=True)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("the dali loader cannot run ElasticTransform(")
    assert "runs only on a GPU" in message
    assert "use device='cuda' on a CUDA machine, or loader='albumentations'" in message
    with given_as(COMMAND_LINE), pytest.raises(ConfigError) as error:  # segkit run: the flags
        create_loader(shapes, "train", recipe(R.RandomCrop(size=SIZE), op), 4, train=True)
    assert str(error.value).endswith(
        "use --device cuda on a CUDA machine, or --loader albumentations"
    )


@pytest.mark.parametrize("shape", [(37, 52), (64, 64)])
def test_elastic_field_is_albumentations_field_for_the_same_generator(shape):
    """The maps the GPU graph remaps with are albumentations 2.0.8's, bit for bit, for a
    transform seeded with the sample's seed."""
    alpha, sigma = 30.0, 3.0
    transform = A.ElasticTransform(alpha=alpha, sigma=sigma)
    for seed in (0, 12345):
        transform.set_random_seed(seed)
        expected = transform.get_params_dependent_on_data({"shape": (*shape, 3)}, {})
        maps = elastic_maps(shape, alpha, sigma, seed, "constant")
        assert maps.dtype == np.float32 and maps.shape == (*shape, 2)
        assert np.array_equal(maps[..., 0], expected["map_x"])
        assert np.array_equal(maps[..., 1], expected["map_y"])


@pytest.mark.parametrize(
    "border, cv2_border",
    [("replicate", cv2.BORDER_REPLICATE), ("reflect_101", cv2.BORDER_REFLECT_101)],
)
def test_border_coordinates_give_opencvs_border(photos, border, cv2_border):
    """DALI's remap knows only a zero border: moving the coordinates inside gives
    OpenCV's replicated / reflected border, for bilinear and nearest sampling."""
    image = photos[0]
    h, w = image.shape[:2]
    rng = np.random.default_rng(3)
    map_x = (np.arange(w)[None, :] + rng.normal(0, 9, (h, w))).astype(np.float32)
    map_y = (np.arange(h)[:, None] + rng.normal(0, 9, (h, w))).astype(np.float32)
    inside_x = border_coordinates(map_x, w, border)
    inside_y = border_coordinates(map_y, h, border)
    assert inside_x.min() >= 0 and inside_x.max() <= w - 1
    for interpolation in (cv2.INTER_LINEAR, cv2.INTER_NEAREST):
        expected = cv2.remap(image, map_x, map_y, interpolation, borderMode=cv2_border)
        moved = cv2.remap(image, inside_x, inside_y, interpolation, borderMode=cv2.BORDER_CONSTANT)
        diff = np.abs(moved.astype(int) - expected)
        # OpenCV quantizes coordinates to 1/32 px, so a fold can land a tie on the other
        # side: a level off (bilinear) or the neighbouring pixel (nearest), rarely (docs:
        # 4 and 3 of 3.7 M values on 8 photos).
        assert (diff > 0).mean() < 1e-3, (interpolation, (diff > 0).mean())
        assert interpolation == cv2.INTER_NEAREST or diff.max() <= 1


def test_the_fill_arithmetic_around_a_zero_border_remap(photos, class_maps):
    """remap(mask ^ f) ^ f with a zero border is the remap with border f (nearest
    neighbour), and remap(image - f) + f, in float, the bilinear one with border f:
    the identities the GPU graph uses, checked with cv2.remap."""
    image, mask = photos[2], class_maps[2]
    h, w = image.shape[:2]
    maps = elastic_maps((h, w), 60.0, 3.0, 7, "constant")
    map_x, map_y = maps[..., 0], maps[..., 1]
    remap = cv2.remap
    key = IGNORE_INDEX
    via_xor = remap(mask ^ key, map_x, map_y, cv2.INTER_NEAREST, borderValue=0) ^ key
    direct = remap(mask, map_x, map_y, cv2.INTER_NEAREST, borderValue=key)
    assert np.array_equal(via_xor, direct) and (direct == key).sum() > (mask == key).sum()
    fill = 90.0
    shifted = remap(image.astype(np.float32) - fill, map_x, map_y, cv2.INTER_LINEAR, borderValue=0)
    via_shift = np.clip(np.rint(shifted + fill), 0, 255)
    expected = remap(image, map_x, map_y, cv2.INTER_LINEAR, borderValue=(fill,) * 3)
    assert np.abs(via_shift - expected).max() <= 1


def test_elastic_fields_depend_only_on_seed_epoch_and_index():
    """A PerBatch column: fields made batch by batch, the same whatever the batching."""
    (op,) = compile_ops([R.ElasticTransform(alpha=20.0, sigma=2.0, p=0.5)], gpu=True)
    shapes = np.array([[20 + i, 30 - i] for i in range(7)])
    order = np.array([3, 0, 6, 1, 5, 2, 4])
    fire, maps = draw_params([op], 5, 2, 7, order, shapes[order])
    assert isinstance(maps, PerBatch) and len(maps) == 7
    one = maps[0:7]
    two = maps[0:3] + maps[3:7]
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))
    again = draw_params([op], 5, 2, 7, np.arange(7), shapes)[1][0:7]  # other order
    for row, i in enumerate(order):
        if fire[row]:
            assert one[row].shape == (*shapes[i], 2)
            assert np.array_equal(one[row], again[i])
    assert 0 < fire.sum() < 7
    other_epoch = draw_params([op], 5, 3, 7, order, shapes[order])[1][0:7]
    assert not all(np.array_equal(a, b) for a, b in zip(one, other_epoch, strict=True))


def test_elastic_gpu_graph_is_well_formed():
    """The GPU graph cannot run here, but DALI checks each operator's arguments when the
    graph is defined: define it (constant fill, reflected border, p < 1)."""
    from nvidia.dali import fn, pipeline_def

    ops = compile_ops(
        [
            R.ElasticTransform(alpha=30.0, sigma=3.0, fill=10.0, p=0.5),
            R.ElasticTransform(alpha=30.0, sigma=3.0, border_mode="reflect", p=1.0),
        ],
        multiclass=True,
        gpu=True,
    )
    n = 2
    columns = draw_params(ops, 0, 0, n, np.arange(n), np.array([[20, 30]] * n))

    @pipeline_def(batch_size=n, num_threads=1, device_id=0, enable_conditionals=True)
    def pipe():
        image, mask, *nodes = fn.external_source(
            source=lambda: [[np.zeros((20, 30, 3), np.uint8)] * n] * 2 + columns,
            num_outputs=2 + len(columns),
            batch=True,
        )
        image, mask = image.gpu(), mask.gpu()
        params = iter(nodes)
        for op in ops:
            image, mask = op.build(image, mask, {p.name: next(params) for p in op.params})
        return image, mask

    pipe()._build_graph()  # the Python half of build(): no CUDA needed


# ---------------------------------------------------------------- pairing, loaders


def _pairing(images: torch.Tensor, masks: torch.Tensor, multiclass: bool) -> float:
    """The worst agreement, over images with both classes, between the mask's object and
    the image thresholded midway (the L shapes are bright on dark); ignored pixels are
    not scored."""
    gray = unnormalize(images).mean(1)
    labels = masks.long() if multiclass else masks[:, 0].long()
    worst = 1.0
    for g, m in zip(gray, labels, strict=True):
        scored = m != IGNORE_INDEX
        inside = (m > 0) & scored
        outside = (m == 0) & scored
        if min(int(inside.sum()), int(outside.sum())) < 20:
            continue
        threshold = (g[inside].mean() + g[outside].mean()) / 2
        worst = min(worst, float(((g > threshold) == inside)[scored].float().mean()))
    return worst


PAIRING_OPS = {
    "VerticalFlip": (R.VerticalFlip(p=0.5), R.Resize(size=SIZE)),
    "RandomRotate90": (R.RandomRotate90(p=1.0), R.Resize(size=SIZE)),
    "Affine-constant": (
        _affine((0.8, 1.2), (-30.0, 30.0), (-0.1, 0.1), "constant"),
        R.Resize(size=SIZE),
    ),
    "Affine-replicate": (
        _affine((0.8, 1.2), (-30.0, 30.0), (-0.1, 0.1), "replicate"),
        R.Resize(size=SIZE),
    ),
    "Affine-reflect": (
        _affine((0.8, 1.2), (-30.0, 30.0), (-0.1, 0.1), "reflect"),
        R.Resize(size=SIZE),
    ),
    "RandomCrop": (R.RandomCrop(size=96),),
    "PadIfNeeded-reflect": (
        R.PadIfNeeded(size=176, border_mode="reflect"),
        R.RandomCrop(size=SIZE),
    ),
    "PadIfNeeded-constant": (R.PadIfNeeded(size=None, divisor=64), R.Resize(size=SIZE)),
}


@pytest.mark.parametrize("loader", ["dali", "albumentations"])
@pytest.mark.parametrize("name", list(PAIRING_OPS))
def test_image_and_mask_stay_paired_through_each_geometric_op(shapes, shapes_classes, loader, name):
    """Both loaders, binary and K-class L shapes, one epoch each: masks hold only the
    dataset's values (0/1; class indices and the ignore index), and the mask still
    covers the bright L in the image."""
    from segkit import registry

    ops = recipe(*PAIRING_OPS[name])
    for dataset, multiclass in ((shapes, False), (shapes_classes, True)):
        made = registry.create(
            "loaders", loader, dataset, "train", ops, 5, train=True, seed=1, num_workers=0
        )
        images, masks = collect(made)
        values = set(masks.unique().tolist())
        if multiclass:
            assert masks.dtype == torch.uint8 and values <= {0, 1, 2, IGNORE_INDEX}, values
        else:
            assert values == {0.0, 1.0}, values
        worst = _pairing(images, masks, multiclass)
        print(f"{name} {loader} {'K-class' if multiclass else 'binary'}: worst {worst:.4f}")
        # The kit's bound: albumentations' nearest-neighbour resize of the mask sits up to
        # half a pixel off (test_dali_loader.py), costing a few % at 64 px; a mask that
        # did not move with its image agrees on about 70 %.
        assert worst > 0.95, f"{loader}, {'K-class' if multiclass else 'binary'}: {worst:.3f}"


def test_filled_pixels_are_ignored_in_k_class_masks(shapes_classes):
    """Rotated-in pixels: the image gets the fill, the class map the ignore index, on
    both loaders alike (a degenerate draw: the same picture from both)."""
    from segkit import registry

    ops = recipe(
        _affine((0.8, 0.8), (30.0, 30.0), (0.0, 0.0), "constant", fill=128.0),
        R.Resize(size=SIZE),
    )
    ignored = {}
    for loader in ("dali", "albumentations"):
        made = registry.create(
            "loaders", loader, shapes_classes, "train", ops, 5, train=True, num_workers=0
        )
        images, masks = collect(made)
        filled = (unnormalize(images) == 128).all(1)
        assert filled[:, :3, :3].all() and filled[:, -3:, -3:].all(), loader  # corners
        assert (masks[filled] == IGNORE_INDEX).float().mean() >= 0.99, loader
        # Besides the fill: the dataset's own 8 x 8 ignored corner, and the edge of the
        # fill, where the bilinear image blends with the L or its background.
        ignored[loader] = masks == IGNORE_INDEX
        assert (ignored[loader] & ~filled).sum() < 0.1 * ignored[loader].sum(), loader
    agree = (ignored["dali"] == ignored["albumentations"]).float().mean()
    assert agree >= 0.97, f"the loaders' ignored pixels agree on {agree:.3f}"


# ------------------------------------------------------------------ graph order


def test_channel_shuffle_moves_past_the_geometric_ops_with_identical_output(
    tiny_pets_dataset, monkeypatch
):
    import segkit_dali._graph as ops_module

    ops = (
        R.ChannelShuffle(p=1.0),
        R.VerticalFlip(p=0.5),
        R.RandomRotate90(p=1.0),
        _affine((0.9, 1.1), (-15.0, 15.0), (-0.05, 0.05), "reflect", p=0.5),
        R.PadIfNeeded(size=300, border_mode="replicate"),
        R.RandomCrop(size=96),
        R.CoarseDropout(fill=60.0, p=0.5),
        R.Resize(size=SIZE),
    )
    compiled = compile_ops(recipe(*ops).train)
    assert ops_module.graph_order(compiled) == [1, 2, 3, 4, 5, 6, 7, 0, 8]
    late = collect(
        create_loader(tiny_pets_dataset, "train", recipe(*ops), 7, train=True, num_workers=2)
    )
    monkeypatch.setattr(ops_module, "graph_order", lambda c: list(range(len(c))))
    in_order = collect(
        create_loader(tiny_pets_dataset, "train", recipe(*ops), 7, train=True, num_workers=2)
    )
    assert torch.equal(late[0], in_order[0]) and torch.equal(late[1], in_order[1])


def test_an_evaluation_resize_with_no_size_changing_op_before_it_has_no_branch() -> None:
    """Evaluation pipelines (``resample_all``) with a Resize and no op before it that may
    change a size need no per-sample skip, so their graphs need no DALI conditionals (no
    AutoGraph); after a crop, a pad or a 90-degree rotation, and in training, Resize keeps
    its same-size skip."""

    def resize_params(*ops: R.Op, evaluation: bool = True) -> tuple[str, ...]:
        compiled = compile_ops([*ops, R.Normalize()], resample_all=evaluation)
        (resize,) = [c for c in compiled if type(c).__name__ == "Resize"]
        return tuple(p.name for p in resize.params)

    assert resize_params(R.Resize(size=SIZE)) == ()
    assert resize_params(R.HorizontalFlip(p=0.5), R.RandomGamma(p=0.5), R.Resize(size=SIZE)) == ()
    assert resize_params(R.RandomCrop(size=SIZE), R.Resize(size=SIZE)) == ("apply",)
    assert resize_params(R.RandomRotate90(p=0.5), R.Resize(size=SIZE)) == ("apply",)
    assert resize_params(R.Resize(size=SIZE, p=0.5)) == ("apply",)  # a random one keeps it
    assert resize_params(R.Resize(size=SIZE), evaluation=False) == ("apply",)  # training


@pytest.mark.parametrize("antialias", [False, True])
def test_resampling_every_sample_keeps_a_same_size_image_as_it_is(photos, antialias) -> None:
    """What lets Resize drop its skip: a same-size resample is the identity, bit for bit
    (linear for the image, nearest for the mask), so images already at the size come out
    as albumentations leaves them (it skips them)."""
    from nvidia.dali import fn, pipeline_def

    from segkit_dali._geometry import resize_both

    images = [np.ascontiguousarray(p[:SIZE, :SIZE]) for p in photos if min(p.shape[:2]) >= SIZE]
    masks = [(im[..., :1] > 127).astype(np.uint8) for im in images]
    assert images

    @pipeline_def(batch_size=len(images), num_threads=1, device_id=None)
    def pipe():
        image, mask = fn.external_source(
            source=lambda: [images, masks], num_outputs=2, batch=True, layout=["HWC", "HWC"]
        )
        return resize_both(image, mask, [SIZE, SIZE], antialias)

    pipeline = pipe()
    pipeline.build()
    out, out_masks = pipeline.run()
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        assert np.array_equal(np.array(out[i]), image)
        assert np.array_equal(np.array(out_masks[i]), mask)
