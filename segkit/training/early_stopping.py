"""The monitored metric and early stopping: which epoch is the best, and when to stop.

:class:`EarlyStopping` follows one validation metric (``--monitor``): ``valid_dice`` and
``valid_iou`` (and ``valid_dice_dataset``) are better higher, ``valid_loss`` lower. Every validated epoch goes through
:meth:`EarlyStopping.update`:

- the best epoch (``best.pt``) is the one with the best value so far; a tie keeps the
  earlier epoch, as the engine always has;
- with ``--patience N`` the run stops after N validations in a row that do not beat the
  reference by more than ``--min-delta``. The reference is the value of the last epoch
  that did (Keras' and Lightning's rule: small gains that add up to more than
  ``min_delta`` count). Epochs that ``--validate-every`` leaves unvalidated are not
  counted: patience is measured in validations.

Its :meth:`~EarlyStopping.state_dict` travels in ``last.pt``, so a resumed run keeps the
counter.
"""

from __future__ import annotations

import math
from typing import Any

#: ``--monitor`` value -> (the key in the engine's validation metrics, "max" or "min").
#: For K classes ``dice`` and ``iou`` are the means over classes (mDice, mIoU), so
#: ``valid_mdice`` and ``valid_miou`` name the same keys; :func:`segkit.task.Task.monitor`
#: refuses them for a binary run. ``valid_dice_dataset`` is a binary run's Dice of the
#: valid pixels pooled over the split (``--monitor auto`` on a defect set, where most
#: masks are empty); for K classes ``valid_mdice`` already is.
MONITORS: dict[str, tuple[str, str]] = {
    "valid_dice": ("dice", "max"),
    "valid_iou": ("iou", "max"),
    "valid_mdice": ("dice", "max"),
    "valid_miou": ("iou", "max"),
    "valid_loss": ("loss", "min"),
    "valid_dice_dataset": ("dice_dataset", "max"),
}


class EarlyStopping:
    """The best value of the monitored metric, its epoch, and the patience counter.

    Args:
        monitor: a key of :data:`MONITORS`.
        patience: validations without an improvement of more than ``min_delta`` before
            :attr:`should_stop`; None never stops.
        min_delta: how much better than the reference a value must be to reset the counter.
    """

    def __init__(
        self, monitor: str = "valid_dice", patience: int | None = None, min_delta: float = 0.0
    ) -> None:
        if monitor not in MONITORS:
            raise ValueError(f"monitor {monitor!r}: expected one of {', '.join(MONITORS)}")
        self.monitor = monitor
        self.key, self.mode = MONITORS[monitor]
        self.patience = patience
        self.min_delta = min_delta
        worst = -math.inf if self.mode == "max" else math.inf
        #: The best value so far and its epoch (-1: none yet).
        self.best, self.best_epoch = worst, -1
        #: The value that the counter measures improvements against.
        self.reference = worst
        #: Validations since the last improvement of more than ``min_delta``.
        self.wait = 0
        #: Set by the engine when the run stopped early (kept in last.pt).
        self.stopped = False

    def _better(self, value: float, than: float, delta: float = 0.0) -> bool:
        if self.mode == "max":
            return value - delta > than
        return value + delta < than

    def update(self, value: float, epoch: int = -1) -> bool:
        """Record a validated epoch's value; return whether it is the new best (strictly
        better than every earlier one; NaN never is)."""
        improved = self._better(value, self.best)
        if improved:
            self.best, self.best_epoch = value, epoch
        if self._better(value, self.reference, self.min_delta):
            self.reference, self.wait = value, 0
        else:
            self.wait += 1
        return improved

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` validations in a row have not improved enough."""
        return self.patience is not None and self.wait >= self.patience

    def reason(self) -> str:
        """Why the run stops, for the epoch line and ``summary.json``."""
        return (
            f"{self.monitor} has not improved by more than {self.min_delta:g} for "
            f"{self.wait} validated epochs (best {self.best:.4f} at epoch {self.best_epoch})"
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "reference": self.reference,
            "wait": self.wait,
            "stopped": self.stopped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; missing keys keep their start values (``wait`` 0)."""
        if state.get("monitor", self.monitor) != self.monitor:
            raise ValueError(f"state of monitor {state['monitor']!r}, not {self.monitor!r}")
        self.best = state.get("best", self.best)
        self.best_epoch = state.get("best_epoch", self.best_epoch)
        self.reference = state.get("reference", self.best)
        self.wait = state.get("wait", 0)
        self.stopped = state.get("stopped", False)
