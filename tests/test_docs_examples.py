"""Every example in the docs (README.md, docs/**/*.md) still works as a user would copy it.

Fast tier: every ``segkit ...`` command of a ``sh``/``console`` block parses with the real
argument parser (and a ``run``/``lr-find`` one's settings pass ``RunConfig``'s checks, the
plugins' options included); every flag an inline ``segkit <command> --flag`` names exists;
every ```python block compiles, its imports resolve and it uses no name that neither it
nor an earlier block of its page defines. Slow tier: the examples cheap enough to run do
run (README's script, the models page's size error, the recipes page's albumentations
pipeline, the inference page's library calls on a tiny trained run). The ``examples:``
that end each command's ``--help`` are held to the same reading, and must be commands the
docs show.

test_docs.py holds the site's own checks (the CLI reference, links, ``mkdocs --strict``,
the ``segkit info`` outputs and the API page's notebook).
"""

from __future__ import annotations

import argparse
import ast
import builtins
import contextlib
import importlib
import importlib.util
import io
import itertools
import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md"] + sorted(
    p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts
)
#: A fenced block, also one indented under a list item.
FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```$", re.M | re.S)

#: Commands shown failing on purpose, with the message the page shows for them.
MEANT_TO_FAIL = {
    "run --epcohs 2": "unrecognized arguments: --epcohs 2 (--epcohs: did you mean --epochs?)",
}

#: Names a page's Python leaves to the reader (their own data or code), per page.
READERS_OWN = {
    "docs/reference/api.md": {"arrays"},  # "images and masks held as arrays"
}
#: Modules a page's Python imports that the reader writes (the plugin the page builds).
READERS_MODULES = {"segkit_mymodel"}


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _blocks(page: Path, *langs: str) -> list[tuple[int, str]]:
    """(line, text) of ``page``'s fenced blocks in one of ``langs``, dedented."""
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        if m.group(2) in langs:
            indent = len(m.group(1))
            body = "".join(line[indent:] for line in m.group(3).splitlines(keepends=True))
            out.append((text[: m.start()].count("\n") + 1, body))
    return out


def _shell_commands(body: str, console: bool) -> list[list[str]]:
    """The argv (after ``segkit``) of every ``segkit`` command in a shell block: lines
    joined at ``\\``, comments and redirections dropped, ``<placeholders>`` kept as words, split at ``&&``, ``;`` and ``|``,
    environment assignments and ``torchrun ... -m`` before it skipped."""
    found = []
    for line in re.sub(r"\\\n", " ", body).splitlines():
        if console:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        words, piece = [], []
        line = re.sub(r"<(\w+)>", r"\1", line)  # runs/unet-<time>/: a placeholder, no redirection
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        for word in [*lexer, ";"]:
            if word in ("&&", "||", ";", "|"):
                words.append(piece)
                piece = []
            else:
                piece.append(word)
        for piece in words:
            piece = [w for i, w in enumerate(piece) if w != ">" and piece[i - 1 : i] != [">"]]
            if "segkit" not in piece:
                continue
            at = piece.index("segkit")
            if all(re.match(r"^[A-Z_]+=", w) for w in piece[:at]) or piece[at - 1] == "-m":
                found.append(piece[at + 1 :])
    return found


def _doc_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for page in PAGES:
        for lang in ("sh", "console", "", "text"):  # output blocks: their `$ segkit` lines
            for line, body in _blocks(page, lang):
                for argv in _shell_commands(body, console=lang != "sh"):
                    commands.append((f"{_rel(page)}:{line}", argv))
    return commands


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, str]:
    """argparse's namespace and segkit's own message for unrecognized arguments (or "")."""
    from segkit.cli import _command_parser, _unrecognized

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args, extras = parser.parse_known_args(argv)
    except SystemExit as e:
        if e.code == 0:  # --version, --help: printed, and the command is done
            return argparse.Namespace(), ""
        raise AssertionError(err.getvalue().strip().splitlines()[-1]) from None
    return args, _unrecognized(_command_parser(parser, args), extras) if extras else ""


def test_every_segkit_command_in_the_docs_parses_and_its_settings_are_valid():
    from segkit.cli import build_parser
    from segkit.cli.args import settings_from_args
    from segkit.config import RunConfig

    parser = build_parser()
    commands = _doc_commands()
    assert len(commands) >= 100, len(commands)  # every page's, not a regex gone quiet
    broken, failed_as_shown = [], set()
    for where, argv in commands:
        shown = " ".join(argv)
        try:
            args, unrecognized = _parse(parser, argv)
        except AssertionError as e:
            broken.append(f"{where}: segkit {shown}: {e}")
            continue
        if shown in MEANT_TO_FAIL:
            assert unrecognized == MEANT_TO_FAIL[shown], (where, unrecognized)
            failed_as_shown.add(shown)
            continue
        if unrecognized:
            broken.append(f"{where}: segkit {shown}: {unrecognized}")
            continue
        # A file of the reader's (--config) or a run folder (--resume) is not here.
        if argv[0] in ("run", "lr-find") and not (args.config or getattr(args, "resume", 0)):
            try:
                RunConfig.from_dict(settings_from_args(args), check_options=True)
            except Exception as e:  # noqa: BLE001 - any error is the finding
                broken.append(f"{where}: segkit {shown}: {type(e).__name__}: {e}")
    assert failed_as_shown == set(MEANT_TO_FAIL), "a page lost its failing example"
    assert not broken, "\n".join(broken)


def _flags(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """Every (sub)command's flags, by its words after ``segkit``: "data check" -> {...}."""
    found: dict[str, set[str]] = {}

    def walk(p: argparse.ArgumentParser, words: str) -> None:
        found[words] = {s for a in p._actions for s in a.option_strings}
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{words} {name}".strip())

    walk(parser, "")
    return found


def test_every_flag_an_inline_segkit_command_names_exists():
    """Prose names commands with placeholders (`segkit run --seed S`, `segkit export CKPT
    --out FILE [--format onnx|torchscript]`): those are not parsed, but each flag is looked
    up in its command."""
    from segkit.cli import build_parser

    flags = _flags(build_parser())
    missing, seen = [], 0
    for page in PAGES:
        prose = FENCE.sub("", page.read_text())
        for span in re.findall(r"`segkit ([^`]+)`", prose):
            words = span.split()
            command = next(
                (c for c in sorted(flags, key=len, reverse=True) if c and span.startswith(c)), None
            )
            if command is None:
                if words[0].startswith("-"):
                    command = ""
                else:
                    continue  # `segkit COMMAND --help`, a printed line ("segkit dali: ...")
            for word in words:
                flag = word.strip("[]()").split("=", 1)[0]
                if flag.startswith("--"):
                    seen += 1
                    known = flags[command] | {"--help"}
                    if flag.split("/")[0] not in known:
                        missing.append(f"{_rel(page)}: `segkit {span}`: {flag}")
    assert seen >= 30, seen
    assert not missing, "\n".join(missing)


#: Flags with no example, and why none is needed.
NO_EXAMPLE = {
    "--help": "every command's; docs/reference/cli.md is each command's --help",
}
#: A command that takes another's flags: ``lr-find`` takes ``run``'s settings (training.md
#: says so), so ``run``'s example of a flag with the same help is ``lr-find``'s too.
SAME_FLAGS = {"lr-find": "run"}


def _command_of(argv: list[str], commands: list[str]) -> str:
    """The (sub)command a docs command runs: the longest of ``commands`` its words start with."""
    return max((c for c in commands if argv[: len(c.split())] == c.split()), key=len)


def test_every_flag_of_every_command_has_an_example_in_the_docs():
    """Each flag ``segkit <command> --help`` lists: an example is a ``segkit`` command of a
    code block (as the first test finds them) that gives the flag, by any of its names, to
    its own command."""
    from argparse import SUPPRESS

    from segkit.cli import build_parser

    actions: dict[str, list[argparse.Action]] = {}

    def walk(p: argparse.ArgumentParser, words: str) -> None:
        # A flag --help leaves out (help=SUPPRESS) is internal: study's own worker processes'.
        actions[words] = [a for a in p._actions if a.option_strings and a.help != SUPPRESS]
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{words} {name}".strip())

    walk(build_parser(), "")
    given: dict[str, set[str]] = {c: set() for c in actions}
    for _, argv in _doc_commands():
        words = [w.split("=", 1)[0] for w in argv if w.startswith("-")]
        given[_command_of(argv, list(actions))].update(words)

    def shown(command: str, action: argparse.Action) -> bool:
        if set(action.option_strings) & given[command]:
            return True
        other = SAME_FLAGS.get(command)
        return other is not None and any(
            a.option_strings == action.option_strings and a.help == action.help
            for a in actions[other]
            if shown(other, a)
        )

    def name(command: str, action: argparse.Action) -> str:
        flag = next((s for s in action.option_strings if s.startswith("--")), None)
        return " ".join(w for w in ("segkit", command, flag or action.option_strings[0]) if w)

    missing = [
        name(command, a)
        for command, acts in actions.items()
        for a in acts
        if not shown(command, a) and not set(a.option_strings) & set(NO_EXAMPLE)
    ]
    assert sum(map(len, actions.values())) >= 200  # every command's, not a walk gone quiet
    assert not missing, "no example in docs/ of:\n" + "\n".join(missing)


def test_every_public_name_of_segkit_has_a_python_example_in_the_docs():
    """``segkit.NAME`` or ``from segkit import NAME`` in a ```python block."""
    import segkit

    used: set[str] = set()
    for page in PAGES:
        for _, body in _blocks(page, "python"):
            for node in ast.walk(ast.parse(body)):
                if isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "segkit":
                    used.add(node.attr)
                elif isinstance(node, ast.ImportFrom) and node.module == "segkit":
                    used.update(a.name for a in node.names)
    missing = sorted(set(segkit.__all__) - used)
    assert not missing, f"no Python example in docs/ of segkit.{', segkit.'.join(missing)}"


class _Names(ast.NodeVisitor):
    """The names a module binds anywhere (imports, assignments, defs, arguments, loop and
    with targets) and those it reads."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.read: dict[str, int] = {}

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.read.setdefault(node.id, node.lineno)
        else:
            self.bound.add(node.id)

    def visit_alias(self, node: ast.alias) -> None:
        self.bound.add((node.asname or node.name).split(".")[0])

    def visit_arg(self, node: ast.arg) -> None:
        self.bound.add(node.arg)

    def _def(self, node: ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef) -> None:
        self.bound.add(node.name)
        self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _def

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)


def _check_import(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        modules = [(a.name, None) for a in node.names]
    else:
        modules = [(node.module or "", a.name) for a in node.names]
    problems = []
    for module, name in modules:
        if module.split(".")[0] in READERS_MODULES:
            continue
        if importlib.util.find_spec(module) is None:
            problems.append(f"no module {module}")
        elif name is not None and name != "*":
            if not hasattr(importlib.import_module(module), name):
                if importlib.util.find_spec(f"{module}.{name}") is None:
                    problems.append(f"{module} has no {name}")
    return problems


def test_every_python_block_compiles_imports_what_exists_and_defines_what_it_uses():
    problems, blocks = [], 0
    for page in PAGES:
        bound = set(dir(builtins)) | READERS_OWN.get(_rel(page), set())
        for line, body in _blocks(page, "python"):
            blocks += 1
            where = f"{_rel(page)}:{line}"
            try:
                tree = ast.parse(body, where)
            except SyntaxError as e:
                problems.append(f"{where}: {e}")
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    problems += [f"{where}: {p}" for p in _check_import(node)]
            names = _Names()
            names.visit(tree)
            bound |= names.bound  # a page's blocks run in order, as a notebook's cells
            problems += [
                f"{where}: {name!r} (block line {at}) is defined nowhere on the page before"
                for name, at in names.read.items()
                if name not in bound
            ]
    assert blocks >= 15, blocks
    assert not problems, "\n".join(problems)


def test_every_code_fence_is_on_a_line_of_its_own():
    # A closing fence with prose after it ("``` A K-class checkpoint ...") is no fence to
    # Markdown: the block runs on into the page and the examples after it are lost.
    bad = [
        f"{_rel(page)}:{n}: {line.strip()[:60]}"
        for page in PAGES
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if re.match(r"\s*```+\s+\S", line)
    ]
    assert not bad, "a code fence followed by text on its line:\n" + "\n".join(bad)


def test_the_block_finder_sees_indented_blocks_and_every_language():
    text = "a\n\n  ```text\n  x\n  ```\n\n```python\nimport os\n```\n"
    found = [(m.group(2), m.group(3)) for m in FENCE.finditer(text)]
    assert found == [("text", "  x\n"), ("python", "import os\n")]
    assert _shell_commands("segkit a -x && FOO=1 segkit b > out.json; tb # c\n", False) == [
        ["a", "-x"],
        ["b"],
    ]
    assert _shell_commands("$ torchrun -m segkit run \\\n  --epochs 2\noutput\n", True) == [
        ["run", "--epochs", "2"]
    ]
    commands = ["", "data", "data check", "run"]
    assert _command_of(["data", "check", "--workers", "2"], commands) == "data check"
    assert _command_of(["--version"], commands) == ""


def _run_blocks(page: Path, namespace: dict, edits: dict[str, str] | None = None) -> dict:
    """Run ``page``'s ```python blocks in order in one namespace, each ``edits`` key (a
    size or a path the page names) replaced once; returns the namespace."""
    blocks = [body for _, body in _blocks(page, "python")]
    for old, new in (edits or {}).items():
        assert sum(old in b for b in blocks) == 1, f"{_rel(page)} no longer has {old!r}"
        blocks = [b.replace(old, new) for b in blocks]
    for block in blocks:
        exec(compile(block, _rel(page), "exec"), namespace)
    return namespace


def _tiny(**settings):
    """A one-epoch run at 32 px in ./runs, no worker processes."""
    import segkit

    return segkit.train(
        segkit.RunConfig(image_size=32, epochs=1, batch_size=4, num_workers=0, **settings),
        quiet=True,
    )


@pytest.mark.slow
def test_the_readmes_script_runs_in_a_fresh_folder(tmp_path, monkeypatch):
    """As a script (its main guard true), in a folder with nothing of segkit's in it: one
    epoch instead of two, in this process."""
    monkeypatch.chdir(tmp_path)
    ns = _run_blocks(
        ROOT / "README.md",
        {"__name__": "__main__"},
        {"epochs=2)": "epochs=1, num_workers=0)"},
    )
    from PIL import Image

    assert ns["probs"].shape == Image.open(ns["photo"]).size[::-1]
    assert (ns["result"].run_dir / "best.pt").is_file()


@pytest.mark.slow
def test_the_models_pages_size_error_says_what_the_comment_says():
    import segkit

    with pytest.raises(segkit.ConfigError, match=r"not divisible by 32.*\(128, 128\)"):
        _run_blocks(DOCS / "models.md", {})


@pytest.mark.slow
def test_the_recipes_pages_albumentations_pipeline_and_recipe_files_build(tmp_path, monkeypatch):
    """The page's two recipe files (crops.toml, mine.toml) read by segkit's recipe loader,
    crops.toml by segkit.create_recipe as the page shows, the Compose saved as mine.json
    and the Recipe made from it in Python."""
    from segkit.recipes.files import load_recipe  # what --recipe FILE reads it with

    monkeypatch.chdir(tmp_path)
    for _, body in _blocks(DOCS / "recipes.md", "toml"):
        name = re.match(r"# (\S+\.toml):", body).group(1)
        (tmp_path / name).write_text(body)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ns = _run_blocks(DOCS / "recipes.md", {})
    (python,) = [b for _, b in _blocks(DOCS / "recipes.md", "python") if "create_recipe" in b]
    shown = [line[2:] for line in python.splitlines() if line.startswith("# ")]
    assert out.getvalue().splitlines() == shown
    assert ns["recipe"].name == "mine" and ns["crops"].name == "crops"
    for _, body in _blocks(DOCS / "recipes.md", "toml"):
        name = re.match(r"# (\S+\.toml):", body).group(1)
        recipe = load_recipe(tmp_path / name, image_size=64)
        assert recipe.train, name


@pytest.mark.slow
def test_the_inference_and_multiclass_pages_library_calls_run(tmp_path, monkeypatch, tiny_pets):
    """inference.md's Predictor, predict/evaluate/export/open_trained and multiclass.md's
    K-class prediction, on one-epoch runs at the paths the pages name."""
    import numpy as np
    from PIL import Image

    from segkit_datasets.synthetic import write_synthetic

    monkeypatch.chdir(tmp_path)
    _tiny(data=str(tiny_pets), out="runs", name="unet")
    collars = write_synthetic(tmp_path / "collars", count=8, seed=1, variant="collar")
    _tiny(data=str(collars), dataset="synthetic", out="runs", name="roads")
    (tmp_path / "photos").mkdir()
    rng = np.random.default_rng(0)
    for name in ("photos/a.jpg", "photos/b.png", "scan.png", "street.jpg", "photo.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 52, 3), np.uint8)).save(name)
    # mixed: new images and 3 of the run's (renamed), as the page's evaluate example has
    mixed = write_synthetic(tmp_path / "mixed", count=8, seed=11)
    seen = sorted((tiny_pets / "annotations" / "trainval.txt").read_text().split("\n"))[-3:]
    for line in seen:
        name = line.split()[0]
        shutil.copy(tiny_pets / "images" / f"{name}.jpg", mixed / "images" / f"seen_{name}.jpg")
        shutil.copy(
            tiny_pets / "annotations" / "trimaps" / f"{name}.png",
            mixed / "annotations" / "trimaps" / f"seen_{name}.png",
        )
        with open(mixed / "annotations" / "trainval.txt", "a") as f:
            f.write(f"seen_{name} 1 1 1\n")

    ns = _run_blocks(DOCS / "inference.md", {})  # photo.jpg: the ONNX Runtime block's
    assert ns["result"].overlap.seen == 3 and ns["result"].overlap.scored == 8
    assert ns["probs"].shape == (40, 52) and ns["mask"].shape == (40, 52)
    assert (tmp_path / "masks" / "a_mask.png").is_file() and "predicted 2" in ns["done"].summary()
    assert ns["exported"].path.name == "model.onnx" and ns["logits"].shape == (2, 1, 64, 64)
    ns = _run_blocks(DOCS / "multiclass.md", {})
    assert ns["probs"].shape == (3, 40, 52) and len(ns["predictor"].task.classes) == 3
    assert Image.open("street_mask.png").mode == "P"


def test_the_training_pages_error_examples_print_what_the_page_shows(tmp_path, monkeypatch, capsys):
    """Each `$ segkit run ...` of training.md's error examples, with the files the page
    describes (its study.yaml; one with image_size "64"; a study.toml with the three
    mistakes the message names), prints the page's lines (``...`` ends a shown line early)."""
    from segkit.cli import main

    monkeypatch.chdir(tmp_path)
    (yaml_block,) = [b for _, b in _blocks(DOCS / "training.md", "yaml")]
    files = {
        "study.yaml": yaml_block,
        'study.yaml # image_size: "64"': 'image_size: "64"\n',
        "study.toml": 'model = "timm_unet"\nlr_gama = 0.9\nepochs = 0\n'
        '[model_options]\nencodr = "resnet18"\n',
        # a colleague's run folder, its data on their machine
        "colleague/orig/config.json": '{"data": "/home/them/data/pets", "model": "unet"}\n',
    }
    checked = 0
    for _, body in _blocks(DOCS / "training.md", "console"):
        lines = body.splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("$ segkit run ") or "error" not in "".join(lines[i + 1 : i + 2]):
                continue
            shown = list(itertools.takewhile(lambda s: not s.startswith("$"), lines[i + 1 :]))
            command, _, comment = line[2:].partition("#")
            argv = shlex.split(command)[1:]
            if "--config" in argv:
                name = argv[argv.index("--config") + 1]
                bad = 'image_size: "64"' in comment  # the page's comment names the file
                (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / name).write_text(
                    files[f'{name} # image_size: "64"'] if bad else files[name]
                )
            try:
                main(argv)
            except SystemExit:
                pass  # argparse's own errors
            printed = capsys.readouterr().err.splitlines()[-len(shown) :]
            for want, got in zip(shown, printed, strict=True):
                if want.endswith("..."):
                    assert got.startswith(want[:-3]), (line, got)
                else:
                    assert got == want, line
            checked += 1
    assert checked == 5, checked


@pytest.mark.slow
def test_the_data_pages_check_of_the_default_set_is_what_segkit_prints(capsys):
    """docs/data.md's `segkit data check` on the generated set, line by line (the cache
    folder aside: the page shows ~/.cache's), and its segkit.check_data example."""
    from segkit.cli import main

    text = (DOCS / "data.md").read_text()
    shown = text.split("```\n$ segkit data check\n", 1)[1].split("```", 1)[0].splitlines()
    assert main(["data", "check"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert re.sub(r"\(.*/", "(", printed[0]) == re.sub(r"\(.*/", "(", shown[0])
    assert printed[1:] == shown[1:]
    ns = _run_blocks(DOCS / "data.md", {})  # the same report from segkit.check_data
    assert ns["report"].ok and ns["report"].to_dict()["splits"]["train"]["count"] == 270


# ------------------------------------------------------------ the examples of --help
# Each subcommand (nested ones such as ``data check`` included) ends its ``--help`` with an
# ``examples:`` epilog of 2-4 commands; each parses with segkit's own parser as the docs'
# commands do, is a command of its own subcommand, and is one the docs show word for word.
# ``segkit --help`` ends with three lines: a first run, a first check of one's own data,
# and where the docs are.


def _subcommands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """(words after ``segkit``, parser) of every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*words, name), sub
                yield from _subcommands(sub, (*words, name))


def _help_of(argv: list[str]) -> str:
    """What ``segkit ARGV --help`` prints."""
    from segkit.cli import build_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return out.getvalue()


def _examples(parser: argparse.ArgumentParser) -> list[list[str]]:
    """The argv (after ``segkit``) of each command in the parser's ``examples:`` epilog."""
    assert parser.epilog and parser.epilog.startswith("examples:\n"), parser.prog
    return _shell_commands(parser.epilog.split("\n", 1)[1], console=False)


def _check(parser: argparse.ArgumentParser, argv: list[str]) -> str:
    """What is wrong with ``segkit ARGV``, read as the docs' commands are, or ""."""
    from segkit.cli.args import settings_from_args
    from segkit.config import RunConfig

    try:
        args, unrecognized = _parse(parser, argv)
    except AssertionError as e:
        return str(e)
    if unrecognized:
        return unrecognized
    if argv[0] in ("run", "lr-find") and not (args.config or getattr(args, "resume", 0)):
        try:
            RunConfig.from_dict(settings_from_args(args), check_options=True)
        except Exception as e:  # noqa: BLE001 - any error is the finding
            return f"{type(e).__name__}: {e}"
    return ""


def test_every_subcommand_ends_its_help_with_examples_that_parse_and_the_docs_show():
    from segkit.cli import build_parser

    parser = build_parser()
    documented = {tuple(argv) for _, argv in _doc_commands()}
    commands = list(_subcommands(parser))
    assert len(commands) >= 15, [c for c, _ in commands]  # the walk found every command
    problems = []
    for words, sub in commands:
        name = "segkit " + " ".join(words)
        examples = _examples(sub)
        if not 2 <= len(examples) <= 4:
            problems.append(f"{name}: {len(examples)} examples, 2-4 wanted")
        for argv in examples:
            shown = "segkit " + " ".join(argv)
            if tuple(argv[: len(words)]) != words:
                problems.append(f"{name}: example of another command: {shown}")
            elif wrong := _check(parser, argv):
                problems.append(f"{name}: {shown}: {wrong}")
            elif tuple(argv) not in documented:
                problems.append(f"{name}: {shown}: not a command the docs show")
        help_text = _help_of(list(words))
        assert help_text.rstrip().endswith(_examples_tail(sub)), (name, help_text[-300:])
    assert not problems, "\n".join(problems)


def _examples_tail(parser: argparse.ArgumentParser) -> str:
    """The epilog's last line as ``--help`` prints it (indented, unwrapped)."""
    return parser.epilog.splitlines()[-1]


def test_the_examples_keep_their_lines_and_the_options_help_is_wrapped_as_before():
    text = _help_of(["info"])
    assert "\nexamples:\n  segkit info unet --image-size 256\n" in text
    # A long example stays on one line; an option's help is still wrapped to the width.
    assert (
        "  segkit info timm_unet --encoder resnet18 --model-opt "
        "decoder_channels=[128,64,32,16,8] --image-size 128 --json\n"
    ) in text
    text = _help_of(["run"])
    assert "--config FILE         settings from a TOML, YAML or JSON file (a run\n" in text


def test_segkit_help_ends_with_a_first_run_a_data_check_and_where_the_docs_are():
    from segkit.cli import build_parser

    parser = build_parser()
    lines = _help_of([]).rstrip().splitlines()[-3:]
    assert [line.split(":", 1)[0] for line in lines] == ["first run", "your data", "docs"]
    assert all(len(line) <= 80 for line in lines), lines
    documented = {tuple(argv) for _, argv in _doc_commands()}
    for line in lines[:2]:
        (argv,) = _shell_commands(line.split(":", 1)[1], console=False)
        assert _check(parser, argv) == "", line
        assert tuple(argv) in documented, line
    assert "docs/index.md" in lines[2] and "segkit COMMAND --help" in lines[2]
