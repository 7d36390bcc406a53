"""The contract of each plugin kind: the manual for plugin authors.

segkit finds plugins through six entry-point groups. An entry point names an object
(``module:attribute``); what that object must be depends on the group. The registry
compares each factory's signature with its kind's :data:`CONTRACTS` when the plugin is
first loaded (``segkit list --check`` loads them all), so a factory that lacks a
parameter segkit passes is reported by name, before any run.

``segkit.models`` -- a **model factory**::

    @declare(min_input_multiple=32)
    def create_mymodel(in_channels: int = 3, out_channels: int = 1, **options) -> nn.Module

  The module maps ``(N, in_channels, H, W)`` float images to ``(N, out_channels, H, W)``
  **logits** (no sigmoid inside: losses and metrics apply it, which keeps BCE safe under
  autocast). The factory declares ``min_input_multiple`` (H and W must be divisible by
  it; default 1): an int, or a function of the factory's options returning one, read
  without building the model. Every model must accept any H, W divisible by 32 (so
  ``min_input_multiple`` divides 32). segkit checks the image size against it before
  training and attaches the input check to every model it builds: other sizes raise
  :class:`segkit.errors.ConfigError` naming the size and a size that works.
  Unknown ``options`` must raise ``TypeError`` (the default for keyword arguments).
  Shared option names: ``encoder`` (a backbone name) and ``weights`` (initial weights:
  a file path, or a name such as "imagenet"); ``segkit run --encoder/--weights`` set
  them, and segkit leaves ``weights`` out when it rebuilds a model to load a checkpoint.

``segkit.losses`` -- a **loss factory**::

    def create_myloss(**options) -> nn.Module   # module(logits, target) -> scalar tensor

  ``logits`` is ``(N, 1, H, W)`` in any float dtype (bf16/fp16 under autocast),
  ``target`` the same shape with values in {0, 1}. Compute reductions in float32.
  A factory declares which targets its loss takes, ``@declare(accepts=...)``:
  ``"binary"`` (the default, the shapes above), ``"multiclass"`` (logits
  ``(N, K, H, W)`` with ``K >= 2``, target an integer ``(N, H, W)`` class map) or
  ``"both"``; :func:`loss_accepts` reads it.

``segkit.recipes`` -- an **augmentation recipe factory**::

    def myrecipe(image_size: int = 256) -> segkit.recipes.Recipe

  A recipe is data: a tuple of ops from :mod:`segkit.recipes` for training and one for
  evaluation. It carries no backend code; every loader compiles it. (The group's old
  name, ``segkit.augmentations``, is still read.)

``segkit.loaders`` -- a **loader factory**; see :class:`LoaderFactory`.

``segkit.ops`` -- an **op class**, a recipe op a plugin adds to segkit's own::

    @dataclass(frozen=True)
    class Posterize(segkit.recipes.Op):   # registered under its class name: Posterize
        bits: int = 4
        loaders: ClassVar[tuple[str, ...]] = ("mine",)

  A recipe (a plugin's, or a recipe file's ``op = "Posterize"``) may then hold it. It
  declares ``loaders``, the loaders that run it (each must know it: a loader refuses an
  op it does not, in one line naming the op's loaders). A class that is not a dataclass
  overrides ``parameter_types`` and ``params``; one that reads files named in a recipe
  file overrides ``file_parameters``. See :class:`segkit.recipes.Op`.

``segkit.datasets`` -- a **dataset class** (or factory) called with the data root and
returning a :class:`Dataset`; see :class:`DatasetFactory`. A dataset that can make its
own data declares ``generate``; one that can download it declares ``fetch``. A layout
that a ``--data`` folder may be in declares ``recognizes`` and ``layout``, so a run
without ``--dataset`` finds it; ``audit``, ``declare_classes`` and ``declare_ignore``
let ``segkit data check`` list every problem at once and say how to name the classes
(and the ignored pixels) it finds.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

from segkit.errors import ConfigError, DataError

if TYPE_CHECKING:  # torch is imported lazily so `segkit --help` stays fast
    import torch

Split = Literal["train", "valid", "test"]

#: Split names every dataset understands.
SPLITS: tuple[str, ...] = get_args(Split)


#: The class-map value of an ignored pixel ("void" in VOC and Cityscapes): losses leave it
#: out, metrics do not count it. Class maps are uint8, so a dataset has at most 255 classes.
IGNORE_INDEX = 255

#: Display colours of classes 0.. when a dataset declares no palette (VOC's first colours
#: after black, then a spread of hues).
DEFAULT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
)


@dataclass(frozen=True)
class MaskSpec:
    """How a dataset's mask files encode the target: binary, or K classes.

    **Binary** (no ``classes``): a pixel is foreground when its raw value is not
    ``background``; ``allowed`` lists the raw values a valid mask file may hold. Loaders
    apply this rule themselves (the DALI loader inside its graph), so it stays this simple.

    **Multi-class** (``classes`` names K >= 2 classes): ``class_index`` gives, for each raw
    value in ``allowed`` (same order), its class in ``0..K-1`` or :data:`IGNORE_INDEX`
    (a pixel to ignore), so several raw values may share a class. The target is then an
    integer class map. Build one with :meth:`multiclass`. ``palette`` holds one RGB colour
    per class: the colours of reports and palette PNGs, and the colours that RGB mask files
    are decoded with (a mask file in RGB holds class colours; ``ignore_color`` is the colour
    of ignored pixels there). ``background`` is the class-0 raw value (unused by the rule).

    Attributes:
        background: Raw value meaning background (2 in Oxford-IIIT Pet trimaps).
        allowed: Raw values a mask file may hold, e.g. ``(1, 2, 3)`` for trimaps.
        classes: Class names, class 0 first; empty for a binary dataset.
        class_index: The class of each ``allowed`` value (multi-class only).
        palette: One ``(r, g, b)`` per class (multi-class only; empty: the default).
        ignore_color: The colour of ignored pixels in RGB mask files, if any.
    """

    background: int
    allowed: tuple[int, ...]
    classes: tuple[str, ...] = ()
    class_index: tuple[int, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    ignore_color: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if not self.classes:
            if self.class_index or self.palette or self.ignore_color is not None:
                raise ConfigError(
                    "MaskSpec: class_index, palette and ignore_color describe classes; a binary "
                    "mask spec (no classes) has none. Name the classes, or leave them out"
                )
            return
        k = len(self.classes)
        if not 2 <= k <= IGNORE_INDEX:
            raise ConfigError(
                f"MaskSpec: {k} classes; a multi-class dataset has 2 to {IGNORE_INDEX} "
                "(a binary one names none)"
            )
        if len(set(self.classes)) != k or not all(isinstance(c, str) and c for c in self.classes):
            raise ConfigError(
                f"MaskSpec: class names {list(self.classes)} must be distinct and non-empty"
            )
        if len(self.class_index) != len(self.allowed):
            raise ConfigError(
                f"MaskSpec: class_index has {len(self.class_index)} entries for "
                f"{len(self.allowed)} allowed values; give one class per allowed raw value"
            )
        bad = [c for c in self.class_index if not (0 <= c < k or c == IGNORE_INDEX)]
        if bad:
            raise ConfigError(
                f"MaskSpec: class_index holds {bad}; expected classes 0..{k - 1} or "
                f"{IGNORE_INDEX} (ignore)"
            )
        if len(set(self.allowed)) != len(self.allowed):
            raise ConfigError(f"MaskSpec: allowed {list(self.allowed)} repeats a value")
        if self.palette and len(self.palette) != k:
            raise ConfigError(
                f"MaskSpec: palette has {len(self.palette)} colours for {k} classes; "
                "give one (r, g, b) per class"
            )
        for colour in (*self.palette, *([self.ignore_color] if self.ignore_color else [])):
            if len(colour) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in colour):
                raise ConfigError(f"MaskSpec: colour {colour!r} is not (r, g, b) in 0..255")
        if self.ignore_color is not None and not self.has_ignore:
            raise ConfigError(
                f"MaskSpec: ignore_color {self.ignore_color} needs a raw value that means "
                f"ignore (class_index {IGNORE_INDEX}); declare one"
            )
        colours = list(self.palette) + ([self.ignore_color] if self.ignore_color else [])
        if len(set(map(tuple, colours))) != len(colours):
            raise ConfigError(f"MaskSpec: the palette {colours} repeats a colour")

    @classmethod
    def multiclass(
        cls,
        classes: Sequence[str],
        *,
        values: Sequence[int] | None = None,
        ignore: int | Sequence[int] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_color: Sequence[int] | None = None,
    ) -> MaskSpec:
        """A K-class spec: raw value ``values[c]`` (default ``c``) is class ``c``, and the
        raw value(s) ``ignore`` (e.g. 255) are ignored pixels."""
        values = list(range(len(classes))) if values is None else [int(v) for v in values]
        if len(values) != len(classes):
            raise ConfigError(
                f"MaskSpec: {len(values)} raw values for {len(classes)} classes; give one each"
            )
        if ignore is None and ignore_color is not None and IGNORE_INDEX not in values:
            ignore = IGNORE_INDEX  # the colour of ignored pixels decodes to this raw value
        ignored = [] if ignore is None else [ignore] if isinstance(ignore, int) else list(ignore)
        return cls(
            background=values[0],
            allowed=tuple(values) + tuple(ignored),
            classes=tuple(classes),
            class_index=tuple(range(len(values))) + (IGNORE_INDEX,) * len(ignored),
            palette=tuple(tuple(int(v) for v in c) for c in palette) if palette else (),
            ignore_color=tuple(int(v) for v in ignore_color) if ignore_color else None,
        )

    @property
    def is_multiclass(self) -> bool:
        """Whether the target is a class map (K >= 2 named classes)."""
        return bool(self.classes)

    @property
    def num_classes(self) -> int:
        """Output channels a model needs: 1 for binary, K for K classes."""
        return len(self.classes) if self.classes else 1

    @property
    def has_ignore(self) -> bool:
        """Whether some raw value means "ignore this pixel"."""
        return IGNORE_INDEX in self.class_index

    @property
    def ignore_values(self) -> tuple[int, ...]:
        """The raw values that mean "ignore this pixel" (``(255,)``; none without ignore,
        and none for a binary spec, which maps no value to a class)."""
        if not self.class_index:  # binary
            return ()
        pairs = zip(self.allowed, self.class_index, strict=True)
        return tuple(v for v, c in pairs if c == IGNORE_INDEX)

    def colors(self) -> tuple[tuple[int, int, int], ...]:
        """One display colour per class (the palette, or :data:`DEFAULT_PALETTE`'s)."""
        if self.palette:
            return self.palette
        k = self.num_classes
        base = DEFAULT_PALETTE
        return tuple(base[c % len(base)] for c in range(k))

    def lookup(self) -> dict[int, int]:
        """Raw value -> target value: the class (or :data:`IGNORE_INDEX`) for multi-class,
        0/1 by the background rule for binary."""
        if self.classes:  # equal lengths (checked); no strict=: DALI's graph calls this
            return {v: self.class_index[i] for i, v in enumerate(self.allowed)}
        return {v: int(v != self.background) for v in self.allowed}

    def describe(self) -> dict[str, Any]:
        """The classes as run folders and checkpoints record them (JSON-ready); ``{}``
        for a binary spec."""
        if not self.classes:
            return {}
        return {
            "classes": list(self.classes),
            "palette": [list(c) for c in self.colors()],
            "ignore_index": IGNORE_INDEX if self.has_ignore else None,
        }


@dataclass(frozen=True)
class Sample:
    """One image and its mask file."""

    id: str
    image: Path
    mask: Path


@runtime_checkable
class Dataset(Protocol):
    """A layout reader: files and split lists in, samples out.

    Attributes:
        root: The dataset folder.
        mask_spec: How mask files encode the target (binary, or K named classes).

    Optional: ``split_lists: bool``, whether files listing the samples' names (split
    lists) choose the samples, so that a file that cannot be decoded is left out by
    removing its name from its list (true) or by deleting it (false); unset, the advice
    fits any layout (see :func:`segkit.data.reading.fit_advice`).
    """

    root: Path
    mask_spec: MaskSpec

    def samples(self, split: str) -> list[Sample]:
        """Return the samples of ``split`` ("train", "valid" or "test"), in a fixed order.

        Raises:
            segkit.errors.DataError: the split list or a file it names is missing, or the
                split is empty. The message names the file.
        """
        ...


class DatasetFactory(Protocol):
    """What a ``segkit.datasets`` entry point names: ``factory(root, **options)``.

    ``root`` may be ``None`` only for datasets that can make their own data (those that
    declare ``generate``); others raise :class:`segkit.errors.DataError`.

    Optional capabilities, declared as attributes of the factory (class attributes with
    ``staticmethod``, or :func:`declare`):

    * ``generate(root: Path, count: int, seed: int) -> Path``: write a dataset of
      ``count`` samples made from ``seed`` into ``root``, in the layout the factory reads.
      ``segkit data synth`` calls it; a run without ``--data`` uses the default generating
      dataset.
    * ``generate_options: tuple[str, ...]``: the options that only choose what the
      factory generates (how many samples, the seed, their size), as opposed to those
      that change how a folder is read (its classes, its splits). Where a checkpoint's
      ``--dataset-opt`` values are suggested for reading another folder (``segkit
      evaluate --data`` on data with other classes), these are left out. Default ``()``.
    * ``fetch(root: Path, base_url: str | None = None) -> Path``: download and unpack the
      dataset into ``root`` (``segkit data fetch``). Nothing else in segkit downloads.
    * ``recognizes(root: Path) -> bool``: whether the folder ``root`` is laid out as this
      factory reads it, from its folder and file names alone (cheap, never raises). With
      ``--data`` and no ``--dataset``, segkit uses the one installed layout that
      recognizes the folder (:func:`segkit.data.layouts.detect_layout`); none, or two,
      and the run is refused with every layout's ``layout`` text. Declare it only for
      a layout a user's folder may be in (a generating dataset that reads another
      plugin's layout declares ``recognizes = None``).
    * ``layout: str``: the layout in one line, for that refusal, e.g.
      ``"images/<name>.jpg + masks/<name>.png"``.
    * ``near_miss(root: Path) -> str | None``: for a folder no layout recognizes, what
      keeps this layout from reading it where the folder comes close (images, but no
      masks anywhere it looks: say so and where it looked), in a line or two naming
      ``root``; None otherwise. The refusal then leads with it. Cheap, never raises.
    * ``audit(root: Path, **options) -> LayoutAudit``: what ``factory(root, **options)``
      reads, without stopping at the first problem: every file it would refuse (an image
      without its mask, naming the files with a close name; a split list naming a
      missing file), every file it leaves unread, and the samples it can pair. ``segkit
      data check`` uses it to list every problem in one pass. It raises only where the
      factory cannot start at all (no such folder, a malformed option).
    * ``declare_classes(root: Path, classes: list[str], palette: list[tuple[int, int,
      int]] | None) -> str``: how a user declares these classes (and their colours, when
      the masks are colour images) for the folder ``root`` in this layout, as words to
      print, e.g. the ``classes.txt`` to write. ``segkit data check`` and a run refused
      for mask values print it when the masks hold classes the dataset does not declare.
      A factory whose ``declare_classes`` also takes ``values: list[int] | None = None``
      (each class's grey value in the masks, for masks of ``0, 50, 100, ...``) gets them
      where the masks' classes are not ``0..K-1``.
    * ``declare_ignore(root: Path, colour: tuple[int, int, int], **options) -> str``: how a
      user declares ``colour`` the colour of ignored pixels in the RGB masks of the folder
      ``root`` read with these dataset ``options``, in the layout's own files (the
      ``classes.txt`` ``ignore`` line), as words to print; ``""`` where the layout reads
      no such file with those options. ``segkit data check`` and a run refused for a colour
      outside the palette offer it, before the ``ignore_color`` option where the factory
      takes one.
    """

    def __call__(self, root: Path | None, **options: Any) -> Dataset: ...


@dataclass
class LayoutAudit:
    """What a dataset factory's ``audit(root, **options)`` found (see
    :class:`DatasetFactory`). It is itself a :class:`Dataset` over the samples the layout
    could pair, so ``segkit data check`` reads those while it reports the rest.

    Attributes:
        root: The dataset folder.
        mask_spec: The mask spec ``factory(root, **options)`` would have.
        splits: Split name -> the samples of that split whose files exist (a split that
            could not be read at all is empty, and its reason is in ``problems``).
        problems: ``(file, message)`` for each thing that would stop a run, every one of
            them, each message naming its file and the fix.
        skipped: ``(file, why)`` for each file in the layout's folders that it does not
            read (outside every split list, another extension, a hidden file).
        advice: Fixes of many problems at once, as words to print (a command that renames
            every mask named ``<name>_mask.png``).
        split_lists: The dataset's ``split_lists`` (see :class:`Dataset`); None: unknown.
    """

    root: Path
    mask_spec: MaskSpec
    splits: dict[str, list[Sample]]
    problems: list[tuple[Path, str]]
    skipped: list[tuple[Path, str]]
    advice: list[str] = field(default_factory=list)
    split_lists: bool | None = None

    def samples(self, split: str) -> list[Sample]:
        """The samples of ``split`` the layout could pair (possibly none)."""
        check_split(split)
        return list(self.splits.get(split, []))


@dataclass(frozen=True)
class Batch:
    """What a loader yields: ``images`` float ``(N, 3, H, W)`` normalized; ``masks``, for a
    binary dataset, float ``(N, 1, H, W)`` holding exactly 0.0 and 1.0, and for a
    multi-class one (``mask_spec.classes``) an integer ``(N, H, W)`` class map (uint8 is
    enough: values ``0..K-1`` and :data:`IGNORE_INDEX`). Both on the loader's device (or
    on the CPU in pinned memory, for the engine to move with ``non_blocking=True``)."""

    images: torch.Tensor
    masks: torch.Tensor


class Loader(Protocol):
    """An iterable of :class:`Batch` with a length (batches per epoch)."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle and augmentation for ``epoch`` (same epoch, same batches)."""
        ...


class RecipeOps(Protocol):
    """What a loader reads of the recipe it is given (a :class:`segkit.recipes.Recipe`,
    which builds on these contracts, so it is not imported here): the ops of a stage, a
    sequence of :class:`segkit.recipes.Op`."""

    def ops(self, train: bool) -> Sequence[Any]:
        """The training ops (``train=True``) or the evaluation ops, in order."""
        ...


class LoaderFactory(Protocol):
    """What a ``segkit.loaders`` entry point names.

    Args:
        dataset: Where the samples come from.
        split: "train", "valid" or "test".
        recipe: The augmentation recipe; the loader compiles ``recipe.ops(train)``: the
            training ops when ``train`` is true, the evaluation ops otherwise.
        batch_size: Images per batch. The last partial batch is kept unless
            ``drop_last``.
        train: Shuffle each epoch and apply the training ops.
        seed: Base seed; with the same seed and epoch a loader yields the same batches.
        num_workers: Worker processes or threads for decoding and augmentation.
        device: Where the engine will train; a loader may place batches there.
        shard: ``(rank, world_size)``: this loader reads a disjoint 1/world_size of the
            samples.
        drop_last: Drop the last partial batch.
    """

    def __call__(
        self,
        dataset: Dataset,
        split: str,
        recipe: RecipeOps,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        num_workers: int = 0,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
        drop_last: bool = False,
    ) -> Loader: ...


def check_split(split: str) -> None:
    """Raise a :class:`~segkit.errors.ConfigError` unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")


def check_samples(samples: Sequence[Sample], split: str, source: Path) -> list[Sample]:
    """Return ``samples`` as a list, refusing an empty split with a message naming ``source``."""
    if not samples:
        raise DataError(
            f"{source}: split '{split}' has no samples; "
            "add sample names to the split list or point --data at another dataset"
        )
    return list(samples)


def check_disjoint(lists: dict[Path, Sequence[str]]) -> None:
    """Refuse split lists that share a name: a test image listed for training too would
    inflate every test score. Raises a :class:`~segkit.errors.DataError` naming both files,
    the first shared name and how many there are."""
    seen: dict[str, Path] = {}
    for path, names in lists.items():
        shared = [n for n in dict.fromkeys(names) if n in seen and seen[n] != path]
        if shared:
            other = seen[shared[0]]
            more = f" ({len(shared) - 1} more names are in both)" if len(shared) > 1 else ""
            raise DataError(
                f"{path}: '{shared[0]}' is listed in {other} too{more}; a sample must be in "
                "one split only, or its test score measures what the model was trained on"
            )
        for n in names:
            seen.setdefault(n, path)


def check_input_size(model: str, x: torch.Tensor, multiple: int) -> None:
    """Raise a :class:`~segkit.errors.ConfigError` unless ``x``'s height and width are
    multiples of ``multiple``. segkit runs it before every forward of the models it
    builds (:func:`attach_input_check`); a model used on its own may call it too.

    Args:
        model: The model's name, for the message (e.g. ``"unet"``).
        x: An ``(N, C, H, W)`` batch.
        multiple: What H and W must be divisible by (the model's ``min_input_multiple``).

    Raises:
        ConfigError: H or W is not divisible by ``multiple``. The message names the size
            given and the nearest larger size that works (padding needs a larger one,
            and resizing to it keeps the most detail).
    """
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        fixed = (-(-height // multiple) * multiple, -(-width // multiple) * multiple)
        raise ConfigError(
            f"{model}: input height={height}, width={width} is not divisible by {multiple}; "
            f"resize or pad your images to ({fixed[0]}, {fixed[1]})"
        )


def attach_input_check(model: torch.nn.Module, label: str, multiple: int | None) -> int:
    """Check the input size before every forward of ``model`` (a forward pre-hook), so
    a wrong size fails with :func:`check_input_size`'s message instead of a shape error
    deep in the decoder. Also sets ``model.min_input_multiple``.

    Args:
        model: The model a factory built.
        label: The model in messages, e.g. ``"unet"``.
        multiple: What the factory declares (:func:`declared_multiple`); None when it
            declares nothing, and then an older plugin's model may say it itself (else 1).

    Returns:
        The multiple the check enforces.
    """
    if multiple is None:
        multiple = int(getattr(model, "min_input_multiple", 1))
    model.min_input_multiple = multiple  # type: ignore[assignment]
    if multiple == 1:
        return multiple

    def hook(_: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if args and hasattr(args[0], "shape"):
            check_input_size(label, args[0], multiple)

    model.register_forward_pre_hook(hook)
    return multiple


# ----------------------------------------------------------------------------- factories


@dataclass(frozen=True)
class FactoryContract:
    """How segkit calls the factories of one kind.

    Attributes:
        positional: Arguments passed by position, in order.
        keywords: Arguments passed by keyword.
        call: The call as a plugin author reads it, for messages.
        capabilities: Attributes a factory may declare, with their default (``None``:
            the capability is absent).
    """

    positional: tuple[str, ...]
    keywords: tuple[str, ...]
    call: str
    capabilities: tuple[tuple[str, Any], ...] = ()


#: Plugin kind -> its factory contract.
CONTRACTS: dict[str, FactoryContract] = {
    "models": FactoryContract(
        (),
        ("in_channels", "out_channels"),
        "factory(in_channels=3, out_channels=1, **options) -> nn.Module",
        (("min_input_multiple", 1),),
    ),
    "losses": FactoryContract(
        (), (), "factory(**options) -> loss(logits, target)", (("accepts", "binary"),)
    ),
    "recipes": FactoryContract((), ("image_size",), "factory(image_size=256) -> Recipe"),
    "loaders": FactoryContract(
        ("dataset", "split", "recipe", "batch_size"),
        ("train", "seed", "num_workers", "device", "shard", "drop_last"),
        "factory(dataset, split, recipe, batch_size, *, train, seed, num_workers, device, "
        "shard, drop_last) -> Loader",
    ),
    "datasets": FactoryContract(
        ("root",),
        (),
        "factory(root, **options) -> Dataset",
        (
            ("generate", None),
            ("fetch", None),
            ("recognizes", None),
            ("layout", None),
            ("audit", None),
            ("declare_classes", None),
            ("declare_ignore", None),
            ("near_miss", None),
            ("generate_options", ()),
        ),
    ),
    # An op is a class called with its parameters; what is checked is what it declares
    # (contract_problems), not a signature segkit calls it with.
    "ops": FactoryContract(
        (), (), "class NAME(segkit.recipes.Op) declaring loaders = ('loader', ...)"
    ),
}


def declare(**capabilities: Any) -> Callable[[Any], Any]:
    """Declare capabilities on a factory, read by segkit without calling it::

        @declare(min_input_multiple=32)
        def create_mymodel(in_channels=3, out_channels=1): ...

    A capability may also be a plain attribute of the factory (``create_mymodel.
    min_input_multiple = 32``, or a class attribute of a dataset class).

    Raises:
        ValueError: a name that is no kind's capability.
    """
    known = {name for c in CONTRACTS.values() for name, _ in c.capabilities}
    unknown = sorted(set(capabilities) - known)
    if unknown:
        raise ValueError(f"unknown capabilities {unknown}; known: {sorted(known)}")

    def mark(factory: Any) -> Any:
        for name, value in capabilities.items():
            setattr(factory, name, value)
        return factory

    return mark


def capability(kind: str, factory: Any, name: str) -> Any:
    """The capability ``name`` a factory of ``kind`` declares, or its default."""
    default = dict(CONTRACTS[kind].capabilities)[name]
    return getattr(factory, name, default)


def contract_problems(kind: str, factory: Any) -> list[str]:
    """What keeps ``factory`` from being called as its kind's contract calls it.

    Compares the signature with :data:`CONTRACTS` (as pluggy verifies a hook
    implementation against its specification): every argument segkit passes must be
    accepted, by position or by name as segkit passes it, and every parameter segkit does
    not pass needs a default. Declared capabilities must have the right type. A factory
    without a readable signature (some builtins) is not checked.
    """
    if kind == "ops":
        return _op_problems(factory)
    contract = CONTRACTS[kind]
    problems = _signature_problems(contract, factory)
    for name, _ in contract.capabilities:
        problem = _capability_problem(name, capability(kind, factory, name))
        if problem is not None:
            problems.append(problem)
    return problems


def _signature_problems(contract: FactoryContract, factory: Any) -> list[str]:
    """The arguments ``contract`` passes that ``factory``'s signature does not accept, and
    the parameters it requires that segkit never passes (none without a signature)."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return []
    P = inspect.Parameter
    var_pos = any(p.kind is P.VAR_POSITIONAL for p in params)
    var_kw = any(p.kind is P.VAR_KEYWORD for p in params)
    positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    by_name = {p.name: p for p in params if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)}
    problems = [
        f"takes no argument '{name}' (position {i + 1})"
        for i, name in enumerate(contract.positional)
        if i >= len(positional) and not var_pos
    ]
    problems += [
        f"does not accept '{name}'"
        for name in contract.keywords
        if name not in by_name and not var_kw
    ]
    supplied = {p.name for p in positional[: len(contract.positional)]} | set(contract.keywords)
    for p in params:
        required = p.default is P.empty and p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)
        if required and p.name not in supplied:
            problems.append(f"requires '{p.name}', which segkit never passes (give it a default)")
    return problems


def _capability_problem(name: str, value: Any) -> str | None:
    """Why the capability ``name`` declared as ``value`` has the wrong type, else None:
    each has its own rule (:data:`_CAPABILITY_RULES`); any other must be callable."""
    rule = _CAPABILITY_RULES.get(name)
    if rule is not None:
        return rule(value)
    if value is not None and not callable(value):
        return f"declares {name}={value!r}, which is not callable"
    return None


def _min_input_multiple_problem(value: Any) -> str | None:
    if callable(value) or _is_multiple(value):
        return None
    return (
        f"declares min_input_multiple={value!r}; expected an int >= 1 that divides "
        "32, or a function of the options returning one"
    )


def _accepts_problem(value: Any) -> str | None:
    if value in LOSS_TARGETS:
        return None
    return f"declares accepts={value!r}; expected one of {', '.join(repr(t) for t in LOSS_TARGETS)}"


def _generate_options_problem(value: Any) -> str | None:
    """Option names, not a function."""
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return None
    return (
        f"declares generate_options={value!r}; expected a tuple of the names of "
        "the options that only choose what it generates, e.g. ('count', 'seed')"
    )


def _layout_problem(value: Any) -> str | None:
    """Words, not a function."""
    if value is None or (isinstance(value, str) and value.strip()):
        return None
    return (
        f"declares layout={value!r}; expected one line of text describing the "
        "folders and files it reads"
    )


#: The capabilities whose value is checked by its own rule: why it is wrong, else None.
_CAPABILITY_RULES: dict[str, Callable[[Any], str | None]] = {
    "min_input_multiple": _min_input_multiple_problem,
    "accepts": _accepts_problem,
    "generate_options": _generate_options_problem,
    "layout": _layout_problem,
}


def _op_problems(op: Any) -> list[str]:
    """What keeps ``op`` from being a plugin's recipe op: a class (a subclass of
    :class:`segkit.recipes.Op`, checked where that is known) declaring the loaders that run
    it."""
    if not isinstance(op, type):
        return [f"is a {type(op).__name__}, not a class (a subclass of segkit.recipes.Op)"]
    if not callable(getattr(op, "parameter_types", None)):
        return ["is not a subclass of segkit.recipes.Op (it has no parameter_types)"]
    loaders = getattr(op, "loaders", None)
    if not (
        isinstance(loaders, tuple)
        and loaders
        and all(isinstance(name, str) and name for name in loaders)
    ):
        return [
            f"declares loaders={loaders!r}; expected the names of the loaders that run it, "
            "e.g. loaders = ('albumentations',)"
        ]
    return []


#: What a loss factory may declare as ``accepts``.
LOSS_TARGETS: tuple[str, ...] = ("binary", "multiclass", "both")


def loss_accepts(factory: Any) -> str:
    """Which targets a loss factory's losses take: ``"binary"`` (logits ``(N, 1, H, W)``,
    0/1 target of the same shape; the default for a factory that declares nothing),
    ``"multiclass"`` (logits ``(N, K, H, W)``, integer ``(N, H, W)`` class map) or
    ``"both"``. Read without calling the factory.

    Raises:
        ValueError: the factory declares something else.
    """
    value = capability("losses", factory, "accepts")
    if value not in LOSS_TARGETS:
        raise ValueError(
            f"{getattr(factory, '__qualname__', factory)!s} declares accepts={value!r}; "
            f"expected one of {', '.join(repr(t) for t in LOSS_TARGETS)}"
        )
    return value


def declares(factory: Any, name: str) -> bool:
    """Whether ``factory`` declares the capability ``name`` itself."""
    return hasattr(factory, name)


def _is_multiple(value: Any) -> bool:
    """An int >= 1 that divides 32: every model must take every size divisible by 32."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1 and 32 % value == 0


def declared_multiple(factory: Any, options: dict[str, Any]) -> int | None:
    """:func:`min_input_multiple` of a model factory that declares one, else None."""
    if not declares(factory, "min_input_multiple"):
        return None
    return min_input_multiple(factory, options)


def min_input_multiple(factory: Any, options: dict[str, Any]) -> int:
    """The ``min_input_multiple`` a model factory declares for these options, without
    building the model.

    Raises:
        ConfigError: the declared value (or the function's result) is not an int >= 1
            dividing 32.
    """
    value = capability("models", factory, "min_input_multiple")
    if callable(value):
        value = value(**options)
    if not _is_multiple(value):
        raise ConfigError(
            f"{getattr(factory, '__qualname__', factory)!s}: min_input_multiple is {value!r}; "
            "a model must declare an int >= 1 that divides 32"
        )
    return value
