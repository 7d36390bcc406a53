"""The registry: discovery without import, isolation of broken plugins, duplicates, hints."""

from __future__ import annotations

import re
import sys

import pytest
from helpers import make_distribution

from segkit.errors import ConfigError, DuplicatePluginError, PluginLoadError, PluginNotFoundError
from segkit.registry import GROUPS, Registry, list_plugins

BUILTINS = {
    "models": {"unet", "resnet34_unet"},
    "losses": {"bce_dice", "bce", "dice"},
    "recipes": {"type1", "type2", "type3"},
    "loaders": {"albumentations"},
    "datasets": {"oxford_pet", "folder", "synthetic"},
    "ops": {"AlbumentationsCompose"},
}


def test_builtins_are_registered_with_their_distribution():
    reg = Registry()
    for kind, names in BUILTINS.items():
        plugins = reg.plugins(kind)
        assert names <= set(plugins), kind
        for name in names:
            assert plugins[name].distribution == "segkit"


def test_listing_imports_no_plugin(site):
    make_distribution(
        site,
        "fake-lazy",
        {"segkit.models": {"lazy": "fake_lazy:create"}},
        {"fake_lazy": "raise RuntimeError('imported too early')\n"},
    )
    reg = Registry(path=[str(site)])
    assert reg.names("models") == ["lazy"]
    assert "fake_lazy" not in sys.modules


def test_third_party_model_is_discovered_and_created(site):
    make_distribution(
        site,
        "fake-tiny",
        {"segkit.models": {"tiny": "fake_tiny:create_tiny"}},
        {
            "fake_tiny": """
            import torch

            def create_tiny(in_channels=3, out_channels=1):
                return torch.nn.Conv2d(in_channels, out_channels, 1)
        """
        },
    )
    reg = Registry(path=[str(site)])
    info = reg.info("models", "tiny")
    assert (info.distribution, info.version, info.target) == (
        "fake_tiny",
        "1.0",
        "fake_tiny:create_tiny",
    )
    model = reg.create("models", "tiny", in_channels=3, out_channels=1)
    assert model.out_channels == 1


def test_broken_plugin_is_reported_and_isolated(site):
    make_distribution(
        site,
        "fake-broken",
        {"segkit.models": {"broken": "fake_broken:create", "fine": "fake_fine:create"}},
        {
            "fake_broken": "import a_module_that_does_not_exist\n",
            "fake_fine": "def create(in_channels=3, out_channels=1):\n    return 'ok'\n",
        },
    )
    reg = Registry(path=[str(site)])
    with pytest.raises(
        PluginLoadError,
        match=r"model 'broken' from distribution 'fake_broken' 1.0 failed to load \(fake_broken:create\): ModuleNotFoundError",
    ) as info:
        reg.get("models", "broken")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)  # original traceback kept
    assert reg.create("models", "fine") == "ok"


def test_plugin_that_is_not_callable_is_refused(site):
    make_distribution(
        site,
        "fake-value",
        {"segkit.losses": {"number": "fake_value:VALUE"}},
        {"fake_value": "VALUE = 3\n"},
    )
    with pytest.raises(
        PluginLoadError,
        match=r"loss 'number' .* points at fake_value:VALUE, a int; expected a callable",
    ):
        Registry(path=[str(site)]).get("losses", "number")


def test_duplicate_name_names_both_distributions_when_used(site):
    for dist in ("fake-one", "fake-two"):
        make_distribution(
            site, dist, {"segkit.losses": {"twin": f"{dist.replace('-', '_')}:create"}}, {}
        )
    reg = Registry(path=[str(site)])
    assert reg.names("losses") == ["twin"]  # listing the kind does not raise
    message = (
        r"loss name 'twin' is registered twice: by distribution 'fake_one' 1\.0 "
        r"\(fake_one:create\) and by distribution 'fake_two' 1\.0 \(fake_two:create\); "
        r"uninstall all but one of them or rename the entry point in group 'segkit.losses'"
    )
    with pytest.raises(DuplicatePluginError, match=message):
        reg.info("losses", "twin")
    with pytest.raises(DuplicatePluginError, match=message):
        reg.get("losses", "twin")
    with pytest.raises(DuplicatePluginError, match=message):
        reg.plugins("losses")["twin"].load()
    claims = reg.clashes("losses")["twin"]
    assert [p.distribution for p in claims] == ["fake_one", "fake_two"]


CLASHING = {
    # Two distributions claim the models 'unet' (segkit's own) and 'shared', and the
    # losses 'shared'; 'fine' and segkit's other plugins must keep working.
    "fake-a": (
        {"segkit.models": {"unet": "fake_a:create", "shared": "fake_a:create", "fine": "fake_a:create"},
         "segkit.losses": {"shared": "fake_a:loss"}},
        {"fake_a": "import torch\n\ndef create(in_channels=3, out_channels=1):\n"
                   "    return torch.nn.Conv2d(in_channels, out_channels, 1)\n\n"
                   "def loss():\n    return torch.nn.BCEWithLogitsLoss()\n"},
    ),
    "fake-b": (
        {"segkit.models": {"shared": "fake_b:create"}, "segkit.losses": {"shared": "fake_b:loss"}},
        {"fake_b": "def create(in_channels=3, out_channels=1):\n    pass\n\n"
                   "def loss():\n    pass\n"},
    ),
}  # fmt: skip


def test_a_clash_breaks_only_its_name_and_segkit_list_shows_every_one(site, monkeypatch, capsys):
    from segkit import registry
    from segkit.cli import main
    from segkit.testing import parametrize_plugins, plugin_names

    for dist, (groups, modules) in CLASHING.items():
        make_distribution(site, dist, groups, modules)
    monkeypatch.setattr(registry, "_default", Registry())  # the process registry sees them
    # Everything else keeps working: other names, other kinds, the kit's parametrization.
    assert registry.create("models", "fine").out_channels == 1
    assert registry.create("models", "resnet34_unet") is not None
    assert registry.get("recipes", "type3") is not None
    assert {"unet", "shared", "fine"} <= set(plugin_names("models"))
    assert plugin_names("models", distribution="fake-b") == ["shared"]
    assert plugin_names("models", distribution="fake-a") == ["fine", "shared"]  # not unet: hidden
    assert parametrize_plugins("models", "losses", rules=True).args[1]  # collection works
    with pytest.raises(DuplicatePluginError, match=r"model name 'shared' is registered twice: "
                       r"by distribution 'fake_a' 1\.0 .* and by distribution 'fake_b'"):  # fmt: skip
        registry.get("models", "shared")
    # A built-in's name is segkit's: fake-a's 'unet' is hidden, segkit's is used.
    assert registry.default_registry().info("models", "unet").distribution == "segkit"

    assert main(["list"]) == 0  # informative, as for a plugin that fails to load
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines()]
    for kind, name, dist in [("models", "shared", "fake_a"), ("models", "shared", "fake_b"),
                             ("losses", "shared", "fake_a"), ("losses", "shared", "fake_b")]:  # fmt: skip
        assert [r for r in rows if r[:3] == [kind, name, dist] and r[-1] == "CLASH"], (kind, name)
    assert ["models", "fine", "fake_a", "1.0", "ok"] in rows
    assert ["models", "unet", "fake_a", "1.0", "SHADOWED"] in rows
    assert [r for r in rows if r[:3] == ["models", "unet", "segkit"] and r[-1] == "ok"]
    assert "model name 'unet' is registered twice" not in err
    # Every clash at once, each message naming both distributions.
    assert "model name 'shared' is registered twice" in err
    assert "loss name 'shared' is registered twice" in err
    assert main(["list", "models", "--check"]) == 1
    assert main(["list", "losses", "--no-import"]) == 0
    assert "CLASH" in capsys.readouterr().out  # known from the metadata alone


def test_a_package_registering_a_builtin_name_never_breaks_the_builtin(site, monkeypatch, capsys):
    from segkit import registry
    from segkit.build import check_plugin_names
    from segkit.cli import main
    from segkit.config import RunConfig
    from segkit.testing import ConformanceError, parametrize_plugins, plugin_names

    make_distribution(
        site,
        "fake-shadow",
        {"segkit.models": {"unet": "fake_shadow:create", "mine": "fake_shadow:create"},
         "segkit.losses": {"dice": "fake_shadow:create"}},
        {"fake_shadow": "def create(in_channels=3, out_channels=1):\n    return None\n"},
    )  # fmt: skip
    monkeypatch.setattr(registry, "_default", Registry())
    monkeypatch.setattr(registry, "_said_shadowed", set())
    unet = registry.default_registry().info("models", "unet")
    assert (unet.distribution, unet.target) == ("segkit", "segkit_unet:create_unet")
    assert registry.create("models", "unet") is not None  # the default run's model works
    assert [p.distribution for p in registry.default_registry().shadowed("models")["unet"]] == [
        "fake_shadow"
    ]
    assert registry.default_registry().clashes("models") == {}

    # A run using the built-in name says so once (a study checks each of its runs).
    check_plugin_names(RunConfig(model="unet", loss="dice"))
    check_plugin_names(RunConfig(model="unet", loss="dice"))
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "segkit: model 'unet' is segkit's built-in; the model of that name from distribution "
        "'fake_shadow' 1.0 (fake_shadow:create) is hidden (rename it to use it; `segkit list "
        "models` shows it)",
        "segkit: loss 'dice' is segkit's built-in; the loss of that name from distribution "
        "'fake_shadow' 1.0 (fake_shadow:create) is hidden (rename it to use it; `segkit list "
        "losses` shows it)",
    ]
    check_plugin_names(RunConfig(model="mine"))  # no built-in of that name: nothing said
    assert capsys.readouterr().err == ""

    # segkit list shows the hidden one and how to fix it; --check fails the author's CI.
    assert main(["list", "models"]) == 0
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines()]
    assert ["models", "unet", "fake_shadow", "1.0", "SHADOWED"] in rows
    assert [r for r in rows if r[:3] == ["models", "unet", "segkit"] and r[-1] == "ok"]
    assert (
        "models 'unet': model 'unet' from distribution 'fake_shadow' 1.0 (fake_shadow:create) "
        "is hidden: 'unet' is the name of segkit's built-in model, which wins, so that "
        "package's model cannot be used; rename its entry point in group 'segkit.models' of "
        "fake_shadow's pyproject.toml" in " ".join(err.split())
    )
    assert main(["list", "models", "--check"]) == 1
    assert main(["list", "--no-import", "--check"]) == 1
    assert "SHADOWED" in capsys.readouterr().out
    # The kit checks segkit's 'unet' by that name; the author's own parametrization says
    # their plugin cannot be reached instead of testing segkit's.
    assert plugin_names("models", distribution="fake-shadow") == ["mine"]
    assert "unet" in plugin_names("models")
    with pytest.raises(ConformanceError, match=r"^model 'unet' \(fake_shadow 1\.0\) breaks "
                       r"rule 'name': .* is hidden: 'unet' is the name of segkit's built-in"):  # fmt: skip
        parametrize_plugins("models", distribution="fake-shadow")


def test_same_distribution_twice_on_the_path_is_not_a_duplicate(tmp_path):
    for sub in ("a", "b"):
        make_distribution(
            tmp_path / sub, "fake-same", {"segkit.losses": {"x": "fake_same:create"}}, {}
        )
    reg = Registry(path=[str(tmp_path / "a"), str(tmp_path / "b")])
    assert reg.names("losses") == ["x"]


def test_two_versions_of_one_distribution_say_which_is_used_and_fail_the_check(
    site, monkeypatch, capsys
):
    import json

    from segkit import registry
    from segkit.cli import main

    tmp_path = site  # the other copies in folders of their own, off sys.path
    editable, wheel = site, tmp_path / "wheel"
    first = make_distribution(
        editable,
        "fake-twice",
        {"segkit.losses": {"x": "fake_twice:create"}},
        {"fake_twice": "import torch\n\ndef create():\n    return torch.nn.BCEWithLogitsLoss()\n"},
        version="0.2",
    )
    (first / "direct_url.json").write_text(
        json.dumps({"url": "file:///src/fake-twice", "dir_info": {"editable": True}})
    )
    second = make_distribution(
        wheel, "fake_twice", {"segkit.losses": {"x": "fake_twice:create"}}, {}, version="0.1"
    )
    reg = Registry(path=[str(editable), str(wheel)])
    assert reg.plugins("losses")["x"].version == "0.2"  # the first on the path is used
    [copies] = reg.copies()
    assert copies.registers("losses") and not copies.registers("models")
    assert str(copies) == (
        f"distribution 'fake_twice' is installed 2 times on the path: 0.2 at {first} "
        "(editable install of /src/fake-twice) is used (the first on sys.path wins); 0.1 at "
        f"{second} is hidden. Uninstall the copies you do not want (`python -m pip "
        "uninstall fake_twice` with the Python whose site folder holds each, or delete the "
        "stale metadata folder) so that one is left"
    )
    monkeypatch.setattr(registry, "_default", reg)
    assert main(["list", "losses"]) == 0
    out, err = capsys.readouterr()
    assert ["losses", "x", "fake_twice", "0.2", "ok"] in [line.split() for line in out.splitlines()]
    assert str(copies) in err
    assert main(["list", "--check", "--no-import"]) == 1
    assert main(["list", "models", "--check"]) == 0  # it registers no model
    # Identical copies (the same version and entry points) hide nothing that matters.
    same = tmp_path / "same"
    make_distribution(
        same, "fake-twice", {"segkit.losses": {"x": "fake_twice:create"}}, {}, version="0.1"
    )
    assert Registry(path=[str(wheel), str(same)]).copies() == []
    # A different entry point in the hidden copy is reported, at one version.
    (same / "fake_twice-0.1.dist-info" / "entry_points.txt").write_text(
        "[segkit.losses]\ny = fake_twice:create\n"
    )
    assert [c.distribution for c in Registry(path=[str(wheel), str(same)]).copies()] == [
        "fake_twice"
    ]


def test_unknown_name_suggests_close_matches_and_segkit_list():
    with pytest.raises(
        PluginNotFoundError,
        match=r"no model named 'resnet34unet'\. Did you mean 'resnet34_unet'.*Run `segkit list models`",
    ):
        Registry().info("models", "resnet34unet")


def test_unknown_kind_suggests_the_right_one():
    with pytest.raises(
        PluginNotFoundError, match=r"unknown plugin kind 'model'; did you mean 'models'\?"
    ):
        Registry().names("model")


def test_wrong_options_are_a_config_error_listing_accepted_ones():
    with pytest.raises(
        ConfigError,
        match=r"loss 'bce_dice' does not accept these options: .*colour.*It accepts: .*bce_weight",
    ):
        Registry().create("losses", "bce_dice", colour="red")


def test_a_misspelt_option_gets_the_close_name():
    with pytest.raises(
        ConfigError,
        match=r"argument 'dice_wieght' \(did you mean 'dice_weight'\?\)\. It accepts: ",
    ):
        Registry().create("losses", "bce_dice", dice_wieght=2)
    with pytest.raises(ConfigError) as e:
        Registry().create("losses", "bce_dice", colour="red")
    assert "did you mean" not in str(e.value)


def test_autoload_off_hides_third_party_plugins(site, monkeypatch):
    make_distribution(site, "fake-extra", {"segkit.models": {"extra": "fake_extra:create"}}, {})
    monkeypatch.setenv("SEGKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = Registry()
    assert "extra" not in reg.names("models")
    assert "unet" in reg.names("models")
    monkeypatch.delenv("SEGKIT_DISABLE_PLUGIN_AUTOLOAD")
    assert "extra" in Registry().names("models")


def test_module_level_api_lists_every_group():
    for kind in GROUPS:
        assert BUILTINS[kind] <= set(list_plugins(kind))


def test_an_op_plugin_is_found_by_name_recorded_and_checked_on_load(site, monkeypatch):
    from segkit import recipes as R
    from segkit import registry

    make_distribution(
        site,
        "fake-ops",
        {
            "segkit.ops": {
                "Posterize": "fake_ops:Posterize",
                "Solarize": "fake_ops:Renamed",
                "Undeclared": "fake_ops:Undeclared",
                "Plain": "fake_ops:plain",
            }
        },
        {
            "fake_ops": """
            from dataclasses import dataclass
            from typing import ClassVar

            from segkit.recipes import Op

            @dataclass(frozen=True)
            class Posterize(Op):
                bits: int = 4
                loaders: ClassVar[tuple[str, ...] | None] = ("albumentations",)

            @dataclass(frozen=True)
            class Renamed(Posterize):
                pass

            @dataclass(frozen=True)
            class Undeclared(Op):
                pass

            def plain():
                pass
            """
        },
    )
    monkeypatch.setattr(registry, "_default", Registry())  # sees the fake distribution
    posterize = R.op_class("Posterize")
    recipe = R.Recipe.from_dict({"train": [{"op": "Posterize", "bits": 3}]})
    assert recipe.train[0] == posterize(bits=3)
    assert recipe.to_dict()["train"][0] == {
        "op": "Posterize",
        "plugin": "fake_ops",  # the distribution, as its dist-info names it
        "p": 1.0,
        "bits": 3,
    }
    with pytest.raises(
        ConfigError, match=r"recipe: train\[0\] \(Posterize\): bits='3': expected a whole"
    ):
        R.Recipe.from_dict({"train": [{"op": "Posterize", "bits": "3"}]})
    broken = {
        "Solarize": "its class is named 'Renamed'; recipes record an op by its class name, so "
        "register it as 'Renamed'",
        "Undeclared": "declares loaders=None; expected the names of the loaders that run it",
        "Plain": "is a function, not a class",
    }
    for name, reason in broken.items():
        with pytest.raises(PluginLoadError, match=re.escape(reason)):
            R.op_class(name)
        with pytest.raises(ConfigError, match=rf"^recipe: train\[0\]: op '{name}' from "):
            R.Recipe.from_dict({"train": [{"op": name}]})
    assert "Posterize" in R.known_ops() and not set(broken) & set(R.known_ops())


def test_a_missing_dependency_names_the_plugins_file_and_what_to_install(site):
    make_distribution(
        site,
        "fake-deps",
        {"segkit.models": {"needs": "fake_deps:create"}},
        {"fake_deps": "import fancy_backbones_xyz\n"},
    )
    with pytest.raises(PluginLoadError) as info:
        Registry(path=[str(site)]).get("models", "needs")
    message = str(info.value)
    assert "No module named 'fancy_backbones_xyz'" in message
    assert f"{site / 'fake_deps.py'}, line 1, imports 'fancy_backbones_xyz', which is not " in (
        message
    )
    assert "list it in fake_deps's dependencies" in message


def test_an_entry_point_naming_no_module_or_no_attribute_says_to_fix_and_reinstall(site):
    make_distribution(
        site,
        "fake-target",
        {
            "segkit.models": {
                "nomodule": "fake_target.nosuch:create",
                "noattr": "fake_target_mod:create_tiyn",
            }
        },
        {"fake_target_mod": "def create_tiny(in_channels=3, out_channels=1):\n    pass\n"},
    )
    reg = Registry(path=[str(site)])
    with pytest.raises(
        PluginLoadError,
        match=r"no module 'fake_target' is installed: fix the entry point "
        r"'nomodule = \"fake_target.nosuch:create\"' in group 'segkit.models' of fake_target's "
        r"pyproject.toml, then reinstall it",
    ):
        reg.get("models", "nomodule")
    with pytest.raises(PluginLoadError) as info:
        reg.get("models", "noattr")
    assert (
        f"{site / 'fake_target_mod.py'} has no 'create_tiyn' (did you mean "
        "'fake_target_mod:create_tiny'?): fix the entry point 'noattr = "
        '"fake_target_mod:create_tiyn"\'' in str(info.value)
    )


def test_an_error_raised_by_the_plugins_module_names_its_file_and_line(site):
    make_distribution(
        site,
        "fake-raises",
        {"segkit.losses": {"raises": "fake_raises:create"}},
        {"fake_raises": "x = 1\nraise RuntimeError('config file not found')\n"},
    )
    with pytest.raises(
        PluginLoadError,
        match=r"RuntimeError: config file not found; .*fake_raises\.py, line 2, raised it$",
    ):
        Registry(path=[str(site)]).get("losses", "raises")


def test_a_misspelt_group_is_named_when_its_plugin_is_asked_for_and_by_segkit_list(
    site, monkeypatch, capsys
):
    """An entry point under `segkit.model` (or `segkit_losses`) is no plugin, but using its
    name, or `segkit list`, says which distribution put it where, and the group to use."""
    from segkit import registry
    from segkit.cli import main

    make_distribution(
        site,
        "fake-typo",
        {
            "segkit.model": {"mine": "fake_typo:create"},
            "segkit_losses": {"my_loss": "fake_typo:loss"},
            "segkit.hooks": {"unrelated": "fake_typo:hook"},  # not close to any group
        },
        {},
    )
    reg = Registry(path=[str(site)])
    assert "mine" not in reg.names("models")
    with pytest.raises(
        PluginNotFoundError,
        match=r"no model named 'mine': distribution 'fake_typo' 1\.0 registers 'mine' "
        r"\(fake_typo:create\) under the entry-point group 'segkit\.model', which segkit does "
        r"not read; the group of models is 'segkit\.models': rename it in the distribution's "
        r'pyproject.toml \(\[project.entry-points."segkit.models"\]\) and reinstall it',
    ):
        reg.info("models", "mine")
    with pytest.raises(PluginNotFoundError, match=r"under the entry-point group 'segkit_losses'"):
        reg.info("losses", "my_loss")
    assert [m.name for m in reg.misplaced()] == ["mine", "my_loss"]

    monkeypatch.setattr(registry, "_default", Registry())  # the process registry sees it
    assert main(["list", "models"]) == 0
    err = capsys.readouterr().err
    assert "models 'mine' is not listed: distribution 'fake_typo' 1.0 registers" in err
    assert "my_loss" not in err  # only the kinds listed
    assert main(["list", "--check"]) == 1
