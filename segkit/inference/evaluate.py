"""``segkit evaluate`` as a library function: a checkpoint's scores on a split.

::

    result = segkit.evaluate("runs/unet/best.pt", split="valid", data="~/data/other-pets")
    print(result.metrics["dice"])
    print("\\n".join(result.lines()))

The options are :class:`~segkit.inference.options.EvaluateOptions`'s. Without ``mode``
and ``tta`` the split is read by the run's own loader and scored as the run scored it
(its recipe's evaluation, ``eval_size``); with either, every image goes through the
predictor at its own size (:func:`evaluate_images`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.build import build_dataset, build_eval_loader, build_eval_plan, build_loss
from segkit.config import RunConfig, check_recorded_data, checked_keywords, named, named_options
from segkit.contracts import SPLITS, MaskSpec, capability
from segkit.data.check import split_samples
from segkit.data.reading import COLOURS_OUTSIDE, VALUES_OUTSIDE, read_sample
from segkit.errors import ConfigError, DataError, MaskValuesError, plural
from segkit.inference.native import EvalPlan, forward_for
from segkit.inference.options import EvaluateOptions
from segkit.inference.predictor import Predictor, mode_line, read_parallel
from segkit.inference.trained import Trained, open_trained
from segkit.metrics.definitions import detection_line, predicts_nothing, side_by_side
from segkit.metrics.multiclass import confusion_table
from segkit.registry import default_registry
from segkit.task import Task
from segkit.training import checkpoint as ckpt_io
from segkit.training.loops import EvalContext
from segkit.training.loops import evaluate as loader_scores


@dataclass(frozen=True)
class Overlap:
    """The images of the split scored that trained the model: found by their files'
    fingerprints (:func:`segkit.training.checkpoint.sample_fingerprints`: the same bytes,
    under any name or in any folder), which the checkpoint records for each split.

    Attributes:
        split: The split asked of the folder (``all``: every image of it).
        images: Its images, those that trained the model included.
        train: How many of them were in the model's train split.
        valid: How many of the others were in its valid split (which chose its best epoch).
        left_out: Whether they were left out of the scores (``split="auto"``); else they
            were scored, as asked.
        checked: False for a checkpoint that records its splits' ids but not their
            images' fingerprints (written before segkit recorded them): ``train`` and
            ``valid`` are 0, unknown.
    """

    split: str
    images: int
    train: int = 0
    valid: int = 0
    left_out: bool = False
    checked: bool = True

    @property
    def seen(self) -> int:
        """The images of the split that trained the model (train and valid)."""
        return self.train + self.valid

    @property
    def scored(self) -> int:
        """The images scored."""
        return self.images - self.seen if self.left_out else self.images

    def counts(self) -> str:
        """``12 of 40 images were in this model's train split and 3 in its valid split``."""
        parts = [(n, s) for n, s in ((self.train, "train"), (self.valid, "valid")) if n]
        first, split = parts[0]
        was = "was" if first == 1 else "were"
        of = (
            f"all {plural(self.images, 'image')}"
            if first == self.images
            else f"{first} of {plural(self.images, 'image')}"
        )
        words = f"{of} {was} in this model's {split} split"
        if len(parts) == 2:
            words += f" and {self.valid} in its valid split"
        return words

    def line(self) -> str:
        """What ``segkit evaluate`` says of them: ``12 of 40 images were in this model's
        train split; scored the 28 others; --split all scores every image``; those
        scored as asked: ``...: these scores flatter it; --split auto leaves them out``;
        a checkpoint without fingerprints: that it cannot be checked; "" where none of
        the images trained the model."""
        if not self.checked:
            return (
                "the checkpoint records which samples trained the model but not their "
                "images' fingerprints (it was written before segkit recorded them): whether "
                "some of these images trained it cannot be checked; a run of this segkit "
                "records them"
            )
        if not self.seen:
            return ""
        if not self.left_out:
            return (
                f"{self.counts()}: these scores flatter it; "
                f"{named('split', 'auto', as_typed=True)} leaves them out"
            )
        every = (
            "every image" if self.split == "all" else f"all {self.images} of its {self.split} split"
        )
        return (
            f"{self.counts()}; scored the {self.scored} others; "
            f"{named('split', self.split, as_typed=True)} scores {every}"
        )


@dataclass(frozen=True)
class Evaluated:
    """What :func:`evaluate` measured.

    Attributes:
        split: The split scored.
        metrics: The task meter's result (:meth:`segkit.task.Task.meter`): ``dice`` and
            ``iou`` (K classes: ``miou``, ``mdice``, ``pixel_acc``, per class and the
            confusion matrix), ``images``, and ``loss`` when read by the run's loader;
            binary: also ``empty_truth``, ``missed`` and ``false_alarms``, the
            image-level counts of :func:`segkit.metrics.definitions.side_by_side`.
        task: Binary, or the model's K classes.
        data: The dataset's folder.
        where: Device and precision, as the result line shows them.
        how: How the images were seen, as the result line ends (empty for the run's
            own resized evaluation).
        modes: Through the predictor: how many images each mode served (``resize``,
            ``whole``, ``tile``; what ``--mode auto`` chose); empty otherwise.
        ignored_as: K classes: what marks the pixels left out of every score in the
            dataset's masks (``value 255``; ``colour (255, 255, 255)`` in RGB masks);
            "" where nothing does.
        split_sizes: The images of each split of the dataset (``train``, ``valid``,
            ``test``), for :meth:`split_note`.
        chosen: Why ``split="auto"`` chose the split it scored (:func:`choose_split`:
            ``its samples are not the ones the model was trained on``); "" where the
            split was given.
        overlap: The images of the split that trained the model (:class:`Overlap`:
            ``train`` and ``valid`` counts; with ``split="auto"`` they were left out of
            the scores); None where the checkpoint records no split of its run.
        changed: The run's own data (the same samples as the checkpoint's splits): each
            split scored whose images have other bytes than when the model was trained
            (:class:`~segkit.training.checkpoint.Changed`); empty where none did, the data
            is other samples or the checkpoint records no fingerprints.
    """

    split: str
    metrics: dict[str, Any]
    task: Task
    data: Any
    where: str
    how: str
    modes: dict[str, int] = field(default_factory=dict)
    ignored_as: str = ""
    split_sizes: dict[str, int] = field(default_factory=dict)
    chosen: str = ""
    overlap: Overlap | None = None
    changed: tuple[ckpt_io.Changed, ...] = ()

    def overlap_note(self) -> str:
        """:meth:`Overlap.line` after the folder (``segkit evaluate`` prints it), or ""."""
        line = self.overlap.line() if self.overlap is not None else ""
        return f"{self.data}: {line}" if line else ""

    def changed_notes(self) -> list[str]:
        """For the run's own data, each split scored whose images changed under the same
        names since the model was trained (:attr:`changed`): ``pets: 3 of 10 test images
        changed since this model was trained (same names, other bytes): a.jpg, b.jpg,
        c.jpg; the scores are of the images as they are now`` (``segkit evaluate`` prints
        them as warnings)."""
        return [
            f"{self.data}: {c.words('this model was trained')}; the scores are of the "
            "images as they are now"
            for c in self.changed
        ]

    def split_note(self) -> str:
        """Which of the folder's images were scored, and why where ``split="auto"``
        chose: ``the test split holds 3 images of its 12 (train 8, valid 1): ...; --split
        all scores all of them, --split train or --split valid the others (keywords from
        Python: ``split='all'``)``, or ``all 12 images
        scored (train 8, valid 1, test 3): its samples are not the ones the model was
        trained on; --split test scores its test split alone``. "" where the folder has
        one split holding all of it and nothing was chosen. ``segkit evaluate --data``
        prints it: a folder is read as a dataset, split as a run would split it (its
        split lists, or a seeded 80/10/10). "" where ``split="auto"`` left images of
        every split out: :meth:`overlap_note` says what was scored."""
        total = sum(self.split_sizes.values())
        if self.split == "all" and self.overlap is not None and self.overlap.left_out:
            if self.overlap.seen:
                return ""
        why = f": {self.chosen}" if self.chosen else ""
        if self.split == "all":
            listed = ", ".join(f"{k} {n}" for k, n in self.split_sizes.items() if n)
            test = self.split_sizes.get("test", 0)
            alone = (
                f"; {named('split', 'test', as_typed=True)} scores its test split alone ({test})"
                if test
                else ""
            )
            return f"{self.data}: all {plural(total, 'image')} scored ({listed}){why}{alone}"
        here = self.split_sizes.get(self.split, 0)
        if not total or here == total:
            return f"{self.data}: the {self.split} split, all of it{why}" if why else ""
        others = [(k, n) for k, n in self.split_sizes.items() if k != self.split and n]
        listed = ", ".join(f"{k} {n}" for k, n in others)
        names = " or ".join(named("split", k, as_typed=True) for k, _ in others)
        return (
            f"{self.data}: the {self.split} split holds {plural(here, 'image')} of its "
            f"{total} ({listed}){why}; {named('split', 'all', as_typed=True)} scores all of "
            f"them, {names} the others"
        )

    def to_dict(self, checkpoint: str | Path | None = None) -> dict[str, Any]:
        """What ``segkit evaluate --json`` prints (docs/reference/scripting.md): the
        ``checkpoint`` scored, ``split``, ``data`` (the dataset's folder), ``classes``
        (null for a binary model), ``metrics`` (as :attr:`metrics`: ``dice``, ``iou``,
        ``images``, ``loss`` where the run's loader read the split; K classes: ``miou``,
        ``mdice``, ``pixel_acc``, per class, ``confusion``), ``where`` (device and
        precision), ``modes`` (images per predictor mode; empty without one), ``how`` and
        ``split_note`` (the words the lines end with, "" where none), ``overlap`` (the
        folder's images that trained the model, :class:`Overlap`'s fields and ``scored``;
        null where the checkpoint records no splits), ``overlap_note`` ("" where none),
        ``changed`` (the run's own data: each split scored whose images changed under the
        same names since the model was trained, :class:`~segkit.training.checkpoint.Changed`'s
        fields; empty where none or unknown) and ``changed_notes`` (their lines)."""
        o = self.overlap
        return {
            "checkpoint": None if checkpoint is None else str(checkpoint),
            "split": self.split,
            "data": None if self.data is None else str(self.data),
            "classes": list(self.task.classes) if self.task.multiclass else None,
            "metrics": {**_plain(self.metrics), "images": int(self.metrics["images"])},
            "where": self.where,
            "modes": dict(self.modes),
            "how": self.how.strip(" ;,"),
            "split_note": self.split_note(),
            "overlap": None if o is None else {**dataclasses.asdict(o), "scored": o.scored},
            "overlap_note": self.overlap_note() or "",
            "changed": [{**dataclasses.asdict(c), "names": list(c.names)} for c in self.changed],
            "changed_notes": self.changed_notes(),
        }

    def lines(self) -> list[str]:
        """What ``segkit evaluate`` prints: the per-class table for K classes (with the
        share of the truth's pixels ignored, ``ignored: 3.1% of pixels (12403 pixels,
        value 255)``), then one line of scores."""
        m = self.metrics
        loss = f"  loss {m['loss']:.4f}" if "loss" in m else ""
        tail = f"({int(m['images'])} images, {self.data}; {self.where}{self.how})"
        if not self.task.multiclass:
            line = f"{self.split} dice {m['dice']:.4f}  iou {m['iou']:.4f}{loss}  {tail}"
            if not m.get("empty_truth"):
                return [line]
            scores = {**m, "dice_per_image": m["dice"]}
            nothing = predicts_nothing(scores, self.split)
            warn = [f"segkit: warning: {nothing}"] if nothing else []
            return [line, detection_line(scores, self.split), *warn]

        return [
            confusion_table(m, list(self.task.classes), self.ignored_as or None),
            f"{self.split} mIoU {m['miou']:.4f}  mDice {m['mdice']:.4f}  "
            f"pixel acc {m['pixel_acc']:.4f}{loss}  {tail}",
        ]


def _plain(value: Any) -> Any:
    """``value`` with tensors, NumPy numbers and tuples made JSON's lists and numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return _plain(value.tolist())
    return value


@checked_keywords("segkit.evaluate", EvaluateOptions)
def evaluate(checkpoint: str | Path, split: str = "auto", **options: Any) -> Evaluated:
    """Score a checkpoint on a split of its dataset, or of another one with the same
    classes (``segkit evaluate``).

    Args:
        checkpoint: A run's ``best.pt`` or ``last.pt``.
        split: ``train``, ``valid``, ``test``, ``all`` (every image of every split), or
            ``auto`` (the default): ``all`` for data whose samples are not the ones the
            model was trained on, else ``test`` (:func:`choose_split`), less the images
            that trained it (:attr:`Evaluated.overlap` counts them; a split asked for is
            scored whole, and counted).
        **options: The other fields of :class:`~segkit.inference.options.EvaluateOptions`:
            run settings over the checkpoint's (``data``, ``dataset``,
            ``dataset_options``, ``loader``, ``batch_size``, ``num_workers``,
            ``eval_size``), ``device`` and ``precision``, and the predictor's (``mode``,
            ``tta``, ``tile``, ``overlap``, ``blend``).

    Raises:
        CheckpointError: the checkpoint cannot be opened.
        ConfigError: a bad option, or data whose classes are not the model's;
            UnknownSettingError (also a TypeError): a keyword no option has, with its
            close match.
        DataError: an image or mask cannot be read.
    """
    return run_evaluate(EvaluateOptions(checkpoint=checkpoint, split=split, **options))


def run_evaluate(options: EvaluateOptions) -> Evaluated:
    """:func:`evaluate` with its options made (what ``segkit evaluate`` calls)."""
    trained = open_trained(options.checkpoint, **options.overrides())
    trained.check_threshold(options.threshold, EvaluateOptions.threshold)
    config = trained.config
    assert config is not None  # opened from a checkpoint
    if options.data is None:  # the checkpoint's own data
        check_recorded_data(config, str(trained.path))
    dataset = build_dataset(config)
    split, chosen = choose_split(trained, dataset, options.split)
    # Listed once here, so a dataset plugin's own exception in samples() is named (with
    # the plugin) before a loader or the predictor lists the split (for all: each split;
    # an empty one, which the layout refuses to list, is left out of all).
    for name in SPLITS if split == "all" else (split,):
        try:
            split_samples(dataset, name, config.resolved_dataset())
        except DataError:
            if split != "all":
                raise
    _check_classes(trained, dataset)
    # Every image: the loaders read the "test" split of a view that holds all of them.
    scored, read = (EverySplit(dataset), "test") if split == "all" else (dataset, split)
    now = _fingerprints_now(trained, scored, read)
    overlap, seen = find_overlap(
        trained, scored, read, split, left_out=options.split == "auto", now=now
    )
    changed = find_changed(trained, dataset, split, now)
    if overlap is not None and overlap.left_out and overlap.seen:
        if not overlap.scored:
            raise DataError(_only_training_images(overlap, dataset.root))
        scored = Without(scored, seen)
    plan = build_eval_plan(config, trained.recipe)
    modes: Counter[str] = Counter()
    try:
        if options.through_predictor:
            predictor = Predictor.of(trained, options.predictor(config.batch_size))
            metrics = evaluate_images(
                predictor, scored, read, modes=modes, threshold=options.threshold
            )
            mode = mode_line(predictor.mode, modes)
            how = f", mode {mode}, tta {predictor.tta}, scored at each image's size"
        else:
            metrics = _loader_metrics(trained, scored, plan, read, options.threshold)
            how = f", eval size {plan.eval_size}: {plan.describe()}" if plan.native else ""
        if options.threshold != EvaluateOptions.threshold:
            how += f", threshold {options.threshold:g}"
    except DataError as e:
        # Data labelled with other classes: the mask reader's MaskValuesError (values
        # outside the classes, or an RGB mask's colours outside the palette). The words
        # are a fallback for a loader plugin that re-raises its workers' errors as a plain
        # DataError of the same message (the built-in loaders keep the type).
        text = str(e)
        if not (
            isinstance(e, MaskValuesError) or VALUES_OUTSIDE in text or COLOURS_OUTSIDE in text
        ):
            raise
        colours = getattr(e, "colours", ()) or COLOURS_OUTSIDE in text
        held = (
            "colours outside its palette: the folder is likely labelled with other classes "
            "or colours than the model's; evaluate on data with the model's classes, or "
            "declare the colours this data uses (its classes.txt, or "
            f"{named_options('dataset_options', {'palette': '...'})})"
            if colours
            else "other values: the folder is likely labelled with other classes than the "
            "model's (a K-class set read by a binary layout?); evaluate on data with the "
            f"model's classes, or name the layout that reads it with {named('dataset')} (and "
            f"its {named('dataset_options')})"
        )
        raise MaskValuesError(
            f"{e}. The model predicts {trained.task.describe()} and dataset "
            f"'{config.resolved_dataset()}' reads {dataset.root} as "
            f"{Task.of(dataset).describe()}, but these masks hold {held}",
            getattr(e, "values", ()),
            getattr(e, "path", None),
            getattr(e, "colours", ()),
        ) from None
    runtime = trained.runtime
    where = f"{runtime.device}, {runtime.precision.name}"
    return Evaluated(
        split,
        metrics,
        trained.task,
        dataset.root,
        where,
        how,
        dict(modes),
        ignored_as(dataset.mask_spec),
        _split_sizes(dataset),
        chosen,
        overlap,
        changed,
    )


def _fingerprints_now(trained: Trained, dataset: Any, read: str) -> dict[str, int | None]:
    """Image file -> :func:`~segkit.training.checkpoint.image_fingerprint` of the images of
    ``dataset``'s split ``read``, taken once for :func:`find_overlap` and
    :func:`find_changed` (files hashed before, unchanged, are not read again); {} where the
    checkpoint records no fingerprints to compare them with."""
    if not isinstance(trained.trained_on.get("fingerprints"), dict):
        return {}
    samples = list(dataset.samples(read))
    prints = ckpt_io.fingerprints_of(samples)
    return {str(s.image): f for s, f in zip(samples, prints, strict=True)}


def find_overlap(
    trained: Trained,
    dataset: Any,
    read: str,
    split: str,
    *,
    left_out: bool,
    now: dict[str, int | None] | None = None,
) -> tuple[Overlap | None, set[str]]:
    """The images of ``dataset``'s split ``read`` (``split`` as asked of the folder)
    that trained the model, by the fingerprints its checkpoint records, and their image
    files (to leave out, where ``left_out``). None where the checkpoint records no split;
    not ``checked`` where it records splits but no fingerprints. ``now``: the images'
    fingerprints (:func:`_fingerprints_now`), taken here where not given."""
    prints = trained.trained_on.get("fingerprints")
    if not isinstance(prints, dict):
        if not trained.trained_on.get("splits"):
            return None, set()
        try:
            images = len(dataset.samples(read))
        except DataError:
            images = 0
        return Overlap(split, images, checked=False), set()
    samples = list(dataset.samples(read))
    if now is None:
        now = _fingerprints_now(trained, dataset, read)
    trained_by = {
        name: set(prints[name].tolist()) if name in prints else set() for name in ("train", "valid")
    }
    counts = {"train": 0, "valid": 0}
    seen: set[str] = set()
    for sample in samples:
        fingerprint = now.get(str(sample.image))
        for name, known in trained_by.items():
            if fingerprint is not None and fingerprint in known:
                counts[name] += 1
                seen.add(str(sample.image))
                break
    return Overlap(split, len(samples), **counts, left_out=left_out), seen


def find_changed(
    trained: Trained, dataset: Any, split: str, now: dict[str, int | None]
) -> tuple[ckpt_io.Changed, ...]:
    """The images of the run's own data (the same samples as the splits its checkpoint
    records) whose bytes are not those of their split when the model was trained, for
    the split scored (each split for ``all``; :func:`~segkit.training.checkpoint.changed_images`);
    ``now``: the images' fingerprints (:func:`_fingerprints_now`). Empty where the data
    is other samples, or the checkpoint records no fingerprints (:class:`Overlap` says so)."""
    recorded = trained.trained_on.get("fingerprints")
    if not isinstance(recorded, dict) or not now:
        return ()
    splits = trained.trained_on.get("splits")
    if not splits or splits != ckpt_io.split_record(dataset):
        return ()
    found = []
    for name in SPLITS if split == "all" else (split,):
        try:
            samples = list(dataset.samples(name))
        except DataError:  # a split the layout refuses to list (an empty one)
            continue
        pairs = [(s, now.get(str(s.image))) for s in samples]
        changed = ckpt_io.changed_images(recorded, name, pairs)
        if changed is not None:
            found.append(changed)
    return tuple(found)


def _only_training_images(overlap: Overlap, root: Any) -> str:
    """The error for ``split="auto"`` on images that all trained the model."""
    what = (
        f"its {plural(overlap.images, 'image')}"
        if overlap.split == "all"
        else f"the {plural(overlap.images, 'image')} of its {overlap.split} split"
    )
    where = ", ".join(
        f"{n} in its {name} split"
        for n, name in ((overlap.train, "train"), (overlap.valid, "valid"))
        if n
    )
    return (
        f"{root}: every one of {what} trained this model ({where}): their scores would say "
        "how well it remembers them, not how it does on images it has not seen. Evaluate "
        f"it on other images, or pass {named('split', overlap.split, as_typed=True)} to "
        "score these anyway (scores that flatter it)"
    )


class Without:
    """A :class:`~segkit.contracts.Dataset` holding ``dataset``'s samples but those whose
    image file is one of ``images``: what ``split="auto"`` scores of a folder holding
    images that trained the model."""

    def __init__(self, dataset: Any, images: set[str]) -> None:
        self.dataset = dataset
        self.images = images
        self.root = dataset.root
        self.mask_spec: MaskSpec = dataset.mask_spec

    def samples(self, split: str) -> list[Any]:
        return [s for s in self.dataset.samples(split) if str(s.image) not in self.images]

    def __repr__(self) -> str:
        return f"Without({self.dataset!r}, {len(self.images)} images)"


#: Why ``split="auto"`` chose what it chose (:func:`choose_split`), as the note says it.
OWN_DATA = "the data the model was trained on (the same samples), whose other splits trained it"
SAME_FOLDER = (
    "the folder the model was trained on (its files changed since), whose other splits trained it"
)
UNKNOWN_DATA = (
    "the checkpoint records no split of its run to tell whether the model was trained on "
    "this folder"
)
NEW_DATA = "its samples are not the ones the model was trained on"
OWN_ALL = (
    "the data the model was trained on, whose train and valid splits trained it: these "
    "scores flatter it"
)


def choose_split(trained: Trained, dataset: Any, asked: str) -> tuple[str, str]:
    """The split to score and, for ``asked == "auto"``, why (for ``all`` asked of the
    run's own data, that it is; else ""): ``all`` of data
    whose samples differ from those the checkpoint's run recorded (new labelled images:
    none of them trained the model), ``test`` of the run's own data (the same split
    record, or the folder it trained on, changed since: its other splits trained the
    model, and scoring them would flatter it) and of data it cannot tell (a checkpoint
    that records no split, or a dataset that lists no samples)."""
    if asked == "all":  # as asked; where it holds the run's own data, the line says so
        own = choose_split(trained, dataset, "auto")[1] in (OWN_DATA, SAME_FOLDER)
        return "all", OWN_ALL if own else ""
    if asked != "auto":
        return asked, ""
    recorded = trained.trained_on.get("splits")
    now = ckpt_io.split_record(dataset)
    if now is not None and recorded == now:
        return "test", OWN_DATA
    root = trained.trained_on.get("data_root")
    if root is not None and _same_folder(root, getattr(dataset, "root", None)):
        return "test", SAME_FOLDER
    if recorded is None or now is None:
        return "test", UNKNOWN_DATA
    return "all", NEW_DATA


def _same_folder(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` name the same existing folder."""
    try:
        return b is not None and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, TypeError, ValueError):
        return False


class EverySplit:
    """A :class:`~segkit.contracts.Dataset` whose ``test`` split holds every sample of
    ``dataset`` (train, valid, then test; a sample listed in two splits once), its other
    splits as they are: what ``split="all"`` has a loader read."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.root = dataset.root
        self.mask_spec: MaskSpec = dataset.mask_spec

    def samples(self, split: str) -> list[Any]:
        if split != "test":
            return self.dataset.samples(split)
        seen: dict[str, Any] = {}
        for name in SPLITS:
            try:
                listed = self.dataset.samples(name)
            except DataError:  # a split the layout refuses to read (an empty one)
                continue
            for sample in listed:
                seen.setdefault(str(sample.id), sample)
        return list(seen.values())

    def __repr__(self) -> str:
        return f"EverySplit({self.dataset!r})"


def _split_sizes(dataset: Any) -> dict[str, int]:
    """The images of each split of ``dataset``; a split the layout refuses to read (an
    empty one), or a plugin's dataset fails to list, counts 0: the line these sizes make
    comes after the scores, and says only where they came from."""
    sizes = {}
    for split in SPLITS:
        try:
            sizes[split] = len(dataset.samples(split))
        except Exception:  # noqa: BLE001 -- a plugin's KeyError for a split it lacks, too
            sizes[split] = 0
    return sizes


def ignored_as(spec: MaskSpec) -> str:
    """What marks ignored pixels in masks of ``spec``: ``value 255``, ``values 254, 255``,
    with ``colour (255, 255, 255)`` where RGB masks mark them by a colour; "" where
    nothing does (binary, or ``ignore=null``)."""
    if not spec.is_multiclass or not spec.has_ignore:
        return ""
    values = spec.ignore_values
    words = f"value{'s' if len(values) > 1 else ''} {', '.join(map(str, values))}"
    if spec.ignore_color is not None:
        words += f", colour ({', '.join(map(str, spec.ignore_color))}) in RGB masks"
    return words


def _check_classes(trained: Trained, dataset: Any) -> None:
    """Raises:
    ConfigError: the dataset's classes are not the ones the model predicts."""
    data_task = Task.of(dataset)
    if data_task.classes == trained.task.classes:
        return
    assert trained.config is not None
    now = trained.config.resolved_dataset()
    raise ConfigError(
        f"{trained.path}: the model predicts {trained.task.describe()}, but dataset "
        f"'{now}' {dataset.root} is {data_task.describe()}; "
        "evaluate it on data with the same classes "
        f"({named_options('dataset_options', {'target': '...'})} where the "
        f"dataset offers one){_trained_on(trained, now)}"
    )


def _trained_on(trained: Trained, now: str) -> str:
    """``; the model was trained on dataset 'synthetic' with --dataset-opt variant=collar:
    ...`` where the checkpoint's own dataset plugin is not ``now`` (a ``--data`` folder
    recognised as another layout drops the checkpoint's options: the classes they chose
    go with them), else ""."""
    try:
        recorded = RunConfig.from_dict(ckpt_io.load(trained.path)["config"])
        own = recorded.resolved_dataset()
    except Exception:  # noqa: BLE001 -- only a hint: the error stands without it
        return ""
    if own == now:
        return ""
    made = _generate_options(own)
    opts = {
        k: ",".join(map(str, v)) if isinstance(v, list | tuple) else v
        for k, v in recorded.dataset_options.items()
        if k not in made
    }
    given = f" with {named_options('dataset_options', opts)}" if opts else ""
    chose = f" and the {named('dataset_options')} that chose its classes" if opts else ""
    return (
        f"; the model was trained on dataset '{own}'{given}: if the folder is of that kind, "
        f"pass {named('dataset', own, as_typed=True)}{chose}"
    )


def _generate_options(dataset: str) -> tuple[str, ...]:
    """The options dataset plugin ``dataset`` declares as choosing only what it generates
    (``generate_options``: ``count``, ``seed``, ``size`` of the synthetic set), which do
    not change how a folder is read; () where it declares none or cannot be loaded."""
    try:
        factory = default_registry().get("datasets", dataset)
    except Exception:  # noqa: BLE001 -- only a hint: every option is suggested then
        return ()
    made = capability("datasets", factory, "generate_options")
    return tuple(made) if isinstance(made, tuple | list) else ()


def _loader_metrics(
    trained: Trained, dataset: Any, plan: EvalPlan, split: str, threshold: float = 0.5
) -> dict[str, Any]:
    """The split read by the run's loader and scored as the run scored it (the loss
    included; a binary model's Dice and IoU at ``threshold``)."""
    config, runtime, task = trained.config, trained.runtime, trained.task
    assert config is not None
    loader = build_eval_loader(config, runtime, dataset, plan, split)
    forward = forward_for(
        plan,
        image_size=trained.image_size,
        model=trained.model,
        precision=runtime.precision,
        channels_last=runtime.channels_last,
        channels=task.num_classes,
    )
    loss = build_loss(config, dataset, runtime.num_workers or None)
    context = EvalContext(runtime, task=task, forward=forward, loss_fn=loss)
    meter = task.meter(runtime.device, per_image=not task.multiclass)
    scored = _Thresholded(meter, threshold) if threshold != 0.5 else meter
    return {**loader_scores(trained.model, loader, context, meter=scored), **_image_level(meter)}


class _Thresholded:
    """A binary meter that scores ``logit > logit(threshold)`` (probability over
    ``threshold``) instead of ``logit > 0``; the loss it is given is the run's own."""

    def __init__(self, meter: Any, threshold: float) -> None:
        self.meter = meter
        self.shift = math.log(threshold / (1 - threshold))

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: Any = None) -> None:
        self.meter.update(logits - self.shift, target, loss)

    def compute(self) -> dict[str, Any]:
        return self.meter.compute()


def _image_level(meter: Any) -> dict[str, int]:
    """A binary pass's image-level counts (``empty_truth``, ``missed``, ``false_alarms``);
    nothing for K classes (whose meter keeps no per-image counts here)."""
    if not getattr(meter, "keep_per_image", False):
        return {}
    scores = side_by_side(meter.per_image_counts(), binary=True)
    return {k: scores[k] for k in ("empty_truth", "missed", "false_alarms")}


@torch.no_grad()
def evaluate_images(
    predictor: Predictor,
    dataset: Any,
    split: str,
    *,
    modes: Counter[str] | None = None,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Score ``predictor`` on ``split`` with every image at its own size (mode, tiles and
    flips as the predictor is set), the way ``segkit predict`` sees it. Returns the task
    meter's result (:meth:`segkit.task.Task.meter`): Dice, IoU (mDice, mIoU and per class
    for K classes) and ``images``; no loss. ``modes``, if given, counts the images each
    mode served; a binary model's pixels are foreground over ``threshold``.

    Raises:
        DataError: an image or mask cannot be read.
    """
    task = predictor.task
    meter = task.meter(predictor.device, per_image=not task.multiclass)
    samples = split_samples(dataset, split)
    reads = read_parallel(
        samples, lambda s: read_sample(s, dataset.mask_spec), predictor.num_workers
    )

    def images() -> Iterator[tuple[np.ndarray | None, np.ndarray | Exception]]:
        for _, got in reads:
            yield (None, got) if isinstance(got, Exception) else (got[1], got[0])

    for mask, image, probs in predictor.predict_many(images()):
        if isinstance(image, Exception):
            raise image
        assert probs is not None and mask is not None
        if modes is not None:
            modes[predictor.mode_for(*image.shape[:2])] += 1  # what predict_many just did
        p = torch.from_numpy(probs).to(predictor.device)
        logits = as_logits(p[None] if task.multiclass else p[None, None], task.multiclass)
        if threshold != 0.5:
            logits = logits - math.log(threshold / (1 - threshold))
        m = torch.from_numpy(mask).to(predictor.device)
        target = task.target(m[None] if task.multiclass else m[None, None].float())
        meter.update(logits, target)
    scores = meter.compute()
    scores.pop("loss", None)  # the meter's NaN: no loss was given
    return {**scores, **_image_level(meter)}


def as_logits(probs: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """Probabilities back to logits a meter or loss takes: ``log(p / (1 - p))`` (binary:
    positive exactly where ``p > 0.5``), ``log(p)`` for K classes (same argmax, and
    ``log_softmax(log p) = log p``). Clamped away from 0 and 1 so they stay finite."""
    if multiclass:
        return probs.clamp_min(1e-12).log()
    p = probs.clamp(1e-7, 1 - 1e-7)
    return p.log() - (-p).log1p()
