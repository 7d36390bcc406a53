"""A seeded generator of pet-like images, written in the Oxford-IIIT Pet layout.

The synthetic set is segkit's embedded default dataset and its test fixture: it needs
no download, is reproducible from a seed, and goes through exactly the same readers as
the real data (it is written as ``images/*.jpg``, ``annotations/trimaps/*.png`` and
``annotations/{trainval,test}.txt``, and read back by :class:`OxfordPet`).

Each image holds one "pet": the union of a body ellipse, a head, two triangular ears and
sometimes a tail and legs, in a random pose, filled with a smooth fur-like texture
(base colour, low-frequency noise, stripes or spots, grain). It lies over a cluttered
background (gradient, low-frequency noise, rectangles and ellipses of other colours,
none labelled foreground; in 30% of the images one of them is a decoy in the pet's own
coat colour). Pet and background colours overlap, so a colour threshold does not solve
it; shape and texture do. As in a pet photo, the pet is the subject: it covers 12-75% of
the frame.

Trimaps follow the official encoding: 1 pet, 2 background, 3 a 2-4 px band straddling
the pet's outline.

The ``collar`` variant (``variant="collar"``) is the same set (the same images, pixel
for pixel, outside the collars) where each pet also wears a collar: a coloured band
across its neck, value 4 in its trimap. Its default target has 3 classes, background,
pet and collar, with the border band ignored (see :data:`COLLAR_TARGETS`), so tests and
``make run``-sized runs have real multi-class data with an ignore label.

The ``vessels`` variant (``variant="vessels"``) is a different set, for native-resolution
work: large images (1500 x 1100 by default; ``size=[W, H]``) of thin curvilinear
structures, branching trees of "vessels" 2-4 px wide, darker than a textured background
(low-frequency shading, grain and unlabelled dark spots), as in retina or microscopy
images. Trimap 1 marks a vessel pixel, 2 the background (no border band). Resizing such
an image to 256 px makes a vessel well under a pixel wide: what a resize-trained model
cannot recover, and what ``benchmarks/native_vs_resize.py`` measures.

Only numpy and PIL are used. Each image draws from its own stream
``numpy.random.default_rng([seed, index])``, so a set of 100 images is the first 100
images of the set of 400 with the same seed, and the same seed gives identical files
(with the same Pillow version: JPEG encoding is Pillow's).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from segkit.config import named, named_options
from segkit.contracts import MaskSpec
from segkit.errors import ConfigError, DataError
from segkit.system.files import cache_dir
from segkit_datasets.oxford_pet import OxfordPet

#: The generator's variants: ``pet`` (the default set), ``collar`` and ``vessels``.
VARIANTS = ("pet", "collar", "vessels")

#: Default ``(width, height)`` of a ``vessels`` image.
VESSEL_SIZE = (1500, 1100)

#: Trimap value of a collar pixel in the ``collar`` variant.
COLLAR = 4

#: Targets of the ``collar`` variant (its trimaps hold 1 pet, 2 background, 3 border,
#: 4 collar).
COLLAR_TARGETS: dict[str, MaskSpec] = {
    "collar": MaskSpec.multiclass(("background", "pet", "collar"), values=(2, 1, COLLAR), ignore=3),
    "trimap": MaskSpec.multiclass(
        ("background", "pet", "border", "collar"), values=(2, 1, 3, COLLAR)
    ),
    "binary": MaskSpec(background=2, allowed=(1, 2, 3, COLLAR)),
}

# Collar colours: saturated, unlike the coats (RGB).
_COLLAR_COLOURS = np.array(
    [[200, 30, 40], [30, 70, 200], [30, 160, 70], [235, 200, 30], [160, 40, 170], [20, 170, 190]],
    dtype=np.float32,
)

#: Bump when the generator's output changes, so cached sets are regenerated.
#: 2: the pet covers at least 12% of the frame (was 6%), and the decoy in the pet's coat
#: colour is in 30% of the images (was 70%).
VERSION = 2

#: Images in the embedded default set.
DEFAULT_COUNT = 400

#: Written last by :func:`write_synthetic`; a folder without it is incomplete.
MARKER = ".segkit-synthetic.json"

_JPEG_QUALITY = 90
# A photo of a pet is a portrait: the pet is its subject. It covers (with its border band)
# at least this fraction of the frame...
_MIN_COVERAGE = 0.12
# ... and a clutter shape in the pet's own coat colour (a decoy that only shape tells
# apart) is in this fraction of the images.
_DECOY_P = 0.3

# Files a synthetic set consists of; a folder holding anything else is not ours to
# overwrite.
_OWN_FILES = re.compile(
    r"^(images/synth_\d+\.jpg|annotations/trimaps/synth_\d+\.png"
    r"|annotations/(trainval|test)\.txt|" + re.escape(MARKER) + r")$"
)

# Typical pet coats (RGB): browns, black, white, greys, ginger, cream.
_COAT_PALETTE = np.array(
    [
        [120, 80, 50],
        [90, 60, 40],
        [160, 115, 70],
        [40, 35, 32],
        [225, 220, 210],
        [130, 130, 130],
        [200, 120, 60],
        [215, 190, 150],
        [170, 150, 130],
        [75, 70, 70],
    ],
    dtype=np.float32,
)


def write_synthetic(
    root: Path,
    count: int = 400,
    seed: int = 0,
    test_fraction: float = 0.25,
    *,
    workers: int = 1,
    variant: str = "pet",
    size: tuple[int, int] | list[int] | None = None,
) -> Path:
    """Generate ``count`` pet-like images with trimaps into ``root`` (Oxford-IIIT Pet layout).

    Writes ``images/synth_<i>.jpg``, ``annotations/trimaps/synth_<i>.png``,
    ``annotations/trainval.txt`` and ``annotations/test.txt`` (lines like
    ``synth_12 1 1 1``), and last the marker file ``.segkit-synthetic.json``: a folder
    without the marker is an interrupted generation and is never reused. A seeded
    permutation puts ``round(test_fraction * count)`` images in ``test.txt``, the rest in
    ``trainval.txt``, each list in index order.

    Args:
        root: Folder to write; created if missing. It must be empty or hold only files of
            an earlier synthetic set (those are replaced).
        count: Number of images (at least 2).
        seed: Non-negative seed; the same seed gives identical files.
        test_fraction: Fraction of the images listed in ``test.txt``.
        workers: Processes rendering images in parallel (each image has its own random
            stream, so the files are the same for any number). A Pet-sized set (7349
            images) takes about 5 minutes on one core.
        variant: ``pet``, ``collar`` (pets wearing collars) or ``vessels`` (large images
            of thin structures; see the module docstring).
        size: ``(width, height)`` of every ``vessels`` image (default
            :data:`VESSEL_SIZE`); the pet variants draw their own sizes and refuse it.

    Returns:
        ``root``.

    Raises:
        ConfigError: ``count``, ``seed`` or ``test_fraction`` is out of range.
        DataError: ``root`` holds files that are not part of a synthetic set.
    """
    if count < 2:
        raise ConfigError(f"count={count}: a synthetic set needs at least 2 images")
    if seed < 0:
        raise ConfigError(f"seed={seed}: the seed must be a non-negative integer")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction={test_fraction}: expected a value between 0 and 1")
    if workers < 1:
        raise ConfigError(f"workers={workers}: expected 1 or more processes")
    _check_variant(variant)
    size = _check_size(variant, size)
    root = Path(root).expanduser()
    _clear_own_files(root)

    images = root / "images"
    trimaps = root / "annotations" / "trimaps"
    images.mkdir(parents=True, exist_ok=True)
    trimaps.mkdir(parents=True, exist_ok=True)
    workers = min(workers, count)
    collar: Any = variant == "collar"
    if variant == "vessels":
        collar = ("vessels", size)
    if workers == 1:
        _write_samples(root, seed, range(count), collar)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the caller may hold threads (torch's, a loader's) that a forked
        # child would inherit mid-lock. Interleaved chunks keep the processes equally busy.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            jobs = [
                pool.submit(_write_samples, root, seed, range(w, count, workers), collar)
                for w in range(workers)
            ]
            for job in jobs:
                job.result()

    n_test = min(count - 1, max(1, round(test_fraction * count)))
    order = np.random.default_rng([seed, 2**31]).permutation(count)
    test = set(order[:n_test].tolist())
    for name, keep in (("test.txt", True), ("trainval.txt", False)):
        lines = [f"synth_{i} 1 1 1\n" for i in range(count) if (i in test) == keep]
        (root / "annotations" / name).write_text("".join(lines))

    marker = {
        "generator": "segkit synthetic",
        "version": VERSION,
        "count": count,
        "seed": seed,
        "test_fraction": test_fraction,
        **({"variant": variant} if variant != "pet" else {}),
        **({"size": list(size)} if size is not None else {}),
    }
    (root / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return root


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ConfigError(f"variant={variant!r}: the synthetic variants are {', '.join(VARIANTS)}")


def _check_size(variant: str, size: Any) -> tuple[int, int] | None:
    """``size`` as ``(width, height)`` for the vessels variant (its default when None).

    Raises:
        ConfigError: a size for a pet variant, or not two whole numbers from 64 to 20000.
    """
    if variant != "vessels":
        if size is not None:
            raise ConfigError(
                f"size={size!r}: only variant='vessels' takes a size; the {variant} images "
                "draw their own (300-500 px)"
            )
        return None
    if size is None:
        return VESSEL_SIZE
    ok = (
        isinstance(size, list | tuple)
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 64 <= v <= 20000 for v in size)
    )
    if not ok:
        raise ConfigError(
            f"size={size!r}: expected [width, height] in pixels, each from 64 to 20000, "
            f"e.g. {named_options('dataset_options', {'size': [1500, 1100]})}"
        )
    return int(size[0]), int(size[1])


def _write_samples(root: Path, seed: int, indices: range, collar: Any = False) -> None:
    """Render and write the images and trimaps ``indices`` of the set ``seed``
    (``collar``: True for the collar variant, ``("vessels", size)`` for vessels)."""
    for i in indices:
        if isinstance(collar, tuple):
            rgb, trimap = render_vessels(seed, i, collar[1])
        else:
            rgb, trimap = render_sample(seed, i, collar=collar)
        Image.fromarray(rgb, "RGB").save(root / "images" / f"synth_{i}.jpg", quality=_JPEG_QUALITY)
        Image.fromarray(trimap, "L").save(root / "annotations" / "trimaps" / f"synth_{i}.png")


def _marker(root: Path) -> dict[str, Any] | None:
    """The marker of a finished set of this generator version in ``root``, else None."""
    try:
        marker = json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("version") != VERSION:
        return None
    if not isinstance(marker.get("count"), int) or not isinstance(marker.get("seed"), int):
        return None
    return marker


def is_complete(root: Path, count: int, seed: int, variant: str = "pet", size: Any = None) -> bool:
    """Whether ``root`` holds a finished synthetic set made with ``count``, ``seed``,
    ``variant`` and (vessels) ``size``."""
    marker = _marker(root)
    return (
        marker is not None
        and marker["count"] == count
        and marker["seed"] == seed
        and marker.get("variant", "pet") == variant
        and (size is None or marker.get("size") == list(size))
    )


def default_cache_dir(count: int, seed: int, variant: str = "pet", size: Any = None) -> Path:
    """``$SEGKIT_CACHE`` (or ``~/.cache/segkit``) ``/ synthetic-<count>-<seed>-v<VERSION>``
    (``synthetic-collar-...`` for the collar variant, ``synthetic-vessels-<W>x<H>-...``
    for vessels)."""
    name = "synthetic" if variant == "pet" else f"synthetic-{variant}"
    if size is not None:
        name += f"-{size[0]}x{size[1]}"
    return cache_dir() / f"{name}-{count}-{seed}-v{VERSION}"


class SyntheticPet(OxfordPet):
    """The synthetic set, generated on first use and then read like Oxford-IIIT Pet.

    If ``root`` does not hold a complete synthetic set (see :data:`MARKER`), one is
    generated into a temporary sibling folder and renamed into place, so an interrupted or
    concurrent run never sees a half-written set. A ``root`` given that holds a set made
    with another ``count``, ``seed`` or ``variant`` than asked is refused, never turned
    into the set asked for (the cache folders are named by their settings). After that it behaves exactly like :class:`OxfordPet` on ``root``, including the
    train/valid split rule.

    Args:
        root: Dataset folder; ``None`` means the cache folder
            ``$SEGKIT_CACHE/synthetic-<count>-<seed>-v<VERSION>`` (``$SEGKIT_CACHE`` defaults to
            ``~/.cache/segkit``).
        count: Number of images (default: what a set already in ``root`` holds, else
            :data:`DEFAULT_COUNT`).
        seed: Generator seed (default: that of a set already in ``root``, else 0).
        variant: ``pet`` (default: that of a set already in ``root``), ``collar``: pets
            wearing collars, with the targets of :data:`COLLAR_TARGETS` (default
            ``collar``: 3 classes), or ``vessels``: large images of thin structures
            (binary).
        size: ``[width, height]`` of the vessels images (default :data:`VESSEL_SIZE`).
        **oxford_options: Passed to :class:`OxfordPet` (``valid_fraction``,
            ``split_seed``, ``target``).

    Raises:
        ConfigError: ``count`` or ``seed`` is out of range.
        DataError: ``root`` holds other files than a synthetic set, or a set made with
            other settings (it is never overwritten then).
    """

    #: ``segkit data synth PATH`` calls ``generate(path, count=..., seed=...)`` (a declared
    #: capability; runs without ``--data`` use it through the cache folder).
    generate = staticmethod(write_synthetic)
    #: Options that only choose the set generated: a folder is read the same whatever
    #: they were (``variant`` chooses its classes, ``target`` and the split options how it
    #: is read), so ``segkit evaluate`` does not suggest them for another folder.
    generate_options = ("count", "seed", "size")
    #: Generated, never downloaded: Oxford-IIIT Pet's ``fetch`` is not inherited.
    fetch = None
    #: A generated set is in Oxford-IIIT Pet's layout, which ``oxford_pet`` recognises and
    #: reads; this plugin does not claim the folders it wrote (two layouts recognising one
    #: folder would make ``--data`` ambiguous).
    recognizes = None
    layout = None
    #: A folder missing a file is regenerated, not audited: there is nothing to report.
    audit = None

    def __init__(
        self,
        root: Path | None = None,
        count: int | None = None,
        seed: int | None = None,
        variant: str | None = None,
        size: Any = None,
        **oxford_options: Any,
    ) -> None:
        if variant is not None:
            _check_variant(variant)
        if root is None:
            count = DEFAULT_COUNT if count is None else count
            seed = 0 if seed is None else seed
            variant = variant or "pet"
            size = _check_size(variant, size)
            root = default_cache_dir(count, seed, variant, size)
        else:
            # A set written by `segkit data synth PATH --count N` is read as it is: the
            # count and seed not given come from its marker, so it is not regenerated.
            root = Path(root).expanduser()
            made = _marker(root)
            if made is not None:
                _check_same_set(root, made, count=count, seed=seed, variant=variant)
                count = made["count"] if count is None else count
                seed = made["seed"] if seed is None else seed
                variant = made.get("variant", "pet") if variant is None else variant
                if size is None and made.get("variant", "pet") == variant:
                    size = made.get("size")
            count = DEFAULT_COUNT if count is None else count
            seed = 0 if seed is None else seed
            variant = variant or "pet"
            size = _check_size(variant, size)
        if not is_complete(root, count, seed, variant, size):
            _generate_into_place(root, count, seed, variant, size)
        self.count = count
        self.seed = seed
        self.variant = variant
        self.size = size
        if variant == "collar":
            self.TARGETS = COLLAR_TARGETS
            oxford_options.setdefault("target", "collar")
        super().__init__(root, **oxford_options)


def _check_same_set(root: Path, made: dict[str, Any], **asked: Any) -> None:
    """Refuse to turn a set a user pointed ``--data`` at into another one: a folder
    written by ``segkit data synth`` is regenerated only when incomplete, never because a
    run (or a checkpoint's recorded options) asks for another count, seed or variant.

    Raises:
        DataError: naming the folder, what it holds and what was asked.
    """
    held = {
        "count": made.get("count"),
        "seed": made.get("seed"),
        "variant": made.get("variant", "pet"),
    }
    differ = [f"{k} {held[k]} -> {v}" for k, v in asked.items() if v is not None and v != held[k]]
    if differ:
        holds = ", ".join(f"{k} {v}" for k, v in held.items())
        raise DataError(
            f"{root}: holds a synthetic set ({holds}), and this asks for another "
            f"({'; '.join(differ)}); segkit does not overwrite a {named('data')} folder with "
            f"another set. Leave those {named('dataset_options')} values out to read it as it "
            f"is, or pass {named('data')} with a new folder (or none, for the cached sets)"
        )


def _generate_into_place(
    root: Path, count: int, seed: int, variant: str = "pet", size: Any = None
) -> None:
    """Generate a set in a temporary sibling of ``root`` and rename it to ``root``."""
    if root.exists():
        _check_own_folder(root)  # refuse before spending time on generation
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    # mkdir (not mkdtemp, which makes it private) so the set gets the user's umask.
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_synthetic(tmp, count=count, seed=seed, variant=variant, size=size)
        try:
            os.rename(tmp, root)  # atomic; fails if root exists and is not empty
            return
        except OSError:
            pass
        if is_complete(root, count, seed, variant, size):  # a concurrent run finished first
            return
        # root holds an outdated or interrupted set: move it aside, then swap.
        _check_own_folder(root)
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.rename(root, old / "set")
        os.rename(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _own_files(root: Path) -> tuple[list[Path], list[str]]:
    """Split the files under ``root`` into a synthetic set's files and any others."""
    own: list[Path] = []
    other: list[str] = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if _OWN_FILES.match(rel):
                own.append(path)
            else:
                other.append(rel)
    return own, other


def _remove_stale_temporaries(root: Path) -> None:
    """Remove temporary siblings of ``root`` left by killed runs (older than an hour).

    A generation takes seconds, so an hour-old temporary folder belongs to no live run.
    """
    cutoff = time.time() - 3600
    for pattern in (f".{root.name}.tmp-*", f".{root.name}.old-*"):
        for path in root.parent.glob(pattern):
            try:
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def _check_own_folder(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root}: exists and is not a folder; choose a new folder for the set")
    own, other = _own_files(root)
    if other:
        raise DataError(
            f"{root}: holds files that are not part of a synthetic set "
            f"(e.g. {sorted(other)[0]}); refusing to overwrite it. "
            "Choose an empty or new folder"
        )
    return own


def _clear_own_files(root: Path) -> None:
    if not root.exists():
        return
    own = _check_own_folder(root)
    marker = root / MARKER
    if marker.exists():  # first, so an interrupted rewrite is never taken as complete
        marker.unlink()
    for path in own:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- rendering


def render_sample(seed: int, index: int, *, collar: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Render image ``index`` of the set with ``seed``.

    With ``collar`` the pet wears a collar (its own random stream: everything else is
    the image without it, pixel for pixel before the lighting).

    Returns:
        ``(image (H, W, 3) uint8 RGB, trimap (H, W) uint8 in {1, 2, 3}, and 4 on the
        collar)``.
    """
    rng = np.random.default_rng([seed, index])
    w = int(rng.integers(300, 501))
    h = int(rng.integers(250, 501))

    coat = _COAT_PALETTE[rng.integers(len(_COAT_PALETTE))] + rng.normal(0, 18, 3)
    coat = np.clip(coat, 15, 240).astype(np.float32)

    pet, trimap, neck = _pet_mask(rng, w, h)
    image = _background(rng, w, h, coat)

    # Fur is rendered only in the pet's bounding box (plus the blur's reach): about half
    # the pixels of the frame on average, and its pattern scales with the pet.
    x0, y0, x1, y1 = pet.getbbox() or (0, 0, w, h)
    x0, y0, x1, y1 = max(x0 - 3, 0), max(y0 - 3, 0), min(x1 + 3, w), min(y1 + 3, h)
    fur = _fur(rng, x1 - x0, y1 - y0, coat)
    # A slightly soft outline, as in a photo; the trimap's border band covers it.
    soft = pet.crop((x0, y0, x1, y1)).filter(ImageFilter.GaussianBlur(0.8))
    alpha = np.asarray(soft, np.float32)[..., None] * (1.0 / 255.0)
    region = image[y0:y1, x0:x1]
    region += (fur - region) * alpha
    if collar:
        _put_collar(np.random.default_rng([seed, index, 1]), image, trimap, pet, neck)

    # Shared lighting and sensor noise: brightness alone does not tell pet from background.
    image *= 0.75 + 0.5 * _smooth_noise(rng, w, h, cells=3)
    image += rng.standard_normal((h, w, 1), dtype=np.float32) * 3.0
    return np.clip(image, 0, 255).astype(np.uint8), trimap


def _smooth_noise(
    rng: np.random.Generator, w: int, h: int, cells: float, channels: int = 1
) -> np.ndarray:
    """Low-frequency noise in about [0, 1], ``(h, w, channels)`` float32.

    A random grid with ``cells`` cells along the longer side, upsampled bicubically.
    """
    scale = cells / max(w, h)
    gw, gh = max(2, round(w * scale) + 1), max(2, round(h * scale) + 1)
    grid = rng.random((channels, gh, gw), dtype=np.float32)
    out = np.empty((h, w, channels), np.float32)
    for c in range(channels):
        up = Image.fromarray(grid[c], "F").resize((w, h), Image.Resampling.BICUBIC)
        out[..., c] = np.asarray(up)
    return out


def _ramp(w: int, h: int, angle: float) -> np.ndarray:
    """``x cos(angle) + y sin(angle)`` over the frame, ``(h, w)`` float32."""
    xs = np.arange(w, dtype=np.float32) * math.cos(angle)
    ys = np.arange(h, dtype=np.float32) * math.sin(angle)
    return ys[:, None] + xs[None, :]


def _random_colour(rng: np.random.Generator, saturation: tuple[float, float]) -> np.ndarray:
    """A random RGB colour, float32, desaturated by a random factor in ``saturation``."""
    c = rng.uniform(20, 236, 3).astype(np.float32)
    grey = c.mean()
    return grey + (c - grey) * rng.uniform(*saturation)


def _background(rng: np.random.Generator, w: int, h: int, coat: np.ndarray) -> np.ndarray:
    """A gradient with low-frequency noise and flat clutter shapes, ``(h, w, 3)`` float32."""
    # Muted colours, like rooms and gardens; the coat palette overlaps them.
    c1 = _random_colour(rng, (0.1, 0.7))
    c2 = _random_colour(rng, (0.1, 0.7))
    beta = rng.uniform(0, 2 * math.pi)
    t = _ramp(w, h, beta)
    t -= t.min()
    t /= max(float(t.max()), 1.0)
    bg = c1 + (c2 - c1) * t[..., None]
    bg += (_smooth_noise(rng, w, h, cells=rng.uniform(3, 7), channels=3) - 0.5) * 40

    canvas = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    side = min(w, h)
    for k in range(int(rng.integers(3, 9))):
        # The first shape takes the pet's own coat colour: colour alone must not decide.
        if k == 0 and rng.random() < _DECOY_P:
            colour = coat + rng.normal(0, 15, 3)
        else:
            colour = _random_colour(rng, (0.2, 1.0))
        r_, g_, b_ = np.clip(colour, 0, 255).astype(int).tolist()
        fill = (r_, g_, b_)
        sw, sh = rng.uniform(0.06, 0.35, 2) * side
        x, y = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([x - sw, y - sh, x + sw, y + sh], fill=fill)
        else:  # a rotated rectangle or a long thin bar
            if kind == 2:
                sh = sw * rng.uniform(0.05, 0.15)
            phi = rng.uniform(0, math.pi)
            u = (math.cos(phi), math.sin(phi))
            v = (-u[1], u[0])
            pts = [
                (x + a * sw * u[0] + b * sh * v[0], y + a * sw * u[1] + b * sh * v[1])
                for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))
            ]
            draw.polygon(pts, fill=fill)
    out = np.asarray(canvas, np.float32)
    out = out + (_smooth_noise(rng, w, h, cells=rng.uniform(10, 20)) - 0.5) * 25
    return out


def _fur(rng: np.random.Generator, w: int, h: int, coat: np.ndarray) -> np.ndarray:
    """A fur-like texture over the whole frame, ``(h, w, 3)`` float32 (masked later)."""
    # Mostly light and shade, a little hue drift: coats are not rainbow-coloured.
    fur = coat + (_smooth_noise(rng, w, h, cells=rng.uniform(4, 8), channels=3) - 0.5) * 20
    fur += (_smooth_noise(rng, w, h, cells=rng.uniform(4, 8)) - 0.5) * 45
    # Second coat colour for the pattern: darker, or a palette colour.
    if rng.random() < 0.6:
        second = coat * rng.uniform(0.25, 0.6)
    else:
        second = _COAT_PALETTE[rng.integers(len(_COAT_PALETTE))]
    pattern = rng.choice(3, p=[0.45, 0.35, 0.2])  # stripes, spots, plain
    if pattern == 0:
        period = max(6.0, rng.uniform(0.05, 0.12) * (w + h))
        t = _ramp(w, h, rng.uniform(0, math.pi)) / period
        t += _smooth_noise(rng, w, h, cells=4)[..., 0] * rng.uniform(0.5, 2.0)  # wavy
        mix = np.clip((np.sin(2 * np.pi * t) - 0.2) * 2.5, 0, 1)
    elif pattern == 1:
        spots = _smooth_noise(rng, w, h, cells=(w + h) / rng.uniform(25, 50))[..., 0]
        mix = np.clip((spots - 0.62) * 8, 0, 1)
    else:
        mix = None
    if mix is not None:
        strength = rng.uniform(0.6, 1.0)
        fur += (second - fur) * (mix[..., None] * strength)
    # Grain: noise at half resolution, upsampled, so it reads as hair rather than pixels.
    grain = rng.standard_normal((h // 2 + 1, w // 2 + 1), dtype=np.float32)
    grain_img = Image.fromarray(grain, "F").resize((w, h), Image.Resampling.BILINEAR)
    fur += np.asarray(grain_img)[..., None] * rng.uniform(6, 14)
    return fur


def _put_collar(
    rng: np.random.Generator,
    image: np.ndarray,
    trimap: np.ndarray,
    pet: Image.Image,
    neck: tuple[np.ndarray, np.ndarray, float],
) -> None:
    """Paint a collar across the pet's neck into ``image`` and mark it 4 in ``trimap``
    (inside the pet; the border band keeps 3)."""
    h, w = trimap.shape
    point, axis, size = neck
    across = np.array([-axis[1], axis[0]])
    half_len = size * 1.6
    half_w = max(2.0, size * rng.uniform(0.16, 0.26))
    centre = point + axis * size * rng.uniform(-0.15, 0.15)
    corners = [
        centre + a * half_w * axis + b * half_len * across
        for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]
    band = Image.new("L", (w, h), 0)
    ImageDraw.Draw(band).polygon([(float(x), float(y)) for x, y in corners], fill=255)
    on_pet = (np.asarray(band) != 0) & (np.asarray(pet) != 0)
    if not on_pet.any():  # the neck is out of frame
        return
    trimap[on_pet & (trimap == 1)] = COLLAR
    colour = _COLLAR_COLOURS[rng.integers(len(_COLLAR_COLOURS))] + rng.normal(0, 12, 3)
    soft = Image.fromarray(on_pet.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(0.7))
    alpha = np.asarray(soft, np.float32)[..., None] * (1.0 / 255.0)
    shade = 0.85 + 0.3 * rng.random((h, w, 1), dtype=np.float32)  # a little texture
    image += (np.clip(colour, 0, 255) * shade - image) * alpha


def _pet_mask(
    rng: np.random.Generator, w: int, h: int
) -> tuple[Image.Image, np.ndarray, tuple[np.ndarray, np.ndarray, float]]:
    """Draw a pet silhouette; return it (mode "L", 0/255), its trimap and its neck (see
    :func:`_draw_pet`).

    Poses are drawn until the pet (with its border band) covers 12-75% of the frame, so
    every image has a usable target while some pets still leave the frame.
    """
    band = int(rng.integers(1, 3))  # border band = dilation minus erosion: 2 or 4 px
    for _ in range(50):
        pet, neck = _draw_pet(rng, w, h)
        inside = np.asarray(pet) != 0
        outer = _dilate(inside, band)
        fraction = np.count_nonzero(outer) / outer.size
        if _MIN_COVERAGE <= fraction <= 0.75:
            break
    inner = ~_dilate(~inside, band)
    trimap = np.full((h, w), 3, np.uint8)
    trimap[~outer] = 2
    trimap[inner] = 1
    return pet, trimap, neck


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a ``(2r+1)`` square, as two separable passes of shifted ORs.

    About 20 times faster than PIL's ``MaxFilter`` (a generic rank filter) here.
    """
    rows = m.copy()
    for k in range(1, r + 1):
        rows[k:] |= m[:-k]
        rows[:-k] |= m[k:]
    out = rows.copy()
    for k in range(1, r + 1):
        out[:, k:] |= rows[:, :-k]
        out[:, :-k] |= rows[:, k:]
    return out


def _draw_pet(
    rng: np.random.Generator, w: int, h: int
) -> tuple[Image.Image, tuple[np.ndarray, np.ndarray, float]]:
    """Body ellipse, head, two ears, maybe tail and legs, in a random pose. Also returns
    the neck: a point where head and body meet, the unit direction body -> head, and the
    head radius (for the collar variant; drawing it takes no random numbers)."""
    # The pet's length (body + head) is 20-60% of the frame's width + height; then its
    # area is roughly 5-45% of the frame.
    length = rng.uniform(0.2, 0.6) * (w + h)
    a = length / 3.2  # body semi-major axis
    b = a * rng.uniform(0.5, 0.8)  # body semi-minor axis
    r = b * rng.uniform(0.75, 1.1)  # head radius
    theta = rng.uniform(0, 2 * math.pi)
    d = np.array([math.cos(theta), math.sin(theta)])  # body axis, towards the head
    side = 1.0 if rng.random() < 0.5 else -1.0
    up = side * np.array([-d[1], d[0]])  # where the ears point
    if rng.random() < 0.75:
        c = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])
    else:  # partly out of frame
        c = np.array([rng.uniform(-0.05, 1.05) * w, rng.uniform(-0.05, 1.05) * h])

    def at(u: float, v: float) -> tuple[float, float]:
        p = c + u * d + v * up
        return (float(p[0]), float(p[1]))

    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    draw.polygon([at(a * math.cos(s), b * math.sin(s)) for s in t], fill=255)

    hu, hv = a * rng.uniform(0.75, 0.95) + r * 0.4, b * rng.uniform(0.1, 0.6)
    ry = r * rng.uniform(0.85, 1.0)
    draw.polygon([at(hu + r * math.cos(s), hv + ry * math.sin(s)) for s in t[::2]], fill=255)
    tilt = rng.uniform(-0.2, 0.5)  # ears lean forward a little
    for k in (-1.0, 1.0):
        psi = math.pi / 2 - tilt + k * rng.uniform(0.35, 0.75)
        half = rng.uniform(0.25, 0.4)
        reach = r * rng.uniform(1.45, 1.9)
        pts = [
            at(hu + 0.85 * r * math.cos(psi - half), hv + 0.85 * ry * math.sin(psi - half)),
            at(hu + reach * math.cos(psi), hv + reach * math.sin(psi)),
            at(hu + 0.85 * r * math.cos(psi + half), hv + 0.85 * ry * math.sin(psi + half)),
        ]
        draw.polygon(pts, fill=255)

    if rng.random() < 0.6:  # tail: a curved thick line from the back
        bend = rng.uniform(0.2, 1.3) * (1.0 if rng.random() < 0.8 else -1.0)  # mostly up
        step = a * rng.uniform(0.6, 1.2) / 3
        p = np.array(at(-a * 0.85, b * 0.2))
        pts = [p]
        for j in (1, 2, 3):
            ang = math.pi - bend * j / 3
            p = p + step * (math.cos(ang) * d + math.sin(ang) * up)
            pts.append(p)
        draw.line(
            [(float(q[0]), float(q[1])) for q in pts],
            fill=255,
            width=max(2, int(b * rng.uniform(0.15, 0.3))),
            joint="curve",
        )

    if rng.random() < 0.6:  # legs below the body
        width = max(2, int(b * rng.uniform(0.22, 0.35)))
        for u in rng.uniform(-0.65, 0.65, int(rng.integers(2, 5))):
            leg = b * rng.uniform(0.7, 1.4)
            draw.line([at(u * a, -0.5 * b), at(u * a, -0.5 * b - leg)], fill=255, width=width)
    head = np.array(at(hu, hv))
    towards = head - c
    axis = towards / max(float(np.linalg.norm(towards)), 1e-6)
    neck = head - axis * r * 0.95
    return mask, (neck, axis, float(r))


# ----------------------------------------------------------------------------- vessels


def render_vessels(
    seed: int, index: int, size: tuple[int, int] = VESSEL_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Render image ``index`` of the ``vessels`` set with ``seed``: ``size`` (width,
    height), 3-6 branching trees of smooth random-walk curves 2-4 px wide (narrower down
    the branches), darker than a shaded, grainy background with unlabelled dark spots.

    Returns:
        ``(image (H, W, 3) uint8 RGB, trimap (H, W) uint8: 1 vessel, 2 background)``.
    """
    rng = np.random.default_rng([seed, index, 3])
    w, h = size
    # A fundus-like warm background, or a grey one, with shading and texture.
    tint = np.array([200, 110, 70], np.float32) if rng.random() < 0.5 else np.full(3, 150.0)
    tint = np.clip(tint + rng.normal(0, 15, 3), 40, 230).astype(np.float32)
    shade = 0.7 + 0.5 * _smooth_noise(rng, w, h, cells=rng.uniform(2, 4))
    bg = tint * shade
    bg += (_smooth_noise(rng, w, h, cells=rng.uniform(20, 40), channels=3) - 0.5) * 30
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    side = min(w, h)
    for _ in range(int(rng.integers(3, 7))):
        start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        _draw_vessel(rng, draw, start, rng.uniform(0, 2 * math.pi), side, 4.0, depth=0)
    vessels = np.asarray(mask) > 0
    # Vessels are darker (by 30-50%), their edges softened as a lens would.
    soft = np.asarray(mask.filter(ImageFilter.GaussianBlur(0.6)), np.float32) / 255.0
    depth = rng.uniform(0.3, 0.5)
    image = bg * (1.0 - depth * soft[..., None])
    # Unlabelled dark spots: darkness alone does not make a vessel, shape does.
    spots = Image.new("L", (w, h), 0)
    sd = ImageDraw.Draw(spots)
    for _ in range(int(rng.integers(20, 60))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, 7)
        sd.ellipse([x - r, y - r, x + r, y + r], fill=255)
    spot = np.asarray(spots.filter(ImageFilter.GaussianBlur(1.0)), np.float32) / 255.0
    image *= 1.0 - rng.uniform(0.25, 0.45) * spot[..., None]
    image += rng.standard_normal((h, w, 1), dtype=np.float32) * 4.0
    trimap = np.where(vessels, 1, 2).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), trimap


def _draw_vessel(
    rng: np.random.Generator,
    draw: ImageDraw.ImageDraw,
    start: np.ndarray,
    angle: float,
    side: int,
    width: float,
    depth: int,
) -> None:
    """One vessel from ``start``: a random walk of 6-px steps whose heading drifts
    smoothly, ``width`` px wide (2-4), with up to three narrower branches (two levels)."""
    steps = int(rng.uniform(0.4, 1.0) * side / 6 / (1 + depth))
    turns = np.cumsum(rng.normal(0, 0.06, steps)) + angle
    turns += np.cumsum(rng.normal(0, 0.01, steps))  # slow bends
    xy = start + np.cumsum(6.0 * np.stack([np.cos(turns), np.sin(turns)], 1), axis=0)
    points = [tuple(p) for p in np.vstack([start, xy]).tolist()]
    px = max(2, min(4, round(width)))
    draw.line(points, fill=255, width=px, joint="curve")
    if depth >= 2 or steps < 10:
        return
    for _ in range(int(rng.integers(1, 4))):
        at = int(rng.integers(steps // 5, steps))
        branch = turns[at] + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)
        _draw_vessel(rng, draw, xy[at], float(branch), side, width - 1, depth + 1)
