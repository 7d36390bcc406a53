"""The built-in augmentation recipes, as data.

Each entry point is a function ``(image_size=256) -> Recipe``.

* ``type1``, ``type2``, ``type3``: the lab's three, with its albumentations probabilities
  and ranges; evaluation is ``Resize(image_size) + Normalize`` (ImageNet statistics).
* ``microscopy``: cells, membranes, retina vessels, slides: crops at the images' own
  resolution, flips, 90-degree rotations, elastic deformation and noise; evaluation on
  whole images at their own resolution.
* ``natural``: photographs: ``type3`` plus shift-scale-rotate and hue/saturation/value.
"""

from __future__ import annotations

from segkit.recipes import (
    CLAHE,
    Affine,
    ChannelShuffle,
    ElasticTransform,
    GaussNoise,
    HorizontalFlip,
    HueSaturationValue,
    Normalize,
    RandomBrightnessContrast,
    RandomCrop,
    RandomGamma,
    RandomResizedCrop,
    RandomRotate90,
    RandomToneCurve,
    Recipe,
    Resize,
    VerticalFlip,
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


def microscopy(image_size: int = 256) -> Recipe:
    """Native resolution for thin structures: a random ``image_size`` crop of the image as
    it is (smaller images padded), flips both ways, a random multiple of 90 degrees,
    elastic deformation (p=0.5) and light Gaussian noise (p=0.3). Evaluation: whole images
    at their own resolution (``Normalize`` only)."""
    return Recipe(
        "microscopy",
        train=(
            RandomCrop(size=image_size),
            HorizontalFlip(p=0.5),
            VerticalFlip(p=0.5),
            RandomRotate90(p=1.0),
            ElasticTransform(alpha=image_size * 1.2, sigma=image_size * 0.04, p=0.5),
            GaussNoise(std_range=(0.01, 0.05), p=0.3),
            Normalize(),
        ),
        eval=(Normalize(),),
    )


def natural(image_size: int = 256) -> Recipe:
    """Photographs: ``type3`` plus, before its crop, shift-scale-rotate (scale 0.9-1.1,
    rotation up to 15 degrees, shift up to 6.25% per axis, edge pixels repeated, p=0.5) and
    hue/saturation/value shifts (albumentations' defaults, p=0.5) before the channel
    shuffle."""
    ops = list(type3(image_size).train)
    ops.insert(
        1,  # after the flip
        Affine(
            scale=(0.9, 1.1),
            rotate=(-15.0, 15.0),
            translate_percent=(-0.0625, 0.0625),
            border_mode="replicate",
            p=0.5,
        ),
    )
    ops.insert(ops.index(ChannelShuffle(p=0.5)), HueSaturationValue(p=0.5))
    return Recipe("natural", train=tuple(ops), eval=eval_ops(image_size))
