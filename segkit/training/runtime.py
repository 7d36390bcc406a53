"""What a run's configuration resolved to on this machine: :class:`Runtime`.

:func:`segkit.build.resolve_runtime` makes it (and ``segkit.build.Runtime`` is this
class); it lives here, beside the precision object and the torchrun world it holds, so
that the training loops take one runtime instead of its device, precision and layout
one by one without importing the build path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from segkit.training.distributed import Dist
from segkit.training.precision import Precision


@dataclass(frozen=True)
class Runtime:
    """What a configuration's ``auto`` and ``None`` values resolved to on this machine.

    Attributes:
        device: Where the model runs (a CUDA device always has its index).
        precision: The precision object (its ``name`` is fp32, bf16 or fp16).
        channels_last: Whether models and batches use the NHWC layout.
        num_workers: Loader workers.
        seed: The run's seed (every rank uses the same: identical initial weights).
        dist: This process's place in a torchrun job.
        threads: torch's CPU threads (``--threads``; :mod:`segkit.system.threads`).
    """

    device: torch.device
    precision: Precision
    channels_last: bool
    num_workers: int = 0
    seed: int = 0
    dist: Dist = field(default_factory=Dist)
    threads: int = 0

    def record(self) -> dict[str, Any]:
        """The resolved values, JSON-ready, as written to ``config.json``."""
        cuda = self.device.type == "cuda"
        return {
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if cuda else "cpu",
            "precision": self.precision.name,
            "channels_last": self.channels_last,
            "num_workers": self.num_workers,
            "seed": self.seed,
            "world_size": self.dist.world,
            "threads": self.threads,
            "torch": torch.__version__,
            "cuda": torch.version.cuda if cuda else None,
        }

    def synchronize(self) -> None:
        """Wait for the device's queued work (CUDA; nothing elsewhere): before a clock
        is read, so that seconds count the work and not its queueing."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
