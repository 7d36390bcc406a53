"""The options of the predictor, ``segkit predict``, ``segkit evaluate`` and ``segkit
export``: one dataclass each, validated once where it is made.

As :class:`segkit.config.RunConfig`'s, every field carries its command-line documentation
in ``metadata`` (:func:`option`): help, group, flag, metavar. The commands' arguments are
generated from it (:func:`segkit.cli.args.add_options`), and the Python functions
(:func:`segkit.predict`, :func:`segkit.evaluate`, :func:`segkit.inference.export.export`)
take the same fields as keywords, so a new option is one field here and nowhere else.

Fields marked ``config`` are settings of the checkpoint's run, the :class:`RunConfig`
fields of the same name: their flags, help and types are RunConfig's, and a value given
replaces the one the checkpoint recorded.

No torch here: ``segkit --help`` reads these classes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from segkit.config import (
    BLENDS,
    PREDICT_MODES,
    TTAS,
    BlendName,
    PrecisionName,
    PredictMode,
    TTAName,
    checked_keywords,
    named,
)
from segkit.errors import ConfigError

ProbabilityFormat = Literal["npy", "png"]
ExportFormat = Literal["onnx", "torchscript"]
SplitName = Literal["auto", "train", "valid", "test", "all"]
#: The parity check's tolerance of an export (``--tolerance``): float32 agrees with
#: PyTorch to a few parts in a million of the logits, float16 (``--half``, 10 bits of
#: mantissa, rounded again at every layer) to a few parts in ten thousand.
TOLERANCE = 1e-4
HALF_TOLERANCE = 1e-2
#: Values of ``export --format``.
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
#: The file suffixes of each export format: ``export --out``'s suffix chooses the format
#: when ``--format`` is not given, and one of the other format's is refused.
EXPORT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "onnx": (".onnx",),
    "torchscript": (".ts", ".pt", ".pth", ".torchscript"),
}

#: What :func:`option` records in a field's ``metadata`` besides its help:
#: ``group`` (an argument group's title; None: the command's own options), ``flag`` (the
#: flag when it is not ``--`` + the name with ``-``), ``short`` (a one-letter alias such as
#: ``-q``), ``metavar``, ``positional`` (an argument without a flag; a list takes one or
#: more), ``const`` (the value of the flag given without one) and ``config`` (a run
#: setting, whose flag is RunConfig's).
OPTION_KEYS = ("group", "flag", "short", "metavar", "positional", "const", "config")


def option(default: Any = dataclasses.MISSING, help: str | None = None, **cli: Any) -> Any:
    """A dataclass field with its command-line documentation in ``metadata`` (keys:
    :data:`OPTION_KEYS`). Without a default the field is required (a positional
    argument, or a flag with ``required=True``)."""
    unknown = set(cli) - set(OPTION_KEYS)
    if unknown:
        raise TypeError(f"option(): unknown metadata {sorted(unknown)}; known: {OPTION_KEYS}")
    return dataclasses.field(default=default, metadata={"help": help, **cli})


@functools.cache
def option_types(cls: type) -> dict[str, Any]:
    """Field name -> its resolved type annotation, for an options dataclass."""
    return typing.get_type_hints(cls)


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raises:
    ConfigError: ``value`` is not one of ``allowed``; the message names option ``key``
        as it was given (:func:`segkit.config.named`: ``mode='tiles'``, ``--mode 'tiles'``)."""
    if value not in allowed:
        raise ConfigError(f"{named(key, value)}: expected one of {', '.join(allowed)}")


def check_probability(key: str, value: float) -> None:
    """Raises:
    ConfigError: ``value`` is not strictly between 0 and 1."""
    if not 0 < value < 1:
        raise ConfigError(f"{named(key, value, as_typed=True)}: expected a probability in (0, 1)")


# ---------------------------------------------------------------------- shared fields
#
# The tiling and flip options read the same in `predict` and `evaluate`: each field is
# made by one function, so both commands (and the predictor) share its help and default.

_CHECKPOINT_HELP = "best.pt or last.pt from a run folder"


def _checkpoint() -> Any:
    return option(help=_CHECKPOINT_HELP, positional=True)


def _tta() -> Any:
    return option(
        "none",
        "test-time augmentation: average the probabilities of the image and its flips "
        "(flip: horizontal, 2 passes; flip_hv: horizontal and vertical, 4 passes)",
        group="prediction",
    )


def _tile() -> Any:
    return option(
        None,
        "tile side in pixels for --mode tile, a multiple of the model's "
        "min_input_multiple (default: the training size)",
        group="prediction",
        metavar="N",
    )


def _overlap() -> Any:
    return option(
        0.25,
        "fraction of a tile shared with the next (default: 0.25)",
        group="prediction",
        metavar="F",
    )


def _blend() -> Any:
    return option(
        "gaussian",
        "weights of overlapping tiles: gaussian (centre-weighted) or linear (default: gaussian)",
        group="prediction",
    )


def _predict_mode() -> Any:
    return option(
        "auto",
        "resize: the whole image at the training size; tile: sliding window at the "
        "image's own resolution; whole: the image at its own resolution in one pass, "
        "padded to the model's multiple; auto: from how the checkpoint was trained: "
        "resize for a model trained on resized images (type1-type3, natural), whatever "
        "the image's size; whole for one trained on crops at native resolution "
        "(microscopy, RandomCrop recipes), tile above 2048x2048 pixels; a checkpoint "
        "that records no recipe counts as resize-trained. Each image's line names its "
        "mode (default: auto)",
        group="prediction",
    )


def _batch_size() -> Any:
    return option(
        8,
        "images (resize mode) or tiles (tile mode) per forward pass (default: 8)",
        metavar="N",
    )


# ---------------------------------------------------------------------- the predictor


@checked_keywords("PredictorOptions")
@dataclass(kw_only=True)
class PredictorOptions:
    """How :class:`segkit.Predictor` sees an image (see :mod:`segkit.inference.predictor`).

    Attributes:
        mode: ``resize``, ``tile``, ``whole`` or ``auto``.
        tta: ``none``, ``flip`` (horizontal) or ``flip_hv`` (4 passes).
        tile: Tile side for ``tile`` mode (None: the training size); a multiple of the
            model's ``min_input_multiple`` (checked against the model).
        overlap: Fraction of a tile shared with its neighbour, in [0, 1).
        blend: Tile weights, ``gaussian`` or ``linear``.
        batch_size: Images (resize) or tiles (tile) per forward pass.

    Raises:
        ConfigError: a bad value, named as it was given (``mode='tiles'`` in Python, by
            its flag in the ``segkit`` command); UnknownSettingError (also a TypeError):
            a keyword no option has, with its close match.
    """

    mode: PredictMode = _predict_mode()
    tta: TTAName = _tta()
    tile: int | None = _tile()
    overlap: float = _overlap()
    blend: BlendName = _blend()
    batch_size: int = _batch_size()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises:
        ConfigError: a bad mode, tta, blend, batch size, tile or overlap."""
        check_choice("mode", self.mode, PREDICT_MODES)
        check_choice("tta", self.tta, TTAS)
        check_choice("blend", self.blend, BLENDS)
        if self.batch_size < 1:
            raise ConfigError(f"{named('batch_size', self.batch_size)}: expected 1 or more")
        if self.tile is not None and self.tile < 1:
            raise ConfigError(f"{named('tile', self.tile)}: expected a positive size in pixels")
        if not 0 <= self.overlap < 1:
            raise ConfigError(
                f"{named('overlap', self.overlap, as_typed=True)}: expected a fraction of the "
                "tile in [0, 1), e.g. 0.25"
            )


# ---------------------------------------------------------------------- segkit predict


def _check_image_paths(images: Any) -> None:
    """Raises:
    ConfigError: ``images`` (predict's) is not a path or a list of paths: an image in
        memory belongs to :class:`~segkit.inference.predictor.Predictor`, which returns
        its probabilities instead of writing files."""
    items = images if isinstance(images, list | tuple) else None
    bad = [i for i in items if not isinstance(i, str | os.PathLike)] if items is not None else []
    if items is not None and not bad:
        return
    got = type(bad[0] if bad else images).__name__
    raise ConfigError(
        f"{named('images')}: expected image files, folders or .txt lists (a path or a list "
        f"of paths), got {'a list holding ' if bad else ''}{got}; an image in memory (a "
        "numpy array, a PIL image) is predicted by segkit.Predictor(checkpoint).predict(image), "
        "which returns its probabilities"
    )


@checked_keywords("PredictOptions")
@dataclass(kw_only=True)
class PredictOptions:
    """``segkit predict`` (:func:`segkit.predict`): masks, overlays and probabilities of
    image files, folders and lists.

    Attributes:
        checkpoint: A run's ``best.pt`` or ``last.pt``.
        images: Image files, folders (searched recursively) and ``.txt`` lists of paths.
        out: The folder written into (a folder's subfolders are kept).
        threshold: A binary model's probability threshold.
        batch_size, mode, tta, tile, overlap, blend: The predictor's
            (:class:`PredictorOptions`).
        overlays: Also write ``<stem>_overlay.png``.
        probabilities: Also write the probabilities: ``npy`` or ``png`` (None: not).
        skip_bad: Report an unreadable image and go on (else stop at it).
        overwrite: Replace output files that exist (else refuse to start).
        skip_existing: Leave out images whose outputs all exist.
        quiet: Print no line per image.
        device, precision, num_workers: Where and how the model runs, and the threads
            reading images (:class:`~segkit.config.RunConfig`'s).

    Raises:
        ConfigError: a bad value, named as it was given (``mode='tiles'`` in Python, by
            its flag in the ``segkit`` command); UnknownSettingError (also a TypeError):
            a keyword no option has, with its close match.
    """

    checkpoint: str | Path = _checkpoint()
    images: list[str | Path] = option(
        help="image files, folders (searched recursively for .jpg, .jpeg, .png, .bmp, .tif, "
        ".tiff, .webp, .gif) and .txt files listing one image path per line",
        positional=True,
        metavar="PATHS",
    )
    out: str | Path = option(
        help="folder for <stem>_mask.png (0/255, or a palette PNG of class indices for K "
        "classes); a folder's subfolders are kept",
    )
    threshold: float = option(0.5, "probability threshold of a binary model (default: 0.5)")
    batch_size: int = _batch_size()
    overlays: bool = option(False, "also write <stem>_overlay.png")
    probabilities: ProbabilityFormat | None = option(
        None,
        "also write the probabilities: npy (the default) <stem>_probs.npy, float32 "
        "(H, W) foreground or (K, H, W) softmax; png 16-bit <stem>_probs.png "
        "(<stem>_probs_<class>.png for K classes), probability x 65535",
        const="npy",
    )
    skip_bad: bool = option(False, "report an unreadable image and go on (default: stop at it)")
    overwrite: bool = option(False, "replace output files that exist (default: refuse to start)")
    skip_existing: bool = option(
        False,
        "leave out images whose outputs all exist, and write only the missing files of the "
        "others, never replacing one (finishes a predict that was stopped)",
    )
    quiet: bool = option(False, "print only the summary line", short="-q")
    mode: PredictMode = _predict_mode()
    tta: TTAName = _tta()
    tile: int | None = _tile()
    overlap: float = _overlap()
    blend: BlendName = _blend()
    device: str = option("auto", config=True)
    precision: PrecisionName = option("auto", config=True)
    num_workers: int | None = option(None, config=True)

    def __post_init__(self) -> None:
        if isinstance(self.images, str | os.PathLike):  # one path, not its characters
            self.images = [self.images]
        _check_image_paths(self.images)
        if self.probabilities is True:
            self.probabilities = "npy"
        elif self.probabilities is False:
            self.probabilities = None
        self.validate()

    def validate(self) -> None:
        """Raises:
        ConfigError: a bad threshold, probability format or predictor option."""
        check_probability("threshold", self.threshold)
        if self.probabilities not in (None, *get_args(ProbabilityFormat)):
            raise ConfigError(f"{named('probabilities', self.probabilities)}: expected npy or png")
        self.predictor()

    def predictor(self) -> PredictorOptions:
        """The predictor's options among these."""
        return PredictorOptions(
            mode=self.mode,
            tta=self.tta,
            tile=self.tile,
            overlap=self.overlap,
            blend=self.blend,
            batch_size=self.batch_size,
        )


# ---------------------------------------------------------------------- segkit evaluate


@checked_keywords("EvaluateOptions")
@dataclass(kw_only=True)
class EvaluateOptions:
    """``segkit evaluate`` (:func:`segkit.evaluate`): a checkpoint's scores on a split.

    Without ``mode`` and ``tta`` the split is read by the run's loader and scored as the
    run scored it (``eval_size``); with either, every image goes through the predictor at
    its own size.

    Attributes:
        checkpoint: A run's ``best.pt`` or ``last.pt``.
        split: ``train``, ``valid``, ``test``, ``all`` (every image of every split), or
            ``auto``: ``all`` for data whose samples are not the run's (new labelled
            images), else ``test`` (:func:`segkit.inference.evaluate.choose_split`), less
            the images that trained the model (the checkpoint's fingerprints of them).
        data, dataset, dataset_options, loader, batch_size, num_workers, eval_size: Run
            settings that replace the checkpoint's (None: the checkpoint's).
        device, precision: Where and how the model runs (``auto`` wherever it is opened).
        mode: The predictor's mode (None: the loader's batches; ``resize`` when only
            ``tta`` is given).
        tta, tile, overlap, blend: The predictor's (:class:`PredictorOptions`).
        threshold: A binary model's probability threshold for the scores (default 0.5,
            as a run scores); evaluating the valid split at a few values picks one for
            ``segkit predict --threshold``.

    Raises:
        ConfigError: a bad value, named as it was given (``mode='tiles'`` in Python, by
            its flag in the ``segkit`` command); UnknownSettingError (also a TypeError):
            a keyword no option has, with its close match.
    """

    checkpoint: str | Path = _checkpoint()
    split: SplitName = option(
        "auto",
        "the images to score: a split (train, valid, test), all of them, or auto: all of a "
        "--data folder whose samples are not the ones the model was trained on (new "
        "labelled images), else the test split (the run's own data: its other images "
        "trained the model); auto leaves out any image that trained the model (found by "
        "its bytes), the others count them",
    )
    data: str | None = option(None, config=True)
    dataset: str | None = option(None, config=True)
    dataset_options: dict[str, Any] | None = option(None, config=True)
    loader: str | None = option(None, config=True)
    batch_size: int | None = option(None, config=True)
    num_workers: int | None = option(None, config=True)
    device: str = option("auto", config=True)
    precision: PrecisionName = option("auto", config=True)
    eval_size: str | None = option(None, config=True)
    mode: PredictMode | None = option(
        None,
        "score each image at its own size through the predictor: resize (whole image "
        "at the training size), tile (sliding window at full resolution), whole (the "
        "image at its own resolution, padded to the model's multiple) or auto (from "
        "how the checkpoint was trained: resize for a resize-trained model; whole for "
        "one trained on native-resolution crops, tile above 2048x2048 pixels); default: "
        "the loader's batches as --eval-size says",
        group="prediction",
    )
    tta: TTAName = _tta()
    tile: int | None = _tile()
    overlap: float = _overlap()
    blend: BlendName = _blend()
    threshold: float = option(
        0.5,
        "a binary model's probability threshold for the scores (default: 0.5, as the run "
        "scored); score the valid split at a few to choose one for segkit predict "
        "--threshold",
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises:
        ConfigError: a bad split or threshold, or a bad predictor option when the
            predictor is used (the run settings are checked against the checkpoint's
            config)."""
        check_choice("split", self.split, get_args(SplitName))
        check_probability("threshold", self.threshold)
        if self.through_predictor:
            self.predictor(batch_size=PredictorOptions.batch_size)

    @property
    def through_predictor(self) -> bool:
        """Whether images go through the predictor (``mode`` or ``tta`` given)."""
        return self.mode is not None or self.tta != "none"

    def predictor(self, batch_size: int) -> PredictorOptions:
        """The predictor's options (``batch_size``: the run's)."""
        return PredictorOptions(
            mode=self.mode or "resize",
            tta=self.tta,
            tile=self.tile,
            overlap=self.overlap,
            blend=self.blend,
            batch_size=batch_size,
        )

    def overrides(self) -> dict[str, Any]:
        """The run settings given, to lay over the checkpoint's config."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata.get("config") and getattr(self, f.name) is not None
        }


# ---------------------------------------------------------------------- segkit export


@checked_keywords("ExportOptions")
@dataclass(kw_only=True)
class ExportOptions:
    """``segkit export`` (:func:`segkit.inference.export.export`).

    Attributes:
        checkpoint: A run's ``best.pt`` or ``last.pt``.
        format: ``onnx`` or ``torchscript``; None (the default): from ``out``'s suffix
            (:data:`EXPORT_SUFFIXES`; ``onnx`` for any other). A suffix of the other
            format is refused.
        out: The file to write.
        dynamic: Batch size, height and width free: any size, padded inside the exported
            graph to the model's ``min_input_multiple`` and cropped back; else fixed at
            1 x ``image_size``.
        image_size: The traced (and, without ``dynamic``, the only) square size; None:
            the training size.
        threshold: A binary model's probability threshold, recorded in the metadata
            (a K-class model takes none: another value than 0.5 is refused when the
            model is opened).
        opset: ONNX opset.
        half: ONNX only: float16 weights and arithmetic (half the file, for GPU
            runtimes), the input and output float32 as without it.
        tolerance: The largest absolute logit difference the parity check accepts, for
            logits up to 1; times the largest logit above that
            (:func:`segkit.inference.export.allowed_difference`). None: 1e-4, or
            :data:`HALF_TOLERANCE` with ``half``.
        overwrite: Replace ``out`` if it exists.

    Raises:
        ConfigError: a bad format (or one ``out``'s suffix contradicts), threshold or
            image size.
    """

    checkpoint: str | Path = _checkpoint()
    format: ExportFormat | None = option(
        None,
        "onnx (needs pip install 'segkit[export]') or torchscript (default: from FILE's "
        "suffix: .ts, .pt, .pth, .torchscript for torchscript, onnx otherwise); a suffix "
        "of the other format is refused",
    )
    out: str | Path = option(help="the model file to write", metavar="FILE")
    dynamic: bool = option(
        False,
        "batch size, height and width free: any size, padded inside the model to its "
        "min_input_multiple and cropped back",
    )
    image_size: int | None = option(
        None,
        "square input size traced (the only one without --dynamic; default: the training size)",
        metavar="N",
    )
    threshold: float = option(
        0.5,
        "a binary model's probability threshold, recorded with the model (default: 0.5; "
        "a K-class model takes the argmax and refuses another value)",
    )
    opset: int = option(17, "ONNX opset (default: 17)")
    half: bool = option(
        False,
        "ONNX: float16 weights and arithmetic, half the file, for GPU runtimes (input and "
        "output stay float32; checked at --tolerance 1e-2)",
    )
    tolerance: float | None = option(
        None,
        "largest logit difference from PyTorch the parity check accepts, times the largest "
        "logit where that is over 1 (default: 1e-4; 1e-2 with --half)",
    )
    overwrite: bool = option(False, "replace FILE if it exists")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises:
        ConfigError: a bad format, a suffix of ``out`` that names the other format, a bad
            threshold or image size."""
        suffix = Path(self.out).suffix.lower()
        implied = next((f for f, ends in EXPORT_SUFFIXES.items() if suffix in ends), None)
        if self.format is None:
            self.format = implied or "onnx"
        check_choice("format", self.format, EXPORT_FORMATS)
        if implied is not None and implied != self.format:
            fitting = " or ".join(EXPORT_SUFFIXES[self.format])
            raise ConfigError(
                f"{named('out', self.out, as_typed=True)}: a {suffix} file is {implied}, but "
                f"{named('format')} is {self.format}; name the file with {fitting}, or pass "
                f"{named('format', implied, as_typed=True)}"
            )
        if self.half and self.format != "onnx":
            raise ConfigError(
                f"{named('half')} writes float16 ONNX; a {self.format} export is float32 "
                f"(load it and call .half() on the module for float16), or export "
                f"{named('format', 'onnx', as_typed=True)}"
            )
        if self.tolerance is None:
            self.tolerance = HALF_TOLERANCE if self.half else TOLERANCE
        check_probability("threshold", self.threshold)
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(
                f"{named('image_size', self.image_size)}: expected a positive size in pixels"
            )
