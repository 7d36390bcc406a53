"""The conformance kit: the contract of every plugin kind, as runnable checks.

segkit's own contract tests (``tests/test_models.py``, ``tests/test_losses.py``, ...) are
written with these functions, and a plugin author runs the same ones in their package's
tests::

    # tests/test_conformance.py of segkit-mymodel
    from segkit.testing import check, parametrize_plugins

    @parametrize_plugins("models", distribution="segkit-mymodel", rules=True)
    def test_contract(kind, name, rule):
        check(kind, name, rules=[rule])

or call a checker directly, with a registered name or with the factory itself::

    from segkit.testing import check_model, check_loss
    check_model("mymodel", options={"width": 16})
    check_loss(create_myloss)

Each checker runs a list of named rules (:data:`MODEL_RULES`, :data:`LOSS_RULES`,
:data:`RECIPE_RULES`, :data:`LOADER_RULES`, :data:`DATASET_RULES`: rule name -> what it
demands) and raises :class:`ConformanceError`, an ``AssertionError``, at the first rule
broken. The message names the plugin, its distribution and the rule, e.g.::

    model 'mymodel' (segkit_mymodel 0.1.0) breaks rule 'forward_backward': parameters
    without a gradient: ['aux.weight'] (every parameter must get a finite gradient ...)

Everything runs on the CPU at small sizes (64x64, batch 2), so a plugin's whole contract
is checked in seconds. Recipes and loaders are exercised on a small generated dataset
(:func:`shapes_dataset`): bright L-shaped blobs on a dark background, so the mask can be
read back from the pixels after any augmentation and a geometric op applied to only one
of image and mask shows.

A dataset layout is checked on a folder in its layout that your test writes (a few
images are enough)::

    check_dataset("mylayout", root=write_my_small_folder(tmp_path))

A dataset that can make its own data declares ``generate(root, count=..., seed=...)``
on its factory; :func:`check_dataset` then needs no folder and generates a small set.

What cannot be checked is not: that a model returns logits rather than probabilities,
for one, is up to its author (see :mod:`segkit.contracts`).
"""

from __future__ import annotations

from segkit.testing._pytest import CHECKERS, check, parametrize_plugins, plugin_names
from segkit.testing._rules import ConformanceError
from segkit.testing.datasets import DATASET_RULES, check_dataset
from segkit.testing.loaders import LOADER_RULES, check_loader
from segkit.testing.losses import LOSS_RULES, check_loss
from segkit.testing.models import MODEL_RULES, check_model
from segkit.testing.recipes import RECIPE_RULES, check_recipe
from segkit.testing.shapes import SHAPES_MASK_SPEC as SHAPES_MASK_SPEC  # importable, as before
from segkit.testing.shapes import ShapesDataset, shapes_dataset, write_shapes_dataset

__all__ = [
    "CHECKERS",
    "DATASET_RULES",
    "LOADER_RULES",
    "LOSS_RULES",
    "MODEL_RULES",
    "RECIPE_RULES",
    "ConformanceError",
    "ShapesDataset",
    "check",
    "check_dataset",
    "check_loader",
    "check_loss",
    "check_model",
    "check_recipe",
    "parametrize_plugins",
    "plugin_names",
    "shapes_dataset",
    "write_shapes_dataset",
]
