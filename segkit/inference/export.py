"""``segkit export``: a checkpoint's model as ONNX or TorchScript, checked against PyTorch.

The exported model takes the normalized image and returns logits, as the PyTorch model
does: input ``image``, float32 ``(N, 3, H, W)``, RGB pixels scaled to [0, 1] then
``(x - mean) / std``; output ``logits``, float32 ``(N, C, H, W)`` with ``C`` 1 (binary:
sigmoid, then ``> threshold``) or K (softmax, then argmax). What a server needs to
reproduce ``segkit predict`` goes with the file (:func:`metadata`): in the ONNX model's
``metadata_props``, and for TorchScript in a JSON sidecar ``FILE.json`` (and inside the
archive as the extra file ``segkit.json``).

Every export is checked before it is written: the exported model (ONNX Runtime on the
CPU, or the TorchScript module reloaded) and PyTorch run the same random batch, and a
maximum absolute difference of the logits above the tolerance, scaled by the largest
logit where that is over 1 (:func:`allowed_difference`), fails the export. A
``--dynamic`` export is checked at a second batch size and image size too.

A ``--dynamic`` export takes images of any size: the graph pads its input by reflection
to the model's ``min_input_multiple`` and crops the logits back (:class:`PadToMultiple`),
as ``segkit predict`` does for a whole image; a fixed one takes its traced size alone.

ONNX needs the optional packages ``onnx`` and ``onnxruntime`` (``pip install
'segkit[export]'``); TorchScript needs nothing more than PyTorch.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.build import check_size_multiple
from segkit.config import checked_keywords, named
from segkit.errors import ConfigError, ExportError, described
from segkit.inference.native import trained_input
from segkit.inference.options import EXPORT_FORMATS, ExportFormat, ExportOptions
from segkit.inference.tiling import padded_forward
from segkit.inference.trained import Trained, open_trained
from segkit.system.files import atomic_open, check_writable

Format = ExportFormat
FORMATS = EXPORT_FORMATS
INSTALL_HINT = "pip install 'segkit[export]' (or: pip install onnx onnxruntime)"


@dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote and measured.

    Attributes:
        path: The model file.
        sidecar: The JSON metadata file (TorchScript), or None (ONNX: inside the model).
        input_shape: The shape the model was traced with.
        output_shape: The logits' shape at that input.
        max_abs_diff: The largest logit difference between the export and PyTorch, over
            every checked input.
        tolerance: The tolerance given (``--tolerance``).
        checked_with: What ran the export in the check (``onnxruntime CPU``, ``torch.jit``).
        logit_scale: PyTorch's largest absolute logit over the checked inputs.
        allowed: The largest difference allowed: ``tolerance`` times ``logit_scale``
            where that is over 1 (:func:`allowed_difference`).
        multiple: The model's ``min_input_multiple``, which a ``dynamic`` export pads
            its input to inside the graph.
    """

    path: Path
    sidecar: Path | None
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    max_abs_diff: float
    tolerance: float
    checked_with: str
    logit_scale: float = 1.0
    allowed: float = 0.0
    multiple: int = 1


def allowed_difference(tolerance: float, logit_scale: float) -> float:
    """The largest logit difference the parity check accepts: ``tolerance`` for logits
    up to 1 in size, ``tolerance`` times the largest one above that. float32 agrees to a
    few parts in a million of the values computed, so two correct runs of a model whose
    logits reach 360 (a K-class model, or a binary one far from its threshold) differ by
    ~1e-4 where one whose logits stay near 1 differs by ~1e-6; an absolute bound refused
    the first, a wrong export (a layer left out, another resize) is off by whole units."""
    return tolerance * max(1.0, logit_scale)


def require_onnx() -> tuple[Any, Any]:
    """``(onnx, onnxruntime)``.

    Raises:
        ConfigError: either is not installed, saying what to install.
    """
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ConfigError(
            f"--format onnx needs the {e.name or 'onnx'} package, which is not installed: "
            f"{INSTALL_HINT}"
        ) from None
    return onnx, onnxruntime


def metadata(
    trained: Trained, threshold: float, *, size: int | None = None, dynamic: bool = False
) -> dict[str, Any]:
    """What a server needs to reproduce ``segkit predict`` with the exported model.

    ``image_size`` is the square size a server resizes images to: the traced ``size`` of
    a fixed-shape export (the only input it takes), the training size of a ``dynamic``
    one (what ``segkit predict`` resizes to). ``training_image_size`` is the training
    size, ``input_shape`` the shape traced (``[1, 3, size, size]``; a dynamic export
    takes others too). ``threshold`` is None for a K-class model (argmax). ``mode`` is
    how ``segkit predict --mode auto`` feeds an image to the model
    (:func:`~segkit.inference.native.trained_input`): ``resize`` (to ``image_size``
    square, the logits resized back) for a model trained on resized images, ``whole`` (at
    its own size, reflection-padded to ``min_input_multiple``, the output cropped) for
    one trained on crops at the images' own scale, which resizing would feed objects at
    a scale it never saw.
    """
    config, task = trained.config, trained.task
    assert config is not None  # opened from a checkpoint
    mean, std = trained.normalization
    traced = size if size is not None else config.image_size
    return {
        "producer": "segkit",
        "model": config.model,
        "model_options": config.model_options,
        "image_size": config.image_size if dynamic else traced,
        "training_image_size": config.image_size,
        "input_shape": [1, 3, traced, traced],
        "mode": trained_input(trained.native),
        "input": "image: float32 (N, 3, H, W), RGB / 255, then (x - mean) / std",
        "output": "logits: float32 (N, C, H, W)",
        "mean": list(mean),
        "std": list(std),
        "activation": "softmax" if task.multiclass else "sigmoid",
        "threshold": None if task.multiclass else threshold,
        "classes": list(task.classes),
        "palette": [list(c) for c in task.palette],
    }


@checked_keywords("segkit.export", ExportOptions)
def export(checkpoint: str | Path, out: str | Path, **options: Any) -> Exported:
    """Export a checkpoint's model and check it against PyTorch (see the module docstring).

    Args:
        checkpoint: A run's ``best.pt`` or ``last.pt``.
        out: The file to write.
        **options: The other fields of :class:`~segkit.inference.options.ExportOptions`:
            ``format`` (``onnx`` or ``torchscript``; default: from ``out``'s suffix),
            ``dynamic``, ``image_size``,
            ``threshold``, ``opset``, ``tolerance``, ``overwrite``.

    Raises:
        ConfigError: a bad option (a ``threshold`` for a K-class model, a suffix of ``out``
            that names the other format), an ``out`` that exists, is a folder or cannot be
            written, or onnx/onnxruntime are missing; UnknownSettingError (also a
            TypeError): a keyword no option has, with its close match.
        CheckpointError: the checkpoint cannot be loaded or its model is not installed.
        ExportError: the export failed, or differs from PyTorch beyond ``tolerance``.
    """
    return run_export(ExportOptions(checkpoint=checkpoint, out=out, **options))


def run_export(options: ExportOptions) -> Exported:
    """:func:`export` with its options made (what ``segkit export`` calls)."""
    out = Path(options.out)
    check_out(out, options.format, options.overwrite)
    if options.format == "onnx":
        require_onnx()
    # Traced in fp32 on the CPU, in the NCHW layout every exporter takes.
    trained = open_trained(options.checkpoint, device="cpu", precision="fp32", channels_last=False)
    trained.check_threshold(options.threshold, ExportOptions.threshold)
    size = options.image_size if options.image_size is not None else trained.image_size
    check_size_multiple(trained.label, size, trained.multiple, "image_size")
    meta = metadata(trained, options.threshold, size=size, dynamic=options.dynamic)
    meta["dynamic"] = options.dynamic
    meta["min_input_multiple"] = trained.multiple
    meta["pads_to_multiple"] = options.dynamic
    meta["precision"] = "fp16" if options.half else "fp32"
    inputs = _example_inputs(size, trained.multiple, options.dynamic)
    with torch.no_grad():  # what segkit predict computes: padded, predicted, cropped back
        expected = [padded_forward(trained.logits, x, trained.multiple).numpy() for x in inputs]
    model = PadToMultiple(trained.model, trained.multiple) if options.dynamic else trained.model
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        got, checked_with = _export_and_run(model, inputs, tmp, options, meta)
        diff = _largest_difference(got, expected)
        scale = max(float(np.abs(e).max()) for e in expected)
        assert options.tolerance is not None  # resolved by ExportOptions
        allowed = allowed_difference(options.tolerance, scale)
        if not diff <= allowed:
            shapes = ", ".join(f"{tuple(x.shape)}" for x in inputs)
            raise ExportError(
                f"{out}: the {options.format} export differs from PyTorch by up to {diff:.3g} "
                f"in the logits (inputs {shapes}; {tolerance_phrase(options.tolerance, scale)}"
                "); nothing was written. Try another --opset, or export without --dynamic"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar = _write_sidecar(out, meta) if options.format == "torchscript" else None
    shape_in, shape_out = tuple(inputs[0].shape), tuple(expected[0].shape)
    return Exported(
        out,
        sidecar,
        shape_in,
        shape_out,
        diff,
        options.tolerance,
        checked_with,
        scale,
        allowed,
        trained.multiple,
    )


def tolerance_phrase(tolerance: float, logit_scale: float) -> str:
    """The parity check's bound in words: ``tolerance 0.0001``, or with logits over 1
    ``tolerance 0.0001 x 362, the largest logit``."""
    if logit_scale <= 1.0:
        return f"tolerance {tolerance:g}"
    scale = f"{logit_scale:.0f}" if logit_scale >= 10 else f"{logit_scale:.2g}"
    return f"tolerance {tolerance:g} x {scale}, the largest logit"


def check_out(out: Path, format: str | None, overwrite: bool) -> None:
    """Refuse an ``--out`` the export could not be written to, before any work: a folder,
    a file that exists without ``overwrite``, or a folder where nothing can be written
    (a file in the way, read-only, permission denied, full: :func:`check_writable` writes
    a probe there, or in the nearest folder above that exists).

    Raises:
        ConfigError: saying which and what to pass instead.
    """
    if out.is_dir():
        name = "model.ts" if format == "torchscript" else "model.onnx"
        raise ConfigError(
            f"--out {out} is a folder; --out names the model file: name a file inside it, "
            f"e.g. --out {out / name}"
        )
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} already exists; pass --overwrite to replace it")
    check_writable(out.absolute().parent, f"--out {out}: the folder", create=False)


def _example_inputs(size: int, multiple: int, dynamic: bool) -> list[torch.Tensor]:
    """The random batches the export is traced with (the first) and checked on: 1 x
    ``size``, and for a dynamic export another batch size and a non-square size of the
    model's multiple, and sizes that are no multiple (padded inside the graph): odd and
    larger, and smaller than the pad (reflected again and again)."""
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, 3, size, size, generator=gen)]
    if dynamic:
        inputs.append(torch.randn(2, 3, size + multiple, size + 2 * multiple, generator=gen))
        inputs.append(torch.randn(1, 3, size + 1, size + multiple + 3, generator=gen))
        inputs.append(torch.randn(1, 3, 5, 3, generator=gen))
    return inputs


class PadToMultiple(torch.nn.Module):
    """``model`` taking ``(N, 3, H, W)`` of any size: the input padded by reflection to
    multiples of ``multiple``, centred (an odd extra pixel below and right), the logits
    cropped back to ``H x W``: :func:`segkit.inference.tiling.padded_forward`, in a
    traceable form. The pad is a gather of reflected row and column indices, so it
    exports to ONNX with the sizes free (Shape, Range, Mod, Where, Gather) and reflects
    again and again where a side is shorter than its pad, as the predictor does (ONNX's
    reflect Pad refuses that)."""

    def __init__(self, model: torch.nn.Module, multiple: int) -> None:
        super().__init__()
        self.model = model
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = torch._shape_as_tensor(x)
        height, width = shape[2], shape[3]
        rows, top = self._reflected(height)
        cols, left = self._reflected(width)
        y = self.model(x.index_select(2, rows).index_select(3, cols))
        return y[:, :, top : top + height, left : left + width]

    def _reflected(self, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The source index of each row (column) of a side of ``n`` padded to the
        multiple, and the pad before it: numpy's ``reflect`` (the edge not repeated),
        periodic with period ``2 (n - 1)`` (1 for a side of one pixel)."""
        extra = torch.remainder(-n, self.multiple)
        before = torch.div(extra, 2, rounding_mode="floor")
        i = torch.arange(n + extra, device=n.device) - before
        period = torch.clamp(2 * n - 2, min=1)
        k = torch.remainder(i, period)
        return torch.where(k < n, k, period - k), before


def _export_and_run(
    model: torch.nn.Module,
    inputs: list[torch.Tensor],
    path: Path,
    options: ExportOptions,
    meta: dict[str, Any],
) -> tuple[list[np.ndarray], str]:
    """Write the export to ``path`` and run it on ``inputs``: its outputs, and what ran
    them."""
    if options.format == "onnx":
        _export_onnx(model, inputs[0], path, options, meta)
        return _run_onnx(path, inputs), "onnxruntime CPU"
    _export_torchscript(model, inputs[0], path, meta)
    return _run_torchscript(path, inputs), "torch.jit"


def _largest_difference(got: list[np.ndarray], expected: list[np.ndarray]) -> float:
    """The largest absolute difference over every output (inf for a wrong shape)."""
    return max(
        float(np.abs(g - e).max()) if g.shape == e.shape else float("inf")
        for g, e in zip(got, expected, strict=True)
    )


def _write_sidecar(out: Path, meta: dict[str, Any]) -> Path:
    sidecar = out.with_name(out.name + ".json")
    with atomic_open(sidecar) as f:  # whole or absent, as the model file
        f.write(json.dumps(meta, indent=2) + "\n")
    return sidecar


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """The tracer warns about every Python int it sees (the input-size check, sizes in
    ``interpolate``): expected for a model traced at one size, noise to the user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit: "deprecated"
        warnings.simplefilter("ignore", UserWarning)
        yield


def _export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    options: ExportOptions,
    meta: dict[str, Any],
) -> None:
    onnx, _ = require_onnx()
    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        # The TorchScript-based exporter (dynamo=False): the torch.export-based default
        # needs onnxscript, which is not among segkit's dependencies.
        with _quiet_tracing():
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": axes, "logits": axes} if options.dynamic else None,
                opset_version=options.opset,
                do_constant_folding=True,
            )
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed ({described(e)})") from e
    proto = onnx.load(str(path))
    if options.half:
        proto = _as_float16(proto)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key = f"segkit.{key}"
        entry.value = json.dumps(value)
    onnx.save(proto, str(path))


def _as_float16(proto: Any) -> Any:
    """``proto`` with float16 weights and arithmetic, its input and output float32 (a Cast
    at each end), by ONNX Runtime's converter (``onnxruntime.transformers.float16``,
    which ships with onnxruntime). Integer tensors (the pad's indices) stay as they are.

    Raises:
        ExportError: the conversion failed.
    """
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with warnings.catch_warnings():  # "values clipped to the float16 range": checked
            warnings.simplefilter("ignore", UserWarning)
            return convert_float_to_float16(proto, keep_io_types=True)
    except Exception as e:
        raise ExportError(
            f"the float16 conversion failed ({described(e)}); export without {named('half')}"
        ) from e


def _run_onnx(path: Path, inputs: list[torch.Tensor]) -> list[np.ndarray]:
    _, ort = require_onnx()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [session.run(["logits"], {"image": x.numpy()})[0] for x in inputs]


def _export_torchscript(
    model: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any]
) -> None:
    try:
        with torch.no_grad(), _quiet_tracing():
            traced = torch.jit.trace(model, example, check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={"segkit.json": json.dumps(meta)})
    except Exception as e:
        raise ExportError(f"torch.jit.trace failed ({described(e)})") from e


def _run_torchscript(path: Path, inputs: list[torch.Tensor]) -> list[np.ndarray]:
    with _quiet_tracing():
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return [loaded(x).numpy() for x in inputs]


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``segkit.*`` metadata of an exported ONNX model (each value is JSON)."""
    onnx, _ = require_onnx()
    props = onnx.load(str(path), load_external_data=False).metadata_props
    return {
        e.key[len("segkit.") :]: json.loads(e.value) for e in props if e.key.startswith("segkit.")
    }
