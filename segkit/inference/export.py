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
maximum absolute difference of the logits above the tolerance fails the export. A
``--dynamic`` export is checked at a second batch size and image size too.

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
from typing import Any, Literal

import numpy as np
import torch

from segkit.errors import ConfigError, ExportError
from segkit.system.files import atomic_open

Format = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
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
        tolerance: The largest difference allowed.
        checked_with: What ran the export in the check (``onnxruntime CPU``, ``torch.jit``).
    """

    path: Path
    sidecar: Path | None
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    max_abs_diff: float
    tolerance: float
    checked_with: str


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


def metadata(config: Any, task: Any, mean: Any, std: Any, threshold: float) -> dict[str, Any]:
    """What a server needs to reproduce ``segkit predict`` with the exported model."""
    return {
        "producer": "segkit",
        "model": config.model,
        "model_options": config.model_options,
        "image_size": config.image_size,
        "input": "image: float32 (N, 3, H, W), RGB / 255, then (x - mean) / std",
        "output": "logits: float32 (N, C, H, W)",
        "mean": list(mean),
        "std": list(std),
        "activation": "softmax" if task.multiclass else "sigmoid",
        "threshold": threshold,
        "classes": list(task.classes),
        "palette": [list(c) for c in task.palette],
    }


def export(
    checkpoint: str | Path,
    out: str | Path,
    *,
    format: Format | str = "onnx",
    dynamic: bool = False,
    image_size: int | None = None,
    threshold: float = 0.5,
    opset: int = 17,
    tolerance: float = 1e-4,
    overwrite: bool = False,
) -> Exported:
    """Export a checkpoint's model and check it against PyTorch (see the module docstring).

    Args:
        checkpoint: A run's ``best.pt`` or ``last.pt``.
        out: The file to write.
        format: ``onnx`` or ``torchscript``.
        dynamic: Batch size, height and width free (multiples of the model's
            ``min_input_multiple``); else fixed at 1 x ``image_size``.
        image_size: The traced (and, without ``dynamic``, the only) square size; default:
            the training size.
        threshold: A binary model's probability threshold, recorded in the metadata.
        opset: ONNX opset.
        tolerance: The largest absolute logit difference the check accepts.
        overwrite: Replace ``out`` if it exists.

    Raises:
        ConfigError: a bad option, ``out`` exists, or onnx/onnxruntime are missing.
        CheckpointError: the checkpoint cannot be loaded or its model is not installed.
        ExportError: the export failed, or differs from PyTorch beyond ``tolerance``.
    """
    from segkit.build import build_recipe, check_size_multiple, resolve_runtime
    from segkit.inference.predictor import eval_normalization
    from segkit.inference.trained import checkpoint_task, open_checkpoint, restore_model

    if format not in FORMATS:
        raise ConfigError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    if not 0 < threshold < 1:
        raise ConfigError(f"--threshold {threshold}: expected a probability in (0, 1)")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} already exists; pass --overwrite to replace it")
    if format == "onnx":
        require_onnx()
    path = Path(checkpoint)
    config, ckpt = open_checkpoint(path, device="cpu", precision="fp32", channels_last=False)
    model = restore_model(path, config, ckpt, resolve_runtime(config))
    task = checkpoint_task(ckpt)
    multiple = int(getattr(model, "min_input_multiple", 1))
    size = image_size if image_size is not None else config.image_size
    if size < 1:
        raise ConfigError(f"--image-size {size}: expected a positive size in pixels")
    check_size_multiple(config.model, size, multiple, "--image-size")
    mean, std = eval_normalization(build_recipe(config).eval, config.image_size)
    meta = metadata(config, task, mean, std, threshold)
    meta["dynamic"] = dynamic
    meta["min_input_multiple"] = multiple

    gen = torch.Generator().manual_seed(0)
    example = torch.randn(1, 3, size, size, generator=gen)
    inputs = [example]
    if dynamic:  # another batch size and a non-square size of the model's multiple
        inputs.append(torch.randn(2, 3, size + multiple, size + 2 * multiple, generator=gen))
    with torch.no_grad():
        expected = [model(x).numpy() for x in inputs]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    sidecar = None
    try:
        if format == "onnx":
            _export_onnx(model, example, tmp, dynamic, opset, meta)
            got, checked_with = _run_onnx(tmp, inputs), "onnxruntime CPU"
        else:
            _export_torchscript(model, example, tmp, meta)
            got, checked_with = _run_torchscript(tmp, inputs), "torch.jit"
        diff = max(
            float(np.abs(g - e).max()) if g.shape == e.shape else float("inf")
            for g, e in zip(got, expected, strict=True)
        )
        if not diff <= tolerance:
            shapes = ", ".join(f"{tuple(x.shape)}" for x in inputs)
            raise ExportError(
                f"{out}: the {format} export differs from PyTorch by up to {diff:.3g} in the "
                f"logits (inputs {shapes}; tolerance {tolerance:g}); nothing was written. "
                "Try another --opset, or export without --dynamic"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    if format == "torchscript":
        sidecar = out.with_name(out.name + ".json")
        with atomic_open(sidecar) as f:  # whole or absent, as the model file
            f.write(json.dumps(meta, indent=2) + "\n")
    return Exported(
        out,
        sidecar,
        tuple(example.shape),
        tuple(expected[0].shape),
        diff,
        tolerance,
        checked_with,
    )


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
    dynamic: bool,
    opset: int,
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
                dynamic_axes={"image": axes, "logits": axes} if dynamic else None,
                opset_version=opset,
                do_constant_folding=True,
            )
    except Exception as e:
        raise ExportError(
            f"torch.onnx.export failed ({type(e).__name__}: {str(e).strip().splitlines()[0][:300]})"
        ) from e
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key = f"segkit.{key}"
        entry.value = json.dumps(value)
    onnx.save(proto, str(path))


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
        raise ExportError(
            f"torch.jit.trace failed ({type(e).__name__}: {str(e).strip().splitlines()[0][:300]})"
        ) from e


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
