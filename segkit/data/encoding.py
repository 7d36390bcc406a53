"""How mask files encode their labels, found from the files, and the fix when a dataset
reads them otherwise.

Users' masks come in a handful of encodings: 0/1 or 0/255 grey PNGs, index PNGs holding
``0..K-1``, palette PNGs (indices with colours), RGB colour masks (a colour per class),
and masks that went through JPEG (or an antialiased resize) and hold blurred values.
:func:`inspect_mask` reads one file once and records what it is; :func:`diagnose` looks
at all of a dataset's masks together and says, in words to print, what the masks that
a dataset refuses are and what makes the run work: the classes to declare (through the
dataset plugin's ``declare_classes`` capability: ``classes.txt`` for ``folder``), or the
command that thresholds blurred masks. ``segkit data check`` prints it, and so does a run
refused before training (:mod:`segkit.data.prepare`).
"""

from __future__ import annotations

import inspect
import io
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segkit.config import named, named_options
from segkit.contracts import IGNORE_INDEX, MaskSpec
from segkit.data.reading import (
    LOW_BIT_GREY,
    UNREADABLE_ADVICE,
    alpha_labels,
    check_mask_values,
    colours_to_raw,
    decode_opened_mask,
    foreign_format,
    image_mode,
    not_found,
    open_image,
)
from segkit.errors import ConfigError, DataError, PluginError
from segkit.registry import default_registry

#: File names shown in one line before "and N more".
SHOW = 3
#: Distinct colours of an RGB mask kept, most frequent first: a mask with more is
#: antialiased (its edges blend the class colours), not a class map.
MAX_COLOURS = 64
#: A dataset whose colour masks hold more distinct colours than this is not advised to
#: declare one class per colour.
MAX_CLASS_COLOURS = 32
#: At most this many flat colours outside a palette are offered as classes to declare.
MAX_FOREIGN = 3
#: A colour within this of a palette colour in every channel is that colour blended.
NEAR_COLOUR = 32
#: A mask is "blurred" (JPEG-compressed, or resized with interpolation) when it holds more
#: than :data:`BLURRED_VALUES` values, its two most common values cover at least
#: :data:`BLURRED_SHARE` of its pixels and no other value more than :data:`BLURRED_RIM`:
#: a class map is regions, each a fair share of the pixels; a blurred mask is two values
#: and a rim of in-betweens, each on a few pixels along the edges.
BLURRED_VALUES = 8
BLURRED_SHARE = 0.75
BLURRED_RIM = 0.03

#: Names for the colours a user most likely painted with (class 0 is "background").
COLOUR_NAMES: dict[tuple[int, int, int], str] = {
    (255, 0, 0): "red",
    (0, 255, 0): "green",
    (0, 0, 255): "blue",
    (255, 255, 0): "yellow",
    (0, 255, 255): "cyan",
    (255, 0, 255): "magenta",
    (255, 255, 255): "white",
    (128, 128, 128): "grey",
}

Colour = tuple[int, int, int]


@dataclass
class MaskInfo:
    """What one mask file is and holds.

    Attributes:
        path: The file.
        format: PIL's format by content (``PNG``, ``JPEG``, ...), None when unreadable.
        mode: PIL's mode (``1``, ``L``, ``P``, ``RGB``, ``RGBA``, ``I;16``, ...).
        size: ``(W, H)``.
        values: Raw value -> pixels, as the dataset's spec decodes the file (empty when
            it cannot).
        colours: A true-colour mask's colours -> pixels (the :data:`MAX_COLOURS` most
            common; ``colour_count`` says how many there are), else empty.
        palette: A palette mask's (PNG, TIFF...) colour of each index it uses, else empty.
        error: Why the file cannot be decoded (it is unreadable), else None.
        problem: Why the dataset would refuse its values (the file reads), else None.
        from_alpha: Its labels are read from its alpha channel
            (:func:`segkit.data.reading.alpha_labels`).
        frames: Its pages or frames (a TIFF stack, an animation); the first is read.
        shown_inverted: A binary dataset's palette PNG of greys whose indices put
            background elsewhere than its black (:func:`_palette_against_colours`): read
            by index, as palette masks are, it is not the mask a viewer shows.
    """

    path: Path
    format: str | None = None
    mode: str = ""
    size: tuple[int, int] | None = None
    values: dict[int, int] = field(default_factory=dict)
    colours: dict[Colour, int] = field(default_factory=dict)
    colour_count: int = 0
    palette: dict[int, Colour] = field(default_factory=dict)
    error: str | None = None
    problem: str | None = None
    from_alpha: bool = False
    shown_inverted: bool = False
    frames: int = 1

    @property
    def kind(self) -> str:
        """``unreadable``, ``colour`` (an RGB mask of colours, not greys), ``blurred``
        (JPEG or interpolated values), ``inverted`` (a palette of greys whose indices
        disagree with its colours) or ``index`` (grey or palette values)."""
        if self.error is not None:
            return "unreadable"
        if self.shown_inverted:
            return "inverted"
        if self.colours:
            return "colour"
        if self.format == "JPEG" or _blurred(self.values):
            return "blurred"
        return "index"

    @property
    def described(self) -> str:
        """Format, bit depth and colour model, e.g. ``PNG 24-bit RGB``."""
        return describe_format(self.format, self.mode)


def describe_format(fmt: str | None, mode: str) -> str:
    """``PNG 1-bit``, ``PNG 8-bit grey``, ``PNG 8-bit palette``, ``PNG 24-bit RGB``..."""
    what = {
        "1": "1-bit",
        "L": "8-bit grey",
        "L;2": "2-bit grey",
        "L;4": "4-bit grey",
        "L;2I": "2-bit grey (white is zero)",
        "L;4I": "4-bit grey (white is zero)",
        "P": "8-bit palette",
        "LA": "8-bit grey with alpha",
        "LA;16": "16-bit grey with alpha",
        "RGB": "24-bit RGB",
        "RGBA": "32-bit RGBA",
        "I;16": "16-bit grey",
        "I;16B": "16-bit grey",
        "I": "32-bit grey",
        "F": "32-bit float",
        "CMYK": "32-bit CMYK",
    }.get(mode, mode)
    return f"{fmt or '?'} {what}"


def _blurred(values: dict[int, int]) -> bool:
    if len(values) <= BLURRED_VALUES:
        return False
    counts = sorted(values.values(), reverse=True)
    total = sum(counts)
    return counts[0] + counts[1] >= BLURRED_SHARE * total and counts[2] <= BLURRED_RIM * total


def _counts(raw: np.ndarray) -> dict[int, int]:
    """Value -> pixels of an integer array (bincount for 8-bit: a tenth of np.unique's time)."""
    if raw.dtype == np.uint8 or raw.dtype == bool:
        counts = np.bincount(raw.ravel().view(np.uint8), minlength=2)
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    values, counts = np.unique(raw, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def _colour_counts(rgb: np.ndarray) -> tuple[dict[Colour, int], int]:
    keys = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    values, counts = np.unique(keys, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:MAX_COLOURS]
    out = {
        (int(k) >> 16, (int(k) >> 8) & 255, int(k) & 255): int(c)
        for k, c in zip(values[order], counts[order], strict=True)
    }
    return out, len(values)


def inspect_mask(path: Path, spec: MaskSpec, data: bytes | None = None) -> MaskInfo:
    """Read the mask file ``path`` once: its format and mode, its raw values as ``spec``
    decodes it, its colours (true-colour masks) or palette colours (palette PNGs), and
    whether ``spec`` would refuse it, in the words of
    :func:`segkit.data.reading.check_mask_values` with what the file is added.

    ``data``: the file's bytes, when the caller has them. Never raises for a bad file:
    ``error`` says why it is unreadable.
    """
    info = MaskInfo(Path(path))
    try:
        with open_image(io.BytesIO(data) if data is not None else path, info.path) as im:
            _inspect_opened(im, info, spec)
    except FileNotFoundError:
        info.error = not_found(path, "mask")
        return info
    except (DataError, ConfigError) as e:
        info.error = str(e)
        return info
    except Exception as e:  # noqa: BLE001 -- a damaged file makes PIL raise many types
        info.error = (
            foreign_format(path, "mask")
            or f"{path}: cannot decode mask ({e}); the file is corrupt. {UNREADABLE_ADVICE}"
        )
        return info
    if info.problem is not None:  # colours outside the palette, or a palette shown inverted
        return info
    try:
        check_mask_values(info.path, list(info.values), spec)
    except DataError as e:
        info.problem = f"{e}{_what_it_is(info)}"
    return info


def _inspect_opened(im: Any, info: MaskInfo, spec: MaskSpec) -> None:
    """Fill ``info`` from the opened, not yet loaded, image ``im``: what the file is, its
    colours and its values; ``info.problem`` where its colours are outside the palette or
    its palette of greys is shown inverted (no value check is then made)."""
    mode = image_mode(im)  # before load(): L;4 (4-bit grey), LA;16 (16-bit + alpha)
    im.load()
    info.format, info.mode, info.size = im.format, mode, im.size
    info.frames = getattr(im, "n_frames", 1) or 1
    _read_alpha_or_colours(im, info, mode)
    if info.colours and spec.is_multiclass and spec.palette:
        foreign = set(info.colours) - set(spec.palette) - {spec.ignore_color}
        if foreign or info.colour_count > len(info.colours):
            info.problem = _foreign_colours(info, spec)
            return
    if im.mode in ("L", "P", "1") and mode not in LOW_BIT_GREY:
        _read_histogram(im, info, spec)
    elif not info.from_alpha:
        info.values = _counts(decode_opened_mask(im, info.path, spec, mode))


def _read_alpha_or_colours(im: Any, info: MaskInfo, mode: str) -> None:
    """The values of a mask whose labels are in its alpha, or a true-colour mask's colours."""
    from_alpha = None if mode == "LA;16" else alpha_labels(im)  # LA;16: decoded later
    if from_alpha is not None:  # one colour, labels in the transparency
        info.from_alpha = True
        info.values = _counts(from_alpha)
    elif im.mode in ("RGB", "RGBA") and mode != "LA;16":
        rgb = np.asarray(im.convert("RGB"))
        # Greys stored as RGB are read as greys; only true colours are a colour mask.
        if not (
            np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
        ):
            info.colours, info.colour_count = _colour_counts(rgb)


def _read_histogram(im: Any, info: MaskInfo, spec: MaskSpec) -> None:
    """An 8-bit grey, palette or 1-bit mask's values, as decode_raw_mask reads them
    (indices for P, 0/1 for 1), counted by PIL in C: half the time of an array and
    np.bincount; a palette mask's colours, and whether a binary dataset would read its
    palette of greys inverted."""
    hist = im.histogram()[:256]
    if im.mode == "1":  # PIL counts 1-bit pixels at 255; they read as 0/1
        hist = [hist[0], hist[255]]
    info.values = {v: n for v, n in enumerate(hist) if n}
    if im.mode != "P":
        return
    pal = im.getpalette() or []
    info.palette = {
        i: tuple(pal[3 * i : 3 * i + 3])  # type: ignore[misc]
        for i in info.values
        if len(pal) >= 3 * i + 3
    }
    if not spec.is_multiclass and spec.background == 0:  # black: 0
        info.problem = _palette_against_colours(info, spec.background)
        info.shown_inverted = info.problem is not None


def _grey(colour: Colour) -> str:
    return {(0, 0, 0): "black", (255, 255, 255): "white"}.get(colour, f"grey {colour[0]}")


def _palette_against_colours(info: MaskInfo, background: int) -> str | None:
    """Why a binary dataset refuses a palette PNG of greys (every colour it uses has
    R = G = B) whose index ``background`` is not where its black is, else None.

    Palette masks are read by index (VOC's class maps); binary masks by the rule
    "background is 0", which a viewer sees as black. Where the two disagree (index 0
    painted white and index 1 black, as some editors save a two-colour image), the mask
    read would be the inverse of the mask shown, silently: refused, with both readings.
    """
    pal = info.palette
    if len(pal) != len(info.values) or any(not (c[0] == c[1] == c[2]) for c in pal.values()):
        return None  # colours: a class map by index, as VOC's
    if all((i == background) == (c == (0, 0, 0)) for i, c in pal.items()):
        return None  # index 0 is black (or unused with no black): both readings agree
    shown = ", ".join(f"index {i} {_grey(c)}" for i, c in sorted(pal.items()))
    return (
        f"{info.path}: a palette {_format_name(info)} of greys ({shown}) whose indices "
        "disagree with its "
        f"colours: segkit reads palette masks by index (index {background} is background), "
        "a viewer shows the colours (black is background), so the mask read would not be "
        "the mask shown"
    )


def _format_name(info: MaskInfo) -> str:
    """The file format's name for messages: ``PNG``, ``TIFF``, ... (``image`` when unknown)."""
    return info.format or "image"


def _format_names(group: Sequence[MaskInfo]) -> str:
    """``PNGs``, ``TIFFs``, or ``PNGs and TIFFs``: the formats of the files of ``group``."""
    return " and ".join(f"{f}s" for f in sorted({_format_name(i) for i in group}))


def _foreign_colours(info: MaskInfo, spec: MaskSpec) -> str:

    try:  # its message names the colours, their pixels and the palette
        with open_image(info.path) as im:
            colours_to_raw(info.path, np.asarray(im.convert("RGB")), spec)
    except DataError as e:
        return str(e)
    return f"{info.path}: colours outside the dataset's palette"


def _what_it_is(info: MaskInfo) -> str:
    """`` (an RGB colour mask: ...)`` and the like, for a refused mask's message."""
    if info.colours:
        return f" (an RGB colour mask, {_colour_list(info.colours)}, read as grey)"
    if info.kind == "blurred":
        why = "a JPEG file" if info.format == "JPEG" else "JPEG-compressed or resized"
        return f" (blurred: {len(info.values)} values, {why})"
    if info.palette:
        return f" (a palette {_format_name(info)}: its indices {_ints(info.values)} are read)"
    return ""


def _ints(values: Iterable[int]) -> str:
    return ", ".join(map(str, sorted(values)))


def _colour_list(colours: dict[Colour, int], limit: int = 4) -> str:
    total = sum(colours.values()) or 1
    items = sorted(colours.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{c} on {n / total:.1%}" for c, n in items[:limit])
    more = f" and {len(items) - limit} more colours" if len(items) > limit else ""
    return f"colours {shown}{more}"


def names(paths: Sequence[Path], total: int | None = None) -> str:
    """``a.png, b.png, c.png and 27 more``."""
    total = len(paths) if total is None else total
    shown = ", ".join(p.name for p in paths[:SHOW])
    return shown + (f" and {total - min(SHOW, len(paths))} more" if total > SHOW else "")


# ----------------------------------------------------------------------------- diagnosis


@dataclass
class Diagnosis:
    """What a dataset's masks are, taken together.

    Attributes:
        refused: The masks the dataset's spec refuses (readable, values or colours outside).
        summary: One line for all of them: how many, the first names, what they are.
        fixes: What makes the run work, as words to print (a ``classes.txt`` to write,
            a command); empty when segkit cannot tell.
        warnings: One line each: masks in a format unlike the others (named), encodings
            mixed in one dataset.
        classes: The classes :attr:`fixes` declares (names, colours or None), if any.
    """

    refused: list[MaskInfo] = field(default_factory=list)
    summary: str = ""
    fixes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    classes: tuple[list[str], list[Colour] | None] | None = None


#: ``declare_classes(classes, palette, values=None) -> str``: how the dataset's user names
#: classes (``values``: each class's grey value in the masks, where not ``0..K-1``; ``""``
#: when the plugin cannot declare those).
DeclareClasses = Callable[..., str]
#: ``declare_ignore(colour) -> str``: how the dataset's user declares ``colour`` the colour
#: of ignored pixels in its own files (``""``: not there).
DeclareIgnore = Callable[[Colour], str]


@dataclass(frozen=True)
class Advice:
    """What a dataset's plugin offers :func:`diagnose` for its fixes.

    Attributes:
        dataset: The dataset plugin's name, for messages.
        declare_classes: The plugin's ``declare_classes`` capability bound to its folder,
            if it declares one: the words that tell the user how to name classes.
        declare_ignore: The plugin's ``declare_ignore`` capability bound to its folder and
            options, if it declares one: the words that make a colour the ignore colour in
            the dataset's own files (offered first: it holds the classes already).
        ignore_color_option: The plugin takes an ``ignore_color`` option (the colour of
            ignored pixels in RGB masks): a colour outside the palette may be that.
        values_option: The plugin takes a ``values`` option (each class's raw value), so
            255 can be declared a class of its own.
        folder: Where the masks are, for commands (default: the first refused mask's
            folder).
    """

    dataset: str
    declare_classes: DeclareClasses | None = None
    declare_ignore: DeclareIgnore | None = None
    ignore_color_option: bool = False
    values_option: bool = False
    folder: Path | None = None


@dataclass(frozen=True)
class _Masks:
    """A dataset's masks as the fixes for its refused ones read them."""

    #: Every readable mask.
    readable: Sequence[MaskInfo]
    spec: MaskSpec
    advice: Advice
    #: Where the masks are, for commands.
    folder: Path
    #: The words for a layout that cannot name classes (its encoding is fixed).
    fixed: str


def diagnose(infos: Sequence[MaskInfo], spec: MaskSpec, advice: Advice) -> Diagnosis:
    """Look at every mask of a dataset together.

    Args:
        infos: :func:`inspect_mask` of each mask.
        spec: The dataset's mask spec.
        advice: What the dataset's plugin offers for the fixes.
    """
    out = Diagnosis()
    readable = [i for i in infos if i.error is None]
    out.warnings += _odd_formats(readable)
    out.warnings += _mixed_binary(readable, spec)
    out.warnings += _void_border(readable, spec)
    out.refused = [i for i in readable if i.problem is not None]
    if not out.refused:
        if spec.is_multiclass and spec.lookup().get(IGNORE_INDEX) == IGNORE_INDEX:
            classes = list(spec.classes)
            out.warnings += _binary_among_classes(readable, classes, advice.values_option, True)
        return out
    refused = out.refused
    masks = _Masks(
        readable,
        spec,
        advice,
        advice.folder or refused[0].path.parent,
        # A layout that cannot name classes (its encoding is fixed: oxford_pet's trimaps).
        f"dataset {advice.dataset} reads masks holding {_ints(spec.allowed)} "
        f"({_declared(spec)}) and cannot declare other classes: save these masks in that "
        f"encoding, or name another layout with {named('dataset')}",
    )
    groups = {
        kind: [i for i in refused if i.kind == kind]
        for kind in ("colour", "blurred", "inverted", "index")
    }
    fixes: dict[str, Callable[[Diagnosis, list[MaskInfo], _Masks], str]] = {
        "colour": _colour_fix,
        "blurred": _blurred_fix,
        "inverted": _inverted_fix,
        "index": _index_fix,
    }
    parts = [fixes[kind](out, group, masks) for kind, group in groups.items() if group]
    what_they_are = "; ".join(p for p in parts if p)
    if len(refused) == 1:  # the file's own words (its values), then what it is
        out.summary = f"{refused[0].problem}; {what_they_are}"
    else:
        out.summary = (
            f"{len(refused)} of {len(readable)} masks hold "
            f"{_refused_what(groups, len(refused), spec, advice.dataset)}: "
            f"{names(sorted(i.path for i in refused))}; {what_they_are}"
        )
    return out


def _declared(spec: MaskSpec) -> str:
    """``binary``, or ``3 classes: background, road, car``."""
    if spec.is_multiclass:
        return f"{len(spec.classes)} classes: {', '.join(spec.classes)}"
    return "binary"


def _refused_what(
    groups: dict[str, list[MaskInfo]], refused: int, spec: MaskSpec, dataset: str
) -> str:
    """What the ``refused`` masks (grouped by kind in ``groups``) hold, for the summary."""
    if spec.is_multiclass and spec.palette and groups["colour"]:
        return f"colours outside its palette ({_declared(spec)})"
    if len(groups["inverted"]) == refused:
        return "palettes of greys whose indices disagree with their colours"
    return (
        f"values outside those dataset {dataset} reads ({_ints(spec.allowed)}; {_declared(spec)})"
    )


def _colour_fix(out: Diagnosis, group: list[MaskInfo], masks: _Masks) -> str:
    """RGB colour masks: one class per colour, black (else the commonest) first; with a
    palette, a few flat colours outside it are a class more or the ignore colour (by the
    dataset's own file, where it reads one, and by its option)."""
    spec = masks.spec
    colours: dict[Colour, int] = {}
    many = any(i.colour_count > len(i.colours) for i in group)
    for i in [*group, *(i for i in masks.readable if i.colours and i not in group)]:
        for c, n in i.colours.items():
            colours[c] = colours.get(c, 0) + n
    formats = sorted({i.described for i in group})
    what = (
        f"{len(group)} are RGB colour masks ({', '.join(formats)}) holding {_colour_list(colours)}"
    )
    if spec.is_multiclass and spec.palette:
        return what + _outside_palette_fix(out, colours, many, masks)
    if many or len(colours) > MAX_CLASS_COLOURS:
        return what + (
            f"; {len(colours)}+ colours is antialiasing (edges blending the class colours), "
            "not a colour per class: re-save the masks without antialiasing, one flat "
            "colour per class"
        )
    declare_classes = masks.advice.declare_classes
    if declare_classes is None:
        return what + f"; {masks.fixed}"
    ordered = sorted(colours, key=lambda c: (c != (0, 0, 0), -colours[c]))
    how = "one class per colour"
    if spec.is_multiclass and len(spec.classes) == len(ordered):
        # The names given, beside the colours by pixel share: which is which, only the user knows.
        classes = list(spec.classes)
        how += (
            ": your names in their order beside the colours, black first, then by pixel "
            "share; check that each name has its class's colour"
        )
    else:
        classes = _class_names(ordered)
    out.classes = (classes, ordered)
    out.fixes.append(_declare(classes, ordered, declare_classes, how))
    return what + f": segkit reads colour masks by a palette of {len(ordered)} classes (below)"


def _outside_palette_fix(
    out: Diagnosis, colours: dict[Colour, int], many: bool, masks: _Masks
) -> str:
    """Colour masks of a dataset with a palette, holding ``colours`` (``many``: more than
    counted): a few flat colours outside the palette are a class more or the ignore colour
    (the fixes for both); more, or blended ones, are antialiasing. The words that follow
    what the masks are."""
    spec = masks.spec
    known = {*spec.palette, spec.ignore_color}
    foreign = [c for c in colours if c not in known]
    # Near a palette colour: antialiasing or compression, not a class of its own.
    blended = any(
        max(abs(a - b) for a, b in zip(c, k, strict=True)) <= NEAR_COLOUR
        for c in foreign
        for k in known
        if k is not None
    )
    if many or blended or not foreign or len(foreign) > MAX_FOREIGN:
        return (
            "; every pixel must have a palette colour: re-save the masks without "
            "antialiasing (nearest-neighbour resizing), or add the colours to the palette"
        )
    shown = ", ".join(f"({r}, {g}, {b})" for r, g, b in foreign)
    advice = masks.advice
    if len(foreign) == 1 and spec.ignore_color is None:
        how = _ignore_fix(foreign[0], advice.ignore_color_option, advice.declare_ignore)
        if how:
            out.fixes.append(
                f"if {shown} marks pixels to leave out of training and scores (void, "
                f"borders), {how}"
            )
    if advice.declare_classes is not None:
        names_ = list(spec.classes)
        for i, c in enumerate(foreign, len(names_)):
            name = COLOUR_NAMES.get(c)
            names_.append(name if name and name not in names_ else f"class_{i}")
        fix = _declare(
            names_, [*spec.palette, *foreign], advice.declare_classes, "one class per colour"
        )
        out.fixes.append(
            f"if {shown} {'is a class' if len(foreign) == 1 else 'are classes'}, {fix}"
        )
    return (
        f"; {shown} {'is' if len(foreign) == 1 else 'are'} in no palette entry: "
        "declare what it is (below)"
    )


def _ignore_fix(
    colour: Colour, ignore_color_option: bool, declare_ignore: DeclareIgnore | None
) -> str:
    """How to make ``colour`` the ignore colour: the line of the dataset's own file (where
    its classes are declared, so every command reads it: the one to use), and the
    ``ignore_color`` option; either alone where only it works; ``""`` where neither."""
    line = declare_ignore(colour) if declare_ignore is not None else ""
    option = (
        f"pass {named_options('dataset_options', {'ignore_color': ','.join(map(str, colour))})}"
        if ignore_color_option
        else ""
    )
    if line and option:
        return (
            f"{line} (use this: that file declares your classes, and every command reads "
            f"it), or {option} each time"
        )
    return line or option


def _class_names(colours: Sequence[Colour]) -> list[str]:
    names_ = ["background"]
    for i, c in enumerate(colours[1:], 1):
        name = COLOUR_NAMES.get(c)
        names_.append(name if name and name not in names_ else f"class_{i}")
    return names_


def _declare(
    classes: list[str],
    palette: list[Colour] | None,
    declare_classes: DeclareClasses,
    what: str,
    values: list[int] | None = None,
) -> str:
    words = (
        declare_classes(classes, palette, values)
        if values is not None
        else declare_classes(classes, palette)
    )
    return f"name the classes ({what}): " + words if words else ""


def _blurred_fix(out: Diagnosis, group: list[MaskInfo], masks: _Masks) -> str:
    folder = masks.folder
    jpeg = [i for i in group if i.format == "JPEG"]
    files = f", {len(jpeg)} of them JPEG files" if jpeg else ""
    what = (
        f"{len(group)} are blurred{files}: they hold "
        f"{max(len(i.values) for i in group)} distinct values where a mask holds a few labels"
        " (JPEG compression, or a resize with interpolation, mixes the labels at the edges)"
    )
    suffixes = sorted({i.path.suffix for i in group})
    binary = all(_two_extremes(i.values) for i in group)
    if binary:
        out.fixes.append(
            "threshold the blurred masks at half their brightest value into 0/255 PNGs "
            "(written as <name>.png beside each): " + threshold_command(folder, suffixes)
        )
        return what + "; they are black and white at heart: threshold them (below)"
    return what + (
        "; export them again from the labelling tool as PNG, resized (if at all) with "
        "nearest-neighbour interpolation"
    )


def _inverted_fix(out: Diagnosis, group: list[MaskInfo], masks: _Masks) -> str:
    """Palette PNGs of greys read by index against their colours: the command that saves
    each as the grey image it shows (so what is read is what a viewer shows). ``masks``:
    unused (every fix takes it)."""
    files = " ".join(shlex.quote(str(p)) for p in sorted(i.path for i in group))
    out.fixes.append(
        "save the palette masks as the grey images they show (black background, white "
        'foreground), in place: python -c "import sys; from PIL import Image; '
        "[Image.open(p).convert('L').save(p) for p in sys.argv[1:]]\" " + files
    )
    return (
        f"{len(group)} {'is a' if len(group) == 1 else 'are'} palette "
        f"{_format_name(*group) if len(group) == 1 else _format_names(group)} of "
        "greys read by index against their colours (the mask read would be the inverse of "
        "the mask shown): save them as grey images (below)"
    )


def _two_extremes(values: dict[int, int]) -> bool:
    """The two commonest values are near 0 and near the top (a blurred black and white mask)."""
    top = sorted(values, key=lambda v: -values[v])[:2]
    return len(top) == 2 and min(top) < 64 and max(top) > 191


def _index_fix(out: Diagnosis, group: list[MaskInfo], masks: _Masks) -> str:
    """Grey or palette masks holding values the spec does not: index masks of more
    classes than declared (declare them; masks of 0 and 255 alone among them are warned
    about, 255 being 'ignore' then), a binary mask with an odd foreground value
    (threshold it), or 16-bit masks."""
    spec = masks.spec
    found: set[int] = set()
    for i in masks.readable:
        if i.kind == "index":
            found |= set(i.values)
    extra = sorted({v for i in group for v in i.values} - set(spec.allowed))
    formats = sorted({i.described for i in group})
    what = f"{len(group)} hold values {_ints(extra)} ({', '.join(formats)})"
    if max(found, default=0) > 255:
        out.fixes.append(
            "save the masks as 8-bit PNGs of the label values (0 and 1 or 255 for binary "
            "masks), e.g. Image.fromarray((mask > 0).astype('uint8') * 255) with PIL"
        )
        return what + ": 16-bit masks; segkit reads 8-bit label values"
    labels = sorted(found - {IGNORE_INDEX})
    k = max(labels) + 1 if labels else 0
    # Class indices are dense (most of 0..K-1 occur); {0, 128} is a binary mask instead.
    dense = 0 in labels and 2 * len(labels) >= k
    if masks.advice.declare_classes is None:
        return what + f"; {masks.fixed}"
    if dense and k > max(2, len(spec.classes)):
        return what + _more_classes_fix(out, found, k, masks)
    if not spec.is_multiclass and len(labels) == 2 and labels[0] == spec.background:
        suffixes = sorted({i.path.suffix for i in group})
        out.fixes.append(
            f"make the masks 0/255 (any value above {spec.background} is foreground): "
            + threshold_command(masks.folder, suffixes)
        )
        return what + f": binary masks with {labels[1]} for foreground (0/1 or 0/255 expected)"
    return what + (
        _spread_fix(out, found, masks)
        or f"; class masks hold 0..K-1 (and {IGNORE_INDEX} for pixels to ignore): map the "
        "values to 0..K-1 in the masks"
    )


def _more_classes_fix(out: Diagnosis, found: set[int], k: int, masks: _Masks) -> str:
    """Index masks of ``k`` classes (values ``found``), more than the dataset declares:
    the classes to declare (named by their palette colours, where the masks agree on
    those), and a warning for masks of 0 and 255 alone among them. The words that follow
    what the masks are."""
    spec, declare_classes = masks.spec, masks.advice.declare_classes
    assert declare_classes is not None  # _index_fix asks only then
    colours = _palette_of(masks.readable, k)
    classes = list(spec.classes) if spec.is_multiclass else ["background"]
    for c in range(len(classes), k):  # a palette colour's name, else class_<c>
        name = COLOUR_NAMES.get(colours[c]) if colours else None
        classes.append(name if name and name not in classes else f"class_{c}")
    if spec.is_multiclass:
        lead = f"the dataset names {len(spec.classes)} (0..{len(spec.classes) - 1})"
    else:
        lead = "the dataset reads masks as binary (0 background, 1 or 255 foreground)"
    out.classes = (classes, colours)
    binary = _binary_among_classes(masks.readable, classes, masks.advice.values_option, False)
    how = f"class c is mask value c, 0..{k - 1}" + (
        f"; {IGNORE_INDEX} is 'ignore'" if IGNORE_INDEX in found else ""
    )
    if binary:  # it says what the mix is: not binary encodings (_mixed_binary)
        out.warnings = [w for w in out.warnings if not w.startswith("the masks mix")]
        out.warnings += binary
        how += ", in the 0/255 masks too: see the warning"
    out.fixes.append(_declare(classes, colours, declare_classes, how))
    return f": index masks of {k} classes, and {lead}: declare them (below)"


def _spread_fix(out: Diagnosis, found: set[int], masks: _Masks) -> str:
    """Index masks whose classes are spread over 0..255 (:func:`_spread_classes`): the
    classes to declare with their grey values, where the plugin declares values. The
    words that follow what the masks are, or ``""``."""
    spec, declare_classes = masks.spec, masks.advice.declare_classes
    spread = _spread_classes(found)
    if spread is None or declare_classes is None:
        return ""
    if spec.is_multiclass and len(spec.classes) == len(spread):
        classes = list(spec.classes)
    else:
        classes = ["background", *(f"class_{c}" for c in range(1, len(spread)))]
    colours = list(spec.palette) if len(spec.palette) == len(spread) else None
    ignored = f"; {IGNORE_INDEX} is 'ignore'" if IGNORE_INDEX in found - set(spread) else ""
    how = f"one class per grey value, in their order: {_ints(spread)}{ignored}"
    fix = _declare(classes, colours, declare_classes, how, values=spread)
    if not fix:
        return ""
    out.classes = (classes, colours)
    out.fixes.append(fix)
    return (
        f": masks of {len(spread)} classes whose grey values are {_ints(spread)}, not "
        f"0..{len(spread) - 1}: declare those values (below)"
    )


def _binary_among_classes(
    readable: Sequence[MaskInfo], classes: list[str], values_option: bool, declared: bool
) -> list[str]:
    """Masks holding only 0 and 255 (binary-looking) among index masks of ``classes``
    (``0..K-1``, K above 2), where 255 is read as 'ignore' (``declared``: the dataset's
    classes; else those the fix declares): their foreground is left out of training and
    scores. One line: how many, their share of ignored pixels, an
    example, and the fixes (convert them; or declare 255 a class of its own, where the
    dataset takes ``values``)."""
    index = [i for i in readable if i.kind == "index" and i.values]
    binary = [i for i in index if set(i.values) == {0, IGNORE_INDEX}]
    others = [i for i in index if set(i.values) - {0, IGNORE_INDEX}]
    if not binary or not others or len(classes) < 3:
        return []
    k = len(classes)
    ignored = sum(i.values[IGNORE_INDEX] for i in binary)
    share = ignored / sum(n for i in binary for n in i.values.values())
    paths = sorted(i.path for i in binary)
    masks = "it" if len(binary) == 1 else f"those {len(binary)} masks"
    declare = ""
    if values_option:
        values = ",".join(map(str, [*range(k), IGNORE_INDEX]))
        declare = f", or, if {IGNORE_INDEX} is a class of its own, declare it: " + named_options(
            "dataset_options",
            {"classes": ",".join([*classes, f"class_{k}"]), "values": values},
        )
    is_, are = ("is", "are") if declared else ("would be", "would be")
    return [
        f"{len(binary)} of {len(index)} masks hold only 0 and {IGNORE_INDEX} (binary-looking, "
        f"e.g. {paths[0]}) among masks of {k} classes (0..{k - 1}), so {IGNORE_INDEX} {is_} "
        f"read as 'ignore' in them: {share:.1%} of their pixels (their foreground) {are} left "
        f"out of training and scores; convert {masks} to class values ({IGNORE_INDEX} -> the "
        f"class of those objects){declare}"
    ]


def _spread_classes(found: set[int]) -> list[int] | None:
    """The class values of index masks whose classes are spread over 0..255 (an
    annotation tool's export: ``0, 50, 100, 150`` or ``0, 85, 170, 255``): 0 and at least
    two more values; 255 is a class where it continues an even spacing (else 'ignore')."""
    labels = sorted(found - {IGNORE_INDEX})
    if len(labels) < 3 or labels[0] != 0 or len(labels) > MAX_CLASS_COLOURS:
        return None
    steps = {b - a for a, b in zip(labels, labels[1:], strict=False)}
    if IGNORE_INDEX in found and len(steps) == 1 and labels[-1] + steps.pop() == IGNORE_INDEX:
        labels.append(IGNORE_INDEX)
    return labels


def _palette_of(readable: Sequence[MaskInfo], k: int) -> list[Colour] | None:
    """The colours of indices ``0..k-1`` when the masks are palette PNGs that agree on them."""
    colours: dict[int, Colour] = {}
    for i in readable:
        if not i.palette:
            continue
        for index, colour in i.palette.items():
            if colours.setdefault(index, colour) != colour:
                return None
    if not all(c in colours for c in range(k)):
        return None
    out = [colours[c] for c in range(k)]
    return out if len(set(out)) == k else None


def _odd_formats(readable: Sequence[MaskInfo]) -> list[str]:
    """A mask in a format (or bit depth, or colour model) that fewer than half the masks
    share is named: it often is the one file that came from elsewhere."""
    by: dict[str, list[Path]] = {}
    for i in readable:
        by.setdefault(i.described, []).append(i.path)
    if len(by) < 2:
        return []
    common, most = max(by.items(), key=lambda kv: len(kv[1]))
    out = []
    for what, paths in sorted(by.items(), key=lambda kv: len(kv[1])):
        if what == common or len(paths) * 2 >= len(readable):
            continue
        out.append(
            f"{names(paths)}: {'is' if len(paths) == 1 else 'are'} {what}, where "
            f"{len(most)} other masks are {common}"
        )
    return out


def _void_border(readable: Sequence[MaskInfo], spec: MaskSpec) -> list[str]:
    """Binary masks holding 1 and 255 together: in VOC-style masks 255 marks the pixels to
    leave out (an object's border), which the binary rule counts as foreground."""
    if spec.is_multiclass or 255 in (spec.background, 1) or 255 not in spec.allowed:
        return []
    both = [
        i.path
        for i in readable
        if i.problem is None and i.kind == "index" and 255 in i.values and 1 in i.values
    ]
    if not both:
        return []
    has = "hold" if len(both) > 1 else "holds"
    return [
        f"{names(both)} {has} both 1 and 255: in VOC-style masks 255 marks pixels to "
        "ignore (objects' borders), but a binary dataset reads every value but "
        f"{spec.background} as foreground, so those borders are trained as object. If 255 "
        "means ignore, declare the two classes (255 is then left out of loss and metrics): "
        + named_options("dataset_options", {"classes": "background,object"})
    ]


def _mixed_binary(readable: Sequence[MaskInfo], spec: MaskSpec) -> list[str]:
    """Binary masks of 0/1 and of 0/255 in one dataset both read as foreground, but mixing
    them usually means two sources (or a conversion applied to some files only)."""
    if spec.is_multiclass:
        return []
    fg = set(spec.allowed) - {spec.background}
    if len(fg) < 2:
        return []
    by: dict[int, list[Path]] = {}
    for i in readable:
        if i.problem is None and i.kind == "index" and i.mode != "1":  # 1-bit: black/white
            present = sorted(set(i.values) & fg)
            if len(present) == 1:
                by.setdefault(present[0], []).append(i.path)
    if len(by) < 2:
        return []
    groups = " and ".join(
        f"{spec.background}/{v} ({len(p)} mask{'s' if len(p) > 1 else ''}: {names(p)})"
        for v, p in sorted(by.items())
    )
    return [
        f"the masks mix encodings {groups}; each reads as binary (any value but "
        f"{spec.background} is foreground), but a folder mixing them often holds files "
        "from two sources: look at a few of each"
    ]


def threshold_command(folder: Path, suffixes: Sequence[str]) -> str:
    """A shell command that turns every ``folder/*<suffix>`` mask into a 0/255 PNG of the
    same name (``.png``, beside it; a PNG is rewritten in place): 255 where the grey value
    is above half the file's brightest value, so 0/255 masks split at 127 and 0/1 masks
    (which look black) at 0; a mask with no foreground stays 0."""
    globs = " + ".join(f"list(d.glob('*{s}'))" for s in suffixes) or "list(d.glob('*'))"
    return (
        'python -c "import pathlib; from PIL import Image; '
        f"d = pathlib.Path({str(folder)!r}); "
        "[(lambda im: im.point(lambda v, t=im.getextrema()[1] // 2: 255 * (v > t)))"
        f"(Image.open(p).convert('L')).save(p.with_suffix('.png')) for p in {globs}]\""
    )


def foreground(values: dict[int, int], spec: MaskSpec) -> int:
    """Foreground pixels of a mask whose raw values count ``values``: binary, every value
    but ``spec.background``; K classes, every class but class 0 (ignored pixels are
    neither)."""
    if spec.is_multiclass:
        target = spec.lookup()
        return sum(n for v, n in values.items() if target.get(v, 0) not in (0, IGNORE_INDEX))
    return sum(values.values()) - values.get(spec.background, 0)


def uniform_splits(
    masks: dict[str, list[MaskInfo]], spec: MaskSpec, root: Path
) -> list[tuple[str, str]]:
    """``(severity, message)`` for each split whose every readable mask is empty (no
    foreground) or, binary, foreground everywhere: masks that cannot teach or measure a
    segmentation (blank exports, labels in a channel segkit does not read, inverted
    masks without a 0). An error for ``train`` (the run would learn one class), a warning
    for the others (their Dice and IoU would measure nothing)."""
    out = []
    for split, infos in masks.items():
        ok = [i for i in infos if i.error is None and i.problem is None and i.values]
        if not ok:
            continue
        fg = [foreground(i.values, spec) for i in ok]
        values = _ints(sorted({v for i in ok for v in i.values}))
        if any(fg) and (
            spec.is_multiclass
            or any(f < sum(i.values.values()) for f, i in zip(fg, ok, strict=True))
        ):
            continue
        severity = "error" if split == "train" else "warning"
        harm = (
            "a model would learn to predict one class everywhere"
            if split == "train"
            else "its Dice and IoU would measure nothing"
        )
        every = f"every {split} mask ({len(ok)})" if len(ok) > 1 else f"the {split} mask"
        advice = ""
        if not any(fg):
            rule = (
                f"class 0 ({spec.classes[0]}) or ignored"
                if spec.is_multiclass
                else f"background is {spec.background}"
            )
            if split == "train":
                advice = (
                    ". Check that the masks are the label files and not blank exports, and "
                    "that their labels are in the grey values or colours (segkit reads those)"
                )
            message = f"{root}: {every} is empty (found only {values}: {rule}); {harm}{advice}"
        else:
            if split == "train":
                advice = f". Save the masks with {spec.background} (black) for background"
            message = (
                f"{root}: {every} is foreground everywhere (found only {values}; every value "
                f"but {spec.background} reads as foreground); {harm}{advice}"
            )
        out.append((severity, message))
    return out


def diagnosis_of(
    infos: Sequence[MaskInfo],
    spec: MaskSpec,
    dataset_name: str,
    root: Path | None,
    options: Mapping[str, Any] | None = None,
) -> Diagnosis:
    """:func:`diagnose` with the dataset plugin ``dataset_name``'s ``declare_classes`` and
    ``declare_ignore`` capabilities bound to ``root`` (and the dataset ``options`` it was
    read with), when it declares them and loads."""
    advice = Advice(
        dataset=dataset_name,
        declare_classes=declare_classes_of(dataset_name, root),
        declare_ignore=declare_ignore_of(dataset_name, root, options or {}),
        ignore_color_option=_takes_option(dataset_name, "ignore_color"),
        values_option=_takes_option(dataset_name, "values"),
    )
    return diagnose(infos, spec, advice)


def declare_ignore_of(
    dataset_name: str, root: Path | None, options: Mapping[str, Any]
) -> DeclareIgnore | None:
    """The plugin's ``declare_ignore`` bound to ``root`` and ``options``, or None."""
    declare = _advice_capability(dataset_name, root, "declare_ignore")
    if declare is None:
        return None
    return lambda colour: str(declare(root, colour, **options))


def _advice_capability(dataset_name: str, root: Path | None, name: str) -> Any:
    """The dataset plugin ``dataset_name``'s capability ``name`` (``declare_classes``,
    ``declare_ignore``: advice on lines to write in its folder ``root``), or None where
    there is no folder, no such plugin, or no callable capability."""
    if root is None or not dataset_name:
        return None
    try:
        declare = default_registry().info("datasets", dataset_name).capability(name)
    except Exception:  # noqa: BLE001 -- an unknown or broken plugin has no advice to give
        return None
    return declare if callable(declare) else None


def _takes_option(dataset_name: str, option: str) -> bool:
    """Whether the dataset plugin ``dataset_name``'s factory takes ``option`` (read from
    its signature, as the configuration's option check reads it:
    :meth:`~segkit.registry.Registry.option_names`)."""
    try:
        options = default_registry().option_names("datasets", dataset_name)
    except PluginError:  # an unknown or broken plugin: no advice
        return False
    return option in (options or ())


def declare_classes_of(dataset_name: str, root: Path | None) -> DeclareClasses | None:
    """The plugin's ``declare_classes`` bound to ``root``, or None."""
    declare = _advice_capability(dataset_name, root, "declare_classes")
    if declare is None:
        return None

    try:
        takes_values = "values" in inspect.signature(declare).parameters
    except (TypeError, ValueError):  # a callable without a signature: names and colours only
        takes_values = False

    def bound(
        classes: list[str], palette: list[Colour] | None, values: list[int] | None = None
    ) -> str:
        if values is None:
            return str(declare(root, classes, palette))
        return str(declare(root, classes, palette, values=values)) if takes_values else ""

    return bound
