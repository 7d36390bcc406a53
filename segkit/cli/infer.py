"""``segkit evaluate``, ``segkit predict`` and ``segkit export``: their arguments are
generated from their options dataclasses (:mod:`segkit.inference.options`), and each
command makes its options and calls the library (:mod:`segkit.inference.evaluate`,
:mod:`segkit.inference.predict`, :mod:`segkit.inference.export`), then prints."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from segkit.cli.args import add_options, examples, options_from_args
from segkit.inference.options import EvaluateOptions, ExportOptions, PredictOptions


def add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a split",
        **examples(
            "segkit evaluate runs/unet/best.pt --data new-labelled",
            "segkit evaluate runs/unet/best.pt --data pets --split all",
            "segkit evaluate best.pt --mode tile --tta flip",
        ),
    )
    add_options(p, EvaluateOptions)
    p.add_argument(
        "--json",
        action="store_true",
        help="print the scores as one JSON object instead of the lines (for scripts)",
    )
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from segkit.inference.evaluate import run_evaluate

    options = options_from_args(EvaluateOptions, args)
    result = run_evaluate(options)
    if (options.data is not None or result.split == "all") and (note := result.split_note()):
        print(f"segkit: {note}", file=sys.stderr)
    if note := result.overlap_note():  # the images scored, or left out, that trained it
        print(f"segkit: {note}", file=sys.stderr)
    for note in result.changed_notes():  # the run's own data, edited under the same names
        print(f"segkit: warning: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(options.checkpoint), indent=2))
        return 0
    for line in result.lines():
        print(line)
    return 0


def add_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="write masks (and overlays, probabilities) for image files, folders or lists",
        **examples(
            "segkit predict best.pt photos/ --out masks/",
            "segkit predict best.pt slide.tif --out masks/ --mode tile --tile 256 --overlap 0.25",
            "segkit predict best.pt photos/ --out masks/ --skip-existing",
        ),
    )
    add_options(p, PredictOptions)
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from segkit.inference.predict import run_predict

    print(run_predict(options_from_args(PredictOptions, args)).summary())
    return 0


def add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write a checkpoint's model as ONNX or TorchScript, checked against PyTorch",
        **examples(
            "segkit export best.pt --out model.onnx --dynamic",
            "segkit export best.pt --out model-fp16.onnx --dynamic --half",
            "segkit export best.pt --out model.ts --image-size 512",
        ),
    )
    add_options(p, ExportOptions)
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from segkit.inference.export import run_export, tolerance_phrase

    options = options_from_args(ExportOptions, args)
    result = run_export(options)
    size = result.path.stat().st_size / 1e6
    shape = (
        f"(N, 3, H, W) -> (N, C, H, W), dynamic: any H and W, padded to a multiple of "
        f"{result.multiple} inside"
        if options.dynamic
        else (f"{result.input_shape} -> {result.output_shape}")
    )
    where = f"; metadata in {result.sidecar}" if result.sidecar else "; metadata in the model"
    print(f"wrote {result.path} ({size:.1f} MB, {options.format}, {shape}{where})")
    print(
        f"parity {result.checked_with} vs torch: max abs diff {result.max_abs_diff:.2e} "
        f"({tolerance_phrase(result.tolerance, result.logit_scale)})"
    )
    return 0
