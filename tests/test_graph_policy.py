"""``--cuda-graphs auto|on|off``: which runs may capture their step, and the one-line
reasons for those that may not (segkit.training.graph_policy; the capture itself is the
engine's and is tested in the CUDA tier)."""

from __future__ import annotations

import pytest

from segkit.training.graph_policy import decide_cuda_graphs

# A run a graph can serve: bf16 on a GPU, one process, 3312 images in batches of 24 (138 full).
GOOD = {"device_type": "cuda", "precision": "bf16", "train_images": 3312, "batch_size": 24}


def test_on_captures_a_run_every_rule_allows() -> None:
    d = decide_cuda_graphs("on", **GOOD)
    assert d.use and d.reasons == () and d.line() == "cuda graphs: on (--cuda-graphs on)"


def test_off_never_captures() -> None:
    d = decide_cuda_graphs("off", **GOOD)
    assert not d.use and d.line() == "cuda graphs: off (--cuda-graphs off: turned off)"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"device_type": "cpu"}, "needs a CUDA device, the run is on cpu"),
        ({"precision": "fp16"}, "fp16's GradScaler decides on the host whether to step; use bf16"),
        ({"world_size": 2}, "DDP (2 processes): the gradient all-reduce is not captured"),
        ({"ema": True}, "--ema updates its average outside the captured step"),
        ({"accumulate": 4}, "--accumulate 4: a group of batches is more than one step"),
        ({"on_nan": "skip"}, "--on-nan skip reads every step's loss on the host"),
        (
            {"batch_size": 32},  # 3312 = 103 x 32 + 16
            "the epoch's last batch has 16 images, not 32: a second shape (drop or pad it)",
        ),
    ],
)
@pytest.mark.parametrize("mode", ["on", "auto"])
def test_each_rule_refuses_with_one_line(mode: str, change: dict, reason: str) -> None:
    d = decide_cuda_graphs(mode, **(GOOD | change), measured_win=True)
    assert not d.use and d.reasons == (reason,)
    assert d.line() == f"cuda graphs: off (--cuda-graphs {mode}: {reason})"
    assert "\n" not in d.line()


def test_every_reason_is_listed_when_several_apply() -> None:
    d = decide_cuda_graphs("on", device_type="cpu", precision="fp16", world_size=4, ema=True,
                           accumulate=2, on_nan="skip", train_images=10, batch_size=4)  # fmt: skip
    assert len(d.reasons) == 7 and not d.use


def test_a_smaller_last_batch_is_fine_once_dropped_or_padded() -> None:
    for rule in ("drop", "pad"):
        assert decide_cuda_graphs("on", **(GOOD | {"batch_size": 32}), last_batch=rule).use
    # An epoch of one partial batch has one shape.
    assert decide_cuda_graphs("on", **(GOOD | {"train_images": 20, "batch_size": 32})).use


def test_auto_needs_a_measured_win() -> None:
    assert decide_cuda_graphs("auto", **GOOD, measured_win=True).use
    d = decide_cuda_graphs("auto", **GOOD)
    assert not d.use and d.reasons == (
        "auto: no measurement yet says a graph wins for this run; use on",
    )
    d = decide_cuda_graphs("auto", **GOOD, measured_win=False)
    assert d.reasons == ("auto: measured slower or no faster than the eager step",)
    # "on" ignores measurements: the user asked.
    assert decide_cuda_graphs("on", **GOOD, measured_win=False).use


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"--cuda-graphs 'yes': expected one of auto, on, off"):
        decide_cuda_graphs("yes", **GOOD)
    with pytest.raises(ValueError, match="last_batch 'trim'"):
        decide_cuda_graphs("on", **GOOD, last_batch="trim")
    with pytest.raises(ValueError, match="batch_size 0"):
        decide_cuda_graphs("on", **(GOOD | {"batch_size": 0}))
