"""The one build path: the runtime resolved once, parts built from a RunConfig, factory
contracts and declared capabilities."""

from __future__ import annotations

import os

import pytest
import torch

from segkit import build
from segkit.config import RunConfig
from segkit.contracts import contract_problems, declare, min_input_multiple
from segkit.errors import ConfigError, PluginNotFoundError
from segkit.system import workers as workers_mod

# --- runtime ---------------------------------------------------------------------------


def test_runtime_on_the_cpu_is_recorded_resolved():
    runtime = build.resolve_runtime(RunConfig(num_workers=None, seed=5))
    assert runtime.device == torch.device("cpu")
    assert runtime.precision.name == "fp32"  # auto is bf16 on GPUs only
    assert runtime.channels_last is False  # auto: on for CUDA only
    assert runtime.num_workers == build.default_workers()
    record = runtime.record()
    assert record["device"] == "cpu" and record["precision"] == "fp32"
    assert record["num_workers"] == build.default_workers() and record["seed"] == 5
    assert record["world_size"] == 1 and record["torch"] == torch.__version__


def test_runtime_keeps_what_was_asked():
    runtime = build.resolve_runtime(
        RunConfig(precision="bf16", channels_last=True, num_workers=0, device="cpu")
    )
    assert (runtime.precision.name, runtime.channels_last, runtime.num_workers) == ("bf16", True, 0)


def test_runtime_seeds_every_rng():
    build.resolve_runtime(RunConfig(seed=3))
    a = torch.rand(3)
    build.resolve_runtime(RunConfig(seed=3))
    assert torch.equal(a, torch.rand(3))


@pytest.mark.parametrize(
    ("name", "message"),
    [("tpu", r"^device='tpu': expected auto, cpu, cuda or cuda:N"), ("cuda:0", "no CUDA GPU")],
)
def test_bad_devices(name, message):
    if name.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # the CPU machine's check
    with pytest.raises(ConfigError, match=message):
        build.resolve_device(name)


def test_default_workers_is_between_one_and_eight() -> None:
    assert 1 <= build.default_workers() <= 8
    assert build.default_workers() == min(8, workers_mod.usable_cores())


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 2), (8, 8), (64, 8)])
def test_default_workers_follows_the_usable_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: int
) -> None:
    monkeypatch.setattr(workers_mod, "usable_cores", lambda: cores)
    assert build.default_workers() == workers


@pytest.mark.parametrize(
    ("cores", "local_world", "workers"),
    [(16, 1, 14), (16, 2, 7), (64, 8, 7), (2, 1, 1), (1, 1, 1)],
)
def test_default_workers_on_a_gpu_host_is_every_core_but_two(
    monkeypatch: pytest.MonkeyPatch, cores: int, local_world: int, workers: int
) -> None:
    # A GPU eats thousands of images a second: the loader gets the cores the training
    # loop does not need, shared among this host's processes.
    monkeypatch.setattr(workers_mod, "usable_cores", lambda: cores)
    assert build.default_workers("cuda", local_world) == workers
    assert build.default_workers(torch.device("cuda", 1)) == max(1, cores - 2)


def test_usable_cores_are_the_affinity_not_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    # A container or taskset limits the cores a process may run on; os.cpu_count() still
    # counts the host's.
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert workers_mod.usable_cores() == 3
    assert build.default_workers() == 3


# --- models ----------------------------------------------------------------------------


def test_image_size_is_checked_before_the_model_is_built(monkeypatch):
    import segkit_unet.resnet34_unet as r

    def refuse(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(r.ResNet34UNet, "__init__", refuse)
    with pytest.raises(ConfigError, match=r"^image_size=48 is not divisible by 32.*use 32 or 64"):
        build.build_model(RunConfig(model="resnet34_unet", image_size=48))


def test_the_core_attaches_the_input_check():
    model = build.create_model("unet").eval()
    assert model.min_input_multiple == 16
    with torch.no_grad(), pytest.raises(ConfigError, match=r"height=40, width=32.*\(48, 32\)"):
        model(torch.zeros(1, 3, 40, 32))
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 48, 32)).shape == (1, 1, 48, 32)


def test_the_public_create_model_checks_input_sizes_too():
    import segkit

    model = segkit.create_model("resnet34_unet").eval()
    with torch.no_grad(), pytest.raises(ConfigError, match="not divisible by 32"):
        model(torch.zeros(1, 3, 48, 48))


def test_timm_unet_declares_its_multiple_from_the_encoder_without_building_it():
    from segkit.registry import get

    factory = get("models", "timm_unet")
    assert min_input_multiple(factory, {"encoder": "resnet18"}) == 32
    assert min_input_multiple(factory, {"encoder": "convnext_atto"}) == 32
    with pytest.raises(ConfigError, match="timm has no model named 'resnett18'"):
        min_input_multiple(factory, {"encoder": "resnett18"})


def test_restoring_leaves_the_initial_weights_out(tmp_path):
    config = RunConfig(
        model="timm_unet",
        model_options={"encoder": "resnet18", "weights": str(tmp_path / "gone.pt")},
    )
    with pytest.raises(ConfigError, match="gone.pt: file not found"):
        build.build_model(config)
    assert isinstance(build.build_model(config, restoring=True), torch.nn.Module)


def test_a_misspelt_plugin_fails_before_anything_is_built():
    with pytest.raises(PluginNotFoundError, match="Did you mean 'unet'"):
        build.check_plugin_names(RunConfig(model="unett"))


def test_a_training_run_is_built_from_the_config(tiny_pets):
    config = RunConfig(
        data=str(tiny_pets), image_size=32, batch_size=4, num_workers=0, recipe="type1"
    )
    runtime = build.resolve_runtime(config)
    t = build.build_training(config, runtime)
    assert set(t.loaders) == {"train", "valid", "test"}
    assert t.steps_per_epoch == len(t.loaders["train"])
    assert isinstance(t.optimizer, torch.optim.Adam)
    assert t.recipe.name == "type1"
    assert t.model.min_input_multiple == 16
    assert t.bad_samples == []


def test_step_model_is_the_model_itself_on_one_process():
    model = torch.nn.Conv2d(3, 1, 1)
    runtime = build.resolve_runtime(RunConfig())
    assert build.step_model(model, RunConfig(), runtime) is model


# --- contracts -------------------------------------------------------------------------


def test_a_loader_without_shard_breaks_its_contract():
    def create_loader(
        dataset,
        split,
        recipe,
        batch_size,
        *,
        train,
        seed=0,
        num_workers=0,
        device="cpu",
        drop_last=False,
    ):
        raise AssertionError("never called")

    assert contract_problems("loaders", create_loader) == ["does not accept 'shard'"]


def test_keyword_catch_alls_accept_what_segkit_passes():
    def create(dataset, split, recipe, batch_size, **options):
        pass

    assert contract_problems("loaders", create) == []


@pytest.mark.parametrize(
    ("kind", "factory", "problem"),
    [
        ("models", lambda in_channels=3: None, "does not accept 'out_channels'"),
        ("losses", lambda weight: None, "requires 'weight', which segkit never passes"),
        ("recipes", lambda size=256: None, "does not accept 'image_size'"),
        ("datasets", lambda: None, "takes no argument 'root' (position 1)"),
        ("datasets", lambda path, **o: None, None),  # any name will do for a positional
    ],
)
def test_factory_signatures(kind, factory, problem):
    problems = contract_problems(kind, factory)
    assert len(problems) == (1 if problem else 0)
    assert not problem or problems[0].startswith(problem)


def test_declared_capabilities_are_checked():
    @declare(min_input_multiple=24)
    def bad(in_channels=3, out_channels=1):
        pass

    assert "declares min_input_multiple=24" in contract_problems("models", bad)[0]

    @declare(min_input_multiple=lambda depth=4, **_: 2**depth)
    def good(in_channels=3, out_channels=1, depth=4):
        pass

    assert contract_problems("models", good) == []
    assert min_input_multiple(good, {"depth": 3}) == 8
    with pytest.raises(ValueError, match="unknown capabilities"):
        declare(min_input_multipel=2)


def test_builtin_datasets_declare_what_they_can_do():
    from segkit.registry import default_registry

    reg = default_registry()
    assert callable(reg.info("datasets", "synthetic").capability("generate"))
    assert reg.info("datasets", "synthetic").capability("fetch") is None
    assert callable(reg.info("datasets", "oxford_pet").capability("fetch"))
    assert reg.info("datasets", "oxford_pet").capability("generate") is None
    assert reg.info("datasets", "folder").capability("generate") is None


def test_a_lone_last_training_image_is_dropped_other_partial_batches_kept() -> None:
    from segkit.build import lone_last_batch

    assert lone_last_batch(13, 4) and lone_last_batch(9, 8)
    assert not lone_last_batch(14, 4) and not lone_last_batch(12, 4)
    assert not lone_last_batch(5, 1)  # batch size 1: every batch is one image
    assert not lone_last_batch(13, 4, world=2)  # 7 per rank: a batch of 3 last
    assert lone_last_batch(9, 4, world=2)  # 5 per rank


@pytest.mark.parametrize(
    ("images", "batch", "world", "drop", "keep"),
    [
        (3312, 32, 1, True, False),  # 103 x 32 + 16: drop leaves the 16 out
        (3312, 16, 1, False, False),  # 207 full batches: nothing to drop
        (20, 32, 1, False, False),  # smaller than one batch: its one batch is kept
        (13, 4, 1, True, True),  # a lone last image: dropped by either rule
        (14, 4, 2, True, False),  # 7 per rank: 4 + 3
        (18, 4, 2, True, True),  # 9 per rank: 2 x 4 + 1, a lone image
        (22, 4, 2, True, False),  # 11 per rank: 2 x 4 + 3
    ],
)
def test_the_last_batch_rule(images, batch, world, drop, keep) -> None:
    """--last-batch drop leaves out a partial last batch when the epoch (per rank) also
    has a full one; keep leaves out only a batch of one image."""
    from segkit.build import drops_last_batch

    assert drops_last_batch(images, batch, world, "drop") is drop
    assert drops_last_batch(images, batch, world, "keep") is keep


@pytest.mark.slow  # reads and augments the pet set twice: ~2 s
@pytest.mark.parametrize(("rule", "sizes"), [("drop", [5, 5]), ("keep", [5, 5, 3])])
def test_the_training_loader_follows_the_last_batch_rule(tiny_pets, rule, sizes):
    """13 training images in batches of 5: ``drop`` (the default) trains one batch shape,
    ``keep`` every image; the schedule counts the batches trained; validation keeps all."""
    config = RunConfig(
        data=str(tiny_pets), image_size=32, batch_size=5, num_workers=0, recipe="type1",
        last_batch=rule,
    )  # fmt: skip
    t = build.build_training(config, build.resolve_runtime(config))
    assert [len(b.images) for b in t.loaders["train"]] == sizes
    assert t.steps_per_epoch == len(t.loaders["train"]) == len(sizes)
    assert sum(len(b.images) for b in t.loaders["valid"]) == 2


def test_the_data_checks_reading_threads_follow_the_usable_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cached data check (segkit.data.prepare) reads with as many threads as the full
    # check (segkit.data.check): the usable cores, up to 8, not the host's 64.
    from segkit.data import prepare

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(workers_mod, "usable_cores", lambda: 3)
    assert prepare.default_threads() == 3
