"""The run configuration: one dataclass, validated once at the edge."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkit.errors import ConfigError

#: Values of ``precision``; ``auto`` is bf16 on GPUs that support it, else fp32.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: Values of ``schedule``: the lab's per-epoch ``ExponentialLR(lr_gamma)``, or a per-step
#: cosine decay from ``lr`` to 0 over the run.
SCHEDULES = ("exponential", "cosine")


@dataclass
class RunConfig:
    """Everything that defines a training run. Written to ``config.json`` in the run folder
    and into every checkpoint.

    Plugin names (``model``, ``loss``, ``augment``, ``loader``, ``dataset``) are entry-point
    names; ``*_options`` are passed to the plugin's factory as keyword arguments.
    ``dataset=None`` means ``oxford_pet`` when ``data`` is given and the embedded
    ``synthetic`` dataset otherwise.
    """

    model: str = "unet"
    model_options: dict[str, Any] = field(default_factory=dict)
    loss: str = "bce_dice"
    loss_options: dict[str, Any] = field(default_factory=dict)
    augment: str = "type3"
    loader: str = "albumentations"
    loader_options: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    lr_gamma: float = 0.99
    schedule: str = "exponential"
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    precision: str = "auto"
    image_size: int = 256
    device: str = "auto"
    seed: int = 0
    num_workers: int | None = None
    channels_last: bool | None = None
    compile: bool = False
    out: str = "runs"
    name: str | None = None
    grid_images: int = 8
    on_nan: str = "stop"
    validate_every: int = 1
    skip_bad_samples: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check values that do not depend on plugins.

        Raises:
            ConfigError: a value is out of range; the message names the option.
        """
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "image_size": self.image_size,
            "validate_every": self.validate_every,
        }
        for key, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    f"--{key.replace('_', '-')} {value!r}: expected a positive integer"
                )
        if not self.lr > 0:
            raise ConfigError(f"--lr {self.lr}: expected a positive learning rate")
        if not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"--lr-gamma {self.lr_gamma}: expected a value in (0, 1]")
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"--schedule {self.schedule!r}: expected one of {', '.join(SCHEDULES)}"
            )
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(
                f"--warmup-epochs {self.warmup_epochs}: expected a value from 0 up to (not "
                f"including) --epochs {self.epochs}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}"
            )
        if self.on_nan not in ("stop", "skip"):
            raise ConfigError(f"--on-nan {self.on_nan!r}: expected stop or skip")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"--num-workers {self.num_workers}: expected 0 or more")

    def resolved_dataset(self) -> str:
        if self.dataset:
            return self.dataset
        return "oxford_pet" if self.data else "synthetic"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known: {sorted(names)}")
        return cls(**d)


def parse_options(items: list[str] | None, flag: str) -> dict[str, Any]:
    """Parse ``key=value`` pairs (values as JSON when they parse, else strings).

    Raises:
        ConfigError: an item without '='.
    """
    import json

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected key=value, e.g. {flag} smooth=1.0")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def data_path(config: RunConfig) -> Path | None:
    return Path(config.data).expanduser() if config.data else None
