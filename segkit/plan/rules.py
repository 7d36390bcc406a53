"""The planner's rules: each turns the fingerprint and the measurements into one setting
and the one-line reason printed beside it.

Each constant and rule says which measurement it rests on (``benchmarks/results/...``,
the data check's numbers), or that it is a default awaiting one; docs/plan.md has the
same table for users. Plugin names come from :data:`segkit.config.DEFAULTS` (the one
table where the core names plugins); a rule whose plugin is not installed falls back to
the run defaults and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from segkit.config import parse_duration
from segkit.data.check import RARE_FOREGROUND as _CHECK_RARE
from segkit.plan.fingerprint import Fingerprint

# ----------------------------------------------------------------------------- constants

#: Structures narrower than this after resizing are trained on native crops instead.
#: Measured (benchmarks/results/2026-11-26-cpu-native): synthetic vessels 2-4 px wide
#: (2.3 px by :func:`segkit.plan.fingerprint.mask_width`) resized 1500x1100 -> 256 (0.5
#: px wide) gave test Dice 0.004 at native resolution, random 256 crops at native scale
#: 0.707, same model, epochs and seed. The 2 px line: a nearest-resized mask of a
#: structure under two pixels breaks into dots (that run's masks). Also
#: benchmarks/results/2026-12-06-cpu-plan: the 128 px vessels (2.9 px structures, 1.4 px
#: at 64 px) planned on native crops reached 0.70 against 0.45-0.46 for the hand-tuned
#: resized runs at the same wall time (the model, epochs and recipe differ too: not an
#: ablation of this rule alone).
MIN_WIDTH_PX = 2.0

#: The native crop's side: the crop run above used 256 px crops.
CROP = 256
#: Native crops covering less of the median image than this share: an epoch takes several
#: crops of each train image (``crops_per_image``), about enough to see its area once.
CROP_COVERAGE = 0.25
#: At most this many crops of an image an epoch (MONAI's examples draw 4 to 16 patches of
#: a volume): above it an epoch of a few dozen large images is long between validations.
MAX_CROPS_PER_IMAGE = 16
#: The smallest training size the budget may bring the image or crop size down to. The
#: make-run result (resnet34_unet at 64 px, test Dice 0.84 on the synthetic pets,
#: benchmarks/results/2026-12-06-cpu-init) is the smallest size with a good result; a
#: default awaiting a measurement below it.
SIZE_FLOOR = 64
#: Each step down the ladder of sizes multiplies the side by this (about half the pixels
#: every two steps), rounded down to the model's multiple.
SIZE_STEP = 0.75

#: The budget brings the size down until at least this many epochs fit. The CPU results
#: that trained well ran 10 epochs (make run: 0.84 on pets at 64 px) or 12 (the vessel
#: crops: 0.707); none below. A default awaiting a sweep of size against epochs.
MIN_EPOCHS = 10
#: Epochs are capped here: the lab's 200 epochs reached test Dice 0.93 (DESIGN.md).
MAX_EPOCHS = 200
#: Runs of at least this many epochs use the lab's heavy recipe (type3: its best over 200
#: epochs); shorter ones the flip-only recipe of every CPU result (type1: make run 0.84,
#: the init and peer results). A default awaiting a measurement between the two.
LONG_RUN_EPOCHS = 50

#: Batches are capped so that an epoch has at least this many optimizer steps.
MIN_STEPS_PER_EPOCH = 4
#: And at this many images (the lab's batch was 16; larger batches would want another
#: learning rate, unmeasured here).
MAX_BATCH = 64
#: Where the CPU batch search starts: every CPU result in benchmarks/results used 8.
CPU_BATCH = 8
#: Where the GPU search starts (it doubles while a step fits).
GPU_BATCH = 2

#: Foreground under this share of the train pixels is "rare" (the vessels: 1.1%): the data
#: check's line, which suggests no pos_weight under it.
RARE_FOREGROUND = _CHECK_RARE

#: Validation may take this share of the training time (validate every K epochs to stay
#: under it; the last epoch is always validated). A default awaiting a measurement.
VALIDATION_SHARE = 0.10
#: And checkpoints (``last.pt`` every K epochs) this share.
CHECKPOINT_SHARE = 0.05
#: When the test and its reports would take more than this share of the budget, the
#: prediction grid draws 4 images instead of 8 (each is one more prediction; at native
#: size on a CPU, seconds each: the native benchmark drew 4).
REPORTS_SHARE = 0.15

#: Warm-up of the cosine schedule, in epochs: make run, the init and the peer results.
WARMUP_EPOCHS = 0.5
#: Adam's learning rate in the lab and every result.
LR = 1e-3

#: Without ``--budget`` or ``--epochs``: the issue's example budget.
DEFAULT_BUDGET_S = 20 * 60.0


@dataclass
class Choice:
    """One setting of the plan and why."""

    key: str  # what the line names (a RunConfig field, or "predict")
    shown: str  # the value as printed
    reason: str


# ----------------------------------------------------------------------------- sizes


def round_down(size: float, multiple: int) -> int:
    """``size`` rounded down to a multiple of ``multiple`` (at least one multiple)."""
    return max(multiple, int(size) // multiple * multiple)


def size_ladder(top: int, multiple: int, floor: int = SIZE_FLOOR) -> list[int]:
    """Training sizes from ``top`` down to ``floor`` (each :data:`SIZE_STEP` of the one
    before, rounded down to ``multiple``), largest first."""
    floor = min(round_down(floor, multiple), round_down(top, multiple))
    sizes = [round_down(top, multiple)]
    while sizes[-1] > floor:
        nxt = max(floor, round_down(sizes[-1] * SIZE_STEP, multiple))
        if nxt >= sizes[-1]:
            break
        sizes.append(nxt)
    return sizes


def top_size(fp: Fingerprint, multiple: int) -> int:
    """The largest sensible resize target: the data check's suggestion (the median short
    side rounded down to 32, capped at 512), rounded to the model's multiple."""
    size = fp.suggested_size or round_down(fp.short_side, 32)
    return round_down(size, multiple)


def crop_size(fp: Fingerprint, multiple: int) -> int:
    """The native crop's side: :data:`CROP`, or the images' short side when smaller."""
    return round_down(min(CROP, fp.short_side), multiple)


def native_crops(fp: Fingerprint, size: int) -> tuple[bool, str]:
    """Whether to train on native crops rather than images resized to ``size``, and why.

    Rule (:data:`MIN_WIDTH_PX`): crops when resizing the median image to ``size`` would
    leave the structures narrower than 2 px.
    """
    width = fp.structure_width
    if width is None:
        return False, "no train mask holds foreground to measure: resized"
    scale = size / fp.short_side
    measured = f"{width:.1f} px wide (median of {fp.width_masks} train masks)"
    if scale >= 1:
        return False, f"images (short side {fp.short_side}) are no larger than {size} px"
    after = width * scale
    if after < MIN_WIDTH_PX:
        return True, (
            f"structures {measured}, {after:.1f} px resized to {size}: too thin, so "
            "native crops: full-resolution patches (thin vessels: Dice 0.004 resized, 0.707 "
            "on crops)"
        )
    return False, f"structures {measured} stay {after:.0f} px at {size} px: resized"


def crops_per_image(fp: Fingerprint, size: int, fitted: int | None = None) -> tuple[int, str]:
    """How many ``size`` px native crops of each train image an epoch takes, and why.

    Rule: where one crop covers less than :data:`CROP_COVERAGE` of the median image,
    enough crops to cover its area once (``ceil(1 / coverage)``), at most
    :data:`MAX_CROPS_PER_IMAGE`. ``fitted``: the one-crop epochs a budget holds; the crops
    are then kept to what leaves :data:`MIN_EPOCHS` epochs (a budget holds the same crops
    either way: fewer, longer epochs are validated and checkpointed less often, and best.pt
    is still chosen among enough of them).
    """
    w, h = fp.size_median
    coverage = size * size / (w * h)
    if coverage >= CROP_COVERAGE:
        return 1, ""
    want = math.ceil(1 / coverage)
    n = min(want, MAX_CROPS_PER_IMAGE)
    why = f"a {size} px crop is {coverage:.0%} of a {w}x{h} image"
    if want > n:
        why += f": {want} crops would cover it once an epoch, capped at {MAX_CROPS_PER_IMAGE}"
    else:
        why += f": {n} crops an epoch cover its area about once"
    if fitted is not None and n > max(1, fitted // MIN_EPOCHS):
        n = max(1, fitted // MIN_EPOCHS)
        why += (
            f"; the budget holds {fitted} one-crop epochs, so {n} (at least "
            f"{MIN_EPOCHS} epochs to validate)"
        )
    return n, why


# ----------------------------------------------------------------------------- recipe


def recipe_choice(
    fp: Fingerprint, crops: bool, epochs: int, installed: set[str], defaults: dict[str, str]
) -> tuple[str, str]:
    """The recipe and why: native crops use the native recipe; resized runs the light
    recipe for short runs and the lab's for long ones (:data:`LONG_RUN_EPOCHS`). A
    recipe that is not installed falls back to the run default."""
    if crops:
        name = defaults["native_recipe"]
        why = "random full-resolution crops, flips, 90-degree turns, elastic warps"
    elif fp.grey:
        name, why = defaults["light_recipe"], "grey images: no colour to augment; flips"
    elif epochs < LONG_RUN_EPOCHS:
        name = defaults["light_recipe"]
        why = (
            f"{epochs} epochs (under {LONG_RUN_EPOCHS}): flips only; heavier augmentation "
            "is for longer runs"
        )
    else:
        name = defaults["recipe"]
        why = (
            f"{epochs} epochs ({LONG_RUN_EPOCHS} or more): flips, crops, gamma, contrast, "
            "channel shuffle (the best recipe of the original 200-epoch runs)"
        )
    if name not in installed:
        fallback = defaults["recipe"]
        return fallback, f"recipe '{name}' is not installed: the run default"
    return name, why


# ----------------------------------------------------------------------------- batch


def batch_cap(train_samples: int) -> int:
    """The largest batch worth searching: a power of two that leaves an epoch of
    ``train_samples`` (train images times the crops an epoch takes of each) at least
    :data:`MIN_STEPS_PER_EPOCH` steps, at most :data:`MAX_BATCH` (at least 2: batch norm
    needs two values a channel)."""
    limit = max(2, min(MAX_BATCH, train_samples // MIN_STEPS_PER_EPOCH))
    return 2 ** int(math.log2(limit))


def batch_cap_reason(train_images: int, crops: int = 1) -> str:
    """Where :func:`batch_cap` comes from, in words, for the batch size's reason; ``crops``:
    the crops an epoch takes of each train image."""
    samples = train_images * crops
    if batch_cap(samples) >= MAX_BATCH:
        return "the largest planned: a larger batch would want another learning rate"
    what = f"{train_images} train images"
    if crops > 1:
        what += f" x {crops} crops an epoch"
    if samples // MIN_STEPS_PER_EPOCH < 2:
        return f"{what}; batch norm needs 2 images a batch"
    return f"{what}: an epoch keeps at least {MIN_STEPS_PER_EPOCH} optimizer steps"


# ----------------------------------------------------------------------------- loss


def loss_choice(fp: Fingerprint, defaults: dict[str, str]) -> tuple[str, dict[str, Any], str]:
    """The loss, its options and why.

    Binary: ``bce_dice`` (the lab's); K classes: ``ce_dice``. Rare foreground (under
    :data:`RARE_FOREGROUND`) is left to the Dice term, which weighs the classes by
    their own size; see :data:`POS_WEIGHT_RULE` for the measurement.
    """
    if fp.multiclass:
        shares = fp.class_shares
        rare = [k for k, v in shares.items() if v < RARE_FOREGROUND]
        why = f"{len(fp.classes)} classes: cross-entropy + Dice (per-pixel and overlap terms)"
        if rare and CLASS_WEIGHT_RULE["use"] and fp.class_weights:
            return (
                defaults["multiclass_loss"],
                {"weight": fp.class_weights},
                why + f"; rare {', '.join(rare)}: median-frequency weights",
            )
        if rare:
            why += f"; rare {', '.join(rare)} ({CLASS_WEIGHT_RULE['why']})"
        return defaults["multiclass_loss"], {}, why
    fg = fp.foreground
    if fg is not None and fg < RARE_FOREGROUND and fp.pos_weight:
        if POS_WEIGHT_RULE["use"]:
            return (
                defaults["loss"],
                {"pos_weight": fp.pos_weight},
                f"foreground {fg:.1%}: binary cross-entropy's foreground weighed by "
                f"{fp.pos_weight:g}, + Dice",
            )
        return (
            defaults["loss"],
            {},
            f"foreground {fg:.1%} (rare): binary cross-entropy + Dice, whose overlap term "
            f"balances a rare foreground; no pos_weight ({POS_WEIGHT_RULE['why']})",
        )
    shown = f"foreground {fg:.0%}" if fg is not None else "binary"
    return (
        defaults["loss"],
        {},
        f"{shown}: binary cross-entropy + Dice (per-pixel and overlap terms)",
    )


#: Whether rare binary foreground gets BCE's ``pos_weight`` (background / foreground).
#: Measured (benchmarks/results/2026-12-06-cpu-plan, ablations/, ``pos-weight``): the
#: 128 px vessels' plan (7.5% foreground) with ``pos_weight=auto`` tested 0.578 against
#: 0.698 without, same settings and budget, seed 0. That set's foreground is above the
#: 5% line; the 1.1% vessels' ablation (1500x1100, minutes a run here) was not run. One
#: set and seed: a rule to revisit with more.
POS_WEIGHT_RULE: dict[str, Any] = {
    "use": False,
    "why": "it cost 0.12 Dice on the 128 px vessels benchmark",
}
#: Whether K classes with a rare class get median-frequency weights. Measured as above
#: (``class-weights``): the collar set's plan (collar 2.5% of the train pixels) with
#: ``weight=auto`` tested 0.7705 against 0.7800 without, seed 0.
CLASS_WEIGHT_RULE: dict[str, Any] = {
    "use": False,
    "why": "class weights cost 0.01 Dice on the collar benchmark",
}


# ----------------------------------------------------------------------------- time


@dataclass
class Costs:
    """Seconds of each part of a run (from :class:`segkit.plan.measure.RunTiming`)."""

    setup: float
    epoch: float
    valid: float
    test: float
    last: float
    best: float


@dataclass
class Schedule:
    """Epochs, how often to validate and write ``last.pt``, and the estimated seconds."""

    epochs: int
    validate_every: int
    save_every: int
    seconds: float


def events(epochs: int, every: int) -> int:
    """Validations (or ``last.pt`` writes) of a run: every ``every`` epochs and after
    the last."""
    return epochs // every + (1 if epochs % every else 0)


def total_seconds(c: Costs, epochs: int, validate_every: int, save_every: int) -> float:
    """The run's seconds: setup, epochs, validations (each may write ``best.pt``),
    ``last.pt`` writes, the test and the reports."""
    return (
        c.setup
        + epochs * c.epoch
        + events(epochs, validate_every) * (c.valid + c.best)
        + events(epochs, save_every) * c.last
        + c.test
    )


def every(epochs: int, cost: float, share: float, epoch: float) -> int:
    """The smallest K so that an event of ``cost`` seconds every K epochs of ``epoch``
    seconds takes at most ``share`` of the training time."""
    for k in range(1, epochs + 1):
        if events(epochs, k) * cost <= share * epochs * epoch:
            return k
    return epochs


def fit_schedule(c: Costs, budget: float | None, epochs: int | None) -> Schedule:
    """The epochs that fit ``budget`` seconds (at most :data:`MAX_EPOCHS`), or the
    ``epochs`` given, with validation and checkpoints spaced to take at most
    :data:`VALIDATION_SHARE` and :data:`CHECKPOINT_SHARE` of the training time.
    ``epochs`` 0 in the result: not even one epoch fits the budget."""
    if epochs is not None:
        v = every(epochs, c.valid + c.best, VALIDATION_SHARE, c.epoch)
        k = every(epochs, c.last, CHECKPOINT_SHARE, c.epoch)
        return Schedule(epochs, v, k, total_seconds(c, epochs, v, k))
    assert budget is not None
    e, v, k = MAX_EPOCHS, 1, 1
    for _ in range(6):  # the spacing depends on the epochs and back: settles in 2-3 rounds
        e = _most_epochs(c, budget, v, k)
        if e == 0:
            return Schedule(0, 1, 1, total_seconds(c, 1, 1, 1))
        v2 = every(e, c.valid + c.best, VALIDATION_SHARE, c.epoch)
        k2 = every(e, c.last, CHECKPOINT_SHARE, c.epoch)
        if (v2, k2) == (v, k):
            break
        v, k = v2, k2
    e = _most_epochs(c, budget, v, k) or 1
    return Schedule(e, min(v, e), min(k, e), total_seconds(c, e, min(v, e), min(k, e)))


def _most_epochs(c: Costs, budget: float, v: int, k: int) -> int:
    lo, hi = 0, MAX_EPOCHS
    while lo < hi:  # the largest e with total_seconds(e) <= budget
        mid = (lo + hi + 1) // 2
        if total_seconds(c, mid, min(v, mid), min(k, mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def duration(seconds: float) -> str:
    """``95`` -> ``1m35s``; ``3725`` -> ``1h02m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def parse_budget(text: str) -> float:
    """A duration (``20m``, ``90s``, ``1h30m``, ``1.5h``) in seconds.

    Raises:
        ConfigError: anything else, or zero.
    """
    return parse_duration(text, f"--budget {text!r}")
