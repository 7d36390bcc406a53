"""TensorBoard logging (``segkit run --log tensorboard``), next to ``metrics.csv``.

The run folder gets ``tensorboard/`` with event files written by
``torch.utils.tensorboard.SummaryWriter``: after each epoch the row of ``metrics.csv`` as
scalars (losses, Dice, IoU, learning rate, the epoch's seconds), every
``--log-images-every`` epochs (and after the last) the prediction grid of the first
validation images, and at the end the test Dice and IoU. ``tensorboard --logdir runs``
then shows every run under its folder name.

The ``tensorboard`` package is an optional extra (``pip install 'segkit[tensorboard]'``):
:func:`require` is called before the run folder is made, so a run without it stops at
once with one line saying what to install. A resumed run purges what the killed one had
logged after its checkpoint (``purge_step``), so TensorBoard shows each epoch once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from segkit.config import RunConfig
from segkit.errors import ConfigError
from segkit.reports import figures as report

if TYPE_CHECKING:
    from segkit.contracts import Dataset, Loader
    from segkit.training.loops import EvalContext

#: The folder in the run folder that holds the event files.
FOLDER = "tensorboard"

#: Validation images in the TensorBoard prediction grid.
GRID_IMAGES = 4

#: metrics.csv column -> TensorBoard scalar tag.
SCALARS = {
    "train_loss": "loss/train",
    "valid_loss": "loss/valid",
    "train_dice": "dice/train",
    "valid_dice": "dice/valid",
    "valid_iou": "iou/valid",
    "lr": "lr",
    "epoch_seconds": "seconds/train",
    "valid_s": "seconds/valid",
    "checkpoint_s": "seconds/checkpoint",
    "epoch_wall_s": "seconds/epoch",
}


def require(config: RunConfig) -> None:
    """Check, before anything is written, that ``config``'s logging can be done here.

    Raises:
        ConfigError: ``--log tensorboard`` without the ``tensorboard`` package.
    """
    if config.log == "tensorboard":
        summary_writer()


def summary_writer() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``.

    Raises:
        ConfigError: the ``tensorboard`` package is not installed; says what to install.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "--log tensorboard needs the tensorboard package, which is not installed: "
            "pip install 'segkit[tensorboard]' (or pip install tensorboard), or leave "
            "--log at csv"
        ) from None
    return SummaryWriter


class TensorBoardLog:
    """The event files of one run (rank 0 only).

    Args:
        run_dir: The run folder; events go to ``run_dir/tensorboard``.
        config: The run's configuration (``log_images_every``).
        start_epoch: The first epoch this process trains (after a resume: events of this
            epoch and later, left by the killed run, are purged).
    """

    def __init__(self, run_dir: Path, config: RunConfig, start_epoch: int = 1) -> None:
        writer = summary_writer()
        self.path = Path(run_dir) / FOLDER
        self.every = config.log_images_every
        self.epochs = config.epochs
        self.writer = writer(str(self.path), purge_step=start_epoch if start_epoch > 1 else None)
        self._valid: tuple[torch.Tensor, torch.Tensor, list[str]] | None = None

    def epoch(self, row: dict[str, Any]) -> None:
        """One epoch's ``metrics.csv`` row as scalars (values not measured, such as the
        validation of an epoch that ``--validate-every`` skips, are left out)."""
        step = int(row["epoch"])
        for key, tag in SCALARS.items():
            value = row.get(key)
            if value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()  # a killed run keeps what it logged up to its last epoch

    def wants_grid(self, epoch: int) -> bool:
        return self.every > 0 and (epoch % self.every == 0 or epoch == self.epochs)

    @torch.no_grad()
    def grid(
        self,
        epoch: int,
        model: torch.nn.Module,
        loader: Loader,
        context: EvalContext,
        dataset: Dataset | None = None,
    ) -> np.ndarray | None:
        """Log the prediction grid of the first :data:`GRID_IMAGES` validation images
        (the same images every time: the first batches of the unshuffled valid loader,
        read once) as image ``predictions/valid``. Returns the picture, or None for an
        empty valid split. ``context`` (:class:`segkit.training.loops.EvalContext`): how
        the model is called and the batches drawn; with native-size evaluation's forward
        (:class:`segkit.inference.native.NativeForward`) each image is predicted alone at
        its own size and drawn resized for display only
        (:func:`segkit.reports.figures.display_set`). ``dataset``: names the images."""
        if self._valid is None:
            self._valid = _first_images(loader, dataset)
        if self._valid is None:
            return None
        images, masks, names = self._valid
        was_training = model.training
        model.eval()
        shown = report.predict_pictures(model, list(zip(images, masks, strict=True)), context)
        model.train(was_training)
        dice, iou = shown.scores()
        task = context.task
        scores = ("mDice", "mIoU") if task.multiclass else ("Dice", "IoU")
        scale = report.tile_scale(*shown.rgb.shape[1:3])
        rows = []
        for k in range(len(shown.rgb)):
            caption = (
                f"valid {names[k]}  epoch {epoch}  {scores[0]} {dice[k]:.3f}  "
                f"{scores[1]} {iou[k]:.3f}"
            )
            rows.append(report.TileRow(caption, report.picture_row(shown, k, scale, task)))
        picture = np.asarray(report.draw_tiles(report.COLUMNS, rows, report.legend_of(task)))
        self.writer.add_image("predictions/valid", picture, epoch, dataformats="HWC")
        self.writer.flush()
        return picture

    def test(self, metrics: dict[str, Any], epoch: int) -> None:
        """The test Dice and IoU of the best checkpoint, at the run's last epoch."""
        for key in ("dice", "iou"):
            self.writer.add_scalar(f"test/{key}", float(metrics[key]), epoch)

    def close(self) -> None:
        self.writer.close()


def _first_images(
    loader: Loader, dataset: Dataset | None
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]] | None:
    """The first :data:`GRID_IMAGES` images and masks of ``loader`` (on the CPU) and
    their sample ids (empty names without ``dataset``); None for an empty loader."""
    images: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    for batch in loader:
        images.extend(batch.images.float().cpu())
        masks.extend(batch.masks.cpu())
        if len(images) >= GRID_IMAGES:
            break
    if not images:
        return None
    n = min(GRID_IMAGES, len(images))
    # The unshuffled valid loader reads the split in order (as the test's ids do).
    ids = [s.id for s in dataset.samples("valid")] if dataset is not None else []
    names = ids[:n] if len(ids) >= n else [""] * n
    return images[:n], masks[:n], names
