"""The documentation site: the CLI reference covers every flag, links resolve, and (slow
tier, so CI) ``mkdocs build --strict`` passes.

The CLI reference is generated at build time by a mkdocs hook (docs/hooks/cli_reference.py)
from :func:`segkit.cli.build_parser`; these tests walk the parser on their own, so a flag
the generator failed to render is caught here rather than trusted to the generator.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HOOK = DOCS / "hooks" / "cli_reference.py"


def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("segkit_docs_cli_reference", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _walk(parser: argparse.ArgumentParser, prefix: str = "segkit"):
    """(command, parser) for every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _walk(sub, f"{prefix} {name}")


def _sections(page: str) -> dict[str, str]:
    """The generated page cut at its ``## `segkit ...``` headings: command -> its text."""
    parts = re.split(r"^## `(segkit[^`]*)`\s*$", page, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _mkdocs_config() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def _nav_pages(nav) -> list[str]:
    pages: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            pages += _nav_pages(value)
        else:
            pages.append(value)
    return pages


def test_every_flag_of_every_subcommand_is_in_the_cli_reference():
    from segkit.cli import build_parser

    page = _hook().render()
    sections = _sections(page)
    commands = list(_walk(build_parser()))
    assert len(commands) >= 13, [c for c, _ in commands]  # run ... preview, data synth/fetch/check
    missing = []
    for command, sub in commands:
        assert command in sections, f"{command}: no section in the CLI reference"
        for action in sub._actions:
            if action.help is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue  # hidden from --help (internal), and -h itself
            for flag in action.option_strings:
                if f"`{flag}`" not in sections[command]:
                    missing.append(f"{command} {flag}")
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                name = action.metavar or action.dest
                if f"`{name}`" not in sections[command]:
                    missing.append(f"{command} {name} (positional)")
    assert not missing, f"flags missing from docs/reference/cli.md as generated: {missing}"


def test_every_configuration_key_is_in_the_cli_reference_with_its_default():
    from segkit.config import RunConfig

    keys = _hook().render_config_keys()
    for f in dataclasses.fields(RunConfig):
        row = next((line for line in keys.splitlines() if line.startswith(f"| `{f.name}` |")), None)
        assert row is not None, f"config key {f.name} missing"
        if isinstance(f.default, bool):
            assert f"`{str(f.default).lower()}`" in row
        elif f.default not in (None, dataclasses.MISSING):
            assert repr(f.default).replace("'", '"') in row, (f.name, row)
    # The defaults the issue found stale in the old README, as the code has them.
    assert re.search(r"^\| `loss` \|[^\n]*`\"auto\"`", keys, flags=re.M)
    monitor = next(line for line in keys.splitlines() if line.startswith("| `monitor` |"))
    for value in ("auto", "valid_dice", "valid_iou", "valid_miou", "valid_mdice", "valid_loss"):
        assert f"`{value}`" in monitor


def test_the_cli_page_is_generated_by_the_configured_hook():
    hook = _hook()
    source = (DOCS / hook.PAGE).read_text()
    assert hook.MARKER in source, f"docs/{hook.PAGE} lost the line the hook replaces"
    config = _mkdocs_config()
    assert "docs/hooks/cli_reference.py" in config["hooks"]
    assert hook.PAGE in _nav_pages(config["nav"])


def test_every_docs_page_is_in_the_nav_and_every_nav_page_exists():
    config = _mkdocs_config()
    nav = set(_nav_pages(config["nav"]))
    pages = {
        str(p.relative_to(DOCS))
        for p in DOCS.rglob("*.md")
        if "hooks" not in p.relative_to(DOCS).parts
    }
    assert not nav - pages, f"nav names pages that do not exist: {sorted(nav - pages)}"
    assert not pages - nav, f"pages no menu reaches: {sorted(pages - nav)}"


def _slug(heading: str) -> str:
    """mkdocs' (Python-Markdown toc) anchor of a heading."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[-\s]+", "-", text).strip("-")


def test_readme_links_into_docs_resolve():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs/)[^)\s]+)\)", readme)
    assert len(links) >= 10, links  # the map of the docs, the picture
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        if not target.is_file():
            broken.append(link)
        elif anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), flags=re.M)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(link)
    assert not broken, f"README links that do not resolve: {broken}"


def test_readme_names_every_built_in_plugin():
    """The README's table of built-ins lists every entry point segkit registers."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| kind | plugins |") :].split("\n\n", 1)[0]
    missing = [
        f"{group} {name}"
        for group, entries in project["project"]["entry-points"].items()
        for name in entries
        if f"`{name}`" not in table
    ]
    assert not missing, f"built-in plugins missing from README's table: {missing}"


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    """What CI checks: the site builds with no warning (broken link or anchor, a page
    outside the nav, a docstring mkdocstrings cannot render, the hook failing)."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is not installed: pip install -e '.[docs]' (make setup does)")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cli = (site / "reference" / "cli" / "index.html").read_text()
    assert "--skip-bad-samples" in cli and "Configuration file keys" in cli
    assert "segkit-cli-reference" not in cli  # the marker was replaced
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "create_model" in api and "Predictor" in api


def _console_blocks(page: str, command: str) -> list[tuple[list[str], list[str]]]:
    """``(argv, output lines)`` of every ``$ segkit <command> ...`` in ``page``'s console
    blocks: the lines up to the next ``$`` or the block's end."""
    text = (ROOT / "docs" / page).read_text()
    out = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if line.startswith(f"$ segkit {command} "):
                end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("$")), None)
                out.append((shlex.split(line[2:])[1:], lines[i + 1 : end]))
    return out


@pytest.mark.slow
def test_the_info_outputs_in_the_models_page_are_what_segkit_info_prints(capsys):
    """The numbers of docs/models.md's `segkit info` examples drift when a model changes
    (a head's kernel, a decoder's width): each is run and compared line by line."""
    from segkit.cli import main

    blocks = _console_blocks("models.md", "info")
    assert len(blocks) >= 3
    for argv, shown in blocks:
        assert main(argv) == 0
        printed = capsys.readouterr().out.splitlines()
        assert printed == shown, f"segkit {' '.join(argv)}"


def _python_blocks(page: Path, heading: str) -> list[str]:
    """The ```python blocks of ``page``'s section ``## heading`` (up to the next ``## ``)."""
    text = page.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.M | re.S)


@pytest.mark.slow
def test_the_api_pages_notebook_examples_run(tmp_path, monkeypatch):
    """The API page's own model, loss and dataset, trained, resumed, read back and
    predicted with, as written; only the epochs are cut and the loader runs in this
    process (pytest is no script that worker processes could re-import)."""
    import numpy as np
    from PIL import Image

    from segkit import registry

    monkeypatch.setattr(registry, "_LOCAL", {})
    monkeypatch.setattr(registry, "_default", None)
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks(
        DOCS / "reference" / "api.md", "In a notebook: your own model, loss and data"
    )
    assert len(blocks) == 4
    edits = {
        "keep_last=True,": "keep_last=True, num_workers=0,",
        "image_size=64, epochs=30)": "image_size=64, epochs=1, num_workers=0, name='arrays')",
    }
    for old, new in edits.items():
        assert sum(old in b for b in blocks) == 1, f"the page no longer has {old!r}"
        blocks = [b.replace(old, new) for b in blocks]
    (tmp_path / "cells" / "images").mkdir(parents=True)
    (tmp_path / "cells" / "masks").mkdir()
    rng = np.random.default_rng(0)
    arrays = []
    for _ in range(100):
        mask = np.zeros((32, 32), np.uint8)
        y, x = rng.integers(0, 20, 2)
        mask[y : y + 12, x : x + 12] = 255
        image = np.clip(rng.normal(80, 20, (32, 32, 3)) + mask[..., None] / 2, 0, 255)
        arrays.append((image.astype(np.uint8), mask))
    for i, (image, mask) in enumerate(arrays):
        Image.fromarray(image).save(tmp_path / f"cells/images/cell{i:03d}.png")
        Image.fromarray(mask).save(tmp_path / f"cells/masks/cell{i:03d}.png")

    namespace: dict = {"arrays": arrays[:20]}
    for block in blocks:
        exec(compile(block, "docs/reference/api.md", "exec"), namespace)
    assert namespace["run"].config.model == "tiny_net"
    assert namespace["run"].summary["epochs_run"] == 4
    assert namespace["probs"].shape == (32, 32)
    assert namespace["predictor"].predict(arrays[0][0]).shape == (32, 32)
    assert (tmp_path / "runs" / "arrays" / "summary.json").is_file()


def test_the_api_pages_typo_example_prints_what_the_page_shows(capsys):
    """The message a typo in a RunConfig gives, as the API page shows it."""
    import segkit

    page = DOCS / "reference" / "api.md"
    heading = "A typo or a bad value: the message names what you wrote"
    (block,) = _python_blocks(page, heading)
    section = page.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    (shown,) = re.findall(r"^```text\n(.*?)^```$", section, flags=re.M | re.S)
    exec(compile(block, "docs/reference/api.md", "exec"), {"segkit": segkit})
    assert capsys.readouterr().out == shown


@pytest.mark.slow
def test_the_api_pages_error_and_task_examples_print_what_the_page_shows(
    tmp_path, monkeypatch, capsys
):
    """Each error the page catches, in a fresh registry and a folder without runs, prints
    the page's line (``...`` ends a shown line early; the home folder is the page's
    /home/me); the Task example prints its commented lines."""
    import segkit
    from segkit import registry

    monkeypatch.setattr(registry, "_LOCAL", {})
    monkeypatch.setattr(registry, "_default", None)
    monkeypatch.chdir(tmp_path)
    page = DOCS / "reference" / "api.md"
    heading = "The build path, loader workers and errors"
    errors, task = _python_blocks(page, heading)
    section = page.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    (shown,) = re.findall(r"^```text\n(.*?)^```$", section, flags=re.M | re.S)
    errors = errors.replace('"runs/unet-old', f'"{tmp_path}/runs/unet-old')  # not the reader's
    exec(compile(errors, str(page), "exec"), {"segkit": segkit, "torch": __import__("torch")})
    printed = capsys.readouterr().out.replace(str(Path.home()), "/home/me")
    printed = printed.replace(f"{tmp_path}/", "").splitlines()
    assert len(printed) == len(shown.splitlines())
    for want, got in zip(shown.splitlines(), printed, strict=True):
        assert got.startswith(want[:-3]) if want.endswith("...") else got == want, (want, got)
    exec(compile(task, str(page), "exec"), {"segkit": segkit})
    comments = [line[2:] for line in task.splitlines() if line.startswith("# ")]
    assert capsys.readouterr().out.splitlines() == comments


#: A Markdown link or image outside code: ``[text](target)``; the target up to a space.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
#: Fenced blocks, whose lines are neither links nor headings.
_FENCED = re.compile(r"^( *)```.*?^\1```$", re.M | re.S)
#: Fenced blocks and inline code, whose brackets are not links.
_CODE = re.compile(_FENCED.pattern + r"|`[^`\n]*`", re.M | re.S)


def _anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (mkdocs' toc slugs, and ``{#id}`` attributes); the
    CLI reference's as the hook generates them at build time."""
    text = page.read_text()
    if page == DOCS / _hook().PAGE:
        text = text.replace(_hook().MARKER, _hook().render())
    text = _FENCED.sub("", text)
    headings = re.findall(r"^#+ (.+?)\s*$", text, flags=re.M)
    slugs = {_slug(re.sub(r"\s*\{#[^}]*\}$", "", h)) for h in headings}
    return slugs | set(re.findall(r"\{#([\w-]+)\}", text))


def test_every_relative_link_of_the_readme_changelog_and_docs_resolves():
    """A file link reaches a file, an anchor a heading of its page; the README and
    CHANGELOG at the root as the docs pages (the strict site build checks the pages too,
    in the slow tier; this is the fast tier's)."""
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md"] + sorted(
        p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts
    )
    broken, seen = [], 0
    for page in pages:
        for target in _LINK.findall(_CODE.sub("", page.read_text())):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            seen += 1
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target}: no such heading")
    assert seen >= 50, seen  # every page's links, not a regex gone quiet
    assert not broken, "\n".join(broken)


def test_the_readme_and_the_home_page_map_every_docs_page():
    """README's "Documentation" table and docs/index.md's "Where to find things" name every
    page of the site's menu (the demo study's report, a page the studies guide shows, aside)."""
    pages = set(_nav_pages(_mkdocs_config()["nav"])) - {"index.md", "study-demo/comparison.md"}
    readme = (ROOT / "README.md").read_text()
    readme_map = readme[readme.index("## Documentation") :].split("\n## ", 1)[0]
    home = (DOCS / "index.md").read_text()
    home_map = home[home.index("## Where to find things") :]
    missing = [f"README.md: {p}" for p in sorted(pages) if f"(docs/{p})" not in readme_map]
    missing += [f"docs/index.md: {p}" for p in sorted(pages) if f"]({p})" not in home_map]
    assert not missing, "pages the map does not name:\n" + "\n".join(missing)
