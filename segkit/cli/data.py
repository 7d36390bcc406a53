"""``segkit data synth|fetch|check``: make, download or check a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segkit.cli.args import examples
from segkit.errors import ConfigError


def add_data(sub: Any) -> None:
    p = sub.add_parser(
        "data",
        help="make, download or check datasets",
        **examples(
            "segkit data synth /tmp/pets --count 400 --seed 0",
            "segkit data fetch ~/data/oxford-iiit-pet",
            "segkit data check ~/data/my-cells",
        ),
    )
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    _add_synth(data)
    _add_fetch(data)
    _add_check(data)


def _add_synth(data: Any) -> None:
    from segkit.config import DEFAULTS

    s = data.add_parser(
        "synth",
        help="generate a synthetic dataset (default: pets in the oxford_pet layout)",
        **examples(
            "segkit data synth /tmp/pets --count 400 --seed 0",
            "segkit data synth /tmp/collars --dataset synthetic --variant collar --count 200",
            "segkit data synth data/vessels --variant vessels --size 1500x1100 --count 40",
        ),
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


def _add_fetch(data: Any) -> None:
    from segkit.config import DEFAULTS

    f = data.add_parser(
        "fetch",
        help="download and unpack a dataset's official archives (needs a network)",
        **examples(
            "segkit data fetch ~/data/oxford-iiit-pet",
            "segkit data fetch ~/data/oxford-iiit-pet --dataset oxford_pet "
            "--url file:///mnt/shared/pets-archives",
        ),
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


def _add_check(data: Any) -> None:
    from segkit.config import DEFAULTS

    c = data.add_parser(
        "check",
        help="read every sample once: sizes, formats, mask values, foreground, duplicates, "
        "unreadable files; suggests --image-size and pos_weight (exit 1 if a run would fail)",
        **examples(
            "segkit data check ~/data/my-cells",
            "segkit data check --dataset folder --data ~/data/my-cells --json",
            "segkit data check ~/data/roads --dataset-opt ignore_color=0,0,255",
        ),
    )
    c.add_argument(
        "folder",
        nargs="?",
        metavar="DIR",
        default=None,
        help="the dataset folder, as --data (segkit data check ~/data/cells)",
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
    from segkit.errors import ConfigError

    if args.folder and args.data and args.folder != args.data:
        raise ConfigError(
            f"segkit data check {args.folder} --data {args.data}: two folders; give one"
        )
    # The dataset a `segkit run` with the same --data/--dataset/--dataset-opt would read.
    config = RunConfig(
        data=args.folder or args.data,
        dataset=args.dataset,
        dataset_options=parse_options(args.dataset_opt, "--dataset-opt"),
    )
    report = check_configured(config, args.workers)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return 0 if report.ok else 1
