"""How many loader workers a run gets when none are asked for: :func:`default_workers`.

Here rather than in :mod:`segkit.build` because the data check (:mod:`segkit.data.check`)
reads files with as many threads, and the build path uses the data check (``auto`` loss
weights): both import it from here, so neither imports the other back.
"""

from __future__ import annotations

import os

import torch


def default_workers(device: torch.device | str = "cpu", local_world: int = 1) -> int:
    """Loader workers when none are asked for.

    On a CUDA host the loader feeds a GPU that consumes thousands of images a second: it
    gets every core but two (one for the training loop, one for the rest of the system),
    shared among the processes of this host (``local_world``). On the CPU the model itself
    is the bottleneck and competes with the loader for the same cores: one worker per
    core, up to 8.
    """
    cores = os.cpu_count() or 1
    if torch.device(device).type == "cuda":
        return max(1, (cores - 2) // max(1, local_world))
    return min(8, cores)
