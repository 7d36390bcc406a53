"""``segkit run`` (train, or resume, a run; ``--devices N`` launches torchrun) and
``segkit lr-find``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from segkit.cli.args import add_config_args, examples, settings_from_args
from segkit.errors import ConfigError, plural


def add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="train, evaluate on the test split, write a run folder",
        **examples(
            "segkit run --model resnet34_unet --recipe type1 --image-size 64 --epochs 10",
            "segkit run --dataset folder --data cells --epochs 30",
            "segkit run --config plan.toml",
            "segkit run --resume runs/long --epochs 300",
        ),
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="settings from a TOML, YAML or JSON file (a run folder's config.json works as is); "
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
        "checkpoint; --epochs extends it; --data, --device, --precision, --num-workers, "
        "--threads, --keep-last, --save-every, --profile and the logging options may change)",
    )
    x.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only the summary line (and the data's class warnings, on stderr)",
    )
    x.add_argument(
        "--json",
        action="store_true",
        help="print only the run's summary.json as one JSON object, with the run folder "
        "(run_dir: a taken --name gets -2, -3, ...) and the file's path (for scripts)",
    )
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    if args.devices is not None and args.devices > 1 and "WORLD_SIZE" not in os.environ:
        from segkit.training.distributed import launch

        return launch(args.devices, _without_devices(args.argv))
    with _sigterm_as_interrupt():
        return _run_or_resume(args)


def _run_or_resume(args: argparse.Namespace) -> int:
    from segkit.errors import interrupted_setting_up

    try:  # torch and the engine: seconds on a busy machine, before any folder is made
        from segkit.config import RunConfig, check_recorded_data, flag, read_config_file
        from segkit.training.engine import CHANGEABLE_ON_RESUME, resume, train
    except KeyboardInterrupt:
        raise interrupted_setting_up(args.resume) from None

    if args.resume:
        settings = settings_from_args(args)
        other = sorted(set(settings) - {"epochs", "max_time", *CHANGEABLE_ON_RESUME})
        if other or args.config:
            given = ", ".join(["--config"] * bool(args.config) + [flag(k) for k in other])
            allowed = ", ".join(flag(k) for k in CHANGEABLE_ON_RESUME)
            raise ConfigError(
                f"--resume continues a run with the settings in its checkpoint; {given} "
                "cannot change them (only --epochs can, to extend the run, and --max-time). "
                f"It may also change what does not change what is trained: {allowed}. "
                "Start a new run with them (from epoch 1, in a new folder): segkit run --config "
                f"{Path(args.resume) / 'config.json'} {_as_flags(settings)}".rstrip()
            )
        result = resume(
            args.resume,
            epochs=settings.pop("epochs", None),
            max_time=settings.pop("max_time", None),
            quiet=args.quiet or args.json,
            settings=settings,
        )
    else:
        base = read_config_file(args.config) if args.config else None
        settings = settings_from_args(args, base)
        source = args.config or "command line"
        config = RunConfig.from_dict(settings, source=source, check_options=True)
        if args.config and getattr(args, "data", None) is None:  # the file's data, not typed now
            check_recorded_data(config, args.config)
        # A run folder's config.json: what it recorded is compared with this run's
        result = train(config, quiet=args.quiet or args.json, rerun_of=args.config)
    _print_summary(args, result)
    return 0


def _as_flags(settings: dict[str, Any]) -> str:
    """``settings`` (those typed) as the flags that give them again, for a command line."""
    from segkit.config import flag

    return " ".join(f for key, value in settings.items() for f in _flags_of(flag(key), value))


def _flags_of(name: str, value: Any) -> list[str]:
    """The flag ``name`` giving ``value`` again: ``--x``/``--no-x`` for a bool, one
    ``--x key=value`` per entry of a dict, ``--x a b`` for a list; none for None."""
    if isinstance(value, bool):
        return [name if value else f"--no-{name[2:]}"]
    if isinstance(value, dict):
        return [
            f"{name} {shlex.quote(f'{k}={v if isinstance(v, str) else json.dumps(v)}')}"
            for k, v in value.items()
        ]
    if isinstance(value, (list, tuple)):
        return [" ".join([name, *(shlex.quote(str(v)) for v in value)])]
    if value is not None:
        return [f"{name} {shlex.quote(str(value))}"]
    return []


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
    """With --quiet or --json, the engine printed nothing: print the summary line, or
    ``summary.json`` with the run folder as one JSON object (rank 0 only), and the data
    check's warnings (class coverage, EXIF tags) on stderr."""
    from segkit.training.distributed import from_env

    if (args.quiet or args.json) and from_env().main:
        if args.json:
            print(json.dumps(run_json(result.run_dir), indent=2))
        else:
            print((result.run_dir / "summary.txt").read_text().strip())
        say_data_warnings(result)


def say_data_warnings(result: Any) -> None:
    """A quiet run's data warnings (class coverage, EXIF tags), on stderr."""
    for warning in getattr(result, "data_warnings", ()):
        print(f"segkit: warning (data): {warning}", file=sys.stderr)


def run_json(run_dir: Path) -> dict[str, Any]:
    """What ``segkit run --json`` prints: the run's ``summary.json`` (its schema in
    docs/training.md) with ``run_dir``, the folder the run wrote (a taken ``--name`` gets
    ``-2``, ``-3``, ...), and ``summary_json``, that file's path, first."""
    path = Path(run_dir) / "summary.json"
    return {"run_dir": str(run_dir), "summary_json": str(path), **json.loads(path.read_text())}


def _without_devices(argv: list[str]) -> list[str]:
    """``argv`` minus ``--devices N``: each torchrun process is one device."""
    out: list[str] = []
    items = iter(argv)
    for item in items:
        if item == "--devices":
            next(items, None)  # and its value
        elif not item.startswith("--devices="):
            out.append(item)
    return out


def add_lr_find(sub: Any) -> None:
    import dataclasses as dc

    from segkit.config import RunConfig

    p = sub.add_parser(
        "lr-find",
        help="sweep the learning rate on a run's settings, plot loss vs lr, suggest one",
        **examples(
            "segkit lr-find --model unet --image-size 64 --batch-size 8",
            "segkit lr-find --model unet --image-size 64 --start-lr 1e-5 --end-lr 0.1 --steps 60",
        ),
    )
    p.add_argument(
        "--config", metavar="FILE", default=None, help="settings from a TOML, YAML or JSON file"
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


#: A sweep of fewer steps than this gives a suggestion from too few points to trust.
FEW_SWEEP_STEPS = 20


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from segkit.config import RunConfig, read_config_file
    from segkit.training.lr_sweep import Sweep, check_plot_path, lr_find, write_plot

    base = read_config_file(args.config) if args.config else None
    config = RunConfig.from_dict(
        settings_from_args(args, base), source=args.config or "command line", check_options=True
    )
    check_plot_path(args.out)
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
            f"{args.end_lr:g} over {plural(args.steps, 'step')}"
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
    rough = (
        f"; from {len(result.lrs)} steps, a rough guess: --steps 100 is usual"
        if len(result.lrs) < FEW_SWEEP_STEPS
        else ""
    )
    print(f"suggested lr {result.suggestion:.2e} (steepest descent of the smoothed loss{rough})")
    print(f"min loss lr / 10 {result.min_loss_lr:.2e}")
    print(f"plot: {path}")
    return 0
