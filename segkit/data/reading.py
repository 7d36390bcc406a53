"""Reading and checking image and mask files.

Every loader reads files through these functions (or checks the same rules in its own
backend), so a corrupt JPEG, a mask with unexpected values or an image/mask size
mismatch is reported the same way everywhere: one :class:`~segkit.errors.DataError`
naming the file.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import threading
from pathlib import Path
from typing import IO, Any

import numpy as np

from segkit.contracts import IGNORE_INDEX, Dataset, MaskSpec, Sample
from segkit.errors import ConfigError, DataError, MaskValuesError

#: The most pixels (width x height) segkit decodes from one image or mask file; the
#: environment variable :data:`PIXELS_ENV` overrides it. 2**27 is 134 megapixels (an
#: 11585 x 11585 image, 400 MB as RGB), far above any image a segmentation model trains on
#: whole, and it refuses a decompression bomb (a small file declaring gigapixels) before a
#: byte is decoded. PIL's own limit (``PIL.Image.MAX_IMAGE_PIXELS``) is set to the same
#: number while segkit opens a file, and put back after, so code beside segkit that opens
#: images with PIL keeps its own limit.
MAX_IMAGE_PIXELS = 2**27
PIXELS_ENV = "SEGKIT_MAX_IMAGE_PIXELS"
_PIL_LIMIT = threading.Lock()  # PIL's limit is one global: one thread at a time changes it
#: The advice :func:`read_image` (and a mask that cannot be decoded) ends with, true of
#: any layout; ``segkit data check`` and a run's check of its data word it for the
#: dataset's layout (:func:`fit_advice`), ``segkit predict`` for its inputs.
UNREADABLE_ADVICE = "Replace it, or leave it out of the dataset"
#: :func:`fit_advice` for a dataset whose samples are named by split lists.
SPLIT_LIST_ADVICE = "Replace it, or remove its name from the split list"
#: What :func:`check_mask_values` says of a mask holding values outside the dataset's
#: spec. ``segkit evaluate`` recognises data labelled with other classes by the error's
#: type (:class:`~segkit.errors.MaskValuesError`), and by these words only where a loader
#: rebuilt the error as a plain one.
VALUES_OUTSIDE = "found, masks of this dataset hold"
#: What :func:`colours_to_raw` says of an RGB mask holding colours outside the dataset's
#: palette (a :class:`~segkit.errors.MaskValuesError` too, carrying the colours).
COLOURS_OUTSIDE = "are not in the dataset's palette"


def max_image_pixels() -> int:
    """:data:`MAX_IMAGE_PIXELS`, or ``SEGKIT_MAX_IMAGE_PIXELS`` when set.

    Raises:
        ConfigError: the variable is not a positive whole number.
    """
    value = os.environ.get(PIXELS_ENV, "").strip().replace("_", "")
    if not value:
        return MAX_IMAGE_PIXELS
    if not value.isdigit() or int(value) == 0:
        raise ConfigError(f"{PIXELS_ENV}={value!r}: expected a positive whole number of pixels")
    return int(value)


def open_image(source: Path | IO[bytes], path: Path | None = None) -> Any:
    """``PIL.Image.open(source)``, refused when the header declares more pixels than
    :func:`max_image_pixels`, before anything is decoded. ``path`` names the file in the
    message (default: ``source``). The caller closes the image (``with``).

    Raises:
        DataError: too many pixels, naming the file, its size, the limit and the fix.
        Exception: whatever PIL raises for a file it cannot identify or parse.
    """
    from PIL import Image

    path = path if path is not None else Path(str(source))
    limit = max_image_pixels()
    with _PIL_LIMIT:
        before = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit  # PIL raises over twice this in open() itself
        try:
            im = Image.open(source)  # reads the header only: the lock is held briefly
        except Image.DecompressionBombError as e:  # the header declares over 2 x limit
            found = re.search(r"\((\d+) pixels\)", str(e))
            raise DataError(
                _too_large(path, int(found.group(1)) if found else None, limit)
            ) from None
        finally:
            Image.MAX_IMAGE_PIXELS = before
    if im.width * im.height > limit:
        size = im.width * im.height
        im.close()
        raise DataError(_too_large(path, size, limit, f"{im.width}x{im.height} = "))
    return im


def _too_large(path: Path, pixels: int | None, limit: int, dims: str = "") -> str:
    declared = f"{dims}{pixels:,} pixels" if pixels else f"more than {2 * limit:,} pixels"
    return (
        f"{path}: the file declares {declared}, over segkit's limit of {limit:,} (a "
        f"decompression bomb, or a damaged header); shrink the image, or raise the limit "
        f"with {PIXELS_ENV}={pixels or 4 * limit}"
    )


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to an ``(H, W, 3)`` uint8 RGB array, as stored: an EXIF
    orientation tag is not applied (Oxford-IIIT Pet's trimaps were drawn on the stored
    pixels; the dali loader decodes the same way).

    A single-channel image of more than 8 bits (16-bit PNG or TIFF, 32-bit integer or
    float TIFF) is scaled linearly from its own darkest to its brightest value onto
    0..255 (:func:`to_8bit`), rather than clipped at 255 as PIL's conversion would; so is
    a colour image of 16 bits per channel (:func:`is_deep_colour`; its three channels by
    one scale, its alpha dropped), of which PIL would keep each value's top 8 bits.

    Raises:
        DataError: the file is missing, truncated or not an image.
    """
    try:
        with open_image(path) as im:
            return _opened_rgb(im, path)
    except FileNotFoundError:
        raise DataError(not_found(path, "image")) from None
    except (DataError, ConfigError):  # the pixel limit's own words
        raise
    except Exception as e:  # noqa: BLE001 -- a damaged file makes PIL raise many types
        raise DataError(
            foreign_format(path, "image")
            or f"{path}: cannot decode image ({e}); the file is corrupt or truncated. "
            f"{UNREADABLE_ADVICE}"
        ) from None


def _opened_rgb(im: Any, path: Path, encoded: np.ndarray | None = None) -> np.ndarray:
    """An opened, not yet loaded, image as ``(H, W, 3)`` uint8 RGB: colour of 16 bits per
    channel by :func:`_deep_colour_rgb` (from ``encoded``, the file's bytes, where they are
    in memory), anything else by PIL. Shared by :func:`read_image` and
    :func:`decode_image`."""
    if is_deep_colour(im):  # PIL would keep each value's top 8 bits
        return _deep_colour_rgb(path, encoded)
    im.load()  # PIL decodes lazily; load() is where truncation is detected
    return pil_to_rgb(im)


def not_found(path: Path, what: str) -> str:
    """``<path>: image file not found``, or, for a link whose target is missing, where
    it points."""
    if Path(path).is_symlink():
        return (
            f"{path}: a link to {os.readlink(path)}, which does not exist; restore its "
            f"target or replace the link with the {what} file"
        )
    return f"{path}: {what} file not found"


#: Photo formats segkit does not read, by suffix (a phone's HEIC): the folder layout
#: skips them and ``segkit predict``'s folder search leaves them out, each saying so.
UNREAD_PHOTOS = {".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF", ".dng": "raw DNG"}

#: Formats PIL does not read that image files are often in, by their first bytes: a
#: phone's HEIC (or AVIF) photo or a PDF renamed .jpg reads as "corrupt" otherwise.
_FOREIGN = (
    (b"ftypheic", "a HEIC photo (the iPhone's format)"),
    (b"ftypheix", "a HEIC photo (the iPhone's format)"),
    (b"ftyphevc", "a HEIC photo (the iPhone's format)"),
    (b"ftypmif1", "a HEIF image"),
    (b"ftypmsf1", "a HEIF image"),
    (b"ftypavif", "an AVIF image"),
    (b"%PDF", "a PDF document"),
    (b"<svg", "an SVG drawing"),
    (b"<?xml", "an XML (SVG?) file"),
)


def foreign_format(path: Path, what: str) -> str | None:
    """Why ``path`` cannot be decoded, where its first bytes show a format segkit does not
    read (HEIC, AVIF, PDF, SVG), with what to convert it to; None otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    for magic, kind in _FOREIGN:
        at = head.find(magic)
        if at == 0 or (magic.startswith(b"ftyp") and at == 4):
            target = "JPEG or PNG" if what == "image" else "PNG"
            return (
                f"{path}: {kind}, which segkit does not read (PIL cannot decode it), named "
                f"{path.suffix or 'without a suffix'}; convert it to {target} (an image "
                f"viewer's export, or ImageMagick: magick {shlex.quote(str(path))} "
                f"{shlex.quote(str(path.with_suffix('.png' if what == 'mask' else '.jpg')))})"
            )
    return None


def decode_image(data: bytes | bytearray | memoryview | IO[bytes]) -> np.ndarray:
    """:func:`read_image` of an encoded image held in memory (a JPEG, PNG, ... file's
    bytes, or a binary file object such as an upload's): what a server receives.

    Raises:
        DataError: the data is not a complete image file, or declares too many pixels.
    """
    import io

    if isinstance(data, (bytes, bytearray, memoryview)):
        name, raw = f"<{len(data):,} bytes>", bytes(data)
    else:
        name, raw = f"<{getattr(data, 'name', type(data).__name__)}>", data.read()
    try:
        with open_image(io.BytesIO(raw), Path(name)) as im:
            return _opened_rgb(im, Path(name), np.frombuffer(raw, dtype=np.uint8))
    except (DataError, ConfigError):
        raise
    except Exception as e:  # noqa: BLE001 -- damaged data makes PIL raise many types
        said = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the data", str(e))
        raise DataError(
            f"{name}: cannot decode image ({said}); expected the bytes of a whole image file "
            "(JPEG, PNG, TIFF, BMP, WebP, GIF), as read from one with open(path, 'rb')"
        ) from None


def fit_advice(message: str, dataset: Dataset, file: str = "image") -> str:
    """``message`` (a :class:`~segkit.errors.DataError` about a dataset's ``file``, image
    or mask, that cannot be decoded) with :data:`UNREADABLE_ADVICE` worded for the
    dataset's layout, as its optional ``split_lists`` attribute says (see
    :class:`segkit.contracts.Dataset`): true, remove its name from the split list; false,
    delete it with its image or mask (nothing names it); unset, left as it is."""
    split_lists = getattr(dataset, "split_lists", None)
    if split_lists is None or UNREADABLE_ADVICE not in message:
        return message
    other = "mask" if file == "image" else "image"
    advice = SPLIT_LIST_ADVICE if split_lists else f"Replace it, or delete it and its {other}"
    return message.replace(UNREADABLE_ADVICE, advice)


def pil_to_rgb(im: Any) -> np.ndarray:
    """A loaded PIL image as a writable ``(H, W, 3)`` uint8 RGB array (augmentations and
    torch may write in place): one channel of more than 8 bits scaled by :func:`to_8bit`,
    anything else converted by PIL (grey repeated, alpha and palettes resolved)."""
    if is_high_bit(im.mode):
        return np.repeat(to_8bit(np.asarray(im))[..., None], 3, axis=2)
    return np.array(im.convert("RGB"))


def is_deep_colour(im: Any) -> bool:
    """Whether an opened, not yet loaded, image is colour of 16 bits per channel (a 48- or
    64-bit PNG, a 16-bit RGB TIFF): PIL opens it as ``RGB``/``RGBA`` and keeps each
    value's top 8 bits, so 10- or 12-bit data in 16-bit files reads nearly black."""
    if im.mode not in ("RGB", "RGBA"):
        return False
    return ";16" in (_rawmode(im) or "")


def _rawmode(im: Any) -> str | None:
    """The raw mode PIL decodes an opened, not yet loaded, image from (``L;4``,
    ``LA;16B``...), or None (loaded, or a format without one)."""
    tile = getattr(im, "tile", None)
    if not tile:
        return None
    args = tile[0].args
    rawmode = args[0] if isinstance(args, tuple) and args else args
    return rawmode if isinstance(rawmode, str) else None


#: Grey of fewer than 8 bits (a 2- or 4-bit PNG or TIFF) as :func:`image_mode` names it,
#: and the factor PIL scales its stored values by to fill 0..255 (the PNG rule: a stored
#: 1 reads 85 or 17). ``L;2I`` / ``L;4I``: a TIFF whose grey is stored "white is zero",
#: which PIL also inverts (a stored 1 reads 170 or 238); both are read as stored, as the
#: PNG of the same values is. 1-bit files are PIL's mode ``1``, read as 0/1.
LOW_BIT_GREY = {"L;2": 85, "L;4": 17, "L;2I": 85, "L;4I": 17}


def image_mode(im: Any) -> str:
    """An opened image's mode as segkit reads it: PIL's, with ``;16`` added for colour of
    16 bits per channel (``RGB;16``: :func:`is_deep_colour`), ``LA;16`` for grey of 16
    bits with alpha (which PIL opens as ``RGBA`` of each value's top 8 bits), and
    ``L;2`` / ``L;4`` for grey of 2 or 4 bits (:data:`LOW_BIT_GREY`, which PIL opens as
    ``L`` scaled to 0..255; ``L;2I`` / ``L;4I``: a TIFF's, stored "white is zero").
    Call before ``load()``."""
    rawmode = _rawmode(im) or ""
    if im.mode == "L" and rawmode in LOW_BIT_GREY:
        return rawmode
    if im.mode == "RGBA" and rawmode.startswith("LA;16"):
        return "LA;16"
    return f"{im.mode};16" if is_deep_colour(im) else im.mode


def _deep_colour_rgb(path: Path, encoded: np.ndarray | None = None) -> np.ndarray:
    """A 16-bit-per-channel colour file as ``(H, W, 3)`` uint8, its three channels scaled
    together by :func:`to_8bit`. Decoded by OpenCV (albumentations' own dependency), as
    stored: ``IMREAD_UNCHANGED`` applies no EXIF orientation, like PIL. ``encoded``: the
    file's bytes where they are in memory (:func:`decode_image`); ``path`` then names them.

    Raises:
        DataError: OpenCV cannot decode it.
    """
    import cv2

    if encoded is None:
        encoded = np.fromfile(path, dtype=np.uint8)
    pixels = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] < 3:
        raise DataError(
            f"{path}: cannot decode image (a colour image of 16 bits per channel that OpenCV "
            f"does not decode); the file is corrupt or truncated. {UNREADABLE_ADVICE}"
        )
    return np.ascontiguousarray(to_8bit(pixels[..., 2::-1]))  # BGR(A) -> RGB


#: PIL's EXIF tag of an image's orientation (1: shown as stored; 2-8: flipped or turned).
ORIENTATION_TAG = 0x0112


def exif_orientation(im: Any) -> int:
    """The EXIF orientation tag of an opened image, read from its header (1, as stored,
    when it has none, or a damaged or odd one)."""
    try:
        value = im.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 -- a damaged EXIF block is not the image's problem
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def is_high_bit(mode: str) -> bool:
    """Whether PIL's ``mode`` is a single channel of more than 8 bits (``I;16*``, ``I``,
    ``F``): such an image is scaled by :func:`to_8bit`, not converted by PIL."""
    return mode in ("I", "F") or mode.startswith("I;16")


def is_deep(mode: str) -> bool:
    """Whether :func:`image_mode` ``mode`` has more than 8 bits per channel (one channel,
    :func:`is_high_bit`, or colour, ``RGB;16``): read scaled by :func:`to_8bit`."""
    return is_high_bit(mode) or mode.endswith(";16")


def to_8bit(values: np.ndarray) -> np.ndarray:
    """``values`` (one channel, any numeric dtype) scaled linearly so that its smallest
    finite value becomes 0 and its largest 255, as uint8; a flat image becomes 0.
    Per image, like a viewer's auto-contrast: the bit depth a camera used (10, 12, 14 or
    16 bits in a 16-bit file) is unknown, and dividing by 65535 would leave a 12-bit
    image 16 grey levels."""
    a = values.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    a = np.where(finite, a, lo)
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_raw_mask(path: Path, spec: MaskSpec) -> np.ndarray:
    """Decode a mask file to an ``(H, W)`` uint8 array of raw values, checked against ``spec``.

    Raises:
        DataError: the file is missing or corrupt; MaskValuesError (a DataError): it holds
            values outside ``spec.allowed`` (or, for an RGB mask of a dataset with a
            palette, colours outside it).
    """
    raw = decode_raw_mask(path, spec)
    check_mask_values(path, np.unique(raw).tolist(), spec)
    return raw.astype(np.uint8)


def decode_raw_mask(path: Path, spec: MaskSpec | None = None) -> np.ndarray:
    """Decode a mask file to its ``(H, W)`` raw values, unchecked (uint8, or wider for
    16-bit files).

    Index masks (2/4/8/16-bit grayscale, palette PNGs: their indices) are read as stored:
    a 2- or 4-bit grey PNG by its stored values (0..3, 0..15), not scaled to 0..255 as PIL
    shows it, and a 16-bit grey PNG with alpha by its 16-bit grey values, as a 16-bit one.
    An RGB(A) mask is converted to grayscale, except for a multi-class ``spec`` that
    declares a palette: then each pixel's colour is looked up in it (see
    :func:`colours_to_raw`). A mask with transparency reads its fully transparent pixels
    as 0; one of a single colour whose alpha varies is its alpha channel
    (:func:`alpha_labels`).

    Raises:
        DataError: the file is missing, corrupt or not single-channel, or an RGB mask
            holds a colour that is not in the palette.
    """
    try:
        with open_image(path) as im:
            mode = image_mode(im)  # before load(): L;4 for a 4-bit grey PNG
            im.load()
            return decode_opened_mask(im, path, spec, mode)
    except FileNotFoundError:
        raise DataError(not_found(path, "mask")) from None
    except (DataError, ConfigError):  # the pixel limit's own words
        raise
    except Exception as e:  # noqa: BLE001 -- a damaged file makes PIL raise many types
        raise DataError(
            foreign_format(path, "mask")
            or f"{path}: cannot decode mask ({e}); the file is corrupt. {UNREADABLE_ADVICE}"
        ) from None


def decode_opened_mask(
    im: Any, path: Path, spec: MaskSpec | None = None, mode: str | None = None
) -> np.ndarray:
    """:func:`decode_raw_mask` of a PIL image already opened and loaded from ``path``;
    ``mode``: its :func:`image_mode`, taken before ``load()`` (which forgets the bit
    depth PIL decoded from; default ``im.mode``).

    Raises:
        DataError: not single-channel, or an RGB mask holds a colour outside the palette.
    """
    if mode == "LA;16":  # PIL holds each value's top 8 bits only: decode the file again
        return _grey_alpha_mask(path)
    from_alpha = alpha_labels(im)
    if from_alpha is not None:
        return from_alpha
    if spec is not None and spec.is_multiclass and spec.palette and im.mode in ("RGB", "RGBA"):
        return colours_to_raw(path, np.asarray(im.convert("RGB")), spec)
    transparent = None
    if im.mode in ("RGBA", "LA", "PA"):
        transparent = np.asarray(im.getchannel("A")) == 0
    if im.mode not in ("L", "P", "1", "I") and not im.mode.startswith("I;16"):
        im = im.convert("L")  # 16-bit masks keep their values (I;16B too), checked later
    raw = np.asarray(im)
    if mode in LOW_BIT_GREY:  # PIL scaled the stored values up to 0..255: undo it
        if mode.endswith("I"):  # and inverted them (TIFF's "white is zero")
            raw = 255 - raw
        raw = raw // LOW_BIT_GREY[mode]
    if transparent is not None and transparent.any():
        raw = np.where(transparent, 0, raw).astype(raw.dtype)  # see-through: background
    if raw.ndim != 2:
        raise DataError(f"{path}: mask has shape {raw.shape}; expected a single-channel image")
    return raw


def _grey_alpha_mask(path: Path) -> np.ndarray:
    """A 16-bit grey mask with alpha (``LA;16``) as :func:`decode_opened_mask` reads
    other masks with alpha, at 16 bits: its grey values as stored (uint16), fully
    transparent pixels 0; or, one grey everywhere and the alpha varying, its alpha (as
    :func:`alpha_labels`, PIL's 8 bits of it). Decoded by OpenCV, which keeps 16 bits.

    Raises:
        DataError: OpenCV cannot decode it.
    """
    import cv2

    pixels = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 3 or pixels.dtype != np.uint16:
        raise DataError(
            f"{path}: cannot decode mask (a grey mask of 16 bits with alpha that OpenCV does "
            f"not decode); the file is corrupt. {UNREADABLE_ADVICE}"
        )
    grey, alpha = pixels[..., 0], pixels[..., -1]  # grey is repeated in B, G and R
    if alpha.min() < 65535 and (grey == grey.flat[0]).all():
        return (alpha >> 8).astype(np.uint8)
    return np.where(alpha == 0, 0, grey).astype(np.uint16)


def alpha_labels(im: Any) -> np.ndarray | None:
    """The alpha channel of a mask whose labels are drawn in transparency (one colour
    everywhere, the alpha varying: a cut-out exported by an image editor), else None.
    Such a mask read as grey would be one value everywhere (all foreground or all
    background); its alpha is the mask. Other masks with alpha keep their colour, and
    their fully transparent pixels read as 0 (background)."""
    if im.mode not in ("RGBA", "LA"):
        return None
    alpha = np.asarray(im.getchannel("A"))
    if alpha.min() == 255:  # opaque: the colour is the mask
        return None
    colour = np.asarray(im.convert("RGB" if im.mode == "RGBA" else "L"))
    flat = colour.reshape(-1, colour.shape[-1]) if colour.ndim == 3 else colour.reshape(-1, 1)
    if not (flat == flat[0]).all():
        return None
    return alpha.copy()


def _colour_keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colours_to_raw(path: Path, rgb: np.ndarray, spec: MaskSpec) -> np.ndarray:
    """Turn an ``(H, W, 3)`` colour-coded mask into raw values: class ``c``'s palette
    colour becomes the raw value of class ``c``, ``spec.ignore_color`` the ignore value.

    Raises:
        MaskValuesError: naming ``path``, the colours that are in no palette entry (with
            their pixel counts) and the palette; it holds those colours as ``(r, g, b)``
            (a :class:`~segkit.errors.DataError`).
    """
    raw_of = {c: v for v, c in reversed(list(zip(spec.allowed, spec.class_index, strict=True)))}
    colours = list(spec.palette)
    raws = [raw_of[c] for c in range(len(colours))]
    if spec.ignore_color is not None:
        colours.append(spec.ignore_color)
        raws.append(raw_of[IGNORE_INDEX])
    keys = _colour_keys(np.array(colours, dtype=np.int32).reshape(-1, 1, 3)).reshape(-1)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    pixels = _colour_keys(rgb)
    pos = np.clip(np.searchsorted(sorted_keys, pixels), 0, len(keys) - 1)
    found = sorted_keys[pos] == pixels
    if not found.all():
        bad, counts = np.unique(pixels[~found], return_counts=True)
        shown = ", ".join(
            f"({k >> 16}, {(k >> 8) & 255}, {k & 255}) on {n} pixel{'s' if n > 1 else ''}"
            for k, n in list(zip(bad.tolist(), counts.tolist(), strict=True))[:5]
        )
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        palette = ", ".join(
            f"{name}=({r}, {g}, {b})"
            for name, (r, g, b) in zip(spec.classes, spec.palette, strict=True)
        )
        raise MaskValuesError(
            f"{path}: colours {shown}{more} {COLOURS_OUTSIDE} "
            f"{palette}; re-save the mask with palette colours only (no antialiasing or JPEG)",
            path=str(path),
            colours=tuple((k >> 16, (k >> 8) & 255, k & 255) for k in bad.tolist()),
        )
    return np.asarray(raws, dtype=np.int32)[order][pos].astype(np.uint8)


def check_mask_values(path: Path, values: list[int], spec: MaskSpec) -> None:
    """Raise if ``values`` (the distinct raw values of the mask file ``path``) holds any
    value outside ``spec.allowed``.

    Raises:
        MaskValuesError: naming the file, the values found outside and those allowed; it
            holds the values found outside (a :class:`~segkit.errors.DataError`).
    """
    bad = sorted(set(values) - set(spec.allowed))
    if bad:
        allowed = ", ".join(map(str, spec.allowed))
        what = ""
        if spec.is_multiclass:
            what = f" ({len(spec.classes)} classes: {', '.join(spec.classes)}"
            ignored = ", ".join(map(str, spec.ignore_values))
            what += f"; {ignored} ignored)" if spec.has_ignore else ")"
        raise MaskValuesError(
            f"{path}: values {{{', '.join(map(str, bad))}}} {VALUES_OUTSIDE} {allowed}{what}",
            tuple(int(v) for v in bad),
            str(path),
        )


def to_binary(raw: np.ndarray, spec: MaskSpec) -> np.ndarray:
    """Apply the dataset's rule: foreground (1) where the raw value is not ``background``."""
    return (raw != spec.background).astype(np.uint8)


def to_target(raw: np.ndarray, spec: MaskSpec) -> np.ndarray:
    """Checked raw values to the training target, uint8: 0/1 for a binary spec
    (:func:`to_binary`), the class map (``0..K-1``, :data:`IGNORE_INDEX`) for a
    multi-class one."""
    if not spec.is_multiclass:
        return to_binary(raw, spec)
    return _class_lut(spec)[raw]


@functools.lru_cache(maxsize=16)
def _class_lut(spec: MaskSpec) -> np.ndarray:
    """Raw value -> class (a spec is frozen: built once, not per sample)."""
    lut = np.full(max(spec.allowed) + 1, IGNORE_INDEX, dtype=np.uint8)
    for value, target in spec.lookup().items():
        lut[value] = target
    lut.setflags(write=False)
    return lut


def read_sample(sample: Sample, spec: MaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read one sample as ``(image (H, W, 3) uint8, mask (H, W) uint8)``: the mask holds
    0/1 for a binary dataset, the class map for a multi-class one (:func:`to_target`).

    Raises:
        DataError: either file is unreadable, or their sizes differ.
    """
    image = read_image(sample.image)
    mask = to_target(read_raw_mask(sample.mask, spec), spec)
    check_same_size(sample, image.shape[:2], mask.shape)
    return image, mask


def check_same_size(
    sample: Sample, image_hw: tuple[int, ...], mask_hw: tuple[int, ...], orientation: int = 1
) -> None:
    """Raise if the image and mask of ``sample`` (sizes as ``(H, W)``) differ in size.
    ``orientation``: the image's EXIF orientation tag (:func:`exif_orientation`), which
    explains a mask of its shown size.

    Raises:
        DataError: naming the mask file, both sizes, and what the sizes suggest (a mask of
            the shown size of an EXIF-rotated image, sides swapped, another scale).
    """
    if tuple(image_hw) != tuple(mask_hw):
        raise DataError(
            f"{sample.mask}: mask is {mask_hw[1]}x{mask_hw[0]} but image "
            f"{sample.image.name} is {image_hw[1]}x{image_hw[0]}; "
            "an image and its mask must have the same size"
            + _size_note(sample, tuple(image_hw), tuple(mask_hw), orientation)
        )


def _size_note(
    sample: Sample, image_hw: tuple[int, ...], mask_hw: tuple[int, ...], orientation: int
) -> str:
    """What a mask's size says about how it came to differ from its image's."""
    (ih, iw), (mh, mw) = image_hw[:2], mask_hw[:2]
    if (mh, mw) == (iw, ih):
        if orientation in ROTATED:
            return (
                f"; the image's EXIF orientation tag ({orientation}) shows it rotated a "
                "quarter turn, and the mask has its shown size: the mask was drawn on the "
                "rotated image. segkit reads pixels as stored: " + exif_command(sample.image.parent)
            )
        return (
            "; the mask has the image's sides swapped: it was saved transposed or turned a "
            "quarter, or belongs to another image"
        )
    if mh and mw and ih * mw == iw * mh:
        return (
            f"; the mask has the image's shape at {mw / iw:.3g} times its size: it was "
            "exported at another scale; export it at the image's size (or resize it with "
            "nearest-neighbour interpolation, which keeps the label values)"
        )
    if abs(ih - mh) <= 2 and abs(iw - mw) <= 2:
        return (
            "; they differ by a pixel or two, as when a tool rounds an odd size or pads "
            "or crops an edge: export the mask again at the image's size"
        )
    return ""


#: EXIF orientations that swap width and height (a quarter turn, with or without a flip).
ROTATED = (5, 6, 7, 8)
#: The image files :func:`exif_command` rewrites (a WebP would be re-encoded lossy).
EXIF_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def exif_command(folder: Path) -> str:
    """What to do about the images in ``folder`` whose EXIF orientation tag turns them
    when shown: the command that stores each such image as it is shown (in place; the
    images without a tag are left as they are)."""
    return (
        "to store them as they are shown (masks drawn on the shown image then line up), run "
        'python -c "import pathlib; from PIL import Image, ImageOps; '
        "[ImageOps.exif_transpose(im).save(p, quality=95) for p in "
        f"sorted(pathlib.Path({str(folder)!r}).iterdir()) if p.suffix.lower() in "
        f'{EXIF_SUFFIXES!r} for im in [Image.open(p)] if im.getexif().get(274, 1) != 1]"'
    )


def file_orientation(path: Path) -> int:
    """:func:`exif_orientation` of an image file, from its header (1 where the file
    cannot be opened: reading its pixels reports that)."""
    try:
        with open_image(path) as im:
            return exif_orientation(im)
    except Exception:  # noqa: BLE001 -- the read of the pixels says what is wrong
        return 1


# ----------------------------------------------------------------------------- bad samples


class FilteredDataset:
    """A dataset with some samples left out (``--skip-bad-samples``; see
    :func:`segkit.data.prepare.prepare_training`)."""

    def __init__(self, dataset: Dataset, bad: set[str]) -> None:
        self._dataset = dataset
        self._bad = bad
        self.root = dataset.root
        self.mask_spec = dataset.mask_spec

    def samples(self, split: str) -> list[Sample]:
        return [s for s in self._dataset.samples(split) if s.id not in self._bad]

    def __repr__(self) -> str:
        return f"FilteredDataset({self._dataset!r}, {len(self._bad)} left out)"
