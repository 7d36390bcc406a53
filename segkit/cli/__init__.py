"""The ``segkit`` command: a thin layer over the library, one module per group of commands.

- :mod:`.train`: ``run`` (and ``--resume``, ``--devices``), ``lr-find``
- :mod:`.infer`: ``evaluate``, ``predict``, ``export``
  (:mod:`segkit.inference.evaluate`, :mod:`~segkit.inference.predict`,
  :mod:`~segkit.inference.export`)
- :mod:`.reports`: ``compare``, ``study``, ``preview``
- :mod:`.plugins`: ``list``, ``info``
- :mod:`.data`: ``data synth``, ``data fetch``, ``data check``
- :mod:`segkit.plan.cli`: ``plan`` (a run planned from the data and this machine)

The arguments are generated (:mod:`.args`): ``run``'s from
:class:`~segkit.config.RunConfig`'s fields, ``predict``/``evaluate``/``export``'s from
their options dataclasses (:mod:`segkit.inference.options`). Heavy modules (torch,
plugins) are imported inside the commands so ``segkit --help`` answers at once.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys

from segkit.errors import DistributedError, RunInterrupted, SegkitError

try:  # a console script older than segkit.command imports this first: its STARTING line
    from segkit.cli import data, infer, plugins, reports, train
    from segkit.cli.args import ExamplesHelpFormatter, add_config_args, settings_from_args
    from segkit.cli.train import _without_devices
    from segkit.plan.cli import add_plan_command
except KeyboardInterrupt:
    print("segkit: interrupted while starting: nothing was done", file=sys.stderr)
    raise SystemExit(130) from None

__all__ = ["add_config_args", "build_parser", "main", "settings_from_args", "_without_devices"]


class _Version(argparse.Action):
    """``--version``: ``segkit 0.1.0``, with the git commit where segkit runs from a
    checkout (read from ``.git`` only when asked)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from segkit.training.reproduce import describe_segkit

        print(describe_segkit())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segkit",
        description="Semantic segmentation, binary or K-class: train, evaluate and predict with pluggable "
        "models, losses, augmentation recipes, loaders and datasets.",
        epilog="first run:  segkit run --model unet --image-size 64 --epochs 5  # generated data\n"
        "your data:  segkit data check cells  # every problem, then the run command\n"
        "docs:       docs/index.md (`make docs` builds the site); segkit COMMAND --help",
        formatter_class=ExamplesHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action=_Version,
        nargs=0,
        help="show segkit's version (and git commit) and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train.add_run(sub)
    infer.add_evaluate(sub)
    infer.add_predict(sub)
    infer.add_export(sub)
    plugins.add_list(sub)
    data.add_data(sub)
    plugins.add_info(sub)
    train.add_lr_find(sub)
    reports.add_compare(sub)
    reports.add_study(sub)
    reports.add_preview(sub)
    add_plan_command(sub)
    return parser


def _rank() -> str:
    """``rank R of N: `` in a data-parallel process (whose errors interleave), else ``""``."""
    world = os.environ.get("WORLD_SIZE", "1")
    return f"rank {os.environ.get('RANK', '?')} of {world}: " if world not in ("", "1") else ""


def _command_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The (sub)parser of the command ``args`` was parsed for: ``segkit data check``'s for
    ``data check``, the top-level one where no command was chosen."""
    while True:
        chosen = [
            a
            for a in parser._actions  # argparse keeps its subcommands here only
            if isinstance(a, argparse._SubParsersAction) and getattr(args, a.dest, None)
        ]
        if not chosen:
            return parser
        parser = chosen[0].choices[getattr(args, chosen[0].dest)]


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """argparse's ``unrecognized arguments`` line, with the closest flag of the command for
    each misspelt one (``--epcohs``: did you mean --epochs?), as config files say for keys."""
    flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    hints = []
    for extra in extras:
        if not extra.startswith("--"):
            continue
        name = extra.split("=", 1)[0]
        close = difflib.get_close_matches(name, flags, n=1, cutoff=0.75)
        if close:
            hints.append(f"{name}: did you mean {close[0]}?")
    said = f"unrecognized arguments: {' '.join(extras)}"
    return f"{said} ({'; '.join(hints)})" if hints else said


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        command = _command_parser(parser, args)
        command.error(_unrecognized(command, extras))  # exits 2, as argparse does
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from segkit.config import COMMAND_LINE, given_as

    try:
        with given_as(COMMAND_LINE):  # a message names a setting by its flag, not its field
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
