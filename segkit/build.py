"""The one build path: from a :class:`~segkit.config.RunConfig` to the runtime and every
part of a run.

``segkit run``, ``segkit evaluate``, ``segkit predict`` and the benchmarks all go through
these functions, so a run, its evaluation and its benchmark are built the same way:

* :func:`resolve_runtime` resolves what the config leaves to the machine (device,
  precision, channels_last, loader workers, seed, the torchrun world) once, into a
  :class:`Runtime` (defined in :mod:`segkit.training.runtime`) whose
  :meth:`Runtime.record` goes into the run folder's ``config.json``.
* ``build_*`` make the parts: dataset, model, loss, recipe, loaders, optimizer and
  learning-rate schedule; :func:`build_training` makes all of a training run's, and
  :func:`build_step` its training step (:class:`segkit.training.loops.TrainStep`).

Plugins are created by name through the registry; capabilities are read from what the
factories declare (:mod:`segkit.contracts`), never from a plugin's name.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from segkit import registry
from segkit import task as task_mod
from segkit.config import RunConfig, data_path, named, named_options
from segkit.contracts import Dataset, Loader, attach_input_check, declared_multiple
from segkit.data.prepare import prepare_training
from segkit.data.sampling import crops_per_image, per_rank
from segkit.errors import ConfigError, DataError
from segkit.inference.native import EvalPlan, forward_for, plan_eval
from segkit.recipes import Normalize, RandomCrop, Recipe
from segkit.system.threads import apply_threads
from segkit.system.workers import check_workers, default_workers, say_workers
from segkit.task import Task
from segkit.training import ema as ema_mod
from segkit.training.distributed import Dist
from segkit.training.graph_policy import GraphDecision, decide_cuda_graphs
from segkit.training.loops import EvalContext, StepContext, TrainStep, step_quietly
from segkit.training.outputs import PluginRef
from segkit.training.precision import create_precision
from segkit.training.runtime import Runtime

# ----------------------------------------------------------------------------- runtime


def resolve_device(name: str | torch.device, local_rank: int | None = None) -> torch.device:
    """``auto`` is the first CUDA GPU when there is one, else the CPU. Under torchrun
    (``local_rank`` given), ``auto`` and ``cuda`` mean this process's own GPU. A CUDA
    device always comes back with its index.

    Raises:
        ConfigError: a CUDA device was asked for and none is usable.
    """
    name = str(name)
    cuda = torch.cuda.is_available()
    if local_rank is not None and name in ("auto", "cuda") and cuda:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name == "auto":
        name = "cuda" if cuda else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{named('device', name)}: expected auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"{named('device', name, as_typed=True)}: segkit trains and predicts on the CPU or "
            "a CUDA GPU; expected auto, cpu, cuda or cuda:N"
        )
    if device.type == "cuda":
        if not cuda:
            raise ConfigError(
                f"{named('device', name, as_typed=True)}: no CUDA GPU is available here; use "
                f"{named('device', 'cpu', as_typed=True)}"
            )
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_runtime(
    config: RunConfig, dist: Dist | None = None, *, threads: int | None = None
) -> Runtime:
    """Resolve the runtime of ``config`` on this machine, seed every RNG with its seed,
    and turn on cudnn's autotuner on a GPU (the input size is fixed). ``threads``
    overrides ``config.threads`` (a resumed ``--threads auto`` run keeps its count).
    ``num_workers`` above the usable cores is said in one line, and far above them
    refused (:func:`segkit.system.workers.check_workers`).

    Raises:
        ConfigError: the device or precision is not available here, or ``num_workers``
            is more than this machine can run.
    """
    d = dist or Dist()
    device = resolve_device(config.device, local_rank=d.local_rank if d.enabled else None)
    precision = create_precision(config.precision, device)
    channels_last = (
        config.channels_last if config.channels_last is not None else device.type == "cuda"
    )
    workers = default_workers(device, d.local_world)
    if config.num_workers is not None:  # asked for: checked against the usable cores
        note = check_workers(config.num_workers, workers)
        workers = config.num_workers
        say_workers(note, workers, say=d.main)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels once
    threads = apply_threads(threads if threads is not None else config.threads)
    seed_everything(config.seed)
    return Runtime(device, precision, channels_last, workers, config.seed, d, threads)


# ----------------------------------------------------------------------------- parts


def check_plugin_names(config: RunConfig) -> None:
    """Fail on a misspelt plugin name before any slow step (generating the synthetic set
    takes seconds). Reads entry-point names only; nothing is imported. A built-in name
    that another distribution registers too says, once, that the built-in is used.

    Raises:
        PluginNotFoundError: the message suggests close names.
    """
    reg = registry.default_registry()
    for kind, name in config.plugins().items():
        if kind == "losses" and name == "auto":  # resolved from the dataset's classes
            continue
        reg.info(kind, name)
        registry.say_shadowed(kind, name)


def build_dataset(config: RunConfig) -> Dataset:
    """The run's dataset plugin, created on its folder.

    Raises:
        DataError: the plugin refuses the folder (with ``--skip-bad-samples``, the message
            says that it leaves out undecodable files, not layout problems).
        ConfigError: a ``dataset_options`` key the plugin does not take (named with the
            close match and the options it takes).
    """
    name = config.resolved_dataset()
    config.check_dataset_options(name)
    try:
        return registry.create("datasets", name, data_path(config), **config.dataset_options)
    except DataError as e:
        if not config.skip_bad_samples:
            raise
        raise DataError(
            f"{e} ({named('skip_bad_samples', True)} leaves out files that cannot be decoded; "
            "it does not "
            "pair or drop an image without its mask: fix the layout as said)"
        ) from None


def build_model(
    config: RunConfig,
    runtime: Runtime | None = None,
    *,
    restoring: bool = False,
    out_channels: int = 1,
) -> torch.nn.Module:
    """Create the run's model (:func:`create_model`: the image size is checked against the
    ``min_input_multiple`` its factory declares, read without building it, and the
    input-size check is attached). With ``runtime``, the model is moved to its device and
    layout.

    Args:
        config: The run configuration.
        runtime: Where the model will run; None leaves it on the CPU.
        restoring: The caller will load a checkpoint's weights into the model, so the
            ``weights`` option (initial weights: a file or "imagenet") is left out; the
            file it named need not exist any more.
        out_channels: Logit channels: 1 for binary, K for K classes
            (:attr:`segkit.task.Task.num_classes`).

    Raises:
        ConfigError: ``image_size`` is not a multiple of the model's ``min_input_multiple``,
            or the factory returned something else than a ``torch.nn.Module``.
    """
    options = dict(config.model_options)
    if restoring:
        options.pop("weights", None)
    model = create_model(
        config.model, out_channels=out_channels, image_size=config.image_size, **options
    )
    if runtime is not None:
        model = model.to(runtime.device)
        if runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)
    return model


def create_model(
    name: str,
    in_channels: int = 3,
    out_channels: int = 1,
    *,
    image_size: int | None = None,
    **options: Any,
) -> torch.nn.Module:
    """Create model ``name`` with the input-size check attached (see
    :func:`segkit.contracts.attach_input_check`).

    Args:
        name: A registered model name.
        in_channels: Channels of the input images.
        out_channels: Channels of the output logits.
        image_size: The training size, checked against the model's
            ``min_input_multiple`` before the model is built.
        **options: The factory's options.

    Raises:
        ConfigError: ``image_size`` is not a multiple of ``min_input_multiple``, or the
            factory returned something else than a ``torch.nn.Module``.
    """
    factory = registry.default_registry().get("models", name)
    declared = declared_multiple(factory, options)
    if declared is not None:
        _check_image_size(name, image_size, declared)
    model = registry.create(
        "models", name, in_channels=in_channels, out_channels=out_channels, **options
    )
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(
            f"model '{name}' returned a {type(model).__name__}; a model factory must "
            "return a torch.nn.Module"
        )
    # The shared option ``encoder`` says which variant failed: "timm_unet (efficientnet_b0)".
    label = f"{name} ({options['encoder']})" if options.get("encoder") else name
    multiple = attach_input_check(model, label, declared)
    if declared is None:  # an older plugin that sets it on the model only
        _check_image_size(name, image_size, multiple)
    return model


def _check_image_size(model: str, image_size: int | None, multiple: int) -> None:
    check_size_multiple(model, image_size, multiple, "image_size")


def check_size_multiple(model: str, size: int | None, multiple: int, key: str) -> None:
    """Raise unless ``size`` (the setting ``key``: ``image_size``, ``tile``) is a
    multiple of the model's ``min_input_multiple``.

    Raises:
        ConfigError: naming the size as it was given (:func:`segkit.config.named`:
            ``image_size=40``, ``--image-size 40``), the multiple, the model and the two
            sizes around it.
    """
    if size is not None and size % multiple:
        lo = size // multiple * multiple
        near = f"{lo} or {lo + multiple}" if lo else str(multiple)
        raise ConfigError(
            f"{named(key, size)} is not divisible by {multiple}, which model '{model}' needs; "
            f"use {near}"
        )


def build_loss(
    config: RunConfig, dataset: Dataset | None = None, workers: int | None = None
) -> torch.nn.Module:
    """Create the run's loss; ``pos_weight=auto`` is resolved from ``dataset`` (see
    :func:`resolve_loss_options`), and so is ``--loss auto`` (:func:`segkit.task.resolve`;
    without a dataset, ``auto`` is the binary default).

    Raises:
        ConfigError: a loss that does not take the dataset's targets.
    """
    if dataset is not None:
        config, _ = task_mod.resolve(config, dataset)
    elif config.loss == "auto":
        config = dataclasses.replace(config, loss=Task().default_loss())
    return registry.create("losses", config.loss, **resolve_loss_options(config, dataset, workers))


def resolve_loss_options(
    config: RunConfig, dataset: Dataset | None = None, workers: int | None = None
) -> dict[str, Any]:
    """``config.loss_options`` with ``pos_weight="auto"`` replaced by the train split's
    background / foreground pixels (its mask files are read once; for any loss that takes
    ``pos_weight``, :func:`segkit.data.check.train_pos_weight`), and ``weight="auto"`` by
    the median-frequency class weights of a K-class dataset
    (:func:`segkit.data.check.train_class_weights`).

    Raises:
        ConfigError: ``pos_weight=auto`` or ``weight=auto`` without a dataset.
        DataError: a train mask is unreadable, or the train masks hold no foreground.
    """
    options = dict(config.loss_options)
    if options.get("pos_weight") == "auto":
        if dataset is None:
            raise ConfigError(
                f"{named_options('loss_options', {'pos_weight': 'auto'})} needs the dataset to "
                "compute it from; give a number"
            )
        from segkit.data.check import train_pos_weight

        options["pos_weight"] = round(train_pos_weight(dataset, workers), 6)
    if options.get("weight") == "auto":
        if dataset is None:
            raise ConfigError(
                f"{named_options('loss_options', {'weight': 'auto'})} needs the dataset to "
                "compute it from; give a list"
            )
        from segkit.data.check import train_class_weights

        options["weight"] = train_class_weights(dataset, workers)
    return options


def build_recipe(config: RunConfig) -> Recipe:
    """The run's recipe: the plugin ``config.recipe`` names, or the recipe file's contents
    recorded in ``config.recipe_definition``."""
    recipe = config.recipe_object()
    if recipe is None:
        recipe = registry.create("recipes", config.recipe, image_size=config.image_size)
        if not isinstance(recipe, Recipe):
            raise ConfigError(
                f"recipe '{config.recipe}' returned a {type(recipe).__name__}; a recipe "
                "factory must return a segkit.recipes.Recipe"
            )
    return with_crop_foreground(recipe, config.crop_foreground)


def with_crop_foreground(recipe: Recipe, share: float) -> Recipe:
    """``recipe`` with its train ``RandomCrop`` ops centring ``share`` of their windows on
    the foreground (``--crop-foreground``; 0 leaves the recipe as it is, a recipe file's
    own ``foreground`` included).

    Raises:
        ConfigError: the recipe does not train on crops at the images' own resolution
            (:attr:`Recipe.crops`), or a geometric op comes before its crop.
    """
    if not share:
        return recipe
    if not recipe.crops:
        raise ConfigError(
            f"{named('crop_foreground', share)}: recipe '{recipe.name}' does not train on "
            "crops at the images' own resolution (its train ops' last sizing op is not "
            "RandomCrop), so there is no crop to place; use a recipe that crops (microscopy, "
            f"or a recipe file with RandomCrop), or leave {named('crop_foreground')} at 0"
        )
    train = tuple(
        dataclasses.replace(op, foreground=share) if isinstance(op, RandomCrop) else op
        for op in recipe.train
    )
    return Recipe(recipe.name, train=train, eval=recipe.eval)


@dataclass(frozen=True)
class Batching:
    """How a loader batches its split, beyond the config's batch size.

    Attributes:
        batch_size: Images per batch (default: the config's); 1 for evaluation loaders
            of native-size images.
        shard: ``(rank, world)``: this rank's shard of the split under torchrun.
        drop_last: Leave out the epoch's last batch when it is partial
            (:func:`drops_last_batch` says when training does, by ``--last-batch``).
    """

    batch_size: int | None = None
    shard: tuple[int, int] = (0, 1)
    drop_last: bool = False


def build_loader(
    config: RunConfig,
    runtime: Runtime,
    dataset: Dataset,
    recipe: Recipe,
    split: str,
    *,
    train: bool,
    batching: Batching | None = None,
) -> Loader:
    """The loader of ``split``: shuffled and augmented with ``train``; ``batching``: its
    batch size, shard and partial last batch (by default the config's batch size, the
    whole split, every batch)."""
    batching = batching or Batching()
    return registry.create(
        "loaders",
        config.loader,
        dataset,
        split,
        recipe,
        batching.batch_size if batching.batch_size is not None else config.batch_size,
        train=train,
        seed=config.seed,
        num_workers=runtime.num_workers,
        device=runtime.device,
        shard=batching.shard,
        drop_last=batching.drop_last,
        **config.loader_options,
    )


def build_eval_plan(config: RunConfig, recipe: Recipe) -> EvalPlan:
    """What ``--eval-size`` means for the run's recipe (:func:`segkit.inference.native.plan_eval`).

    Raises:
        ConfigError: ``--eval-size resize`` with a recipe that evaluates natively.
    """
    return plan_eval(config.eval_size, recipe)


def build_eval_loader(
    config: RunConfig, runtime: Runtime, dataset: Dataset, plan: EvalPlan, split: str
) -> Loader:
    """The evaluation loader of ``split`` as ``plan`` says: the recipe's eval ops (without
    its sizing ops for native evaluation of a resizing recipe), one image a batch when
    native."""
    batching = Batching(batch_size=plan.batch_size(config.batch_size))
    return build_loader(
        config, runtime, dataset, plan.recipe, split, train=False, batching=batching
    )


def normalization(
    recipe: Recipe, train: bool = False
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) of the final Normalize of the recipe's eval ops (``train``: of its
    train ops), to turn batches back into pictures."""
    norm = recipe.ops(train)[-1]
    assert isinstance(norm, Normalize)  # Recipe.__post_init__ guarantees it
    return norm.mean, norm.std


def build_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """Adam, as in the lab. The fused kernel updates all parameters in one pass: measured
    on 2 CPU cores, 0.03 s instead of 0.20 s per step for ResNet34-UNet's 48M parameters.

    Raises:
        PluginContractError: the model has no parameter that requires a gradient (nothing
            to train), naming the model plugin.
    """
    if not any(p.requires_grad for p in model.parameters()):
        from segkit.errors import PluginContractError

        plugin = PluginRef.find("models", config.model)
        held = sum(1 for _ in model.parameters())
        got = (
            f"all {held} of its parameters are frozen (requires_grad=False)"
            if held
            else "it has no parameters"
        )
        raise PluginContractError(
            f"{plugin.label} built a {type(model).__name__} with nothing to train: {got}. "
            "A model plugin returns a torch.nn.Module whose weights "
            "are torch.nn.Parameter (layers such as nn.Conv2d register theirs; a tensor "
            "kept as a plain attribute is not one), and at least one of them requires a "
            f"gradient. {plugin.check_hint()}"
        )
    return torch.optim.Adam(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
    )


def optimizer_steps(batches: int, accumulate: int = 1) -> int:
    """Optimizer steps of an epoch of ``batches`` with ``--accumulate``: a trailing group
    of fewer batches steps too (see :func:`segkit.training.loops.train_one_epoch`)."""
    return -(-batches // accumulate)


def lr_factor(config: RunConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate multiplier for optimizer step ``i`` (0-based) of the run.

    ``steps_per_epoch`` counts optimizer steps (:func:`optimizer_steps`: batches with
    ``--accumulate 1``), as does ``warmup_epochs``.

    ``exponential``: ``lr_gamma ** epoch`` (0-based epoch), the lab's per-epoch
    ``ExponentialLR``. ``cosine``: from 1 at the end of warm-up down to 0 at the run's last
    step, half a cosine period. Both start with ``warmup_epochs`` of linear warm-up from
    ``1 / warmup_steps`` to 1, when it is above 0.
    """
    per_epoch = max(1, steps_per_epoch)
    total = per_epoch * config.epochs
    warmup = round(config.warmup_epochs * per_epoch)
    gamma = config.lr_gamma
    cosine = config.schedule == "cosine"

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        if cosine:
            t = min(1.0, (i - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return gamma ** (i // per_epoch)

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: RunConfig, steps_per_epoch: int, steps_done: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler for :func:`lr_factor`, positioned after ``steps_done`` steps.

    The position is computed, not loaded: a resumed run (even one that extends
    ``--epochs``) continues the schedule from where its epochs put it.
    """
    # Sets each group's lr to initial_lr * factor(0); initial_lr (the config's lr) is kept
    # from a restored optimizer state.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, steps_per_epoch))
    if steps_done == 0:
        return scheduler
    scheduler.last_epoch = steps_done - 1  # the next step() sets the lr of step steps_done
    step_quietly(scheduler)
    return scheduler


@dataclass
class Training:
    """Every part of a training run, built (see :func:`build_training`).

    ``loaders`` holds ``train`` (this rank's shard) on every rank, and ``valid`` and
    ``test`` on rank 0, which alone validates and tests. ``bad_samples`` lists what
    ``--skip-bad-samples`` left out, ``data_warnings`` what the data check warns of (K
    classes: a class missing from a split, or too rare; one line each). ``accumulate``:
    batches per optimizer step. ``ema``:
    the weights' moving average (``--ema``), else None. ``config`` is the configuration
    resolved for the dataset (``--loss auto`` and ``--monitor auto`` named), ``task`` its
    target (binary or K classes).
    """

    config: RunConfig
    task: Task
    dataset: Dataset
    model: torch.nn.Module
    loss: torch.nn.Module
    recipe: Recipe
    optimizer: torch.optim.Optimizer
    loaders: dict[str, Loader]
    bad_samples: list[tuple[str, Any, str]] = field(default_factory=list)
    loss_options: dict[str, Any] = field(default_factory=dict)  # resolved: pos_weight/weight=auto
    accumulate: int = 1
    ema: AveragedModel | None = None
    eval_plan: EvalPlan | None = None
    data_warnings: list[str] = field(default_factory=list)
    #: Why ``--monitor auto`` chose another monitor than the usual (a defect set), else "".
    monitor_note: str = ""

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (what the learning-rate schedule counts)."""
        return optimizer_steps(len(self.loaders["train"]), self.accumulate)

    def eval_forward(self, runtime: Runtime) -> Any:
        """How evaluation batches reach the model: a :class:`segkit.inference.native.NativeForward`
        for native-size evaluation, None for the loader's resized batches."""
        if self.eval_plan is None:
            return None
        return forward_for(
            self.eval_plan,
            image_size=self.config.image_size,
            model=self.model,
            precision=runtime.precision,
            channels_last=runtime.channels_last,
            channels=self.task.num_classes,
        )

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validation evaluates: the EMA's with ``--ema``, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def eval_context(self, runtime: Runtime) -> EvalContext:
        """How the run evaluates and draws: its loss, task, native forward
        (:meth:`eval_forward`) and the recipe's normalization, on ``runtime``."""
        return EvalContext(
            runtime,
            task=self.task,
            forward=self.eval_forward(runtime),
            loss_fn=self.loss,
            normalization=normalization(self.recipe),
        )


def build_training(config: RunConfig, runtime: Runtime, *, restoring: bool = False) -> Training:
    """Build a training run's parts, plugin names first (a misspelt one fails at once),
    and ``--cuda-graphs on`` checked against the runtime.

    Raises:
        SegkitError: a bad name, option, size or dataset (a subclass says which).
    """

    check_plugin_names(config)
    # --cuda-graphs on for a run that cannot: refused before any slow step (no refusal
    # depends on the dataset's size).
    if (error := decide_graphs(config, runtime, 0).error()) is not None:
        raise error
    recipe = build_recipe(config)
    check_crops_per_image(config, recipe)  # before the data is read
    dataset = build_dataset(config)
    asked_monitor = config.monitor
    config, task = task_mod.resolve(config, dataset)
    # Every mask value, unreadable file and split size checked before the first step.
    ready = prepare_training(
        dataset,
        name=config.resolved_dataset(),
        skip_bad_samples=config.skip_bad_samples,
        batch_size=config.batch_size,
        world=runtime.dist.world,
        options=config.dataset_options,
        crops_per_image=config.crops_per_image,
    )
    dataset, bad, data_warnings = ready.dataset, ready.bad, ready.warnings
    # A defect set (train masks mostly empty): --monitor auto follows the pooled valid Dice.
    monitor, monitor_note = task.defect_monitor(
        asked_monitor, ready.train_empty, ready.train_images
    )
    if monitor is not None:
        config = dataclasses.replace(config, monitor=monitor)
    model = build_model(config, runtime, restoring=restoring, out_channels=task.num_classes)
    plan = build_eval_plan(config, recipe)
    d = runtime.dist
    samples = train_samples(config, dataset)
    batching = Batching(
        shard=(d.rank, d.world),
        drop_last=drops_last_batch(samples, config.batch_size, d.world, config.last_batch),
    )
    crops = crops_per_image(dataset, config.crops_per_image)
    loaders = {
        "train": build_loader(
            config, runtime, crops, recipe, "train", train=True, batching=batching
        )
    }
    if d.main:
        for split in ("valid", "test"):
            loaders[split] = build_eval_loader(config, runtime, dataset, plan, split)
    optimizer = build_optimizer(model, config)
    loss_options = resolve_loss_options(config, dataset, runtime.num_workers or None)
    loss = registry.create("losses", config.loss, **loss_options)
    ema = ema_mod.create(model, config.ema) if config.ema is not None else None
    return Training(
        config,
        task,
        dataset,
        model,
        loss,
        recipe,
        optimizer,
        loaders,
        bad,
        loss_options,
        accumulate=config.accumulate,
        ema=ema,
        eval_plan=plan,
        data_warnings=data_warnings,
        monitor_note=monitor_note,
    )


def train_samples(config: RunConfig, dataset: Dataset) -> int:
    """Samples of a training epoch: each train image ``--crops-per-image`` times. The last
    batch, the CUDA graph's batch and the steps an epoch count them."""
    return len(dataset.samples("train")) * config.crops_per_image


def check_crops_per_image(config: RunConfig, recipe: Recipe) -> None:
    """Refuse ``--crops-per-image`` above 1 with a recipe that does not train on crops at
    the images' own resolution (:attr:`segkit.recipes.Recipe.crops`): it shows each image
    whole, resized, so more draws of it are more epochs under another name.

    Raises:
        ConfigError: naming the value, the recipe, why, and what to use instead.
    """
    n = config.crops_per_image
    if n == 1 or recipe.crops:
        return
    raise ConfigError(
        f"{named('crops_per_image', n)}: recipe '{recipe.name}' does not train on crops at "
        "the images' own resolution (its train ops' last sizing op is not RandomCrop), so "
        "each draw shows the whole image again, resized: more crops per image would only "
        f"be more epochs. Give {named('recipe', 'microscopy', as_typed=True)} (or a recipe "
        "file whose train ops crop with RandomCrop and do not resize), or leave "
        f"{named('crops_per_image')} at 1 and raise {named('epochs')}"
    )


def drops_last_batch(images: int, batch_size: int, world: int = 1, rule: str = "drop") -> bool:
    """Whether training leaves out the last batch of an epoch of ``images`` training
    images (split over ``world`` ranks), by ``--last-batch`` ``rule``; both loaders apply
    it through ``drop_last``, and validation and test never drop.

    ``drop``: a partial last batch is left out whenever the epoch has a full batch too, so
    every step sees one batch shape (cudnn autotunes one shape, a CUDA graph replays it).
    The order reshuffles every epoch, so the images left out change: over E epochs an
    image is left out of all of them with probability ``(tail / images) ** E``. An epoch
    smaller than one batch keeps its one batch. ``keep``: only a batch of one image is
    left out (:func:`lone_last_batch`).
    """
    from segkit.data.sampling import per_rank

    each = per_rank(images, world)
    if rule == "drop" and each > batch_size and each % batch_size:
        return True
    return lone_last_batch(images, batch_size, world)


def lone_last_batch(images: int, batch_size: int, world: int = 1) -> bool:
    """Whether an epoch of ``images`` training images (split over ``world`` ranks) would
    end with a batch of one image. Training drops that batch whatever ``--last-batch``
    says: batch norm cannot normalize one value per channel (ResNet34-UNet's bottleneck is
    1x1 at 32 px, so a lone image stops the run), and one image is a noisy step anyway.
    """

    return batch_size > 1 and per_rank(images, world) % batch_size == 1


def build_step(
    training: Training,
    runtime: Runtime,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    say: Callable[[str], None] | None = None,
) -> TrainStep:
    """The run's training step (:func:`create_step` with the run's parts): eager, or
    captured as a CUDA graph where ``--cuda-graphs`` decides so. ``say``: where a failed
    capture's fallback line goes (the run's voice; default printed).

    Raises:
        ConfigError: ``--cuda-graphs on`` for a run that cannot capture its step.
    """
    return create_step(
        training.config,
        runtime,
        model=training.model,
        loss=training.loss,
        optimizer=training.optimizer,
        task=training.task,
        ema=training.ema,
        scheduler=scheduler,
        train_images=train_samples(training.config, training.dataset),
        say=say,
    )


def create_step(
    config: RunConfig,
    runtime: Runtime,
    *,
    model: torch.nn.Module,
    loss: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_images: int,
    task: Task | None = None,
    ema: AveragedModel | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    say: Callable[[str], None] | None = None,
) -> TrainStep:
    """A training step of ``config`` from built parts: the model as :func:`step_model`
    wraps it, its loss, optimizer, EMA, accumulation and ``--on-nan``, and ``scheduler``
    stepped after each optimizer step. It is a
    :class:`segkit.training.graphs.GraphStep` where :func:`decide_graphs` says so, else
    the eager :class:`segkit.training.loops.TrainStep`; either way its ``note`` is the
    decision's line where the run should print it (None where there is nothing to say:
    ``off``, or ``auto`` off a GPU). The benchmarks build their steps here too.

    Args:
        config: The run configuration.
        runtime: Where the step runs.
        model, loss, optimizer: The built parts.
        train_images: Images of the training split (all ranks).
        task: Binary (default), or K classes.
        ema: The weights' average (``--ema``), or None.
        scheduler: The learning-rate schedule, or None (a constant rate).
        say: Where a graph step's fallback line goes (``auto``, a capture that failed);
            default printed.

    Raises:
        ConfigError: ``--cuda-graphs on`` for a run that cannot capture its step.
    """
    context = StepContext(
        step_model(model, config, runtime),
        loss,
        optimizer,
        runtime,
        task=task or Task(),
        scheduler=scheduler,
        ema=ema,
        accumulate=config.accumulate,
        on_nan=config.on_nan,
        plugins=(PluginRef.find("models", config.model), PluginRef.find("losses", config.loss)),
    )
    decision = decide_graphs(config, runtime, train_images)
    if (error := decision.error()) is not None:
        raise error
    if decision.use:
        from segkit.data.sampling import per_rank
        from segkit.training.graphs import TRIAL_STEPS, GraphStep

        each = per_rank(train_images, runtime.dist.world)
        auto = config.cuda_graphs == "auto"
        step: TrainStep = GraphStep(
            context,
            batch_size=min(config.batch_size, each),
            fallback=auto,
            say=say,
            trial=TRIAL_STEPS if auto else 0,
        )
    else:
        step = TrainStep(context)
    quiet = config.cuda_graphs == "off" or (
        config.cuda_graphs == "auto" and runtime.device.type != "cuda"
    )
    step.note = None if quiet else decision.line()
    return step


def decide_graphs(config: RunConfig, runtime: Runtime, train_images: int) -> GraphDecision:
    """``--cuda-graphs`` for this run on this runtime
    (:func:`segkit.training.graph_policy.decide_cuda_graphs`), with the last batch as the
    training loader treats it (:func:`drops_last_batch`)."""
    from segkit.data.sampling import per_rank

    world = runtime.dist.world
    drops = drops_last_batch(train_images, config.batch_size, world, config.last_batch)
    return decide_cuda_graphs(
        config.cuda_graphs,
        device_type=runtime.device.type,
        world_size=world,
        ema=config.ema is not None,
        accumulate=config.accumulate,
        on_nan=config.on_nan,
        train_images=per_rank(train_images, world),
        batch_size=config.batch_size,
        last_batch="drop" if drops else "keep",
    )


def step_model(model: torch.nn.Module, config: RunConfig, runtime: Runtime) -> torch.nn.Module:
    """The module the training loop calls: ``model`` compiled if asked, wrapped in
    DistributedDataParallel under torchrun. Checkpoints save ``model`` itself."""
    out: torch.nn.Module = torch.compile(model) if config.compile else model
    if runtime.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        device = runtime.device
        out = DistributedDataParallel(
            out, device_ids=[device.index] if device.type == "cuda" else None
        )
    return out
