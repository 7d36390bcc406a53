"""segkit plugins: the Attention U-Net model, the focal + Dice loss, the "light" recipe.

Registered in this package's ``pyproject.toml`` under the entry-point groups
``segkit.models`` (``attention_unet``), ``segkit.losses`` (``focal_dice``) and
``segkit.recipes`` (``light``). segkit imports this module only when one of them is
used.
"""

from __future__ import annotations

from segkit_attention_unet.loss import FocalDiceLoss, create_focal_dice
from segkit_attention_unet.model import AttentionGate, AttentionUNet, create_attention_unet
from segkit_attention_unet.recipe import light

__version__ = "0.1.0"

__all__ = [
    "AttentionGate",
    "AttentionUNet",
    "FocalDiceLoss",
    "create_attention_unet",
    "create_focal_dice",
    "light",
]
