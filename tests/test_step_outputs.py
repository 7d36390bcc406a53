"""The first training step checks what the model and the loss returned
(segkit.training.outputs), through the real step on the CPU: a wrong output fails with one
message naming the plugin and its distribution, what it returned and what was expected,
before the loss or the metrics trip on it; and the check costs nothing after that step."""

from __future__ import annotations

import re

import pytest
import torch
from helpers import make_distribution

from segkit import registry
from segkit.config import RunConfig
from segkit.contracts import Batch
from segkit.errors import PluginContractError
from segkit.task import Task
from segkit.training import loops
from segkit.training.graphs import GraphStep
from segkit.training.loops import StepContext, TrainStep, train_one_epoch
from segkit.training.outputs import PluginRef
from segkit.training.precision import MixedPrecision, Precision
from segkit.training.runtime import Runtime

CPU = Runtime(torch.device("cpu"), Precision(), False)
MODEL = PluginRef("models", "odd", "model 'odd' from distribution 'segkit_odd' 0.2.0")
LOSS = PluginRef("losses", "oddloss", "loss 'oddloss' from distribution 'segkit_odd' 0.2.0")


class Net(torch.nn.Module):
    """A 3x3 convolution, then ``post`` on its output (the wrong thing a plugin returns)."""

    def __init__(self, out_channels: int = 1, post=None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, out_channels, 3, padding=1)
        self.post = post

    def forward(self, x: torch.Tensor):
        y = self.conv(x)
        return self.post(y) if self.post is not None else y


class Undeclared(torch.nn.Module):
    """Needs H and W divisible by 4 and declares nothing: 30 px in, 28 px out."""

    def __init__(self) -> None:
        super().__init__()
        self.down = torch.nn.Conv2d(3, 4, 4, stride=4)
        self.up = torch.nn.ConvTranspose2d(4, 1, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def _batches(n: int = 2, size: int = 8, batch: int = 2) -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    return [
        Batch(
            torch.randn(batch, 3, size, size, generator=g),
            (torch.rand(batch, 1, size, size, generator=g) > 0.5).float(),
        )
        for _ in range(n)
    ]


def _step(model, loss=None, runtime=CPU, plugins=(MODEL, LOSS), task=None) -> TrainStep:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    context = StepContext(
        model,
        loss or torch.nn.BCEWithLogitsLoss(),
        optimizer,
        runtime,
        task=task or Task(),
        plugins=plugins,
    )
    return TrainStep(context)


WRONG_MODELS = {
    "smaller H and W": (
        lambda: Net(post=lambda y: torch.nn.functional.avg_pool2d(y, 2)),
        r"returned a float32 tensor of shape \(2, 1, 4, 4\); expected logits: a float32 "
        r"tensor of shape \(2, 1, 8, 8\), \(N, out_channels=1, H, W\) of its \(2, 3, 8, 8\) "
        r"input; the output is 4x4 for a 8x8 input: upsample back to the input size, and if "
        r"the model needs H and W divisible by some number, declare it",
    ),
    "channels": (
        lambda: Net(out_channels=2),
        r"returned a float32 tensor of shape \(2, 2, 8, 8\); expected .*\(2, 1, 8, 8\).*; make "
        r"the last layer output the out_channels=1 it is given",
    ),
    "float64": (
        lambda: Net(post=lambda y: y.double()),
        r"returned a float64 tensor of shape \(2, 1, 8, 8\); expected logits: a float32 "
        r"tensor .*; do not cast the output",
    ),
    "integer": (
        lambda: Net(post=lambda y: (y > 0).long()),
        r"returned an int64 tensor .*; return the raw logits, before any threshold or argmax",
    ),
    "dict": (
        lambda: Net(post=lambda y: {"out": y}),
        r"returned a dict with keys 'out', not a tensor; expected logits: .*; return the "
        r"logits tensor alone",
    ),
    "tuple": (
        lambda: Net(post=lambda y: (y, y)),
        r"returned a tuple of 2 items, not a tensor",
    ),
}


@pytest.mark.parametrize("case", WRONG_MODELS)
def test_a_wrong_model_output_fails_the_first_step_naming_the_plugin(case: str) -> None:
    make, message = WRONG_MODELS[case]
    loss_calls = []

    def loss(logits, target):
        loss_calls.append(1)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)

    step = _step(make(), loss)
    with pytest.raises(PluginContractError) as info:
        train_one_epoch(step, _batches())
    text = str(info.value)
    assert text.startswith("model 'odd' from distribution 'segkit_odd' 0.2.0 returned ")
    assert re.search(message, text), text
    assert text.endswith(
        "Run segkit.testing.check_model('odd') to check it against every rule of its contract"
    )
    assert loss_calls == []  # caught before the loss saw the logits


def test_an_undeclared_size_multiple_is_caught_on_the_first_step() -> None:
    step = _step(Undeclared())
    with pytest.raises(PluginContractError, match=r"output is 28x28 for a 30x30 input.*"
                       r"@segkit.contracts.declare\(min_input_multiple=\.\.\.\)"):  # fmt: skip
        train_one_epoch(step, _batches(size=30))


def test_k_classes_expect_k_channels() -> None:
    task = Task(classes=("background", "cat", "dog"))
    step = _step(Net(out_channels=1), torch.nn.CrossEntropyLoss(), task=task)
    batches = [Batch(b.images, b.masks.long()) for b in _batches()]
    with pytest.raises(PluginContractError, match=r"out_channels=3, H, W"):
        train_one_epoch(step, batches)


def _float_loss(logits, target):
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target).item()


def _half_loss(logits, target):
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.half(), target.half())


def _detached_loss(logits, target):
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target).detach()


WRONG_LOSSES = {
    "python float": (
        _float_loss,
        r"returned a float \(0\.\d+\), not a tensor; .*; return the "
        r"tensor itself, not float\(loss\) or loss\.item\(\)",
    ),  # fmt: skip
    "reduction none": (
        torch.nn.BCEWithLogitsLoss(reduction="none"),
        r"returned a float32 tensor of shape \(2, 1, 8, 8\); expected a 0-dim float32 tensor "
        r"computed from the logits \(with a grad_fn, so backward\(\) trains the model\); "
        r"reduce it to one value \(reduction='mean', not 'none'\)",
    ),
    "fp16 under fp32": (
        _half_loss,
        r"returned a float16 tensor of shape \(\); .*reduce in float32",
    ),
    "no grad_fn": (_detached_loss, r"returned a float32 tensor of shape \(\); .*do not detach it"),
}


@pytest.mark.parametrize("case", WRONG_LOSSES)
def test_a_wrong_loss_value_fails_the_first_step_naming_the_plugin(case: str) -> None:
    loss, message = WRONG_LOSSES[case]
    with pytest.raises(PluginContractError) as info:
        train_one_epoch(_step(Net(), loss), _batches())
    text = str(info.value)
    assert text.startswith("loss 'oddloss' from distribution 'segkit_odd' 0.2.0 returned ")
    assert re.search(message, text), text
    assert "segkit.testing.check_loss('oddloss')" in text


def test_bf16_autocast_logits_and_loss_pass_and_fp64_is_still_refused() -> None:
    bf16 = Runtime(torch.device("cpu"), MixedPrecision(torch.bfloat16, "cpu"), False)
    out = train_one_epoch(_step(Net(), runtime=bf16), _batches(n=1))
    assert out["steps"] == 1
    with pytest.raises(PluginContractError, match=r"expected logits: a float32 or bfloat16 "
                       r"\(the autocast dtype\) tensor"):  # fmt: skip
        train_one_epoch(_step(Net(post=lambda y: y.double()), runtime=bf16), _batches(n=1))


def test_parts_built_outside_the_registry_are_named_as_such() -> None:
    with pytest.raises(PluginContractError, match=r"^the model \(built outside the registry\) "
                       r"returned .*Run segkit.testing.check_model to check"):  # fmt: skip
        train_one_epoch(_step(Net(out_channels=2), plugins=None), _batches())


def test_the_check_runs_on_the_first_step_only(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(loops, "check_logits", lambda *a, **k: calls.append("logits"))
    monkeypatch.setattr(loops, "check_loss", lambda *a, **k: calls.append("loss"))
    step = _step(Net())
    train_one_epoch(step, _batches(n=3))
    train_one_epoch(step, _batches(n=3))
    assert calls == ["logits", "loss"]


def test_a_graph_step_checks_in_its_eager_warm_up_not_under_capture(monkeypatch) -> None:
    class Recorded:
        """A stand-in graph: capture records the body; a check under it would fail."""

        def __init__(self, stream) -> None:
            self.body = None

        def capture(self, body) -> None:
            self.body = body

        def replay(self) -> None:
            self.body()

    model = Net(out_channels=2)  # wrong: caught in the warm-up, before any capture
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    context = StepContext(
        model, torch.nn.BCEWithLogitsLoss(), optimizer, CPU, plugins=(MODEL, LOSS)
    )
    step = GraphStep(context, batch_size=2, warmup=1, graph=Recorded)
    with pytest.raises(PluginContractError, match=r"^model 'odd' .*\(2, 2, 8, 8\)"):
        train_one_epoch(step, _batches())
    assert step.graph is None
    with pytest.raises(ValueError, match=r"warmup >= 1 \(the first step checks"):
        GraphStep(context, batch_size=2, warmup=0, graph=Recorded)

    calls = []
    monkeypatch.setattr(loops, "check_logits", lambda *a, **k: calls.append("logits"))
    monkeypatch.setattr(loops, "check_loss", lambda *a, **k: calls.append("loss"))
    good = Net()
    optimizer = torch.optim.Adam(good.parameters(), lr=1e-3)
    context = StepContext(good, torch.nn.BCEWithLogitsLoss(), optimizer, CPU)
    step = GraphStep(context, batch_size=2, warmup=1, graph=Recorded)
    out = train_one_epoch(step, _batches(n=4))
    assert out["graph_replays"] == 3 and calls == ["logits", "loss"]


def test_a_run_names_the_plugin_distribution_and_version(site) -> None:
    """create_step (what `segkit run` builds) names the model from the registry."""
    from segkit.build import create_model, create_step

    make_distribution(
        site,
        "fake-wide",
        {"segkit.models": {"wide": "fake_wide:create"}},
        {
            "fake_wide": """
            import torch
            from segkit.contracts import declare

            @declare(min_input_multiple=1)
            def create(in_channels=3, out_channels=1):
                return torch.nn.Conv2d(in_channels, out_channels + 1, 1)
            """
        },
    )
    config = RunConfig(model="wide", loss="bce", batch_size=2, device="cpu")
    model = create_model("wide")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = registry.create("losses", "bce")
    step = create_step(config, CPU, model=model, loss=loss, optimizer=optimizer, train_images=4)
    with pytest.raises(
        PluginContractError,
        match=r"^model 'wide' from distribution 'fake.wide' 1\.0 returned a float32 tensor "
        r"of shape \(2, 2, 8, 8\).*check_model\('wide'\)",
    ):
        train_one_epoch(step, _batches())


def test_segkit_info_checks_the_output_of_its_forward(site, capsys) -> None:
    from segkit.cli import main

    make_distribution(
        site,
        "fake-double",
        {"segkit.models": {"double": "fake_double:create"}},
        {
            "fake_double": """
            import torch
            from segkit.contracts import declare

            class Double(torch.nn.Conv2d):
                def forward(self, x):
                    return super().forward(x).double()

            @declare(min_input_multiple=1)
            def create(in_channels=3, out_channels=1):
                return Double(in_channels, out_channels, 1)
            """
        },
    )
    assert main(["info", "double", "--image-size", "32"]) == 2
    err = capsys.readouterr().err
    assert "model 'double' from distribution 'fake_double' 1.0 returned a float64 tensor" in err
    assert "check_model('double')" in err


@pytest.mark.parametrize("frozen", [False, True])
def test_a_model_with_nothing_to_train_is_refused_naming_the_plugin(frozen: bool) -> None:
    """A model without parameters (or with all of them frozen) is refused before training,
    in one message naming the plugin, not by Adam's "empty parameter list"."""
    import segkit
    from segkit.build import build_optimizer

    def create(in_channels: int = 3, out_channels: int = 1) -> torch.nn.Module:
        model = torch.nn.Conv2d(in_channels, out_channels, 1) if frozen else torch.nn.Identity()
        return model.requires_grad_(False)

    segkit.register_plugin("models", "nothing_to_train", create)
    try:
        model = segkit.create_model("nothing_to_train")
        got = "all 2 of its parameters are frozen" if frozen else "it has no parameters"
        with pytest.raises(
            PluginContractError,
            match=rf"model 'nothing_to_train' registered in this process built a "
            rf"\w+ with nothing to train: {got}",
        ):
            build_optimizer(model, RunConfig(model="nothing_to_train"))
    finally:
        segkit.unregister_plugin("models", "nothing_to_train")
