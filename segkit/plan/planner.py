"""``segkit plan``: from the data's fingerprint and measurements on this machine to a run
configuration, each setting with its reason.

:func:`make_plan` reads the data once (``segkit data check``'s report, the structures'
width), resolves the device as a run would, and then decides in this order, measuring
through :mod:`segkit.build` as it goes:

1. the model (the one asked for, else the planner's default) and the loss;
2. the training size: with a budget, a few synthetic steps at the smallest size give the
   seconds per image, and the largest size of the ladder (:func:`rules.size_ladder`) at
   which :data:`rules.MIN_EPOCHS` epochs fit is kept; then resized images or native crops
   (:func:`rules.native_crops`), and the recipe;
3. the batch size: where device memory is measured (a GPU's; the memory probe's
   ``where`` is not ``"host"``) the largest that fits, found by growing it until a step
   does not fit; on the CPU the same search stops when a larger batch is no faster per
   image (:func:`segkit.plan.measure.fit_batch`);
4. the real run's costs (:func:`segkit.plan.measure.time_run`: setup, an epoch, a
   validation, the test and reports, the checkpoints), and from them the epochs that
   fit the budget, how often to validate and to write ``last.pt``
   (:func:`rules.fit_schedule`). Where fewer than :data:`rules.MIN_EPOCHS` fit, the size
   steps down and 3-4 are measured again.

Nothing here names a model: a third party's model is measured through the same build
path, its ``min_input_multiple`` read from what its factory declares.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from segkit import build, registry
from segkit.config import DEFAULTS, RunConfig
from segkit.data.check import check_configured
from segkit.errors import ConfigError, DataError
from segkit.plan import machine as machine_mod
from segkit.plan import rules
from segkit.plan.fingerprint import Fingerprint, fingerprint
from segkit.plan.measure import BatchPolicy, StepProbe, fit_batch, time_run
from segkit.plan.rules import Choice, Costs, Schedule, duration
from segkit.system.memory import release
from segkit.task import Task

if TYPE_CHECKING:
    from segkit.config import RunConfig
    from segkit.data.check import Report
    from segkit.plan.machine import Machine, MemoryProbe
    from segkit.plan.measure import BatchSearch, RunTiming

#: Settings a plan never writes: what the run records by itself.
_RECORDED = ("recipe_definition", "data_as_typed")


@dataclass
class Plan:
    """A planned run: its settings (a :class:`RunConfig`'s keys), each choice with its
    reason, and what it was decided from.

    Attributes:
        settings: The configuration's keys the plan sets; ``config()`` makes the run's
            configuration of them (everything else at its default).
        choices: One :class:`rules.Choice` per setting printed, in order.
        fingerprint: The data's.
        machine: The machine's.
        timing: The measured costs of the planned run.
        schedule: Epochs, validation and checkpoint spacing, estimated seconds.
        budget: Seconds asked for (None: epochs were given).
        batch: The batch-size search (every trial).
        predict_mode: What ``segkit predict --mode auto`` (the plan's advice) does with
            the trained model: ``whole`` after native crops, ``resize`` after resizing.
        planning_s: Seconds the planning took.
    """

    settings: dict[str, Any]
    choices: list[Choice]
    fingerprint: Fingerprint
    machine: Machine
    timing: RunTiming
    schedule: Schedule
    budget: float | None
    batch: BatchSearch
    predict_mode: str
    planning_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def config(self) -> RunConfig:
        """The planned run's configuration."""
        from segkit.config import RunConfig

        return RunConfig.from_dict(dict(self.settings), source="plan")

    def lines(self) -> list[str]:
        """The plan as text: the data and machine, one line per choice, the time."""
        fp, m, s = self.fingerprint, self.machine, self.schedule
        budget = f"budget {duration(self.budget)}" if self.budget is not None else "epochs as given"
        width = max(len(c.key) for c in self.choices)
        shown = max(len(c.shown) for c in self.choices)
        out = [
            f"data     {fp.dataset} {fp.root}: {fp.describe()}",
            f"machine  {m.describe()}; {budget}",
        ]
        out += [f"  {c.key:<{width}}  {c.shown:<{shown}}  {c.reason}" for c in self.choices]
        t = self.timing
        out.append(
            f"estimate {duration(s.seconds)}: setup {duration(t.start_s)}, {s.epochs} x "
            f"{t.epoch_s:.1f}s epochs, validation {t.valid_s:.1f}s x "
            f"{rules.events(s.epochs, s.validate_every)}, last.pt {t.last_s:.1f}s x "
            f"{rules.events(s.epochs, s.save_every)}, test and reports {duration(t.test_s)} "
            f"(planned in {duration(self.planning_s)})"
        )
        out += [f"note     {n}" for n in self.notes]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, choices, fingerprint, machine, timing, schedule."""
        return {
            "settings": self.settings,
            "choices": [dataclasses.asdict(c) for c in self.choices],
            "fingerprint": self.fingerprint.to_dict(),
            "machine": dataclasses.asdict(self.machine),
            "timing": self.timing.to_dict(),
            "schedule": dataclasses.asdict(self.schedule),
            "budget_s": self.budget,
            "batch_trials": [dataclasses.asdict(t) for t in self.batch.trials],
            "predict_mode": self.predict_mode,
            "planning_s": round(self.planning_s, 1),
            "notes": self.notes,
        }


def make_plan(
    base: RunConfig,
    *,
    budget: float | None = None,
    epochs: int | None = None,
    model_given: bool = False,
    memory: MemoryProbe | None = None,
    report: Report | None = None,
    say: Callable[[str], None] | None = None,
) -> Plan:
    """Plan a run of ``base``'s data on this machine.

    Args:
        base: The run's fixed settings: ``data``/``dataset``/``dataset_options``,
            ``loader``, ``device``, ``threads``, ``num_workers``, ``out``, ``seed``...
            and, with ``model_given``, ``model`` and ``model_options``. The planner
            decides the rest.
        budget: Seconds the run may take (setup, training, validation, checkpoints, test
            and reports). Without it and without ``epochs``:
            :data:`rules.DEFAULT_BUDGET_S`.
        epochs: The epochs to train instead of a budget.
        model_given: Keep ``base.model`` (and its options) instead of the planner's.
        memory: How a step's memory is measured (default: the device's,
            :func:`segkit.plan.machine.memory_probe`); tests fake it.
        report: The data check's report, if already made.
        say: Called with a line of progress at each stage.

    Raises:
        DataError: the data check found problems that would stop a run.
        ConfigError: the budget cannot hold one epoch, or a bad setting.
    """
    started = time.perf_counter()
    if budget is None and epochs is None:
        budget = rules.DEFAULT_BUDGET_S
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs {epochs}: expected a positive integer")
    planner = _Planner(base, budget, epochs, say or (lambda line: None))
    planner.read(report, memory)
    planner.choose_model_and_loss(model_given)
    planner.choose_size()
    planner.fit_batch_and_schedule()
    planner.choose_crops_per_image()
    plan = planner.plan()
    plan.config()  # the plan is a valid configuration
    plan.planning_s = time.perf_counter() - started
    return plan


class _Measured(NamedTuple):
    """The measurements at one size: the batch search, the run's timing and costs, the
    schedule that fits and the grid's images."""

    search: BatchSearch
    timing: RunTiming
    costs: Costs
    schedule: Schedule
    grid: int


class _Planner:
    """One plan in the making: what was read and measured, the settings so far, the
    choices with their reasons; one method per stage of :func:`make_plan`, in order."""

    def __init__(
        self, base: RunConfig, budget: float | None, epochs: int | None, tell: Callable[[str], None]
    ) -> None:
        self.base, self.budget, self.epochs, self.tell = base, budget, epochs, tell
        self.choices: list[Choice] = []
        self.notes: list[str] = []
        self.settings: dict[str, Any] = {
            k: v for k, v in base.to_dict().items() if k not in _RECORDED and _given(base, k)
        }
        self.defaults = dict(DEFAULTS)
        self.crops_n, self.crops_why = 1, ""  # crops_per_image, chosen last

    def read(self, report: Report | None, memory: MemoryProbe | None) -> None:
        """The data (the data check's report, its fingerprint) and the machine."""
        self.tell("reading the data (segkit data check) ...")
        dataset = build.build_dataset(self.base)  # first: it names a bad --dataset-opt
        if report is None:
            report = check_configured(self.base, progress=False)
        if blocking(report, self.base):
            raise DataError(refusal(report, self.base))
        self.fp = fingerprint(report, dataset)
        train = report.splits.get("train")
        self.train_empty = (len(train.empty_masks), train.count) if train else (0, 0)
        self.task = Task.of(dataset)
        self.runtime = build.resolve_runtime(self.base)
        self.memory = memory or machine_mod.memory_probe(self.runtime.device)
        self.machine = machine_mod.detect(self.runtime.device, self.memory)
        self.installed = {k: set(registry.list_plugins(k)) for k in ("models", "recipes")}

    def choose_model_and_loss(self, model_given: bool) -> None:
        """1. The model (the one asked for, else the planner's default) and the loss."""
        settings, fp = self.settings, self.fp
        model, model_options, why = _model_choice(
            self.base, model_given, self.installed["models"], self.defaults
        )
        settings.update(model=model, model_options=model_options)
        shown = model + (f" ({model_options['encoder']})" if model_options.get("encoder") else "")
        self.choices.append(Choice("model", shown, why))
        self.multiple = _multiple(model, model_options)
        loss, self.loss_options, why = rules.loss_choice(fp, self.defaults)
        settings.update(loss=loss, loss_options=self.loss_options)
        opts = "".join(f" {k}={_short(v)}" for k, v in self.loss_options.items())
        self.choices.append(Choice("loss", loss + opts, why))
        # A defect set: best.pt by the pooled valid Dice, as the run's --monitor auto picks.
        monitor, why = self.task.defect_monitor(self.base.monitor, *self.train_empty)
        if monitor is not None:
            settings.update(monitor=monitor)
            self.choices.append(Choice("monitor", monitor, _monitor_reason(why)))
        settings.update(
            lr=rules.LR,
            schedule="cosine",
            warmup_epochs=rules.WARMUP_EPOCHS,
            eval_size="native",
        )

    def _seconds_per_image(self, config: RunConfig, batch: int) -> float:
        probe = StepProbe(config, self.runtime, self.task, self.loss_options)
        data = probe.batch(batch)
        probe.run(data)  # untimed: caches and the optimizer state warm up
        return probe.seconds(data) / batch

    def candidate(self, **changes: Any) -> RunConfig:
        """The run's configuration so far, with ``changes``, for measuring."""
        merged = {**self.settings, "epochs": 2, "validate_every": 1, **changes}
        return RunConfig.from_dict(merged, source="plan")

    def choose_size(self) -> None:
        """2. The size: resized or native crops, then the recipe."""
        fp, budget, multiple = self.fp, self.budget, self.multiple
        train_images = fp.images.get("train", 0)
        # Device memory (a GPU's, or a faked one in the tests) bounds the batch: the
        # largest that fits. Host memory rarely does; there a batch only has to be fast
        # per image.
        self.largest = self.memory.where != "host"
        self.start = self._start(rules.batch_cap(train_images))
        ladder = rules.size_ladder(rules.top_size(fp, multiple), multiple)
        timed: tuple[int, float] | None = None  # (size, seconds per training image)
        rough = self.epochs
        if budget is not None:
            self.tell(f"timing a few steps at {ladder[-1]} px ...")
            per_image = self._seconds_per_image(self.candidate(image_size=ladder[-1]), self.start)
            timed = (ladder[-1], per_image)
            size, rough = _fit_size(ladder, timed, fp, budget, crops=False)
        else:
            size = ladder[0]
        crops, size_why = rules.native_crops(fp, size)
        if crops:
            ladder = rules.size_ladder(rules.crop_size(fp, multiple), multiple)
            size = ladder[0]
            if timed is not None:
                size, rough = _fit_size(ladder, timed, fp, budget, crops=True)
        recipe, recipe_why = rules.recipe_choice(
            fp, crops, rough or rules.MAX_EPOCHS, self.installed["recipes"], self.defaults
        )
        self.no_native_recipe = crops and recipe != self.defaults["native_recipe"]
        if self.no_native_recipe:  # not installed: resized
            crops, size_why = False, recipe_why
            ladder = rules.size_ladder(rules.top_size(fp, multiple), multiple)
            size = ladder[0] if timed is None else _fit_size(ladder, timed, fp, budget, False)[0]
        self.settings["recipe"] = recipe
        self.rough_epochs = rough
        self.size, self.ladder, self.crops = size, ladder, crops
        self.size_why, self.recipe_why = size_why, recipe_why

    def fit_batch_and_schedule(self) -> None:
        """3./4. The batch size, the real costs, the schedule; a size down when fewer
        than :data:`rules.MIN_EPOCHS` epochs fit."""
        budget, size = self.budget, self.size
        retimed = False
        tried: dict[int, _Measured] = {}
        while True:
            measured = self._measure_at(size, tried)
            search, timing, costs, schedule, grid = measured
            tried[size] = measured
            smaller = [s for s in self.ladder if s < size]
            larger = [s for s in self.ladder if s > size]
            fitted = [s for s, t in tried.items() if t.schedule.epochs >= rules.MIN_EPOCHS]
            if budget is not None and schedule.epochs < rules.MIN_EPOCHS and fitted:
                size = max(fitted)  # a step up that did not fit: back to the one that did
                search, timing, costs, schedule, grid = tried[size]
                self.notes.append(f"kept {size} px, where {schedule.epochs} epochs fit")
                break
            # The first estimate scaled one synthetic step: where the real run leaves room,
            # the largest size the measured costs say fits is measured (one build, not one
            # a step of the ladder).
            up = [
                s
                for s in larger
                if s not in tried
                and _epochs_at(costs, size, s, self.crops, budget or 0) >= rules.MIN_EPOCHS
            ]
            if budget is not None and schedule.epochs >= rules.MIN_EPOCHS and up:
                self.notes.append(
                    f"{size} px: {schedule.epochs} epochs fit, more than the first estimate: "
                    f"measured again at {max(up)} px"
                )
                size = max(up)
                continue
            if budget is None or schedule.epochs >= rules.MIN_EPOCHS or not smaller:
                if self._recipe_for(schedule.epochs, switch=not retimed):
                    retimed = True  # the recipe changed with the epochs: time it
                    self.notes.append(
                        f"{schedule.epochs} epochs fit (the first estimate was "
                        f"{self.rough_epochs}): recipe {self.settings['recipe']}, timed again"
                    )
                    continue
                break
            self.notes.append(
                f"{size} px: {schedule.epochs} epochs fit, fewer than {rules.MIN_EPOCHS}: "
                f"measured again at {smaller[0]} px"
            )
            size = smaller[0]
        if schedule.epochs == 0:
            self._refuse_budget(costs)
        self.size, self.search, self.timing, self.schedule, self.grid = (
            size,
            search,
            timing,
            schedule,
            grid,
        )

    def choose_crops_per_image(self) -> None:
        """5. Native crops that cover little of each image: several an epoch
        (:func:`rules.crops_per_image`). The run was timed with the most crops a size
        takes (:meth:`_most_crops`) and its epochs fitted as one crop of each image; the
        epoch of ``n`` crops is the measured step ``n`` crops' batches over, and the
        epochs are fitted again with it: a budget holds fewer, longer epochs. Where a
        budget keeps fewer crops than the batch was capped for, the batch comes down to
        the cap of the crops kept (the step's time in proportion)."""
        self.crops_n, self.crops_why = 1, ""
        if not self.crops:
            return
        fitted = self.schedule.epochs if self.budget is not None else None
        n, why = rules.crops_per_image(self.fp, self.size, fitted)
        if n > 1:
            self.crops_n, self.crops_why = n, why
        t = self.timing
        if n != self._most_crops(self.size):  # else timed as it will run
            images, batch = self.fp.images.get("train", 0), self.search.batch
            cap = rules.batch_cap(images * n)
            if batch > cap:
                stopped = (
                    f"{self.search.stopped}; then {cap}, as the budget keeps fewer crops "
                    f"({rules.batch_cap_reason(images, n)})"
                )
                self.search = dataclasses.replace(self.search, batch=cap, stopped=stopped)
                t = dataclasses.replace(t, step_s=t.step_s * cap / batch)
                batch = cap
            samples = images * n
            drops = build.drops_last_batch(samples, batch)
            batches = samples // batch if drops else -(-samples // batch)
            self.timing = t = dataclasses.replace(t, steps_per_epoch=max(1, batches))
        costs = Costs(t.start_s, t.epoch_s, t.valid_s, t.test_s, t.last_s, t.best_s)
        self.schedule = rules.fit_schedule(costs, self.budget, self.epochs)

    def _measure_at(self, size: int, tried: dict[int, _Measured]) -> _Measured:
        """The batch size at ``size``, the run timed with it, its costs and the schedule
        that fits; the setup is the largest of all the sizes ``tried``."""
        budget, runtime = self.budget, self.runtime
        self.tell(f"finding the batch size at {size} px ...")
        probe = StepProbe(self.candidate(image_size=size), runtime, self.task, self.loss_options)
        # Native crops of large images: an epoch may take several of each (step 5), and
        # the batch is capped by those samples, not by the images (a few large slides
        # would otherwise train in batches of 2). The run is timed with them, full batches.
        images, most = self.fp.images.get("train", 0), self._most_crops(size)
        cap = rules.batch_cap(images * most)
        policy = BatchPolicy(
            start=self._start(cap),
            cap=cap,
            grow_while_faster=not self.largest,
            cap_why=rules.batch_cap_reason(images, most),
        )
        search = fit_batch(probe, self.memory, policy)
        del probe
        release(runtime.device)
        self.tell(f"timing the run at {size} px, batch {search.batch} ...")
        crops = {"crops_per_image": most} if most > 1 else {}
        config = self.candidate(image_size=size, batch_size=search.batch, **crops)
        timing = time_run(config, runtime)
        # A second build in this process finds the files read and the code loaded: a
        # run's own process pays the first build's setup.
        setup = max([timing.setup_s, *(t.timing.setup_s for t in tried.values())])
        timing.setup_s = setup
        grid = config.grid_images
        if budget is not None and timing.test_s > rules.REPORTS_SHARE * budget and grid > 4:
            grid = 4
            timing.grid_images = grid
        costs = Costs(
            timing.start_s,
            timing.epoch_s / most,  # one crop of each image: step 5 sets the crops
            timing.valid_s,
            timing.test_s,
            timing.last_s,
            timing.best_s,
        )
        schedule = rules.fit_schedule(costs, budget, self.epochs)
        return _Measured(search, timing, costs, schedule, grid)

    def _start(self, cap: int) -> int:
        """The batch the search starts from, within ``cap``."""
        return min(rules.GPU_BATCH if self.largest else rules.CPU_BATCH, cap)

    def _most_crops(self, size: int) -> int:
        """The crops an epoch takes of each train image at ``size`` before a budget keeps
        fewer (:func:`rules.crops_per_image`): 1 for resized images."""
        return rules.crops_per_image(self.fp, size)[0] if self.crops else 1

    def _refuse_budget(self, costs: Costs) -> None:
        """Not one epoch fits the budget: the error says the budget that would."""
        one = rules.total_seconds(costs, 1, 1, 1)
        raise ConfigError(
            f"--budget {duration(self.budget or 0)}: one epoch of this run takes about "
            f"{duration(one)} here (setup, training, validation, test and reports); give "
            f"--budget {duration(one * 1.2)} or more"
        )

    def _recipe_for(self, epochs: int, switch: bool) -> bool:
        """Choose the recipe again for the ``epochs`` measured to fit (the size stage
        chose it from a rough estimate, and a short run's recipe differs from a long
        one's); True when it changed (the run is then timed again with it). Without
        ``switch`` (timed again already) the recipe stays and only its reason follows
        the epochs."""
        if self.crops:
            return False
        recipe, why = rules.recipe_choice(
            self.fp, False, epochs, self.installed["recipes"], self.defaults
        )
        if recipe == self.settings["recipe"]:
            self.recipe_why = why  # with the epochs that fit
            return False
        if not switch:
            return False
        self.settings["recipe"], self.recipe_why = recipe, why
        return True

    def plan(self) -> Plan:
        """The settings and the choices, in the order a reader checks them."""
        self._record_settings()
        self._choose_size_and_recipe()
        self._choose_schedule()
        self.notes += data_notes(self.fp, self.crops, self.size, self.schedule.epochs, self.crops_n)
        predict = "whole" if self.crops else "resize"  # what --mode auto chooses for the model
        self.choices.append(
            Choice("predict", "--mode auto", _predict_reason(self.crops, self.size))
        )
        return Plan(
            settings=self.settings,
            choices=self.choices,
            fingerprint=self.fp,
            machine=self.machine,
            timing=self.timing,
            schedule=self.schedule,
            budget=self.budget,
            batch=self.search,
            predict_mode=predict,
            notes=self.notes,
        )

    def _record_settings(self) -> None:
        """The measured values into the run's settings."""
        if self.crops_n > 1:
            self.settings["crops_per_image"] = self.crops_n
        self.settings.update(
            image_size=self.size,
            batch_size=self.search.batch,
            epochs=self.schedule.epochs,
            validate_every=self.schedule.validate_every,
            save_every=self.schedule.save_every,
            grid_images=self.grid,
        )

    def _choose_size_and_recipe(self) -> None:
        """The image size (a crop or a resize), the recipe, the evaluation size and the
        batch size, each with its reason."""
        size, ladder, fp, choices = self.size, self.ladder, self.fp, self.choices
        if self.crops:
            crop_why = self.size_why
            if size < ladder[0]:
                crop_why += (
                    f"; the largest crop of {ladder[0]}..{ladder[-1]} where "
                    f"{rules.MIN_EPOCHS} epochs fit"
                )
            choices.append(Choice("image_size", f"{size} crop", crop_why))
            if self.crops_n > 1:
                choices.append(Choice("crops_per_image", str(self.crops_n), self.crops_why))
        else:
            why = self.size_why
            if not self.no_native_recipe:  # the width at the size planned, not the first guess
                why = rules.native_crops(fp, size)[1]
            choices.append(
                Choice("image_size", str(size), _size_reason(size, ladder, fp, self.budget, why))
            )
        choices.append(Choice("recipe", self.settings["recipe"], self.recipe_why))
        choices.append(Choice("eval_size", "native", _eval_reason(self.crops, fp)))
        choices.append(
            Choice("batch_size", str(self.search.batch), _batch_reason(self.search, self.largest))
        )

    def _choose_schedule(self) -> None:
        """The learning rate schedule, the epochs, the time limit, how often to validate and
        to save, and the grid's images, each with its reason."""
        budget, schedule, timing, choices = self.budget, self.schedule, self.timing, self.choices
        choices.append(
            Choice(
                "schedule",
                f"cosine, lr {rules.LR:g}",
                f"Adam; the learning rate warms up over {rules.WARMUP_EPOCHS:g} epoch, then "
                "falls to 0 at the last step (every benchmark here)",
            )
        )
        choices.append(
            Choice(
                "epochs",
                str(schedule.epochs),
                _epochs_reason(schedule, budget, self.epochs, timing),
            )
        )
        if budget is not None:
            limit = duration(max(1.0, budget - timing.test_s))
            self.settings["max_time"] = limit
            choices.append(
                Choice(
                    "max_time",
                    limit,
                    f"the budget less the test and reports ({duration(timing.test_s)}): on a "
                    "busier machine training stops in time instead of overrunning",
                )
            )
        choices.append(
            Choice(
                "validate_every",
                str(schedule.validate_every),
                f"a validation takes {timing.valid_s:.1f}s: at most "
                f"{rules.VALIDATION_SHARE:.0%} of the training time (and after the last "
                "epoch)",
            )
        )
        choices.append(
            Choice(
                "save_every",
                str(schedule.save_every),
                f"last.pt takes {timing.last_s:.1f}s to write: at most "
                f"{rules.CHECKPOINT_SHARE:.0%} of the training time",
            )
        )
        if self.grid != 8:
            choices.append(
                Choice(
                    "grid_images",
                    str(self.grid),
                    "each is one more native prediction in the reports",
                )
            )


# ----------------------------------------------------------------------------- helpers

#: A validation or test split under this many images gets a note: its score is a few
#: images' and swings from run to run.
FEW_EVAL_IMAGES = 5
#: K classes: a share of 'ignore' pixels from which the plan says so (a binary 0/255 mask
#: among index masks reads its foreground as 'ignore').
IGNORED_SHARE = 0.05
#: Native crops covering less of an image than this share take several crops an epoch
#: (:func:`rules.crops_per_image`), and get a note on how much of each image the run sees.
CROP_COVERAGE = rules.CROP_COVERAGE


def data_notes(
    fp: Fingerprint, crops: bool, size: int, epochs: int, crops_per_image: int = 1
) -> list[str]:
    """What the plan cannot fix but a user should know: scores resting on a few images,
    and native crops that see little of large images (``crops_per_image`` of them an
    epoch)."""
    from segkit.contracts import IGNORE_INDEX
    from segkit.errors import plural

    notes = []
    few = [
        f"{split} {plural(fp.images.get(split, 0), 'image')}"
        for split in ("valid", "test")
        if 0 < fp.images.get(split, 0) < FEW_EVAL_IMAGES
    ]
    if few:
        notes.append(
            f"{' and '.join(few)}: scores of so few images swing from run to run; label more "
            "images to trust them"
        )
    if fp.ignored >= IGNORED_SHARE:
        notes.append(
            f"{fp.ignored:.0%} of the train pixels are 'ignore' (mask value {IGNORE_INDEX}): "
            f"neither trained nor scored; where {IGNORE_INDEX} marks a class (binary 0/255 "
            "masks among class-index masks), save those masks with the class's index"
        )
    w, h = fp.size_median
    coverage = size * size / (w * h)
    if crops and coverage < CROP_COVERAGE:
        n = crops_per_image
        what = f"one {size} px crop" if n == 1 else f"{n} {size} px crops"
        notes.append(
            f"an epoch is {what} of each train image, {coverage * n:.0%} of a "
            f"{w}x{h} image: the {epochs} epochs see each image's area about "
            f"{coverage * n * epochs:.1f} times"
        )
    return notes


#: Problems a refused plan lists (the data check lists them all).
SHOWN_PROBLEMS = 5


def blocking(report: Report, base: RunConfig) -> list[Any]:
    """The data check's errors that would stop the run: all of them, but with
    ``skip_bad_samples`` the files that cannot be decoded (the run leaves them out)."""
    return [p for p in report.errors if not (base.skip_bad_samples and p.kind == "unreadable")]


def refusal(report: Report, base: RunConfig) -> str:
    """Why the data cannot be planned: the data check's errors (the first
    :data:`SHOWN_PROBLEMS`), its fixes, and the command that prints the whole report with
    the flags given (a folder with spaces quoted)."""
    from segkit.errors import plural

    errors = blocking(report, base)
    lines = [
        f"{report.root}: the data check found {plural(len(errors), 'problem')} that would "
        "stop a run:"
    ]
    refused = [p for p in errors if p.kind == "mask_values"]
    messages = []
    for p in errors:
        if p.kind == "mask_values" and len(refused) > 1 and report.masks_refused:
            if p is refused[0]:  # every refused mask in one line, as the data check says
                messages.append(report.masks_refused)
            continue
        messages.append(p.message)
    lines += [f"  {m}" for m in messages[:SHOWN_PROBLEMS]]
    if len(messages) > SHOWN_PROBLEMS:
        lines.append(f"  ... and {len(messages) - SHOWN_PROBLEMS} more")
    if report.fixes:
        lines.append("to fix (then plan again):")
        lines += [f"  - {fix}" for fix in report.fixes]
    if all(p.kind == "unreadable" for p in errors):
        lines.append(
            "or plan without the files that cannot be decoded: --skip-bad-samples (the run "
            "leaves them out too)"
        )
    words = ["segkit", "data", "check", str(base.data or report.root)]
    if base.dataset:
        words += ["--dataset", base.dataset]
    for key, value in base.dataset_options.items():
        if isinstance(value, list | tuple):  # classes=a,b as typed
            value = ",".join(map(str, value))
        words += ["--dataset-opt", f"{key}={value}"]
    lines.append(f"the whole report: {' '.join(shlex.quote(w) for w in words)}")
    return "\n".join(lines)


def _given(base: RunConfig, key: str) -> bool:
    """Whether the plan file carries ``base``'s ``key``: the data's keys and the machine's
    when they differ from the defaults (the planner decides the rest)."""
    if key not in _CARRIED:
        return False
    f = next(f for f in dataclasses.fields(base) if f.name == key)
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return getattr(base, key) != default


#: The settings a plan keeps from the command line (when not at their defaults).
_CARRIED = (
    "data",
    "dataset",
    "dataset_options",
    "loader",
    "loader_options",
    "device",
    "precision",
    "threads",
    "num_workers",
    "channels_last",
    "compile",
    "seed",
    "out",
    "name",
    "skip_bad_samples",
    "log",
)


def _model_choice(
    base: RunConfig, given: bool, installed: set[str], defaults: dict[str, str]
) -> tuple[str, dict[str, Any], str]:
    """The model, its options and why: the one asked for, else the planner's default
    (:data:`segkit.config.DEFAULTS` ``plan_model``), else the run default."""
    if given:
        return base.model, dict(base.model_options), "as asked (--model)"
    name = defaults["plan_model"]
    if name not in installed:
        return defaults["model"], {}, f"the run default ('{name}' is not installed)"
    return name, {"encoder": defaults["plan_encoder"]}, MODEL_REASON


#: Why the planner's default model. Measured (benchmarks/results/2026-12-06-cpu-plan,
#: model-r34-vs-r18): make run's settings (synthetic pets, type1, 64 px, 10 epochs, batch
#: 8, cosine, 1 thread) with resnet34_unet and with timm_unet over resnet18 tested at
#: native resolution 0.8374 both, while resnet18's epochs took about half the time (its
#: last.pt is a third the size); the peer result (2026-12-06-cpu-peer) found it as good as
#: smp's Unet.
MODEL_REASON = (
    "a U-Net on a small ImageNet encoder: as good as resnet34_unet at half its time per "
    "epoch (pets benchmark)"
)


def _multiple(model: str, options: dict[str, Any]) -> int:
    """The model's ``min_input_multiple``: declared by its factory, else read from a
    model built once (without its ``weights``)."""
    from segkit import build, registry
    from segkit.contracts import declared_multiple

    factory = registry.default_registry().get("models", model)
    options = {k: v for k, v in options.items() if k != "weights"}
    declared = declared_multiple(factory, options)
    if declared is not None:
        return declared
    return int(getattr(build.create_model(model, **options), "min_input_multiple", 1))


def _rough_costs(size: int, timed: tuple[int, float], fp: Fingerprint, crops: bool) -> Costs:
    """The costs of a run at ``size`` from one measured step: seconds per training image
    grow with the pixels; an evaluation image costs a third of a training one (a forward
    of the three passes) at the size the model sees it (native for crops)."""
    at, per_image = timed
    train = per_image * (size / at) ** 2
    w, h = fp.size_median
    seen = w * h if crops else size * size
    evaluate = per_image * seen / at**2 / 3
    n = fp.images
    test = (n.get("test", 0) + min(n.get("test", 0), 8)) * evaluate
    return Costs(0.0, n.get("train", 0) * train, n.get("valid", 0) * evaluate, test, 0.0, 0.0)


def _fit_size(
    ladder: list[int],
    timed: tuple[int, float],
    fp: Fingerprint,
    budget: float | None,
    crops: bool,
) -> tuple[int, int]:
    """The largest size of ``ladder`` at which :data:`rules.MIN_EPOCHS` epochs fit the
    budget by :func:`_rough_costs` (else the smallest), and the epochs that fit there."""
    assert budget is not None
    fitted = 0
    for size in ladder:
        fitted = rules.fit_schedule(_rough_costs(size, timed, fp, crops), budget, None).epochs
        if fitted >= rules.MIN_EPOCHS:
            return size, fitted
    return ladder[-1], fitted


def _epochs_at(costs: Costs, size: int, larger: int, crops: bool, budget: float) -> int:
    """The epochs that would fit ``budget`` at ``larger`` px, from the costs measured at
    ``size``: training grows with the pixels, and so does evaluation after resizing
    (native evaluation, after crops, does not); setup, test and checkpoints stay."""
    grow = (larger / size) ** 2
    scaled = Costs(
        costs.setup,
        costs.epoch * grow,
        costs.valid * (1.0 if crops else grow),
        costs.test,
        costs.last,
        costs.best,
    )
    return rules.fit_schedule(scaled, budget, None).epochs


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return str(value)


def _size_reason(
    size: int, ladder: list[int], fp: Fingerprint, budget: float | None, why: str
) -> str:
    top = ladder[0]
    if size == top:
        return f"{why}; the data check's size"
    if budget is None:
        return why
    return f"{why}; the largest of {top}..{ladder[-1]} where {rules.MIN_EPOCHS} epochs fit"


def _eval_reason(crops: bool, fp: Fingerprint) -> str:
    if crops:
        return "whole images at their own size, as they will be predicted"
    return "scored on the original masks: the model sees them resized, its logits resized back"


def _batch_reason(search: BatchSearch, largest: bool) -> str:
    tried = ", ".join(
        f"{t.batch}: {t.images_per_s:.0f} img/s" if t.fits else f"{t.batch}: no fit"
        for t in search.trials
    )
    what = "largest that fits" if largest else "measured"
    return f"{what} ({tried}); {search.stopped}"


def _epochs_reason(
    schedule: Schedule, budget: float | None, epochs: int | None, timing: RunTiming
) -> str:
    if epochs is not None:
        return f"as asked; the run takes about {duration(schedule.seconds)}"
    assert budget is not None
    if schedule.epochs >= rules.MAX_EPOCHS:
        return (
            f"capped at {rules.MAX_EPOCHS} (the original runs' length): "
            f"{duration(schedule.seconds)} of {duration(budget)}"
        )
    return (
        f"{timing.epoch_s:.1f}s each (measured, {timing.steps_per_epoch} steps): "
        f"{duration(schedule.seconds)} of the {duration(budget)} budget with everything else"
    )


def _monitor_reason(why: str) -> str:
    """Why best.pt is picked by the pooled valid Dice on a defect set
    (:meth:`segkit.task.Task.defect_monitor`, as the run's start line says it)."""
    return f"best.pt by the valid pixels pooled: {why}"


def _predict_reason(crops: bool, size: int) -> str:
    if crops:
        return (
            "whole images at their own size (tiled above 2048x2048 or out of memory), as evaluated"
        )
    return f"each image resized to {size} and back, as evaluated"
