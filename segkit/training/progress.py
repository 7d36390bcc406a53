"""What a run says while an epoch trains: a progress bar on a terminal, a plain line every
``--log-every`` seconds elsewhere (nohup, CI logs, cluster jobs), and once per run an
estimate of the epoch and the run's duration.

Nothing here reads the device: the loss shown is the one the training loop already reads
without waiting (:class:`segkit.training.loops._DeviceScalar`), and times are host clocks, so the
progress adds no host sync.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from segkit.config import named

#: Steps left out of the estimate at the start of the first epoch (worker start, cudnn
#: autotuning, compilation, the first batches of a cold loader).
WARMUP_STEPS = 3
#: Steps the estimate is measured over, at most (fewer in a short epoch).
MEASURE_STEPS = 20
#: A run estimated longer than this on a CPU gets the fast-settings hint.
HINT_OVER_S = 3600.0


def duration(seconds: float) -> str:
    """``42 s``, ``7.5 min``, ``3.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class RunEstimate:
    """Estimates seconds per epoch once per process, from steady-state steps of the first
    epoch it trains, and says it in one line with the run's remaining total.

    Args:
        say: Prints one line (nothing when the run is quiet).
        epochs_left: Epochs this process will train, the first included.
        device_type: ``cpu`` adds the fast-settings hint when the total is over an hour.
        resumed: A resumed run gets the estimate but not the hint again.
        max_time: ``--max-time`` as given, with ``time_left`` (seconds left of it, read
            when the estimate is made): the line adds how many epochs fit, where fewer
            than the run's do.
    """

    def __init__(
        self,
        say: Callable[[str], None],
        epochs_left: int,
        device_type: str,
        resumed: bool,
        *,
        max_time: str | None = None,
        time_left: Callable[[], float] | None = None,
    ) -> None:
        self.say = say
        self.epochs_left = epochs_left
        self.device_type = device_type
        self.resumed = resumed
        self.max_time = max_time
        self.time_left = time_left
        self.done = False
        self.line: str | None = None

    def window(self, steps: int) -> tuple[int, int] | None:
        """The (first, last) step counts timed in an epoch of ``steps``, or None when the
        epoch is too short (then the estimate comes from the whole first epoch)."""
        if steps < WARMUP_STEPS + 3:
            return None
        return WARMUP_STEPS, min(steps, WARMUP_STEPS + MEASURE_STEPS)

    def report(
        self, seconds_per_step: float, steps: int, source: str, steps_done: int | None = None
    ) -> None:
        """Say the estimate (once): ``steps`` an epoch at ``seconds_per_step``, made
        ``steps_done`` steps into the epoch (default: at its end)."""
        if self.done:
            return
        self.done = True
        epoch = seconds_per_step * steps
        # What is left of the epoch under way (nothing when made at its end), then the rest.
        rest = seconds_per_step * (steps - (steps if steps_done is None else steps_done))
        to_go = self.epochs_left - (1 if steps_done is None else 0)
        if to_go == 0:  # made at the end of the run's only epoch: nothing left to estimate
            return
        total = rest + epoch * (self.epochs_left - 1)
        line = (
            f"segkit: about {duration(epoch)} per epoch of training, {duration(total)} for "
            f"the {to_go} epoch{'s' if to_go != 1 else ''} to go "
            f"({source}; validation and checkpoints not included)"
        )
        if self.time_left is not None:
            # The epoch under way finishes whatever the limit; then whole epochs while they fit.
            left = self.time_left() - rest
            fit = 1 + max(0, int(left // epoch)) if epoch > 0 else self.epochs_left
            if fit < self.epochs_left:
                line += (
                    f"\nsegkit: {named('max_time', self.max_time, as_typed=True)}: at this pace "
                    "training stops after "
                    f"about {fit} of the {self.epochs_left} epochs"
                )
        if total > HINT_OVER_S and self.device_type == "cpu" and not self.resumed:
            line += (
                "\nsegkit: that is over an hour on the CPU. For a first run, "
                f"{named('image_size', 64)} {named('batch_size', 8)} (the settings of `make "
                f"run`) trains in minutes; a GPU ({named('device', 'cuda', as_typed=True)}) "
                "trains the full size in seconds per epoch"
            )
        self.line = line
        self.say(line)


@dataclass
class ProgressSettings:
    """What every epoch's progress of a run shares (see :class:`EpochProgress`).

    Attributes:
        epochs: The run's last epoch (shown as ``epoch e/epochs``).
        batch_size: Images per step over all ranks (for images/s).
        say: Prints one line.
        estimate: The run's :class:`RunEstimate`, fed by the first epoch (None: none).
        log_every: Seconds between plain lines off a terminal (0: none).
        quiet: Show nothing (no bar, no lines).
        stream: Where the bar goes, and whose ``isatty`` chooses bar or lines
            (default ``sys.stderr``).
        clock: The clock (seconds).
    """

    epochs: int
    batch_size: int
    say: Callable[[str], None]
    estimate: RunEstimate | None = None
    log_every: float = 30.0
    quiet: bool = False
    stream: TextIO | None = None
    clock: Callable[[], float] = time.perf_counter


class EpochProgress:
    """The training loop's progress object for one epoch (``update``, ``set_postfix``).

    On a terminal it drives a tqdm bar; otherwise it prints a plain line at most every
    ``log_every`` seconds (0: never): epoch, step, images/s and the last loss read. Either
    way it feeds :class:`RunEstimate`.

    Args:
        settings: What the run's epochs share.
        epoch: This epoch.
        steps: Its batches.
    """

    def __init__(self, settings: ProgressSettings, epoch: int, steps: int) -> None:
        s = settings
        self.epoch, self.epochs, self.steps = epoch, s.epochs, steps
        self.batch_size = s.batch_size
        self.say = s.say
        self.estimate = s.estimate
        self.log_every = s.log_every
        self.clock = s.clock
        self.step = 0
        self.loss: str | None = None
        self.start = s.clock()
        self.last_line = self.start
        self.window = s.estimate.window(steps) if s.estimate and not s.estimate.done else None
        self.window_start: float | None = None
        stream = s.stream if s.stream is not None else sys.stderr
        self.bar: Any = None
        if not s.quiet and is_tty(stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=steps,
                desc=f"epoch {epoch}/{s.epochs}",
                leave=False,
                dynamic_ncols=True,
                file=stream,
            )
        self.lines = not s.quiet and self.bar is None and s.log_every > 0

    def update(self, n: int = 1) -> None:
        self.step += n
        now = self.clock()
        if self.bar is not None:
            self.bar.update(n)
        if self.window is not None:
            first, last = self.window
            if self.step == first:
                self.window_start = now
            elif self.step == last and self.window_start is not None and self.estimate:
                per_step = (now - self.window_start) / (last - first)
                self.estimate.report(
                    per_step, self.steps, f"timed over steps {first + 1}-{last}", steps_done=last
                )
        if self.lines and now - self.last_line >= self.log_every:
            self.last_line = now
            rate = self.step * self.batch_size / max(now - self.start, 1e-9)
            loss = f"  loss {self.loss}" if self.loss is not None else ""
            self.say(
                f"epoch {self.epoch}/{self.epochs}  step {self.step}/{self.steps}  "
                f"{rate:.1f} images/s{loss}"
            )

    def set_postfix(self, **values: str) -> None:
        if "loss" in values:
            self.loss = values["loss"]
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def close(self, seconds: float | None = None) -> None:
        """End the epoch; a first epoch too short for the step window is estimated from
        its whole time (``seconds``)."""
        if self.bar is not None:
            self.bar.close()
        if self.estimate is not None and not self.estimate.done and seconds is not None:
            if self.steps > 0:
                self.estimate.report(
                    seconds / self.steps, self.steps, f"timed over epoch {self.epoch}"
                )


def is_tty(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (False for files, pipes and closed streams)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
