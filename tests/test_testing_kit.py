"""The conformance kit itself: it passes a good plugin of each kind and names the plugin
and the rule when a deliberately broken one breaks its contract."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from segkit import recipes as R
from segkit.contracts import MaskSpec, Sample, declare
from segkit.errors import ConfigError, DataError
from segkit.testing import (
    DATASET_RULES,
    LOSS_RULES,
    MODEL_RULES,
    ConformanceError,
    ShapesDataset,
    check,
    check_dataset,
    check_loader,
    check_loss,
    check_model,
    check_recipe,
    parametrize_plugins,
    plugin_names,
    shapes_dataset,
    write_shapes_dataset,
)

# --- small plugins, good and broken ------------------------------------------------------


class TinyNet(nn.Module):
    """A good model: two convs, logits out, any input size."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(4, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@declare(min_input_multiple=1)
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
    """Needs even sizes: crashes deep inside on odd ones (segkit's attached check turns
    that into a ConfigError when the factory declares min_input_multiple 2)."""

    min_input_multiple = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.head(y + y[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2])


@declare(min_input_multiple=2)
def create_strided(in_channels: int = 3, out_channels: int = 1) -> nn.Module:
    return Strided(in_channels, out_channels)


@declare(min_input_multiple=1)
def create_strided_declared_1(in_channels: int = 3, out_channels: int = 1) -> nn.Module:
    """Broken: declares 1 (every size), but the model needs even sizes."""
    model = Strided(in_channels, out_channels)
    model.min_input_multiple = 1  # agrees with the declaration; the forward does not
    return model


def create_strided_undeclared(in_channels: int = 3, out_channels: int = 1) -> nn.Module:
    """Broken: says min_input_multiple on the model only, so segkit must build it to know."""
    return Strided(in_channels, out_channels)


@declare(min_input_multiple=4)
def create_contradicted(in_channels: int = 3, out_channels: int = 1) -> nn.Module:
    """Broken: the factory declares 4, the model it builds says 2."""
    return Strided(in_channels, out_channels)


def create_no_out_channels(in_channels: int = 3) -> nn.Module:
    """Broken: segkit passes out_channels, which this factory does not take."""
    return TinyNet(in_channels, 1)


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


def test_the_declared_multiple_is_enforced_by_segkits_own_check() -> None:
    check_model(create_strided, rules=["min_input_multiple", "input_sizes", "bad_input_size"])


def test_a_declared_multiple_too_small_for_the_model_is_caught() -> None:
    with pytest.raises(ConformanceError, match=r"'input_sizes': raised RuntimeError"):
        check_model(create_strided_declared_1, rules=["input_sizes"])


def test_the_multiple_must_be_declared_on_the_factory() -> None:
    with pytest.raises(
        ConformanceError,
        match=r"'min_input_multiple': the model sets min_input_multiple=2 but its factory "
        r"declares none; declare it on the factory",
    ):
        check_model(create_strided_undeclared, rules=["min_input_multiple"])
    with pytest.raises(
        ConformanceError,
        match=r"the factory declares min_input_multiple=4 but the model says 2",
    ):
        check_model(create_contradicted, rules=["min_input_multiple"])


def test_a_factory_that_does_not_fit_the_contract_is_caught() -> None:
    with pytest.raises(
        ConformanceError,
        match=r"model factory 'create_no_out_channels' .* breaks rule 'signature': does not "
        r"accept 'out_channels'",
    ):
        check_model(create_no_out_channels, rules=["signature"])


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
        ValueError,
        match=r"unknown model rule\(s\) \['gradient'\]; the rules are: signature, returns_module",
    ):
        check_model(create_tiny, rules=["gradient"])
    with pytest.raises(ValueError, match="no conformance checks for kind 'optimizers'"):
        check("optimizers", "adam")


def test_rules_run_in_table_order_and_only_those_asked() -> None:
    # Asking for a rule that passes never runs the broken ones.
    check_model(create_half_size, rules=["returns_module", "unknown_option"])
    assert list(MODEL_RULES)[:3] == ["signature", "returns_module", "min_input_multiple"]
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
    from segkit.testing import LOADER_RULES, RECIPE_RULES

    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    for table in (MODEL_RULES, LOSS_RULES, RECIPE_RULES, LOADER_RULES, DATASET_RULES):
        for rule in table:
            assert f"| `{rule}` |" in guide, rule


# --- datasets ----------------------------------------------------------------------------


class Shapes(ShapesDataset):
    """A good dataset layout: the kit's L shapes (Oxford-IIIT Pet layout, trimaps 1 and 2),
    refusing a folder that does not exist."""

    def __init__(self, root: Path) -> None:
        if not Path(root).is_dir():
            raise DataError(f"{root}: dataset folder not found")
        super().__init__(root)


class GeneratedShapes(ShapesDataset):
    """A good dataset that makes its own data (and so needs no root to be checked)."""

    @staticmethod
    def generate(root: Path, count: int = 16, seed: int = 0) -> Path:
        return write_shapes_dataset(root, seed=seed)


class LeakingTestSplit(Shapes):
    """Broken: the first two training images are in the test split too."""

    def samples(self, split: str) -> list[Sample]:
        if split == "test":
            return super().samples("train")[:2] + super().samples("test")
        return super().samples(split)


class AnySplit(Shapes):
    """Broken: an unknown split is an empty list, so a typo trains on nothing."""

    def samples(self, split: str) -> list[Sample]:
        return super().samples(split) if split in ("train", "valid", "test") else []


class NoRootCheck(ShapesDataset):
    """Broken: accepts a folder that does not exist (the error comes at the first read)."""


class RootNotFound(ShapesDataset):
    """Broken: a missing folder raises FileNotFoundError, not DataError."""

    def __init__(self, root: Path) -> None:
        (Path(root) / "annotations" / "trainval.txt").read_text()
        super().__init__(root)


class WrongMaskSpec(Shapes):
    """Broken: declares 0/1 masks, but the trimaps hold 1 and 2."""

    mask_spec = MaskSpec(background=0, allowed=(0, 1))


class SwallowsOptions(Shapes):
    """Broken: unknown options are swallowed."""

    def __init__(self, root: Path, **options: Any) -> None:
        super().__init__(root)


class Unseeded(GeneratedShapes):
    """Broken: generate ignores its seed."""

    @staticmethod
    def generate(root: Path, count: int = 16, seed: int = 0) -> Path:
        return write_shapes_dataset(root, seed=int(np.random.default_rng().integers(1000)))


class RegeneratesOnRead(GeneratedShapes):
    """Broken: the factory rewrites the folder generate() wrote, with another seed."""

    def __init__(self, root: Path) -> None:
        super().__init__(write_shapes_dataset(Path(root), seed=1))


class DeclaresIgnore(Shapes):
    """A good declare_ignore: the line of the layout's classes.txt that makes the colour
    ignored, or "" where there is no such file."""

    @staticmethod
    def declare_ignore(root: Path, colour: tuple[int, int, int], **options: Any) -> str:
        listed = Path(root) / "classes.txt"
        return f"add the line 'ignore {' '.join(map(str, colour))}' to {listed}"


class IgnoreReturnsNone(Shapes):
    """Broken: nothing to say is None, not ""."""

    @staticmethod
    def declare_ignore(root: Path, colour: tuple[int, int, int], **options: Any) -> Any:
        return None


class IgnoreOfAnotherColour(Shapes):
    """Broken: the words name the colour's values in another order (BGR)."""

    @staticmethod
    def declare_ignore(root: Path, colour: tuple[int, int, int], **options: Any) -> str:
        return f"add the line 'ignore {' '.join(map(str, reversed(colour)))}' to classes.txt"


class IgnoreWritesTheLine(Shapes):
    """Broken: declares the colour itself, in the user's folder, instead of saying how."""

    @staticmethod
    def declare_ignore(root: Path, colour: tuple[int, int, int], **options: Any) -> str:
        (Path(root) / "classes.txt").write_text(f"ignore {' '.join(map(str, colour))}\n")
        return "added the ignore line"


class IgnoreRaises(Shapes):
    """Broken: raises for the folder it reads."""

    @staticmethod
    def declare_ignore(root: Path, colour: tuple[int, int, int], **options: Any) -> str:
        raise KeyError("classes")


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"))


def breaks(rule: str, detail: str) -> Any:
    """``pytest.raises`` for a ConformanceError of ``rule`` whose detail matches ``detail``."""
    return pytest.raises(ConformanceError, match=rf"breaks rule '{rule}': {detail}")


def test_a_good_dataset_passes_every_rule(shapes_root: Path) -> None:
    check_dataset(Shapes, root=shapes_root)


def test_a_good_generating_dataset_passes_every_rule_without_a_root() -> None:
    check_dataset(GeneratedShapes)


def test_test_images_in_training_are_caught(shapes_root: Path) -> None:
    with pytest.raises(
        ConformanceError,
        match=r"dataset factory 'LeakingTestSplit' \(test_testing_kit\) breaks rule 'splits': "
        r"ids \['shape_00', 'shape_01'\] are in both train and test \(.*no test image leaks",
    ) as info:
        check_dataset(LeakingTestSplit, root=shapes_root)
    assert info.value.rule == "splits"


def test_missing_image_file_is_caught(shapes_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(shapes_root, tmp_path / "shapes"))
    (root / "images" / "shape_03.jpg").unlink()
    with breaks("splits", r"train sample 'shape_03': image file .*shape_03\.jpg not found"):
        check_dataset(Shapes, root=root)


def test_unknown_split_that_does_not_raise_is_caught(shapes_root: Path) -> None:
    with breaks("unknown_split", r"samples\('bogus'\) returned instead of raising"):
        check_dataset(AnySplit, root=shapes_root)


def test_missing_root_must_be_a_data_error(shapes_root: Path) -> None:
    with breaks("missing_root", r"factory\('.*no-such-dataset'\) returned although the folder"):
        check_dataset(NoRootCheck, root=shapes_root)
    with breaks(
        "missing_root",
        r"factory\('.*no-such-dataset'\) raised FileNotFoundError \(.*\), not segkit.errors.DataError",
    ):
        check_dataset(RootNotFound, root=shapes_root, rules=["missing_root"])


def test_mask_values_outside_the_spec_are_caught(shapes_root: Path) -> None:
    with breaks(
        "readable_samples",
        r"train sample 'shape_00': .*shape_00\.png: values \{2\} found, masks of this dataset "
        r"hold 0, 1",
    ):
        check_dataset(WrongMaskSpec, root=shapes_root)


def test_dataset_swallowing_unknown_options_is_caught(shapes_root: Path) -> None:
    with breaks("unknown_option", "no_such_option=1 was accepted silently"):
        check_dataset(SwallowsOptions, root=shapes_root)


def test_declare_ignore_is_checked_where_declared(shapes_root: Path, tmp_path: Path) -> None:
    check_dataset(DeclaresIgnore, root=shapes_root)  # names the colour: passes every rule
    check_dataset(Shapes, root=shapes_root, rules=["declare_ignore"])  # not declared: no check
    with breaks("declare_ignore", r"declare_ignore\(root, \(201, 102, 53\), \*\*options\) "
                r"returned a NoneType, not a str \(\"\" where the layout"):  # fmt: skip
        check_dataset(IgnoreReturnsNone, root=shapes_root, rules=["declare_ignore"])
    with breaks("declare_ignore", r".* returned \"add the line 'ignore 53 102 201' to classes.txt\"; "
                r"expected words that name the colour \(201 102 53, in this order\)"):  # fmt: skip
        check_dataset(IgnoreOfAnotherColour, root=shapes_root, rules=["declare_ignore"])
    with breaks("declare_ignore", r".* raised KeyError: 'classes'; it returns the words"):
        check_dataset(IgnoreRaises, root=shapes_root, rules=["declare_ignore"])
    root = Path(shutil.copytree(shapes_root, tmp_path / "shapes"))
    with breaks("declare_ignore", r".* changed \['classes.txt'\] in the folder; it returns words"):
        check_dataset(IgnoreWritesTheLine, root=root, rules=["declare_ignore"])


def test_generate_must_be_seeded_and_read_back() -> None:
    with breaks("generate", r"two runs of generate\(root, count=12, seed=0\) wrote different"):
        check_dataset(Unseeded, rules=["generate"])
    with breaks("generate", r"factory\(root, \*\*options\) did not read the folder .* but rewrote"):
        check_dataset(RegeneratesOnRead, rules=["generate"])


def test_a_dataset_without_generate_needs_a_root() -> None:
    with pytest.raises(
        ValueError, match=r"dataset 'folder' \(segkit .*\) reads a folder: pass root="
    ):
        check("datasets", "folder")
    mark = parametrize_plugins("datasets", distribution="segkit", rules=True)
    assert "datasets-folder-missing_root" in {c.id for c in mark.args[1]}
    assert len(mark.args[1]) == len(plugin_names("datasets", "segkit")) * len(DATASET_RULES)


class _DictOut(nn.Module):  # torchvision's segmentation models return {"out": logits}
    def __init__(self, in_channels: int = 3, out_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.conv(x)}


class _NoParameters(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] - 0.5


def test_a_model_returning_a_dict_is_told_to_return_the_tensor() -> None:
    with pytest.raises(
        ConformanceError,
        match=r"'seeded_determinism': eval-mode forward: returned a dict with keys 'out', not "
        r"a tensor; return the logits tensor alone \(unpack the output of a wrapped model",
    ):
        check_model(_DictOut, name="dict_out")


def test_a_model_without_parameters_is_told_it_has_nothing_to_train() -> None:
    def create(in_channels: int = 3, out_channels: int = 1) -> nn.Module:
        return _NoParameters()

    with pytest.raises(
        ConformanceError,
        match=r"'forward_backward': the model has no parameter that requires a gradient",
    ):
        check_model(create, name="no_params", rules=["forward_backward"])
