"""Evaluation at native resolution: ``--eval-size {auto,native,resize}``.

Which resolution validation and the test score at, and how the model sees each image:

* ``resize``: the recipe's own evaluation ops resize every image (and its mask) to the
  training size; batches of ``--batch-size``, scored on resized masks. The lab's way,
  and what ``auto`` means for a recipe whose eval ops resize (``oxford_pet`` with
  ``type1``-``type3``), so the lab comparison holds.
* ``native``: every image whole at its own size, one per batch, scored on its original
  mask (K-class ignore pixels stay ignored). The eval ops are the recipe's minus its
  sizing ops (:data:`segkit.recipes.SIZING_OPS`). What the model is given depends on how
  it was trained:

  - a recipe that trains at native resolution (its eval ops set no size,
    :attr:`segkit.recipes.Recipe.native_eval`; e.g. ``microscopy``, ``RandomCrop``
    files): the image padded by reflection to the model's ``min_input_multiple`` and
    predicted whole, the logits cropped back (:func:`segkit.inference.tiling.padded_forward`);
    above :data:`WHOLE_MAX_PIXELS` it is predicted in overlapping tiles of the training
    size blended with Gaussian weights (:func:`segkit.inference.tiling.sliding_window`), as
    ``segkit predict --mode tile`` does.
  - a recipe that trains resized: the model sees each image resized to the training size
    (exactly the input its resized evaluation gives it) and its logits are resized back
    to the image's size (bilinear) before they are scored: ``segkit predict --mode
    resize``. This is the fair comparison: the model is asked nothing it was not trained
    for, and it is charged for what resizing loses (thin structures, borders) on the
    masks the user cares about. Feeding it the full-size image instead would change the
    scale of everything it learnt.

* ``auto``: native for a recipe whose eval ops set no size, else resize.

``--eval-size resize`` with a recipe that evaluates natively is refused: its model was
trained on crops at the images' own scale, and a resized image is at a scale it never
saw; a recipe that wants that gives an explicit ``eval`` list with a ``Resize``.

The same functions serve ``segkit run`` (validation each epoch, the final test and its
reports) and ``segkit evaluate``; :class:`segkit.inference.predictor.Predictor` shares the padding,
resizing and tiling code.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import torch

from segkit.config import BlendName, named
from segkit.errors import ConfigError
from segkit.inference.forward import model_logits, resized_forward
from segkit.inference.tiling import Tiling, padded_forward, sliding_window
from segkit.recipes import SIZING_OPS, Recipe
from segkit.system.memory import is_out_of_memory, release

#: A native image with more pixels than this is predicted in tiles, not whole (a 2048 x
#: 2048 image through a UNet peaks at a few GB in fp32).
WHOLE_MAX_PIXELS = 2048 * 2048

#: How an eval batch reaches the model: ``batch`` as the loader made it (resized),
#: ``resize`` to the training size and back, ``whole`` padded to the model's multiple
#: (tiled above :data:`WHOLE_MAX_PIXELS`).
INPUTS = ("batch", "resize", "whole")


def trained_input(native: bool) -> str:
    """How a model sees an image at the image's own size, from how it was trained: the
    one rule that native evaluation (:func:`plan_eval`) and ``segkit predict --mode auto``
    (:meth:`segkit.inference.predictor.Predictor.mode_for`) share.

    Args:
        native: Whether it was trained at the images' own scale (its recipe's eval ops set
            no size, :attr:`segkit.recipes.Recipe.native_eval`: ``RandomCrop`` recipes,
            ``microscopy``).

    Returns:
        ``whole`` for such a model (resizing would change the scale it learnt; tiled above
        :data:`WHOLE_MAX_PIXELS`, :func:`image_mode`), else ``resize``: a model trained on
        images resized to the training size sees each image resized to it, as in training
        (tiles of a photo would show it objects many times larger than it learnt).
    """
    return "whole" if native else "resize"


def image_mode(input: str, height: int, width: int, max_pixels: int = WHOLE_MAX_PIXELS) -> str:
    """What :func:`trained_input` (``resize`` or ``whole``) comes to for one image of
    ``height`` x ``width``: ``resize``, ``whole``, or ``tile`` for a ``whole`` image over
    ``max_pixels`` (a 2048 x 2048 image through a UNet peaks at a few GB in fp32; tiles
    keep memory bounded by the tile batch)."""
    if input == "whole" and height * width > max_pixels:
        return "tile"
    return input


@dataclass(frozen=True)
class EvalPlan:
    """What ``--eval-size`` resolved to for a recipe.

    Attributes:
        eval_size: What was asked (``auto``, ``native``, ``resize``).
        native: Whether images are scored at their own size.
        input: How the model sees an image (:data:`INPUTS`).
        recipe: The recipe whose eval ops the eval loaders use (native on a resizing
            recipe: its eval ops without the sizing ops).
    """

    eval_size: str
    native: bool
    input: str
    recipe: Recipe

    def batch_size(self, configured: int) -> int:
        """Eval batch size: 1 when native (every image its own size), else ``configured``."""
        return 1 if self.native else configured

    def describe(self) -> str:
        """One phrase for logs and ``config.json``."""
        if not self.native:
            return "resized to the training size (the recipe's eval ops)"
        if self.input == "resize":
            return "native: model input resized to the training size, logits resized back"
        return "native: whole images padded to the model's multiple (tiled when very large)"

    def record(self) -> dict[str, Any]:
        return {"eval_size": self.eval_size, "native": self.native, "input": self.input}


def plan_eval(eval_size: str, recipe: Recipe) -> EvalPlan:
    """Resolve ``--eval-size`` for ``recipe`` (see the module docstring).

    Raises:
        ConfigError: ``resize`` with a recipe that evaluates natively, or an unknown value.
    """
    if eval_size not in ("auto", "native", "resize"):
        raise ConfigError(f"{named('eval_size', eval_size)}: expected one of auto, native, resize")
    if trained_input(recipe.native_eval) == "whole":
        if eval_size == "resize":
            raise ConfigError(
                f"{named('eval_size', 'resize', as_typed=True)}: recipe '{recipe.name}' trains "
                "and evaluates at the images' own resolution (its eval ops set no size), so a "
                "resized image is at a scale its model never saw; use "
                f"{named('eval_size', 'native', as_typed=True)} (or auto), or give the recipe "
                "an eval list with a Resize"
            )
        return EvalPlan(eval_size, True, trained_input(True), recipe)
    if eval_size in ("auto", "resize"):
        return EvalPlan(eval_size, False, "batch", recipe)
    ops = tuple(op for op in recipe.eval if not isinstance(op, SIZING_OPS))
    return EvalPlan(eval_size, True, trained_input(False), dataclasses.replace(recipe, eval=ops))


@dataclass(eq=False)
class NativeForward:
    """Logits of one native-size eval batch, as :class:`EvalPlan` says the model sees it.

    Called as ``forward(model, images)`` with a normalized ``(N, 3, H, W)`` batch on the
    model's device (``N`` is 1 for native loaders, but any works); returns float32
    ``(N, C, H, W)`` logits at the batch's own size.

    Attributes:
        input: ``resize`` or ``whole`` (:data:`INPUTS`).
        image_size: The training size (``resize``'s target, ``whole``'s tile side).
        multiple: The model's ``min_input_multiple``.
        precision: The run's precision object (autocast around the model).
        channels_last: Whether the model is NHWC.
        channels: The model's logit channels (the task's), for the tiling; None reads
            them from the model.
        max_pixels: Above this, ``whole`` predicts in tiles of the training size; lowered
            below an image that ran out of memory whole (then tiled, with one line).
        overlap, blend, tile_batch: The tiling's
            (:class:`segkit.inference.tiling.Tiling`).

    Raises:
        ConfigError: another ``input``.
    """

    input: str
    _: KW_ONLY
    image_size: int
    multiple: int = 1
    precision: Any = None
    channels_last: bool = False
    channels: int | None = None
    max_pixels: int = WHOLE_MAX_PIXELS
    overlap: float = 0.25
    blend: BlendName = "gaussian"
    tile_batch: int = 4

    def __post_init__(self) -> None:
        if self.input not in ("resize", "whole"):
            raise ConfigError(f"native input {self.input!r}: expected resize or whole")
        object.__setattr__(self, "multiple", max(1, int(self.multiple)))

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        def run(x: torch.Tensor) -> torch.Tensor:
            return model_logits(model, x, self.precision, self.channels_last)

        images = images.float()
        if self.input == "resize":
            return resized_forward(run, images, self.image_size)
        h, w = images.shape[-2:]
        if image_mode(self.input, h, w, self.max_pixels) == "whole":
            try:
                return padded_forward(run, images, self.multiple)
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
            self.max_pixels = tile_from_now_on(self.max_pixels, h, w, images.device, "evaluated")
        channels = self.channels or _channels(model, run, images)
        tiling = Tiling(self.image_size, self.overlap, self.blend, self.tile_batch)
        out = [
            sliding_window(image.cpu(), run, tiling, channels=channels, device=images.device)
            for image in images
        ]
        return torch.stack([logits.to(images.device) for logits in out])


def tile_from_now_on(bound: int, height: int, width: int, device: torch.device, doing: str) -> int:
    """An image of ``height`` x ``width`` ran out of memory whole on ``device``: give back
    what it left, say in one line that it and every later image as large are ``doing``
    (``predicted``, ``evaluated``) in tiles, and return the lowered ``bound`` (the most
    pixels predicted whole)."""
    release(device)
    print(
        f"segkit: a {width}x{height} image did not fit in memory whole on {device}; it and "
        f"every later image of {height * width} pixels or more are {doing} in tiles",
        file=sys.stderr,
    )
    return min(bound, height * width - 1)


def _channels(model: torch.nn.Module, run: Callable[..., torch.Tensor], images: Any) -> int:
    """The model's output channels (read from its last layer with out_channels, else
    from a forward of a small input)."""
    known = getattr(model, "out_channels", None)
    if isinstance(known, int):
        return known
    multiple = int(getattr(model, "min_input_multiple", 1))
    side = max(multiple, 32 // multiple * multiple or multiple)
    probe = images.new_zeros((1, images.shape[1], side, side))
    return int(run(probe).shape[1])


def forward_for(
    plan: EvalPlan,
    *,
    image_size: int,
    model: torch.nn.Module,
    precision: Any,
    channels_last: bool,
    channels: int | None = None,
) -> NativeForward | None:
    """The :class:`NativeForward` of ``plan`` (None where batches go to the model as the
    loader made them); ``channels``: the task's logit channels."""
    if not plan.native:
        return None
    return NativeForward(
        plan.input,
        image_size=image_size,
        multiple=int(getattr(model, "min_input_multiple", 1)),
        precision=precision,
        channels_last=channels_last,
        channels=channels,
    )
