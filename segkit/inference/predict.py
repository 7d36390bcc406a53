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
and ``skip_existing`` finishes it.

Each image's line names the mode it was predicted in (``resize``, ``tile`` or ``whole``:
what ``--mode auto`` chose for it), and ``predictions.csv`` in the output folder records
it with the image's size, mask and foreground share (:class:`PredictionRecord`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.reading import read_image
from segkit.errors import ConfigError
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
    """

    out: Path
    written: int
    skipped: int
    left_out: int
    seconds: float
    how: str
    modes: dict[str, int] = field(default_factory=dict)
    record: Path | None = None

    def summary(self) -> str:
        """The line ``segkit predict`` ends with."""
        skipped = f", {self.skipped} unreadable skipped" if self.skipped else ""
        rate = self.written / max(self.seconds, 1e-9)
        return (
            f"predicted {self.written} images{skipped} in {self.seconds:.1f} s "
            f"({rate:.1f} images/s; {self.how}) -> {self.out}"
        )


def predict(
    checkpoint: str | Path, images: Sequence[str | Path], out: str | Path, **options: Any
) -> Predicted:
    """Predict image files, folders and lists with a checkpoint and write the masks into
    ``out`` (``segkit predict``); a line per image is printed unless ``quiet``.

    Args:
        checkpoint: A run's ``best.pt`` or ``last.pt``.
        images: Image files, folders (searched recursively for :data:`IMAGE_SUFFIXES`)
            and ``.txt`` files listing one path per line.
        out: The folder to write into; a folder's subfolders are kept.
        **options: The other fields of :class:`~segkit.inference.options.PredictOptions`
            (``overlays``, ``probabilities``, ``threshold``, ``mode``, ``tta``, ``device``, ...).

    Raises:
        ConfigError: a bad option or input path, outputs that clash or already exist, or
            an ``out`` that cannot be written.
        CheckpointError: the checkpoint cannot be opened.
        DataError: an unreadable image, unless ``skip_bad``.
    """
    return run_predict(PredictOptions(checkpoint=checkpoint, images=images, out=out, **options))


def run_predict(options: PredictOptions) -> Predicted:
    """:func:`predict` with its options made (what ``segkit predict`` calls)."""
    files = collect_images(options.images)
    out = check_writable(options.out, "--out")  # read-only, full, a file: before any work
    trained = open_trained(
        options.checkpoint,
        device=options.device,
        precision=options.precision,
        num_workers=options.num_workers,
    )
    predictor = Predictor.of(trained, options.predictor())
    writer = PredictionWriter(
        predictor.task,
        options.threshold,
        overlay=options.overlays,
        probabilities=options.probabilities,
    )
    todo = _images_to_write(files, out, writer, options)
    result = _write_all(predictor, todo, writer, out, options)
    return dataclasses.replace(result, left_out=len(files) - len(todo))


def _images_to_write(
    files: list[tuple[Path, Path]], out: Path, writer: PredictionWriter, options: PredictOptions
) -> list[tuple[Path, Path]]:
    """``files`` less those already predicted (with ``skip_existing``), once every output
    is planned.

    Raises:
        ConfigError: two images would write one file, or outputs exist without
            ``overwrite`` or ``skip_existing``.
    """
    outputs = plan_outputs(files, out, writer)
    if options.skip_existing:
        finished = _finished(outputs)
        files = [f for f in files if f[0] not in finished]
        outputs = {p: t for p, t in outputs.items() if p not in finished}
        if finished:
            print(f"segkit: {len(finished)} images already predicted in {out}, left out")
        _remove_stopped_writes(outputs)
    _refuse_existing(outputs, options)
    return files


def plan_outputs(
    files: Sequence[tuple[Path, Path]], out: Path, writer: PredictionWriter
) -> dict[Path, list[Path]]:
    """Every image's output files, from :func:`collect_images`'s pairs.

    Raises:
        ConfigError: two inputs would write one file.
    """
    where: dict[Path, Path] = {}
    outputs: dict[Path, list[Path]] = {}
    for path, rel in files:
        outputs[path] = writer.paths(out / rel, path.stem)
        for target in outputs[path]:
            if target in where:
                raise ConfigError(
                    f"{where[target]} and {path} would both write {target}; predict them "
                    "into separate --out folders, or rename one"
                )
            where[target] = path
    return outputs


def _finished(outputs: dict[Path, list[Path]]) -> set[Path]:
    """The images whose outputs all exist: every file is written whole or not at all
    (:mod:`segkit.system.files`), so such an image is done; one stopped half-way has its
    outputs written again."""
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
            "do); pass --overwrite to replace them, or choose another --out"
        )


def _write_all(
    predictor: Predictor,
    files: list[tuple[Path, Path]],
    writer: PredictionWriter,
    out: Path,
    options: PredictOptions,
) -> Predicted:
    """Predict ``files`` (read by the predictor's threads) and write their outputs, each
    image's line and its row of ``predictions.csv``."""
    start = time.perf_counter()
    written = skipped = 0
    modes: Counter[str] = Counter()
    if predictor.mode == "auto" and not options.quiet:
        print(f"segkit: {predictor.auto_rule()}")
    reads = read_parallel(files, lambda f: read_image(f[0]), predictor.num_workers)
    record = PredictionRecord(out / RECORD_NAME, [path for path, _ in files])
    with contextlib.closing(_Lines(len(files), options.quiet)) as lines, record:
        for (path, rel), image, prob in predictor.predict_many(reads):
            lines.tick()
            if isinstance(image, Exception):
                _stop_or_skip(image, options.skip_bad, written, out)
                skipped += 1
                continue
            assert prob is not None
            mode = predictor.mode_for(*image.shape[:2])  # what predict_many just did
            paths = writer.write(out / rel, path, image, prob)
            record.add(path, paths[0].relative_to(out), image.shape[:2], mode, writer, prob)
            written += 1
            modes[mode] += 1
            if not options.quiet:
                files_ = ", ".join(p.name for p in paths)
                lines.say(f"{path}: {mode}, {writer.describe(prob)} -> {files_}")
    mode = mode_line(predictor.mode, modes)
    how = (
        f"{predictor.device}, {predictor.runtime.precision.name}, mode {mode}, tta {predictor.tta}"
    )
    seconds = time.perf_counter() - start
    return Predicted(out, written, skipped, 0, seconds, how, dict(modes), record.path)


#: The record ``segkit predict`` keeps in its output folder, one row per image.
RECORD_NAME = "predictions.csv"
#: Its columns: the image as named, its mask (relative to the output folder), the
#: image's size, the mode it was predicted in and the share of its pixels the mask marks
#: (binary: over the threshold; K classes: any class but class 0, what the overlay tints).
RECORD_FIELDS = ("image", "mask", "height", "width", "mode", "foreground")


class PredictionRecord:
    """``predictions.csv`` in the output folder: one row per image predicted into it
    (:data:`RECORD_FIELDS`).

    Rows of images predicted into the folder before are kept, and those of the images
    about to be predicted again are dropped, when it is opened (the file is rewritten under
    a temporary name and renamed); then a row is appended and flushed as each image is
    written, so a stopped predict keeps the rows of the images it wrote and
    ``--skip-existing`` adds the rest.

    Args:
        path: The file.
        images: The images about to be predicted.

    Raises:
        ConfigError: ``path`` exists and is not such a record.
    """

    def __init__(self, path: Path, images: Sequence[Path]) -> None:
        self.path = path
        again = {str(p) for p in images}
        kept = [row for row in self._rows() if row.get("image") not in again]
        with atomic_open(path, "w", newline="") as f:
            table = csv.DictWriter(f, RECORD_FIELDS, extrasaction="ignore", restval="")
            table.writeheader()
            table.writerows(kept)
        self._file = open(path, "a", newline="")  # noqa: SIM115 (closed by close())

    def _rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        if "image" not in (reader.fieldnames or ()):
            raise ConfigError(
                f"{self.path} exists and is not a segkit predictions record (no 'image' "
                f"column; predict writes {RECORD_NAME} in --out); move it, or choose another --out"
            )
        return rows

    def add(
        self,
        image: Path,
        mask: Path,
        size: tuple[int, int],
        mode: str,
        writer: PredictionWriter,
        prob: np.ndarray,
    ) -> None:
        """Append an image's row (``size``: height, width) and flush it."""
        row = io.StringIO()
        csv.writer(row).writerow(
            [image, mask.as_posix(), size[0], size[1], mode, f"{writer.foreground(prob):.6f}"]
        )
        self._file.write(row.getvalue())  # one write per row: a kill leaves whole rows
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PredictionRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop_or_skip(error: Exception, skip_bad: bool, written: int, out: Path) -> None:
    """Say that an unreadable image was skipped, or stop at it.

    Raises:
        DataError: the image's error, saying where the images before it are.
    """
    if not skip_bad:
        raise type(error)(
            f"{error}. The {written} images predicted before it are in {out}; pass "
            "--skip-bad to skip unreadable files"
        ) from None
    print(f"segkit: skipped {error}", file=sys.stderr)


class _Lines:
    """One line per image: through a progress bar on a terminal, else printed (none
    when ``quiet``)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.bar = None
        if not quiet and is_tty(sys.stderr):
            from tqdm.auto import tqdm  # only for a terminal

            self.bar = tqdm(total=total, unit="image", dynamic_ncols=True, leave=False)

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def collect_images(inputs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """The image files named by ``inputs``: files, folders (searched recursively for
    :data:`IMAGE_SUFFIXES`) and ``.txt`` files listing one path per line (relative paths
    are relative to the list's folder; blank lines and ``#`` comments are skipped).

    Returns:
        ``(file, its folder relative to the input it came from)`` pairs, in input order,
        each folder's files sorted; the relative folder is ``.`` for a file named directly
        or listed.

    Raises:
        ConfigError: a path that does not exist, or a folder with no images.
    """
    return [pair for name in inputs for pair in _named_images(Path(name))]


def _named_images(path: Path) -> list[tuple[Path, Path]]:
    if path.is_dir():
        return _folder_images(path)
    if path.suffix.lower() == ".txt" and path.is_file():
        return [(listed, Path(".")) for listed in _listed_paths(path)]
    if path.exists():
        return [(path, Path("."))]
    raise ConfigError(
        f"{path}: no such file or folder; give image files, folders of images or a "
        ".txt list of paths"
    )


def _folder_images(folder: Path) -> list[tuple[Path, Path]]:
    files = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not files:
        raise ConfigError(
            f"{folder}: no images in this folder or its subfolders (looked for "
            f"{', '.join(IMAGE_SUFFIXES)})"
        )
    return [(p, p.parent.relative_to(folder)) for p in files]


def _listed_paths(listing: Path) -> list[Path]:
    paths = []
    for line in listing.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            listed = Path(line).expanduser()
            paths.append(listed if listed.is_absolute() else listing.parent / listed)
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
            raise ConfigError(f"--probabilities {self.probabilities!r}: expected npy or png")
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
        self, out_dir: Path, image_path: Path, image: np.ndarray, prob: np.ndarray
    ) -> list[Path]:
        """Write the outputs of ``image`` (``(H, W, 3)`` uint8) and its probabilities
        ``prob`` (``(H, W)``, or ``(K, H, W)``) into ``out_dir``. Returns the paths
        (:meth:`paths`)."""
        from PIL import Image

        paths = self.paths(out_dir, image_path.stem)
        out_dir.mkdir(parents=True, exist_ok=True)
        mask, tint = self._mask_and_overlay(image, prob)
        _save_png(mask, paths[0])
        rest = iter(paths[1:])
        if self.overlay:
            _save_png(Image.fromarray(tint.astype(np.uint8)), next(rest))
        if self.format == "npy":
            with atomic_open(next(rest), "wb") as f:
                np.save(f, prob.astype(np.float32))
        elif self.format == "png":
            channels = prob if self.task.multiclass else prob[None]
            for channel, target in zip(channels, rest, strict=True):
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

    def foreground(self, prob: np.ndarray) -> float:
        """The share of the image's pixels the mask marks: over the threshold (binary), or
        any class but class 0 (K classes; the pixels the overlay tints)."""
        if self.task.multiclass:
            return float((prob.argmax(0) != 0).mean())
        return float((prob > self.threshold).mean())

    def describe(self, prob: np.ndarray) -> str:
        """What an image's line says: the share of each class, or of foreground."""
        if not self.task.multiclass:
            return f"{float((prob > self.threshold).mean()):.1%} foreground"
        counts = np.bincount(prob.argmax(0).ravel(), minlength=self.task.num_classes)
        shares = counts / prob[0].size
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
