"""Binary or K classes: what a run's target is, from its dataset's
:class:`~segkit.contracts.MaskSpec`.

A :class:`Task` is all the engine, the reports and inference need to know about the
target: the number of logit channels, the class names and colours, the default loss and
monitored metric, and the meter that scores predictions. It is recorded in checkpoints
(``"task"``) and ``config.json``, so ``segkit evaluate`` and ``segkit predict`` rebuild a
K-class model and colour its masks without the dataset. A binary task records nothing:
checkpoints of binary runs are as they always were.

For K classes the headline scores keep their binary names in the engine's metrics
(``dice``, ``iou``; ``valid_dice``, ``valid_iou`` in ``metrics.csv``): they are the
dataset-level means over classes, mDice and mIoU (:class:`MultiClassMeter`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from segkit import registry
from segkit.config import DEFAULTS, named
from segkit.contracts import IGNORE_INDEX, Dataset, MaskSpec, loss_accepts
from segkit.errors import ConfigError
from segkit.metrics.multiclass import ConfusionMeter

#: Class names a :class:`Task`'s repr lists before it elides the rest (all but the last).
_REPR_CLASSES = 8


@dataclass(frozen=True)
class Task:
    """The target of a run.

    Attributes:
        classes: Class names, class 0 first; empty for binary.
        palette: One ``(r, g, b)`` per class (K classes), for masks and reports.
        ignore_index: The class-map value of ignored pixels, when the dataset has some.
    """

    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    ignore_index: int | None = None

    @classmethod
    def from_spec(cls, spec: MaskSpec) -> Task:
        if not spec.is_multiclass:
            return cls()
        return cls(spec.classes, spec.colors(), IGNORE_INDEX if spec.has_ignore else None)

    @classmethod
    def of(cls, dataset: Dataset) -> Task:
        return cls.from_spec(dataset.mask_spec)

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> Task:
        """The task a checkpoint or ``config.json`` recorded (:meth:`record`); binary
        when there is none (every checkpoint of a binary run)."""
        if not record:
            return cls()
        return cls(
            tuple(record["classes"]),
            tuple(tuple(int(v) for v in c) for c in record["palette"]),
            record.get("ignore_index"),
        )

    def record(self) -> dict[str, Any]:
        """JSON-ready; ``{}`` for binary."""
        if not self.classes:
            return {}
        return {
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index,
        }

    @property
    def multiclass(self) -> bool:
        return bool(self.classes)

    @property
    def num_classes(self) -> int:
        """Logit channels: 1 for binary, K for K classes."""
        return len(self.classes) if self.classes else 1

    def __repr__(self) -> str:
        """What the task is, in one line: ``Task(binary)``, ``Task(3 classes: background,
        cat, dog; ignore 255)`` (more than :data:`_REPR_CLASSES` names: the first ones and
        the last)."""
        if not self.classes:
            return "Task(binary)"
        names = list(self.classes)
        if len(names) > _REPR_CLASSES:
            names = [*names[: _REPR_CLASSES - 1], "...", names[-1]]
        ignore = f"; ignore {self.ignore_index}" if self.ignore_index is not None else ""
        return f"Task({len(self.classes)} classes: {', '.join(names)}{ignore})"

    def describe(self) -> str:
        """E.g. ``binary`` or ``3 classes (background, pet, border)``."""
        if not self.classes:
            return "binary"
        return f"{len(self.classes)} classes ({', '.join(self.classes)})"

    # ------------------------------------------------------------------ defaults

    def default_loss(self) -> str:

        return DEFAULTS["multiclass_loss"] if self.multiclass else DEFAULTS["loss"]

    def monitor(self, asked: str) -> str:
        """``--monitor`` resolved: ``auto`` is valid Dice (binary) or valid mIoU (K
        classes, as the best checkpoint is chosen in MMSegmentation and torchvision).

        A binary run's ``auto`` becomes ``valid_dice_dataset`` once its train masks are
        known to be mostly empty (:meth:`defect_monitor`).

        Raises:
            ConfigError: ``valid_miou``/``valid_mdice`` for a binary run,
                ``valid_dice_dataset`` for K classes.
        """
        if asked == "auto":
            return "valid_miou" if self.multiclass else "valid_dice"
        if asked == "valid_dice_dataset" and self.multiclass:
            raise ConfigError(
                f"{named('monitor', asked, as_typed=True)}: the dataset has "
                f"{len(self.classes)} classes, whose valid Dice is already pooled over the "
                f"dataset (mDice); use {named('monitor', 'valid_mdice', as_typed=True)}"
            )
        if asked in ("valid_miou", "valid_mdice") and not self.multiclass:
            plain = asked.replace("_m", "_")
            raise ConfigError(
                f"{named('monitor', asked, as_typed=True)}: the dataset is binary, so there is "
                f"no mean over classes; use {named('monitor', plain, as_typed=True)}"
            )
        return asked

    def defect_monitor(self, asked: str, empty: int, images: int) -> tuple[str | None, str]:
        """``--monitor auto`` for a binary run whose train split holds ``empty`` empty
        masks of ``images``: ``("valid_dice_dataset", why)`` where they are many (the data
        check's empty-share line, :func:`segkit.data.check.many_empty`), else ``(None,
        "")`` (the monitor stays as resolved). On such a split the per-image valid Dice
        scores each empty image predicted empty 1, so it rewards a model that predicts
        nothing; the pooled Dice scores that model 0."""
        from segkit.data.check import many_empty

        if asked != "auto" or self.multiclass or not many_empty(empty, images):
            return None, ""
        return "valid_dice_dataset", (
            f"{empty} of {images} train masks are empty ({empty / images:.0%}): per image, "
            "each empty mask predicted empty scores 1, so predicting nothing would score "
            f"near {empty / images:.2f}; the valid pixels pooled score it 0 "
            f"({named('monitor', 'valid_dice', as_typed=True)} keeps the per-image rule; "
            "docs/metrics.md, Empty masks)"
        )

    def check_loss(self, name: str, accepts: str, dataset: str) -> None:
        """Refuse a loss that cannot take this task's targets, in one line.

        Raises:
            ConfigError: naming the loss, what it takes, the dataset's classes and the
                losses that fit.
        """
        if accepts == "both" or (accepts == "multiclass") == self.multiclass:
            return

        want = "multiclass" if self.multiclass else "binary"
        fits = []
        reg = registry.default_registry()
        for other in reg.names("losses"):
            try:
                if loss_accepts(reg.get("losses", other)) in (want, "both"):
                    fits.append(other)
            except Exception:  # a broken plugin is reported by `segkit list`, not here
                continue
        takes = "binary targets (1 logit channel)" if accepts == "binary" else "K-class targets"
        raise ConfigError(
            f"{named('loss', name, as_typed=True)} takes {takes}, but dataset {dataset} is "
            f"{self.describe()}; use {named('loss', self.default_loss(), as_typed=True)} (or "
            f"one of: {', '.join(sorted(fits))})"
        )

    # ------------------------------------------------------------------ scoring

    def meter(self, device: torch.device | str, *, per_image: bool = False) -> Any:
        """A fresh meter for a pass: :class:`~segkit.metrics.binary.DiceMeter` (binary) or
        :class:`MultiClassMeter`. Both take ``update(logits, target, loss)``, ``state()``
        / ``load_state()`` (to sum across ranks), ``compute()`` with ``dice``, ``iou``,
        ``loss`` and ``images``, and ``per_image_scores()``."""
        if not self.multiclass:
            from segkit.metrics.binary import DiceMeter

            return DiceMeter(device, per_image=per_image)
        return MultiClassMeter(self, device, per_image=per_image)

    def target(self, masks: torch.Tensor) -> torch.Tensor:
        """A batch's masks as losses and meters take them: binary masks as they are
        (float ``(N, 1, H, W)``), class maps as ``torch.long`` ``(N, H, W)``."""
        return masks.long() if self.multiclass else masks

    def colorize(self, classes: Any) -> Any:
        """``(H, W)`` class indices (numpy) to an ``(H, W, 3)`` uint8 picture; ignored
        pixels are grey."""
        import numpy as np

        lut = np.full((256, 3), 128, dtype=np.uint8)
        lut[: len(self.palette)] = np.asarray(self.palette, dtype=np.uint8)
        return lut[np.asarray(classes, dtype=np.uint8)]


class MultiClassMeter:
    """:class:`~segkit.metrics.multiclass.ConfusionMeter` for a :class:`Task`, with the engine's
    headline keys: ``dice`` = mDice and ``iou`` = mIoU (over the dataset), and each
    class's IoU and Dice under its name (``iou_pet``)."""

    def __init__(self, task: Task, device: torch.device | str, *, per_image: bool = False) -> None:

        self.task = task
        self.inner = ConfusionMeter(
            task.num_classes,
            device,
            ignore_index=task.ignore_index if task.ignore_index is not None else IGNORE_INDEX,
            per_image=per_image,
        )

    def update(
        self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | None = None
    ) -> None:
        self.inner.update(logits, target, loss)

    def state(self) -> torch.Tensor:
        return self.inner.state()

    def load_state(self, state: torch.Tensor) -> None:
        self.inner.load_state(state)

    def per_image_scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's (mDice, mIoU) over the classes present in it (float32, NaN for
        an image with no scored pixel), in the order :class:`~segkit.metrics.binary.DiceMeter`
        gives (Dice, IoU)."""
        miou, mdice = self.inner.per_image_scores()
        return mdice.float(), miou.float()

    def per_image_counts(self) -> torch.Tensor:
        """Each image's ``TP, FP, FN`` per class, ``(N, K, 3)`` (see
        :meth:`~segkit.metrics.multiclass.ConfusionMeter.per_image_counts`)."""
        return self.inner.per_image_counts()

    def compute(self) -> dict[str, Any]:
        out = self.inner.compute()
        out["dice"], out["iou"] = out["mdice"], out["miou"]
        for c, name in enumerate(self.task.classes):
            out[f"iou_{name}"] = out[f"iou_{c}"]
            out[f"dice_{name}"] = out[f"dice_{c}"]
        return out


def per_class_rows(task: Task, result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per class from a :class:`MultiClassMeter` result: name, IoU, Dice, target
    and predicted pixels (for ``summary.json`` and the evaluate table)."""
    conf = result["confusion"]
    k = len(conf)
    rows = []
    for c, name in enumerate(task.classes):
        rows.append(
            {
                "class": name,
                "iou": _json_float(result[f"iou_{c}"]),
                "dice": _json_float(result[f"dice_{c}"]),
                "pixels": int(sum(conf[c])),
                "predicted": int(sum(conf[r][c] for r in range(k))),
            }
        )
    return rows


def _json_float(v: float) -> float | None:
    return None if isinstance(v, float) and math.isnan(v) else v


def resolve(config: Any, dataset: Dataset) -> tuple[Any, Task]:
    """``config`` with ``loss`` and ``monitor`` resolved for ``dataset``'s task (a copy;
    ``auto`` becomes a name), and ``dataset`` named (the layout the ``--data`` folder was
    recognised as, so the run folder records it), and that task.

    Raises:
        ConfigError: the loss does not take the dataset's targets, or the monitor does
            not apply.
    """
    import dataclasses

    task = Task.of(dataset)
    loss = task.default_loss() if config.loss == "auto" else config.loss
    factory = registry.default_registry().get("losses", loss)
    try:
        accepts = loss_accepts(factory)
    except ValueError as e:
        raise ConfigError(f"{named('loss', loss, as_typed=True)}: {e}") from None
    dataset_name = config.resolved_dataset()
    target = (config.dataset_options or {}).get("target")
    shown = f"'{dataset_name}'" + (f" (target={target})" if target else "")
    task.check_loss(loss, accepts, shown)
    monitor = task.monitor(config.monitor)
    # A --data folder's layout was recognised: record it, so the run folder need not look again.
    recorded = dataset_name if config.data else config.dataset
    return dataclasses.replace(config, loss=loss, monitor=monitor, dataset=recorded), task
