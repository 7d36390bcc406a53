"""``segkit predict`` as a library function: masks (and overlays, probabilities) of image
files, folders and lists, written into a folder.

::

    result = segkit.predict("runs/unet/best.pt", ["photos/"], "masks/", overlays=True)
    print(result.summary())

The options are :class:`~segkit.inference.options.PredictOptions`'s. Every output is
planned before anything is predicted: two inputs writing one file, or files already
there (without ``overwrite`` or ``skip_existing``), stop the run before the model is
run. Each file is written under a temporary name and renamed
(:func:`segkit.system.files.atomic_open`), so a stopped predict leaves whole files only,
and ``skip_existing`` finishes it: it never replaces a file, and writes only the missing
outputs of an image that has some.

Folder searches leave out hidden files and folders and the ``out`` folder itself; a file
given twice is predicted once. Images whose EXIF orientation tag turns them when shown are
named in one line: masks follow the stored pixels.

Each image's line names the mode it was predicted in (``resize``, ``tile`` or ``whole``:
what ``--mode auto`` chose for it), and ``predictions.csv`` in the output folder records
it with the image's size, mask and foreground share, and for K classes each class's
share (:class:`PredictionRecord`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segkit.config import PYTHON, checked_keywords, given, named_as
from segkit.data.reading import UNREAD_PHOTOS, UNREADABLE_ADVICE, file_orientation, read_image
from segkit.errors import ConfigError, plural
from segkit.inference.options import PredictOptions, ProbabilityFormat
from segkit.inference.predictor import Predictor, mode_line, read_parallel
from segkit.inference.trained import open_trained
from segkit.system.files import atomic_open, check_writable, remove_temporaries
from segkit.task import Task
from segkit.training.progress import is_tty

#: Image files a folder is searched for (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


@dataclass(frozen=True)
class Predicted:
    """What :func:`predict` did.

    Attributes:
        out: The folder written into.
        written: Images whose outputs were written.
        skipped: Unreadable images skipped (``skip_bad``).
        left_out: Images already predicted, left out (``skip_existing``).
        seconds: Time spent predicting and writing.
        how: Device, precision, mode and tta, as the summary line shows them.
        modes: The images written in each mode (``resize``, ``tile``, ``whole``).
        record: The ``predictions.csv`` written (None: nothing was predicted).
        kept: Images predicted with some of their output files kept as they were
            (``skip_existing``: only the missing files were written).
        rotated: Images predicted whose EXIF orientation tag is not 1 (their masks
            follow the stored pixels, not the photo as shown).
        flagged: A binary model's images predicted with any foreground (over
            ``threshold``): the parts an inspection line would flag. None for K classes.
        threshold: The binary model's probability threshold.
    """

    out: Path
    written: int
    skipped: int
    left_out: int
    seconds: float
    how: str
    modes: dict[str, int] = field(default_factory=dict)
    record: Path | None = None
    kept: int = 0
    rotated: tuple[Path, ...] = ()
    flagged: int | None = None
    threshold: float = 0.5

    def summary(self) -> str:
        """The line ``segkit predict`` ends with."""
        skipped = f", {self.skipped} unreadable skipped" if self.skipped else ""
        kept = (
            f", {plural(self.kept, 'image')} with existing files kept (only their missing "
            f"files written; {_switch('overwrite')} redoes them)"
            if self.kept
            else ""
        )
        rate = self.written / max(self.seconds, 1e-9)
        flagged = (
            f"; {self.flagged} of {self.written} flagged (any foreground over {self.threshold:g})"
            if self.flagged is not None and self.written
            else ""
        )
        return (
            f"predicted {plural(self.written, 'image')}{skipped}{kept} in {self.seconds:.1f} s "
            f"({rate:.1f} images/s; {self.how}) -> {self.out}{flagged}"
        )


def _switch(key: str) -> str:
    """A switch of :class:`PredictOptions` as a message names it, the way the options were
    given (:func:`segkit.config.given_as`): ``overwrite=True`` from Python, ``--overwrite``
    on the command line."""
    return named_as(key, True) if given() == PYTHON else named_as(key)


@checked_keywords("segkit.predict", PredictOptions)
def predict(
    checkpoint: str | Path, images: Sequence[str | Path], out: str | Path, **options: Any
) -> Predicted:
    """Predict image files, folders and lists with a checkpoint and write the masks into
    ``out`` (``segkit predict``); a line per image is printed unless ``quiet``, or, for
    more than :data:`PER_IMAGE_LINES` images where stdout is not a terminal (a notebook,
    a log file), a line every ~10 % (:class:`_Lines`).

    Args:
        checkpoint: A run's ``best.pt`` or ``last.pt``.
        images: Image files, folders (searched recursively for :data:`IMAGE_SUFFIXES`)
            and ``.txt`` files listing one path per line.
        out: The folder to write into; a folder's subfolders are kept.
        **options: The other fields of :class:`~segkit.inference.options.PredictOptions`
            (``overlays``, ``probabilities``, ``threshold``, ``mode``, ``tta``, ``device``, ...).

    Raises:
        ConfigError: a bad option or input path, outputs that clash or already exist, or
            an ``out`` that cannot be written; UnknownSettingError (also a TypeError): a
            keyword no option has, with its close match.
        CheckpointError: the checkpoint cannot be opened.
        DataError: an unreadable image, unless ``skip_bad``.
    """
    return run_predict(PredictOptions(checkpoint=checkpoint, images=images, out=out, **options))


def run_predict(options: PredictOptions) -> Predicted:
    """:func:`predict` with its options made (what ``segkit predict`` calls)."""
    files = collect_images(options.images, leave_out=Path(options.out))
    unread = unread_photos(options.images)
    if unread:
        print(unread_line(unread), file=sys.stderr)
    made = _first_missing(Path(options.out))  # the folder this run makes, if any
    out = check_writable(options.out, named_as("out"))  # read-only, full, a file: before any work
    try:
        trained = open_trained(
            options.checkpoint,
            device=options.device,
            precision=options.precision,
            num_workers=options.num_workers,
        )
        trained.check_threshold(options.threshold)
        predictor = Predictor.of(trained, options.predictor())
        writer = PredictionWriter(
            predictor.task,
            options.threshold,
            overlay=options.overlays,
            probabilities=options.probabilities,
        )
        todo, keep = _images_to_write(files, out, writer, options)
        result = _write_all(predictor, todo, writer, out, options, keep)
    except BaseException:
        if made is not None:
            _remove_if_unwritten(made, out)
        raise
    return dataclasses.replace(result, left_out=len(files) - len(todo))


def _first_missing(folder: Path) -> Path | None:
    """The topmost folder of ``folder`` (or ``folder`` itself) that does not exist yet:
    what making it makes; None when it exists."""
    if folder.exists():
        return None
    made = folder
    while not made.parent.exists() and made.parent != made:
        made = made.parent
    return made


def _remove_if_unwritten(made: Path, out: Path) -> None:
    """Remove ``made`` (a folder this run created for ``out``) when the run wrote nothing
    into it: only empty folders, or a ``predictions.csv`` with no row."""
    if not made.is_dir():
        return
    for found in made.rglob("*"):
        if found.is_dir():
            continue
        if found != out / RECORD_NAME or len(found.read_text().splitlines()) > 1:
            return  # something was written: keep it all
    shutil.rmtree(made, ignore_errors=True)


def _images_to_write(
    files: list[tuple[Path, Path]], out: Path, writer: PredictionWriter, options: PredictOptions
) -> tuple[list[tuple[Path, Path]], dict[Path, set[Path]]]:
    """``files`` less those already predicted (with ``skip_existing``), once every output
    is planned, and the output files to keep as they are, by image (``skip_existing``:
    those that exist already; an existing file is never replaced without ``overwrite``).

    Raises:
        ConfigError: two images would write one file, or outputs exist without
            ``overwrite`` or ``skip_existing``.
    """
    outputs = plan_outputs(files, out, writer)
    keep: dict[Path, set[Path]] = {}
    if options.skip_existing:
        finished = _finished(outputs)
        files = [f for f in files if f[0] not in finished]
        outputs = {p: t for p, t in outputs.items() if p not in finished}
        if finished:
            print(f"segkit: {plural(len(finished), 'image')} already predicted in {out}, left out")
        if not options.overwrite:  # with it, an image stopped half-way is written again whole
            keep = {p: on for p, t in outputs.items() if (on := {x for x in t if x.exists()})}
        if keep:
            print(
                f"segkit: {plural(len(keep), 'image')} with some of their outputs in {out}: "
                f"only their missing files are written, the existing ones kept "
                f"({_switch('overwrite')} redoes them)"
            )
        _remove_stopped_writes(outputs)
    _refuse_existing(outputs, options)
    return files, keep


#: Collisions named in full in the message; the rest are counted.
NAMED = 3


def plan_outputs(
    files: Sequence[tuple[Path, Path]], out: Path, writer: PredictionWriter
) -> dict[Path, list[Path]]:
    """Every image's output files, from :func:`collect_images`'s pairs.

    Raises:
        ConfigError: two inputs would write one file (every such pair counted, the first
            few named).
    """
    where: dict[Path, Path] = {}
    outputs: dict[Path, list[Path]] = {}
    clashes: dict[tuple[Path, Path], Path] = {}  # (first, second) image: a file both write
    for path, rel in files:
        outputs[path] = writer.paths(out / rel, path.stem)
        for target in outputs[path]:
            if target in where and where[target] != path:
                clashes.setdefault((where[target], path), target)
            where.setdefault(target, path)
    if clashes:
        named = [f"{a} and {b} would both write {t}" for (a, b), t in clashes.items()]
        more = f"; and {len(named) - NAMED} more" if len(named) > NAMED else ""
        raise ConfigError(
            f"{plural(len(named), 'pair')} of inputs would write the same file: "
            f"{'; '.join(named[:NAMED])}{more}. Predict them into separate {named_as('out')} "
            "folders, "
            "or rename one of each pair"
        )
    return outputs


def _finished(outputs: dict[Path, list[Path]]) -> set[Path]:
    """The images whose outputs all exist: every file is written whole or not at all
    (:mod:`segkit.system.files`), so such an image is done; one stopped half-way is
    predicted again and only its missing outputs are written."""
    return {path for path, targets in outputs.items() if all(t.exists() for t in targets)}


def _remove_stopped_writes(outputs: dict[Path, list[Path]]) -> None:
    """Remove the temporary files a stopped predict was writing for these outputs."""
    names: dict[Path, set[str]] = {}
    for target in (t for targets in outputs.values() for t in targets):
        names.setdefault(target.parent, set()).add(target.name)
    for folder, of in names.items():
        if folder.is_dir():
            remove_temporaries(folder, of=of)


def _refuse_existing(outputs: dict[Path, list[Path]], options: PredictOptions) -> None:
    """Raises:
    ConfigError: output files exist, without ``overwrite`` or ``skip_existing``."""
    targets = [t for ts in outputs.values() for t in ts]
    existing = [t for t in targets if t.exists()]
    if existing and not (options.overwrite or options.skip_existing):
        raise ConfigError(
            f"{existing[0]} already exists ({len(existing)} of the {len(targets)} output files "
            f"do); pass {_switch('overwrite')} to replace them, {_switch('skip_existing')} to "
            f"write only the missing ones, or choose another {named_as('out')}"
        )


def _write_all(
    predictor: Predictor,
    files: list[tuple[Path, Path]],
    writer: PredictionWriter,
    out: Path,
    options: PredictOptions,
    keep: dict[Path, set[Path]] | None = None,
) -> Predicted:
    """Predict ``files`` (read by the predictor's threads) and write their outputs (less
    the files in ``keep``, by image: left as they are), each image's line and its row of
    ``predictions.csv``; then say how many had an EXIF orientation tag."""
    keep = keep or {}
    start = time.perf_counter()
    written = skipped = flagged = 0
    modes: Counter[str] = Counter()
    if predictor.mode == "auto" and not options.quiet:
        print(f"segkit: {predictor.auto_rule()}")
    rotated: set[Path] = set()

    def read(item: tuple[Path, Path]) -> np.ndarray:
        image = read_image(item[0])
        if file_orientation(item[0]) != 1:  # the header only: the pixels are read
            rotated.add(item[0])  # one thread per item; set.add holds the GIL
        return image

    reads = read_parallel(files, read, predictor.num_workers)
    rewritten = [
        (out / rel / f"{path.stem}_mask.png").relative_to(out).as_posix()
        for path, rel in files
        if out / rel / f"{path.stem}_mask.png" not in keep.get(path, ())
    ]
    record = PredictionRecord(out / RECORD_NAME, rewritten, share_columns(writer.task))
    with contextlib.closing(_Lines(len(files), options.quiet)) as lines, record:
        for (path, rel), image, prob in predictor.predict_many(reads):
            if isinstance(image, Exception):
                _stop_or_skip(image, options.skip_bad, written, out)  # always said, on stderr
                skipped += 1
                lines.tick()
                continue
            assert prob is not None
            mode = predictor.mode_for(*image.shape[:2])  # what predict_many just did
            kept = keep.get(path, set())
            paths = writer.write(out / rel, path, image, prob, keep=kept)
            mask = paths[0].relative_to(out)
            foreground, shares = writer.shares(prob)
            if paths[0] not in kept or not record.has(mask):  # a kept mask keeps its row
                record.add(path, mask, image.shape[:2], mode, foreground, shares)
            written += 1
            flagged += foreground > 0  # binary: any pixel over the threshold
            modes[mode] += 1
            if not options.quiet:
                files_ = ", ".join(p.name for p in paths if p not in kept)
                also = f" ({', '.join(p.name for p in paths if p in kept)} kept)" if kept else ""
                lines.say(
                    f"{path}: {mode}, {writer.describe(foreground, shares)} -> {files_}{also}"
                )
            lines.tick()
    mode = mode_line(predictor.mode, modes)
    how = (
        f"{predictor.device}, {predictor.runtime.precision.name}, mode {mode}, tta {predictor.tta}"
    )
    seconds = time.perf_counter() - start
    turned = tuple(path for path, _ in files if path in rotated)
    if turned:
        print(rotation_line(turned))
    binary = not writer.task.multiclass
    return Predicted(
        out,
        written,
        skipped,
        0,
        seconds,
        how,
        dict(modes),
        record.path,
        len(keep),
        turned,
        flagged=flagged if binary else None,
        threshold=writer.threshold,
    )


def rotation_line(rotated: Sequence[Path]) -> str:
    """The line saying that these images' masks follow their pixels as stored, not as
    their EXIF orientation tag shows them, and how to store them as shown."""
    named = ", ".join(str(p) for p in rotated[:NAMED])
    more = f" and {len(rotated) - NAMED} more" if len(rotated) > NAMED else ""
    return (
        f"segkit: {plural(len(rotated), 'image')} with an EXIF orientation tag ({named}{more}): "
        "masks follow the pixels as stored, so they look turned against the photo as a "
        "viewer shows it. To predict it as shown, store the rotation first: python -c "
        '"import sys; from PIL import Image, ImageOps; '
        '[ImageOps.exif_transpose(Image.open(p)).save(p, quality=95) for p in sys.argv[1:]]" '
        f"FILES, then predict again with {_switch('overwrite')}"
    )


#: The record ``segkit predict`` keeps in its output folder, one row per image.
RECORD_NAME = "predictions.csv"
#: Its columns: the image as named, its mask (relative to the output folder), the
#: image's size, the mode it was predicted in and the share of its pixels the mask marks
#: (binary: over the threshold; K classes: any class but class 0, what the overlay tints).
#: K classes add a column per class after them (:func:`share_columns`).
RECORD_FIELDS = ("image", "mask", "height", "width", "mode", "foreground")
#: The prefix of a class's pixel-share column: ``share_road``.
SHARE_PREFIX = "share_"


def share_columns(task: Task) -> list[str]:
    """The ``predictions.csv`` columns of a K-class model's class shares, class 0 first
    (``share_background``, ``share_road``, ...: the share of the image's pixels predicted
    as that class, summing to 1); none for binary."""
    return [SHARE_PREFIX + name for name in task.classes] if task.multiclass else []


class PredictionRecord:
    """``predictions.csv`` in the output folder: one row per image predicted into it
    (:data:`RECORD_FIELDS`, then for K classes the :func:`share_columns`).

    Rows are matched by their mask (one mask, one row, however its image was spelled):
    rows of masks written into the folder before are kept, and those of the masks about to
    be written again are dropped, when it is opened (the file is rewritten under a
    temporary name and renamed); then a row is appended and flushed as each image is
    written, so a stopped predict keeps the rows of the images it wrote and
    ``--skip-existing`` adds the rest. The columns are :data:`RECORD_FIELDS`, the kept
    rows' other columns (class shares of a model predicted into the folder before, kept
    with their values), then ``columns`` (empty in the rows that lack them).

    Args:
        path: The file.
        masks: The masks about to be written again, relative to its folder (POSIX).
        columns: The columns this predict adds after :data:`RECORD_FIELDS` (its class
            shares: :func:`share_columns`).

    Raises:
        ConfigError: ``path`` exists and is not such a record.
    """

    def __init__(self, path: Path, masks: Sequence[str], columns: Sequence[str] = ()) -> None:
        self.path = path
        self.columns = tuple(columns)
        again = set(masks)
        before, rows = self._rows()
        kept = [row for row in rows if row.get("mask") not in again]
        self._masks = {row.get("mask") for row in kept}
        fields = list(RECORD_FIELDS)
        for name in [*before, *columns]:
            if name and name not in fields:
                fields.append(name)
        self.fields = tuple(fields)
        with atomic_open(path, "w", newline="") as f:
            table = csv.DictWriter(f, self.fields, extrasaction="ignore", restval="")
            table.writeheader()
            table.writerows(kept)
        self._file = open(path, "a", newline="")  # noqa: SIM115 (closed by close())

    def _rows(self) -> tuple[list[str], list[dict[str, str]]]:
        """The existing record's columns and rows (none where there is none)."""
        if not self.path.exists():
            return [], []
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        if "image" not in (reader.fieldnames or ()):
            raise ConfigError(
                f"{self.path} exists and is not a segkit predictions record (no 'image' "
                f"column; predict writes {RECORD_NAME} in {named_as('out')}); move it, or choose "
                f"another {named_as('out')}"
            )
        return list(reader.fieldnames or ()), rows

    def has(self, mask: Path) -> bool:
        """Whether a row of ``mask`` (relative to the folder) was kept."""
        return mask.as_posix() in self._masks

    def add(
        self,
        image: Path,
        mask: Path,
        size: tuple[int, int],
        mode: str,
        foreground: float,
        shares: np.ndarray | None,
    ) -> None:
        """Append an image's row (``size``: height, width; ``foreground`` and the class
        ``shares`` in ``columns``' order: :meth:`PredictionWriter.shares`) and flush it."""
        values: dict[str, Any] = dict(
            zip(
                RECORD_FIELDS,
                [image, mask.as_posix(), size[0], size[1], mode, f"{foreground:.6f}"],
                strict=True,
            )
        )
        if shares is not None:
            for name, share in zip(self.columns, shares, strict=True):
                values[name] = f"{share:.6f}"
        row = io.StringIO()
        csv.DictWriter(row, self.fields, extrasaction="ignore", restval="").writerow(values)
        self._file.write(row.getvalue())  # one write per row: a kill leaves whole rows
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PredictionRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: What predict says of an unreadable input instead of
#: :data:`segkit.data.reading.UNREADABLE_ADVICE`.
INPUT_ADVICE = "Replace it, or leave it out of the paths given to predict"


def _stop_or_skip(error: Exception, skip_bad: bool, written: int, out: Path) -> None:
    """Say that an unreadable image was skipped, or stop at it.

    Raises:
        DataError: the image's error, saying where the images before it are.
    """
    said = str(error).replace(UNREADABLE_ADVICE, INPUT_ADVICE)
    if not skip_bad:
        if written == 0:
            before = "No image was predicted before it"
        else:
            are = "is" if written == 1 else "are"
            before = f"The {plural(written, 'image')} predicted before it {are} in {out}"
        raise type(error)(
            f"{said}. {before}; pass {_switch('skip_bad')} to skip unreadable files"
        ) from None
    print(f"segkit: skipped {said}", file=sys.stderr)


#: Images above which output that is not a terminal (a notebook, a log file, a pipe) gets
#: a line every ~10 % (:class:`_Lines`) instead of one per image.
PER_IMAGE_LINES = 20


class _Lines:
    """What predict prints as it goes (nothing when ``quiet``). On a terminal (stdout),
    and for up to :data:`PER_IMAGE_LINES` images anywhere, one line per image, through a
    progress bar where stderr is a terminal. For more images where stdout is not a
    terminal (a notebook, a log file), a line every ~10 % instead: the images done and
    images/s (``segkit: 40/200 images (20%), 12.5 images/s``). An unreadable image is said
    on its own line whatever (stderr: :func:`_stop_or_skip`)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.bar = None
        self.total, self.done, self.quiet = total, 0, quiet
        self.started = time.perf_counter()
        self.per_image = not quiet and (total <= PER_IMAGE_LINES or is_tty(sys.stdout))
        self.every = max(1, -(-total // 10))  # ceil: 10 lines, the last at 100 %
        if not quiet and is_tty(sys.stderr):
            from tqdm.auto import tqdm  # only for a terminal

            self.bar = tqdm(total=total, unit="image", dynamic_ncols=True, leave=False)

    def tick(self) -> None:
        """An image is done (written, or skipped as unreadable)."""
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.quiet or self.per_image:
            return
        if self.done % self.every == 0 or self.done == self.total:
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            line = (
                f"segkit: {self.done}/{plural(self.total, 'image')} "
                f"({100 * self.done // self.total}%), {rate:.1f} images/s"
            )
            if self.bar is not None:
                self.bar.write(line)
            else:
                print(line, flush=True)

    def say(self, line: str) -> None:
        """An image's line, where each image has one."""
        if not self.per_image:
            return
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def collect_images(
    inputs: Sequence[str | Path], leave_out: Path | None = None
) -> list[tuple[Path, Path]]:
    """The image files named by ``inputs``: files, folders (searched recursively for
    :data:`IMAGE_SUFFIXES`) and ``.txt`` files listing one path per line (relative paths
    are relative to the list's folder; blank lines and ``#`` comments are skipped).

    A folder search leaves out hidden files and folders (names starting with ``.``, such
    as macOS's ``._photo.jpg``) and the folder ``leave_out`` (predict's ``--out``: its
    masks are not predicted again); a file named directly or listed is always taken. A
    file given more than once (under any spelling) is taken once, where it comes first.

    Returns:
        ``(file, its folder relative to the input it came from)`` pairs, in input order,
        each folder's files sorted; the relative folder is ``.`` for a file named directly
        or listed.

    Raises:
        ConfigError: a path that does not exist (every missing path of a list counted,
            with its line), a folder with no images, or a list that names none.
    """
    skip = leave_out.expanduser().resolve() if leave_out is not None else None
    seen: set[Path] = set()
    found = []
    for name in inputs:
        for path, rel in _named_images(Path(name), skip):
            if (real := path.resolve()) not in seen:
                seen.add(real)
                found.append((path, rel))
    return found


def unread_photos(inputs: Sequence[str | Path]) -> list[Path]:
    """The files of :data:`UNREAD_PHOTOS` formats under the folders of ``inputs`` (not
    hidden), which :func:`collect_images` leaves out, sorted."""
    found = []
    for name in inputs:
        folder = Path(name)
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            if path.suffix.lower() in UNREAD_PHOTOS and not any(
                part.startswith(".") for part in path.relative_to(folder).parts
            ):
                found.append(path)
    return sorted(found)


def unread_line(paths: Sequence[Path]) -> str:
    """The line saying which photos a folder search left out, and what to convert them to."""
    kinds = sorted({UNREAD_PHOTOS[p.suffix.lower()] for p in paths})
    named = ", ".join(str(p) for p in paths[:NAMED])
    more = f" and {len(paths) - NAMED} more" if len(paths) > NAMED else ""
    return (
        f"segkit: {plural(len(paths), 'file')} left out ({named}{more}): "
        f"{' and '.join(kinds)} photos, which segkit does not read; convert them to JPEG or "
        "PNG to predict them"
    )


def _named_images(path: Path, skip: Path | None = None) -> list[tuple[Path, Path]]:
    if path.is_dir():
        return _folder_images(path, skip)
    if path.suffix.lower() == ".txt" and path.is_file():
        return [(listed, Path(".")) for listed in _listed_paths(path)]
    if path.exists():
        return [(path, Path("."))]
    raise ConfigError(
        f"{path}: no such file or folder; give image files, folders of images or a "
        ".txt list of paths"
    )


def _folder_images(folder: Path, skip: Path | None = None) -> list[tuple[Path, Path]]:
    """The images under ``folder``, less hidden files and folders and ``skip``'s tree
    (resolved) when it is below ``folder``; when ``skip`` is ``folder`` itself (masks
    written beside the images), the files predict writes for the images found
    (``<stem>_mask.png``, ``_overlay.png``, ``_probs*.png``) are left out instead."""
    beside = skip is not None and skip == folder.resolve()
    files = []
    for found in folder.rglob("*"):
        rel = found.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if found.suffix.lower() not in IMAGE_SUFFIXES or not found.is_file():
            continue
        if skip is not None and not beside and found.resolve().is_relative_to(skip):
            continue
        files.append(found)
    if beside:
        files = _less_outputs(files)
    if not files:
        left = (
            f"; {skip} ({named_as('out')}) is left out"
            if skip and not beside and skip.is_relative_to(folder.resolve())
            else ""
        )
        unread = unread_photos([folder])
        if unread:
            left += f"; {unread_line(unread).removeprefix('segkit: ')}"
        raise ConfigError(
            f"{folder}: no images in this folder or its subfolders (looked for "
            f"{', '.join(IMAGE_SUFFIXES)}; hidden files and folders are left out{left})"
        )
    return [(p, p.parent.relative_to(folder)) for p in sorted(files)]


#: The names predict writes for an image ``<stem>``: ``<stem>`` and what follows.
OUTPUT_NAME = re.compile(r"(.+)_(mask|overlay|probs(_.+)?)\.png")


def _less_outputs(files: list[Path]) -> list[Path]:
    """``files`` less those named as predict's outputs of another of ``files`` in the same
    folder (``a_mask.png`` beside ``a.jpg``)."""
    stems = {(f.parent, f.stem) for f in files}
    return [
        f
        for f in files
        if not ((m := OUTPUT_NAME.fullmatch(f.name)) and (f.parent, m.group(1)) in stems)
    ]


def _listed_paths(listing: Path) -> list[Path]:
    """The paths ``listing`` names, each checked to exist.

    Raises:
        ConfigError: listed paths that do not exist: the first few named with their line
            numbers, all counted; a list that names no path.
    """
    paths = []
    missing: list[str] = []
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            listed = Path(line).expanduser()
            path = listed if listed.is_absolute() else listing.parent / listed
            if not path.is_file():
                missing.append(f"line {number}: {line}")
            paths.append(path)
    if missing:
        more = f"; and {len(missing) - NAMED} more" if len(missing) > NAMED else ""
        raise ConfigError(
            f"{listing}: {plural(len(missing), 'listed path')} of {len(paths)} not found "
            f"({'; '.join(missing[:NAMED])}{more}; relative paths are relative to the list's "
            "folder); fix or remove those lines"
        )
    if not paths:
        raise ConfigError(
            f"{listing}: a .txt input is a list of image paths, one per line, and this one "
            "lists none (it is empty, or all blank lines and # comments); write the images' "
            "paths in it, or give the images or their folder instead"
        )
    return paths


# ----------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class PredictionWriter:
    """Writes an image's predicted mask, overlay and probabilities.

    Every file is written under a temporary name and renamed, so an interrupted run never
    leaves half a file. Binary: the mask is 0/255 (``prob > threshold``), the overlay
    tints it green. K classes (``task``): the mask is a palette PNG whose pixel values are
    the class indices (``argmax``; any image viewer shows the task's colours), the overlay
    tints every class but class 0 in its colour.

    Attributes:
        task: Binary, or the model's K classes.
        threshold: A binary model's probability threshold.
        overlay: Also write ``<stem>_overlay.png``.
        probabilities: Also write the probabilities: ``npy`` (or True) ``<stem>_probs.npy``
            (float32), ``png`` 16-bit grayscale PNGs (probability x 65535; one
            ``<stem>_probs_<class>.png`` per class for K classes); None or False: not.
    """

    task: Task = Task()
    threshold: float = 0.5
    overlay: bool = True
    probabilities: bool | ProbabilityFormat | None = None

    @property
    def format(self) -> str | None:
        """``npy``, ``png`` or None."""
        if self.probabilities is True:
            return "npy"
        if not self.probabilities:
            return None
        if self.probabilities not in ("npy", "png"):
            raise ConfigError(
                f"{named_as('probabilities', self.probabilities)}: expected npy or png"
            )
        return str(self.probabilities)

    def paths(self, out_dir: Path, stem: str) -> list[Path]:
        """The files :meth:`write` writes for an image named ``stem``, in order."""
        paths = [out_dir / f"{stem}_mask.png"]
        if self.overlay:
            paths.append(out_dir / f"{stem}_overlay.png")
        if self.format == "npy":
            paths.append(out_dir / f"{stem}_probs.npy")
        elif self.format == "png" and self.task.multiclass:
            paths += [out_dir / f"{stem}_probs_{name}.png" for name in self.task.classes]
        elif self.format == "png":
            paths.append(out_dir / f"{stem}_probs.png")
        return paths

    def write(
        self,
        out_dir: Path,
        image_path: Path,
        image: np.ndarray,
        prob: np.ndarray,
        keep: Collection[Path] = (),
    ) -> list[Path]:
        """Write the outputs of ``image`` (``(H, W, 3)`` uint8) and its probabilities
        ``prob`` (``(H, W)``, or ``(K, H, W)``) into ``out_dir``, less those in ``keep``
        (left as they are). Returns the paths (:meth:`paths`), kept ones included."""
        from PIL import Image

        paths = self.paths(out_dir, image_path.stem)
        out_dir.mkdir(parents=True, exist_ok=True)
        mask, tint = self._mask_and_overlay(image, prob)
        if paths[0] not in keep:
            _save_png(mask, paths[0])
        rest = iter(paths[1:])
        if self.overlay and (target := next(rest)) not in keep:
            _save_png(Image.fromarray(tint.astype(np.uint8)), target)
        if self.format == "npy" and (target := next(rest)) not in keep:
            with atomic_open(target, "wb") as f:
                np.save(f, prob.astype(np.float32))
        elif self.format == "png":
            channels = prob if self.task.multiclass else prob[None]
            for channel, target in zip(channels, rest, strict=True):
                if target in keep:
                    continue
                scaled = np.round(np.clip(channel, 0, 1) * 65535).astype(np.uint16)
                _save_png(Image.fromarray(scaled), target)
        return paths

    def _mask_and_overlay(self, image: np.ndarray, prob: np.ndarray) -> tuple[Any, np.ndarray]:
        """The mask as a PIL image, and the image tinted where the mask is set (float32)."""
        from PIL import Image

        tint = image.astype(np.float32)
        if self.task.multiclass:
            classes = prob.argmax(0).astype(np.uint8)
            shown = classes != 0
            tint[shown] = 0.5 * tint[shown] + 0.5 * self.task.colorize(classes)[shown]
            return palette_png(classes, self.task), tint
        mask = prob > self.threshold
        tint[mask] = 0.5 * tint[mask] + 0.5 * np.array([0, 220, 0], np.float32)
        return Image.fromarray((mask * 255).astype(np.uint8)), tint

    def shares(self, prob: np.ndarray) -> tuple[float, np.ndarray | None]:
        """The share of the image's pixels the mask marks (over the threshold for binary;
        for K classes any class but class 0, the pixels the overlay tints), and for K
        classes each class's share (``argmax``: what the mask holds), class 0 first,
        summing to 1 (None for binary): one pass over the image serves both."""
        if not self.task.multiclass:
            return float((prob > self.threshold).mean()), None
        counts = np.bincount(prob.argmax(0).ravel(), minlength=self.task.num_classes)
        size = prob[0].size
        return float((size - counts[0]) / size), counts / size

    def describe(self, foreground: float, shares: np.ndarray | None) -> str:
        """What an image's line says (from :meth:`shares`): the share of each class, or of
        foreground."""
        if shares is None:
            return f"{foreground:.1%} foreground"
        return ", ".join(f"{c} {v:.1%}" for c, v in zip(self.task.classes, shares, strict=True))


def _save_png(im: Any, path: Path) -> None:
    with atomic_open(path, "wb") as f:  # a hidden temporary name of its own, then renamed
        im.save(f, format="PNG")


def palette_png(classes: np.ndarray, task: Task) -> Any:
    """An ``(H, W)`` class-index array as a palette ("P") PIL image: the stored values are
    the class indices (what ``segkit.data.reading`` and the ``folder`` dataset read back), the
    palette the task's colours (index 255, ignore, grey)."""
    from PIL import Image

    im = Image.fromarray(classes.astype(np.uint8))  # "L"; putpalette makes it "P"
    flat = [0] * 768
    for c, (r, g, b) in enumerate(task.palette):
        flat[3 * c : 3 * c + 3] = [r, g, b]
    flat[765:768] = [128, 128, 128]
    im.putpalette(flat)
    return im
