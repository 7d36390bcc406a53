"""segkit: semantic segmentation (binary or K classes) with a plugin registry.

The public API, imported lazily so ``import segkit`` (and ``segkit --help``) stays fast::

    import segkit
    segkit.list_plugins("models")                 # ['resnet34_unet', 'unet', ...]
    segkit.register_plugin("models", "mine", MyNet)  # in this process, no entry point
    model = segkit.create_model("unet", in_channels=3, out_channels=1)  # or classes=1, as smp
    loss = segkit.create_loss("bce_dice")
    recipe = segkit.create_recipe("type3", image_size=256)  # or a file: "crops.toml"
    result = segkit.train(model="unet", epochs=5)   # or a RunConfig, keywords over it
    result = segkit.resume(result.run_dir, epochs=10)  # segkit run --resume (keep_last=True)
    run = segkit.read_run("runs/x")              # a finished run folder: config, summary, history
    report = segkit.check_data("data/pets")      # segkit data check, as a Report
    spec = segkit.MaskSpec.multiclass(["background", "cell"], ignore=255)  # K classes
    probs = segkit.Predictor("runs/x/best.pt", mode="tile", tta="flip").predict("big.png")
    segkit.predict("runs/x/best.pt", ["photos/"], "masks/", overlays=True)   # segkit predict
    print(segkit.evaluate("runs/x/best.pt", split="valid").metrics)          # segkit evaluate
    segkit.export("runs/x/best.pt", "model.onnx", dynamic=True)              # segkit export
    trained = segkit.open_trained("runs/x/best.pt")  # the model, task, runtime, normalization
"""

from __future__ import annotations

# Nothing is imported eagerly, not even typing: the `segkit` command imports this package
# before its Ctrl-C guard is in place (segkit.command), and `import segkit` stays instant.
TYPE_CHECKING = False

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DuplicatePluginError",
    "MaskSpec",
    "PluginContractError",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "Predictor",
    "RunConfig",
    "RunInterrupted",
    "SegkitError",
    "Task",
    "UnknownSettingError",
    "check_data",
    "create_dataset",
    "create_loss",
    "create_model",
    "create_recipe",
    "evaluate",
    "export",
    "get_plugin",
    "list_plugins",
    "lr_find",
    "model_info",
    "open_trained",
    "predict",
    "read_run",
    "register_plugin",
    "resume",
    "train",
    "unregister_plugin",
]

#: The exceptions of :data:`__all__`, from :mod:`segkit.errors` on first use.
_ERRORS = frozenset(n for n in __all__ if n.endswith("Error") or n == "RunInterrupted")

if TYPE_CHECKING:
    from typing import Any

    from segkit.config import RunConfig
    from segkit.contracts import MaskSpec
    from segkit.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        DuplicatePluginError,
        PluginContractError,
        PluginError,
        PluginLoadError,
        PluginNotFoundError,
        RunInterrupted,
        SegkitError,
        UnknownSettingError,
    )
    from segkit.inference.evaluate import Evaluated
    from segkit.inference.export import Exported
    from segkit.inference.predict import Predicted
    from segkit.inference.predictor import Predictor
    from segkit.inference.trained import Trained
    from segkit.reports.compare import Run
    from segkit.reports.info import ModelInfo
    from segkit.task import Task
    from segkit.training.engine import resume, train
    from segkit.training.lr_sweep import LRFind


def list_plugins(kind: str) -> list[str]:
    """Names of the installed plugins of ``kind``: models, losses, recipes, loaders,
    datasets. Lists entry points without importing any plugin."""
    from segkit.registry import list_plugins as _list

    return _list(kind)


def register_plugin(kind: str, name: str, factory: Any = None) -> Any:
    """Register ``factory`` as plugin ``name`` of ``kind`` in this process, without
    packaging an entry point: what a notebook or a script does first. From then on
    ``RunConfig(model=name)``, :func:`create_model`, :func:`get_plugin` and the rest use it
    as they use an installed plugin. Without ``factory`` it is a decorator::

        @segkit.register_plugin("models", "tiny_net")
        def tiny_net(in_channels=3, out_channels=1, width=16):
            return torch.nn.Conv2d(in_channels, out_channels, 3, padding=1)

    The factory takes its kind's contract (:mod:`segkit.contracts`; a model
    ``factory(in_channels=3, out_channels=1, **options) -> nn.Module``, a loss
    ``factory(**options) -> loss(logits, target)``, a dataset ``factory(root, **options)
    -> Dataset``), checked here as an entry point's is on load. Registering the name again
    replaces it (a notebook cell run twice). It lasts as long as the process: the
    ``segkit`` command and ``torchrun`` processes do not see it, and a checkpoint of such a
    model opens (:class:`Predictor`, :func:`evaluate`) where it is registered again.

    Args:
        kind: ``models``, ``losses``, ``recipes``, ``loaders``, ``datasets`` or ``ops``.
        name: The name a run gives (``--model NAME``).
        factory: The factory or class; None for a decorator.

    Returns:
        ``factory`` (or the decorator, which returns the factory it is given).

    Raises:
        PluginNotFoundError: an unknown ``kind``.
        PluginLoadError: ``factory`` is not callable or does not take its kind's contract.
        DuplicatePluginError: an installed distribution registers ``name``.
    """
    from segkit.registry import register_plugin as _register

    if factory is None:
        return lambda f: _register(kind, name, f)
    return _register(kind, name, factory)


def unregister_plugin(kind: str, name: str) -> None:
    """Forget a plugin :func:`register_plugin` registered.

    Raises:
        PluginNotFoundError: no plugin of that kind and name was registered in this process.
    """
    from segkit.registry import unregister_plugin as _unregister

    _unregister(kind, name)


def read_run(run_dir: Any) -> Run:
    """A finished run folder, read: ``config`` (its :class:`RunConfig`), ``summary`` (the
    ``summary.json`` dict: ``test_dice``, ``best_epoch``, ...), ``history`` (the rows of
    ``metrics.csv``, numbers as floats), ``scores`` (``test_scores.csv``: ``(id, dice,
    iou)`` per test image) and ``resolved`` (what ``auto`` became: device, precision, ...).

    Raises:
        ConfigError: not a run folder, or a run that has not finished (the message says how
            to finish it: the resume, or the restart).
    """
    from segkit.reports.compare import read_run as _read

    return _read(run_dir)


def get_plugin(kind: str, name: str) -> Any:
    """The factory (or class) registered as ``name``, imported on first use."""
    from segkit.registry import get

    return get(kind, name)


def create_model(
    name: str,
    in_channels: int = 3,
    out_channels: int | None = None,
    *,
    classes: int | None = None,
    **options: Any,
) -> Any:
    """Create a registered model; it returns logits of shape (N, out_channels, H, W), and
    an input whose size it cannot take raises a ConfigError naming a size that works.

    Args:
        name: A registered model name (``segkit list models``).
        in_channels: Channels of the input images.
        out_channels: Logit channels: 1 for binary, K for K classes (default 1).
        classes: ``out_channels`` as segmentation_models_pytorch names it
            (``smp.Unet(classes=3)``); give one of the two.
        **options: The factory's options (``encoder``, ``weights``, ...).

    Raises:
        ConfigError: ``classes`` and ``out_channels`` both given and different, or an
            option the model refuses.
    """
    from segkit.build import create_model as _create
    from segkit.errors import ConfigError

    if classes is not None and out_channels is not None and classes != out_channels:
        raise ConfigError(
            f"create_model({name!r}): classes={classes} and out_channels={out_channels} "
            "disagree; they are one setting (classes is smp's name for out_channels): give one"
        )
    out = out_channels if out_channels is not None else classes if classes is not None else 1
    return _create(name, in_channels, out, **options)


def create_loss(name: str, **options: Any) -> Any:
    """Create a registered loss: ``loss(logits, target) -> scalar``."""
    from segkit.registry import create

    return create("losses", name, **options)


def create_recipe(name: Any, image_size: int = 256) -> Any:
    """Create an augmentation recipe (a :class:`segkit.recipes.Recipe`): a registered one
    (``segkit list recipes``) or, as ``--recipe FILE`` and ``RunConfig(recipe=FILE)`` take,
    a recipe file (a path ending in ``.toml``, ``.yaml``, ``.yml`` or ``.json``).

    Raises:
        PluginNotFoundError: no recipe of that name is registered.
        ConfigError: the recipe file is missing, does not parse or describes a bad recipe.
    """
    from pathlib import Path

    from segkit.recipes.files import is_recipe_file, load_recipe
    from segkit.registry import create

    if isinstance(name, Path) or is_recipe_file(str(name)):
        return load_recipe(name, image_size=image_size)
    return create("recipes", name, image_size=image_size)


def create_dataset(name: str, root: Any = None, **options: Any) -> Any:
    """Open a dataset with a registered layout reader (``oxford_pet``, ``folder``, ...)."""
    from pathlib import Path

    from segkit.registry import create

    return create("datasets", name, Path(root) if root is not None else None, **options)


def check_data(
    data: Any = None,
    dataset: str | None = None,
    workers: int | None = None,
    **options: Any,
) -> Any:
    """Read every sample of a dataset once and return a :class:`segkit.data.check.Report`
    (``segkit data check``): sizes, formats, mask values, foreground fractions, empty
    masks, duplicates across splits, problems, and suggested image size and
    ``pos_weight``. ``report.ok`` is False when a run would stop on a problem;
    ``report.to_dict()`` is the ``--json`` output. ``data``/``dataset`` default as in
    ``segkit run`` (the layout the folder is recognised as, the generated synthetic set
    without a folder); ``options`` go to the dataset."""
    from segkit.config import RunConfig
    from segkit.data.check import check_configured

    config = RunConfig(
        data=str(data) if data is not None else None, dataset=dataset, dataset_options=options
    )
    return check_configured(config, workers, progress=False)


def model_info(name: str, image_size: int = 256, **options: Any) -> ModelInfo:
    """Parameters, forward and training GFLOP, activation memory per image and (timm
    encoders) feature channels and strides of model ``name`` at ``image_size``; measured
    on the CPU with random weights (see :mod:`segkit.reports.info`)."""
    from segkit.reports.info import model_info as _info

    return _info(name, image_size, **options)


def lr_find(config: RunConfig | None = None, **options: Any) -> LRFind:
    """An exponential learning-rate sweep on a run's model, loss and data, as
    ``segkit lr-find`` does: ``result.suggestion``, ``result.lrs``, ``result.losses``
    (it unpacks as ``lrs, losses, suggestion``). The settings are a :class:`RunConfig` or
    its fields as keywords, over ``config``'s, as :func:`train` takes them
    (``segkit.lr_find(data="pets", image_size=64, steps=60)``). ``options`` also take the
    sweep's ``start_lr``, ``end_lr``, ``steps``, ``beta``; ``plot`` (a file: the loss
    against the learning rate, ``result.plot``); and ``training``, ``runtime``,
    ``progress`` (see :func:`segkit.training.lr_sweep.lr_find`). The model and optimizer
    are restored afterwards and nothing but the plot is written."""
    from segkit.training.lr_sweep import find

    return find(config, **options)


def predict(checkpoint: Any, images: Any, out: Any, **options: Any) -> Predicted:
    """``segkit predict``: write the masks (and with ``overlays``, ``probabilities``: the
    overlays and probabilities) of image files, folders and ``.txt`` lists into ``out``;
    ``options`` are :class:`segkit.inference.options.PredictOptions`'s. Returns a
    :class:`segkit.inference.predict.Predicted` (``summary()`` is the command's last line)."""
    from segkit.inference.predict import predict as _predict

    return _predict(checkpoint, images, out, **options)


def evaluate(checkpoint: Any, split: str = "auto", **options: Any) -> Evaluated:
    """``segkit evaluate``: a checkpoint's scores on a split (``metrics``; ``lines()`` is
    what the command prints): ``train``, ``valid``, ``test``, ``all``, or ``auto``: all of
    data that is not the run's own, else ``test``; ``options`` are
    :class:`segkit.inference.options.EvaluateOptions`'s: other data, loader or batch size,
    the device, and the predictor's ``mode``/``tta`` to score each image at its own size."""
    from segkit.inference.evaluate import evaluate as _evaluate

    return _evaluate(checkpoint, split, **options)


def export(checkpoint: Any, out: Any, **options: Any) -> Exported:
    """``segkit export``: write a checkpoint's model to ``out`` as ONNX or TorchScript,
    checked against PyTorch; ``options`` are
    :class:`segkit.inference.options.ExportOptions`'s (``format``: by default from
    ``out``'s suffix; ``dynamic``, ``image_size``, ``threshold``, ``opset``,
    ``tolerance``, ``overwrite``). Returns a :class:`segkit.inference.export.Exported`
    (the file, its metadata sidecar, the traced shapes and the parity measured)."""
    from segkit.inference.export import export as _export

    return _export(checkpoint, out, **options)


def open_trained(checkpoint: Any, **overrides: Any) -> Trained:
    """A checkpoint's model ready to run: its config, task, runtime, the model in eval
    mode, its normalization and ``logits(images)`` (see :mod:`segkit.inference.trained`);
    ``overrides`` are run settings over the checkpoint's (``device``, ``precision``, ...)."""
    from segkit.inference.trained import open_trained as _open

    return _open(checkpoint, **overrides)


def __getattr__(name: str) -> Any:
    if name in _ERRORS or name == "errors":
        import importlib  # not `from segkit import errors`: that asks this hook again

        errors = importlib.import_module("segkit.errors")
        return errors if name == "errors" else getattr(errors, name)
    if name == "RunConfig":
        from segkit.config import RunConfig

        return RunConfig
    if name == "MaskSpec":
        from segkit.contracts import MaskSpec

        return MaskSpec
    if name == "Task":
        from segkit.task import Task

        return Task
    if name == "Predictor":
        from segkit.inference.predictor import Predictor

        return Predictor
    if name in ("train", "resume"):
        from segkit.errors import RunInterrupted

        try:  # torch: seconds; a notebook's interrupt here is one line, not an import's traceback
            from segkit.training import engine
        except KeyboardInterrupt:
            raise RunInterrupted(
                f"interrupted while loading segkit.{name} (torch and the training code): "
                "nothing was trained or written; run the same call again"
            ) from None
        return getattr(engine, name)
    raise AttributeError(f"module 'segkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names and the public API imported on first use (tab completion)."""
    return sorted(set(globals()) | set(__all__))
