"""The ``segkit`` command. Heavy modules (torch, plugins) are imported inside the
subcommands so ``segkit --help`` answers at once."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from segkit.errors import RunInterrupted, SegkitError

KINDS = ("models", "losses", "augmentations", "loaders", "datasets")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    from segkit.config import SCHEDULES, RunConfig

    d = RunConfig.__dataclass_fields__
    g = p.add_argument_group("plugins (see `segkit list`)")
    g.add_argument(
        "--model", default=d["model"].default, help="model plugin (default: %(default)s)"
    )
    g.add_argument("--loss", default=d["loss"].default, help="loss plugin (default: %(default)s)")
    g.add_argument(
        "--augment", default=d["augment"].default, help="augmentation recipe (default: %(default)s)"
    )
    g.add_argument(
        "--loader", default=d["loader"].default, help="loader plugin (default: %(default)s)"
    )
    g.add_argument(
        "--dataset",
        default=None,
        help="dataset layout plugin (default: oxford_pet with --data, synthetic without)",
    )
    g.add_argument(
        "--encoder",
        default=None,
        help="shortcut for --model-opt encoder=NAME (models with a backbone, e.g. timm_unet)",
    )
    g.add_argument(
        "--weights",
        default=None,
        help="shortcut for --model-opt weights=PATH|imagenet (initial weights, local files only)",
    )
    g.add_argument(
        "--model-opt",
        action="append",
        metavar="KEY=VALUE",
        help="option for the model factory (repeatable)",
    )
    g.add_argument(
        "--loss-opt",
        action="append",
        metavar="KEY=VALUE",
        help="option for the loss factory (repeatable)",
    )
    g.add_argument(
        "--loader-opt",
        action="append",
        metavar="KEY=VALUE",
        help="option for the loader factory (repeatable)",
    )
    g.add_argument(
        "--dataset-opt",
        action="append",
        metavar="KEY=VALUE",
        help="option for the dataset (repeatable), e.g. count=800",
    )
    t = p.add_argument_group("training")
    t.add_argument(
        "--data",
        default=None,
        help="dataset folder (default: a generated synthetic set in the cache)",
    )
    t.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"(default: {d['epochs'].default}; with --resume: extend the run to this many)",
    )
    t.add_argument(
        "--batch-size", type=int, default=d["batch_size"].default, help="(default: %(default)s)"
    )
    t.add_argument(
        "--lr",
        type=float,
        default=d["lr"].default,
        help="Adam learning rate (default: %(default)s)",
    )
    t.add_argument(
        "--lr-gamma",
        type=float,
        default=d["lr_gamma"].default,
        help="decay per epoch for --schedule exponential (default: %(default)s)",
    )
    t.add_argument(
        "--schedule",
        default=d["schedule"].default,
        choices=SCHEDULES,
        help="exponential: the lab's ExponentialLR(--lr-gamma) per epoch; cosine: per-step "
        "decay from --lr to 0 at the last step (default: %(default)s)",
    )
    t.add_argument(
        "--warmup-epochs",
        type=float,
        default=d["warmup_epochs"].default,
        help="linear warm-up of the learning rate over this many epochs, fractions allowed "
        "(default: %(default)s)",
    )
    t.add_argument(
        "--weight-decay",
        type=float,
        default=d["weight_decay"].default,
        help="(default: %(default)s)",
    )
    t.add_argument(
        "--precision",
        default=d["precision"].default,
        choices=("auto", "fp32", "bf16", "fp16"),
        help="auto = bf16 on GPUs that support it, else fp32",
    )
    t.add_argument(
        "--image-size",
        type=int,
        default=d["image_size"].default,
        help="square training size (default: %(default)s)",
    )
    t.add_argument(
        "--device",
        default=d["device"].default,
        help="auto, cpu, cuda, cuda:N (default: %(default)s)",
    )
    t.add_argument("--seed", type=int, default=d["seed"].default, help="(default: %(default)s)")
    t.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="loader workers (default: one per core, up to 8)",
    )
    t.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC memory format (default: on for CUDA)",
    )
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument(
        "--validate-every",
        type=int,
        default=1,
        metavar="K",
        help="validate every K epochs (and after the last); default: every epoch",
    )
    t.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="data-parallel over N processes (GPUs, or CPU processes with gloo) via torchrun",
    )
    t.add_argument(
        "--on-nan",
        choices=("stop", "skip"),
        default="stop",
        help="a NaN/inf loss stops the run (default) or skips the step",
    )
    t.add_argument(
        "--skip-bad-samples",
        action="store_true",
        help="read every file first and leave unreadable ones out (listed in bad_samples.txt) instead of stopping",
    )
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run in RUN_DIR from its last.pt (other options come from the checkpoint)",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--out",
        default=d["out"].default,
        help="parent folder of run folders (default: %(default)s)",
    )
    o.add_argument("--name", default=None, help="run folder name (default: <model>-<time>)")
    o.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")


def _cmd_run(args: argparse.Namespace) -> int:
    from segkit.config import RunConfig, parse_options
    from segkit.engine import resume, train

    if args.devices is not None and args.devices > 1 and "WORLD_SIZE" not in os.environ:
        from segkit.distributed import launch

        return launch(args.devices, _without_devices(args.argv))
    if args.resume:
        result = resume(args.resume, epochs=args.epochs, quiet=args.quiet)
        _print_summary(args, result)
        return 0
    config = RunConfig(
        model=args.model,
        model_options=_model_options(args),
        loss=args.loss,
        loss_options=parse_options(args.loss_opt, "--loss-opt"),
        augment=args.augment,
        loader=args.loader,
        loader_options=parse_options(args.loader_opt, "--loader-opt"),
        dataset=args.dataset,
        dataset_options=parse_options(args.dataset_opt, "--dataset-opt"),
        data=args.data,
        epochs=args.epochs
        if args.epochs is not None
        else RunConfig.__dataclass_fields__["epochs"].default,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_gamma=args.lr_gamma,
        schedule=args.schedule,
        warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay,
        precision=args.precision,
        image_size=args.image_size,
        device=args.device,
        seed=args.seed,
        num_workers=args.num_workers,
        channels_last=args.channels_last,
        compile=args.compile,
        out=args.out,
        name=args.name,
        on_nan=args.on_nan,
        skip_bad_samples=args.skip_bad_samples,
        validate_every=args.validate_every,
    )
    result = train(config, quiet=args.quiet)
    _print_summary(args, result)
    return 0


def _print_summary(args: argparse.Namespace, result: Any) -> None:
    """With --quiet, the engine printed nothing: print the summary line (rank 0 only)."""
    from segkit.distributed import from_env

    if args.quiet and from_env().main:
        print((result.run_dir / "summary.txt").read_text().strip())


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from segkit.engine import build_dataset, build_loader, build_recipe, evaluate, resolve_device
    from segkit.inference import load_model
    from segkit.precision import create_precision
    from segkit.registry import create

    device = resolve_device(args.device)
    model, config, _ = load_model(Path(args.checkpoint), device)
    for key in ("data", "dataset", "loader", "batch_size", "num_workers"):
        value = getattr(args, key)
        if value is not None:
            setattr(config, key, value)
    config.validate()
    precision = create_precision(args.precision, device)
    dataset = build_dataset(config)
    recipe = build_recipe(config)
    loader = build_loader(config, dataset, recipe, args.split, train=False, device=device)
    loss_fn = create("losses", config.loss, **config.loss_options)
    metrics = evaluate(model, loader, loss_fn, precision, device)
    print(
        f"{args.split} dice {metrics['dice']:.4f}  iou {metrics['iou']:.4f}  "
        f"loss {metrics['loss']:.4f}  ({int(metrics['images'])} images, {dataset.root})"
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from segkit.engine import build_recipe, resolve_device
    from segkit.inference import load_model, predict_file, write_prediction

    if not 0 < args.threshold < 1:
        from segkit.errors import ConfigError

        raise ConfigError(f"--threshold {args.threshold}: expected a probability in (0, 1)")
    device = resolve_device(args.device)
    model, config, _ = load_model(Path(args.checkpoint), device)
    ops = build_recipe(config).eval
    out = Path(args.out)
    for name in args.images:
        path = Path(name)
        image, prob = predict_file(model, path, ops, device)
        mask_path, overlay_path = write_prediction(out, path, image, prob, args.threshold)
        print(
            f"{path}: {float((prob > args.threshold).mean()):.1%} foreground -> {mask_path.name}, {overlay_path.name}"
        )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from segkit.errors import PluginError
    from segkit.registry import GROUPS, default_registry

    reg = default_registry()
    kinds = [args.kind] if args.kind else list(GROUPS)
    failures = []
    rows = []
    for kind in kinds:
        for name, info in reg.plugins(kind).items():
            status = "-" if args.no_import else "ok"
            if not args.no_import:
                try:
                    info.load()
                except PluginError as e:
                    status = "FAILED"
                    failures.append((info, e))
            dist = f"{info.distribution} {info.version}".strip()
            rows.append((kind, name, dist, status))
    widths = [
        max([len(r[i]) for r in rows] + [len(h)])
        for i, h in enumerate(("KIND", "NAME", "DISTRIBUTION"))
    ]
    header = ("KIND", "NAME", "DISTRIBUTION", "STATUS" if not args.no_import else "")
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    for info, e in failures:
        print(f"\n{info.kind} '{info.name}': {e}", file=sys.stderr)
        if args.check:
            import traceback

            traceback.print_exception(e.__cause__ or e, file=sys.stderr)
    return 1 if failures and args.check else 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from segkit.registry import get

    factory = get("datasets", args.dataset)
    generate = getattr(factory, "generate", None)
    if generate is None:
        from segkit.errors import ConfigError

        raise ConfigError(f"dataset '{args.dataset}' cannot generate data (it has no generate())")
    root = generate(Path(args.path), count=args.count, seed=args.seed)
    print(f"wrote {args.count} generated images in the oxford_pet layout to {root}")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from segkit.download import fetch_oxford_pet

    root = fetch_oxford_pet(Path(args.path), base_url=args.url)
    print(f"Oxford-IIIT Pet ready in {root}: segkit run --data {root}")
    return 0


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    from segkit.config import parse_options

    options = parse_options(args.model_opt, "--model-opt")
    for key in ("encoder", "weights"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    return options


def _without_devices(argv: list[str]) -> list[str]:
    """``argv`` minus ``--devices N``: each torchrun process is one device."""
    out: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
        elif item == "--devices":
            skip = True
        elif not item.startswith("--devices="):
            out.append(item)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segkit",
        description="Binary semantic segmentation: train, evaluate and predict with pluggable "
        "models, losses, augmentations, loaders and datasets.",
    )
    parser.add_argument("--version", action="version", version="segkit 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="train, evaluate on the test split, write a run folder")
    _add_run_args(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a split")
    p.add_argument("checkpoint", help="best.pt or last.pt from a run folder")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument(
        "--data", default=None, help="dataset folder (default: the one it was trained on)"
    )
    p.add_argument("--dataset", default=None, help="dataset plugin (default: the training one)")
    p.add_argument("--loader", default=None, help="loader plugin (default: the training one)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="write mask and overlay PNGs for image files")
    p.add_argument("checkpoint", help="best.pt or last.pt from a run folder")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--out", required=True, help="folder for <stem>_mask.png and <stem>_overlay.png")
    p.add_argument(
        "--threshold", type=float, default=0.5, help="probability threshold (default: 0.5)"
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "list", help="show installed plugins, their distribution and whether they load"
    )
    p.add_argument("kind", nargs="?", choices=KINDS)
    p.add_argument(
        "--check",
        action="store_true",
        help="print full tracebacks of failing plugins and exit 1 if any fail",
    )
    p.add_argument(
        "--no-import", action="store_true", help="list names from metadata only, import nothing"
    )
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("data", help="make or download datasets")
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    s = data.add_parser("synth", help="generate a synthetic pet dataset in the oxford_pet layout")
    s.add_argument("path")
    s.add_argument("--count", type=int, default=400)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dataset", default="synthetic", help=argparse.SUPPRESS)
    s.set_defaults(func=_cmd_data_synth)
    f = data.add_parser(
        "fetch", help="download and unpack the official Oxford-IIIT Pet archives (needs a network)"
    )
    f.add_argument("path")
    f.add_argument("--url", default=None, help="base URL of images.tar.gz and annotations.tar.gz")
    f.set_defaults(func=_cmd_data_fetch)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args) or 0)
    except RunInterrupted as e:
        print(f"segkit: {e}", file=sys.stderr)
        return 130
    except SegkitError as e:
        print(f"segkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `segkit list | head`: the reader left; say nothing more (and let the interpreter's
        # final flush of stdout go nowhere instead of raising again).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
