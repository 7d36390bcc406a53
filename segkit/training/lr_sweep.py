"""``segkit lr-find``: a short exponential learning-rate sweep (the "LR range test").

The run's parts are built by :mod:`segkit.build` exactly as ``segkit run`` builds them
(model, loss, training loader, optimizer, precision, ``--compile``). Then one optimizer
step per batch, with the learning rate growing exponentially from ``start_lr`` to
``end_lr`` over ``steps`` steps (the training loader is cycled if it has fewer batches).
The loss is smoothed exponentially (``beta`` 0.98, bias-corrected) and the sweep stops
early once the smoothed loss exceeds 4x the best so far (it diverged).

The suggestion is the learning rate where the smoothed loss falls fastest (the most
negative slope against log(lr), leaving out the noisy first points and the last ones, see
:func:`suggest`); "min loss lr / 10" is also given. Afterwards the model,
optimizer and precision (GradScaler) states are put back as they were, and nothing is
written except the plot the CLI is asked for: no run folder, no checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit import build
from segkit.config import RunConfig, checked_keywords, with_settings
from segkit.errors import ConfigError
from segkit.system.files import check_writable
from segkit.system.main_guard import exit_if_reimporting_main
from segkit.training.loops import to_device
from segkit.wording import named_as

if TYPE_CHECKING:
    from segkit.build import Runtime, Training

__all__ = ["LRFind", "Sweep", "check_plot_path", "find", "lr_find", "suggest", "write_plot"]

#: Stop when the smoothed loss is above this many times the best one.
DIVERGE = 4.0


@dataclass(frozen=True, repr=False)
class LRFind:
    """The sweep: learning rates, their smoothed losses, the suggested rate, and the plot
    written (None where none was asked for). It unpacks as ``lrs, losses, suggestion``."""

    lrs: list[float]
    losses: list[float]
    suggestion: float
    plot: Path | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.lrs, self.losses, self.suggestion))

    def __repr__(self) -> str:
        """One line: the suggestion, the range swept, the number of points, the plot
        (``lrs`` and ``losses`` hold the lists)."""
        span = f"({self.lrs[0]:.3g}, {self.lrs[-1]:.3g})" if self.lrs else "()"
        return (
            f"LRFind(suggestion={self.suggestion:.3g}, range={span}, "
            f"points={len(self.lrs)}, plot={self.plot!r})"
        )

    @property
    def min_loss_lr(self) -> float:
        """The learning rate of the lowest smoothed loss, divided by 10."""
        best = min(range(len(self.losses)), key=self.losses.__getitem__)
        return self.lrs[best] / 10


@dataclass(frozen=True)
class Sweep:
    """The sweep's settings.

    Attributes:
        start_lr: First learning rate.
        end_lr: Last learning rate (reached at step ``steps``, unless the loss diverges).
        steps: Optimizer steps.
        beta: Exponential smoothing of the loss.
    """

    start_lr: float = 1e-7
    end_lr: float = 1.0
    steps: int = 100
    beta: float = 0.98

    def check(self) -> None:
        """Raises:
        ConfigError: a setting out of range, named with its flag."""

        if not 0 < self.start_lr < self.end_lr:
            raise ConfigError(
                f"lr-find: need 0 < --start-lr < --end-lr, got {self.start_lr}, {self.end_lr}"
            )
        if self.steps < 2:
            raise ConfigError(f"lr-find: --steps {self.steps}: need at least 2")
        if not 0 <= self.beta < 1:
            raise ConfigError(f"lr-find: beta {self.beta}: expected 0 <= beta < 1")

    def lr(self, i: int) -> float:
        """The learning rate of step ``i`` (0-based): exponential from start to end."""
        return self.start_lr * (self.end_lr / self.start_lr) ** (i / (self.steps - 1))


#: Plot formats the sweep writes (matplotlib's, by the file's suffix).
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".eps")


def check_plot_path(out: Path | str) -> None:
    """Refuse a plot path the sweep could not write, before the sweep; named as given
    (``--out x.txt`` by ``segkit lr-find``, ``plot='x.txt'`` in Python).

    Raises:
        ConfigError: an unknown suffix, a folder at the path, or a folder where nothing can
            be written (a file in the way, read-only, permission denied, full:
            :func:`segkit.system.files.check_writable`).
    """
    path = Path(out)
    given = named_as("plot", str(out), flag="--out", as_typed=True)
    if path.is_dir():
        example = named_as("plot", str(path / "lr_find.png"), flag="--out", as_typed=True)
        raise ConfigError(f"{given}: is a folder; name a file in it, e.g. {example}")
    if path.suffix.lower() not in PLOT_SUFFIXES:
        example = named_as("plot", "lr_find.png", flag="--out", as_typed=True)
        raise ConfigError(
            f"{given}: expected a plot file ending in {', '.join(PLOT_SUFFIXES)} "
            f"(the suffix picks the format), e.g. {example}"
        )
    # A file in the way, a read-only or full disk: probed for real (os.access says yes to
    # root), in the plot's folder or the nearest one above it that exists.
    check_writable(path.absolute().parent, f"{given}: the folder", create=False)


_SWEEP_FIELDS = [f.name for f in dataclasses.fields(Sweep)]


@checked_keywords(
    "segkit.lr_find",
    [*_SWEEP_FIELDS, *(f.name for f in dataclasses.fields(RunConfig))],
    listed="it takes config, plot, training, runtime, progress, the sweep's "
    f"{', '.join(_SWEEP_FIELDS)} and the RunConfig fields, which help(segkit.RunConfig) lists",
)
def find(
    config: RunConfig | None = None,
    *,
    plot: Path | str | None = None,
    training: Training | None = None,
    runtime: Runtime | None = None,
    progress: Any = None,
    **settings: Any,
) -> LRFind:
    """:func:`segkit.lr_find`: the sweep on a :class:`~segkit.config.RunConfig` or its
    fields as keywords (over ``config``'s, as :func:`segkit.train` takes them), with the
    sweep's settings (:class:`Sweep`'s fields) among them; ``plot``: a file to draw the
    loss against the learning rate in (checked before the sweep), as ``segkit lr-find
    --out`` does.

    Raises:
        UnknownSettingError: a keyword neither a RunConfig field nor a sweep setting.
        ConfigError: a bad value, a plot path that cannot be written, or what
            :func:`lr_find` raises.
    """
    sweep = Sweep(**{k: settings.pop(k) for k in _SWEEP_FIELDS if k in settings})
    sweep.check()
    config = with_settings("segkit.lr_find", config, settings, example="image_size=64")
    if plot is not None:
        check_plot_path(plot)
    if training is None:
        runtime = build.resolve_runtime(config)
        training = build.build_training(config, runtime)
    result = lr_find(config, sweep, training=training, runtime=runtime, progress=progress)
    if plot is None:
        return result
    c = training.config  # --loss auto resolved
    path = write_plot(result, plot, f"{c.model} + {c.loss}, batch {c.batch_size}")
    return dataclasses.replace(result, plot=path)


def lr_find(
    config: RunConfig,
    sweep: Sweep | None = None,
    *,
    training: Training | None = None,
    runtime: Runtime | None = None,
    progress: Any = None,
) -> LRFind:
    """Sweep the learning rate on ``config``'s run (see the module docstring).

    Args:
        config: The run configuration (its ``lr`` is not used).
        sweep: The sweep's range, steps and smoothing (default :class:`Sweep()`).
        training: Parts already built with :func:`segkit.build.build_training` (with
            ``runtime``); their model and optimizer are restored afterwards. By default
            they are built from ``config``.
        runtime: The runtime ``training`` was built for.
        progress: Called as ``progress(step, lr, smoothed_loss)`` after each step.

    Returns:
        ``(lrs, losses, suggestion)``; ``.min_loss_lr`` is the other common choice.

    Raises:
        ConfigError: bad sweep settings, or a bad configuration.
    """

    sweep = sweep or Sweep()
    sweep.check()
    exit_if_reimporting_main()
    if training is None:
        runtime = build.resolve_runtime(config)
        training = build.build_training(config, runtime)
    elif runtime is None:
        raise ConfigError("lr-find: pass the runtime the training parts were built for")
    saved = _saved(training, runtime)
    stepper = build.step_model(training.model, training.config, runtime)  # --loss auto resolved
    try:
        lrs, losses = _sweep(stepper, training, runtime, sweep, progress)
    finally:
        _restore(training, runtime, saved)
    if not lrs:
        raise ConfigError(
            f"lr-find: the loss was not finite at the first step (lr {sweep.start_lr:g}); "
            "check the data and the loss, or start lower"
        )
    return LRFind(lrs, losses, suggest(lrs, losses))


def _sweep(
    stepper: Any, training: Training, runtime: Runtime, sweep: Sweep, progress: Any
) -> tuple[list[float], list[float]]:
    """Step once per batch at each learning rate of ``sweep``: the rates and the smoothed
    losses, up to a non-finite loss or divergence (the model and optimizer change)."""
    lrs: list[float] = []
    losses: list[float] = []
    avg, best = 0.0, math.inf
    training.model.train()
    batches = _cycle(training.loaders["train"])
    for i in range(sweep.steps):
        lr = sweep.lr(i)
        for group in training.optimizer.param_groups:
            group["lr"] = lr
        value = _step(stepper, training, runtime, next(batches))
        if not math.isfinite(value):
            break
        avg = sweep.beta * avg + (1 - sweep.beta) * value
        smoothed = avg / (1 - sweep.beta ** (i + 1))
        if i > 0 and smoothed > DIVERGE * best:
            break
        best = min(best, smoothed)
        lrs.append(lr)
        losses.append(smoothed)
        if progress is not None:
            progress(i, lr, smoothed)
    return lrs, losses


def _step(stepper: Any, training: Training, runtime: Runtime, batch: Any) -> float:
    """One optimizer step on ``batch``; its loss (a non-finite one takes no step)."""

    precision, device = runtime.precision, runtime.device
    images = to_device(batch.images, device, runtime.channels_last)
    masks = training.task.target(to_device(batch.masks, device, False))
    with precision.autocast():
        loss = training.loss(stepper(images), masks)
    value = float(loss.detach().float())
    if not math.isfinite(value):
        return value
    training.optimizer.zero_grad(set_to_none=True)
    precision.backward(loss)
    precision.step(training.optimizer)
    return value


def _saved(training: Training, runtime: Runtime) -> tuple[Any, ...]:
    """Copies of what the sweep changes: model, optimizer and precision states, mode."""
    return (
        copy.deepcopy(training.model.state_dict()),
        copy.deepcopy(training.optimizer.state_dict()),
        copy.deepcopy(runtime.precision.state_dict()),
        training.model.training,
    )


def _restore(training: Training, runtime: Runtime, saved: tuple[Any, ...]) -> None:
    training.model.load_state_dict(saved[0])
    training.optimizer.load_state_dict(saved[1])
    runtime.precision.load_state_dict(saved[2])
    training.model.train(saved[3])
    training.optimizer.zero_grad(set_to_none=True)


def _cycle(loader: Any) -> Any:
    """The loader's batches, epoch after epoch (reseeded by ``set_epoch`` when it has it)."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            from segkit.errors import ConfigError

            raise ConfigError("lr-find: the training loader gave no batches")
        epoch += 1


def suggest(lrs: list[float], losses: list[float]) -> float:
    """The learning rate where ``losses`` fall fastest against log(lr) (central
    differences). As in fastai's plot, the first 10 points (the smoothed loss is mostly
    noise there) and the last 5 (divergence) are left out, fewer on a short sweep:
    ``min(10, n // 5)`` and ``min(5, n // 10)``. The first rate when fewer than 3 points
    remain."""
    n = len(lrs)
    lo, hi = min(10, n // 5), n - min(5, n // 10)
    if hi - lo < 3:
        lo, hi = 0, n
    if hi - lo < 3:
        return lrs[0]
    logs = [math.log(lr) for lr in lrs]
    slopes = {
        i: (losses[i + 1] - losses[i - 1]) / (logs[i + 1] - logs[i - 1])
        for i in range(lo + 1, hi - 1)
    }
    return lrs[min(slopes, key=slopes.__getitem__)]


def write_plot(result: LRFind, path: Path | str, title: str = "") -> Path:
    """Smoothed loss against learning rate (log scale), with the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        ax.plot(result.lrs, result.losses, color="tab:blue")
        ax.set_xscale("log")
        ax.axvline(
            result.suggestion,
            color="tab:red",
            linestyle="--",
            label=f"steepest descent {result.suggestion:.2e}",
        )
        ax.axvline(
            result.min_loss_lr,
            color="tab:green",
            linestyle=":",
            label=f"min loss lr / 10 {result.min_loss_lr:.2e}",
        )
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss (smoothed)")
        if title:
            ax.set_title(title)
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
