"""Running out of memory, told apart from other errors, and what it leaves behind.

PyTorch says it in three ways: ``torch.OutOfMemoryError`` (the CUDA caching allocator,
``torch.cuda.OutOfMemoryError`` being the same class), ``MemoryError`` (Python's own
allocations, numpy's) and, from the CPU allocator, a plain ``RuntimeError`` whose message
says ``can't allocate memory``. (On Linux a process that overcommits is often killed by
the kernel instead, which no ``except`` sees.)
"""

from __future__ import annotations

import gc

import torch

#: The exception classes that always mean "out of memory".
OUT_OF_MEMORY: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, MemoryError)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says an allocation failed (see the module docstring)."""
    if isinstance(error, OUT_OF_MEMORY):
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def release(device: torch.device) -> None:
    """Give back what a step that ran out of memory left behind (on a GPU: the tensors
    its traceback held, and the allocator's cache)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
