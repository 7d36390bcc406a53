"""The ``segkit`` command. Heavy modules (torch, plugins) are imported inside the
subcommands so ``segkit --help`` answers at once.

The options of ``segkit run`` (and the run settings ``evaluate`` accepts) are generated
from :class:`~segkit.config.RunConfig`'s fields and their metadata: help, choices
(``Literal`` types), types and groups. Every option defaults to "not given", so the
settings of a run are the dataclass defaults, overridden by ``--config FILE``, overridden
by the flags actually typed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from segkit.errors import ConfigError, DistributedError, RunInterrupted, SegkitError

_GROUPS = {
    "plugins": "plugins (see `segkit list`)",
    "training": "training",
    "output": "output",
}

#: Options that only shorten another: flag -> (field, key in that field's options).
_SHORTCUTS = {
    "--encoder": ("model_options", "encoder", "a backbone, for models that take one"),
    "--weights": (
        "model_options",
        "weights",
        "initial weights: PATH or imagenet (timm's, downloaded into its cache when missing; "
        "SEGKIT_OFFLINE=1 forbids downloads)",
    ),
}

#: Second names of options: field -> extra flags (``--augment`` is what albumentations
#: users reach for; both names are documented).
_ALIASES: dict[str, tuple[str, ...]] = {"recipe": ("--augment",)}


def add_config_args(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add an option for each :class:`RunConfig` field (or those in ``names``), with
    help, type and choices from the field. Defaults are left out of the namespace, so
    only the options given appear in it."""
    from segkit.config import RunConfig, choices, field_types, flag

    wanted = set(names) if names is not None else None
    hints = field_types()
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        if wanted is not None and f.name not in wanted:
            continue
        meta = f.metadata
        if meta["group"] == "recorded":  # written by segkit into config.json, not a flag
            continue
        group = groups.get(meta["group"])
        if group is None:
            group = groups[meta["group"]] = parser.add_argument_group(_GROUPS[meta["group"]])
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        help_text = meta["help"]
        annotation = hints[f.name]
        members = [t for t in _members(annotation) if t is not type(None)]
        if typing.get_origin(members[0]) is dict:
            kw.update(action="append", metavar="KEY=VALUE")
            help_text += " (repeatable)"
        elif members == [bool]:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            values = choices(annotation)
            if values is not None:
                kw["choices"] = values
            else:
                kw["type"] = members[0]
            if meta.get("metavar"):
                kw["metavar"] = meta["metavar"]
        if f.default not in (None, dataclasses.MISSING) and "default:" not in help_text:
            shown = ("on" if f.default else "off") if isinstance(f.default, bool) else f.default
            help_text += f" (default: {shown})"
        kw["help"] = help_text.replace("%", "%%")
        group.add_argument(flag(f.name), *_ALIASES.get(f.name, ()), **kw)
    if wanted is None or "model_options" in wanted:
        for shortcut, (_, key, text) in _SHORTCUTS.items():
            groups["plugins"].add_argument(
                shortcut,
                dest=shortcut[2:],
                default=argparse.SUPPRESS,
                help=f"{text}; shortcut for --model-opt {key}=...",
            )


def _members(annotation: Any) -> tuple[Any, ...]:
    if isinstance(annotation, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def settings_from_args(
    args: argparse.Namespace, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The settings given on the command line, over ``base`` (a configuration file's).
    ``*_options`` given as flags are merged key by key into the file's."""
    from segkit.config import RunConfig, field_types, flag, parse_options

    settings = dict(base or {})
    given = vars(args)
    hints = field_types()
    for f in dataclasses.fields(RunConfig):
        if f.name not in given:
            continue
        value = given[f.name]
        if typing.get_origin(_members(hints[f.name])[0]) is dict:
            merged = dict(settings.get(f.name) or {})
            merged.update(parse_options(value, flag(f.name)))
            value = merged
        settings[f.name] = value
    if "recipe" in given:  # a recipe named here is read afresh, not the file's recorded one
        settings.pop("recipe_definition", None)
    for shortcut, (field_name, key, _) in _SHORTCUTS.items():
        if shortcut[2:] in given:
            settings[field_name] = {**settings.get(field_name, {}), key: given[shortcut[2:]]}
    return settings


# ----------------------------------------------------------------------------- commands


def _cmd_run(args: argparse.Namespace) -> int:
    if args.devices is not None and args.devices > 1 and "WORLD_SIZE" not in os.environ:
        from segkit.training.distributed import launch

        return launch(args.devices, _without_devices(args.argv))
    with _sigterm_as_interrupt():
        return _run_or_resume(args)


def _run_or_resume(args: argparse.Namespace) -> int:
    from segkit.config import RunConfig, flag, read_config_file
    from segkit.training.engine import resume, train

    if args.resume:
        settings = settings_from_args(args)
        other = sorted(set(settings) - {"epochs"})
        if other or args.config:
            given = ", ".join(["--config"] * bool(args.config) + [flag(k) for k in other])
            raise ConfigError(
                f"--resume continues a run with the settings in its checkpoint; {given} "
                "cannot change them (only --epochs can, to extend the run). Start a new run "
                f"with: segkit run --config {Path(args.resume) / 'config.json'} [options]"
            )
        result = resume(args.resume, epochs=settings.get("epochs"), quiet=args.quiet)
    else:
        base = read_config_file(args.config) if args.config else None
        settings = settings_from_args(args, base)
        source = args.config or "command line"
        result = train(RunConfig.from_dict(settings, source=source), quiet=args.quiet)
    _print_summary(args, result)
    return 0


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cluster's preemption notice, or torchrun stopping the ranks when one
    failed) stops a run the way Ctrl-C does: the checkpoint in flight is finished and one
    line says how to resume. A second SIGTERM, or one arriving while the run is already
    stopping, ends the process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if sys.exc_info()[0] is None:  # not already on the way out with an error
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_summary(args: argparse.Namespace, result: Any) -> None:
    """With --quiet, the engine printed nothing: print the summary line (rank 0 only)."""
    from segkit.training.distributed import from_env

    if args.quiet and from_env().main:
        print((result.run_dir / "summary.txt").read_text().strip())


def _checkpoint_run(
    args: argparse.Namespace, keys: Iterable[str]
) -> tuple[Any, Any, Any, Any, Any]:
    """The checkpoint's config with the given settings over it, its runtime (device and
    precision default to auto wherever the checkpoint is opened), its model, its path and
    its task (binary or the classes it was trained on)."""
    from segkit.build import resolve_runtime
    from segkit.inference.trained import checkpoint_task, open_checkpoint, restore_model

    given = {k: v for k, v in vars(args).items() if k in keys}
    if "dataset_options" in given:
        from segkit.config import parse_options

        given["dataset_options"] = parse_options(given["dataset_options"], "--dataset-opt")
    overrides = {"device": "auto", "precision": "auto", **given}
    path = Path(args.checkpoint)
    config, ckpt = open_checkpoint(path, **overrides)
    runtime = resolve_runtime(config)
    model = restore_model(path, config, ckpt, runtime)
    return config, runtime, model, path, checkpoint_task(ckpt)


_EVALUATE_KEYS = (
    "data",
    "dataset",
    "dataset_options",
    "loader",
    "batch_size",
    "num_workers",
    "device",
    "precision",
    "eval_size",
)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from segkit.build import (
        build_dataset,
        build_eval_loader,
        build_eval_plan,
        build_loss,
        build_recipe,
    )
    from segkit.inference.native import forward_for
    from segkit.task import Task
    from segkit.training.loops import EvalContext, evaluate

    config, runtime, model, path, task = _checkpoint_run(args, _EVALUATE_KEYS)
    dataset = build_dataset(config)
    if Task.of(dataset).classes != task.classes:
        raise ConfigError(
            f"{path}: the model predicts {task.describe()}, but dataset "
            f"'{config.resolved_dataset()}' {dataset.root} is {Task.of(dataset).describe()}; "
            "evaluate it on data with the same classes (--dataset-opt target=... where the "
            "dataset offers one)"
        )
    recipe = build_recipe(config)
    plan = build_eval_plan(config, recipe)
    how = ""
    via_predictor = args.mode is not None or args.tta != "none"
    if via_predictor:
        from segkit.inference.predictor import Predictor, eval_normalization, evaluate_images

        mean, std = eval_normalization(recipe.eval, config.image_size)
        predictor = Predictor.from_model(
            model,
            image_size=config.image_size,
            native=recipe.native_eval,
            mean=mean,
            std=std,
            task=task,
            runtime=runtime,
            label=config.model,
            mode=args.mode or "resize",
            tta=args.tta,
            tile=args.tile,
            overlap=args.overlap,
            blend=args.blend,
            batch_size=config.batch_size,
        )
        metrics = evaluate_images(predictor, dataset, args.split)
        how = f", mode {predictor.mode}, tta {predictor.tta}, scored at each image's size"
    else:
        loader = build_eval_loader(config, runtime, dataset, plan, args.split)
        context = EvalContext(
            runtime,
            loss_fn=build_loss(config, dataset, runtime.num_workers or None),
            task=task,
            forward=forward_for(
                plan,
                image_size=config.image_size,
                model=model,
                precision=runtime.precision,
                channels_last=runtime.channels_last,
                channels=task.num_classes,
            ),
        )
        metrics = evaluate(model, loader, context)
        if plan.native:
            how = f", eval size {plan.eval_size}: {plan.describe()}"
    loss = f"  loss {metrics['loss']:.4f}" if not via_predictor else ""
    if task.multiclass:
        from segkit.metrics.multiclass import confusion_table

        print(confusion_table(metrics, list(task.classes)))
        print(
            f"{args.split} mIoU {metrics['miou']:.4f}  mDice {metrics['mdice']:.4f}  "
            f"pixel acc {metrics['pixel_acc']:.4f}{loss}  "
            f"({int(metrics['images'])} images, {dataset.root}; "
            f"{runtime.device}, {runtime.precision.name}{how})"
        )
        return 0
    print(
        f"{args.split} dice {metrics['dice']:.4f}  iou {metrics['iou']:.4f}"
        f"{loss}  ({int(metrics['images'])} images, {dataset.root}; "
        f"{runtime.device}, {runtime.precision.name}{how})"
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from segkit.data.reading import read_image
    from segkit.inference.predictor import collect_images, read_parallel
    from segkit.inference.trained import prediction_paths, write_prediction
    from segkit.system.files import check_writable, remove_temporaries
    from segkit.training.progress import is_tty

    if not 0 < args.threshold < 1:
        raise ConfigError(f"--threshold {args.threshold}: expected a probability in (0, 1)")
    files = collect_images(args.images)
    out = check_writable(args.out, "--out")  # read-only, full, a file: before any work
    predictor = _predictor(args, args.checkpoint)
    task = predictor.task
    # Plan every output first: two inputs writing one file, or files already there
    # (without --overwrite), stop the run before anything is predicted.
    where: dict[Path, Path] = {}
    outputs: dict[Path, list[Path]] = {}
    for path, rel in files:
        outputs[path] = prediction_paths(
            out / rel,
            path.stem,
            task,
            overlay=args.overlays,
            probabilities=args.probabilities or False,
        )
        for target in outputs[path]:
            if target in where:
                raise ConfigError(
                    f"{where[target]} and {path} would both write {target}; predict them "
                    "into separate --out folders, or rename one"
                )
            where[target] = path
    if args.skip_existing:
        # Every file is written whole or not at all (segkit.system.files), so an image whose
        # outputs all exist is done; one stopped half-way has its outputs written again.
        finished = {path for path, targets in outputs.items() if all(t.exists() for t in targets)}
        files = [f for f in files if f[0] not in finished]
        where = {t: p for t, p in where.items() if p not in finished}
        if finished:
            print(f"segkit: {len(finished)} images already predicted in {out}, left out")
        targets: dict[Path, set[str]] = {}
        for target in where:
            targets.setdefault(target.parent, set()).add(target.name)
        for folder, names in targets.items():  # what the stopped predict was writing
            if folder.is_dir():
                remove_temporaries(folder, of=names)
    existing = [t for t in where if t.exists()]
    if existing and not (args.overwrite or args.skip_existing):
        raise ConfigError(
            f"{existing[0]} already exists ({len(existing)} of the {len(where)} output files "
            "do); pass --overwrite to replace them, or choose another --out"
        )
    quiet = args.quiet
    bar = None
    if not quiet and is_tty(sys.stderr):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), unit="image", dynamic_ncols=True, leave=False)
    start = time.perf_counter()
    done = skipped = 0
    reads = read_parallel(files, lambda f: read_image(f[0]), predictor.num_workers)
    try:
        for (path, rel), image, prob in predictor.predict_many(reads):
            if bar is not None:
                bar.update(1)
            if isinstance(image, Exception):
                if not args.skip_bad:
                    raise type(image)(
                        f"{image}. The {done} images predicted before it are in {out}; pass "
                        "--skip-bad to skip unreadable files"
                    ) from None
                skipped += 1
                print(f"segkit: skipped {image}", file=sys.stderr)
                continue
            assert prob is not None
            written = write_prediction(
                out / rel,
                path,
                image,
                prob,
                args.threshold,
                task,
                probabilities=args.probabilities or False,
                overlay=args.overlays,
            )
            done += 1
            if quiet:
                continue
            if task.multiclass:
                counts = np.bincount(prob.argmax(0).ravel(), minlength=task.num_classes)
                what = ", ".join(
                    f"{c} {v:.1%}" for c, v in zip(task.classes, counts / prob[0].size, strict=True)
                )
            else:
                what = f"{float((prob > args.threshold).mean()):.1%} foreground"
            line = f"{path}: {what} -> {', '.join(p.name for p in written)}"
            if bar is not None:
                bar.write(line)
            else:
                print(line)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    skipped_note = f", {skipped} unreadable skipped" if skipped else ""
    print(
        f"predicted {done} images{skipped_note} in {seconds:.1f} s "
        f"({done / max(seconds, 1e-9):.1f} images/s; {predictor.device}, "
        f"{predictor.runtime.precision.name}, mode {predictor.mode}, tta {predictor.tta}) -> {out}"
    )
    return 0


def _predictor(args: argparse.Namespace, checkpoint: str) -> Any:
    """The :class:`~segkit.inference.predictor.Predictor` the options of ``predict`` ask for."""
    from segkit.inference.predictor import Predictor

    return Predictor(
        checkpoint,
        device=getattr(args, "device", "auto"),
        precision=getattr(args, "precision", "auto"),
        mode=args.mode,
        tta=args.tta,
        tile=args.tile,
        overlap=args.overlap,
        blend=args.blend,
        batch_size=args.batch_size,
        num_workers=getattr(args, "num_workers", None),
    )


def _cmd_export(args: argparse.Namespace) -> int:
    from segkit.inference.export import export

    result = export(
        args.checkpoint,
        args.out,
        format=args.format,
        dynamic=args.dynamic,
        image_size=args.image_size,
        threshold=args.threshold,
        opset=args.opset,
        tolerance=args.tolerance,
        overwrite=args.overwrite,
    )
    size = result.path.stat().st_size / 1e6
    shape = (
        "(N, 3, H, W) -> (N, C, H, W), dynamic"
        if args.dynamic
        else (f"{result.input_shape} -> {result.output_shape}")
    )
    where = f"; metadata in {result.sidecar}" if result.sidecar else "; metadata in the model"
    print(f"wrote {result.path} ({size:.1f} MB, {args.format}, {shape}{where})")
    print(
        f"parity {result.checked_with} vs torch: max abs diff {result.max_abs_diff:.2e} "
        f"(tolerance {result.tolerance:g})"
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from segkit.errors import PluginError
    from segkit.registry import KINDS, canonical_kind, default_registry

    reg = default_registry()
    kinds = [canonical_kind(args.kind)] if args.kind else list(KINDS)
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
        if args.check and e.__cause__ is not None:
            import traceback

            traceback.print_exception(e.__cause__, file=sys.stderr)
    return 1 if failures and args.check else 0


def _dataset_capability(name: str, capability: str, what: str) -> Any:
    """The ``capability`` function the dataset plugin ``name`` declares."""
    from segkit.registry import default_registry

    found = default_registry().info("datasets", name).capability(capability)
    if found is None:
        raise ConfigError(
            f"dataset '{name}' cannot {what} (its factory declares no {capability}()); "
            "see `segkit list datasets`"
        )
    return found


def _cmd_data_synth(args: argparse.Namespace) -> int:
    generate = _dataset_capability(args.dataset, "generate", "generate data")
    # Only a --workers given is passed on: generate(root, count, seed) is the contract.
    # So are --variant and --size (the synthetic set's vessels, for native-resolution work).
    extra: dict[str, Any] = {"workers": args.workers} if args.workers is not None else {}
    if args.variant is not None:
        extra["variant"] = args.variant
    if args.size is not None:
        w, sep, h = args.size.lower().partition("x")
        if not (sep and w.isdigit() and h.isdigit()):
            raise ConfigError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 1500x1100")
        extra["size"] = (int(w), int(h))
    root = generate(Path(args.path), count=args.count, seed=args.seed, **extra)
    kind = f"{args.dataset}, {args.variant}" if args.variant else args.dataset
    print(f"wrote {args.count} generated images ({kind}) to {root}")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    fetch = _dataset_capability(args.dataset, "fetch", "download its data")
    root = fetch(Path(args.path), base_url=args.url)
    print(f"{args.dataset} ready in {root}: segkit run --dataset {args.dataset} --data {root}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    import json

    from segkit.config import RunConfig, parse_options
    from segkit.data.check import check_configured, format_report

    # The dataset a `segkit run` with the same --data/--dataset/--dataset-opt would read.
    config = RunConfig(
        data=args.data,
        dataset=args.dataset,
        dataset_options=parse_options(args.dataset_opt, "--dataset-opt"),
    )
    report = check_configured(config, args.workers)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from segkit.config import parse_options
    from segkit.reports.info import model_info

    options = parse_options(args.model_opt, "--model-opt")
    if args.encoder is not None:
        options["encoder"] = args.encoder
    info = model_info(args.model, image_size=args.image_size, **options)
    print(json.dumps(info.to_dict(), indent=2) if args.json else "\n".join(info.lines()))
    return 0


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from segkit.config import RunConfig, read_config_file
    from segkit.training.lr_sweep import Sweep, lr_find, write_plot

    base = read_config_file(args.config) if args.config else None
    config = RunConfig.from_dict(
        settings_from_args(args, base), source=args.config or "command line"
    )
    every = max(1, args.steps // 10)

    def progress(step: int, lr: float, loss: float) -> None:
        if not args.quiet and (step + 1) % every == 0:
            print(f"  step {step + 1:>4}/{args.steps}  lr {lr:.2e}  loss {loss:.4f}", flush=True)

    from segkit import build

    # Built here, not inside lr_find, so the header names the loss `--loss auto` became.
    runtime = build.resolve_runtime(config)
    training = build.build_training(config, runtime)
    config = training.config
    if not args.quiet:
        print(
            f"segkit lr-find: {config.model} + {config.loss} via {config.loader}, batch "
            f"{config.batch_size} at {config.image_size} px; lr {args.start_lr:g} -> "
            f"{args.end_lr:g} over {args.steps} steps"
        )
    result = lr_find(
        config,
        Sweep(start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps),
        progress=progress,
        training=training,
        runtime=runtime,
    )
    path = write_plot(
        result, args.out, f"{config.model} + {config.loss}, batch {config.batch_size}"
    )
    stopped = (
        "" if len(result.lrs) == args.steps else f" (loss diverged after {len(result.lrs)} steps)"
    )
    print(f"swept lr {result.lrs[0]:.2e} .. {result.lrs[-1]:.2e}{stopped}")
    print(f"suggested lr {result.suggestion:.2e} (steepest descent of the smoothed loss)")
    print(f"min loss lr / 10 {result.min_loss_lr:.2e}")
    print(f"plot: {path}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from segkit.reports.compare import compare

    result = compare(
        args.runs, args.out, force=args.force, group_seeds=args.group_seeds, device=args.device
    )
    print((result.files["md"]).read_text().split("\n![")[0].rstrip())
    print(f"\nwrote {', '.join(str(p) for p in result.files.values())}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
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


def _cmd_preview(args: argparse.Namespace) -> int:
    from segkit.config import RunConfig
    from segkit.reports.preview import loader_names, write_preview

    config = RunConfig.from_dict(settings_from_args(args), source="command line")
    result = write_preview(
        config,
        args.out,
        loaders=loader_names(args.loader),
        n=args.n,
        split=args.split,
        stage=args.stage,
        epoch=args.epoch,
    )
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
        description="Semantic segmentation, binary or K-class: train, evaluate and predict with pluggable "
        "models, losses, augmentation recipes, loaders and datasets.",
    )
    parser.add_argument("--version", action="version", version="segkit 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_list(sub)
    _add_data(sub)
    _add_info(sub)
    _add_lr_find(sub)
    _add_compare(sub)
    _add_study(sub)
    _add_preview(sub)
    from segkit.plan.cli import add_plan_command

    add_plan_command(sub)
    return parser


def _add_preview(sub: Any) -> None:
    p = sub.add_parser(
        "preview",
        help="draw augmented images with their masks' outlines, per loader, to check a "
        "recipe's pairing and strength before training",
    )
    p.add_argument(
        "--augment",
        "--recipe",
        dest="recipe",
        required=True,
        metavar="NAME_OR_FILE",
        help="a recipe plugin (see `segkit list recipes`) or a recipe file (.toml, .yaml, .json)",
    )
    add_config_args(p, ("data", "dataset", "dataset_options", "image_size", "seed", "device"))
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


def _add_compare(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare finished runs: comparison.md/.csv, overlaid curves, the same test "
        "images segmented by every run",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders made by segkit run")
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


def _add_study(sub: Any) -> None:
    p = sub.add_parser(
        "study",
        help="run a grid of configurations from a TOML file (resumable), then compare them",
    )
    p.add_argument("file", metavar="FILE.toml", help="[base] settings, [axes] lists, [[runs]]")
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
        help="run a changed file in an existing study folder: changed runs are moved to "
        "replaced/ and trained again",
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


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="train, evaluate on the test split, write a run folder")
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="settings from a JSON or TOML file (a run folder's config.json works as is); "
        "options given here override it",
    )
    add_config_args(p)
    x = p.add_argument_group("launching")
    x.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="data-parallel over N processes (GPUs, or CPU processes with gloo) via torchrun",
    )
    x.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run in RUN_DIR from its last.pt (its settings come from the "
        "checkpoint; --epochs extends it)",
    )
    x.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    p.set_defaults(func=_cmd_run)


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a split")
    p.add_argument("checkpoint", help="best.pt or last.pt from a run folder")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    add_config_args(p, _EVALUATE_KEYS)
    _add_inference_args(p, evaluate=True)
    p.set_defaults(func=_cmd_evaluate)


def _add_inference_args(p: argparse.ArgumentParser, evaluate: bool = False) -> None:
    from segkit.config import BLENDS, PREDICT_MODES, TTAS

    g = p.add_argument_group("prediction")
    if evaluate:
        mode_help = (
            "score each image at its own size through the predictor: resize (whole image "
            "at the training size), tile (sliding window at full resolution), whole (the "
            "image at its own resolution, padded to the model's multiple) or auto (for a "
            "resize-trained model tile above twice the training size, else resize; for a "
            "natively trained one whole, tile above 2048x2048 pixels); default: the "
            "loader's batches as --eval-size says"
        )
    else:
        mode_help = (
            "resize: the whole image at the training size; tile: sliding window at the "
            "image's own resolution; whole: the image at its own resolution in one pass, "
            "padded to the model's multiple; auto: for a model trained on resized images "
            "tile when the image's longer side is over twice the training size, else "
            "resize; for one trained at native resolution (microscopy, RandomCrop recipes) "
            "whole, tile above 2048x2048 pixels (default: auto)"
        )
    g.add_argument(
        "--mode", choices=PREDICT_MODES, default=None if evaluate else "auto", help=mode_help
    )
    g.add_argument(
        "--tta",
        choices=TTAS,
        default="none",
        help="test-time augmentation: average the probabilities of the image and its flips "
        "(flip: horizontal, 2 passes; flip_hv: horizontal and vertical, 4 passes)",
    )
    g.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="N",
        help="tile side in pixels for --mode tile, a multiple of the model's "
        "min_input_multiple (default: the training size)",
    )
    g.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        metavar="F",
        help="fraction of a tile shared with the next (default: 0.25)",
    )
    g.add_argument(
        "--blend",
        choices=BLENDS,
        default="gaussian",
        help="weights of overlapping tiles: gaussian (centre-weighted) or linear (default: "
        "gaussian)",
    )


def _add_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="write masks (and overlays, probabilities) for image files, folders or lists",
    )
    p.add_argument("checkpoint", help="best.pt or last.pt from a run folder")
    p.add_argument(
        "images",
        nargs="+",
        metavar="PATHS",
        help="image files, folders (searched recursively for .jpg, .jpeg, .png, .bmp, .tif, "
        ".tiff, .webp, .gif) and .txt files listing one image path per line",
    )
    p.add_argument(
        "--out",
        required=True,
        help="folder for <stem>_mask.png (0/255, or a palette PNG of class indices for K "
        "classes); a folder's subfolders are kept",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="probability threshold of a binary model (default: 0.5)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        metavar="N",
        help="images (resize mode) or tiles (tile mode) per forward pass (default: 8)",
    )
    p.add_argument("--overlays", action="store_true", help="also write <stem>_overlay.png")
    p.add_argument(
        "--probabilities",
        nargs="?",
        const="npy",
        choices=("npy", "png"),
        default=None,
        help="also write the probabilities: npy (the default) <stem>_probs.npy, float32 "
        "(H, W) foreground or (K, H, W) softmax; png 16-bit <stem>_probs.png "
        "(<stem>_probs_<class>.png for K classes), probability x 65535",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="report an unreadable image and go on (default: stop at it)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that exist (default: refuse to start)",
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave out images whose outputs all exist, and write the rest (finishes a "
        "predict that was stopped)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    _add_inference_args(p)
    add_config_args(p, ("device", "precision", "num_workers"))
    p.set_defaults(func=_cmd_predict)


def _add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write a checkpoint's model as ONNX or TorchScript, checked against PyTorch",
    )
    p.add_argument("checkpoint", help="best.pt or last.pt from a run folder")
    p.add_argument(
        "--format",
        choices=("onnx", "torchscript"),
        default="onnx",
        help="onnx (needs pip install 'segkit[export]') or torchscript (default: onnx)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the model file to write")
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="batch size, height and width free (multiples of the model's min_input_multiple)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="N",
        help="square input size traced (the only one without --dynamic; default: the "
        "training size)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="a binary model's probability threshold, recorded with the model (default: 0.5)",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest logit difference from PyTorch the parity check accepts (default: 1e-4)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.set_defaults(func=_cmd_export)


def _add_list(sub: Any) -> None:
    from segkit.registry import KIND_ALIASES, KINDS

    p = sub.add_parser(
        "list", help="show installed plugins, their distribution and whether they load"
    )
    p.add_argument("kind", nargs="?", choices=(*KINDS, *KIND_ALIASES))
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if any plugin fails to load or breaks its kind's contract, with tracebacks",
    )
    p.add_argument(
        "--no-import", action="store_true", help="list names from metadata only, import nothing"
    )
    p.set_defaults(func=_cmd_list)


def _add_info(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="a model's parameters, FLOPs and activation memory per image (CPU, random weights)",
    )
    p.add_argument("model", help="a model plugin (see `segkit list models`)")
    p.add_argument("--encoder", default=None, help="a backbone, for models that take one")
    p.add_argument(
        "--model-opt",
        action="append",
        metavar="KEY=VALUE",
        help="a model option (repeatable)",
    )
    p.add_argument(
        "--image-size", type=int, default=256, metavar="N", help="square input size (default: 256)"
    )
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(func=_cmd_info)


def _add_lr_find(sub: Any) -> None:
    import dataclasses as dc

    from segkit.config import RunConfig

    p = sub.add_parser(
        "lr-find",
        help="sweep the learning rate on a run's settings, plot loss vs lr, suggest one",
    )
    p.add_argument(
        "--config", metavar="FILE", default=None, help="settings from a JSON or TOML file"
    )
    add_config_args(
        p, [f.name for f in dc.fields(RunConfig) if f.metadata.get("group") != "output"]
    )
    s = p.add_argument_group("sweep")
    s.add_argument("--start-lr", type=float, default=1e-7, help="first lr (default: 1e-7)")
    s.add_argument("--end-lr", type=float, default=1.0, help="last lr (default: 1)")
    s.add_argument("--steps", type=int, default=100, help="optimizer steps (default: 100)")
    s.add_argument(
        "--out", default="lr_find.png", metavar="FILE.png", help="the plot (default: lr_find.png)"
    )
    s.add_argument("-q", "--quiet", action="store_true", help="print only the results")
    p.set_defaults(func=_cmd_lr_find)


def _add_data(sub: Any) -> None:
    from segkit.config import DEFAULTS

    p = sub.add_parser("data", help="make, download or check datasets")
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    s = data.add_parser(
        "synth", help="generate a synthetic dataset (default: pets in the oxford_pet layout)"
    )
    s.add_argument("path")
    s.add_argument("--count", type=int, default=400)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes generating in parallel (the synthetic set: same files for any N)",
    )
    s.add_argument(
        "--variant",
        default=None,
        help="the set's variant, passed to generate() (synthetic: pet, collar, or vessels: "
        "large images of thin structures)",
    )
    s.add_argument(
        "--size",
        default=None,
        metavar="WxH",
        help="image size for variants that take one (synthetic vessels; default 1500x1100)",
    )
    s.add_argument(
        "--dataset",
        default=DEFAULTS["generated_dataset"],
        help="a dataset plugin that declares generate() (default: %(default)s)",
    )
    s.set_defaults(func=_cmd_data_synth)
    f = data.add_parser(
        "fetch", help="download and unpack a dataset's official archives (needs a network)"
    )
    f.add_argument("path")
    f.add_argument(
        "--dataset",
        default=DEFAULTS["dataset"],
        help="a dataset plugin that declares fetch() (default: %(default)s)",
    )
    f.add_argument(
        "--url", default=None, help="base URL of the archives (default: the official one)"
    )
    f.set_defaults(func=_cmd_data_fetch)
    c = data.add_parser(
        "check",
        help="read every sample once: sizes, formats, mask values, foreground, duplicates, "
        "unreadable files; suggests --image-size and pos_weight (exit 1 if a run would fail)",
    )
    c.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="dataset folder (default: the generated synthetic set `segkit run` uses)",
    )
    c.add_argument(
        "--dataset",
        default=None,
        help="dataset plugin (default: the layout the --data folder is recognised as, "
        f"{DEFAULTS['generated_dataset']} without --data)",
    )
    c.add_argument(
        "--dataset-opt",
        action="append",
        metavar="KEY=VALUE",
        help="option for the dataset (repeatable)",
    )
    c.add_argument("--json", action="store_true", help="print the report as one JSON object")
    c.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="reading threads (default: cores, up to 8)",
    )
    c.set_defaults(func=_cmd_data_check)


def _rank() -> str:
    """``rank R of N: `` in a data-parallel process (whose errors interleave), else ``""``."""
    world = os.environ.get("WORLD_SIZE", "1")
    return f"rank {os.environ.get('RANK', '?')} of {world}: " if world not in ("", "1") else ""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args) or 0)
    except RunInterrupted as e:
        print(f"segkit: {_rank()}{e}", file=sys.stderr)
        return 130
    except DistributedError as e:
        from segkit.training.distributed import EXIT_LOST_CONTACT

        print(f"segkit: error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Leaving through the interpreter would run the process group's destructors,
        # which abort the process on a broken gloo connection ("terminate called ...").
        os._exit(EXIT_LOST_CONTACT)
    except SegkitError as e:
        print(f"segkit: error: {_rank()}{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `segkit list | head`: the reader left; say nothing more (and let the interpreter's
        # final flush of stdout go nowhere instead of raising again).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
