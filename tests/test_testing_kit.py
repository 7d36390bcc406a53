"""The conformance kit itself: it passes a good plugin of each kind and names the plugin
and the rule when a deliberately broken one breaks its contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segkit import recipes as R
from segkit.errors import ConfigError
from segkit.testing import (
    LOSS_RULES,
    MODEL_RULES,
    ConformanceError,
    check,
    check_loader,
    check_loss,
    check_model,
    check_recipe,
    parametrize_plugins,
    plugin_names,
    shapes_dataset,
)

# --- small plugins, good and broken ------------------------------------------------------


class TinyNet(nn.Module):
    """A good model: two convs, logits out, any input size."""

    min_input_multiple = 1

    def __init__(self, in_channels: int = 3, out_channels: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(4, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def create_tiny(in_channels: int = 3, out_channels: int = 1) -> nn.Module:
    return TinyNet(in_channels, out_channels)


def create_half_size(in_channels: int = 3, out_channels: int = 1) -> nn.Module:
    """Broken: the output is at half resolution (a forgotten final upsampling)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1))


class WithUnusedBranch(TinyNet):
    def __init__(self, in_channels: int = 3, out_channels: int = 1):
        super().__init__(in_channels, out_channels)
        self.aux = nn.Conv2d(4, 1, 1)  # built but never called in forward


def create_unused_branch(in_channels: int = 3, out_channels: int = 1) -> nn.Module:
    """Broken: a parameter that never gets a gradient."""
    return WithUnusedBranch(in_channels, out_channels)


def create_accepts_anything(in_channels: int = 3, out_channels: int = 1, **options) -> nn.Module:
    """Broken: unknown options are swallowed."""
    return TinyNet(in_channels, out_channels)


class Strided(TinyNet):
    """Declares min_input_multiple 2 but crashes deep inside on odd sizes, instead of a
    ConfigError naming the size."""

    min_input_multiple = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.head(y + y[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2])


def create_strided(in_channels: int = 3, out_channels: int = 1) -> nn.Module:
    return Strided(in_channels, out_channels)


def create_mse() -> nn.Module:
    """A good (if unusual) loss: mean squared error of the probabilities, in float32."""

    class MSE(nn.Module):
        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return ((torch.sigmoid(logits.float()) - target.float()) ** 2).mean()

    return MSE()


def create_nan_loss() -> nn.Module:
    """Broken: 1 - recall, which is 0/0 on an all-background target."""

    class OneMinusRecall(nn.Module):
        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            p, t = torch.sigmoid(logits.float()), target.float()
            return 1 - (p * t).sum() / t.sum()

    return OneMinusRecall()


def create_per_pixel_loss() -> nn.Module:
    """Broken: forgets to reduce (returns a map, not a scalar)."""
    return nn.BCEWithLogitsLoss(reduction="none")


def create_half_precision_loss() -> nn.Module:
    """Broken: reduces in the logits' own dtype (bf16 sums stall, fp16 ones overflow)."""

    class LowPrecisionDice(nn.Module):
        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            p = torch.sigmoid(logits)
            t = target.to(logits.dtype)
            dice = (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
            return (1 - dice).float()

    return LowPrecisionDice()


class Sharpen(R.Op):
    """An op outside the vocabulary: no loader knows how to compile it."""


def bad_vocabulary(image_size: int = 256) -> R.Recipe:
    return R.Recipe("bad", train=(R.Resize(size=image_size), Sharpen(), R.Normalize()))


def wrong_size(image_size: int = 256) -> R.Recipe:
    return R.Recipe("small", train=(R.Resize(size=image_size // 2), R.Normalize()))


def misaligning_loader(dataset, split, recipe, batch_size, **kwargs):
    """Broken: flips the images but not the masks (the DALI pitfall of a geometric op
    with its own random draw)."""
    from segkit.registry import create

    inner = create("loaders", "albumentations", dataset, split, recipe, batch_size, **kwargs)

    class Misaligned:
        def __len__(self) -> int:
            return len(inner)

        def set_epoch(self, epoch: int) -> None:
            inner.set_epoch(epoch)

        def __iter__(self):
            from segkit.contracts import Batch

            for b in inner:
                yield Batch(b.images.flip(-1), b.masks)

    return Misaligned()


def overlapping_shards_loader(dataset, split, recipe, batch_size, *, shard=(0, 1), **kwargs):
    """Broken: ignores ``shard``, so every rank reads the whole split."""
    from segkit.registry import create

    return create("loaders", "albumentations", dataset, split, recipe, batch_size, **kwargs)


# --- good plugins pass -------------------------------------------------------------------


def test_a_good_model_passes_every_rule() -> None:
    check_model(create_tiny)


def test_a_good_loss_passes_every_rule() -> None:
    check_loss(create_mse)


def test_builtin_recipe_through_a_loader_factory_passes() -> None:
    from segkit.registry import get

    check_recipe("type1", loader=get("loaders", "albumentations"))


# --- broken plugins are caught, naming plugin and rule ------------------------------------


def test_wrong_output_shape_is_caught() -> None:
    with pytest.raises(
        ConformanceError,
        match=r"model factory 'create_half_size' \(test_testing_kit\) breaks rule "
        r"'forward_backward': train-mode forward: output shape \(2, 1, 32, 32\), expected \(2, 1, 64, 64\)",
    ):
        check_model(create_half_size)


def test_parameter_without_gradient_is_caught() -> None:
    with pytest.raises(
        ConformanceError,
        match=r"model factory 'unused' breaks rule 'forward_backward': parameters without a gradient: "
        r"\['aux.weight', 'aux.bias'\] \(.*every parameter gets a finite gradient\)",
    ) as info:
        check_model(create_unused_branch, name="unused")
    assert info.value.rule == "forward_backward"
    assert isinstance(info.value, AssertionError)  # plain pytest reporting works


def test_swallowed_unknown_option_is_caught() -> None:
    with pytest.raises(
        ConformanceError, match=r"'unknown_option': no_such_option=1 was accepted silently"
    ):
        check_model(create_accepts_anything, rules=["unknown_option"])


def test_bad_size_must_be_a_config_error() -> None:
    with pytest.raises(
        ConformanceError,
        match=r"'bad_input_size': input 5x4 with min_input_multiple=2 raised RuntimeError .* not segkit.errors.ConfigError",
    ):
        check_model(create_strided, rules=["bad_input_size"])


def test_nan_loss_is_caught() -> None:
    with pytest.raises(
        ConformanceError,
        match=r"loss factory 'create_nan_loss' .* breaks rule 'all_zero_target': all-zero target, random logits: returned nan",
    ):
        check_loss(create_nan_loss)


def test_non_scalar_loss_is_caught() -> None:
    with pytest.raises(
        ConformanceError,
        match=r"breaks rule 'float32_scalar': float32 logits: returned shape \(2, 1, 64, 64\), not a scalar",
    ):
        check_loss(create_per_pixel_loss)


def test_low_precision_reduction_is_caught() -> None:
    with pytest.raises(
        ConformanceError, match=r"'low_precision_sums': torch.float16 logits: returned nan"
    ):
        check_loss(create_half_precision_loss, rules=["low_precision_sums"])
    with pytest.raises(
        ConformanceError,
        match=r"'bf16_autocast': under bf16 autocast the loss is .*, but the same bf16 logits upcast to float32 give",
    ):
        check_loss(create_half_precision_loss)


def test_op_outside_the_vocabulary_is_caught() -> None:
    with pytest.raises(
        ConformanceError, match=r"'vocabulary': train ops \['Sharpen'\] are not in the vocabulary"
    ):
        check_recipe(bad_vocabulary)


def test_recipe_ending_at_the_wrong_size_is_caught() -> None:
    with pytest.raises(
        ConformanceError, match=r"'output_size': train ops end at size 32, not image_size=64"
    ):
        check_recipe(wrong_size)


def test_image_and_mask_out_of_step_are_caught() -> None:
    with pytest.raises(
        ConformanceError,
        match=r"'masks_binary_and_aligned': train ops through misaligning_loader: mask and image agree on only",
    ):
        check_recipe("type1", loader=misaligning_loader)


def test_loader_ignoring_shards_is_caught() -> None:
    with pytest.raises(
        ConformanceError,
        match=r"loader factory 'overlapping_shards_loader' .* breaks rule 'shards': shards hold 10 and 10 images, expected 5 each",
    ):
        check_loader(overlapping_shards_loader, rules=["shards"])


# --- the kit's own surface ---------------------------------------------------------------


def test_unknown_rule_and_kind_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r"unknown model rule\(s\) \['gradient'\]; the rules are: returns_module"
    ):
        check_model(create_tiny, rules=["gradient"])
    with pytest.raises(ValueError, match="no conformance checks for kind 'datasets'"):
        check("datasets", "folder")


def test_rules_run_in_table_order_and_only_those_asked() -> None:
    # Asking for a rule that passes never runs the broken ones.
    check_model(create_half_size, rules=["returns_module", "unknown_option"])
    assert list(MODEL_RULES)[:2] == ["returns_module", "min_input_multiple"]
    assert "all_zero_target" in LOSS_RULES


def test_plugin_names_by_distribution() -> None:
    assert {"unet", "resnet34_unet"} <= set(plugin_names("models", "segkit"))
    assert plugin_names("models", "no-such-distribution") == []


def test_parametrize_plugins_makes_one_case_per_plugin_and_rule() -> None:
    mark = parametrize_plugins("losses", distribution="segkit", rules=True)
    argnames, cases = mark.args
    assert argnames == ("kind", "name", "rule")
    ids = {c.id for c in cases}
    assert "losses-bce_dice-all_zero_target" in ids
    assert len(cases) == len(plugin_names("losses", "segkit")) * len(LOSS_RULES)
    plain = parametrize_plugins("models", "losses")
    assert plain.args[0] == ("kind", "name") and "models-unet" in {c.id for c in plain.args[1]}


def test_shapes_dataset_splits() -> None:
    ds = shapes_dataset()
    assert [len(ds.samples(s)) for s in ("train", "valid", "test")] == [10, 2, 4]
    with pytest.raises(ConfigError, match="split 'dev'"):
        ds.samples("dev")


def test_the_plugin_guide_lists_every_rule() -> None:
    from pathlib import Path

    from segkit.testing import LOADER_RULES, RECIPE_RULES

    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    for table in (MODEL_RULES, LOSS_RULES, RECIPE_RULES, LOADER_RULES):
        for rule in table:
            assert f"| `{rule}` |" in guide, rule
