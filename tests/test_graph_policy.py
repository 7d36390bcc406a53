"""``--cuda-graphs auto|on|off``: which runs capture their step, and the one-line reasons
for those that do not (segkit.training.graph_policy, and build's use of it: the refusal
of ``on``, the line a run prints). The capture itself is tested on the CPU with a
stand-in graph (test_graphs.py) and on a GPU in tests/cuda/test_cuda_graphs.py."""

from __future__ import annotations

import pytest
import torch

from segkit import build
from segkit.config import COMMAND_LINE, PYTHON, RunConfig, given_as
from segkit.errors import ConfigError
from segkit.training.distributed import Dist
from segkit.training.graph_policy import decide_cuda_graphs
from segkit.training.graphs import GraphStep
from segkit.training.loops import TrainStep
from segkit.training.precision import MixedPrecision, Precision
from segkit.training.runtime import Runtime


@pytest.fixture(autouse=True)
def command_line():
    """Settings named as `segkit run` names them, by their flags (called from Python, the
    same lines name the keywords: test_from_python_the_refusal_names_the_keywords)."""
    with given_as(COMMAND_LINE):
        yield


# A run a graph can serve: bf16 on a GPU, one process, 3312 images in batches of 24 (138 full).
GOOD = {"device_type": "cuda", "train_images": 3312, "batch_size": 24}


def test_on_captures_a_run_every_rule_allows() -> None:
    d = decide_cuda_graphs("on", **GOOD)
    assert d.use and d.reasons == () and d.line() == "cuda graphs: on (--cuda-graphs on)"
    assert d.error() is None


def test_off_never_captures() -> None:
    d = decide_cuda_graphs("off", **GOOD)
    assert not d.use and d.line() == "cuda graphs: off (--cuda-graphs off: turned off)"
    assert d.error() is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"device_type": "cpu"}, "needs a CUDA device, the run is on cpu"),
        ({"world_size": 2}, "DDP (2 processes): the gradient all-reduce is not captured"),
        ({"accumulate": 4}, "--accumulate 4: a group of batches is more than one step"),
        ({"on_nan": "skip"}, "--on-nan skip reads every step's loss on the host"),
    ],
)
@pytest.mark.parametrize("mode", ["on", "auto"])
def test_each_rule_refuses_with_one_line(mode: str, change: dict, reason: str) -> None:
    d = decide_cuda_graphs(mode, **(GOOD | change))
    assert not d.use and d.reasons == (reason,)
    assert d.line() == f"cuda graphs: off (--cuda-graphs {mode}: {reason})"
    assert "\n" not in d.line()


def test_on_with_a_refused_run_is_an_error_naming_every_reason() -> None:
    d = decide_cuda_graphs("on", **(GOOD | {"accumulate": 2, "on_nan": "skip"}))
    error = d.error()
    assert isinstance(error, ConfigError)
    assert str(error) == (
        "--cuda-graphs on: this run cannot capture its training step: --accumulate 2: a "
        "group of batches is more than one step; --on-nan skip reads every step's loss on "
        "the host. Change that, or use --cuda-graphs auto or --cuda-graphs off"
    )
    # auto falls back instead: no error, the line says why.
    assert decide_cuda_graphs("auto", **(GOOD | {"accumulate": 2})).error() is None


def test_from_python_the_refusal_names_the_keywords() -> None:
    with given_as(PYTHON):
        d = decide_cuda_graphs("on", **(GOOD | {"accumulate": 2, "on_nan": "skip"}))
        assert str(d.error()) == (
            "cuda_graphs='on': this run cannot capture its training step: accumulate=2: a "
            "group of batches is more than one step; on_nan='skip' reads every step's loss on "
            "the host. Change that, or use cuda_graphs='auto' or cuda_graphs='off'"
        )
        assert decide_cuda_graphs("off", **GOOD).line() == (
            "cuda graphs: off (cuda_graphs='off': turned off)"
        )
        with pytest.raises(ConfigError, match=r"^cuda_graphs='on': this run cannot capture"):
            _step(_config(cuda_graphs="on"))
        with pytest.raises(ValueError, match=r"^cuda_graphs='yes': expected one of auto, on, off"):
            decide_cuda_graphs("yes", **GOOD)


def test_every_reason_is_listed_when_several_apply() -> None:
    d = decide_cuda_graphs("on", device_type="cpu", world_size=4, ema=True,
                           accumulate=2, on_nan="skip", train_images=10,
                           batch_size=4)  # fmt: skip
    assert len(d.reasons) == 4 and not d.use


def test_ema_works_with_a_graph() -> None:
    """The EMA is updated on the device after each replay: no refusal."""
    assert decide_cuda_graphs("on", **GOOD, ema=True).use


def test_a_kept_smaller_last_batch_runs_eagerly_and_the_line_says_so() -> None:
    # 3312 = 103 x 32 + 16
    d = decide_cuda_graphs("on", **(GOOD | {"batch_size": 32}), last_batch="keep")
    assert d.use and d.notes == ("the epoch's last batch of 16 images, not 32, runs eagerly",)
    assert d.line() == (
        "cuda graphs: on (--cuda-graphs on; the epoch's last batch of 16 images, not 32, "
        "runs eagerly)"
    )
    dropped = decide_cuda_graphs("on", **(GOOD | {"batch_size": 32}), last_batch="drop")
    assert dropped.use and dropped.notes == ()
    # An epoch of one partial batch has one shape.
    assert decide_cuda_graphs("on", **(GOOD | {"train_images": 20, "batch_size": 32})).notes == ()


def test_auto_captures_where_on_would_and_keeps_the_graph_only_if_it_wins() -> None:
    d = decide_cuda_graphs("auto", **GOOD)
    assert d.use and d.reasons == ()
    assert d.notes == ("kept if faster than the eager step, timed in the first epoch",)
    assert d.line() == (
        "cuda graphs: on (--cuda-graphs auto; kept if faster than the eager step, timed in "
        "the first epoch)"
    )
    assert decide_cuda_graphs("on", **GOOD).notes == ()  # on: the user asked, no trial


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"--cuda-graphs 'yes': expected one of auto, on, off"):
        decide_cuda_graphs("yes", **GOOD)
    with pytest.raises(ValueError, match="last_batch 'trim': expected drop or keep"):
        decide_cuda_graphs("on", **GOOD, last_batch="trim")
    with pytest.raises(ValueError, match="batch_size 0"):
        decide_cuda_graphs("on", **(GOOD | {"batch_size": 0}))


# ----------------------------------------------------------------------------- the build path

CPU = Runtime(torch.device("cpu"), Precision(), False)
#: A CUDA runtime as build sees it (no GPU is touched: the decision reads names only).
CUDA = Runtime(torch.device("cuda", 0), MixedPrecision(torch.bfloat16, "cuda"), True)


def _config(**options: object) -> RunConfig:
    return RunConfig(**({"batch_size": 8} | options))  # type: ignore[arg-type]


def _step(config: RunConfig, runtime: Runtime = CPU) -> TrainStep:
    model = torch.nn.Conv2d(3, 1, 3, padding=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return build.create_step(
        config, runtime, model=model, loss=torch.nn.BCEWithLogitsLoss(), optimizer=optimizer,
        train_images=100,
    )  # fmt: skip


def test_the_cpu_runs_the_eager_step_and_says_nothing_unless_graphs_are_asked_for() -> None:
    for mode in ("auto", "off"):
        step = _step(_config(cuda_graphs=mode))
        assert type(step) is TrainStep and step.note is None


def test_on_off_a_gpu_is_refused_before_anything_is_built() -> None:
    message = r"--cuda-graphs on: this run cannot capture its training step: needs a CUDA device"
    with pytest.raises(ConfigError, match=message):
        _step(_config(cuda_graphs="on"))
    with pytest.raises(ConfigError, match=message):  # before the dataset is even looked for
        build.build_training(
            _config(cuda_graphs="on", data="/no/such/folder", dataset="oxford_pet"), CPU
        )


def test_the_decision_on_a_gpu_reads_the_runs_settings() -> None:
    """What a GPU run is told (decided from names: nothing runs on a GPU here)."""
    line = build.decide_graphs(_config(), CUDA, 100).line()
    assert line == (
        "cuda graphs: on (--cuda-graphs auto; kept if faster than the eager step, timed in "
        "the first epoch)"
    )
    assert build.decide_graphs(_config(cuda_graphs="on"), CUDA, 100).use
    assert build.decide_graphs(_config(cuda_graphs="on", compile=True), CUDA, 100).use
    # 100 = 12 x 8 + 4: dropped by default, kept (and run eagerly) with --last-batch keep.
    assert build.decide_graphs(_config(cuda_graphs="on"), CUDA, 100).notes == ()
    kept = build.decide_graphs(_config(cuda_graphs="on", last_batch="keep"), CUDA, 100)
    assert kept.notes == ("the epoch's last batch of 4 images, not 8, runs eagerly",)
    # A last batch of one image is dropped even with keep: one shape.
    assert build.decide_graphs(_config(cuda_graphs="on", last_batch="keep"), CUDA, 97).notes == ()
    refused = build.decide_graphs(_config(cuda_graphs="on", ema=0.99, accumulate=2), CUDA, 100)
    assert refused.reasons == ("--accumulate 2: a group of batches is more than one step",)
    ddp = Runtime(CUDA.device, CUDA.precision, True, dist=Dist(rank=0, world=2, local_rank=0))
    assert build.decide_graphs(_config(cuda_graphs="on"), ddp, 100).reasons == (
        "DDP (2 processes): the gradient all-reduce is not captured",
    )


def test_a_graph_step_refuses_a_context_it_cannot_serve() -> None:
    step = _step(_config())
    with pytest.raises(ValueError, match="GraphStep: a CUDA graph needs a CUDA device"):
        GraphStep(step.context, batch_size=8)
