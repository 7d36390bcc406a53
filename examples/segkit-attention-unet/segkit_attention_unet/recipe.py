"""``light``: a mild augmentation recipe, built only from segkit.recipes ops (every
segkit loader can run it; no backend code here)."""

from __future__ import annotations

from segkit.recipes import (
    HorizontalFlip,
    Normalize,
    RandomBrightnessContrast,
    RandomResizedCrop,
    Recipe,
    Resize,
    eval_ops,
)


def light(image_size: int = 256) -> Recipe:
    """Flip, a mild random resized crop, a little brightness and contrast; then Resize and
    ImageNet Normalize. Evaluation: Resize + Normalize."""
    return Recipe(
        "light",
        train=(
            HorizontalFlip(p=0.5),
            RandomResizedCrop(size=image_size, scale=(0.6, 1.0), ratio=(0.75, 4 / 3), p=0.5),
            RandomBrightnessContrast(
                brightness_limit=(-0.1, 0.1), contrast_limit=(-0.1, 0.1), p=0.5
            ),
            Resize(size=image_size),
            Normalize(),
        ),
        eval=eval_ops(image_size),
    )
