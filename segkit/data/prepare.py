"""The data checks a run makes before its first step (:func:`prepare_training`).

Every mask of every split is read once, and every image's header (its size): a mask
value the dataset does not declare, an unreadable mask, a missing or unidentifiable
image, and an image and mask of different sizes stop the run before any training, each
kind of problem in one message that counts the files, names the first few and says what
fixes them (the same words as ``segkit data check``, from :mod:`segkit.data.encoding`).

With ``--skip-bad-samples`` images are decoded whole too, and the samples with a file
that cannot be read are left out; nothing else is (a readable mask with other values
is a mistake to fix, not a file to drop). A split left empty, or left with fewer samples
than a batch, stops the run.

Cost: one PNG decode per mask and one header read per image, in threads (PIL releases
the GIL while decoding); see the report of issue 24 for the numbers.

A dataset whose files pass is remembered (:class:`PassedCheck`): the next run on the same
files, each with the size, modification time and inode it had, checks their split sizes
only. Any change to a file, added or removed sample, other mask rule or another
``--skip-bad-samples`` checks everything again.

A K-class dataset's class coverage is warned about as ``segkit data check`` warns
(:func:`segkit.data.check.coverage_warnings`: a class with no pixel in train cannot be
learnt, one with none in valid or test is not measured there, a class under 0.1% of the
train pixels), one line each; so are images whose EXIF orientation tag leaves in doubt
which way their masks were drawn (a square image, a flip or a half turn: one line for
all, :func:`segkit.data.check.orientation_warning`). The warnings are kept with the
passed check, so a run on the same files says them again without reading the masks; so
is how many train masks are empty (a defect set's ``--monitor auto``,
:meth:`segkit.task.Task.defect_monitor`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segkit.config import named
from segkit.contracts import SPLITS, Dataset, MaskSpec, Sample
from segkit.data.check import (
    coverage_warnings,
    exif_in_doubt,
    orientation_warning,
    split_samples,
)
from segkit.data.encoding import (
    MaskInfo,
    diagnosis_of,
    foreground,
    inspect_mask,
    uniform_splits,
)
from segkit.data.reading import (
    FilteredDataset,
    check_same_size,
    exif_orientation,
    file_orientation,
    fit_advice,
    not_found,
    open_image,
    read_image,
)
from segkit.data.sampling import per_rank
from segkit.errors import DataError
from segkit.system.files import atomic_open, cache_dir
from segkit.system.workers import default_workers

#: File names shown in one message before "and N more".
SHOW = 3


@dataclass
class _Looked:
    split: str
    sample: Sample
    image_error: str | None
    image_size: tuple[int, int] | None  # (W, H)
    mask: MaskInfo
    orientation: int = 1  # the image's EXIF orientation tag (1: none, or unread)


def _look(split: str, sample: Sample, dataset: Dataset, decode_image: bool) -> _Looked:
    error = None
    size = None
    orientation = 1
    try:
        if decode_image:
            image = read_image(sample.image)
            size = (image.shape[1], image.shape[0])
            orientation = file_orientation(sample.image)
        else:
            with open_image(sample.image) as im:  # the header: size and EXIF, no pixels
                size = im.size
                orientation = exif_orientation(im)
    except DataError as e:
        error = str(e)
    except FileNotFoundError:
        error = not_found(sample.image, "image")
    except Exception:  # noqa: BLE001 -- segkit.data.reading words every failure the same way
        try:
            read_image(sample.image)
            error = f"{sample.image}: cannot read the image header"
        except DataError as e:
            error = str(e)
    mask = inspect_mask(sample.mask, dataset.mask_spec)
    return _Looked(split, sample, error, size, mask, orientation)


def default_threads() -> int:
    """Reading threads: one per usable core, up to 8 (decoding is the work; PIL releases
    the GIL), as the data check reads (:func:`~segkit.system.workers.default_workers`)."""
    return default_workers()


@dataclass
class Ready:
    """What :func:`prepare_training` leaves: the dataset to train on, the samples left
    out with why, the warnings, and how many of the train masks kept are empty (no
    foreground) of how many train samples (a defect set's share, for ``--monitor auto``)."""

    dataset: Dataset
    bad: list[tuple[str, Sample, str]]
    warnings: list[str]
    train_empty: int = 0
    train_images: int = 0


def prepare_training(
    dataset: Dataset,
    *,
    name: str,
    skip_bad_samples: bool,
    batch_size: int,
    world: int = 1,
    workers: int | None = None,
    options: Mapping[str, Any] | None = None,
    crops_per_image: int = 1,
) -> Ready:
    """Check a run's data before its first step; return the dataset to train on (without
    the unreadable samples, with ``skip_bad_samples``), those samples with why, and the
    warnings about its class coverage (K classes; one line each, none for binary: see
    :func:`segkit.data.check.coverage_warnings`) and EXIF orientations in doubt (one line).

    Args:
        dataset: The run's dataset.
        name: Its plugin name (for messages, and its ``declare_classes`` advice).
        skip_bad_samples: Leave samples with an unreadable file out instead of stopping.
        batch_size: Images per batch (per process).
        world: Processes training together (each reads ``ceil(n / world)`` samples).
        workers: Reading threads (default: :func:`default_threads`).
        options: The dataset options it was created with, for the plugin's advice (its
            ``declare_ignore``).
        crops_per_image: Crops of each train image an epoch (``--crops-per-image``): the
            train split's samples an epoch, which the batch is checked against.

    Raises:
        DataError: masks hold values the dataset does not declare (all of them counted,
            with what they are and the fix); files cannot be read (without
            ``skip_bad_samples``); every train mask is empty or, binary, all
            foreground; an image and its mask differ in size; or a split is
            left empty or, after leaving samples out, with fewer than a batch.
    """
    items = [(split, s) for split in SPLITS for s in split_samples(dataset, split, name)]
    root = Path(dataset.root)
    passed = PassedCheck(dataset, items, decode_images=skip_bad_samples)
    if passed.before():
        _check_split_sizes(dataset, [], batch_size, world, root, crops_per_image)
        return Ready(dataset, [], passed.warnings, *passed.train_empty)
    with ThreadPoolExecutor(max_workers=max(1, workers or default_threads())) as pool:
        looked = list(pool.map(lambda it: _look(*it, dataset, skip_bad_samples), items))
    run = _Checking(dataset, name, options)
    bad = _unreadable(looked, dataset)
    if bad and not skip_bad_samples:
        _refuse_unreadable(bad, run.check)
    _refuse_masks(looked, run)
    _refuse_mismatched(looked, run.check)
    out = {id(s) for _, s, _ in bad}
    warnings = _run_warnings(looked, out, dataset.mask_spec, root)
    train_empty = _train_empty(looked, out, dataset.mask_spec)
    if bad:  # only with skip_bad_samples
        dataset = FilteredDataset(dataset, {s.id for _, s, _ in bad})
    else:
        passed.remember(warnings, train_empty)
    _check_split_sizes(dataset, bad, batch_size, world, root, crops_per_image)
    return Ready(dataset, bad, warnings, *train_empty)


def _train_empty(looked: list[_Looked], out: set[int], spec: MaskSpec) -> tuple[int, int]:
    """(empty train masks, train samples) of the samples kept: a mask is empty where it
    decodes and holds no foreground, as ``segkit data check`` counts its empty masks."""
    train = [x for x in looked if x.split == "train" and id(x.sample) not in out]
    empty = sum(
        1
        for x in train
        if x.mask.error is None and x.mask.values and foreground(x.mask.values, spec) == 0
    )
    return empty, len(train)


@dataclass(frozen=True)
class _Checking:
    """The dataset :func:`prepare_training` checks, as its messages name it."""

    dataset: Dataset
    #: Its plugin name.
    name: str
    #: The dataset options it was created with.
    options: Mapping[str, Any] | None

    @property
    def root(self) -> Path:
        return Path(self.dataset.root)

    @property
    def check(self) -> str:
        """Where every problem is listed, for the end of a message."""
        return f"`segkit data check --data {self.root}` lists every problem"


def _unreadable(looked: list[_Looked], dataset: Dataset) -> list[tuple[str, Sample, str]]:
    """The samples with a file that cannot be read, with why (its words fitted to the
    dataset's plugin)."""
    return [
        (
            x.split,
            x.sample,
            fit_advice(x.image_error, dataset, "image")
            if x.image_error
            else fit_advice(x.mask.error, dataset, "mask"),
        )
        for x in looked
        if x.image_error or x.mask.error
    ]


def _refuse_unreadable(unreadable: list[tuple[str, Sample, str]], check: str) -> None:
    """Raise for the first unreadable file, counting the others.

    Raises:
        DataError: always.
    """
    first = unreadable[0][2]
    more = ""
    if len(unreadable) > 1:
        rest = [Path(_file_of(why)) for _, _, why in unreadable[1:]]
        more = f" ({len(rest)} more unreadable files: {_names(rest)})"
    raise DataError(
        f"{first}{more}; pass {named('skip_bad_samples', True)} to leave unreadable files "
        f"out ({check})"
    )


def _refuse_masks(looked: list[_Looked], run: _Checking) -> None:
    """Raise where the masks hold values the dataset refuses (all of them counted, with
    what they are and the fix), or every mask of train is empty or all foreground.

    Raises:
        DataError: so.
    """
    spec = run.dataset.mask_spec
    found = diagnosis_of(
        [x.mask for x in looked if x.mask.error is None], spec, run.name, run.root, run.options
    )
    if found.refused:
        fixes = "".join(f"; to fix: {fix}" for fix in found.fixes)
        raise DataError(f"{found.summary}; {run.check}{fixes}")
    by_split = {split: [x.mask for x in looked if x.split == split] for split in SPLITS}
    uniform = [m for severity, m in uniform_splits(by_split, spec, run.root) if severity == "error"]
    if uniform:
        raise DataError(f"{uniform[0]} ({run.check})")


def _refuse_mismatched(looked: list[_Looked], check: str) -> None:
    """Raise where an image and its mask differ in size (which the image's EXIF
    orientation does not explain), counting the others.

    Raises:
        DataError: so.
    """
    mismatched = []
    for x in looked:
        if x.image_error or x.mask.error or x.image_size is None or x.mask.size is None:
            continue
        if x.image_size == x.mask.size:
            continue
        try:  # the image's EXIF tag (its header, read again) may explain the sizes
            orientation = file_orientation(x.sample.image)
            check_same_size(x.sample, x.image_size[::-1], x.mask.size[::-1], orientation)
        except DataError as e:
            mismatched.append(str(e))
    if mismatched:
        more = f" ({len(mismatched) - 1} more masks differ from their image in size)"
        raise DataError(f"{mismatched[0]}{more if len(mismatched) > 1 else ''}; {check}")


def _run_warnings(looked: list[_Looked], out: set[int], spec: MaskSpec, root: Path) -> list[str]:
    """The class coverage warnings of the samples kept (all but those whose ``id`` is in
    ``out``), and one line for the images whose EXIF orientation is in doubt."""
    kept = {
        split: [x.mask for x in looked if x.split == split and id(x.sample) not in out]
        for split in SPLITS
    }
    warnings = coverage_warnings(kept, spec, root)
    turned = [
        x.sample.image
        for x in looked
        if id(x.sample) not in out and exif_in_doubt(x.orientation, x.image_size)
    ]
    if turned:  # sizes cannot tell which way their masks were drawn
        warnings.append(orientation_warning(turned))
    return warnings


class PassedCheck:
    """Whether a dataset's files passed :func:`prepare_training`'s checks as they are
    now. One small file per dataset folder, mask rule and ``--skip-bad-samples`` under
    ``$SEGKIT_CACHE/checked/`` holds a digest of the files' states (every image's and
    mask's path, size, modification time in nanoseconds and inode, in the splits' order)
    when they last passed, with the train split's empty masks and samples, then the
    warnings the check gave (one a line: the class coverage,
    :func:`segkit.data.check.coverage_warnings`); nothing is remembered where a
    file cannot be listed or the cache cannot be written, and a run never fails for the
    cache's sake."""

    #: Bump when the checks change what they refuse or the file's layout changes: earlier
    #: passes then no longer count (the version is part of the file's name). 3: the
    #: warnings after the digest. 4: 2/4-bit grey and 16-bit grey-with-alpha masks read by
    #: their stored values; the EXIF orientation warning. 5: 2/4-bit grey TIFFs stored
    #: "white is zero" read by their stored values. 6: the train split's empty masks and
    #: samples after the digest.
    VERSION = 6

    def __init__(
        self, dataset: Dataset, items: list[tuple[str, Sample]], *, decode_images: bool
    ) -> None:
        spec = dataset.mask_spec
        kind = f"{type(dataset).__module__}.{type(dataset).__qualname__}"
        key = f"{self.VERSION}|{Path(dataset.root).resolve()}|{kind}|{spec!r}|{decode_images}"
        self.path = cache_dir() / "checked" / f"{hashlib.sha256(key.encode()).hexdigest()}.txt"
        self.digest = _files_digest(key, items)
        #: The warnings the check gave when they passed (set by :meth:`before`).
        self.warnings: list[str] = []
        #: (empty train masks, train samples) when they passed (set by :meth:`before`).
        self.train_empty: tuple[int, int] = (0, 0)

    def before(self) -> bool:
        """These files, as they are, passed before (their warnings then in
        :attr:`warnings`)."""
        if self.digest is None:
            return False
        try:
            first, *warnings = self.path.read_text().splitlines()
            digest, empty, images = first.split()
            train_empty = (int(empty), int(images))
        except (OSError, UnicodeDecodeError, ValueError):  # ValueError: empty, or cut short
            return False
        if digest != self.digest:
            return False
        self.warnings = [w for w in warnings if w.strip()]
        self.train_empty = train_empty
        return True

    def remember(self, warnings: Sequence[str] = (), train_empty: tuple[int, int] = (0, 0)) -> None:
        """They pass now, with these warnings and (empty train masks, train samples)
        (best effort: a read-only cache remembers nothing)."""
        if self.digest is None:
            return
        first = f"{self.digest} {train_empty[0]} {train_empty[1]}"
        lines = [first, *(w.replace("\n", " ") for w in warnings)]  # one line each
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(self.path) as f:
                f.write("\n".join(lines) + "\n")
        except OSError:
            pass


def _files_digest(key: str, items: list[tuple[str, Sample]]) -> str | None:
    """A digest of ``key`` and every file's path and state; None if one cannot be listed."""
    h = hashlib.sha256(key.encode())
    try:
        for split, sample in items:
            for path in (sample.image, sample.mask):
                st = os.stat(path)
                h.update(f"{split}|{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}\n".encode())
    except (OSError, TypeError, ValueError):
        return None
    return h.hexdigest()


def _check_split_sizes(
    dataset: Dataset,
    bad: list[tuple[str, Sample, str]],
    batch_size: int,
    world: int,
    root: Path,
    crops: int = 1,
) -> None:
    left_out = {split: sum(1 for s, _, _ in bad if s == split) for split in SPLITS}
    for split in SPLITS:
        n = len(dataset.samples(split))
        out = left_out[split]
        why = f" after {named('skip_bad_samples', True)} left out {out} unreadable" if out else ""
        fix = (
            f"fix or replace the unreadable files (listed by `segkit data check --data {root}`)"
            if out
            else "add samples to it"
        )
        if n == 0:
            raise DataError(
                f"{root}: split '{split}' has no samples{why}; there is nothing to "
                f"{'train on' if split == 'train' else 'evaluate'}: {fix}"
            )
        if split != "train":
            continue
        # An epoch draws ``crops`` of each train image: one image of a slide is enough for a
        # batch of its crops.
        each = per_rank(n * crops, world)
        ranks = f" per process ({world} processes)" if world > 1 else ""
        drawn = f" ({n * crops} crops an epoch, {named('crops_per_image', crops)})"
        drawn = drawn if crops > 1 else ""
        if out and each < batch_size:
            raise DataError(
                f"{root}: split 'train' has {n} samples{why}{drawn}, fewer than a batch "
                f"({named('batch_size', batch_size)}{ranks}); {fix}, or lower "
                f"{named('batch_size')} to {each}"
            )
        if each == 1 and batch_size > 1:  # its lone batch of one is dropped: no step at all
            raise DataError(
                f"{root}: split 'train' has {n} sample{ranks}{why}: a batch of one image is "
                f"dropped (batch norm needs two), so an epoch would train nothing; {fix}, "
                f"or, with a recipe that trains on crops (microscopy, say), draw several "
                f"crops of it an epoch ({named('crops_per_image', 8)})"
            )


def _file_of(message: str) -> str:
    """The file a reading error names (its text up to the first ': ')."""
    return message.split(": ", 1)[0]


def _names(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:SHOW])
    return shown + (f" and {len(paths) - SHOW} more" if len(paths) > SHOW else "")
