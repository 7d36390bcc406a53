"""The lab's three augmentation recipes, as data.

Each entry point is a function ``(image_size=256) -> Recipe``. Evaluation always uses
``Resize(image_size) + Normalize`` (ImageNet statistics). The probabilities and ranges
are the lab's albumentations settings.
"""

from __future__ import annotations

from segkit.recipes import (
    CLAHE,
    ChannelShuffle,
    HorizontalFlip,
    Normalize,
    RandomBrightnessContrast,
    RandomGamma,
    RandomResizedCrop,
    RandomToneCurve,
    Recipe,
    Resize,
    eval_ops,
)


def type1(image_size: int = 256) -> Recipe:
    """Flip only: HorizontalFlip(0.5), Resize, Normalize."""
    return Recipe(
        "type1",
        train=(HorizontalFlip(p=0.5), Resize(size=image_size), Normalize()),
        eval=eval_ops(image_size),
    )


def type2(image_size: int = 256) -> Recipe:
    """Heavy photometric: tone curve, gamma, CLAHE (always), channel shuffle, brightness and
    contrast, after a resize and a flip."""
    return Recipe(
        "type2",
        train=(
            Resize(size=image_size),
            HorizontalFlip(p=0.5),
            RandomToneCurve(scale=0.1, p=1.0),
            RandomGamma(gamma_limit=(80, 120), p=0.5),
            CLAHE(clip_limit=(1.0, 4.0), tile_grid_size=(8, 8), p=1.0),
            ChannelShuffle(p=0.5),
            RandomBrightnessContrast(
                brightness_limit=(-0.2, 0.2), contrast_limit=(-0.2, 0.2), p=0.5
            ),
            Normalize(),
        ),
        eval=eval_ops(image_size),
    )


def type3(image_size: int = 256) -> Recipe:
    """The lab's best: flip, gamma, CLAHE, channel shuffle, random resized crop,
    brightness/contrast, each with p=0.5, then Resize and Normalize."""
    return Recipe(
        "type3",
        train=(
            HorizontalFlip(p=0.5),
            RandomGamma(gamma_limit=(80, 120), p=0.5),
            CLAHE(clip_limit=(1.0, 4.0), tile_grid_size=(8, 8), p=0.5),
            ChannelShuffle(p=0.5),
            RandomResizedCrop(size=image_size, scale=(0.08, 1.0), ratio=(0.75, 4 / 3), p=0.5),
            RandomBrightnessContrast(
                brightness_limit=(-0.2, 0.2), contrast_limit=(-0.2, 0.2), p=0.5
            ),
            Resize(size=image_size),
            Normalize(),
        ),
        eval=eval_ops(image_size),
    )
