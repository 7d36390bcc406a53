"""ElasticTransform on the DALI loader's GPU graph (``fn.experimental.remap``, GPU only).

Skipped where CUDA is absent (see tests/cuda/test_cuda_path.py); ``make gpu-check`` runs
it. The CPU suite (tests/test_dali_geometry.py) checks what it can without a GPU: the
field is albumentations' own for the same seed, the border and fill arithmetic around a
zero-border remap, the CPU refusal, and that the GPU graph is well formed.

Tolerances (not measured yet: written without a GPU): cv2.remap quantizes source
coordinates to 1/32 px and blends in fixed point, DALI's GPU remap in float, so images
may differ by a level or a few on steep edges: mean under 1 level, 99.9th percentile
within 12 levels (the GPU-vs-CPU bound of test_cuda_path.py). Masks are nearest
neighbour: a coordinate within float rounding of a pixel edge may pick the neighbour,
so 99.5 % of mask pixels must agree, and masks hold only the dataset's values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.slow]

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
from PIL import Image  # noqa: E402

from segkit import recipes as R  # noqa: E402
from segkit import registry  # noqa: E402
from segkit.contracts import IGNORE_INDEX  # noqa: E402
from segkit_dali._graph import compile_ops  # noqa: E402
from segkit_dali._loader import draw_params  # noqa: E402

CV2_BORDER = {
    "constant": cv2.BORDER_CONSTANT,
    "replicate": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT_101,
}


def run_on_gpu(
    op: R.ElasticTransform, images: list[np.ndarray], masks: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """The compiled op alone in a GPU pipeline (K-class masks). Returns the images, the
    masks (HW) and each sample's field seed."""
    from nvidia.dali import fn, pipeline_def

    (compiled,) = compile_ops([op], multiclass=True, gpu=True)
    n = len(images)
    shapes = np.array([im.shape[:2] for im in images])
    columns = draw_params([compiled], 0, 0, n, np.arange(n), shapes)
    maps = columns[-1]

    def feed() -> list[Any]:
        return [images, [m[..., None] for m in masks], *(c[0:n] for c in columns)]

    @pipeline_def(batch_size=n, num_threads=1, device_id=0, enable_conditionals=True)
    def pipe():
        image, mask, *nodes = fn.external_source(
            source=feed,
            num_outputs=2 + len(columns),
            batch=True,
            layout=["HWC", "HWC", *[""] * len(columns)],
        )
        params = {p.name: node for p, node in zip(compiled.params, nodes, strict=True)}
        return compiled.build(image.gpu(), mask.gpu(), params)

    pipeline = pipe()
    pipeline.build()
    out, out_masks = (o.as_cpu() for o in pipeline.run())
    return (
        [np.array(out[i]) for i in range(n)],
        [np.array(out_masks[i])[..., 0] for i in range(n)],
        maps.seeds,
    )


@pytest.fixture(scope="module")
def photos(tiny_pets_dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for sample, (h, w) in zip(
        tiny_pets_dataset.samples("train"), ((96, 128), (80, 80), (64, 100)), strict=False
    ):
        with Image.open(sample.image) as im:
            image = np.asarray(im.convert("RGB"))[:h, :w].copy()
        mask = (image[..., 0] // 86).astype(np.uint8)  # classes 0-2
        mask[:4, :4] = IGNORE_INDEX
        out.append((image, mask))
    return out


@pytest.mark.parametrize(
    "border, fill", [("constant", 0.0), ("constant", 90.0), ("replicate", 0.0), ("reflect", 0.0)]
)
def test_elastic_on_the_gpu_is_cv2_remap_of_the_same_field(photos, border, fill):
    op = R.ElasticTransform(alpha=60.0, sigma=4.0, border_mode=border, fill=fill, p=1.0)
    images = [image for image, _ in photos]
    masks = [mask for _, mask in photos]
    out, out_masks, seeds = run_on_gpu(op, images, masks)
    transform = A.ElasticTransform(
        alpha=op.alpha,
        sigma=op.sigma,
        interpolation=cv2.INTER_LINEAR,
        mask_interpolation=cv2.INTER_NEAREST,
        border_mode=CV2_BORDER[border],
        fill=fill,
        fill_mask=IGNORE_INDEX,
    )
    diffs, mask_agree = [], []
    for image, mask, o, m, seed in zip(images, masks, out, out_masks, seeds, strict=True):
        transform.set_random_seed(int(seed))
        field = transform.get_params_dependent_on_data({"shape": image.shape}, {})
        expected = transform.apply(image, **field)
        expected_mask = transform.apply_to_mask(mask, **field)
        assert o.shape == image.shape and m.shape == mask.shape
        diffs.append(np.abs(o.astype(int) - expected).ravel())
        mask_agree.append((m == expected_mask).ravel())
        assert set(np.unique(m).tolist()) <= {0, 1, 2, IGNORE_INDEX}
    diff = np.concatenate(diffs)
    print(
        f"{border} fill {fill}: mean {diff.mean():.3f}, max {diff.max()}, "
        f"p99.9 {np.percentile(diff, 99.9):.1f}, masks {np.concatenate(mask_agree).mean():.5f}"
    )
    assert diff.mean() < 1.0 and np.percentile(diff, 99.9) <= 12
    assert np.concatenate(mask_agree).mean() >= 0.995


def test_microscopy_runs_on_the_dali_loader_on_a_gpu(shapes):
    """The recipe the CPU mode refuses: batches on the GPU, masks binary and paired,
    the same batches for the same seed and epoch."""
    recipe = registry.create("recipes", "microscopy", image_size=64)

    def epoch() -> tuple[torch.Tensor, torch.Tensor]:
        loader = registry.create(
            "loaders", "dali", shapes, "train", recipe, 5, train=True, seed=3, device="cuda"
        )
        loader.set_epoch(1)
        batches = list(loader)
        return torch.cat([b.images for b in batches]), torch.cat([b.masks for b in batches])

    images, masks = epoch()
    assert images.is_cuda and images.shape == (10, 3, 64, 64)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    again = epoch()
    assert torch.equal(images, again[0]) and torch.equal(masks, again[1])
    gray = images.mean(1).cpu()
    for g, m in zip(gray, masks[:, 0].cpu() == 1, strict=True):
        if min(int(m.sum()), int((~m).sum())) < 20:
            continue
        threshold = (g[m].mean() + g[~m].mean()) / 2
        assert ((g > threshold) == m).float().mean() > 0.95
