"""Dataset rules (:data:`DATASET_RULES`) and :func:`check_dataset`.

A dataset plugin is ``factory(root, **options) -> Dataset`` (see
:class:`segkit.contracts.DatasetFactory`). The rules read a folder the caller provides;
a factory that can make its own data declares ``generate(root, count=..., seed=...) ->
Path`` (as ``segkit data synth`` expects), and then the kit generates a small set. The
layout capabilities (``recognizes``, ``layout``, ``audit``, ``declare_classes``,
``declare_ignore``) are checked when declared: the folder given is recognised and an empty
one is not, ``audit`` lists a mask deleted from a copy of the folder instead of raising,
and ``declare_ignore`` names the colour it is given (or says nothing) without writing.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkit.contracts import SPLITS, LayoutAudit, MaskSpec, Sample, capability
from segkit.data.reading import read_sample
from segkit.errors import ConfigError, DataError, first_line
from segkit.testing._rules import (
    SIGNATURE,
    UNKNOWN_OPTION,
    Broken,
    Rule,
    Target,
    demand,
    demands,
    expect_refusal,
    fits_contract,
    names,
    refuses_unknown_option,
    run_rule,
    run_rules,
    select,
    target,
)

#: What :func:`check_dataset` asks of ``generate``: ``count`` images from this ``seed``.
GENERATE_COUNT = 12
GENERATE_SEED = 0

#: Samples of each split :func:`segkit.data.reading.read_sample` reads in ``readable_samples``.
READ_PER_SPLIT = 3

#: The split name ``unknown_split`` asks for.
BOGUS_SPLIT = "bogus"


@dataclass
class DatasetCase:
    """A dataset plugin under test, the folder it reads, and what the rules share.

    Attributes:
        generate: The factory's ``generate`` attribute, or None if it declares none.
        scratch: An empty temporary folder the rules may write in.
    """

    target: Target
    root: Path
    options: dict[str, Any]
    generate: Any
    scratch: Path
    dataset: Any = None
    listed: dict[str, list[Sample]] = field(default_factory=dict)

    def make(self, root: Path | None = None) -> Any:
        """``factory(root, **options)``, the case's root by default."""
        return self.target.factory(self.root if root is None else root, **self.options)

    def shared(self) -> Any:
        """One instance, made on first use, for the rules that only read."""
        if self.dataset is None:
            self.dataset = self.make()
        return self.dataset

    def samples(self, split: str) -> list[Sample]:
        """``samples(split)`` of the shared instance, its types checked, once per split."""
        if split not in self.listed:
            self.listed[split] = _listed(self.shared(), split)
        return self.listed[split]


def _listed(ds: Any, split: str) -> list[Sample]:
    """``ds.samples(split)``, demanded to be a non-empty list of well-typed Samples."""
    out = ds.samples(split)
    call = f"samples({split!r})"
    demand(isinstance(out, list), f"{call} returned a {type(out).__name__}, not a list")
    demand(bool(out), f"{call} returned an empty list; an empty split raises DataError")
    for i, s in enumerate(out):
        demand(
            isinstance(s, Sample),
            f"{call}[{i}] is a {type(s).__name__}, not a segkit.contracts.Sample",
        )
        types = (type(s.id).__name__, type(s.image).__name__, type(s.mask).__name__)
        demand(
            isinstance(s.id, str) and isinstance(s.image, Path) and isinstance(s.mask, Path),
            f"{call}[{i}] holds id, image, mask of types {types}, expected str, Path, Path",
        )
    return out


def _digests(root: Path) -> dict[str, str]:
    """``relative path -> sha1`` of every file under ``root``."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _inside(path: Path, root: Path) -> str | None:
    """``path`` relative to ``root`` (posix), or None if it is not inside."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _generate(generate: Any, folder: Path) -> Path:
    """``generate(folder, count=GENERATE_COUNT, seed=GENERATE_SEED)``, the folder it returns."""
    demand(
        callable(generate), f"the factory's generate is a {type(generate).__name__}, not callable"
    )
    out = generate(folder, count=GENERATE_COUNT, seed=GENERATE_SEED)
    demand(
        isinstance(out, Path),
        f"generate() returned a {type(out).__name__}, not the folder it wrote as a pathlib.Path",
    )
    return out


# ----------------------------------------------------------------------------- rules


def returns_dataset(case: DatasetCase) -> None:
    ds = case.shared()
    root = getattr(ds, "root", None)
    demand(isinstance(root, Path), f"root is a {type(root).__name__}, not a pathlib.Path")
    demand(root.is_dir(), f"root {root} is not a folder")
    spec = getattr(ds, "mask_spec", None)
    demand(
        isinstance(spec, MaskSpec),
        f"mask_spec is a {type(spec).__name__}, not a segkit.contracts.MaskSpec",
    )
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in spec.allowed)
    demand(
        isinstance(spec.allowed, tuple) and bool(spec.allowed) and ints,
        f"mask_spec.allowed is {spec.allowed!r}; expected a non-empty tuple of ints",
    )
    demand(
        spec.background in spec.allowed,
        f"mask_spec.background {spec.background!r} is not one of allowed {spec.allowed}",
    )
    demand(callable(getattr(ds, "samples", None)), f"a {type(ds).__name__} has no samples()")


def _files_exist(split: str, samples: list[Sample]) -> None:
    files = [
        (s, what, path) for s in samples for what, path in (("image", s.image), ("mask", s.mask))
    ]
    missing = [(s, what, path) for s, what, path in files if not path.is_file()]
    if missing:
        s, what, path = missing[0]
        more = f" (and {len(missing) - 1} more missing files)" if len(missing) > 1 else ""
        raise Broken(f"{split} sample {s.id!r}: {what} file {path} not found{more}")


def _disjoint(listed: Mapping[str, list[Sample]]) -> None:
    for a, b in itertools.combinations(SPLITS, 2):
        both = sorted({s.id for s in listed[a]} & {s.id for s in listed[b]})
        demand(not both, f"ids {names(both)} are in both {a} and {b}")
        images = {s.image.resolve(): s.id for s in listed[a]}
        for s in listed[b]:
            twin = images.get(s.image.resolve())
            demand(
                twin is None,
                f"{a} sample {twin!r} and {b} sample {s.id!r} read the same image {s.image}",
            )


def _same(first: list[Sample], again: list[Sample], what: str) -> None:
    if again != first:
        how = "in another order" if set(again) == set(first) else "other samples"
        raise Broken(f"{what} gave {how}")


def splits(case: DatasetCase) -> None:
    listed = {split: case.samples(split) for split in SPLITS}
    for split, samples in listed.items():
        _files_exist(split, samples)
        repeated = sorted(i for i, n in Counter(s.id for s in samples).items() if n > 1)
        demand(not repeated, f"{split} lists ids {names(repeated)} more than once")
    _disjoint(listed)
    other = case.make()
    for split, samples in listed.items():
        _same(samples, case.shared().samples(split), f"a second samples({split!r}) call")
        _same(samples, other.samples(split), f"samples({split!r}) of a second instance")


def unknown_split(case: DatasetCase) -> None:
    ds = case.shared()
    call = f"samples({BOGUS_SPLIT!r})"
    expect_refusal(
        lambda: ds.samples(BOGUS_SPLIT),
        (ConfigError,),
        naming=BOGUS_SPLIT,
        unnamed=f"the ConfigError does not name the split {BOGUS_SPLIT!r}",
        accepted=f"{call} returned instead of raising; a misspelt split must not pass",
        other=call,
    )


def readable_samples(case: DatasetCase) -> None:

    spec = case.shared().mask_spec
    for split in SPLITS:
        for s in case.samples(split)[:READ_PER_SPLIT]:
            try:
                read_sample(s, spec)
            except DataError as e:
                raise Broken(f"{split} sample {s.id!r}: {first_line(e)}") from None


def missing_root(case: DatasetCase) -> None:
    if case.generate is not None:
        return  # it makes its data in whatever folder it is given
    missing = case.scratch / "no-such-dataset"
    expect_refusal(
        lambda: case.make(missing),
        (DataError,),
        naming=str(missing),
        unnamed=f"the DataError does not name the folder {missing}",
        accepted=f"factory({str(missing)!r}) returned although the folder does not exist",
        other=f"factory({str(missing)!r})",
    )


def generate(case: DatasetCase) -> None:
    if case.generate is None:
        return  # the factory declares no generate()
    call = f"generate(root, count={GENERATE_COUNT}, seed={GENERATE_SEED})"
    first = _generate(case.generate, case.scratch / "generated-a")
    written = _digests(first)
    demand(bool(written), f"{call} wrote no files")
    again = _changed(written, _digests(_generate(case.generate, case.scratch / "generated-b")))
    demand(not again, f"two runs of {call} wrote different files: {names(again)}")
    ds = case.make(first)
    listed = {split: _listed(ds, split) for split in SPLITS}
    changed = _changed(written, _digests(first))
    demand(
        not changed,
        f"factory(root, **options) did not read the folder {call} wrote but rewrote it: "
        f"{len(changed)} files changed, added or removed, e.g. {names(changed, 3)}",
    )
    for split, samples in listed.items():
        for sample, path in ((s, p) for s in samples for p in (s.image, s.mask)):
            demand(
                _inside(path, first) in written,
                f"{split} sample {sample.id!r} reads {path}, not a file {call} wrote",
            )


def recognizes(case: DatasetCase) -> None:
    found = capability("datasets", case.target.plugin, "recognizes")
    if found is None:
        return  # the factory declares no recognizes()
    layout = capability("datasets", case.target.plugin, "layout")
    demand(
        isinstance(layout, str) and bool(layout.strip()),
        f"declares recognizes() but its layout is {layout!r}; declare layout, one line "
        "saying how the files are laid out (shown when a folder is in no layout)",
    )
    for folder, expected in (
        (case.root, True),
        (case.scratch / "empty-folder", False),
        (case.scratch / "no-such-folder", False),
    ):
        if folder.name == "empty-folder":
            folder.mkdir(exist_ok=True)
        try:
            answer = found(folder)
        except Exception as e:  # noqa: BLE001 -- the rule reports what was raised
            raise Broken(
                f"recognizes({str(folder)!r}) raised {type(e).__name__}: {first_line(e)}; "
                "it answers from names alone and never raises"
            ) from None
        demand(
            isinstance(answer, bool),
            f"recognizes({str(folder)!r}) returned a {type(answer).__name__}, not a bool",
        )
        what = "the folder in its layout" if expected else "an empty or missing folder"
        demand(answer is expected, f"recognizes() of {what} {folder} returned {answer}")


def audit(case: DatasetCase) -> None:
    found = capability("datasets", case.target.plugin, "audit")
    if found is None:
        return  # the factory declares no audit()
    call = "audit(root, **options)"
    clean = found(case.root, **case.options)
    demand(
        isinstance(clean, LayoutAudit),
        f"{call} returned a {type(clean).__name__}, not a segkit.contracts.LayoutAudit",
    )
    demand(
        not clean.problems,
        f"{call} of a folder the factory reads reports problems: "
        f"{names([m for _, m in clean.problems], 2)}",
    )
    demand(
        clean.mask_spec == case.shared().mask_spec,
        f"{call}'s mask_spec {clean.mask_spec} is not the dataset's {case.shared().mask_spec}",
    )
    for split in SPLITS:
        _same(case.samples(split), clean.samples(split), f"{call}.samples({split!r})")
    # A copy of the folder with one train mask deleted: listed, with the others read.
    victim = case.samples("train")[0]
    where = _inside(victim.mask, case.root)
    if where is None:
        return  # a mask outside the folder (a generated cache): nothing to delete safely
    copy = case.scratch / "audit-copy"
    shutil.copytree(case.root, copy)
    (copy / where).unlink()
    try:
        broken = found(copy, **case.options)
    except Exception as e:  # noqa: BLE001 -- the rule reports what was raised
        raise Broken(
            f"{call} of a folder missing one mask ({where}) raised {type(e).__name__}: "
            f"{first_line(e)}; it lists the problem instead"
        ) from None
    named = [m for _, m in broken.problems if Path(where).name in m]
    demand(
        bool(named),
        f"{call} of a folder missing {where} does not name the file in its problems "
        f"({names([m for _, m in broken.problems], 2)})",
    )
    left = sum(len(broken.samples(split)) for split in SPLITS)
    total = sum(len(case.samples(split)) for split in SPLITS)
    demand(
        left == total - 1,
        f"{call} of a folder missing one mask pairs {left} samples, not the other {total - 1}",
    )


def declare_classes(case: DatasetCase) -> None:
    found = capability("datasets", case.target.plugin, "declare_classes")
    if found is None:
        return  # the factory declares no declare_classes()
    for palette in (None, [(0, 0, 0), (255, 0, 0), (0, 0, 255)]):
        words = found(case.root, ["background", "cell", "nucleus"], palette)
        demand(
            isinstance(words, str) and "nucleus" in words,
            f"declare_classes(root, ['background', 'cell', 'nucleus'], {palette}) returned "
            f"{words!r}; expected the words that declare them, naming each class",
        )


#: The colour ``declare_ignore`` is asked to declare: three distinct values, so that words
#: naming it can be told from words naming another colour (or its values in another order).
IGNORE_COLOUR = (201, 102, 53)


def declare_ignore(case: DatasetCase) -> None:
    found = capability("datasets", case.target.plugin, "declare_ignore")
    if found is None:
        return  # the factory declares no declare_ignore()
    r, g, b = IGNORE_COLOUR
    call = f"declare_ignore(root, {IGNORE_COLOUR}, **options)"
    before = _digests(case.root)
    try:
        words = found(case.root, IGNORE_COLOUR, **case.options)
    except Exception as e:  # noqa: BLE001 -- the rule reports what was raised
        raise Broken(
            f"{call} of a folder the factory reads raised {type(e).__name__}: "
            f'{first_line(e)}; it returns the words that declare the colour, or "" where '
            "the layout reads no file that can"
        ) from None
    changed = _changed(before, _digests(case.root))
    demand(
        not changed,
        f"{call} changed {names(changed, 3)} in the folder; it returns words to print (the "
        "user makes the change), and writes nothing",
    )
    demand(
        isinstance(words, str),
        f'{call} returned a {type(words).__name__}, not a str ("" where the layout reads '
        "no file that declares the colour of ignored pixels)",
    )
    demand(
        not words or re.search(rf"(?<!\d){r}\D{{1,4}}{g}\D{{1,4}}{b}(?!\d)", words) is not None,
        f"{call} returned {words!r}; expected words that name the colour ({r} {g} {b}, in "
        'this order), or ""',
    )


def unknown_option(case: DatasetCase) -> None:
    refuses_unknown_option(lambda **extra: case.target.factory(case.root, **case.options, **extra))


#: The dataset rules, in the order they run.
RULES: dict[str, Rule[DatasetCase]] = {
    "signature": Rule(SIGNATURE, fits_contract),
    "returns_dataset": Rule(
        "factory(root, **options) returns an object with root (a pathlib.Path to a folder), "
        "mask_spec (a segkit.contracts.MaskSpec whose allowed values are ints and include "
        "background) and samples(split)",
        returns_dataset,
    ),
    "splits": Rule(
        "samples(split) of train, valid and test is a non-empty list of "
        "segkit.contracts.Sample whose image and mask files exist; ids are unique within a "
        "split and no id or image file is in two splits (no test image leaks into training); "
        "every call and every instance give the same samples in the same order",
        splits,
    ),
    "unknown_split": Rule(
        "samples() of an unknown split raises segkit.errors.ConfigError naming it",
        unknown_split,
    ),
    "readable_samples": Rule(
        f"segkit.data.reading.read_sample reads the first {READ_PER_SPLIT} samples of each split: "
        "masks hold only mask_spec.allowed values and have their image's size",
        readable_samples,
    ),
    "missing_root": Rule(
        "factory(a folder that does not exist) raises segkit.errors.DataError naming the "
        "folder; a factory that declares generate() is exempt",
        missing_root,
    ),
    "generate": Rule(
        "if the factory declares generate(root, count=..., seed=...) -> Path: the same seed "
        "writes identical files, and factory(root, **options) reads the folder it wrote, "
        "unchanged",
        generate,
    ),
    "recognizes": Rule(
        "if the factory declares recognizes(root) -> bool: it declares layout (one line "
        "of text) too, and recognizes() is True for the folder in its layout, False for an "
        "empty or missing folder, and never raises",
        recognizes,
    ),
    "audit": Rule(
        "if the factory declares audit(root, **options) -> LayoutAudit: for a folder it "
        "reads, no problems, its mask_spec and the same samples; for a copy missing one "
        "train mask, a problem naming the file (not an exception) and every other sample",
        audit,
    ),
    "declare_classes": Rule(
        "if the factory declares declare_classes(root, classes, palette) -> str: the words "
        "name every class, with and without a palette",
        declare_classes,
    ),
    "declare_ignore": Rule(
        "if the factory declares declare_ignore(root, colour, **options) -> str: for the "
        "folder it reads, with its options, a str that names the colour's three values in "
        'order, or "" where the layout reads no file that declares it; it never raises for '
        "that folder and writes nothing in it",
        declare_ignore,
    ),
    "unknown_option": Rule(UNKNOWN_OPTION, unknown_option),
}

#: Dataset rules, in the order they run: name -> what the rule demands.
DATASET_RULES: dict[str, str] = demands(RULES)


def _generated_root(tgt: Target, generate: Any, folder: Path) -> Path:
    """The data to check when no root is given; a failure breaks rule 'generate'."""
    made: list[Path] = []
    run_rule(
        tgt, "generate", RULES["generate"].demand, lambda: made.append(_generate(generate, folder))
    )
    return made[0]


def check_dataset(
    dataset: str | Callable[..., Any],
    *,
    root: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    rules: Iterable[str] | None = None,
    name: str | None = None,
) -> None:
    """Check a dataset plugin against :data:`DATASET_RULES`.

    Args:
        dataset: A registered dataset name (``"folder"``) or a factory (or class)
            ``factory(root, **options) -> Dataset``.
        root: The dataset folder to check: a few images in the dataset's layout, written
            by your test. ``None`` only for a factory that declares ``generate(root,
            count=..., seed=...)``: the kit then generates ``count=12`` images with
            ``seed=0`` into a temporary folder.
        options: Extra keyword arguments for the factory.
        rules: Names of the rules to run (default: all, in :data:`DATASET_RULES` order).
        name: How to call a factory in messages.

    Raises:
        ConformanceError: A rule is broken; the message names the plugin and the rule.
        ValueError: An unknown rule, or no ``root`` for a factory that cannot generate.
    """
    tgt = target("datasets", dataset, name)
    selected = select(RULES, rules, "dataset")
    make_data = capability("datasets", tgt.plugin, "generate")
    if root is None and make_data is None:
        raise ValueError(
            f"{tgt.label} reads a folder: pass root=, a dataset folder in its layout (a few "
            "images your test writes); only a factory that declares "
            "generate(root, count=..., seed=...) can be checked without one"
        )
    with tempfile.TemporaryDirectory(prefix="segkit-testing-") as tmp:
        scratch = Path(tmp).resolve()  # as a dataset that resolves paths names them
        if root is None:
            root = _generated_root(tgt, make_data, scratch / "data")
        case = DatasetCase(tgt, Path(root), dict(options or {}), make_data, scratch)
        run_rules(RULES, selected, case)
