"""``segkit plan``: the subcommand's options and what it does. :mod:`segkit.cli` registers
it with one call (:func:`add_plan_command`); nothing heavy is imported until it runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from segkit.cli.args import examples


def add_plan_command(sub: Any) -> None:
    """Add ``segkit plan`` to the ``segkit`` command's subparsers ``sub``."""
    p = sub.add_parser(
        "plan",
        help="plan a run from the data and this machine (image size or native crops, batch "
        "size, recipe, loss, schedule, epochs for a --budget), each choice with its reason; "
        "writes a config file for segkit run --config",
        **examples(
            "segkit plan cells/ --budget 20m",
            "segkit plan cells/ --budget 20m --run",
            "segkit plan cells/ --epochs 30 --force --quiet --json",
        ),
    )
    p.add_argument(
        "folder",
        nargs="?",
        metavar="DIR",
        default=None,
        help="dataset folder, or --data DIR as segkit run takes it (default: the generated "
        "synthetic set `segkit run` uses)",
    )
    p.add_argument("--data", metavar="DIR", default=None, help="dataset folder, as DIR")
    _add_data_options(p)
    _add_fixed_settings(p)
    _add_time_options(p)
    _add_output_options(p)
    p.set_defaults(func=cmd_plan)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    """The dataset's plugin and options."""
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        default=None,
        help="dataset plugin (default: the layout the folder is recognised as)",
    )
    d.add_argument(
        "--dataset-opt",
        action="append",
        metavar="KEY=VALUE",
        help="option for the dataset (repeatable)",
    )


def _add_fixed_settings(p: argparse.ArgumentParser) -> None:
    """The settings the plan keeps as given: the model, the loader, the device."""
    m = p.add_argument_group("fixed settings (the plan keeps them)")
    m.add_argument(
        "--model",
        default=None,
        help="plan for this model plugin (default: the planner's, see docs/plan.md)",
    )
    m.add_argument("--encoder", default=None, help="a backbone, for models that take one")
    m.add_argument(
        "--model-opt", action="append", metavar="KEY=VALUE", help="a model option (repeatable)"
    )
    m.add_argument("--loader", default=None, help="loader plugin (default: albumentations)")
    m.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    m.add_argument(
        "--threads", default=None, metavar="N", help="torch's CPU threads: N or auto (default)"
    )
    m.add_argument(
        "--skip-bad-samples",
        action="store_true",
        help="plan (and run) without the files that cannot be decoded, as segkit run "
        "--skip-bad-samples does, instead of refusing the data",
    )


def _add_time_options(p: argparse.ArgumentParser) -> None:
    """How long the run may take: a budget or a number of epochs."""
    b = p.add_argument_group("time")
    how_long = b.add_mutually_exclusive_group()
    how_long.add_argument(
        "--budget",
        default=None,
        metavar="DURATION",
        help="the run's wall time, e.g. 20m, 90s, 1h30m: the epochs (and, where they would "
        "be too few, the image size) are chosen to finish in it, setup, validation, "
        "checkpoints, test and reports counted (default: 20m)",
    )
    how_long.add_argument(
        "--epochs", type=int, default=None, metavar="N", help="train N epochs instead of a budget"
    )


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """Where the plan goes, and whether to run it."""
    o = p.add_argument_group("output")
    o.add_argument(
        "--out",
        default="plan.toml",
        metavar="FILE",
        help="the plan: a configuration file, .toml or .yaml (reasons as comments) or .json "
        "(default: plan.toml)",
    )
    o.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    o.add_argument(
        "--json", action="store_true", help="print the plan and its measurements as JSON"
    )
    o.add_argument(
        "--run",
        action="store_true",
        help="then train it: segkit run --config FILE (the one way to run a plan; edit the "
        "file first to change a choice)",
    )
    o.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _base(args: argparse.Namespace) -> Any:
    """The run settings given on the command line, as a :class:`RunConfig`."""
    from segkit.config import RunConfig, parse_options
    from segkit.errors import ConfigError

    if args.folder and args.data and args.folder != args.data:
        raise ConfigError(f"segkit plan {args.folder} --data {args.data}: two folders; give one")
    given: dict[str, Any] = {
        "data": args.folder or args.data,
        "dataset": args.dataset,
        "dataset_options": parse_options(args.dataset_opt, "--dataset-opt"),
    }
    if args.model is not None:
        given["model"] = args.model
    options = parse_options(args.model_opt, "--model-opt")
    if args.encoder is not None:
        options["encoder"] = args.encoder
    if options:
        given["model_options"] = options
    for key in ("loader", "device", "threads"):
        if getattr(args, key) is not None:
            given[key] = getattr(args, key)
    if args.skip_bad_samples:
        given["skip_bad_samples"] = True
    return RunConfig.from_dict(given, source="command line")


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from segkit.plan.files import check_plan_path, run_command, write_plan
    from segkit.plan.planner import make_plan
    from segkit.plan.rules import parse_budget

    budget = parse_budget(args.budget) if args.budget is not None else None
    base = _base(args)

    def say(line: str) -> None:
        if not args.quiet:
            print(f"segkit plan: {line}", file=sys.stderr, flush=True)

    given = args.model is not None or bool(args.model_opt) or args.encoder is not None
    if given and args.model is None:
        from segkit.errors import ConfigError

        raise ConfigError(
            "--encoder and --model-opt need --model: the planner's own model comes with its "
            "own options"
        )
    check_plan_path(args.out, force=args.force)  # before the minutes of measuring
    plan = make_plan(base, budget=budget, epochs=args.epochs, model_given=given, say=say)
    path = write_plan(plan, args.out, force=args.force)
    planned = {**plan.to_dict(), "file": str(path)}
    if not args.json:
        print("\n".join(plan.lines()))
        print(f"wrote {path}: {run_command(path)}", flush=True)
    elif not args.run:
        print(json.dumps(planned, indent=2))
    if not args.run:
        return 0
    from segkit.cli.train import _print_summary, _sigterm_as_interrupt, run_json, say_data_warnings
    from segkit.config import RunConfig
    from segkit.training.engine import train

    # As segkit run: SIGTERM stops it as Ctrl-C does, -q ends with the summary line, and
    # --json keeps stdout one object (the plan, and under "run" the run's summary.json).
    with _sigterm_as_interrupt():
        result = train(RunConfig.from_file(path), quiet=args.quiet or args.json)
    if args.json:
        print(json.dumps({**planned, "run": run_json(result.run_dir)}, indent=2))
        say_data_warnings(result)
    else:
        _print_summary(args, result)
    return 0
