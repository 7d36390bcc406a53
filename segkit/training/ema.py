"""An exponential moving average (EMA) of the weights (``--ema DECAY``).

The average is torch's :class:`~torch.optim.swa_utils.AveragedModel` with
:func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`: after every optimizer step each
averaged tensor becomes ``decay * ema + (1 - decay) * weights`` (one foreach ``lerp`` per
dtype, on the device). It starts from the weights it is created from (the initial
weights, or the restored ones on resume), so after the first step it is
``decay * w0 + (1 - decay) * w1``.

``use_buffers=True``: BatchNorm's running statistics are averaged with the weights, so the
averaged model's statistics belong to averaged weights (copying the raw model's buffers,
the default, pairs the EMA weights with statistics of other weights); no
``update_bn`` pass over the data is needed afterwards.

:func:`update` calls the average function itself instead of
``AveragedModel.update_parameters``: that method reads its step counter ``n_averaged``
on the host (``bool(n_averaged == 0)``, and copies it to the device), a host sync per
step on a GPU. Here the counter stays on the device and is only increased; the first
update needs no copy since the average already holds the starting weights.
"""

from __future__ import annotations

import itertools

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def create(model: torch.nn.Module, decay: float) -> AveragedModel:
    """The EMA of ``model`` (a copy of it on the same device, layout included)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model under a DistributedDataParallel and a ``torch.compile`` wrapper."""
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


@torch.no_grad()
def update(ema: AveragedModel, model: torch.nn.Module) -> None:
    """One EMA step towards ``model``'s current weights and buffers; no host sync."""
    assert ema.multi_avg_fn is not None
    for averaged_list, current_list in _groups(ema, unwrap(model)):
        ema.multi_avg_fn(averaged_list, current_list, ema.n_averaged)
    ema.n_averaged += 1


def _groups(ema: AveragedModel, model: torch.nn.Module) -> list[tuple[list, list]]:
    """The (averaged, current) tensor lists of ``ema`` and ``model``, one pair per device
    and dtype (what the foreach average takes). Built once per model and kept on ``ema``:
    the tensors are the same objects every step (loading a state copies into them), so
    the hot path does not walk the modules again."""
    cached = ema.__dict__.get("_segkit_groups")
    if cached is not None and cached[0] is model:
        return cached[1]
    groups: dict[tuple[torch.device, torch.dtype], tuple[list, list]] = {}
    pairs = zip(
        itertools.chain(ema.module.parameters(), ema.module.buffers()),
        itertools.chain(model.parameters(), model.buffers()),
        strict=True,
    )
    for averaged, current in pairs:
        a, c = groups.setdefault((averaged.device, averaged.dtype), ([], []))
        a.append(averaged.detach())
        c.append(current.detach())
    ema.__dict__["_segkit_groups"] = (model, list(groups.values()))
    return ema.__dict__["_segkit_groups"][1]


def reset(ema: AveragedModel, model: torch.nn.Module) -> None:
    """Restart the EMA from ``model``'s current weights (resuming a run saved without
    one)."""
    ema.module.load_state_dict(unwrap(model).state_dict())
    ema.n_averaged.zero_()


def weights(ema_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The averaged model's own ``state_dict`` out of an ``AveragedModel`` state (the same
    tensors): what ``best.pt`` holds when the EMA is on."""
    return {k[len("module.") :]: v for k, v in ema_state.items() if k.startswith("module.")}
