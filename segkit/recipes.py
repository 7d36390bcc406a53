"""The augmentation vocabulary: backend-neutral ops and recipes built from them.

A recipe is data. Each op below is a frozen dataclass holding its parameters and the
probability ``p`` with which it fires; a loader compiles the ops into its own backend
(albumentations on CPU workers, a DALI graph on the GPU) and raises
:class:`segkit.errors.ConfigError` naming any op it cannot do.

Rules every backend follows:

* Geometric ops (``geometric = True``) move image and mask together with one random
  draw; masks are resampled with nearest neighbour and stay exactly 0/1.
* Photometric ops touch the image only.
* Ops run in the order given. Parameters follow albumentations' conventions (the lab
  this toolkit reproduces was written with it), e.g. ``RandomGamma(gamma_limit=(80, 120))``
  means gamma in [0.8, 1.2].
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Op:
    """Base of every op. ``p`` is the probability that the op is applied to a sample."""

    p: float = 1.0
    geometric: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            from segkit.errors import ConfigError

            raise ConfigError(f"{type(self).__name__}: p={self.p} is not in [0, 1]")

    def params(self) -> dict[str, Any]:
        """The op's parameters as a plain dict (for configs and reports)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class HorizontalFlip(Op):
    """Mirror left-right."""

    p: float = 0.5
    geometric: ClassVar[bool] = True


@dataclass(frozen=True)
class Resize(Op):
    """Resize to ``size`` x ``size`` (bilinear for images, nearest for masks)."""

    size: int = 256
    geometric: ClassVar[bool] = True


@dataclass(frozen=True)
class RandomResizedCrop(Op):
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio`` (log-uniform),
    then resize to ``size`` x ``size``."""

    size: int = 256
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    geometric: ClassVar[bool] = True


@dataclass(frozen=True)
class RandomGamma(Op):
    """``out = 255 * (in / 255) ** gamma`` with gamma uniform in ``gamma_limit / 100``."""

    gamma_limit: tuple[float, float] = (80, 120)


@dataclass(frozen=True)
class CLAHE(Op):
    """Contrast-limited adaptive histogram equalization on the luminance channel, with a
    clip limit uniform in ``clip_limit`` and a ``tile_grid_size`` grid of tiles."""

    clip_limit: tuple[float, float] = (1.0, 4.0)
    tile_grid_size: tuple[int, int] = (8, 8)


@dataclass(frozen=True)
class ChannelShuffle(Op):
    """Randomly permute the RGB channels."""


@dataclass(frozen=True)
class RandomBrightnessContrast(Op):
    """``out = alpha * in + beta * max_value`` with alpha = 1 + U(contrast_limit) and
    beta = U(brightness_limit)."""

    brightness_limit: tuple[float, float] = (-0.2, 0.2)
    contrast_limit: tuple[float, float] = (-0.2, 0.2)


@dataclass(frozen=True)
class RandomToneCurve(Op):
    """Apply a random S-shaped Bezier tone curve whose control points move by N(0, scale)."""

    scale: float = 0.1


@dataclass(frozen=True)
class Normalize(Op):
    """``(in / 255 - mean) / std`` per channel; output float32."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


#: Every op a loader must know, by class name.
VOCABULARY: dict[str, type[Op]] = {
    cls.__name__: cls
    for cls in (
        HorizontalFlip,
        Resize,
        RandomResizedCrop,
        RandomGamma,
        CLAHE,
        ChannelShuffle,
        RandomBrightnessContrast,
        RandomToneCurve,
        Normalize,
    )
}


@dataclass(frozen=True)
class Recipe:
    """A named pair of op lists: ``train`` for training, ``eval`` for validation and test.

    Both must end with :class:`Normalize` and contain a resize to the final size, so
    every batch has one shape. Without ``eval``, evaluation resizes to the training size
    and applies the training ``Normalize``.
    """

    name: str
    train: tuple[Op, ...]
    eval: tuple[Op, ...] = field(default=())

    def __post_init__(self) -> None:
        from segkit.errors import ConfigError

        if not self.eval and self.train:
            # No eval ops given: resize to the training output size, normalize the same way.
            sizes = [op.size for op in self.train if isinstance(op, Resize | RandomResizedCrop)]
            if sizes and isinstance(self.train[-1], Normalize):
                object.__setattr__(self, "eval", (Resize(size=sizes[-1]), self.train[-1]))
        for stage in ("train", "eval"):
            ops = getattr(self, stage)
            for op in ops:
                if not isinstance(op, Op):
                    raise ConfigError(
                        f"recipe '{self.name}': {stage} holds {op!r}, which is not a "
                        f"segkit.recipes op; use one of {', '.join(VOCABULARY)}"
                    )
            if not ops or not isinstance(ops[-1], Normalize):
                raise ConfigError(f"recipe '{self.name}': {stage} ops must end with Normalize")

    def ops(self, train: bool) -> tuple[Op, ...]:
        """The ops for training (``train=True``) or evaluation."""
        return self.train if train else self.eval

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, used in run configs."""
        return {
            "name": self.name,
            **{
                stage: [
                    {"op": type(op).__name__, **op.params()} for op in self.ops(stage == "train")
                ]
                for stage in ("train", "eval")
            },
        }


def eval_ops(image_size: int) -> tuple[Op, ...]:
    """The evaluation pipeline every built-in recipe uses: resize, then normalize."""
    return (Resize(size=image_size), Normalize())
