"""The run configuration: one dataclass, validated once at the edge.

Every field carries its own documentation in ``metadata`` (help text, command-line group,
flag); the ``segkit run`` command line is generated from it (:mod:`segkit.cli`), so a new
field is one line here and nowhere else. String choices are ``Literal`` types: the
command line's ``choices``, the checks in :meth:`RunConfig.validate` and the precision
module all read them from here.

A configuration file (``segkit run --config FILE``) is the same dataclass in TOML, YAML
or JSON (by the file's suffix, as recipe files): field names as keys, ``*_options`` as
tables. A run folder's ``config.json`` is such a file; its ``resolved`` part (what
``auto`` became) is informative and ignored. A bad value is reported where it was given:
``image_size=0`` for a keyword argument in Python, ``--image-size 0`` for a flag (the
``segkit`` command runs in :func:`given_as` ``(COMMAND_LINE)``), ``c.yaml: key
'image_size' = 0`` for a file's key (:func:`named` names the first two); every bad value
at once, one line each (:func:`all_errors`). A keyword no field has
(``RunConfig(imagesize=64)``) raises :class:`~segkit.errors.UnknownSettingError`, a
ConfigError and a TypeError, with the close match.

``data`` is made absolute when the configuration is checked (the folder as typed is kept
in ``data_as_typed``), so a run folder's ``config.json`` and its checkpoints name the
dataset from any directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import json
import math
import os
import re
import shlex
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from segkit import recipes
from segkit.data.layouts import detect_layout
from segkit.errors import ConfigError, DataError, MainGuardError, UnknownSettingError
from segkit.recipes import Recipe
from segkit.wording import COMMAND_LINE as COMMAND_LINE  # re-exported: segkit.config's own
from segkit.wording import PYTHON as PYTHON
from segkit.wording import given as given
from segkit.wording import given_as as given_as
from segkit.wording import named_as

PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
ScheduleName = Literal["exponential", "cosine"]
OnNan = Literal["stop", "skip"]
MonitorName = Literal[
    "auto",
    "valid_dice",
    "valid_iou",
    "valid_miou",
    "valid_mdice",
    "valid_loss",
    "valid_dice_dataset",
]
LogName = Literal["csv", "tensorboard"]
EvalSizeName = Literal["auto", "native", "resize"]
CudaGraphsName = Literal["auto", "on", "off"]
LastBatchName = Literal["drop", "keep"]

#: Values of ``precision``; ``auto`` is bf16 on GPUs that support it, else fp32.
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)
#: Values of ``schedule``.
SCHEDULES: tuple[str, ...] = get_args(ScheduleName)
#: Values of ``eval_size`` (see :mod:`segkit.inference.native`).
EVAL_SIZES: tuple[str, ...] = get_args(EvalSizeName)
#: Values of ``cuda_graphs`` (see :mod:`segkit.training.graph_policy`).
CUDA_GRAPHS: tuple[str, ...] = get_args(CudaGraphsName)
#: Values of ``last_batch``: what training does with an epoch's last partial batch.
LAST_BATCHES: tuple[str, ...] = get_args(LastBatchName)

# Prediction settings (segkit.inference.predictor, segkit.inference.tiling), here so the CLI lists them
# without importing torch.
PredictMode = Literal["auto", "resize", "tile", "whole"]
TTAName = Literal["none", "flip", "flip_hv"]
BlendName = Literal["gaussian", "linear"]
PREDICT_MODES: tuple[str, ...] = get_args(PredictMode)
TTAS: tuple[str, ...] = get_args(TTAName)
BLENDS: tuple[str, ...] = get_args(BlendName)

#: The one table of built-in plugin defaults: the only place the core names a plugin.
#: ``generated_dataset`` serves runs without ``--data`` (it must declare ``generate``) and
#: ``segkit data synth``. A ``--data`` folder's layout is recognised instead
#: (:func:`segkit.data.layouts.detect_layout`); ``dataset`` is what ``segkit data fetch``
#: downloads, and what a run folder recorded by an older segkit with ``data`` and no
#: ``dataset`` was read with.
DEFAULTS: dict[str, str] = {
    "model": "unet",
    "loss": "bce_dice",
    "multiclass_loss": "ce_dice",
    "recipe": "type3",
    "loader": "albumentations",
    "dataset": "oxford_pet",
    "generated_dataset": "synthetic",
    # segkit plan's choices (segkit/plan/rules.py and docs/plan.md say why each):
    "plan_model": "timm_unet",
    "plan_encoder": "resnet18",
    "native_recipe": "microscopy",
    "light_recipe": "type1",
}

#: Old configuration keys, still read: old name -> field.
RENAMED_KEYS: dict[str, str] = {"augment": "recipe"}


def _opt(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    group: str = "training",
    flag: str | None = None,
    metavar: str | None = None,
    factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its command-line documentation in ``metadata``."""
    meta = {"help": help, "group": group, "flag": flag, "metavar": metavar}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _keywords_checked(cls: type) -> type:
    """Make the dataclass ``cls``'s ``__init__`` refuse a keyword no field has with an
    :class:`UnknownSettingError` naming its close match (Python's own TypeError names
    none), among every bad value of the other keywords."""
    generated = cls.__init__

    @functools.wraps(generated)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = {k: v for k, v in kwargs.items() if k not in names}
        if unknown:
            given = dict(zip(names, args, strict=False))  # positional: the first fields
            known = {**given, **{k: kwargs[k] for k in kwargs if k in names}}
            errors = [_unknown_fields(unknown)]
            errors += _setting_errors({**_defaults(), **known}, _Where(PYTHON))[1]
            raise all_errors(errors, UnknownSettingError)
        generated(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[misc]
    return cls


@_keywords_checked
@dataclass
class RunConfig:
    """Everything that defines a training run. Written to ``config.json`` in the run folder
    and into every checkpoint.

    Plugin names (``model``, ``loss``, ``recipe``, ``loader``, ``dataset``) are
    entry-point names; ``*_options`` are passed to the plugin's factory as keyword
    arguments. ``dataset=None`` means the layout the ``data`` folder is recognised as
    (:meth:`resolved_dataset`), and :data:`DEFAULTS` ``["generated_dataset"]`` without
    ``data``.

    A keyword no field has raises :class:`~segkit.errors.UnknownSettingError` (a
    :class:`~segkit.errors.ConfigError` and a ``TypeError``) naming the close match; a
    bad value raises ConfigError naming it as it was given (``image_size='64'``), every
    bad value at once.
    """

    model: str = _opt(DEFAULTS["model"], "model plugin", group="plugins")
    model_options: dict[str, Any] = _opt(
        factory=dict, help="option for the model factory", group="plugins", flag="--model-opt"
    )
    loss: str = _opt(
        "auto",
        f"loss plugin (auto: {DEFAULTS['loss']} for a binary dataset, "
        f"{DEFAULTS['multiclass_loss']} for K classes)",
        group="plugins",
    )
    loss_options: dict[str, Any] = _opt(
        factory=dict, help="option for the loss factory", group="plugins", flag="--loss-opt"
    )
    recipe: str = _opt(
        DEFAULTS["recipe"],
        "augmentation recipe: a recipe plugin's name, or a recipe file (.toml, .yaml, .json)",
        group="plugins",
        metavar="NAME_OR_FILE",
    )
    recipe_definition: dict[str, Any] | None = _opt(
        None,
        "the recipe file's contents, read when --recipe names a file: a run folder rebuilds "
        "its recipe from this, without the file",
        group="recorded",
    )
    loader: str = _opt(DEFAULTS["loader"], "loader plugin", group="plugins")
    loader_options: dict[str, Any] = _opt(
        factory=dict, help="option for the loader factory", group="plugins", flag="--loader-opt"
    )
    dataset: str | None = _opt(
        None,
        "dataset plugin (default: the layout the --data folder is recognised as, "
        f"{DEFAULTS['generated_dataset']} without --data)",
        group="plugins",
    )
    dataset_options: dict[str, Any] = _opt(
        factory=dict,
        help="option for the dataset, e.g. count=800",
        group="plugins",
        flag="--dataset-opt",
    )
    data: str | None = _opt(
        None,
        "dataset folder (default: a generated synthetic set in the cache); recorded absolute",
        metavar="DIR",
    )
    data_as_typed: str | None = _opt(
        None,
        "--data as it was typed: data holds it made absolute, so a run folder names its dataset "
        "from any directory; a missing folder's message names both",
        group="recorded",
    )
    epochs: int = _opt(50, "training epochs (with --resume: extend the run to this many)")
    batch_size: int = _opt(16, "images per batch")
    lr: float = _opt(1e-3, "Adam learning rate")
    lr_gamma: float = _opt(0.99, "decay per epoch for --schedule exponential")
    schedule: ScheduleName = _opt(
        "exponential",
        "exponential: the lab's ExponentialLR(--lr-gamma) per epoch; cosine: per-step decay "
        "from --lr to 0 at the last step",
    )
    warmup_epochs: float = _opt(
        0.0, "linear warm-up of the learning rate over this many epochs, fractions allowed"
    )
    weight_decay: float = _opt(0.0, "Adam weight decay")
    accumulate: int = _opt(
        1,
        "sum the gradients of N batches per optimizer step (an effective batch of N x "
        "--batch-size); the schedule counts optimizer steps",
        metavar="N",
    )
    ema: float | None = _opt(
        None,
        "keep an exponential moving average of the weights with this decay (e.g. 0.999); "
        "validation, best.pt and the test use it",
        metavar="DECAY",
    )
    precision: PrecisionName = _opt("auto", "auto = bf16 on GPUs that support it, else fp32")
    image_size: int = _opt(256, "square training size")
    crops_per_image: int = _opt(
        1,
        "random crops of each train image an epoch, each with its own augmentation: an "
        "epoch is N x the train images (the schedule, steps and progress count them). Only "
        "for a recipe that trains on crops at the images' own resolution (microscopy, or a "
        "recipe file ending its sizing with RandomCrop): large images, small crops",
        metavar="N",
    )
    crop_foreground: float = _opt(
        0.0,
        "the share of the recipe's crops centred on a foreground pixel (a class drawn among "
        "those the mask holds, then one of its pixels; the rest uniform), e.g. 0.33 for "
        "sparse structures, as nnU-Net. Only for a recipe that trains on crops at the "
        "images' own resolution (microscopy, or a recipe file ending its sizing with "
        "RandomCrop); it sets RandomCrop's foreground",
        metavar="F",
    )
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N")
    seed: int = _opt(0, "seed of weights, shuffles and augmentations")
    num_workers: int | None = _opt(
        None, "loader workers (default: on a GPU every core but two, else one per core up to 8)"
    )
    threads: str | int = _opt(
        "auto",
        "torch's CPU threads in this process: N, or auto (torch's default, one per core; on a "
        "machine busy with other work, the cores its load average leaves free, at least one, "
        "and a line says so)",
        metavar="N",
    )
    channels_last: bool | None = _opt(None, "NHWC memory format (default: on for CUDA)")
    compile: bool = _opt(False, "torch.compile the model")
    cuda_graphs: CudaGraphsName = _opt(
        "auto",
        "capture the training step once as a CUDA graph and replay it every batch (it pays "
        "where the host, not the GPU, limits the step): on (a run that cannot is refused, "
        "saying why), off, or auto (captured where on would be, then kept only if 8 timed "
        "replays beat 8 timed eager steps by 5%; a line gives both times)",
    )
    last_batch: LastBatchName = _opt(
        "drop",
        "the training epoch's last partial batch: drop (one batch shape, for cudnn's "
        "autotuner and --cuda-graphs; the order reshuffles every epoch, so the images left "
        "out change) or keep (every image every epoch; a last batch of one image is "
        "dropped anyway: batch norm cannot train on it). Validation and test keep every image",
    )
    eval_size: EvalSizeName = _opt(
        "auto",
        "resolution of validation and test: native (each whole image at its own size, "
        "scored on its original mask; a resizing recipe's model sees it resized to "
        "--image-size and its prediction is resized back), resize (the recipe's resized "
        "evaluation, the lab's), auto (native when the recipe's eval ops set no size, "
        "else resize)",
    )
    validate_every: int = _opt(1, "validate every K epochs (and after the last)", metavar="K")
    monitor: MonitorName = _opt(
        "auto",
        "the validation metric that picks best.pt and drives --patience (auto: valid_dice, "
        "or valid_dice_dataset for a binary set with 20% or more of its train masks empty "
        "(the valid pixels pooled: predicting nothing scores 0, not the share of empty "
        "masks), or valid_miou for K classes; loss: lower is better)",
    )
    patience: int | None = _opt(
        None,
        "stop after N validations in a row without an improvement of more than --min-delta "
        "(default: never); best.pt is then tested as usual",
        metavar="N",
    )
    min_delta: float = _opt(
        0.0,
        "the least change of --monitor that counts as an improvement for --patience",
        metavar="D",
    )
    max_time: str | None = _opt(
        None,
        "stop training before an epoch expected to end after this long from the start "
        "(20m, 1h30m, 90s; set-up, validation and checkpoints count, the test and reports "
        "after training do not); best.pt is then tested as usual (default: no limit)",
        metavar="DURATION",
    )
    save_every: int = _opt(
        1,
        "write last.pt (the training state --resume continues from) every K epochs and "
        "after the last; a crash redoes up to K-1 epochs more. best.pt is written whenever "
        "validation improves",
        group="output",
        metavar="K",
    )
    keep_last: bool = _opt(
        False,
        "keep last.pt (the training state, 3x the size of best.pt with Adam) when the run "
        "finishes, so that --resume --epochs can extend it; by default a finished run "
        "deletes it, keeping best.pt and the reports (an interrupted run keeps it for "
        "--resume)",
        group="output",
    )
    on_nan: OnNan = _opt("stop", "a NaN/inf loss stops the run, or skips the step")
    skip_bad_samples: bool = _opt(
        False,
        "decode every file first and leave unreadable ones out (listed in bad_samples.txt) "
        "instead of stopping; masks that read but hold other values still stop the run",
    )
    out: str = _opt("runs", "parent folder of run folders", group="output", metavar="DIR")
    name: str | None = _opt(None, "run folder name (default: <model>-<time>)", group="output")
    grid_images: int = _opt(8, "test images in predictions.png", group="output", metavar="N")
    profile: int = _opt(
        0,
        "profile N training steps of the run's first epoch (after its first 5) with "
        "torch.profiler: profile.txt says how the time splits between waiting for data and "
        "the step, how busy the device was, and the top operators and kernels; "
        "profile-trace.json opens in https://ui.perfetto.dev (0: off)",
        group="output",
        metavar="N",
    )
    log_every: float = _opt(
        30.0,
        "seconds between progress lines when the output is not a terminal (nohup, CI, "
        "cluster jobs; 0: none); a terminal gets a progress bar",
        group="output",
        metavar="SECONDS",
    )
    log: LogName = _opt(
        "csv",
        "csv: metrics.csv; tensorboard: metrics.csv and TensorBoard event files in "
        "<run>/tensorboard (needs pip install 'segkit[tensorboard]')",
        group="output",
    )
    log_images_every: int = _opt(
        5,
        "with --log tensorboard: the prediction grid of the first validation images every N "
        "epochs and after the last (0: none)",
        group="output",
        metavar="N",
    )

    def __post_init__(self) -> None:

        if self.recipe_definition is None and recipes.is_recipe_file(self.recipe):
            self.recipe_definition = recipes.read_recipe_file(self.recipe)
        self.validate()
        if self.recipe_definition is not None:  # a bad file fails here, before any slow step
            self.recipe_object()

    def recipe_object(self) -> Any:
        """The :class:`segkit.recipes.Recipe` of ``recipe_definition`` (a recipe file's);
        ``None`` for a recipe plugin (see :func:`segkit.build.build_recipe`)."""

        if self.recipe_definition is None:
            return None
        return Recipe.from_dict(
            self.recipe_definition, image_size=self.image_size, source=self.recipe
        )

    def validate(self) -> None:
        """Check types and values that do not depend on plugins, and make ``data``
        absolute (``data_as_typed`` keeps it as typed).

        Raises:
            ConfigError: a value has the wrong type or is out of range; the message names
                the field as Python gives it (``image_size=0``), or its flag in the
                ``segkit`` command (:func:`given_as`); a configuration read with
                :meth:`from_dict` or :meth:`from_file` names the file and key instead.
        """
        checked = _check_settings({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        for key, value in checked.items():
            if value is not getattr(self, key):
                setattr(self, key, value)

    @property
    def max_time_s(self) -> float | None:
        """``max_time`` in seconds (None: no limit)."""
        if self.max_time is None:
            return None
        return parse_duration(self.max_time, named("max_time"))

    def resolved_dataset(self) -> str:
        """The dataset plugin's name: ``dataset``; else, with ``data``, the one installed
        layout that recognises the folder (:func:`segkit.data.layouts.detect_layout`);
        else the generating default. A run records the name it used, so a run folder
        never needs to look again.

        Raises:
            DataError: ``data`` is given without ``dataset`` and is not a folder, or no
                layout (or more than one) recognises it; the message names the layouts.
        """
        if self.dataset:
            return self.dataset
        if not self.data:
            return DEFAULTS["generated_dataset"]

        return detect_layout(Path(self.data).expanduser())

    def check_dataset_options(self, name: str) -> None:
        """Refuse a key of ``dataset_options`` that dataset plugin ``name`` (as
        :meth:`resolved_dataset` gives it) does not take, as :meth:`from_dict` with
        ``check_options`` does: ``--dataset-opt foo=1: dataset 'folder' has no option
        'foo'; it takes: ...`` (the close match too), named as :func:`given_as` says. For a
        configuration not read with ``check_options`` (built in Python, a plan's); read
        before the plugin is built, so no option reaches it unchecked.

        Raises:
            ConfigError: every unknown key, one line each.
        """
        errors = _option_errors(
            {"dataset": name, "dataset_options": self.dataset_options}, _Where()
        )
        if errors:
            raise all_errors(errors, ConfigError)

    def plugins(self) -> dict[str, str]:
        """Plugin kind -> the name this run uses (no recipe for a recipe file)."""
        named = {
            "models": self.model,
            "losses": self.loss,
            "recipes": self.recipe,
            "loaders": self.loader,
            "datasets": self.resolved_dataset(),
        }
        if self.recipe_definition is not None:
            del named["recipes"]
        return named

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(
        cls,
        d: dict[str, Any],
        source: str = "config",
        *,
        flags: Iterable[str] | None = None,
        check_options: bool = False,
    ) -> RunConfig:
        """Build from a mapping of field names (a configuration file's, a ``config.json``,
        a checkpoint's config).

        ``resolved`` (written by segkit next to what was asked) is ignored; old key names
        (:data:`RENAMED_KEYS`) are read as their new ones.

        Args:
            d: The settings.
            source: Where they come from, named by a message about one of them:
                ``"c.yaml: key 'epochs' = 0: ..."``. :data:`COMMAND_LINE` means flags:
                ``"--epochs 0: ..."``; :data:`PYTHON` keyword arguments: ``"epochs=0: ..."``.
            flags: The keys of ``d`` given as command-line flags over ``source`` (their
                messages name the flag). By default, when ``source`` is a configuration
                file, the keys whose values differ from the file's: what
                ``segkit run --config FILE --flag ...`` put over it.
            check_options: Also check the keys of the option tables (``model_options``...)
                against the plugins' factories (importing the plugins): what
                ``segkit run`` and ``segkit lr-find`` do, so that a misspelt option is
                named with the file and table it is in, among the other problems.

        Raises:
            ConfigError: unknown keys, of the settings or (``check_options``) of an option
                table (with close matches: then an :class:`~segkit.errors.UnknownSettingError`),
                or bad values: every one at once, in one message (one line each).
        """
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a table of settings, got {type(d).__name__}")
        d = _asked(d)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names), key=str)
        errors = []
        if unknown and source == PYTHON:
            errors.append(_unknown_fields({k: d[k] for k in unknown}))
        elif unknown:
            hints = [_did_you_mean(key, names) for key in unknown]
            errors.append(
                f"{source}: unknown setting(s) {', '.join(hints)}; the settings are the long "
                f"options of `segkit run` with '_' for '-': {', '.join(names)}"
            )
        known = {k: v for k, v in d.items() if k in names}
        if source in (COMMAND_LINE, PYTHON):
            where = _Where(source)
        else:
            given = _flags_over_file(known, source) if flags is None else set(flags)
            where = _Where(source, frozenset(given))
        # Every problem at once, each worded for where its value came from.
        errors += _setting_errors({**_defaults(), **known}, where)[1]
        options = _option_errors(known, where) if check_options else []
        if errors or options:
            unknown_key = bool(unknown or options)  # a key no setting or plugin takes
            raise all_errors(errors + options, UnknownSettingError if unknown_key else ConfigError)
        return cls(**d)

    @classmethod
    def from_file(cls, path: Path | str) -> RunConfig:
        """Read a TOML, YAML or JSON configuration (a run folder's ``config.json`` works
        as is).

        Raises:
            ConfigError: the file is missing, does not parse, or holds unknown keys or bad
                values; the message names the file and the key.
        """
        return cls.from_dict(read_config_file(path), source=str(path), flags=())


def named(key: str, value: Any = dataclasses.MISSING, *, as_typed: bool = False) -> str:
    """Setting ``key`` (and its ``value``) as a message names it, the way it was given
    (:func:`given_as`): ``image_size=64`` from Python, ``--image-size 64`` on the command
    line: the field's flag for a :class:`RunConfig` field, else ``--`` and the name with
    ``-`` (the options of :mod:`segkit.inference.options`). The value is its ``repr``;
    ``as_typed``: a flag's value as typed (``--out runs/m.onnx``, no quotes); a switch
    field's True is the flag alone (``--skip-bad-samples``), its False the ``--no-`` form."""
    return _named(key, value, given(), as_typed=as_typed)


def named_options(table: str, options: dict[str, Any]) -> str:
    """Options of the table ``table`` of a :class:`RunConfig` (``dataset_options``,
    ``loss_options``...) as a message names them, the way settings are given
    (:func:`given_as`), as :func:`named` names a setting: ``dataset_options={'classes':
    'a,b'}`` from Python, ``--dataset-opt classes=a,b`` on the command line (a flag per
    option, quoted for the shell where it needs it: ``--dataset-opt 'palette=0,0,0;...'``).
    A value is its ``repr`` in Python; on the command line a string as typed, anything
    else in JSON (as :func:`parse_options` reads it: ``weight=[0.5,2.0]``)."""
    if given() == PYTHON:
        return f"{table}={{{', '.join(f'{k!r}: {v!r}' for k, v in options.items())}}}"

    def typed(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

    return " ".join(f"{flag(table)} {shlex.quote(f'{k}={typed(v)}')}" for k, v in options.items())


def _named(key: str, value: Any, origin: str, *, as_typed: bool = False) -> str:
    """:func:`named` for settings given as ``origin`` (:data:`PYTHON` or flags)."""
    fields = RunConfig.__dataclass_fields__
    name = flag(key) if key in fields else None
    if origin != PYTHON and name and isinstance(value, bool) and field_types()[key] is bool:
        return name if value else "--no-" + name.removeprefix("--")  # a switch
    return named_as(key, value, origin=origin, flag=name, as_typed=as_typed)


def _did_you_mean(key: Any, names: Sequence[str], renamed: dict[str, str] | None = None) -> str:
    """``'imagesize' (did you mean 'image_size'?)``, or the key alone without a close match."""
    new = (renamed or {}).get(str(key))
    close = [new] if new else difflib.get_close_matches(str(key), names, n=1)
    return f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def unknown_keywords(
    call: str,
    unknown: dict[str, Any],
    known: Sequence[str],
    *,
    what: str = "keyword",
    listed: str | None = None,
    renamed: dict[str, str] | None = None,
) -> str:
    """The message for keyword arguments ``call`` does not take: what was written, the
    close matches, and ``listed`` (where the keywords are listed; default: ``known``).
    ``what``: the keywords' noun (``field``, ``option``); ``renamed``: old names -> the
    new name to suggest."""
    written = ", ".join(f"{k}={_short_repr(v)}" for k, v in unknown.items())
    hints = ", ".join(_did_you_mean(k, known, renamed) for k in unknown)
    noun = what if len(unknown) == 1 else what + "s"
    where = listed or f"it takes: {', '.join(known)}"
    return f"{call}({written}): unknown {noun} {hints}; {where}"


def _unknown_fields(unknown: dict[str, Any]) -> str:
    """The message for keywords of :class:`RunConfig` that no field has."""
    return unknown_keywords(
        "RunConfig",
        unknown,
        [f.name for f in dataclasses.fields(RunConfig)],
        what="field",
        listed="help(segkit.RunConfig) lists the fields, and `segkit run --help` says what "
        "each does (its long options are the fields, with '-' for '_')",
        renamed=RENAMED_KEYS,
    )


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else "..."


def checked_keywords(
    call: str, known: Iterable[str] | type = (), *, listed: str | None = None
) -> Callable[[Any], Any]:
    """Decorate a function, or a class (its ``__init__``), so that a keyword it does not
    take raises :class:`~segkit.errors.UnknownSettingError` naming ``call``, the close match
    and what it takes, instead of Python's TypeError without one. ``known``: the keywords
    it takes through ``**kwargs`` (names, or a dataclass whose fields they are); one that
    takes ``**kwargs`` without ``known`` is left to check them itself. ``listed``: where
    the keywords are listed (default: the message lists them)."""
    if isinstance(known, type):
        known = [f.name for f in dataclasses.fields(known)]
    more = list(known)

    def decorate(target: Any) -> Any:
        function = target.__init__ if isinstance(target, type) else target
        params = list(inspect.signature(function).parameters.values())
        names = [
            p.name
            for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
        ]
        names += [k for k in more if k not in names]
        if any(p.kind is p.VAR_KEYWORD for p in params) and not more:
            return target

        @functools.wraps(function)
        def checked(*args: Any, **kwargs: Any) -> Any:
            unknown = {k: v for k, v in kwargs.items() if k not in names}
            if unknown:
                raise UnknownSettingError(unknown_keywords(call, unknown, names, listed=listed))
            try:
                return function(*args, **kwargs)
            except MainGuardError as e:  # the script's line and this message are all it needs
                raise e.with_traceback(None) from None

        if isinstance(target, type):
            target.__init__ = checked
            return target
        return checked

    return decorate


#: RunConfig fields derived from another on construction, reset where that one changes.
_DERIVED = {"data": "data_as_typed", "recipe": "recipe_definition"}


def with_settings(
    call: str, config: RunConfig | None, settings: dict[str, Any], example: str = "epochs=2"
) -> RunConfig:
    """The configuration of a call that takes a :class:`RunConfig` or its fields as keywords
    (``segkit.train``, ``segkit.lr_find``): ``config`` (default: every field's default) with
    ``settings`` in place of its values, validated as a new RunConfig is; ``config`` itself
    is left as it was. The keywords' names are checked by the call's :func:`checked_keywords`;
    ``example``: a keyword the call's users give, for the message of a config that is not one.

    Raises:
        ConfigError: ``config`` is not a RunConfig (a path: named with ``from_file``), or a
            bad value.
    """
    if config is None:
        return RunConfig(**settings)
    if not isinstance(config, RunConfig):
        raise ConfigError(
            f"{call}(config={type(config).__name__}): expected a segkit.RunConfig; "
            f"pass the settings as keywords, {call}({example}, ...), or "
            "segkit.RunConfig.from_file(path) for a configuration file"
        )
    if not settings:
        return config
    reset = {d: None for k, d in _DERIVED.items() if k in settings and d not in settings}
    return dataclasses.replace(config, **reset, **settings)


#: Suffixes of configuration files and how each is read; another suffix is read as JSON
#: (a run folder's ``config.json``; the recipe files' suffixes, :mod:`segkit.recipes.files`).
CONFIG_FILE_SUFFIXES: dict[str, str] = {
    ".toml": "TOML",
    ".yaml": "YAML",
    ".yml": "YAML",
    ".json": "JSON",
}


def read_config_file(path: Path | str) -> dict[str, Any]:
    """The settings in a TOML, YAML or JSON file (by its suffix, as recipe files; any
    other suffix is read as JSON), with old key names renamed.

    Raises:
        ConfigError: missing, unreadable or unparsable file, or not a table of settings.
    """
    return _asked(read_table_file(path))


def read_table_file(path: Path | str, what: str = "configuration file") -> dict[str, Any]:
    """The table in a TOML, YAML or JSON file (:data:`CONFIG_FILE_SUFFIXES`; any other
    suffix is read as JSON): a configuration file, a study file (``what`` names it).

    Raises:
        ConfigError: missing, unreadable or unparsable file, or not a table; the message
            names the file (and the line of a syntax error).
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the {what} ({e})") from None
    language = CONFIG_FILE_SUFFIXES.get(path.suffix.lower(), "JSON")
    data = _parse(text, language, path)
    if not isinstance(data, dict):
        got = "nothing" if data is None else type(data).__name__
        raise ConfigError(f"{path}: expected a table of settings, got {got}")
    return data


def _parse(text: str, language: str, path: Path) -> Any:
    """``text`` parsed as ``language``; a syntax error names the file and the place."""
    if language == "TOML":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
    if language == "YAML":
        import yaml

        try:
            return yaml.load(text, Loader=_yaml_loader())
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f"line {where.line + 1}, column {where.column + 1}: " if where else ""
            problem = getattr(e, "problem", None) or str(e)
            raise ConfigError(f"{path}: not valid YAML ({at}{problem})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); name a "
            ".toml or .yaml file for TOML or YAML"
        ) from None


@functools.cache
def _yaml_loader() -> type:
    """PyYAML's safe loader, reading ``1e-3`` as a number as YAML 1.2 does: PyYAML follows
    YAML 1.1, where a float needs a dot (``1.0e-3``), and ``lr: 1e-3`` would be text."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return Loader


def _asked(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with old key names renamed and ``resolved`` (what segkit wrote next to
    them in a ``config.json``) left out.

    A ``config.json`` (it has ``resolved``) with ``data`` and no ``dataset`` was written
    before layouts were recognised, when that meant :data:`DEFAULTS` ``["dataset"]``: it
    is read so, even where its data folder is gone. (Runs now record the dataset.)

    Settings segkit recorded (a ``config.json``, a checkpoint's: they hold ``resolved``
    or the recorded fields) without ``last_batch`` were trained before it existed, when
    training kept an epoch's last partial batch: they are read with ``keep``, so such a
    run resumes, and its configuration trains again, as it did."""
    out = {RENAMED_KEYS.get(k, k): v for k, v in settings.items() if k != "resolved"}
    if "resolved" in settings and out.get("data") and not out.get("dataset"):
        out["dataset"] = DEFAULTS["dataset"]
    recorded = "resolved" in settings or "data_as_typed" in out or "recipe_definition" in out
    if recorded and "last_batch" not in out:
        out["last_batch"] = "keep"
    return out


def _flags_over_file(settings: dict[str, Any], source: str) -> set[str]:
    """The keys of ``settings`` that flags set over the configuration file ``source``:
    those the file lacks or holds another value for. No key for a source that is not a
    configuration file (a checkpoint's config: every key is its own)."""
    path = Path(source).expanduser()
    if path.suffix.lower() not in CONFIG_FILE_SUFFIXES or not path.is_file():
        return set()
    try:
        in_file = read_config_file(path)
    except ConfigError:  # changed since it was read: name the file for every key
        return set()
    missing = object()
    return {k for k, v in settings.items() if in_file.get(k, missing) != v}


@dataclass(frozen=True)
class _Where:
    """Where a configuration's values were given, as a message names them
    (:func:`named`): the flag on the command line (:data:`COMMAND_LINE`, and the keys in
    ``flags`` over a file), the keyword in Python (:data:`PYTHON`), as :func:`given_as`
    says without a ``source`` (a :class:`RunConfig` built or validated), else the file
    (or checkpoint) and the key."""

    source: str | None = None
    flags: frozenset[str] = frozenset()

    def origin(self, key: str) -> str | None:
        """How ``key`` was given: :data:`COMMAND_LINE`, :data:`PYTHON`, or None (the file)."""
        if self.source is None:
            return given()
        if self.source in (COMMAND_LINE, PYTHON):
            return self.source
        return COMMAND_LINE if key in self.flags else None

    def subject(self, key: str, value: Any = dataclasses.MISSING) -> str:
        """What a message is about: ``--image-size 0``, ``image_size=0`` or ``c.yaml: key
        'image_size' = 0``."""
        origin = self.origin(key)
        if origin is not None:
            return _named(key, value, origin)
        shown = "" if value is dataclasses.MISSING else f" = {value!r}"
        return f"{self.source}: key {key!r}{shown}"

    def mention(self, key: str, value: Any) -> str:
        """Another setting a message refers to: ``--epochs 5``, ``epochs=5`` or ``epochs = 5``."""
        origin = self.origin(key)
        return _named(key, value, origin) if origin is not None else f"{key} = {value!r}"


#: The option tables whose keys a plugin's factory takes: field -> (kind, plugin field).
_OPTION_TABLES = {
    "model_options": ("models", "model"),
    "loss_options": ("losses", "loss"),
    "loader_options": ("loaders", "loader"),
    "dataset_options": ("datasets", "dataset"),
}


def _option_errors(settings: dict[str, Any], where: _Where) -> list[str]:
    """A message for each key of an option table (``model_options``...) that its plugin's
    factory does not take, naming the table where it was given: the file, ``[table]`` and
    the key (``c.toml: [model_options] key 'encodr'``), or the flag (``--model-opt
    encodr=...``), with the close match and the options the plugin takes.

    Without ``dataset``, the dataset plugin is the layout that recognises the ``data``
    folder (:func:`~segkit.data.layouts.detect_layout`), so a misspelt option of a file
    with no ``dataset`` key is named with its table too. Read from the factory's signature
    (the plugin is imported); left to building the plugin where it cannot be known here: a
    plugin not installed or that fails to import, a factory taking ``**kwargs``, ``loss``
    ``auto`` (decided by the dataset's classes), a ``data`` folder no layout (or more than
    one) recognises (building says so).
    """
    from segkit import registry
    from segkit.errors import PluginError

    errors = []
    in_a_file = where.source not in (None, COMMAND_LINE, PYTHON)
    file = _file_settings(where.source) if in_a_file else {}
    for table, (kind, plugin_field) in _OPTION_TABLES.items():
        options = settings.get(table)
        name = settings.get(plugin_field, _defaults()[plugin_field])
        if not options or not isinstance(options, dict):
            continue
        if table == "dataset_options" and not name and isinstance(settings.get("data"), str):
            name = _recognised_layout(settings["data"])
        if not isinstance(name, str):
            continue
        if name == "auto":
            continue
        try:
            accepted = registry.default_registry().option_names(kind, name)
        except PluginError:
            continue
        if accepted is None:
            continue
        in_file = file.get(table) if isinstance(file.get(table), dict) else {}
        for key, value in options.items():
            if key in accepted:
                continue
            from_file = in_a_file and (
                table not in where.flags or in_file.get(key, object()) == value
            )
            if from_file:
                subject = f"{where.source}: [{table}] key {key!r}"
            elif where.origin(table) == PYTHON:
                subject = f"{table}={{{key!r}: {_short_repr(value)}}}"
            else:
                subject = f"{flag(table)} {key}={json.dumps(value)}"
            errors.append(
                f"{subject}: {registry.SINGULAR[kind]} '{name}' has no option "
                f"{_did_you_mean(key, accepted)}; "
                f"it takes: {', '.join(accepted) or 'no options'}"
            )
    return errors


def _recognised_layout(data: str) -> str | None:
    """The layout that recognises the folder ``data`` (as :meth:`RunConfig.resolved_dataset`
    finds it), or None where none (or several) does: building the dataset says so."""
    try:
        return detect_layout(Path(data).expanduser())
    except DataError:
        return None


def _file_settings(source: str) -> dict[str, Any]:
    """The settings of the configuration file ``source``; empty where it is none (a
    checkpoint) or cannot be read again."""
    path = Path(source).expanduser()
    if path.suffix.lower() not in CONFIG_FILE_SUFFIXES or not path.is_file():
        return {}
    try:
        return read_config_file(path)
    except ConfigError:
        return {}


def _defaults() -> dict[str, Any]:
    """Field name -> its default value (a fresh one for a default factory)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        if f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = f.default
    return out


#: Integer settings of 1 or more (0 or more for the last three).
_COUNTS = (
    "epochs",
    "batch_size",
    "accumulate",
    "image_size",
    "crops_per_image",
    "validate_every",
    "save_every",
    "grid_images",
    "log_images_every",
    "profile",
)


def _check_settings(values: dict[str, Any], where: _Where | None = None) -> dict[str, Any]:
    """Check a full set of field values (types, ranges, settings against each other) and
    return them with an int made a float where a float is expected, ``threads`` a number
    or ``"auto"``, and ``data`` made absolute (``data_as_typed`` as typed).

    Raises:
        ConfigError: naming the value as ``where`` says it was given (default: as
            :func:`given_as` says); every bad value at once (:func:`all_errors`).
    """
    v, errors = _setting_errors(values, where)
    if errors:
        raise all_errors(errors)
    return v


def all_errors(errors: list[str], kind: type[ConfigError] = ConfigError) -> ConfigError:
    """One :class:`ConfigError` (or subclass ``kind``) for every problem found in a
    configuration: the message of the one, or ``N settings to fix:`` and one line each."""
    if len(errors) == 1:
        return kind(errors[0])
    return kind(f"{len(errors)} settings to fix:" + "".join(f"\n  - {e}" for e in errors))


def _setting_errors(
    values: dict[str, Any], where: _Where | None = None
) -> tuple[dict[str, Any], list[str]]:
    """:func:`_check_settings`'s values, and the message of every problem found: each key
    of a bad type once, then each range; a check of two settings is left out where the
    other one is bad already. Each names its value as ``where`` says (default: as
    :func:`given_as` says, in Python ``image_size=0``)."""
    w = where or _Where()
    hints = field_types()
    errors: list[str] = []
    v: dict[str, Any] = {}
    for key, value in values.items():
        if key == "max_time" and isinstance(value, (int, float)) and not isinstance(value, bool):
            errors.append(  # a number: minutes or seconds?
                f"{w.subject('max_time', value)}: expected a duration with its unit, "
                'as a string: "20m", "90s", "1h30m" or "1.5h"'
            )
            continue
        try:
            v[key] = _check_type(value, hints[key], w, key)
        except ConfigError as e:
            errors.append(str(e))
    ok = set(v)  # the keys of a good type: their ranges are checked

    def bad(key: str, expected: str) -> None:
        errors.append(f"{w.subject(key, v[key])}: {expected}")
        ok.discard(key)

    for key in _COUNTS:
        zero = key in ("grid_images", "log_images_every", "profile")
        if key in ok and v[key] < (0 if zero else 1):
            bad(key, "expected 0 or a positive integer" if zero else "expected a positive integer")
    checks: list[tuple[str, Any, str]] = [
        ("log_every", lambda x: x >= 0, "expected 0 or more seconds"),
        ("lr", lambda x: math.isfinite(x) and x > 0, "expected a positive learning rate"),
        (
            "weight_decay",
            lambda x: math.isfinite(x) and x >= 0,
            "expected 0 or more (Adam's L2 penalty, e.g. 1e-4)",
        ),
        ("lr_gamma", lambda x: 0 < x <= 1, "expected a value in (0, 1]"),
        ("ema", lambda x: x is None or 0 < x < 1, "expected a decay between 0 and 1, e.g. 0.999"),
        ("patience", lambda x: x is None or x >= 1, "expected a positive integer"),
        ("min_delta", lambda x: x >= 0, "expected 0 or more"),
        (
            "crop_foreground",
            lambda x: 0 <= x <= 1,
            "expected the share of crops centred on the foreground, in [0, 1] (e.g. 0.33)",
        ),
        ("num_workers", lambda x: x is None or x >= 0, "expected 0 or more"),
    ]
    for key, good, expected in checks:
        if key in ok and not good(v[key]):
            bad(key, expected)
    if "warmup_epochs" in ok and "epochs" in ok and not 0 <= v["warmup_epochs"] < v["epochs"]:
        bad(
            "warmup_epochs",
            "expected a value from 0 up to (not including) " + w.mention("epochs", v["epochs"]),
        )
    if "max_time" in ok and v["max_time"] is not None:
        try:
            parse_duration(v["max_time"], w.subject("max_time", v["max_time"]))
        except ConfigError as e:
            errors.append(str(e))
    if "threads" in ok:
        threads = v["threads"]
        if isinstance(threads, str) and threads.strip().isdigit():  # "--threads 2" is a string
            threads = int(threads)
        if threads != "auto" and not (isinstance(threads, int) and threads >= 1):
            bad("threads", "expected auto or a number of threads (1 or more)")
        v["threads"] = threads
    if "data" in ok and "data_as_typed" in ok:
        v["data"], v["data_as_typed"] = _absolute_data(v["data"], v["data_as_typed"])
    return v, errors


def parse_duration(text: str, what: str) -> float:
    """A duration (``20m``, ``90s``, ``1h30m``, ``1.5h``) in seconds; a bare number is
    refused (minutes or seconds?). ``what`` names the value in the error.

    Raises:
        ConfigError: anything else, or zero.
    """
    text = str(text).strip().lower()
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?", text)
    if not m or not any(m.groups()):
        raise ConfigError(f"{what}: expected a duration such as 20m, 90s, 1h30m or 1.5h")
    h, mins, s = (float(g) if g else 0.0 for g in m.groups())
    seconds = h * 3600 + mins * 60 + s
    if seconds <= 0:
        raise ConfigError(f"{what}: expected a duration above zero")
    return seconds


def _absolute_data(data: str | None, typed: str | None) -> tuple[str | None, str | None]:
    """``data`` made absolute, and as it was typed: ``typed`` where it was recorded with
    this ``data`` (a run folder's), else ``data`` as given."""
    if not data:
        return data, None
    given = os.path.expanduser(data)
    absolute = os.path.abspath(given)
    if os.path.isabs(given) and typed and _may_name(typed, absolute):
        return absolute, typed
    return absolute, data


def _may_name(typed: str, absolute: str) -> bool:
    """Whether ``typed`` named ``absolute`` from some directory: a ``data_as_typed`` left
    over from a ``config.json`` under a new ``--data`` does not."""
    t = os.path.expanduser(typed)
    if os.path.isabs(t):
        return os.path.abspath(t) == absolute
    tail = tuple(p for p in Path(os.path.normpath(t)).parts if p not in (os.curdir, os.pardir))
    return bool(tail) and Path(absolute).parts[-len(tail) :] == tail


@functools.cache
def field_types() -> dict[str, Any]:
    """Field name -> its resolved type annotation."""
    return typing.get_type_hints(RunConfig)


def flag(name: str) -> str:
    """The command-line flag of field ``name`` (``batch_size`` -> ``--batch-size``)."""
    meta = RunConfig.__dataclass_fields__[name].metadata
    return meta.get("flag") or "--" + name.replace("_", "-")


def choices(annotation: Any) -> tuple[Any, ...] | None:
    """The values of a ``Literal`` annotation (also inside ``X | None``), else None."""
    for t in (annotation, *get_args(annotation)):
        if typing.get_origin(t) is Literal:
            return get_args(t)
    return None


def _check_type(value: Any, annotation: Any, where: _Where, key: str) -> Any:
    """Return ``value`` (an int becomes a float where a float is expected), or raise."""
    allowed = get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in allowed:
            return value
        raise ConfigError(f"{where.subject(key)}: a value is required")
    for t in allowed:
        if t is type(None):
            continue
        if typing.get_origin(t) is Literal:
            if value in get_args(t):
                return value
            expected = "one of " + ", ".join(map(str, get_args(t)))
            raise ConfigError(f"{where.subject(key, value)}: expected {expected}")
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, str):
            return value
        if typing.get_origin(t) is dict and isinstance(value, dict):
            return value
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    expected = " or ".join(
        names.get(t, "a table of options") for t in allowed if t is not type(None)
    )
    number = _quoted_number(value, allowed)
    if number is not None:  # lr="1e-3" in Python, lr: 1e-3 in YAML (a string there)
        expected += f", not a string: {where.mention(key, number)}"
    raise ConfigError(f"{where.subject(key, value)}: expected {expected}")


def _quoted_number(value: Any, allowed: tuple[Any, ...]) -> int | float | None:
    """The number a string spells where a number is expected (``"1e-3"``), else None."""
    if not isinstance(value, str):
        return None
    for t in (int, float):
        if t in allowed:
            try:
                return t(value.strip())
            except ValueError:
                continue
    return None


def parse_options(items: list[str] | None, flag: str) -> dict[str, Any]:
    """Parse ``key=value`` pairs (values as JSON when they parse, else strings).

    Raises:
        ConfigError: an item without '='.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected key=value, e.g. {flag} smooth=1.0")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def check_recorded_data(config: RunConfig, recorded_by: str) -> None:
    """Refuse in one line a data folder that ``recorded_by`` (a run's ``config.json``
    rerun, a checkpoint evaluated without ``data``) records and that is not there now:
    the folder moved or the run folder came from another machine. The message says where
    the path came from and to pass ``--data`` (``data=`` from Python) naming where the
    dataset is now, rather than the dataset plugin's "not found" that reads as if the
    path had been typed. A relative path typed in another directory gets
    :func:`data_path`'s own message.

    Raises:
        DataError: the recorded folder is missing.
    """
    path = data_path(config)
    if path is None or path.exists():
        return
    raise DataError(
        f"{path}: data folder not found; {recorded_by} records it as the run's data, and it "
        f"has moved or is on another machine: pass {named('data', 'NEWPATH', as_typed=True)} "
        "naming where the dataset is now"
    )


def data_path(config: RunConfig) -> Path | None:
    """The dataset folder of ``config`` (absolute, see :meth:`RunConfig.validate`), or
    None for the generated dataset.

    Raises:
        DataError: the folder is missing and was made absolute in another directory (a run
            folder's config, a checkpoint's): the message names it, ``--data`` as typed
            then and, where that names a folder from here, says so; it suggests ``--data``.
            A missing folder typed here is left to the dataset plugin to report.
    """
    if not config.data:
        return None
    path = Path(config.data)
    typed = config.data_as_typed
    if path.exists() or not typed or os.path.isabs(os.path.expanduser(typed)):
        return path
    here = Path(os.path.abspath(os.path.expanduser(typed)))
    if here == path:  # typed in this directory: the dataset plugin says what is missing
        return path
    recorded = (
        f"{path}: data folder not found; the run recorded it absolute from "
        f"{named('data', typed)}, typed in another directory"
    )
    if here.is_dir():
        raise DataError(
            f"{recorded}. From here {typed!r} is {here}: pass "
            f"{named('data', typed, as_typed=True)} to use it, or {named('data')} naming "
            "where the dataset is now"
        )
    raise DataError(
        f"{recorded} (from here it would be {here}, not there either); pass {named('data')} "
        "naming where the dataset is now"
    )
