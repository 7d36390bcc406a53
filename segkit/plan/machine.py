"""The machine the plan is for: device, memory, cores, and how a training step's memory
is measured there.

A memory probe answers two questions for the batch-size search
(:func:`segkit.plan.measure.fit_batch`): how much memory a training step may use
(:meth:`MemoryProbe.limit`) and how much one used (:meth:`MemoryProbe.peak`, which runs
the step). :class:`CudaMemory` reads the CUDA allocator's peak; :class:`HostMemory`
counts what a CPU step holds (weights, gradients, optimizer state, and the tensors
autograd saves for the backward pass). A step that runs out of memory raises
(``torch.cuda.OutOfMemoryError``, ``MemoryError``); the search catches it. Tests replace
the probe with one whose device memory is faked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

#: Share of a GPU's free memory a training step may take: the rest is for the CUDA
#: context, cudnn's workspace (benchmark mode tries algorithms) and fragmentation.
GPU_SHARE = 0.9
#: Share of the host's available memory a CPU step may take: loader workers, the
#: evaluation of native-size images and the other programs need the rest. A default
#: awaiting a measurement.
HOST_SHARE = 0.5


class MemoryProbe(Protocol):
    """Measures a training step's memory on one device."""

    #: Where the memory is, for the plan's text ("GPU", "host").
    where: str

    def limit(self) -> int:
        """Bytes a training step may use."""
        ...

    def peak(self, step: Callable[[], Any], *, batch: int, resident: int) -> int:
        """Run ``step`` once and return the most bytes it held at once.

        Args:
            step: One training step (forward, backward, optimizer step) of ``batch``
                images.
            batch: Its images (a probe that models memory may use it; the real ones
                measure).
            resident: Bytes held before the step (weights, gradients, optimizer state).

        Raises:
            torch.cuda.OutOfMemoryError, MemoryError: the step did not fit.
        """
        ...


class CudaMemory:
    """A CUDA device: the limit is :data:`GPU_SHARE` of the memory free when the plan
    starts; the peak is what the caching allocator reserved during the step (reserved,
    not allocated: fragmentation counts against the device too)."""

    where = "GPU"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        free, _total = torch.cuda.mem_get_info(device)
        self._limit = int(free * GPU_SHARE)

    def limit(self) -> int:
        return self._limit

    def peak(self, step: Callable[[], Any], *, batch: int, resident: int) -> int:
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        step()
        torch.cuda.synchronize(self.device)
        return int(torch.cuda.max_memory_reserved(self.device))


class HostMemory:
    """The CPU: the limit is :data:`HOST_SHARE` of the memory the kernel reports
    available; the peak is ``resident`` plus the bytes of the tensors autograd saved
    during the step (each storage once), which is what a step holds between its forward
    and backward passes (see :mod:`segkit.reports.info`)."""

    where = "host"

    def __init__(self, available: int | None = None) -> None:
        self._limit = int((available if available is not None else host_available()) * HOST_SHARE)

    def limit(self) -> int:
        return self._limit

    def peak(self, step: Callable[[], Any], *, batch: int, resident: int) -> int:
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            saved[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step()
        return resident + sum(saved.values())


def host_available() -> int:
    """Bytes of memory available to new work: ``MemAvailable`` of ``/proc/meminfo``
    (Linux), else the physical memory."""
    available = _mem_available()
    if available is not None:
        return available
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30  # unknown: a small machine's


def _mem_available() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes; ``None`` where there is none (not
    Linux, or a kernel without it)."""
    try:
        with open("/proc/meminfo") as f:
            lines = list(f)
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def memory_probe(device: torch.device) -> MemoryProbe:
    """The probe for ``device``."""
    if device.type == "cuda":
        return CudaMemory(device)
    return HostMemory()


@dataclass(frozen=True)
class Machine:
    """What the plan was made for.

    Attributes:
        device: Where training runs (``cpu``, ``cuda:0``).
        name: The GPU's name, or ``cpu``.
        memory: Bytes a training step may use (the probe's limit).
        memory_where: ``GPU`` or ``host``.
        cores: CPU cores.
        threads: torch's CPU threads for the run.
        load: The 1-minute load average when the plan was made (None where unknown).
    """

    device: str
    name: str
    memory: int
    memory_where: str
    cores: int
    threads: int
    load: float | None

    @property
    def gpu(self) -> bool:
        return self.device.startswith("cuda")

    def describe(self) -> str:
        """One line: device, memory, cores, threads, load."""
        load = f", load {self.load:.1f}" if self.load is not None else ""
        what = self.name if self.gpu else f"cpu, {self.cores} cores ({self.threads} torch threads)"
        return (
            f"{what}{load}; {self.memory / 2**30:.1f} GiB of {self.memory_where} memory free for "
            "a step"
        )


def detect(device: torch.device, probe: MemoryProbe) -> Machine:
    """The :class:`Machine` of ``device`` (the runtime's; its threads already applied)."""
    cuda = device.type == "cuda"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return Machine(
        device=str(device),
        name=torch.cuda.get_device_name(device) if cuda else "cpu",
        memory=probe.limit(),
        memory_where=probe.where,
        cores=os.cpu_count() or 1,
        threads=torch.get_num_threads(),
        load=load,
    )
