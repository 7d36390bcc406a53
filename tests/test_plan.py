"""``segkit plan``: the rules, the batch-size search on a faked device memory, the plan
file, and (slow tier) plans made end to end for a third party's model on thin structures
and on pets, re-run as configurations."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from helpers import make_distribution, rows

from segkit import registry
from segkit.config import DEFAULTS, RunConfig
from segkit.errors import ConfigError
from segkit.plan import machine as machine_mod
from segkit.plan import rules
from segkit.plan.fingerprint import Fingerprint, mask_width
from segkit.plan.measure import BatchPolicy, RunTiming, StepProbe, fit_batch
from segkit.task import Task

#: A third party's model: a small conv net declaring ``min_input_multiple`` 8 (the
#: planner must read it from the declaration, and measure the model through the build
#: path like any other).
TINY_MODEL = """
import torch
from segkit.contracts import declare


class Tiny(torch.nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.down = torch.nn.Conv2d(in_channels, 8, 3, stride=8, padding=1)
        self.norm = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Conv2d(8, out_channels, 1)

    def forward(self, x):
        y = self.head(torch.relu(self.norm(self.down(x))))
        return torch.nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear")


@declare(min_input_multiple=8)
def create(in_channels=3, out_channels=1):
    return Tiny(in_channels, out_channels)
"""


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    """A model plugin ``tiny_plan`` installed from a temporary dist-info."""
    site = tmp_path / "site"
    make_distribution(
        site,
        "fake-plan-model",
        {"segkit.models": {"tiny_plan": "fake_plan_model:create"}},
        {"fake_plan_model": TINY_MODEL},
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv(registry.DISABLE_ENV, raising=False)
    registry.reset()
    yield "tiny_plan"
    registry.reset()
    sys.modules.pop("fake_plan_model", None)


def _fingerprint(**changes) -> Fingerprint:
    base = dict(
        dataset="synthetic",
        root="/data",
        classes=[],
        images={"train": 27, "valid": 3, "test": 10},
        size_median=[1500, 1100],
        short_side=1100,
        foreground=0.011,
        structure_width=2.3,
        width_masks=24,
        suggested_size=512,
        pos_weight=92.8,
    )
    return Fingerprint(**{**base, **changes})


# ----------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20m", 1200), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400), ("2m30s", 150)],
)
def test_budgets_are_read_as_durations(text, seconds):
    assert rules.parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["20", "twenty", "0m", "m", "-5m"])
def test_a_bad_budget_names_the_flag_and_the_form(text):
    with pytest.raises(ConfigError, match=r"--budget .*(20m, 90s, 1h30m|above zero)"):
        rules.parse_budget(text)


def test_mask_width_is_the_width_of_a_strip_and_the_radius_of_a_disc():
    strip = np.zeros((100, 100), bool)
    strip[40:43, 10:90] = True  # 3 px wide, 80 long
    assert mask_width(strip) == pytest.approx(3, rel=0.05)
    yy, xx = np.mgrid[:200, :200]
    disc = (yy - 100) ** 2 + (xx - 100) ** 2 < 40**2
    # A pixel disc's 4-neighbour boundary is 4/pi longer than its circle: r * pi / 4.
    assert mask_width(disc) == pytest.approx(40 * np.pi / 4, rel=0.05)
    assert mask_width(np.zeros((9, 9), bool)) is None
    assert mask_width(np.ones((9, 9), bool)) is None  # no background: no boundary


def test_thin_structures_train_on_native_crops_and_thick_ones_resized():
    vessels = _fingerprint()
    crops, why = rules.native_crops(vessels, 256)
    assert crops and "2.3 px wide" in why and "0.5 px resized to 256" in why
    pets = _fingerprint(size_median=[414, 364], short_side=364, structure_width=65.4)
    crops, why = rules.native_crops(pets, 64)
    assert not crops and "stay 11 px at 64 px" in why
    small = _fingerprint(size_median=[128, 128], short_side=128)
    assert rules.native_crops(small, 128)[0] is False  # the images are the training size
    assert rules.native_crops(small, 64)[0] is True  # 2.3 px halved


def test_the_size_ladder_steps_down_to_the_floor_in_the_models_multiple():
    assert rules.size_ladder(320, 32) == [320, 224, 160, 96, 64]
    assert rules.size_ladder(288, 8) == [288, 216, 160, 120, 88, 64]
    assert rules.size_ladder(48, 16) == [48]  # images smaller than the floor
    assert rules.crop_size(_fingerprint(), 32) == 256
    assert rules.crop_size(_fingerprint(short_side=200), 32) == 192


def test_the_batch_cap_leaves_steps_in_an_epoch():
    assert rules.batch_cap(27) == 4
    assert rules.batch_cap(270) == 64
    assert rules.batch_cap(5) == 2


def test_recipes_follow_crops_colour_and_run_length():
    installed = {"type1", "type3", "microscopy", "natural"}
    fp = _fingerprint()
    assert rules.recipe_choice(fp, True, 10, installed, DEFAULTS)[0] == "microscopy"
    assert rules.recipe_choice(fp, False, 10, installed, DEFAULTS)[0] == "type1"
    assert rules.recipe_choice(fp, False, 200, installed, DEFAULTS)[0] == "type3"
    assert rules.recipe_choice(_fingerprint(grey=True), False, 200, installed, DEFAULTS)[0] == (
        "type1"
    )
    name, why = rules.recipe_choice(fp, True, 10, {"type3"}, DEFAULTS)
    assert name == "type3" and "'microscopy' is not installed" in why


def test_the_schedule_fits_the_budget_with_validation_and_checkpoints_counted():
    costs = rules.Costs(setup=10, epoch=20, valid=15, test=30, last=2, best=1)
    s = rules.fit_schedule(costs, budget=600, epochs=None)
    assert s.seconds <= 600
    assert rules.total_seconds(costs, s.epochs + 1, s.validate_every, s.save_every) > 600
    validations = rules.events(s.epochs, s.validate_every)
    assert validations * (costs.valid + costs.best) <= rules.VALIDATION_SHARE * s.epochs * 20
    assert rules.events(s.epochs, s.save_every) * 2 <= rules.CHECKPOINT_SHARE * s.epochs * 20
    assert rules.fit_schedule(costs, budget=60, epochs=None).epochs == 0  # not one epoch
    fixed = rules.fit_schedule(costs, budget=None, epochs=7)
    assert fixed.epochs == 7 and fixed.seconds == rules.total_seconds(costs, 7, *_spacing(fixed))
    capped = rules.fit_schedule(costs, budget=10**7, epochs=None)
    assert capped.epochs == rules.MAX_EPOCHS


def _spacing(s: rules.Schedule) -> tuple[int, int]:
    return s.validate_every, s.save_every


def test_rare_foreground_and_classes_choose_the_loss():
    loss, options, why = rules.loss_choice(_fingerprint(foreground=0.3), DEFAULTS)
    assert (loss, options) == ("bce_dice", {}) and "foreground 30%" in why
    loss, options, why = rules.loss_choice(_fingerprint(), DEFAULTS)
    assert loss == "bce_dice" and "foreground 1.1%" in why
    assert options == ({"pos_weight": 92.8} if rules.POS_WEIGHT_RULE["use"] else {})
    collar = _fingerprint(
        classes=["background", "pet", "collar"],
        class_shares={"background": 0.7, "pet": 0.28, "collar": 0.02},
        class_weights=[0.4, 1.0, 14.0],
    )
    loss, options, why = rules.loss_choice(collar, DEFAULTS)
    assert loss == "ce_dice" and "rare collar" in why


# ----------------------------------------------------------------------------- batch size


class FakeGpu:
    """A device of ``limit`` bytes where a step holds ``resident`` plus ``per_image`` per
    image, running out of memory (as CUDA raises it) above ``oom_above`` images."""

    where = "GPU"

    def __init__(self, limit: int, per_image: int, oom_above: int | None = None) -> None:
        self._limit, self.per_image, self.oom_above = limit, per_image, oom_above
        self.tried: list[int] = []

    def limit(self) -> int:
        return self._limit

    def peak(self, step, *, batch: int, resident: int) -> int:
        self.tried.append(batch)
        if self.oom_above is not None and batch > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        step()
        return resident + batch * self.per_image


def _probe(model: str, size: int = 32, classes: tuple[str, ...] = ()) -> StepProbe:
    from segkit.build import resolve_runtime

    config = RunConfig(model=model, image_size=size, loss="bce_dice", device="cpu")
    task = Task(classes)
    if classes:
        config = RunConfig(model=model, image_size=size, loss="ce_dice", device="cpu")
    return StepProbe(config, resolve_runtime(config), task, {})


def test_on_a_gpu_the_batch_is_the_largest_that_fits_the_measured_memory(tiny_model):
    probe = _probe(tiny_model)
    resident = probe.resident()
    gpu = FakeGpu(limit=resident + 20 * 2**20, per_image=2**20)  # room for 20 images
    search = fit_batch(probe, gpu, BatchPolicy(start=2, cap=64, grow_while_faster=False, steps=1))
    assert search.batch == 16
    assert gpu.tried == [2, 4, 8, 16, 32]
    assert search.trials[-1].fits is False and "needs" in search.stopped
    assert all(t.seconds and t.seconds > 0 for t in search.trials if t.fits)


def test_running_out_of_memory_is_caught_and_the_last_batch_that_fit_is_kept(tiny_model):
    probe = _probe(tiny_model)
    gpu = FakeGpu(limit=2**40, per_image=1, oom_above=8)
    search = fit_batch(probe, gpu, BatchPolicy(start=2, cap=64, grow_while_faster=False, steps=1))
    assert search.batch == 8
    assert "out of memory (OutOfMemoryError)" in search.stopped
    gpu = FakeGpu(limit=2**40, per_image=1, oom_above=3)  # the start does not fit: go down
    assert (
        fit_batch(probe, gpu, BatchPolicy(start=8, cap=64, grow_while_faster=False, steps=1)).batch
        == 2
    )
    gpu = FakeGpu(limit=2**40, per_image=1, oom_above=0)
    with pytest.raises(ConfigError, match=r"not even one image fits .* smaller --image-size"):
        fit_batch(probe, gpu, BatchPolicy(start=2, cap=64, grow_while_faster=False, steps=1))


def test_the_data_caps_the_batch_and_k_classes_are_probed_with_class_maps(tiny_model):
    probe = _probe(tiny_model, classes=("background", "a", "b"))
    assert probe.batch(2).masks.dtype == torch.uint8
    gpu = FakeGpu(limit=2**40, per_image=1)
    search = fit_batch(probe, gpu, BatchPolicy(start=2, cap=8, grow_while_faster=False, steps=1))
    assert search.batch == 8 and "exceed the cap of 8" in search.stopped


def test_on_the_cpu_the_batch_grows_only_while_it_is_faster_per_image(tiny_model, monkeypatch):
    probe = _probe(tiny_model)
    # Seconds per step: 8 images 1.0 s, 16 images 1.5 s (1.33x faster per image), 32
    # images 3.0 s (no faster): the search keeps 16.
    monkeypatch.setattr(
        StepProbe,
        "seconds",
        lambda self, batch, steps=3: {8: 1.0, 16: 1.5, 32: 3.0}[len(batch.images)],
    )
    host = machine_mod.HostMemory(available=2**40)
    search = fit_batch(probe, host, BatchPolicy(start=8, cap=64, grow_while_faster=True))
    assert search.batch == 16
    assert "1.00x as fast per image as 16" in search.stopped


def test_host_memory_available_is_meminfos_else_the_physical_memory(monkeypatch):
    import io
    import os

    meminfo = "MemTotal:       4000 kB\nMemAvailable:   1000 kB\n"
    monkeypatch.setattr(machine_mod, "open", lambda path: io.StringIO(meminfo), raising=False)
    assert machine_mod.host_available() == 1000 * 1024
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    meminfo = "MemTotal:       4000 kB\n"  # a kernel without MemAvailable
    assert machine_mod.host_available() == physical

    def unreadable(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(machine_mod, "open", unreadable, raising=False)
    assert machine_mod.host_available() == physical


def test_host_memory_counts_what_autograd_saves(tiny_model):
    probe = _probe(tiny_model, size=64)
    host = machine_mod.HostMemory(available=2**40)
    small = host.peak(lambda: probe.run(probe.batch(2)), batch=2, resident=0)
    large = host.peak(lambda: probe.run(probe.batch(8)), batch=8, resident=0)
    assert 3 * small < large < 5 * small  # activations grow with the batch


# ----------------------------------------------------------------------------- the file


def _plan(tmp_path):
    from segkit.plan.machine import Machine
    from segkit.plan.measure import BatchSearch, Trial
    from segkit.plan.planner import Plan

    fp = _fingerprint()
    settings = {
        "dataset": "synthetic",
        "dataset_options": {"variant": "vessels", "size": [1500, 1100], "count": 40},
        "model": "timm_unet",
        "model_options": {"encoder": "resnet18"},
        "loss": "bce_dice",
        "loss_options": {},
        "recipe": "microscopy",
        "image_size": 256,
        "batch_size": 4,
        "epochs": 14,
        "lr": 0.001,
        "schedule": "cosine",
        "warmup_epochs": 0.5,
        "eval_size": "native",
        "validate_every": 7,
        "save_every": 2,
        "grid_images": 4,
        "out": str(tmp_path / "runs"),
    }
    choices = [
        rules.Choice("model", "timm_unet (resnet18)", "why the model"),
        rules.Choice("loss", "bce_dice", "why the loss"),
        rules.Choice("image_size", "256 crop", "why crops"),
        rules.Choice("recipe", "microscopy", "why the recipe"),
        rules.Choice("eval_size", "native", "why native"),
        rules.Choice("batch_size", "4", "why 4"),
        rules.Choice("schedule", "cosine, lr 0.001", "why cosine"),
        rules.Choice("epochs", "14", "why 14"),
        rules.Choice("validate_every", "7", "why 7"),
        rules.Choice("save_every", "2", "why 2"),
        rules.Choice("grid_images", "4", "why 4 images"),
        rules.Choice("predict", "--mode whole", "why whole"),
    ]
    timing = RunTiming(5.0, 2.0, 1.0, 7, 1.2, 3, 10, 3.0, 1.5, 0.5, 4)
    return Plan(
        settings=settings,
        choices=choices,
        fingerprint=fp,
        machine=Machine("cpu", "cpu", 2**33, "host", 2, 1, 3.0),
        timing=timing,
        schedule=rules.Schedule(14, 7, 2, 170.0),
        budget=180.0,
        batch=BatchSearch(4, [Trial(4, True, 10, 1.0)], "cap"),
        predict_mode="whole",
    )


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_a_plan_file_reads_back_as_the_planned_configuration(tmp_path, suffix):
    from segkit.plan import write_plan

    plan = _plan(tmp_path)
    path = write_plan(plan, tmp_path / f"plan{suffix}")
    assert RunConfig.from_file(path).to_dict() == plan.config().to_dict()
    text = path.read_text()
    if suffix == ".json":
        assert json.loads(text)["image_size"] == 256
    else:  # each reason is a comment above its setting
        assert "# image_size: 256 crop -- why crops\nimage_size" in text.replace(
            ": 256\n", " = 256\n"
        )
        assert "--mode whole -- why whole" in text
        assert f"segkit run --config {path}" in text


def test_a_plan_file_is_not_overwritten_without_force_nor_written_with_another_suffix(tmp_path):
    from segkit.plan import write_plan

    plan = _plan(tmp_path)
    write_plan(plan, tmp_path / "plan.toml")
    with pytest.raises(ConfigError, match=r"plan.toml: exists .* --force"):
        write_plan(plan, tmp_path / "plan.toml")
    write_plan(plan, tmp_path / "plan.toml", force=True)
    with pytest.raises(ConfigError, match=r"plan.ini: a plan is written as .toml, .yaml or .json"):
        write_plan(plan, tmp_path / "plan.ini")


def test_the_plan_prints_on_one_screen_one_line_a_choice(tmp_path):
    plan = _plan(tmp_path)
    lines = plan.lines()
    assert len(lines) <= 24
    for choice in plan.choices:
        assert sum(1 for line in lines if line.lstrip().startswith(choice.key + " ")) == 1


def test_a_smaller_budget_trains_smaller_images_so_that_enough_epochs_fit():
    from segkit.plan.planner import _fit_size

    pets = _fingerprint(
        size_median=[414, 364], short_side=364, structure_width=65.4,
        images={"train": 300, "valid": 50, "test": 100},
    )  # fmt: skip
    ladder = rules.size_ladder(rules.top_size(pets, 32), 32)
    timed = (ladder[-1], 0.01)  # 10 ms a training image at the smallest size
    sizes = {}
    for budget in (60.0, 600.0, 6000.0):
        size, epochs = _fit_size(ladder, timed, pets, budget, crops=False)
        assert size in ladder and (epochs >= rules.MIN_EPOCHS or size == ladder[-1])
        sizes[budget] = size
    assert sizes[60.0] < sizes[600.0] <= sizes[6000.0] == ladder[0]


def test_the_command_refuses_model_options_without_a_model_and_a_bad_budget(
    tmp_path, capsys, monkeypatch
):
    from segkit.cli import main

    monkeypatch.chdir(tmp_path)  # where the default --out, plan.toml, would go

    assert main(["plan", str(tmp_path), "--encoder", "resnet50"]) == 2
    assert "--encoder and --model-opt need --model" in capsys.readouterr().err
    assert main(["plan", str(tmp_path), "--budget", "soon"]) == 2
    assert "--budget 'soon': expected a duration such as 20m" in capsys.readouterr().err
    assert not (tmp_path / "plan.toml").exists()


# ----------------------------------------------------------------------------- end to end


def _vessels(tmp_path_factory):
    from segkit_datasets.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("plan-vessels")
    write_synthetic(root, count=8, seed=3, variant="vessels", size=(1024, 768))
    return root


@pytest.mark.slow
def test_a_third_party_model_on_thin_structures_gets_native_crops_and_the_plan_runs(
    tiny_model, tmp_path, tmp_path_factory, capsys
):
    from segkit.cli import main

    data = _vessels(tmp_path_factory)
    plan_file = tmp_path / "plan.toml"
    argv = ["plan", str(data), "--model", tiny_model, "--epochs", "1", "--device", "cpu"]
    assert main([*argv, "--out", str(plan_file), "-q"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) <= 24  # the plan on one screen
    config = RunConfig.from_file(plan_file)
    assert config.model == tiny_model and config.recipe == DEFAULTS["native_recipe"]
    assert config.image_size == 256 and config.image_size % 8 == 0
    assert config.eval_size == "native" and config.max_time is None  # --epochs: no budget
    assert "native crops" in out and "--mode auto" in out and "whole images" in out
    # A 256 px crop is 8% of a 1024x768 image: 12 crops of each an epoch cover it once.
    assert config.crops_per_image == 12
    assert "crops_per_image  12" in out and "12 crops an epoch cover its area about once" in out
    assert "# crops_per_image: 12 -- a 256 px crop is 8% of a 1024x768" in plan_file.read_text()
    # The plan re-runs as a configuration: `segkit run --config plan.toml`.
    assert main(["run", "--config", str(plan_file), "--out", str(tmp_path / "runs"), "-q"]) == 0
    run_dir = next((tmp_path / "runs").glob("*/summary.json")).parent
    ran = json.loads((run_dir / "config.json").read_text())
    assert (ran["model"], ran["recipe"], ran["image_size"]) == (tiny_model, "microscopy", 256)
    assert ran["epochs"] == 1 and ran["eval_size"] == "native"
    assert ran["crops_per_image"] == 12
    train = len(registry.create("datasets", "synthetic", str(data)).samples("train"))
    # The batch is capped by the 12 crops of each image an epoch, not by the 5 images
    # (which allowed 2), and the larger epoch trains in full batches (the last, partial,
    # left out).
    batch = ran["batch_size"]
    assert rules.batch_cap(train) == 2 < batch <= rules.batch_cap(12 * train)
    assert int(rows(run_dir)[0]["train_images"]) == 12 * train // batch * batch


@pytest.mark.slow
def test_pets_are_resized_within_a_budget(tiny_model, tiny_pets, tmp_path, capsys):
    from segkit.cli import main

    plan_file = tmp_path / "plan.yaml"
    argv = ["plan", str(tiny_pets), "--model", tiny_model, "--budget", "40s", "--device", "cpu"]
    assert main([*argv, "--out", str(plan_file), "--json", "-q"]) == 0
    plan = json.loads(capsys.readouterr().out)
    config = RunConfig.from_file(plan_file)
    why = {c["key"]: c for c in plan["choices"]}
    # Resized: the light recipe for a short run, the lab's for a long one (the tiny model
    # may fit 50 epochs in 40 s); never the native-crop recipe.
    assert config.recipe in (DEFAULTS["light_recipe"], DEFAULTS["recipe"])
    assert "epochs" in why["recipe"]["reason"] and config.eval_size == "native"
    assert "resized" in why["image_size"]["reason"] and why["predict"]["shown"] == "--mode auto"
    assert plan["predict_mode"] == "resize" and "resized to" in why["predict"]["reason"]
    assert config.image_size % 8 == 0 and config.epochs >= 1
    # The estimate (setup, epochs, validations, checkpoints, test and reports) fits.
    assert plan["budget_s"] == 40 and 0 < plan["schedule"]["seconds"] <= 40
    assert plan["settings"]["epochs"] == config.epochs
    # The run stops training in time on a busier machine: the budget less the test.
    test_s = plan["timing"]["test_s"]
    assert (
        config.max_time == rules.duration(40 - test_s)
        and "test and reports" in (why["max_time"]["reason"])
    )


@pytest.mark.slow
def test_on_a_faked_gpu_the_plan_takes_the_largest_batch_that_fits(
    tiny_model, tmp_path, tmp_path_factory, monkeypatch
):
    """The GPU path of make_plan, on the CPU: device memory faked (batches above 2 run out
    of it), checkpoints costed as the engine writes them on an accelerator (a snapshot,
    the write in a thread)."""
    from segkit.plan.planner import make_plan
    from segkit.training import engine
    from segkit_datasets.synthetic import write_synthetic

    data = write_synthetic(tmp_path_factory.mktemp("plan-pets48"), count=48, seed=5)
    monkeypatch.setattr(engine, "_write_in_background", lambda runtime: True)
    gpu = FakeGpu(limit=2**40, per_image=1, oom_above=2)
    out = tmp_path / "runs"
    base = RunConfig.from_dict(
        {"data": str(data), "model": tiny_model, "device": "cpu", "out": str(out)}
    )
    plan = make_plan(base, epochs=1, model_given=True, memory=gpu)
    assert plan.settings["batch_size"] == 2 and gpu.tried[:2] == [2, 4]
    why = next(c for c in plan.choices if c.key == "batch_size").reason
    assert why.startswith("largest that fits") and "4: no fit" in why
    assert "out of memory" in why
    assert plan.timing.last_s < 1.0 and not list(out.glob(".segkit-plan-*"))


# ----------------------------------------------------------------------------- as a user


def _write_folder(root, count=8, size=64, corrupt=()):
    """A binary ``folder`` dataset of ``count`` images with a thick bar each; the names in
    ``corrupt`` get an undecodable image."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        mask[10:30, 5 + i : 40 + i] = 255
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"s{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"s{i}.png")
    for name in corrupt:
        (root / "images" / f"{name}.png").write_bytes(b"not an image")
    return root


def test_the_printed_commands_quote_a_path_with_spaces(tmp_path):
    from segkit.plan import write_plan
    from segkit.plan.files import run_command

    path = tmp_path / "my plans" / "cells plan.toml"
    assert run_command(path) == f"segkit run --config '{path}'"
    write_plan(_plan(tmp_path), path)
    assert f"# run it: segkit run --config '{path}'\n" in path.read_text()
    assert run_command("plan.toml") == "segkit run --config plan.toml"  # no quotes needed


def test_data_that_would_stop_a_run_is_refused_with_its_problems_and_the_check_command(
    tmp_path, capsys, monkeypatch
):
    from segkit.cli import main

    data = _write_folder(tmp_path / "my cells", corrupt=["s3"])
    monkeypatch.chdir(tmp_path)
    assert main(["plan", str(data), "--dataset-opt", "split_seed=1", "-q"]) == 2
    err = capsys.readouterr().err
    assert "the data check found 1 problem that would stop a run:" in err
    assert f"{data}/images/s3.png: cannot decode image" in err  # the problem itself
    assert f"the whole report: segkit data check '{data}' --dataset-opt split_seed=1" in err
    assert "or plan without the files that cannot be decoded: --skip-bad-samples" in err
    # With --skip-bad-samples an undecodable file stops neither the plan nor the run.
    from segkit.data.check import check_configured
    from segkit.plan.planner import blocking

    config = RunConfig.from_dict({"data": str(data), "skip_bad_samples": True})
    report = check_configured(config, progress=False)
    assert report.errors and blocking(report, config) == []
    assert blocking(report, RunConfig.from_dict({"data": str(data)})) == report.errors
    assert not (tmp_path / "plan.toml").exists()
    # An option the dataset does not take is named, not a traceback.
    assert main(["plan", str(data), "--dataset-opt", "colour=1", "-q"]) == 2
    assert capsys.readouterr().err == (
        "segkit: error: --dataset-opt colour=1: dataset 'folder' has no option 'colour'; it "
        "takes: valid_fraction, test_fraction, split_seed, classes, palette, ignore, "
        "ignore_color, values\n"
    )


def test_the_batch_cap_says_where_it_comes_from():
    assert "24 train images: an epoch keeps at least 4 optimizer steps" in (
        rules.batch_cap_reason(24)
    )
    assert "batch norm needs 2 images" in rules.batch_cap_reason(6)
    assert "another learning rate" in rules.batch_cap_reason(1000)


def test_the_plan_notes_few_evaluation_images_sparse_crops_and_ignored_pixels():
    from segkit.plan.planner import data_notes

    few = _fingerprint(images={"train": 6, "valid": 1, "test": 1}, size_median=[256, 256])
    (note,) = data_notes(few, crops=False, size=192, epochs=40)
    assert note.startswith("valid 1 image and test 1 image: scores of so few images")
    large = _fingerprint(images={"train": 4, "valid": 10, "test": 10}, size_median=[2000, 1500])
    (note,) = data_notes(large, crops=True, size=256, epochs=43)
    assert "one 256 px crop of each train image, 2% of a 2000x1500 image" in note
    assert "about 0.9 times" in note
    assert data_notes(large, crops=False, size=256, epochs=43) == []  # resized: all of it
    mixed = _fingerprint(classes=["background", "a"], ignored=0.12, images=large.images)
    (note,) = data_notes(mixed, crops=False, size=128, epochs=10)
    assert note.startswith("12% of the train pixels are 'ignore' (mask value 255)")


def test_small_crops_of_large_images_take_several_crops_an_epoch():
    from segkit.plan.planner import data_notes

    large = _fingerprint(images={"train": 40, "valid": 5, "test": 5}, size_median=[2048, 1536])
    # 256 px is 2% of 2048x1536: 48 crops would cover it, capped at 16.
    n, why = rules.crops_per_image(large, 256)
    assert n == rules.MAX_CROPS_PER_IMAGE == 16
    assert why == (
        "a 256 px crop is 2% of a 2048x1536 image: 48 crops would cover it once an epoch, "
        "capped at 16"
    )
    # 512 px of 1024x1024: a quarter, no more crops; 400 px of it (15%): 7 cover it.
    square = _fingerprint(size_median=[1024, 1024])
    assert rules.crops_per_image(square, 512) == (1, "")
    n, why = rules.crops_per_image(square, 400)
    assert n == 7 and why.endswith("7 crops an epoch cover its area about once")
    # A budget of 45 one-crop epochs keeps 10 epochs of 4 crops.
    n, why = rules.crops_per_image(square, 400, fitted=45)
    assert n == 4
    assert why.endswith(
        "the budget holds 45 one-crop epochs, so 4 (at least 10 epochs to validate)"
    )
    assert rules.crops_per_image(square, 400, fitted=12)[0] == 1
    # The note says what the epochs see with them.
    (note,) = data_notes(large, crops=True, size=256, epochs=10, crops_per_image=16)
    assert note == (
        "an epoch is 16 256 px crops of each train image, 33% of a 2048x1536 image: the 10 "
        "epochs see each image's area about 3.3 times"
    )


def test_the_plan_chooses_crops_per_image_and_fits_the_longer_epochs(monkeypatch):
    # 16 images of 2048x1536 on 256 px crops: 4 steps of 4 an epoch of one crop each, 2 s.
    fake = _FakeRun(per_pixel=2.0 / 256**2)
    p = _planner(monkeypatch, fake, size=256, ladder=[256], budget=None, crops=True)
    p.epochs = 10
    p.fp = _fingerprint(images={"train": 16, "valid": 5, "test": 5}, size_median=[2048, 1536])
    p.fit_batch_and_schedule()
    assert fake.crops == [16]  # timed with the most crops 256 px takes, full batches
    one_crop = fake.per_pixel * 256**2
    p.choose_crops_per_image()
    assert p.crops_n == 16 and p.timing.steps_per_epoch == 16 * 16 // 4
    assert p.timing.epoch_s == pytest.approx(one_crop * 16)  # 64 steps, not 4
    assert p.schedule.epochs == 10  # as asked; the estimate counts the longer epochs
    assert p.schedule.seconds > 10 * p.timing.epoch_s
    # Within a budget: the crops leave at least MIN_EPOCHS epochs, fitted again.
    fake = _FakeRun(per_pixel=2.0 / 256**2)
    p = _planner(monkeypatch, fake, size=256, ladder=[256], budget=300.0, crops=True)
    p.fp = _fingerprint(images={"train": 16, "valid": 5, "test": 5}, size_median=[2048, 1536])
    p.fit_batch_and_schedule()
    fitted = p.schedule.epochs
    p.choose_crops_per_image()
    assert p.crops_n == fitted // rules.MIN_EPOCHS > 1
    assert rules.MIN_EPOCHS <= p.schedule.epochs < fitted and p.schedule.seconds <= 300
    p.size_why, p.recipe_why, p.machine, p.no_native_recipe = "thin", "crops", None, False
    p.settings["recipe"] = "microscopy"
    plan = p.plan()
    assert plan.settings["crops_per_image"] == p.crops_n
    (line,) = [c for c in plan.choices if c.key == "crops_per_image"]
    assert line.shown == str(p.crops_n) and "one-crop epochs" in line.reason
    assert plan.config().crops_per_image == p.crops_n
    assert any(n.startswith(f"an epoch is {p.crops_n} 256 px crops") for n in plan.notes)


class _FakeRun:
    """``time_run`` and ``fit_batch`` for :class:`_Planner` without a model: an epoch costs
    ``per_pixel`` seconds a pixel of the training size (times the recipe's factor)."""

    def __init__(
        self, per_pixel: float, recipe_factor: dict[str, float] | None = None, images: int = 16
    ):
        self.per_pixel, self.recipe_factor, self.sizes = per_pixel, recipe_factor or {}, []
        self.images, self.crops = images, []

    def time_run(self, config, runtime):
        """An epoch of one crop (or image) of each of ``images`` costs the same whatever
        the batch; of N crops, N times that."""
        self.sizes.append(config.image_size)
        self.crops.append(config.crops_per_image)
        epoch = self.per_pixel * config.image_size**2 * self.recipe_factor.get(config.recipe, 1)
        steps = max(1, self.images * config.crops_per_image // config.batch_size)
        step_s = epoch * config.batch_size / self.images
        return RunTiming(1.0, 0.0, 0.0, steps, step_s, 1, 1, 0.01, 0.01, 0.01, 8)


class _CpuRuntime:
    device = torch.device("cpu")


def _planner(monkeypatch, fake, *, size, ladder, budget, crops=False, rough=12):
    from segkit.plan import planner as planner_mod
    from segkit.plan.measure import BatchSearch

    monkeypatch.setattr(planner_mod, "StepProbe", lambda *a, **k: None)
    monkeypatch.setattr(planner_mod, "release", lambda device: None)
    monkeypatch.setattr(planner_mod, "fit_batch", lambda *a, **k: BatchSearch(4))
    monkeypatch.setattr(planner_mod, "time_run", fake.time_run)
    p = planner_mod._Planner(RunConfig(), budget, None, lambda line: None)
    p.fp = _fingerprint(size_median=[512, 512], short_side=512, structure_width=30.0)
    p.installed = {"models": set(), "recipes": {"type1", "type3", "microscopy"}}
    p.runtime, p.task, p.loss_options, p.memory = _CpuRuntime(), None, {}, None
    p.settings.update(model="timm_unet", recipe="type1")
    p.size, p.ladder, p.crops, p.rough_epochs = size, ladder, crops, rough
    p.start, p.largest = 8, False
    return p


def test_the_batch_of_a_few_large_images_is_capped_by_their_crops_not_the_images(monkeypatch):
    """4 slides of 2048x1536 on 256 px crops take 16 crops of each an epoch: 64 samples,
    batches up to 16 (the 4 images alone capped it at 2, batch norm's least)."""
    from segkit.plan import planner as planner_mod
    from segkit.plan.measure import BatchSearch

    fake = _FakeRun(per_pixel=2.0 / 256**2, images=4)
    p = _planner(monkeypatch, fake, size=256, ladder=[256], budget=None, crops=True)
    p.epochs = 10
    p.fp = _fingerprint(images={"train": 4, "valid": 2, "test": 2}, size_median=[2048, 1536])
    policies = []

    def largest_allowed(probe, memory, policy):
        policies.append(policy)
        return BatchSearch(policy.cap, stopped=f"stopped at the cap of {policy.cap}")

    monkeypatch.setattr(planner_mod, "fit_batch", largest_allowed)
    p.fit_batch_and_schedule()
    (policy,) = policies
    assert policy.cap == 16 and policy.start == 8
    assert policy.cap_why == (
        "4 train images x 16 crops an epoch: an epoch keeps at least 4 optimizer steps"
    )
    assert fake.crops == [16]
    p.choose_crops_per_image()
    assert (p.crops_n, p.search.batch, p.timing.steps_per_epoch) == (16, 16, 4)
    # A budget that keeps fewer crops brings the batch down to their cap, the step's time
    # in proportion: 2 crops of 4 images are 8 samples, batches of 2.
    fake = _FakeRun(per_pixel=2.0 / 256**2, images=4)
    p = _planner(monkeypatch, fake, size=256, ladder=[256], budget=None, crops=True)
    p.fp = _fingerprint(images={"train": 4, "valid": 2, "test": 2}, size_median=[2048, 1536])
    p.epochs = 10
    monkeypatch.setattr(planner_mod, "fit_batch", largest_allowed)
    p.fit_batch_and_schedule()
    step_s = p.timing.step_s
    assert p.search.batch == 16
    most = rules.crops_per_image
    monkeypatch.setattr(  # what a budget does: fewer crops than the most a size takes
        rules, "crops_per_image", lambda fp, size, fitted=None: (2, "fewer")
    )
    monkeypatch.setattr(p, "_most_crops", lambda size: most(p.fp, size)[0])
    p.choose_crops_per_image()
    assert (p.crops_n, p.search.batch, p.timing.steps_per_epoch) == (2, 2, 4)
    assert p.timing.step_s == pytest.approx(step_s * 2 / 16)
    assert p.search.stopped.endswith(
        "; then 2, as the budget keeps fewer crops (4 train images x 2 crops an epoch: an "
        "epoch keeps at least 4 optimizer steps)"
    )


def test_the_batch_cap_counts_crops():
    assert rules.batch_cap(4 * 16) == 16 and rules.batch_cap(4) == 2
    assert rules.batch_cap_reason(4, 16).startswith("4 train images x 16 crops an epoch:")
    assert rules.batch_cap_reason(300, 16) == rules.batch_cap_reason(300)


def test_a_pessimistic_first_estimate_is_corrected_by_measuring_one_size_up(monkeypatch):
    # An epoch at 256 px takes 4 s, at 384 px 9 s: 120 s hold 10 epochs at 384 (the
    # first estimate said 256).
    fake = _FakeRun(per_pixel=4.0 / 256**2)
    p = _planner(monkeypatch, fake, size=256, ladder=[512, 384, 256, 192], budget=120.0)
    p.fit_batch_and_schedule()
    assert fake.sizes == [256, 384] and p.size == 384
    assert p.schedule.epochs >= rules.MIN_EPOCHS and p.schedule.seconds <= 120
    assert (
        "256 px: 29 epochs fit, more than the first estimate: measured again at 384" in (p.notes[0])
    )
    # From further down, one jump to the largest size the measured costs say fits.
    fake = _FakeRun(per_pixel=4.0 / 256**2)
    p = _planner(monkeypatch, fake, size=128, ladder=[512, 384, 256, 192, 128], budget=120.0)
    p.fit_batch_and_schedule()
    assert fake.sizes == [128, 384] and p.size == 384


def test_a_step_up_that_does_not_fit_goes_back_to_the_size_that_did(monkeypatch):
    # The larger size measures slower than its pixels say (a cache cliff): back to 256.
    fake = _FakeRun(per_pixel=4.0 / 256**2)
    slow = fake.time_run

    def cliff(config, runtime):
        timing = slow(config, runtime)
        if config.image_size > 256:
            timing.step_s *= 3
        return timing

    fake.time_run = cliff
    p = _planner(monkeypatch, fake, size=256, ladder=[512, 384, 256, 192], budget=120.0)
    p.fit_batch_and_schedule()
    assert fake.sizes == [256, 384] and p.size == 256 and p.schedule.epochs == 29
    assert p.notes[-1] == "kept 256 px, where 29 epochs fit"


def test_the_recipe_follows_the_epochs_that_fit_not_the_first_estimate(monkeypatch):
    # The first estimate said 12 epochs (type1); 60 fit: type3, timed again with it.
    fake = _FakeRun(per_pixel=1.0 / 64**2 / 100, recipe_factor={"type3": 1.2})
    p = _planner(monkeypatch, fake, size=64, ladder=[64], budget=60.0)
    p.fit_batch_and_schedule()
    assert p.settings["recipe"] == "type3" and fake.sizes == [64, 64]
    assert p.recipe_why.startswith(f"{p.schedule.epochs} epochs (50 or more)")
    assert "recipe type3, timed again" in p.notes[0]
    # And a short run keeps type1, its reason counting the epochs planned.
    fake = _FakeRun(per_pixel=2.0 / 64**2)
    p = _planner(monkeypatch, fake, size=64, ladder=[64], budget=60.0, rough=30)
    p.fit_batch_and_schedule()
    assert p.settings["recipe"] == "type1" and fake.sizes == [64]
    assert p.recipe_why.startswith(f"{p.schedule.epochs} epochs (under 50)")


def test_the_folder_is_given_as_dir_or_as_data_like_segkit_run_takes_it(tmp_path):
    """`segkit plan DIR` and `segkit plan --data DIR` plan the same folder (argparse took
    --data for an ambiguous --dataset/--dataset-opt); two different folders are refused."""
    from segkit.cli import build_parser
    from segkit.plan.cli import _base

    parser = build_parser()
    as_dir = _base(parser.parse_args(["plan", str(tmp_path)]))
    as_flag = _base(parser.parse_args(["plan", "--data", str(tmp_path)]))
    assert as_dir.data == as_flag.data == str(tmp_path)
    both = parser.parse_args(["plan", str(tmp_path), "--data", str(tmp_path / "other")])
    with pytest.raises(ConfigError, match=r"two folders; give one"):
        _base(both)
