"""One way from a checkpoint to a trained model ready to run: :func:`open_trained`.

It opens the checkpoint (``weights_only``), lays the caller's settings over the run
config it records, resolves the runtime on this machine (device, precision, layout,
workers) on the build path of :mod:`segkit.build`, rebuilds the model with the
checkpoint's classes and loads its weights, and builds the run's recipe, whose eval ops
give the normalization. The predictor, ``segkit evaluate``, ``segkit compare`` and
``segkit export`` all start from the :class:`Trained` it returns::

    trained = open_trained("runs/unet/best.pt", device="cpu")
    logits = trained.logits(trained.normalize(images))    # images: float 0-255, (N, 3, H, W)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segkit.build import build_model, build_recipe, resolve_runtime
from segkit.config import RENAMED_KEYS, RunConfig, checked_keywords
from segkit.errors import CheckpointError, ConfigError, DataError, PluginNotFoundError
from segkit.inference.forward import model_logits
from segkit.recipes import Normalize, PadIfNeeded, Recipe, Resize
from segkit.registry import IN_PROCESS, SINGULAR, default_registry, is_core, say_shadowed
from segkit.system.workers import recorded_workers
from segkit.task import Task
from segkit.training import checkpoint as ckpt_io
from segkit.training.runtime import Runtime

Normalization = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class Trained:
    """A trained model ready to run: what :func:`open_trained` rebuilds from a checkpoint,
    or a model in memory (:meth:`from_model`).

    Attributes:
        model: The model in eval mode, on the runtime's device and layout.
        task: What it predicts: binary, or the K classes it was trained on.
        runtime: Where and how it runs: device, precision (autocast), channels_last, and
            the workers that read images.
        recipe: The run's recipe: its eval ops give :attr:`normalization` and say whether
            the model was trained at native resolution (:attr:`native`).
        image_size: The training size.
        label: The model's name in messages (the model plugin's).
        config: The checkpoint's run config, with the settings given over it (None for a
            model in memory).
        path: The checkpoint (None for a model in memory).
        recipe_recorded: Whether the checkpoint's config names its recipe. One that does
            not (written before recipes were recorded) is rebuilt with the default recipe,
            which resizes: it is taken as trained on resized images (:meth:`training`).
        trained_on: The data the run trained on, as :func:`recorded_data` reads it:
            ``splits`` (each split's size and ids' digest), ``fingerprints`` (each
            split's images' hashes) and ``data_root``, where recorded; ``segkit evaluate``
            tells the run's own data from new data, and leaves out the images that
            trained the model, by it.
    """

    model: torch.nn.Module
    task: Task
    runtime: Runtime
    recipe: Recipe
    image_size: int
    label: str = "model"
    config: RunConfig | None = None
    path: Path | None = None
    recipe_recorded: bool = True
    trained_on: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        *,
        image_size: int,
        runtime: Runtime,
        task: Task | None = None,
        normalize: Normalize | None = None,
        native: bool = False,
    ) -> Trained:
        """A model in memory, moved to ``runtime``'s device in eval mode, trained at
        ``image_size`` on images resized to it (``native``: at their own resolution) and
        normalized by ``normalize`` (ImageNet's mean and std by default); binary unless
        ``task`` says otherwise."""
        norm = normalize if normalize is not None else Normalize()
        ops = (norm,) if native else (Resize(size=image_size), norm)
        return cls(
            model.to(runtime.device).eval(),
            task or Task(),
            runtime,
            Recipe("model", train=ops, eval=ops),
            image_size,
        )

    def __repr__(self) -> str:
        """One line for a notebook cell (the default repr printed the whole model):
        the checkpoint, model, task, training size and where it runs."""
        return (
            f"Trained(path={self.path!r}, model={self.label!r}, task={self.task.describe()!r}, "
            f"image_size={self.image_size}, device={str(self.device)!r}, "
            f"precision={self.runtime.precision.name!r})"
        )

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def native(self) -> bool:
        """Whether the model was trained at native resolution: its recipe's eval ops set
        no size (``microscopy``, ``RandomCrop`` recipe files)."""
        return self.recipe.native_eval

    def training(self) -> str:
        """How the model was trained, in words, for the line that says why ``--mode auto``
        chose what it chose: ``images resized to 128 px, recipe type3`` or ``128 px crops at
        the images' own scale, recipe microscopy``."""
        if not self.recipe_recorded:
            return (
                f"images resized to {self.image_size} px, assumed: the checkpoint records no "
                "recipe, and the default recipe resizes"
            )
        if self.native:
            return f"{self.image_size} px crops at the images' own scale, recipe {self.recipe.name}"
        return f"images resized to {self.image_size} px, recipe {self.recipe.name}"

    @property
    def multiple(self) -> int:
        """The model's ``min_input_multiple``: input sides must be multiples of it."""
        return int(getattr(self.model, "min_input_multiple", 1))

    @functools.cached_property
    def normalization(self) -> Normalization:
        """The mean and std of the recipe's evaluation (:func:`eval_normalization`).

        Raises:
            ConfigError: eval ops the predictor cannot reproduce.
        """
        return eval_normalization(self.recipe.eval, self.image_size)

    @functools.cached_property
    def _scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self.normalization
        shape = (1, len(mean), 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(shape).to(self.device) * 255
        std_t = torch.tensor(std, dtype=torch.float32).view(shape).to(self.device) * 255
        return mean_t, std_t

    def check_threshold(self, threshold: float, default: float = 0.5) -> None:
        """Refuse a probability threshold other than ``default`` (the one given when none
        is) for a K-class model, which takes the class of largest softmax probability:
        ``--threshold`` is a binary model's.

        Raises:
            ConfigError: a K-class model and another threshold than ``default``.
        """
        if self.task.multiclass and threshold != default:
            raise ConfigError(
                f"--threshold {threshold}: {self.path or self.label} predicts "
                f"{self.task.describe()}, and each pixel takes the class of largest softmax "
                "probability; a threshold applies to a binary model only: leave --threshold out"
            )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """A float ``(N, 3, H, W)`` batch of 0-255 pixels on the model's device,
        normalized as the recipe's evaluation does."""
        mean, std = self._scale
        return (images - mean) / std

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The float32 logits of a normalized batch: NHWC where the runtime says so, under
        the precision's autocast (:func:`segkit.inference.forward.model_logits`)."""
        return model_logits(self.model, images, self.runtime.precision, self.runtime.channels_last)


@checked_keywords(
    "segkit.open_trained",
    RunConfig,
    listed="the overrides are RunConfig's fields, which help(segkit.RunConfig) lists",
)
def open_trained(checkpoint: str | Path, **overrides: Any) -> Trained:
    """A checkpoint's trained model, ready to run (see the module docstring).

    Args:
        checkpoint: A run's ``best.pt`` or ``last.pt``.
        **overrides: :class:`~segkit.config.RunConfig` settings laid over the
            checkpoint's (e.g. ``device``, ``precision``, ``data``, ``num_workers``).
            ``device`` and ``precision`` are ``auto`` unless given: a checkpoint runs
            wherever it is opened.

    Raises:
        CheckpointError: the checkpoint is unreadable, its config unusable, its model
            plugin not installed, or its weights do not fit the model.
        ConfigError: an override has a bad value, or the device is not available here;
            UnknownSettingError (also a TypeError): an override no field has, with its
            close match.
    """
    path = Path(checkpoint)
    config, ckpt = open_checkpoint(path, **{"device": "auto", "precision": "auto", **overrides})
    if "num_workers" not in overrides:  # a bigger training machine's count: this one's default
        config.num_workers = recorded_workers(config.num_workers)
    runtime = resolve_runtime(config)
    model = restore_model(path, config, ckpt, runtime)
    recipe = build_recipe(config)
    if config.recipe_definition is None and config.recipe:
        say_plugin_used(path, "recipes", config.recipe, ckpt)
    return Trained(
        model,
        checkpoint_task(ckpt),
        runtime,
        recipe,
        config.image_size,
        config.model,
        config,
        path,
        recipe_recorded=recipe_recorded(ckpt),
        trained_on=recorded_data(path, ckpt),
    )


def recipe_recorded(ckpt: dict[str, Any]) -> bool:
    """Whether a checkpoint's config names its recipe (``recipe``, or its old name
    ``augment``); without it the config's default recipe stands in."""
    recorded = ckpt.get("config")
    names = {"recipe", *(old for old, new in RENAMED_KEYS.items() if new == "recipe")}
    return isinstance(recorded, dict) and any(k in recorded for k in names)


def eval_normalization(ops: Sequence[Any], image_size: int) -> Normalization:
    """The mean and std of a recipe's evaluation ops, which must be a Resize to the
    training size (a resizing recipe) or nothing that sets the size (a native one), a
    PadIfNeeded or not (the predictor pads to the model's multiple itself), and a
    Normalize: what the predictor reproduces on the device.

    Raises:
        ConfigError: any other evaluation op.
    """
    norm = None
    for op in ops:
        if isinstance(op, Normalize):
            norm = op
        elif not (isinstance(op, Resize) and op.size == image_size or isinstance(op, PadIfNeeded)):
            raise ConfigError(
                "prediction supports a Resize to the training size (or none: native "
                f"resolution), PadIfNeeded and Normalize in a recipe's eval ops, not {op!r}; "
                "evaluate such a run without --mode/--tta (segkit evaluate uses its loader)"
            )
    if norm is None:
        raise ConfigError("prediction needs a Normalize in the recipe's eval ops")
    return tuple(norm.mean), tuple(norm.std)


def open_checkpoint(path: Path, **overrides: Any) -> tuple[RunConfig, dict[str, Any]]:
    """Load a checkpoint and the run config it records, with ``overrides`` applied
    (e.g. ``data``, ``device``: a checkpoint is evaluated wherever it is opened). Where
    the overrides change the dataset plugin read (``dataset``, or ``data`` recognised as
    another layout), the checkpoint's ``dataset_options`` are dropped unless
    ``dataset_options`` is given: they were its own plugin's.

    Raises:
        CheckpointError: unreadable checkpoint, or a config segkit cannot use.
        ConfigError: an override has a bad value.
    """
    ckpt = ckpt_io.load(path, map_location="cpu")
    try:
        config = RunConfig.from_dict(ckpt["config"], source=str(path))
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{path}: the checkpoint's config is unusable ({e})") from None
    own = _dataset_name(config) if config.dataset_options else None
    for key, value in overrides.items():
        setattr(config, key, value)
    moved = ("dataset" in overrides or "data" in overrides) and "dataset_options" not in overrides
    if own is not None and moved and _dataset_name(config) != own:
        config.dataset_options = {}  # the checkpoint's were its own dataset plugin's
    config.validate()
    return config, ckpt


def _dataset_name(config: RunConfig) -> str | None:
    """The dataset plugin ``config`` reads (as :meth:`RunConfig.resolved_dataset`), or
    None where its folder is recognised by no layout (or is gone): building the dataset
    says why."""
    try:
        return config.resolved_dataset()
    except DataError:
        return None


def checkpoint_task(ckpt: dict[str, Any]) -> Task:
    """The target a checkpoint's model predicts: its recorded classes, else binary."""
    return Task.from_record(ckpt.get("task"))


def restore_model(
    path: Path, config: RunConfig, ckpt: dict[str, Any], runtime: Runtime
) -> torch.nn.Module:
    """Rebuild the checkpoint's model on the build path (with one logit channel per class
    of a K-class checkpoint) and load its weights, in eval mode.

    Raises:
        CheckpointError: the model plugin is not installed, or the weights do not fit it.
    """
    try:
        model = build_model(
            config, runtime, restoring=True, out_channels=checkpoint_task(ckpt).num_classes
        )
    except PluginNotFoundError as e:
        raise missing_plugin(path, "models", config.model, ckpt, e) from None
    say_plugin_used(path, "models", config.model, ckpt)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(_misfit(path, config, str(e))) from None
    return model.eval()


def missing_plugin(
    path: Path, kind: str, name: str, ckpt: dict[str, Any] | None, error: Exception
) -> CheckpointError:
    """The error for a checkpoint whose run used plugin ``name`` of ``kind``, which is not
    installed here (``error``, the registry's): the distribution and version to install,
    as the checkpoint (or its run's ``config.json``) records them."""
    what = f"{SINGULAR[kind]} '{name}'"
    recorded = recorded_plugin(path, kind, name, ckpt)
    if recorded is None:
        return CheckpointError(
            f"{path}: was trained with {what}, which is not installed here ({error}). "
            "Install the package that provides it"
        )
    distribution, version = recorded
    if distribution == IN_PROCESS:
        return CheckpointError(
            f"{path}: trained with {what}, which was registered in the training process "
            "(segkit.register_plugin) and is not registered in this one; register it again, "
            f"segkit.register_plugin('{kind}', '{name}', your_factory), then open the "
            "checkpoint"
        )
    pin = f"{distribution}=={version}" if version else distribution
    return CheckpointError(
        f"{path}: trained with {what} from distribution {distribution}"
        f"{' ' + version if version else ''}, which is not installed here; "
        f"`pip install {pin}` (or a version of {distribution} that still provides "
        f"'{name}'), then run this again"
    )


def check_plugins_installed(path: Path, config: RunConfig, ckpt: dict[str, Any]) -> None:
    """Refuse to go on with checkpoint ``path`` (a resumed run) where a plugin its run
    used is not installed, naming the distribution and version to install
    (:func:`missing_plugin`), before anything is built. Reads entry-point names only.

    Raises:
        CheckpointError: a plugin of the run is not installed (or registered) here.
    """
    from segkit.registry import default_registry

    reg = default_registry()
    try:
        named = config.plugins()
    except DataError:  # the data folder moved: building the dataset says so, later
        named = {
            k: v
            for k, v in (
                ("models", config.model),
                ("losses", config.loss),
                ("recipes", config.recipe),
                ("loaders", config.loader),
            )
            if v
        }
        if config.recipe_definition is not None:
            named.pop("recipes", None)
    for kind, name in named.items():
        if kind == "losses" and name == "auto":
            continue
        try:
            reg.info(kind, name)
        except PluginNotFoundError as e:
            raise missing_plugin(path, kind, name, ckpt, e) from None
        say_shadowed(kind, name)


def recorded_data(path: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """The data a checkpoint's run trained on: ``splits`` (each split's ``count`` and
    ``ids`` digest, :func:`segkit.training.checkpoint.split_record`) and ``data_root``
    (the folder, absolute), as the checkpoint records them (written since 2026-12-07),
    else as the ``config.json`` of its run folder records them under ``resolved``; the
    keys neither records are left out. ``fingerprints`` (each split's images'
    :func:`~segkit.training.checkpoint.sample_fingerprints`, since 2026-12-07) only the
    checkpoint records."""
    out = {k: ckpt[k] for k in ("splits", "data_root") if ckpt.get(k)}
    if len(out) < 2:
        try:
            resolved = json.loads((path.parent / "config.json").read_text())["resolved"]
            out = {k: resolved[k] for k in ("splits", "data_root") if resolved.get(k)} | out
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    prints = ckpt.get("fingerprints")
    if isinstance(prints, dict) and all(isinstance(t, torch.Tensor) for t in prints.values()):
        out["fingerprints"] = prints
    return out


def plugin_change(
    path: Path, kind: str, name: str, ckpt: dict[str, Any] | None = None
) -> str | None:
    """The line that says the plugin ``name`` of ``kind`` built now is not the one
    checkpoint ``path``'s run used: another distribution's (a third-party plugin whose
    name segkit now has as a built-in, which wins), or another version of a third-party
    distribution; None where they are the same, or the checkpoint records none (segkit's
    own built-ins across segkit versions are not told: docs/models.md lists what changed)."""
    recorded = recorded_plugin(path, kind, name, ckpt)
    info = default_registry().plugins(kind).get(name)
    if recorded is None or info is None:
        return None
    distribution, version = recorded
    was = f"from distribution '{distribution}'{' ' + version if version else ''}"
    if distribution == IN_PROCESS:
        was = "registered in its training process (segkit.register_plugin)"
    what = f"{SINGULAR[kind]} '{name}'"
    if distribution == info.distribution:
        if version == info.version or is_core(distribution) or distribution == IN_PROCESS:
            return None
        return (
            f"{path} was trained with {what} {was}; version {info.version or '(unknown)'} is "
            f"installed here and builds it: where {distribution} changed it since, the "
            f"results differ from the run's (`pip install {distribution}=={version}` to match)"
        )
    if is_core(info.distribution):
        hidden = any(p.distribution == distribution for p in info.shadows)
        how = (
            f"{distribution}'s, installed here, is hidden by the built-in (rename its "
            f"entry point to use it; `segkit list {kind}` shows it)"
            if hidden
            else f"{distribution} is not installed here"
        )
        return (
            f"{path} was trained with {what} {was}, but '{name}' is now the name of "
            f"segkit's built-in {SINGULAR[kind]}, and that is what this builds "
            f"(segkit {info.version}): the weights are loaded into another {SINGULAR[kind]}, "
            f"and the results may differ from the run's; {how}"
        )
    return (
        f"{path} was trained with {what} {was}; this builds the {SINGULAR[kind]} of that "
        f"name from distribution '{info.distribution}'"
        f"{' ' + info.version if info.version else ''} instead, and the results may differ "
        "from the run's"
    )


def say_plugin_used(path: Path, kind: str, name: str, ckpt: dict[str, Any] | None) -> None:
    """Print, once per process, :func:`plugin_change`'s line where the plugin built now
    is not the one the checkpoint's run used, else the built-in's shadow note where it
    hides a namesake (:func:`segkit.registry.say_shadowed`): one line either way."""
    say_shadowed(kind, name, plugin_change(path, kind, name, ckpt))


def recorded_plugin(
    path: Path, kind: str, name: str, ckpt: dict[str, Any] | None = None
) -> tuple[str, str] | None:
    """``(distribution, version)`` of the plugin ``name`` of ``kind`` a checkpoint's run
    used: as the checkpoint ``ckpt`` records it under ``plugins`` (checkpoints written
    since 2026-12-07), else as the ``config.json`` of its run folder records it under
    ``resolved.plugins``; None where neither does, or they record another name."""
    plugins = ckpt.get("plugins") if isinstance(ckpt, dict) else None
    plugin = plugins.get(kind) if isinstance(plugins, dict) else None
    if plugin is None:
        try:
            recorded = json.loads((path.parent / "config.json").read_text())
            plugin = recorded["resolved"]["plugins"][kind]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
    if not isinstance(plugin, dict) or plugin.get("name") != name:
        return None
    distribution, version = plugin.get("distribution"), plugin.get("version") or ""
    if not isinstance(distribution, str) or not distribution or not isinstance(version, str):
        return None
    return distribution, version


def _misfit(path: Path, config: RunConfig, torch_says: str) -> str:
    """Weights that do not fit the rebuilt model, in words: the first tensor whose shape
    differs (torch's ``size mismatch for head.weight: copying a param with shape ...``),
    the options the model was rebuilt with, and what to pass instead."""
    mismatch = re.search(
        r"size mismatch for ([\w.]+): copying a param with shape torch.Size\(\[([\d, ]*)\]\) "
        r"from checkpoint, the shape in current model is torch.Size\(\[([\d, ]*)\]\)",
        torch_says,
    )
    options = ", ".join(f"{k}={v}" for k, v in config.model_options.items()) or "its defaults"
    if mismatch:
        name, saved, now = mismatch.groups()
        found = (
            f"{name} is ({saved}) in the checkpoint and ({now}) in the model rebuilt with {options}"
        )
    else:
        found = torch_says.splitlines()[0][:200]
    return (
        f"{path}: weights do not fit model '{config.model}': {found}. The model was trained "
        f"with other options, or its defaults changed since: pass the option it was trained "
        f"with (--model-opt KEY=VALUE; `segkit info {config.model}` lists them, and "
        f"docs/models.md the defaults that changed)"
    )
