"""What the DALI loader tests share (test_dali_loader, test_dali_geometry, test_dali_color):
the 64 px output size, a recipe of given ops, batches gathered over epochs, and batches
turned back into pixel values."""

from __future__ import annotations

import torch

from segkit import recipes as R

SIZE = 64
MEAN = torch.tensor(R.IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(R.IMAGENET_STD).view(1, 3, 1, 1)


def recipe(*ops: R.Op) -> R.Recipe:
    """A recipe whose train ops are ``ops`` + Normalize (eval: Resize + Normalize)."""
    return R.Recipe("test", train=(*ops, R.Normalize()), eval=R.eval_ops(SIZE))


def unnormalize(images: torch.Tensor) -> torch.Tensor:
    """Back to 0..255 values (float), per channel."""
    return (images * STD + MEAN) * 255.0


def pixels(images: torch.Tensor) -> torch.Tensor:
    """Back to 0..255 values, rounded: the ops' outputs are integers."""
    return unnormalize(images).round()


def collect(loader, epochs=(0,)) -> tuple[torch.Tensor, torch.Tensor]:
    """Every batch of ``epochs``, images and masks concatenated."""
    images, masks = [], []
    for epoch in epochs:
        loader.set_epoch(epoch)
        for batch in loader:
            images.append(batch.images)
            masks.append(batch.masks)
    return torch.cat(images), torch.cat(masks)
