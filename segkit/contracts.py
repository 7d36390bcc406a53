"""The contract of each plugin kind: the manual for plugin authors.

segkit finds plugins through five entry-point groups. An entry point names an object
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

``segkit.datasets`` -- a **dataset class** (or factory) called with the data root and
returning a :class:`Dataset`; see :class:`DatasetFactory`. A dataset that can make its
own data declares ``generate``; one that can download it declares ``fetch``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

if TYPE_CHECKING:  # torch is imported lazily so `segkit --help` stays fast
    import torch

    from segkit.recipes import Recipe

Split = Literal["train", "valid", "test"]

#: Split names every dataset understands.
SPLITS: tuple[str, ...] = get_args(Split)


@dataclass(frozen=True)
class MaskSpec:
    """How a dataset's mask files encode the binary target.

    A pixel is foreground when its raw value is not ``background``; ``allowed`` lists the
    raw values a valid mask file may hold. Loaders apply this rule themselves (the DALI
    loader applies it inside its graph), so it must stay this simple.

    Attributes:
        background: Raw value meaning background (2 in Oxford-IIIT Pet trimaps).
        allowed: Raw values a mask file may hold, e.g. ``(1, 2, 3)`` for trimaps.
    """

    background: int
    allowed: tuple[int, ...]


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
        mask_spec: How mask files encode the target.
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
    * ``fetch(root: Path, base_url: str | None = None) -> Path``: download and unpack the
      dataset into ``root`` (``segkit data fetch``). Nothing else in segkit downloads.
    """

    def __call__(self, root: Path | None, **options: Any) -> Dataset: ...


@dataclass(frozen=True)
class Batch:
    """What a loader yields: ``images`` float ``(N, 3, H, W)`` normalized; ``masks`` float
    ``(N, 1, H, W)`` holding exactly 0.0 and 1.0. Both on the loader's device (or on the
    CPU in pinned memory, for the engine to move with ``non_blocking=True``)."""

    images: torch.Tensor
    masks: torch.Tensor


class Loader(Protocol):
    """An iterable of :class:`Batch` with a length (batches per epoch)."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle and augmentation for ``epoch`` (same epoch, same batches)."""
        ...


class LoaderFactory(Protocol):
    """What a ``segkit.loaders`` entry point names.

    Args:
        dataset: Where the samples come from.
        split: "train", "valid" or "test".
        recipe: The augmentation recipe; the loader uses ``recipe.train`` when
            ``train`` is true and ``recipe.eval`` otherwise.
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
        recipe: Recipe,
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
        from segkit.errors import ConfigError

        raise ConfigError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")


def check_samples(samples: Sequence[Sample], split: str, source: Path) -> list[Sample]:
    """Return ``samples`` as a list, refusing an empty split with a message naming ``source``."""
    if not samples:
        from segkit.errors import DataError

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
            from segkit.errors import DataError

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
        from segkit.errors import ConfigError

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
        (("generate", None), ("fetch", None)),
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
    contract = CONTRACTS[kind]
    problems: list[str] = []
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        params = None
    if params is not None:
        P = inspect.Parameter
        var_pos = any(p.kind is P.VAR_POSITIONAL for p in params)
        var_kw = any(p.kind is P.VAR_KEYWORD for p in params)
        positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
        by_name = {p.name: p for p in params if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)}
        for i, name in enumerate(contract.positional):
            if i >= len(positional) and not var_pos:
                problems.append(f"takes no argument '{name}' (position {i + 1})")
        supplied = {p.name for p in positional[: len(contract.positional)]}
        for name in contract.keywords:
            if name not in by_name and not var_kw:
                problems.append(f"does not accept '{name}'")
            supplied.add(name)
        for p in params:
            required = p.default is P.empty and p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)
            if required and p.name not in supplied:
                problems.append(
                    f"requires '{p.name}', which segkit never passes (give it a default)"
                )
    for name, _ in contract.capabilities:
        value = capability(kind, factory, name)
        if name == "min_input_multiple":
            if not (callable(value) or _is_multiple(value)):
                problems.append(
                    f"declares min_input_multiple={value!r}; expected an int >= 1 that divides "
                    "32, or a function of the options returning one"
                )
        elif name == "accepts":
            if value not in LOSS_TARGETS:
                problems.append(
                    f"declares accepts={value!r}; expected one of "
                    f"{', '.join(repr(t) for t in LOSS_TARGETS)}"
                )
        elif value is not None and not callable(value):
            problems.append(f"declares {name}={value!r}, which is not callable")
    return problems


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
        from segkit.errors import ConfigError

        raise ConfigError(
            f"{getattr(factory, '__qualname__', factory)!s}: min_input_multiple is {value!r}; "
            "a model must declare an int >= 1 that divides 32"
        )
    return value
