"""Numerical precision as one small object (after Lightning's precision plugins).

:class:`Precision` is fp32: autocast off, plain backward and step. :class:`MixedPrecision`
overrides those for bf16 or fp16 autocast; fp16 adds a ``GradScaler`` because its 5-bit
exponent underflows small gradients. The engine never branches on precision itself.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from segkit.config import PRECISIONS, PrecisionName, named
from segkit.errors import ConfigError


class Precision:
    """Full float32: every method is the plain PyTorch call."""

    name = "fp32"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step the optimizer (fp16 skips a step whose gradients overflowed)."""
        optimizer.step()

    def take_skipped(self) -> int:
        """Steps skipped for overflowing gradients since the last call (fp16 only).

        Counted on the device, so a step never waits for the GPU; reading the count is
        one host sync, meant for the end of an epoch."""
        return 0

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class MixedPrecision(Precision):
    """Autocast to bf16 or fp16 on ``device_type``; fp16 scales the loss."""

    def __init__(self, dtype: torch.dtype, device_type: str) -> None:
        self.dtype = dtype
        self.device_type = device_type
        self.name = "bf16" if dtype == torch.bfloat16 else "fp16"
        self.scaler = torch.amp.GradScaler(device_type) if dtype == torch.float16 else None
        self._skipped: torch.Tensor | None = None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        # The scaler lowers its scale exactly when it skipped a step for inf/NaN grads.
        # Compare the scale tensors on the device: get_scale() would be a host sync per
        # step. (With a fused optimizer, as segkit builds, scaler.step does not sync
        # either: the optimizer reads the inf flag on the device.)
        before = self.scaler._scale
        before = before.clone() if before is not None else None
        self.scaler.step(optimizer)
        self.scaler.update()
        after = self.scaler._scale
        if before is None or after is None:  # scale() never called: nothing was stepped
            return
        if self._skipped is None:
            self._skipped = torch.zeros((), dtype=torch.long, device=after.device)
        # In place, into one tensor for the run: a CUDA graph that captured this step
        # adds into the same memory at every replay, and take_skipped reads it there.
        self._skipped.add_((after < before).long())

    def take_skipped(self) -> int:
        if self._skipped is None:
            return 0
        n = int(self._skipped.item())
        self._skipped.zero_()
        return n

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


def create_precision(name: PrecisionName | str, device: torch.device) -> Precision:
    """Build the precision object for ``name`` on ``device``.

    ``auto`` is bf16 on CUDA GPUs that support it and fp32 elsewhere (bf16 autocast on
    CPU is correct but rarely faster). fp16 needs a CUDA device.

    Raises:
        ConfigError: unknown name, or fp16 / bf16 where the device cannot do it.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"precision '{name}' is not one of {', '.join(PRECISIONS)}")
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            name = "bf16"
        else:
            name = "fp32"
    if name == "fp32":
        return Precision()
    if name == "fp16":
        if device.type != "cuda":
            raise ConfigError(
                f"precision fp16 needs a CUDA device, got '{device}'; use bf16 or fp32 on the CPU"
            )
        return MixedPrecision(torch.float16, "cuda")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"this GPU does not support bf16; use {named('precision', 'fp16', as_typed=True)} "
            f"or {named('precision', 'fp32', as_typed=True)}"
        )
    return MixedPrecision(torch.bfloat16, device.type)
