"""Plugin contracts checked on load: a factory's signature against its kind's contract,
reported by `segkit list --check` and at first use; the recipes' old group and kind name."""

from __future__ import annotations

import warnings

import pytest
from helpers import make_distribution

from segkit import registry
from segkit.cli import main
from segkit.errors import PluginLoadError
from segkit.registry import Registry

NO_SHARD_LOADER = """
def create_loader(dataset, split, recipe, batch_size, *, train, seed=0, num_workers=0,
                  device="cpu", drop_last=False):
    raise AssertionError("never called")
"""


def test_a_loader_without_shard_fails_to_load_naming_plugin_and_parameter(site):
    make_distribution(
        site,
        "fake-noshard",
        {"segkit.loaders": {"noshard": "fake_noshard:create_loader"}},
        {"fake_noshard": NO_SHARD_LOADER},
    )
    reg = Registry(path=[str(site)])
    with pytest.raises(
        PluginLoadError,
        match=r"loader 'noshard' from distribution 'fake.noshard' 1.0: its factory "
        r"fake_noshard:create_loader does not accept 'shard'\. The segkit.loaders contract "
        r"is factory\(dataset, split, recipe, batch_size, \*, train, seed, num_workers, "
        r"device, shard, drop_last\)",
    ):
        reg.get("loaders", "noshard")


def test_segkit_list_check_reports_it_and_exits_1(site, capsys):
    make_distribution(
        site,
        "fake-noshard",
        {"segkit.loaders": {"noshard": "fake_noshard:create_loader"}},
        {"fake_noshard": NO_SHARD_LOADER},
    )
    assert main(["list", "loaders", "--check"]) == 1
    out, err = capsys.readouterr()
    assert "noshard" in out and "FAILED" in out
    assert "loader 'noshard'" in err and "does not accept 'shard'" in err
    assert "Traceback" not in err  # a contract mismatch is a message, not a crash
    # Without --check the listing still shows it, and exits 0.
    assert main(["list", "loaders"]) == 0


def test_builtins_all_fit_their_contracts(capsys):
    assert main(["list", "--check"]) == 0
    assert "FAILED" not in capsys.readouterr().out


def test_recipes_registered_under_the_old_group_are_still_found(site):
    make_distribution(
        site,
        "fake-oldrecipe",
        {"segkit.augmentations": {"oldstyle": "fake_oldrecipe:oldstyle"}},
        {
            "fake_oldrecipe": """
            from segkit.recipes import Normalize, Recipe, Resize

            def oldstyle(image_size=256):
                return Recipe("oldstyle", train=(Resize(size=image_size), Normalize()))
            """
        },
    )
    reg = Registry(path=[str(site)])
    assert reg.names("recipes") == ["oldstyle"]
    assert reg.create("recipes", "oldstyle", image_size=32).name == "oldstyle"


def test_the_old_kind_name_warns_and_works():
    with pytest.warns(DeprecationWarning, match="'augmentations' is now called 'recipes'"):
        names = registry.list_plugins("augmentations")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.list_plugins("recipes") == names


def test_a_mask_specs_ignore_values_are_the_raw_values_read_as_ignore():
    # One reading for the mask reader's refusal and evaluate's 'ignored: ... value 255'.
    from segkit.contracts import MaskSpec
    from segkit.inference.evaluate import ignored_as

    spec = MaskSpec.multiclass(["background", "cell"], ignore=255)
    assert spec.ignore_values == (255,) and ignored_as(spec) == "value 255"
    none = MaskSpec.multiclass(["background", "cell"], ignore=None)
    assert none.ignore_values == () and ignored_as(none) == ""
    assert MaskSpec(background=0, allowed=(0, 255)).ignore_values == ()  # binary
