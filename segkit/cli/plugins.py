"""``segkit list`` (the installed plugins, and whether they load) and ``segkit info`` (a
model's size and cost)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any

from segkit.cli.args import examples


def add_list(sub: Any) -> None:
    from segkit.registry import KIND_ALIASES, KINDS

    p = sub.add_parser(
        "list",
        help="show installed plugins, their distribution and whether they load",
        **examples("segkit list", "segkit list models --check", "segkit list --no-import"),
    )
    p.add_argument("kind", nargs="?", choices=(*KINDS, *KIND_ALIASES))
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if any plugin fails to load, breaks its kind's contract, shares its "
        "name with another distribution's (a built-in's included: that one is hidden), "
        "sits in a misspelt entry-point group, or comes from a distribution installed twice "
        "(two versions on the path), with tracebacks",
    )
    p.add_argument(
        "--no-import", action="store_true", help="list names from metadata only, import nothing"
    )
    p.set_defaults(func=_cmd_list)


@dataclass
class _Listing:
    """What ``segkit list`` found: a row per plugin (kind, name, distribution, status),
    the plugins that clash or fail to load with their errors, and what is wrong with each
    hidden plugin (``--check`` exits 1 on any)."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    failures: list[tuple[Any, Exception | None]] = field(default_factory=list)
    shadowed: list[str] = field(default_factory=list)

    def add(self, kind: str, name: str, info: Any, *, load: bool) -> None:
        """The rows of plugin ``name`` of ``kind``, loading it with ``load``."""
        if info.claims:  # several distributions register the name: a row for each
            self.failures.append((info, info.clash_error()))
            for claim in info.claims:
                dist = f"{claim.distribution} {claim.version}".strip()
                self.rows.append((kind, name, dist, "CLASH"))
            return
        error = _load_error(info) if load else None
        if error is not None:
            self.failures.append((info, error))
        status = "-" if not load else "ok" if error is None else "FAILED"
        dist = f"{info.distribution} {info.version}".strip()
        self.rows.append((kind, name, dist, status))
        for hidden in info.shadows:  # another distribution's plugin of a built-in name
            self.shadowed.append(f"{kind} '{name}': {info.shadow_problem(hidden)}")
            self.rows.append(
                (kind, name, f"{hidden.distribution} {hidden.version}".strip(), "SHADOWED")
            )


def _cmd_list(args: argparse.Namespace) -> int:
    from segkit.registry import KINDS, canonical_kind, default_registry

    reg = default_registry()
    kinds = [canonical_kind(args.kind)] if args.kind else list(KINDS)
    listing = _Listing()
    for kind in kinds:
        for name, info in reg.plugins(kind).items():
            listing.add(kind, name, info, load=not args.no_import)
    _print_table(listing.rows, status=not args.no_import)
    misplaced = [m for m in reg.misplaced() if m.kind in kinds]
    for m in misplaced:
        print(f"\n{m.kind} '{m.name}' is not listed: {m}", file=sys.stderr)
    copies = [c for c in reg.copies() if any(c.registers(k) for k in kinds)]
    for c in copies:
        print(f"\n{c}", file=sys.stderr)
    for line in listing.shadowed:
        print(f"\n{line}", file=sys.stderr)
    for info, e in listing.failures:
        print(f"\n{info.kind} '{info.name}': {e}", file=sys.stderr)
        if args.check and e is not None and e.__cause__ is not None:
            import traceback

            traceback.print_exception(e.__cause__, file=sys.stderr)
    problems = listing.failures or misplaced or listing.shadowed or copies
    return 1 if problems and args.check else 0


def _print_table(rows: list[tuple[str, str, str, str]], *, status: bool) -> None:
    """The plugins' rows under a header, in columns (``status``: with the STATUS title)."""
    widths = [
        max([len(r[i]) for r in rows] + [len(h)])
        for i, h in enumerate(("KIND", "NAME", "DISTRIBUTION"))
    ]
    header = ("KIND", "NAME", "DISTRIBUTION", "STATUS" if status else "")
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3])


def _load_error(info: Any) -> Exception | None:
    """The error loading a plugin raises, or None when it loads."""
    from segkit.errors import PluginError

    try:
        info.load()
    except PluginError as e:
        return e
    return None


def add_info(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="a model's parameters, FLOPs and activation memory per image (CPU, random weights)",
        **examples(
            "segkit info unet --image-size 256",
            "segkit info timm_unet --encoder efficientnet_b0 --image-size 256",
            "segkit info timm_unet --encoder resnet18 "
            "--model-opt decoder_channels=[128,64,32,16,8] --image-size 128 --json",
        ),
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
