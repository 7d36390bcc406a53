"""Augmentation recipes: backend-neutral ops, recipes built from them, recipe files.

A recipe is data: a tuple of ops for training and one for evaluation, each op a frozen
dataclass of parameters. Every loader compiles it into its own backend. The parts:

* :mod:`segkit.recipes.ops`: the vocabulary, segkit's own ops (:data:`VOCABULARY`), which
  every loader compiles, and the :class:`Op` base a plugin's op subclasses;
* :mod:`segkit.recipes.lookup`: ops by name, segkit's and those plugins add (the
  ``segkit.ops`` entry-point group), and an op from its table in a file;
* :mod:`segkit.recipes.recipe`: :class:`Recipe`, the pair of op lists;
* :mod:`segkit.recipes.files`: recipe files (TOML, YAML or JSON).

Everything public is importable from here: ``from segkit.recipes import Recipe, Resize``.
"""

from __future__ import annotations

from segkit.recipes.files import RECIPE_FILE_SUFFIXES, is_recipe_file, load_recipe, read_recipe_file
from segkit.recipes.lookup import known_ops, op_class, op_from_dict, op_plugin, op_to_dict
from segkit.recipes.ops import (
    BORDER_MODES,
    CLAHE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SIZE_FIELDS,
    SIZING_OPS,
    VOCABULARY,
    Affine,
    ChannelShuffle,
    CoarseDropout,
    ElasticTransform,
    GaussianBlur,
    GaussNoise,
    HorizontalFlip,
    HueSaturationValue,
    Normalize,
    Op,
    PadIfNeeded,
    RandomBrightnessContrast,
    RandomCrop,
    RandomGamma,
    RandomResizedCrop,
    RandomRotate90,
    RandomToneCurve,
    Resize,
    VerticalFlip,
    dropout_mask_fill,
    mask_fill,
)
from segkit.recipes.recipe import Recipe, eval_ops, unsized_batch_error

__all__ = [
    "BORDER_MODES",
    "CLAHE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RECIPE_FILE_SUFFIXES",
    "SIZE_FIELDS",
    "SIZING_OPS",
    "VOCABULARY",
    "Affine",
    "ChannelShuffle",
    "CoarseDropout",
    "ElasticTransform",
    "GaussNoise",
    "GaussianBlur",
    "HorizontalFlip",
    "HueSaturationValue",
    "Normalize",
    "Op",
    "PadIfNeeded",
    "RandomBrightnessContrast",
    "RandomCrop",
    "RandomGamma",
    "RandomResizedCrop",
    "RandomRotate90",
    "RandomToneCurve",
    "Recipe",
    "Resize",
    "VerticalFlip",
    "dropout_mask_fill",
    "eval_ops",
    "is_recipe_file",
    "known_ops",
    "load_recipe",
    "mask_fill",
    "op_class",
    "op_from_dict",
    "op_plugin",
    "op_to_dict",
    "read_recipe_file",
    "unsized_batch_error",
]
