"""``segkit compare``, ``segkit study`` and ``segkit preview``: reports over runs, and
pictures of a recipe."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segkit.cli.args import add_config_args, examples, settings_from_args
from segkit.config import DEFAULTS


def add_compare(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare finished runs: comparison.md/.csv, overlaid curves, the same test "
        "images segmented by every run",
        **examples(
            "segkit compare runs/unet-20261125-101010 runs/resnet34_unet-20261125-111010 --out cmp",
            "segkit compare seeds/unet-s0 seeds/unet-s1 --group-seeds --device cpu --out cmp",
            "segkit compare studies/lrs --out cmp",
        ),
    )
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders made by segkit run, or a study folder (its study's runs, not "
        "replaced/); one not finished (running, interrupted, failed) gets a row saying so, "
        "and a folder given twice is compared once",
    )
    p.add_argument(
        "--out", default="comparison", metavar="DIR", help="report folder (default: comparison)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="compare runs of different datasets or image sizes too",
    )
    p.add_argument(
        "--group-seeds",
        action="store_true",
        help="also group the runs that differ only in their seed: mean ± std over seeds",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="where the models predict the test images for predictions.png (default: auto)",
    )
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from segkit.reports.compare import compare

    result = compare(
        args.runs, args.out, force=args.force, group_seeds=args.group_seeds, device=args.device
    )
    print((result.files["md"]).read_text().split("\n![")[0].rstrip())
    print(f"\nwrote {', '.join(str(p) for p in result.files.values())}")
    return 0


def add_study(sub: Any) -> None:
    p = sub.add_parser(
        "study",
        help="run a grid of configurations from a TOML, YAML or JSON file (resumable), then "
        "compare them",
        **examples(
            "segkit study studies/demo.toml",
            "segkit study studies/lab.toml --parallel 4",
            "segkit study lrs.toml --out studies/lrs --force --quiet",
        ),
    )
    p.add_argument(
        "file",
        metavar="FILE",
        help="a study file: base settings, axes lists, runs (TOML, YAML, JSON)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="the study folder: one run folder per configuration and the report "
        "(default: runs/<file stem>)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="run a changed file in an existing study folder: changed runs and runs no "
        "longer in the file are moved to replaced/, changed ones trained again (or, an "
        "edit reverted, the finished run of their settings brought back from replaced/); a run "
        "whose only change is more epochs (or a longer --max-time) and that kept its "
        "last.pt resumes to them instead",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help="configurations at once, one per GPU (default: 1; the CPU runs one at a time)",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="only the study's lines and summaries"
    )
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workers-share", type=int, default=1, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_study)


def _cmd_study(args: argparse.Namespace) -> int:
    from segkit.cli.train import _sigterm_as_interrupt

    # A scheduler's SIGTERM stops the study as Ctrl-C does: the run in training records
    # stopped.json and the line says how to continue (exit 130), as segkit run's does.
    with _sigterm_as_interrupt():
        return _study(args)


def _study(args: argparse.Namespace) -> int:
    from segkit.reports import study

    if args.run is not None:  # one configuration: what each --parallel process runs
        done = study.run_named(
            args.file, args.out, args.run, quiet=args.quiet, workers_share=args.workers_share
        )
        summary = Path(args.out) / args.run / "summary.txt"
        if args.quiet or done == "skipped":
            print(summary.read_text().strip())
        return 0
    result = study.run_study(
        args.file, args.out, force=args.force, parallel=args.parallel, quiet=args.quiet
    )
    if result.comparison is not None:
        text = result.comparison.files["md"].read_text()
        print("\n" + text.split("\n![")[0].rstrip())
    print(
        f"\nsegkit study: {len(result.study.runs)} runs in {result.study.out}, {result.wall_s:.0f} s"
    )
    return 0


def add_preview(sub: Any) -> None:
    p = sub.add_parser(
        "preview",
        help="draw augmented images with their masks' outlines, per loader, to check a "
        "recipe's pairing and strength before training",
        **examples(
            "segkit preview --augment type3 --loader both --n 4",
            "segkit preview --augment natural --loader both --n 4 --image-size 128 --seed 4 "
            "--out preview.png",
            "segkit preview --loader dali --device cuda --epoch 3 --out epoch3.png",
        ),
    )
    p.add_argument(
        "--augment",
        "--recipe",
        dest="recipe",
        default=DEFAULTS["recipe"],
        metavar="NAME_OR_FILE",
        help="a recipe plugin (see `segkit list recipes`) or a recipe file (.toml, .yaml, "
        f".json) (default: {DEFAULTS['recipe']}, as segkit run)",
    )
    add_config_args(
        p, ("data", "dataset", "dataset_options", "image_size", "crop_foreground", "seed", "device")
    )
    g = p.add_argument_group("preview")
    g.add_argument(
        "--loader",
        default="albumentations",
        metavar="NAME",
        help="albumentations, dali, or both (side by side; a loader that cannot run the "
        "recipe is named in the header instead) (default: albumentations)",
    )
    g.add_argument(
        "--n", type=int, default=8, metavar="N", help="samples: the split's first N (default: 8)"
    )
    g.add_argument(
        "--split",
        default="train",
        choices=("train", "valid", "test"),
        help="the split whose first N samples are drawn (default: train)",
    )
    g.add_argument(
        "--stage",
        default="train",
        choices=("train", "eval"),
        help="the recipe's train ops (augmentations) or its eval ops (what validation and "
        "test see) (default: train)",
    )
    g.add_argument(
        "--epoch",
        type=int,
        default=0,
        metavar="E",
        help="the epoch whose random augmentations are drawn (default: 0)",
    )
    g.add_argument(
        "--out",
        default="preview.png",
        metavar="FILE.png",
        help="the picture to write (default: preview.png)",
    )
    p.set_defaults(func=_cmd_preview)


def _cmd_preview(args: argparse.Namespace) -> int:
    from segkit.config import RunConfig
    from segkit.reports.preview import Draw, loader_names, write_preview

    config = RunConfig.from_dict(settings_from_args(args), source="command line")
    draw = Draw(
        loaders=loader_names(args.loader),
        n=args.n,
        split=args.split,
        stage=args.stage,
        epoch=args.epoch,
    )
    result = write_preview(config, args.out, draw)
    for line in result.header:
        print(line)
    ids = [s.id for s in result.samples]
    shown = ", ".join(ids if len(ids) <= 4 else [*ids[:3], "...", ids[-1]])
    print(
        f"wrote {result.path} ({result.size[0]}x{result.size[1]} px): {len(ids)} rows "
        f"({shown}) x {len(result.columns)} column{'s' if len(result.columns) > 1 else ''} "
        f"({', '.join(result.columns)}), each the augmented image with its mask's outline"
    )
    return 0
