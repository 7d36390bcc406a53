"""``segkit data check``: read every sample of a dataset once and report what a run would
trip on, with an image size and a BCE ``pos_weight`` that suit the data.

Works through the dataset contract only (``root``, ``mask_spec``, ``samples(split)``), so
every dataset plugin gets the same checks. Files are read with the rules and messages of
:mod:`segkit.data.reading`, in a thread pool (PIL releases the GIL while decoding).

Problems are ``error`` (a run would stop on them: an unreadable file, a mask value outside
those declared, an image/mask size mismatch, one image in two splits, an image without
its mask, every train mask empty) or ``warning`` (a file whose format differs from its
extension, a mask in a format unlike the others, binary encodings mixed, images of more
than 8 bits, an EXIF orientation that may not match the masks). Each names its file. A dataset plugin
that declares ``audit`` (see :class:`segkit.contracts.DatasetFactory`) is read through
it, so problems of the layout itself (every image without its mask, not only the first)
and the files the layout leaves unread are listed too. What the refused masks are and
what makes the run work (the classes to declare, a command) comes from
:mod:`segkit.data.encoding`.
"""

from __future__ import annotations

import hashlib
import io
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segkit.config import PYTHON, data_path, given, named, named_options
from segkit.contracts import IGNORE_INDEX, SPLITS, Dataset, LayoutAudit, MaskSpec, Sample
from segkit.data.encoding import (
    Diagnosis,
    MaskInfo,
    diagnosis_of,
    foreground,
    inspect_mask,
    names,
    uniform_splits,
)
from segkit.data.reading import (
    ROTATED,
    check_same_size,
    exif_command,
    exif_orientation,
    fit_advice,
    image_mode,
    is_deep,
    open_image,
    read_image,
    read_raw_mask,
)
from segkit.errors import DataError, plural
from segkit.registry import default_registry
from segkit.system.workers import default_workers
from segkit.training.progress import is_tty

if TYPE_CHECKING:
    from segkit.config import RunConfig

#: Empty-mask names shown per split before "and N more".
SHOW_EMPTY = 5
#: The key of ignored pixels in a split's class pixel counts.
IGNORED = "ignored"
#: A class under this share of the labelled train pixels is warned about (``class_tiny``).
TINY_CLASS = 0.001
#: A suggested class weight above this comes with the advice to cap it.
HEAVY_WEIGHT = 100
#: The suggested image size is at most this (compute grows with its square).
MAX_SUGGESTED_SIZE = 512
#: Sizes are multiples of this: every model accepts them (see segkit.contracts).
SIZE_MULTIPLE = 32


@dataclass
class Problem:
    """One finding about one file: ``severity`` is ``error`` (a run would stop) or
    ``warning``; ``kind`` one of unreadable, mask_values, size_mismatch, duplicate,
    format_mismatch, split, layout (the dataset's audit: an image without its mask...),
    odd_mask, mixed_encoding, void_border (binary masks holding 1 and 255),
    binary_among_classes (masks of only 0 and 255 among K-class masks: 255 is 'ignore'
    there), foreground (a split's masks all empty, or all foreground),
    image_depth (images of more than 8 bits), transparency (images with see-through pixels),
    frames (an image or mask file of several pages: the first is read),
    orientation (an EXIF rotation in doubt),
    class_absent (K classes: a class with no pixel in a split), class_tiny (a class under
    0.1% of the labelled train pixels)."""

    severity: str
    kind: str
    file: str
    message: str


@dataclass
class SplitStats:
    """What one split holds. Sizes are ``[width, height]``; ``foreground_fraction`` is over
    the pixels of the masks that could be read (None when none could)."""

    count: int = 0
    read: int = 0  # samples without a problem that would stop a run
    size_min: list[int] | None = None
    size_median: list[int] | None = None
    size_max: list[int] | None = None
    foreground_pixels: int = 0
    pixels: int = 0
    foreground_fraction: float | None = None
    empty_masks: list[str] = field(default_factory=list)
    #: K classes: pixels of each class (and ``ignored``), over the masks that read.
    class_pixels: dict[str, int] = field(default_factory=dict)


@dataclass
class Report:
    """The result of :func:`check_dataset`; :meth:`to_dict` is what ``--json`` prints."""

    dataset: str
    root: str
    mask_background: int
    mask_allowed: list[int]
    splits: dict[str, SplitStats]
    image_formats: dict[str, int]
    mask_formats: dict[str, int]
    mask_values: dict[str, int]
    duplicates: list[dict[str, Any]]
    problems: list[Problem]
    suggestions: dict[str, Any]
    #: The class names of a K-class dataset (empty: binary). Then "foreground" is every
    #: pixel of a class other than class 0, and an empty mask one with only class 0.
    classes: list[str] = field(default_factory=list)
    #: Files in the dataset's folders that it does not read: ``{"file", "why"}``.
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: What the refused masks are, in one line ("" when none is refused).
    masks_refused: str = ""
    #: What makes the run work, each as words to print (a classes.txt, a command).
    fixes: list[str] = field(default_factory=list)
    #: How to train on this data with the suggested image size, as the check was given
    #: its settings (:func:`segkit.config.given_as`): the ``segkit run`` command for
    #: ``segkit data check``, the ``segkit.train(data=..., image_size=...)`` call for
    #: :func:`segkit.check_data` (set by :func:`check_configured`; "" otherwise).
    command: str = ""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        """No problem that would stop a run."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out

    def __str__(self) -> str:
        """What ``segkit data check`` prints: ``print(report)``."""
        return format_report(self)

    def __repr__(self) -> str:
        """One line for a notebook cell: the dataset, its splits, whether a run would
        start and the problems by severity; ``print(report)`` shows the whole report."""
        splits = ", ".join(f"{name} {st.count}" for name, st in self.splits.items())
        warnings = len(self.problems) - len(self.errors)
        return (
            f"Report(dataset={self.dataset!r}, root={self.root!r}, splits=<{splits}>, "
            f"ok={self.ok}, problems=<{plural(len(self.errors), 'error')}, "
            f"{plural(warnings, 'warning')}>; print(report) shows it all)"
        )


@dataclass
class _Seen:
    """What reading one sample found."""

    split: str
    sample: Sample
    image_size: tuple[int, int] | None = None  # (W, H)
    image_format: str | None = None
    image_mode: str = ""
    orientation: int = 1  # the image's EXIF orientation tag (1: as stored)
    see_through: float = 0.0  # the image's share of fully transparent pixels
    frames: int = 1  # the image's pages or frames (a TIFF stack, an animation)
    mask_format: str | None = None
    mask: MaskInfo | None = None
    digest: str | None = None
    values: dict[int, int] = field(default_factory=dict)  # raw value -> pixels
    foreground: int = 0
    pixels: int = 0
    mask_ok: bool = False
    problems: list[Problem] = field(default_factory=list)

    def stops(self) -> bool:
        """Whether a problem with this sample would stop a run."""
        return any(p.severity == "error" for p in self.problems)


# ----------------------------------------------------------------------------- reading


def _format_problem(path: Path, fmt: str | None, mask: bool = False) -> Problem | None:
    """A warning when ``path``'s extension says another format than its content. A
    ``mask`` of a lossy format (a JPEG renamed .png) is not to be renamed back (JPEG masks
    are not read) but exported again losslessly."""
    from PIL import Image

    expected = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or expected is None or expected == fmt:
        return None
    advice = f"rename it to {path.stem}{_suffix(fmt)}"
    if mask and fmt in LOSSY_FORMATS:
        advice = (
            f"renaming a {fmt} does not make it lossless ({fmt} compression blurs label "
            "values): export the mask again as PNG, or threshold it (the fix below, where "
            "its values are blurred)"
        )
    return Problem(
        "warning",
        "format_mismatch",
        str(path),
        f"{path}: a {fmt} file named {path.suffix}; PIL reads it by content, but other "
        f"tools go by the name: {advice}",
    )


#: Formats whose compression changes pixel values (label values, in a mask).
LOSSY_FORMATS = ("JPEG", "MPO")


def _suffix(fmt: str) -> str:
    return {"JPEG": ".jpg", "PNG": ".png"}.get(fmt, "." + fmt.lower())


def _unreadable(path: Path, reader: Callable[[Path], Any], error: Exception) -> Problem:
    """The problem for a file that failed to decode, in :mod:`segkit.data.reading`'s words."""
    try:
        reader(path)
        message = f"{path}: cannot read ({error})"
    except DataError as e:
        message = str(e)
    return Problem("error", "unreadable", str(path), message)


def _read_one(split: str, sample: Sample, spec: MaskSpec, dataset: Dataset) -> _Seen:
    seen = _Seen(split, sample)
    # The image: its bytes once, for the hash and the decode.
    try:
        data = sample.image.read_bytes()
        seen.digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        with open_image(io.BytesIO(data), sample.image) as im:  # refuses a bomb unread
            seen.image_mode = image_mode(im)  # before load(): RGB;16 for 16-bit colour
            im.load()
            seen.image_size = im.size
            seen.image_format = f"{im.format} {seen.image_mode}"
            seen.see_through = _see_through(im)
            seen.frames = getattr(im, "n_frames", 1) or 1
            seen.orientation = exif_orientation(im)
            problem = _format_problem(sample.image, im.format)
    except Exception as e:  # noqa: BLE001 -- every failure is reported as segkit.data.reading does
        problem = _unreadable(sample.image, read_image, e)
        problem.message = fit_advice(problem.message, dataset, "image")
        seen.problems.append(problem)
    else:
        if problem:
            seen.problems.append(problem)
    # The mask: what it is and its raw values (segkit.data.encoding), then the rules.
    info = seen.mask = inspect_mask(sample.mask, spec)
    if info.error is not None:
        message = fit_advice(info.error, dataset, "mask")
        seen.problems.append(Problem("error", "unreadable", str(sample.mask), message))
        return seen
    seen.mask_format = f"{info.format} {info.mode}"
    problem = _format_problem(sample.mask, info.format, mask=True)
    if problem:
        seen.problems.append(problem)
    # A refused colour mask's values are the grey levels of its colours: no labels (its
    # colours are named in the diagnosis), so no values, foreground or empty mask from it.
    seen.values = {} if info.colours and info.problem is not None else info.values
    if info.problem is not None:
        seen.problems.append(
            Problem("error", "mask_values", str(sample.mask), info.problem + _hint(seen, spec))
        )
    else:
        seen.mask_ok = True
    if not seen.values:  # colours outside the palette: nothing decoded
        return seen
    seen.pixels = sum(seen.values.values())
    seen.foreground = foreground(seen.values, spec)
    if seen.image_size is not None and info.size is not None:
        try:
            check_same_size(
                sample, seen.image_size[::-1], info.size[::-1], orientation=seen.orientation
            )
        except DataError as e:
            seen.problems.append(Problem("error", "size_mismatch", str(sample.mask), str(e)))
    return seen


def _hint(seen: _Seen, spec: MaskSpec) -> str:
    found = set(seen.values)
    allowed = set(spec.allowed)
    if 255 in found and 255 not in allowed and found <= {0, 255} and {0, 1} <= allowed:
        return "; looks like 0/255 encoding: divide by 255 (mask // 255)"
    return ""


def _read_all(
    items: list[tuple[str, Sample]],
    read: Callable[[str, Sample], Any],
    workers: int,
    progress: bool | None,
) -> list[Any]:
    """``read`` every item in a thread pool, in order, with a tqdm bar on a terminal."""
    from concurrent.futures import ThreadPoolExecutor

    if progress is None:
        progress = is_tty(sys.stderr)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="reading", unit="sample", leave=False, file=sys.stderr)
    out = []
    # Threads: PIL releases the GIL while decoding.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for result in pool.map(lambda item: read(*item), items):
            out.append(result)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return out


# ----------------------------------------------------------------------------- checking


def split_samples(dataset: Dataset, split: str, name: str = "") -> list[Sample]:
    """``dataset.samples(split)``, with an exception that is not segkit's (a dataset
    plugin's bug: a ``KeyError`` for a split it lacks) turned into one naming the plugin,
    the call and what the contract asks for.

    Raises:
        SegkitError: what the dataset raised (a DataError naming a missing file).
        PluginContractError: anything else the dataset raised, from it.
    """
    from segkit.errors import PluginContractError, PluginError, SegkitError

    try:
        return dataset.samples(split)
    except SegkitError:
        raise
    except Exception as e:
        label = f"dataset {type(dataset).__name__}"
        if name:
            try:
                label = default_registry().info("datasets", name).label
            except PluginError:
                label = f"dataset '{name}'"
        raise PluginContractError(
            f"{label} raised {type(e).__name__}: {e} in samples({split!r}); a dataset's "
            "samples(split) returns the list of segkit.contracts.Sample of each of "
            f"{', '.join(SPLITS)} (a split it cannot list raises segkit.errors.DataError "
            "naming the file or folder, an unknown split segkit.errors.ConfigError). Run "
            f"segkit.testing.check_dataset({name or 'your_factory'!r}, root=...) to check it "
            "against every rule of its contract"
        ) from e


def check_dataset(
    dataset: Dataset,
    workers: int | None = None,
    *,
    name: str = "",
    progress: bool | None = None,
    options: Mapping[str, Any] | None = None,
) -> Report:
    """Read every sample of every split once and report on them.

    Args:
        dataset: Any dataset plugin's object (the contract's ``root``, ``mask_spec`` and
            ``samples``).
        workers: Reading threads (default: one per core, up to 8).
        name: The dataset's plugin name, for the report.
        progress: A progress bar on stderr (default: when stderr is a terminal).
        options: The dataset options it was created with, for the plugin's advice (its
            ``declare_ignore``).
    """
    spec = dataset.mask_spec
    problems, items, splits, skipped = _listed(dataset, name)
    seen: list[_Seen] = _read_all(
        items,
        lambda split, s: _read_one(split, s, spec, dataset),
        workers or default_workers(),
        progress,
    )
    tally = _tally(seen, splits, spec, problems)
    duplicates = _duplicates(tally.by_digest, problems)
    found = diagnosis_of(
        [s.mask for s in seen if s.mask is not None], spec, name, dataset.root, options
    )
    problems += _mask_problems(seen, found, splits, spec, dataset.root)
    fixes = list(found.fixes)
    if isinstance(dataset, LayoutAudit):
        fixes = [*dataset.advice, *fixes]
    return Report(
        dataset=name,
        root=str(dataset.root),
        mask_background=spec.background,
        mask_allowed=list(spec.allowed),
        splits=splits,
        image_formats=dict(sorted(tally.image_formats.items(), key=lambda kv: -kv[1])),
        mask_formats=dict(sorted(tally.mask_formats.items(), key=lambda kv: -kv[1])),
        mask_values={str(k): v for k, v in sorted(tally.mask_values.items())},
        duplicates=duplicates,
        problems=problems,
        suggestions=_suggestions(
            [sz for split in SPLITS for sz in tally.sizes[split]],
            splits,
            spec,
            refused=found.refused,
        ),
        classes=list(spec.classes),
        skipped=skipped,
        masks_refused=found.summary,
        fixes=fixes,
    )


def _listed(
    dataset: Dataset, name: str
) -> tuple[list[Problem], list[tuple[str, Sample]], dict[str, SplitStats], list[dict[str, str]]]:
    """The layout's problems (of a :class:`LayoutAudit`) and each split's; every
    ``(split, sample)`` to read; each split's stats, its count filled in; and the files the
    layout leaves unread."""
    problems: list[Problem] = []
    items: list[tuple[str, Sample]] = []
    splits: dict[str, SplitStats] = {}
    skipped: list[dict[str, str]] = []
    if isinstance(dataset, LayoutAudit):  # every layout problem, and what it leaves unread
        problems += [Problem("error", "layout", str(f), m) for f, m in dataset.problems]
        skipped = [{"file": str(f), "why": why} for f, why in dataset.skipped]
    for split in SPLITS:
        try:
            samples = split_samples(dataset, split, name)
        except DataError as e:
            problems.append(Problem("error", "split", str(dataset.root), str(e)))
            samples = []
        splits[split] = SplitStats(count=len(samples))
        items += [(split, s) for s in samples]
    return problems, items, splits, skipped


@dataclass
class _Tally:
    """What the samples read hold, counted over all of them (:func:`_tally`)."""

    image_formats: dict[str, int] = field(default_factory=dict)
    mask_formats: dict[str, int] = field(default_factory=dict)
    mask_values: dict[int, int] = field(default_factory=dict)
    sizes: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    by_digest: dict[str, list[_Seen]] = field(default_factory=dict)

    def add(self, s: _Seen) -> None:
        if s.image_format:
            self.image_formats[s.image_format] = self.image_formats.get(s.image_format, 0) + 1
        if s.mask_format:
            self.mask_formats[s.mask_format] = self.mask_formats.get(s.mask_format, 0) + 1
        for v in s.values:
            self.mask_values[v] = self.mask_values.get(v, 0) + 1
        if s.image_size is not None:
            self.sizes[s.split].append(s.image_size)
        if s.digest is not None:
            self.by_digest.setdefault(s.digest, []).append(s)


def _tally(
    seen: list[_Seen], splits: dict[str, SplitStats], spec: MaskSpec, problems: list[Problem]
) -> _Tally:
    """Count what ``seen`` holds, add each sample to its split's stats (and their size and
    foreground figures), and each sample's problems to ``problems``."""
    tally = _Tally()
    for s in seen:
        problems += s.problems
        tally.add(s)
        _add_to_split(splits[s.split], s, spec)
    for split, st in splits.items():
        if tally.sizes[split]:
            st.size_min, st.size_median, st.size_max = _size_stats(tally.sizes[split])
        if st.pixels:
            st.foreground_fraction = st.foreground_pixels / st.pixels
    return tally


def _add_to_split(st: SplitStats, s: _Seen, spec: MaskSpec) -> None:
    """One sample read, counted in its split's stats."""
    if not s.stops():
        st.read += 1
    if not s.pixels:
        return
    st.foreground_pixels += s.foreground
    st.pixels += s.pixels
    if s.foreground == 0:
        st.empty_masks.append(s.sample.mask.name)
    if spec.is_multiclass and s.mask_ok:
        _count_classes(st.class_pixels, s.values, spec)


def _mask_problems(
    seen: list[_Seen],
    found: Diagnosis,
    splits: dict[str, SplitStats],
    spec: MaskSpec,
    root: str | Path,
) -> list[Problem]:
    """The problems of the masks taken together: the diagnosis' warnings, splits whose
    masks are all empty or all foreground, the images' notes, and (K classes) classes
    missing from a split."""
    problems = [Problem("warning", _warning_kind(w), "", w) for w in found.warnings]
    by_split = {split: [s.mask for s in seen if s.split == split and s.mask] for split in SPLITS}
    problems += [
        Problem(severity, "foreground", str(root), message)
        for severity, message in uniform_splits(by_split, spec, Path(root))
    ]
    problems += _image_notes(seen)
    if spec.is_multiclass and not found.refused:
        problems += _class_coverage(splits, spec, str(root))
    return problems


def _see_through(im: Any) -> float:
    """The share of a loaded image's pixels that are fully transparent (alpha 0, or a
    palette's or grey image's transparent entry), which segkit reads as the colour stored
    under them (the alpha channel is dropped); 0 for an image without transparency."""
    if im.mode in ("RGBA", "LA", "PA"):
        alpha = im.getchannel("A")
    elif "transparency" in im.info and im.mode in ("P", "L", "RGB"):
        alpha = im.convert("RGBA").getchannel("A")
    else:
        return 0.0
    return alpha.histogram()[0] / (im.width * im.height or 1)


def _image_notes(seen: list[_Seen]) -> list[Problem]:
    """Warnings about how images are read that a user may not expect: more than 8 bits
    (scaled per image), and an EXIF orientation that rotates the image when shown (segkit
    reads the pixels as stored, so masks drawn on the shown image would not line up)."""
    out = []
    deep = [s.sample.image for s in seen if is_deep(s.image_mode)]
    if deep:
        modes = sorted({s.image_format or "" for s in seen if is_deep(s.image_mode)})
        are = "is" if len(deep) == 1 else "are"
        out.append(
            Problem(
                "warning",
                "image_depth",
                str(deep[0]),
                f"{names(deep)} {are} images of more than 8 bits per channel "
                f"({', '.join(modes)}): segkit scales each from its own darkest to its "
                "brightest value onto 0..255 (per-image contrast, like a viewer's auto "
                "contrast); to keep brightness comparable between images, convert them to "
                "8 bits yourself with one scale for all",
            )
        )
    stacks = [s.sample.image for s in seen if s.frames > 1]
    stacks += [s.sample.mask for s in seen if s.mask is not None and s.mask.frames > 1]
    if stacks:
        most = max([s.frames for s in seen] + [s.mask.frames for s in seen if s.mask])
        out.append(
            Problem(
                "warning",
                "frames",
                str(stacks[0]),
                f"{names(stacks)} {'holds' if len(stacks) == 1 else 'hold'} several pages "
                f"or frames (up to {most}: a TIFF stack, an animated GIF, WebP or PNG): "
                "segkit reads the first only. If another page is the image (or the mask), "
                "save that page as a file of its own",
            )
        )
    # Transparent everywhere is an alpha channel its writer left at 0 (32-bit BMPs of some
    # tools), not a cut-out: flattening it would make it blank.
    clear = [s for s in seen if 0 < s.see_through < 1]
    if clear:
        has = "has" if len(clear) == 1 else "have"
        share = max(s.see_through for s in clear)
        out.append(
            Problem(
                "warning",
                "transparency",
                str(clear[0].sample.image),
                f"{names([s.sample.image for s in clear])} {has} transparent pixels (up to "
                f"{share:.0%} of an image): segkit drops the alpha channel and reads the "
                "colour stored under them, which viewers do not show (often black); a model "
                "trained on cut-outs learns that background. If the images to predict are "
                "not cut-outs, flatten these onto a background like theirs first: python -c "
                '"import sys; from PIL import Image; [Image.alpha_composite(Image.new('
                "'RGBA', im.size, (255, 255, 255, 255)), im.convert('RGBA')).convert('RGB')"
                '.save(p) for p in sys.argv[1:] for im in [Image.open(p)]]" FILES (white here)',
            )
        )
    turned = [s.sample.image for s in seen if exif_in_doubt(s.orientation, s.image_size)]
    if turned:
        out.append(Problem("warning", "orientation", str(turned[0]), orientation_warning(turned)))
    return out


def exif_in_doubt(orientation: int, image_size: tuple[int, int] | None) -> bool:
    """Whether an image's EXIF ``orientation`` (its size ``(W, H)``) leaves it in doubt
    which way its mask was drawn: a quarter turn of a non-square image with a mask of its stored size cannot
    have been drawn on the shown image (its sides would be swapped); a square image, or
    a flip or half turn, can."""
    return (
        orientation != 1
        and image_size is not None
        and (orientation not in ROTATED or image_size[0] == image_size[1])
    )


def orientation_warning(images: Sequence[Path]) -> str:
    """The ``orientation`` warning of ``images``, whose EXIF tag leaves in doubt which way
    their masks were drawn (:func:`exif_in_doubt`): said by ``segkit data check`` and,
    once, by a run before training (:func:`segkit.data.prepare.prepare_training`)."""
    has = "has" if len(images) == 1 else "have"
    return (
        f"{names(list(images))} {has} an EXIF orientation tag: viewers show them rotated or "
        "flipped, and segkit reads the pixels as stored (as most labelling tools export "
        "masks). If the masks were drawn on the image as a viewer shows it, they will not "
        "line up; " + exif_command(images[0].parent)
    )


def _class_coverage(splits: dict[str, SplitStats], spec: MaskSpec, root: str) -> list[Problem]:
    """A warning for each class with no pixel in a split (a class missing from train
    cannot be learnt; one missing from valid or test is not measured there), and for
    each class under :data:`TINY_CLASS` of the labelled train pixels."""
    read = {split: st for split, st in splits.items() if st.class_pixels}
    if "train" not in read:
        return []
    out: list[Problem] = []
    for name in spec.classes:
        out += _class_absent(name, read, root)
    return out + _classes_tiny(read["train"], spec, root)


def _class_absent(name: str, read: dict[str, SplitStats], root: str) -> list[Problem]:
    """Warnings for the class ``name``: in no split of ``read``, or missing from some."""
    absent = [split for split, st in read.items() if not st.class_pixels.get(name)]
    if len(absent) == len(read):
        return [
            Problem(
                "warning",
                "class_absent",
                root,
                f"{root}: class {name} has no pixels in any split: no mask holds its "
                "value; check the class list (classes.txt or "
                f"{named_options('dataset_options', {'classes': '...'})}), "
                "or label some pixels of it",
            )
        ]
    out = []
    if "train" in absent:
        found = [
            f"{split} {share(st, name)}" for split, st in read.items() if st.class_pixels.get(name)
        ]
        where = f" (it is in {', '.join(found)})" if found else ""
        out.append(
            Problem(
                "warning",
                "class_absent",
                root,
                f"{root}: class {name} has no pixels in train{where}: the model "
                f"cannot learn it, and it scores IoU 0 wherever it is in the truth; put "
                f"images holding it in train",
            )
        )
    for split in (s for s in absent if s != "train"):
        monitor = " (the best checkpoint is chosen by valid mIoU)" if split == "valid" else ""
        out.append(
            Problem(
                "warning",
                "class_absent",
                root,
                f"{root}: class {name} has no pixels in {split}: its {split} IoU and Dice "
                f"measure nothing: '-' and left out of the {split} mIoU where it is never "
                f"predicted, 0 where it is{monitor}; put images holding it in {split}",
            )
        )
    return out


def _classes_tiny(train: SplitStats, spec: MaskSpec, root: str) -> list[Problem]:
    """A warning for each class under :data:`TINY_CLASS` of the labelled train pixels."""
    out = []
    labelled = sum(n for k, n in train.class_pixels.items() if k != IGNORED)
    for name in spec.classes:
        n = train.class_pixels.get(name, 0)
        if n and labelled and n / labelled < TINY_CLASS:
            out.append(
                Problem(
                    "warning",
                    "class_tiny",
                    root,
                    f"{root}: class {name} is {_percent(n / labelled)} of the labelled train "
                    f"pixels ({plural(n, 'pixel')}): too few to learn it well at this size; "
                    "check that it is labelled everywhere it shows, train at a larger "
                    f"{named('image_size')}, or weigh it up "
                    f"({named_options('loss_options', {'weight': '...'})})",
                )
            )
    return out


def coverage_warnings(
    masks: dict[str, Sequence[MaskInfo]], spec: MaskSpec, root: str | Path
) -> list[str]:
    """The class-coverage warnings of :func:`check_dataset` (a class with no pixel in a
    split, a class under :data:`TINY_CLASS` of the labelled train pixels), each one line,
    from masks already read (:func:`segkit.data.encoding.inspect_mask`, by split): what a
    run says before training (:func:`segkit.data.prepare.prepare_training`). None for a
    binary dataset; the masks with a problem or an error are left out, as the check leaves
    them out of its class pixel counts."""
    if not spec.is_multiclass:
        return []
    splits: dict[str, SplitStats] = {}
    for split, infos in masks.items():
        st = splits[split] = SplitStats(count=len(infos))
        for info in infos:
            if info.error is None and info.problem is None and info.values:
                _count_classes(st.class_pixels, info.values, spec)
    return [p.message for p in _class_coverage(splits, spec, str(root))]


def share(st: SplitStats, name: str) -> str:
    """Class ``name``'s share of ``st``'s pixels (the ignored ones included, as the class
    pixel lines show them; see :func:`_percent`)."""
    total = sum(st.class_pixels.values())
    return _percent(st.class_pixels.get(name, 0) / total if total else 0.0)


def _warning_kind(warning: str) -> str:
    if warning.startswith("the masks mix"):
        return "mixed_encoding"
    if "binary-looking" in warning:
        return "binary_among_classes"
    return "void_border" if "both 1 and 255" in warning else "odd_mask"


def check_configured(
    config: RunConfig, workers: int | None = None, *, progress: bool | None = None
) -> Report:
    """:func:`check_dataset` of the dataset a ``segkit run`` with ``config``'s ``data``,
    ``dataset`` and ``dataset_options`` would read (its layout recognised when
    ``dataset`` is not given), through the plugin's ``audit`` when it declares one, so a
    layout problem (an image without a mask) is listed with every other problem instead
    of stopping the check.

    Raises:
        DataError: the folder is in no layout segkit recognises, or the plugin cannot
            read it at all (no such folder).
        ConfigError: a bad dataset option.
    """

    name = config.resolved_dataset()
    config.check_dataset_options(name)
    registry = default_registry()
    audit = registry.info("datasets", name).capability("audit")
    if callable(audit) and config.data:
        dataset: Dataset = audit(data_path(config), **config.dataset_options)
    else:  # as segkit.build.build_dataset (which imports this module for auto loss weights)
        dataset = registry.create("datasets", name, data_path(config), **config.dataset_options)
    report = check_dataset(
        dataset, workers, name=name, progress=progress, options=config.dataset_options
    )
    report.command = _run_command(config, report)
    return report


def _run_command(config: RunConfig, report: Report) -> str:
    """``segkit run`` with the flags this check was given and the suggested image size; from
    Python (:func:`segkit.config.given`), the ``segkit.train`` call with those settings as
    keywords, the folder as it was given (``segkit.train(data='pets', image_size=64)``)."""
    import shlex

    size = report.suggestions.get("image_size")
    if given() == PYTHON:
        settings = {"data": config.data_as_typed or config.data, "dataset": config.dataset}
        settings = {k: v for k, v in settings.items() if v}
        if config.dataset_options:
            settings["dataset_options"] = config.dataset_options
        if size:
            settings["image_size"] = size["value"]
        keywords = ", ".join(f"{k}={v!r}" for k, v in settings.items())
        return f"segkit.train({keywords})"
    words = ["segkit", "run"]
    if config.data:
        words += ["--data", str(config.data)]
    if config.dataset:
        words += ["--dataset", config.dataset]
    for key, value in config.dataset_options.items():
        if isinstance(value, (list, tuple)):  # classes=a,b as typed
            value = ",".join(map(str, value))
        words += ["--dataset-opt", f"{key}={value}"]
    if size:
        words += ["--image-size", str(size["value"])]
    return " ".join(shlex.quote(w) for w in words)


def _count_classes(counts: dict[str, int], values: dict[int, int], spec: MaskSpec) -> None:
    """Add a mask's raw value counts to ``counts`` by class name (``ignored`` apart)."""
    target = spec.lookup()
    if not counts:
        counts.update({name: 0 for name in spec.classes})
    for value, n in values.items():
        c = target[value]
        name = IGNORED if c == IGNORE_INDEX else spec.classes[c]
        counts[name] = counts.get(name, 0) + n


def _size_stats(sizes: list[tuple[int, int]]) -> tuple[list[int], list[int], list[int]]:
    """Min, median and max by area, each a real image's ``[W, H]``."""
    ordered = sorted(sizes, key=lambda wh: (wh[0] * wh[1], wh))
    mid = ordered[(len(ordered) - 1) // 2]
    return list(ordered[0]), list(mid), list(ordered[-1])


def _duplicates(by_digest: dict[str, list[_Seen]], problems: list[Problem]) -> list[dict[str, Any]]:
    out = []
    for digest, group in by_digest.items():
        if len(group) < 2:
            continue
        in_splits = sorted({s.split for s in group}, key=SPLITS.index)
        files = [{"split": s.split, "id": s.sample.id, "image": str(s.sample.image)} for s in group]
        out.append({"sha": digest, "splits": in_splits, "files": files})
        first = group[0]
        for other in group[1:]:
            across = other.split != first.split
            problems.append(
                Problem(
                    "error" if across else "warning",
                    "duplicate",
                    str(other.sample.image),
                    f"{other.sample.image} ({other.split}) has the same bytes as "
                    f"{first.sample.image} ({first.split})"
                    + (
                        "; one image in two splits inflates the scores: remove one"
                        if across
                        else "; it counts twice in training"
                    ),
                )
            )
    return out


def _suggestions(
    sizes: list[tuple[int, int]],
    splits: dict[str, SplitStats],
    spec: MaskSpec,
    *,
    refused: Sequence[MaskInfo] = (),
) -> dict[str, Any]:
    """The image size and the loss weights that suit the data; no loss weights while
    masks are refused (their fix may change what the classes are)."""
    out: dict[str, Any] = {}
    if sizes:
        short = int(statistics.median(min(wh) for wh in sizes))
        size = max(SIZE_MULTIPLE, short // SIZE_MULTIPLE * SIZE_MULTIPLE)
        why = (
            f"the median short side is {short} px; rounded down to a multiple of "
            f"{SIZE_MULTIPLE} (every model takes those), so at least half the images are shrunk rather than enlarged"
        )
        if size > MAX_SUGGESTED_SIZE:
            size = MAX_SUGGESTED_SIZE
            why += (
                f", capped at {MAX_SUGGESTED_SIZE} (memory and time per image grow with the "
                f"square of the size; go higher with {named('image_size')} if the objects "
                "are small)"
            )
        out["image_size"] = {"value": size, "why": why, "option": named("image_size", size)}
    train = splits["train"]
    if refused:
        return out
    if spec.is_multiclass:
        if train.class_pixels:
            out["class_weights"] = _class_weights(train.class_pixels, spec)
        return out
    if train.pixels:
        fg = train.foreground_pixels
        bg = train.pixels - fg
        if fg and bg and fg / train.pixels < RARE_FOREGROUND:
            # The balancing weight is large here, and measured harmful (docs/plan.md): the
            # value stays in the report (segkit plan reads it), the option is not advised.
            value = round(bg / fg, 4)
            out["pos_weight"] = {
                "value": value,
                "why": f"foreground {fg / train.pixels:.1%} of the train pixels is rare, and "
                f"balancing it ({bg}/{fg} background/foreground pixels) weighs BCE's "
                f"foreground terms {value:.0f}x: the model then marks foreground on images "
                "that hold none. bce_dice's Dice term balances a rare foreground; segkit "
                "plan leaves pos_weight out (docs/plan.md)",
                "option": None,
            }
        elif fg and bg:
            value = round(bg / fg, 4)
            out["pos_weight"] = {
                "value": value,
                "why": f"train background/foreground pixels = {bg}/{fg} "
                f"(foreground {fg / train.pixels:.1%}); weighs BCE's foreground terms up to "
                "balance the classes",
                "option": f"{named_options('loss_options', {'pos_weight': value})} (or "
                f"{named_options('loss_options', {'pos_weight': 'auto'})})",
            }
        else:
            out["pos_weight"] = {
                "value": None,
                "why": f"the train masks hold no {'background' if fg else 'foreground'} pixels",
                "option": None,
            }
    return out


def _class_weights(pixels: dict[str, int], spec: MaskSpec) -> dict[str, Any]:
    """Median-frequency balancing (Eigen and Fergus, 2015; SegNet): class ``c`` weighs
    ``median(f) / f_c`` with ``f_c`` its share of the labelled train pixels. A class with
    no train pixel gets weight 0 (nothing to learn it from)."""
    counts = [pixels.get(name, 0) for name in spec.classes]
    total = sum(counts)
    if not total:
        return {"value": None, "why": "the train masks hold no labelled pixels", "option": None}
    freq = [n / total for n in counts]
    median = statistics.median(f for f in freq if f > 0)
    weights = [round(median / f, 4) if f > 0 else 0.0 for f in freq]
    shares = ", ".join(f"{name} {_percent(f)}" for name, f in zip(spec.classes, freq, strict=True))
    missing = [name for name, n in zip(spec.classes, counts, strict=True) if not n]
    why = f"median-frequency balancing of the train pixels ({shares})"
    if missing:
        why += f"; {_and(missing)} {'is' if len(missing) == 1 else 'are'} not in train: weight 0"
    heavy = [
        f"{name} {w:g}" for name, w in zip(spec.classes, weights, strict=True) if w > HEAVY_WEIGHT
    ]
    if heavy:
        why += (
            f"; a weight over {HEAVY_WEIGHT} ({', '.join(heavy)}) lets a few pixels drive the "
            f"loss: if training swings, cap it (e.g. at {HEAVY_WEIGHT})"
        )
    return {
        "value": weights,
        "why": why,
        "option": f"{named_options('loss_options', {'weight': weights})} (losses ce and ce_dice)",
    }


def _percent(f: float) -> str:
    """A share as the class pixel lines show it: ``4.3%``, ``0.016%`` under 0.1%, ``0%``."""
    return "0%" if not f else f"{100 * f:.1f}%" if f >= 0.001 else f"{100 * f:.2g}%"


def _and(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)


# ----------------------------------------------------------------------------- pos_weight


def train_pos_weight(dataset: Dataset, workers: int | None = None) -> float:
    """``background / foreground`` pixels over the train split's masks (only the mask files
    are read), the BCE ``pos_weight`` that balances the two classes.

    Raises:
        DataError: a mask is unreadable or holds values outside those declared, or the
            train masks hold no foreground.
    """

    spec = dataset.mask_spec

    def count(split: str, sample: Sample) -> tuple[int, int]:
        raw = read_raw_mask(sample.mask, spec)
        return int(np.count_nonzero(raw != spec.background)), int(raw.size)

    items = [("train", s) for s in dataset.samples("train")]
    counts = _read_all(items, count, workers or default_workers(), progress=False)
    fg = sum(c[0] for c in counts)
    total = sum(c[1] for c in counts)
    if fg == 0 or fg == total:
        raise DataError(
            f"{dataset.root}: pos_weight=auto: the train masks hold no "
            f"{'foreground' if fg == 0 else 'background'} pixels, so background/foreground "
            "is undefined; give a number (`segkit data check` says what the masks hold)"
        )
    return (total - fg) / fg


def train_class_weights(dataset: Dataset, workers: int | None = None) -> list[float]:
    """Median-frequency class weights of a K-class dataset's train split (only the mask
    files are read; see :func:`_class_weights`): what ``--loss-opt weight=auto`` gives
    ``ce`` and ``ce_dice``.

    Raises:
        DataError: a mask is unreadable or holds values outside those declared, the dataset
            is binary, or the train masks hold no labelled pixel.
    """

    spec = dataset.mask_spec
    if not spec.is_multiclass:
        raise DataError(
            f"{dataset.root}: weight=auto weighs classes, and this dataset is binary; use "
            f"{named_options('loss_options', {'pos_weight': 'auto'})} with a binary loss"
        )

    def count(split: str, sample: Sample) -> dict[int, int]:
        values, counts = np.unique(read_raw_mask(sample.mask, spec), return_counts=True)
        return dict(zip(values.tolist(), counts.tolist(), strict=True))

    items = [("train", s) for s in dataset.samples("train")]
    pixels: dict[str, int] = {}
    for values in _read_all(items, count, workers or default_workers(), progress=False):
        _count_classes(pixels, values, spec)
    weights = _class_weights(pixels, spec)["value"]
    if weights is None:
        raise DataError(f"{dataset.root}: weight=auto: the train masks hold no labelled pixels")
    return weights


# ----------------------------------------------------------------------------- text


def _wh(size: list[int] | None) -> str:
    return f"{size[0]}x{size[1]}" if size else "-"


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"


def _names(names: Iterable[str], total: int) -> str:
    names = list(names)[:SHOW_EMPTY]
    more = f" and {total - len(names)} more" if total > len(names) else ""
    return ", ".join(names) + more


#: Binary foreground under this share of the train pixels is "rare" (the vessels: 1.1%):
#: no pos_weight is suggested for it, and segkit plan's loss rule names it.
RARE_FOREGROUND = 0.05
#: From this share of empty masks on, the check says what predicting nothing scores (and
#: a binary run whose train masks are this empty picks best.pt by the pooled valid Dice).
EMPTY_SHARE_NOTE = 0.2


def many_empty(empty: int, images: int) -> bool:
    """Whether ``empty`` masks of ``images`` are many (:data:`EMPTY_SHARE_NOTE` or more, a
    defect set): the check then says what predicting nothing scores, and a binary run's
    ``--monitor auto`` follows the pooled valid Dice (``valid_dice_dataset``) when its
    train split's are."""
    return images > 0 and empty / images >= EMPTY_SHARE_NOTE


def _empty_share(report: Report) -> list[str]:
    """Where many masks are empty (a defect set): how many, and the per-image Dice a
    model that predicts nothing gets for them."""
    images = sum(st.count for st in report.splits.values())
    empty = sum(len(st.empty_masks) for st in report.splits.values())
    if not many_empty(empty, images):
        return []
    return [
        f"empty masks: {empty} of {images} ({empty / images:.0%}): each scores Dice 1 when "
        "predicted empty, so a model that predicts no foreground at all gets a per-image "
        f"dice near {empty / images:.2f}; judge it by the images found, missed and false "
        "alarms that segkit run and segkit evaluate print (docs/metrics.md, Empty masks)"
    ]


def format_report(report: Report) -> str:
    """The report as text: one block of statistics, then one line per problem, the
    suggestions and a verdict."""
    lines = [f"dataset {report.dataset or '?'} ({report.root})"]
    lines += _split_table(report)
    lines.append(f"image formats: {_counts(report.image_formats)}")
    lines.append(f"mask formats: {_counts(report.mask_formats)}")
    lines += _mask_value_lines(report)
    for split, st in report.splits.items():
        if st.empty_masks:
            lines.append(
                f"empty masks ({split}, no foreground): "
                f"{_names(st.empty_masks, len(st.empty_masks))}"
            )
    lines += _empty_share(report)
    dup_across = sum(1 for d in report.duplicates if len(d["splits"]) > 1)
    if report.duplicates:
        lines.append(
            f"duplicates: {plural(len(report.duplicates), 'group')} of identical images"
            + (f", {dup_across} across splits" if dup_across else "")
        )
    else:
        lines.append("duplicates: none")
    lines += _problem_lines(report)
    lines += _skipped_lines(report.skipped, Path(report.root))
    lines += _suggestion_lines(report)
    if report.fixes:
        lines.append("to fix:")
        lines += [f"  - {fix}" for fix in report.fixes]
    lines += _verdict_lines(report)
    return "\n".join(lines)


def _split_table(report: Report) -> list[str]:
    """The table of splits: images, sizes, foreground share and empty masks."""
    lines = [
        f"{'split':<6} {'images':>6}  {'min':>9}  {'median':>9}  {'max':>9}  "
        f"{'foreground':>10}  empty masks"
    ]
    for split, st in report.splits.items():
        fg = f"{st.foreground_fraction:.1%}" if st.foreground_fraction is not None else "-"
        lines.append(
            f"{split:<6} {st.count:>6}  {_wh(st.size_min):>9}  {_wh(st.size_median):>9}  "
            f"{_wh(st.size_max):>9}  {fg:>10}  {len(st.empty_masks)}"
        )
    return lines


def _mask_value_lines(report: Report) -> list[str]:
    """The values found against those declared, and (K classes) each split's class pixels."""
    found = f"{', '.join(report.mask_values) or '-'} found"
    colour = sum(n for f, n in report.mask_formats.items() if f.endswith(("RGB", "RGBA")))
    if colour and "RGB colour masks" in report.masks_refused:  # no labels read from those
        colours = f"{plural(colour, 'RGB colour mask')} (their colours below)"
        found = f"{found}, and {colours}" if report.mask_values else colours
    declared = ", ".join(map(str, report.mask_allowed))
    if not report.classes:
        return [f"mask values: {found}; declared {declared} (background {report.mask_background})"]
    lines = [
        f"mask values: {found}; declared {declared} "
        f"({len(report.classes)} classes: {', '.join(report.classes)})"
    ]
    for split, st in report.splits.items():
        if sum(st.class_pixels.values()):
            shares = ", ".join(f"{k} {share(st, k)}" for k in st.class_pixels)
            lines.append(f"class pixels ({split}): {shares}")
    return lines


def _problem_lines(report: Report) -> list[str]:
    """How many errors and warnings, then one line each; masks refused for their values,
    when several are, in one line saying what they are."""
    if not report.problems:
        return ["problems: none"]
    errors = len(report.errors)
    warnings = len(report.problems) - errors
    lines = [f"problems: {plural(errors, 'error')}, {plural(warnings, 'warning')}"]
    refused = [p for p in report.problems if p.kind == "mask_values"]
    joined = len(refused) > 1 and bool(report.masks_refused)
    for p in report.problems:
        if p.kind != "mask_values" or not joined:
            lines.append(f"  {p.severity}: {p.message}")
        elif p is refused[0]:  # every refused mask in one line, with what they are
            lines.append(f"  error: {report.masks_refused}")
    return lines


def _suggestion_lines(report: Report) -> list[str]:
    lines = []
    for key in ("image_size", "pos_weight", "class_weights"):
        s = report.suggestions.get(key)
        if s is None:
            continue
        if s["value"] is None:
            lines.append(f"suggested {key}: none ({s['why']})")
        elif s["option"] is None:
            lines.append(f"{key}: not suggested: {s['why']}")
        else:
            lines.append(f"suggested {s['option']}: {s['why']}")
    return lines


def _verdict_lines(report: Report) -> list[str]:
    """``ok`` (and the command to run), or ``FAILED`` with what to do."""
    if report.ok:
        return ["ok: nothing here would stop a run"] + (
            [f"run it: {report.command}"] if report.command else []
        )
    then = (
        "; do what 'to fix' says, then check again" if report.fixes else "; check again once fixed"
    )
    unreadable = sum(p.kind == "unreadable" for p in report.errors)
    if unreadable:
        files, them = ("file", "it") if unreadable == 1 else (f"{unreadable} files", "them")
        then += (
            f" (or leave the {files} that cannot be decoded out: a run with "
            f"{named('skip_bad_samples', True)} skips {them})"
        )
    return [f"FAILED: {plural(len(report.errors), 'problem')} would stop a run{then}"]


def _skipped_lines(skipped: list[dict[str, str]], root: Path) -> list[str]:
    """One line per reason, the files relative to ``root``: ``3 files, not .jpg (...):
    images/a.mat, images/b.mat, images/c.mat``."""
    if not skipped:
        return []
    by: dict[str, list[str]] = {}
    for item in skipped:
        path = Path(item["file"])
        shown = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        by.setdefault(item["why"], []).append(shown)
    lines = [f"skipped: {plural(len(skipped), 'file')} the dataset does not read"]
    for why, files in by.items():
        lines.append(f"  {plural(len(files), 'file')}, {why}: {_names(files, len(files))}")
    return lines
