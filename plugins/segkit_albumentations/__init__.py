"""The ``albumentations`` loader: recipes compiled to albumentations, run in torch
DataLoader workers on the CPU.

The plugin's parts: this module, the loader (entry point ``segkit.loaders``:
``albumentations``); :mod:`segkit_albumentations._compile`, the table that compiles each
recipe op (:func:`compile_ops`); :mod:`segkit_albumentations.compose`, the recipe op it
adds, :class:`AlbumentationsCompose` (entry point ``segkit.ops``), which runs any
albumentations pipeline.

Determinism: every sample's augmentation is seeded from ``(seed, epoch, index)``
(:func:`segkit.data.sampling.sample_seed`), so the batches of an epoch do not depend on the
number of workers, and the shuffle order is :func:`segkit.data.sampling.epoch_order`'s. Call
``set_epoch`` before each epoch.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch

# albumentations asks the package index for a newer version when it is imported (in each
# DataLoader worker that imports it too) unless this is set; the environment is inherited
# by the workers. A value the user set wins.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from segkit import recipes as R
from segkit.config import given, given_as
from segkit.contracts import Batch, Dataset, Sample
from segkit.data.reading import read_sample
from segkit.data.sampling import check_loader_args, epoch_order, per_rank, sample_seed
from segkit.errors import ConfigError, DataError
from segkit.system.lifeline import mark_parent, recorded_parent, tie_to_parent
from segkit.system.main_guard import exit_if_reimporting_main, main_guard_error
from segkit_albumentations._compile import compile_ops
from segkit_albumentations.compose import AlbumentationsCompose

__all__ = ["AlbumentationsCompose", "AlbumentationsLoader", "compile_ops", "create_loader"]


class _ReadFailure:
    """A sample a worker could not read, carried to the main process as data.

    Raised inside a worker, a :class:`DataError` reaches the main process re-built by
    torch as "Caught DataError in DataLoader worker process 0. Original Traceback ...",
    which would put a worker traceback in front of a user whose JPEG is corrupt. The worker
    returns this instead and the main process raises the original one-line error, of its
    own type (pickled whole: a :class:`~segkit.errors.MaskValuesError` keeps its values).
    """

    def __init__(self, error: DataError | ConfigError) -> None:
        self.error = error


class _Collate:
    """Stacks a batch; a sample that failed to read is passed on, and images of several
    sizes (a recipe without an op that sizes them all alike) become a one-line error
    naming the recipe, instead of torch's "stack expects each tensor to be equal size".

    It runs in the DataLoader's workers, new processes (a fork server's children) that
    start with segkit's default way of naming settings, Python's keywords: it carries how
    the loader's caller gave them (``origin``, :func:`segkit.config.given`), so that the
    error names ``--batch-size`` under ``segkit run`` and ``batch_size`` from Python."""

    def __init__(self, recipe: str, stage: str, origin: str) -> None:
        self.recipe, self.stage, self.origin = recipe, stage, origin

    def __call__(self, items: list[Any]) -> Any:
        for item in items:
            if isinstance(item, _ReadFailure):
                return item
        sizes = list(dict.fromkeys(tuple(image.shape[-2:]) for image, _ in items))
        if len(sizes) > 1:
            with given_as(self.origin):
                return _ReadFailure(R.unsized_batch_error(self.recipe, self.stage, sizes))
        return torch.utils.data.default_collate(items)


class _SampleSet(torch.utils.data.Dataset):
    """Reads and augments one sample; the index comes paired with its augmentation seed.
    A read error names settings as the loader's caller gave them (``origin``, carried to
    the workers as :class:`_Collate` carries it)."""

    def __init__(
        self, samples: list[Sample], dataset: Dataset, ops: Sequence[R.Op], origin: str
    ) -> None:
        self.samples = samples
        self.spec = dataset.mask_spec
        self.transform = compile_ops(ops, multiclass=self.spec.is_multiclass)
        self.origin = origin

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(
        self, item: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor] | _ReadFailure:
        index, seed = item
        try:
            with given_as(self.origin):
                image, mask = read_sample(self.samples[index], self.spec)
        except DataError as e:
            return _ReadFailure(e.with_traceback(None))
        self.transform.set_random_seed(seed)
        out = self.transform(image=image, mask=mask)
        img = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        msk = torch.from_numpy(np.ascontiguousarray(out["mask"]))
        if not self.spec.is_multiclass:  # binary: float (1, H, W); else the uint8 class map
            msk = msk[None].float()
        return img.float(), msk


class _EpochSampler(torch.utils.data.Sampler):
    """Yields ``(index, augmentation_seed)`` for this shard, in the epoch order every loader
    follows (:func:`segkit.data.sampling.epoch_order`)."""

    def __init__(self, n: int, shuffle: bool, seed: int, shard: tuple[int, int]) -> None:
        self.n, self.shuffle, self.seed, self.shard = n, shuffle, seed, shard
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = epoch_order(
            self.n, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch, shard=self.shard
        )
        for i in order:
            yield i, sample_seed(self.seed, self.epoch, i)

    def __len__(self) -> int:
        return per_rank(self.n, self.shard[1])


def _worker_init(_: int) -> None:
    # A worker dies with the fork server that forked it, and the fork server with the
    # training process (segkit.system.lifeline): a run killed with SIGKILL leaves no worker.
    tie_to_parent(recorded_parent())
    # Each worker decodes and augments one sample at a time: OpenCV's and torch's own
    # thread pools would only oversubscribe the cores the workers already use.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _worker_context() -> Any:
    """Workers start from a fork server, not by forking the training process.

    Forking a process that runs threads (DALI pipelines, OpenMP pools, tqdm's monitor)
    can leave a worker holding a lock that no thread will release; we saw DataLoader
    workers and the main process wait on each other forever after DALI had run in the
    same process. The fork server is a clean single-threaded process that imports torch
    and albumentations once, so each worker still starts in well under a second. Its
    first preload ties it to this process (:mod:`segkit.system.lifeline`), so that it and its
    workers die with the run, however the run dies.
    """
    if "forkserver" not in mp.get_all_start_methods():  # Windows, some macOS setups
        return None
    ctx = mp.get_context("forkserver")
    mark_parent()
    ctx.set_forkserver_preload(
        ["segkit.system._lifeline_preload", "torch", "albumentations", "segkit_albumentations"]
    )
    return ctx


class AlbumentationsLoader:
    """An epoch of :class:`~segkit.contracts.Batch` from a torch DataLoader.

    ``num_workers`` worker processes decode and augment; 0 reads in this process.
    """

    def __init__(
        self,
        dataset: Dataset,
        split: str,
        recipe: R.Recipe,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        num_workers: int = 0,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
        drop_last: bool = False,
    ) -> None:
        check_loader_args(batch_size, shard, num_workers)
        if num_workers > 0:  # in a worker importing a script without the main guard: leave
            exit_if_reimporting_main()
        self.samples = dataset.samples(split)
        self.split = split
        self.sampler = _EpochSampler(len(self.samples), shuffle=train, seed=seed, shard=shard)
        pin = torch.device(device).type == "cuda"
        self._loader = torch.utils.data.DataLoader(
            _SampleSet(self.samples, dataset, recipe.ops(train), given()),
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=pin,
            drop_last=drop_last,
            collate_fn=_Collate(recipe.name, "train" if train else "eval", given()),
            persistent_workers=num_workers > 0,
            worker_init_fn=_worker_init if num_workers > 0 else None,
            multiprocessing_context=_worker_context() if num_workers > 0 else None,
            prefetch_factor=4 if num_workers > 0 else None,
        )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = epoch

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[Batch]:
        batches = self._batches()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except RuntimeError:  # "DataLoader worker (pid(s) ...) exited unexpectedly"
                error = main_guard_error(self._worker_exitcodes(), "the albumentations loader")
                if error is None:
                    raise
                raise error from None
            if isinstance(batch, _ReadFailure):
                raise batch.error
            images, masks = batch
            yield Batch(images, masks)

    def _batches(self) -> Iterator[Any]:
        yield from self._loader

    def _worker_exitcodes(self) -> list[int | None]:
        # The persistent workers of torch's iterator (private attributes: an older or newer
        # torch without them leaves the DataLoader's own error).
        workers = getattr(getattr(self._loader, "_iterator", None), "_workers", None) or []
        return [getattr(w, "exitcode", None) for w in workers]


#: The ``albumentations`` loader factory (contract: :class:`segkit.contracts.LoaderFactory`):
#: the class itself, so its signature is the one the registry checks options against.
create_loader = AlbumentationsLoader
