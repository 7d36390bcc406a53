"""UNets over timm encoders, as the ``segkit.models`` plugin ``timm_unet``.

``segkit run --model timm_unet --model-opt encoder=efficientnet_b0`` puts a UNet decoder
over any of timm's backbones that support ``features_only`` (ResNets, EfficientNets,
ConvNeXts, RegNets, MobileNets, ...). The encoder is
``timm.create_model(encoder, features_only=True, in_chans=in_channels)``; the decoder is
built from what the encoder reports in ``feature_info`` (channels and reduction of each
feature map), never from tables of known encoders:

* It climbs from the deepest feature (reduction 32 for most encoders) to full
  resolution one factor of 2 at a time: nearest-neighbour upsampling, concatenation with
  the encoder feature at that reduction if there is one, then two 3x3 conv-BN-ReLU.
  An encoder whose first feature is at stride 4 (ConvNeXt) simply gets two stages
  without a skip at the top, one at stride 2 (ResNet, EfficientNet) gets one.
* A ``head_kernel`` x ``head_kernel`` conv (3 by default, as smp's Unet; 1 before
  issue 29) gives ``out_channels`` logits at the input's resolution.
* ``min_input_multiple`` is the deepest reduction (32).

Initialization (``init="kaiming"``, the default; issue 29): the decoder's convolutions
``kaiming_uniform_(fan_in, relu)`` with batch norm 1/0 and the head ``xavier_uniform_``
with bias 0, as smp's Unet; an encoder trained from scratch (no ``weights``) is built
with timm's ``zero_init_last=False`` where its family takes that option (ResNets,
RegNets, CSPNets, ...), as torchvision's ResNet (timm otherwise starts the last norm, or
conv, of every residual branch at zero). Over resnet18 the model is then
``smp.Unet("resnet18", encoder_weights=None)`` layer for layer, and with the same seed
it starts from the very same weights. Pretrained weights overwrite the encoder's init, so
with ``weights`` timm's default is kept. ``init="torch"``: PyTorch's layer defaults in
the decoder and head and timm's own encoder init (segkit before issue 29, with
``head_kernel=1``). Measured (``benchmarks/results/2026-12-06-cpu-peer/``): the new
default trains to a much lower loss and matches smp's test Dice on the generated pets,
collar and vessels sets; the former model scored higher on the vessels set.

Weights: random by default. ``weights="imagenet"`` loads timm's default pretrained
weights for the encoder from the local caches (Hugging Face hub cache, torch hub cache);
when they are missing, timm's hub functions download them into those caches, with a
progress bar. ``SEGKIT_OFFLINE=1`` forbids the download; then, or when it fails, the
error names the file to fetch and exactly where to place it. ``weights="/path/to/file.safetensors"`` (or ``.pth``) loads a state dict:
either the encoder's own (``model.encoder.state_dict()``) or the full timm classifier's
(as published); timm adapts its first convolution when ``in_channels != 3``.

timm is imported when a model is created, not when this module is imported, so
``segkit list`` stays quick.
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from segkit.config import PYTHON, given, named_options
from segkit.contracts import declare
from segkit.errors import ConfigError, described

__all__ = ["DEFAULT_DECODER_CHANNELS", "TimmUNet", "create_timm_unet"]

#: Decoder widths for the five stages from reduction 32 up to full resolution.
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)

#: The values of the ``init`` option.
INITS = ("kaiming", "torch")


class ConvBNReLU(nn.Sequential):
    """3x3 conv (no bias: the batch norm has one) -> batch norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DecoderStage(nn.Module):
    """Upsample by 2 (nearest), concatenate the skip if any, then two conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.skip_channels = skip_channels
        self.conv1 = ConvBNReLU(in_channels + skip_channels, out_channels)
        self.conv2 = ConvBNReLU(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            # To the skip's own size: exact for every input min_input_multiple allows.
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = torch.cat([x, skip], dim=1)
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv2(self.conv1(x))


class TimmUNet(nn.Module):
    """A UNet decoder over a timm ``features_only`` encoder.

    Args:
        encoder: A timm feature extractor (``features_only=True``), with ``feature_info``.
        name: The encoder's timm name, for messages.
        out_channels: Channels of the output logits.
        decoder_channels: Width of each decoder stage, deepest first; one per factor of
            2 between the deepest reduction and full resolution.
        init: ``"kaiming"``: the decoder and head initialized as smp's (decoder convs
            ``kaiming_uniform_(fan_in, relu)``, norms 1/0, head ``xavier_uniform_``, biases
            0); ``"torch"``: PyTorch's defaults. The encoder is left as given.
        head_kernel: Kernel size of the head convolution (odd; smp's Unet uses 3).

    Raises:
        ConfigError: The encoder's reductions are not powers of 2 ending at most at 32,
            or ``decoder_channels`` has the wrong length.
    """

    def __init__(
        self,
        encoder: nn.Module,
        name: str,
        out_channels: int,
        decoder_channels: Sequence[int],
        init: Literal["kaiming", "torch"] = "kaiming",
        head_kernel: int = 3,
    ):
        super().__init__()
        info = encoder.feature_info  # type: ignore[union-attr]
        channels, reductions = list(info.channels()), list(info.reduction())
        deepest = _deepest_reduction(name, reductions)
        stages = int(round(math.log2(deepest)))
        if len(decoder_channels) != stages:
            raise ConfigError(
                f"timm_unet: decoder_channels={list(decoder_channels)} has {len(decoder_channels)} "
                f"entries; encoder '{name}' reduces by {deepest}, which takes {stages} decoder "
                f"stages: give {stages} widths, deepest first, e.g. "
                f"{list(_default_widths(stages))}"
            )
        self.encoder = encoder
        self.encoder_name = name
        self.out_channels = out_channels
        #: H and W must be divisible by the deepest reduction.
        self.min_input_multiple = deepest
        # The feature each decoder stage concatenates: the deepest one at its reduction.
        by_reduction = {r: i for i, r in enumerate(reductions)}
        self.skip_index: list[int | None] = []
        stages_: list[DecoderStage] = []
        width = channels[-1]
        for s in range(stages):
            reduction = deepest >> (s + 1)
            index = by_reduction.get(reduction)
            self.skip_index.append(index)
            skip = channels[index] if index is not None else 0
            stages_.append(DecoderStage(width, skip, decoder_channels[s]))
            width = decoder_channels[s]
        self.decoder = nn.ModuleList(stages_)
        self.head = nn.Conv2d(
            width, out_channels, kernel_size=head_kernel, padding=head_kernel // 2
        )
        if init == "kaiming":
            _init_decoder(self.decoder)
            _init_head(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_channels, H, W)`` images to ``(N, out_channels, H, W)`` logits
        (H and W divisible by ``min_input_multiple``)."""
        features = self.encoder(x)
        y = features[-1]
        for stage, index in zip(self.decoder, self.skip_index, strict=True):
            y = stage(y, features[index] if index is not None else None)
        return self.head(y)


def _init_decoder(module: nn.Module) -> None:
    """smp's ``initialize_decoder``: convs ``kaiming_uniform_(fan_in, relu)`` with bias 0,
    norms weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm | nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _init_head(head: nn.Conv2d) -> None:
    """smp's ``initialize_head``: ``xavier_uniform_`` weight, bias 0."""
    nn.init.xavier_uniform_(head.weight)
    if head.bias is not None:
        nn.init.zeros_(head.bias)


def _deepest_reduction(name: str, reductions: list[int]) -> int:
    """The encoder's deepest reduction, which H and W must be divisible by.

    Raises:
        ConfigError: the reductions are not increasing powers of 2 ending at most at 32.
    """
    deepest = reductions[-1]
    stages = int(round(math.log2(deepest))) if deepest >= 1 else -1
    if (
        stages < 1
        or 2**stages != deepest
        or 32 % deepest
        or any(r2 < r1 for r1, r2 in zip(reductions, reductions[1:], strict=False))
    ):
        raise ConfigError(
            f"timm_unet: encoder '{name}' has feature reductions {reductions}; timm_unet "
            "needs increasing powers of 2 ending at 2, 4, 8, 16 or 32 (segkit models "
            "must accept every size divisible by 32)"
        )
    return deepest


def _min_input_multiple(encoder: str = "resnet34", **_: Any) -> int:
    """The declared ``min_input_multiple`` of ``timm_unet``: the encoder's deepest
    reduction, read from its ``feature_info`` with the encoder built on the meta device
    (no memory, no weights: about 0.05 s)."""
    _check_encoder_name(encoder)
    return _meta_multiple(encoder)


@functools.lru_cache(maxsize=64)
def _meta_multiple(encoder: str) -> int:
    """:func:`_min_input_multiple` of a checked encoder name, built once per process (a
    ``segkit compare`` of a study asks it of every run's model)."""
    import timm

    try:
        with torch.device("meta"):
            enc = timm.create_model(encoder, features_only=True, pretrained=False)
    except (RuntimeError, AssertionError, KeyError, ValueError, TypeError, NotImplementedError):
        return 32  # the factory says what is wrong with this encoder when it builds it
    return _deepest_reduction(encoder, list(enc.feature_info.reduction()))


@functools.lru_cache(maxsize=1)
def _known_models() -> frozenset[str]:
    """timm's model names (listed once per process)."""
    import timm

    return frozenset(timm.list_models())


def _default_widths(stages: int) -> tuple[int, ...]:
    if stages == len(DEFAULT_DECODER_CHANNELS):
        return DEFAULT_DECODER_CHANNELS
    return tuple(max(16, 256 >> s) for s in range(stages))


def _check_encoder_name(encoder: Any) -> None:
    if not isinstance(encoder, str) or not encoder:
        raise ConfigError(f"timm_unet: encoder={encoder!r}; expected a timm model name")
    base = encoder.split(".", 1)[0]  # "resnet34.a1_in1k": architecture.pretrained_tag
    known = _known_models()
    if base not in known:  # a model registered with timm since the names were listed
        _known_models.cache_clear()
        known = _known_models()
    if base in known:
        return
    close = difflib.get_close_matches(base, known, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"timm_unet: timm has no model named '{base}'.{hint} List the names with "
        f"`python -c \"import timm; print(timm.list_models('{base[:3]}*'))\"`"
    )


def _hf_hub_cache() -> Path:
    # Read the environment now, not at huggingface_hub's import, so HF_HUB_CACHE and
    # HF_HOME set by the caller (or a test) are honoured.
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _cached_pretrained_file(encoder: str) -> tuple[Path | None, str, list[str]]:
    """Find timm's default pretrained weights for ``encoder`` in the local caches.

    Returns:
        ``(path or None, where timm publishes them, the places looked in)``. Nothing is
        downloaded.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(encoder)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ConfigError(
            f"timm_unet: timm publishes no pretrained weights for encoder '{encoder}'; "
            "leave weights unset for random initialization, or pass weights=/path/to/file"
        )
    looked: list[str] = []
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        cache = _hf_hub_cache()
        looked.append(f"the Hugging Face cache {cache}")
        filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
        filenames += ["model.safetensors", "pytorch_model.bin"]
        for filename in filenames:
            found = try_to_load_from_cache(
                repo, filename, cache_dir=cache, revision=revision or None
            )
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found), f"Hugging Face hub {repo}", looked
    if cfg.url:
        from urllib.parse import urlparse

        hub = Path(torch.hub.get_dir()) / "checkpoints"
        looked.append(f"the torch hub cache {hub}")
        candidate = hub / os.path.basename(urlparse(cfg.url).path)
        if candidate.is_file():
            return candidate, cfg.url, looked
    source = f"Hugging Face hub {cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url
    return None, source, looked


def offline() -> bool:
    """Whether ``SEGKIT_OFFLINE`` forbids downloads (any value but empty, 0, false, no)."""
    return os.environ.get("SEGKIT_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _download_pretrained(encoder: str) -> Path:
    """Download timm's default pretrained weights of ``encoder`` through timm's own hub
    functions, into the cache timm itself uses (the Hugging Face hub cache, or the torch
    hub cache for weights published by URL only), with a progress bar.

    Raises:
        ConfigError: ``SEGKIT_OFFLINE`` is set, or the download failed; the message names
            the file to fetch and exactly where to place it.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(encoder)
    if cfg.hf_hub_id:
        from urllib.parse import quote

        repo, _, revision = cfg.hf_hub_id.partition("@")
        filename = cfg.hf_hub_filename or "model.safetensors"
        url = f"https://huggingface.co/{repo}/resolve/{quote(revision or 'main')}/{filename}"
        # huggingface_hub finds a file in snapshots/<revision>/ when refs/ has no entry
        # for it: the one layout a person can make by hand.
        place = (
            _hf_hub_cache()
            / f"models--{repo.replace('/', '--')}"
            / "snapshots"
            / (revision or "main")
            / filename
        )
    else:
        from urllib.parse import urlparse

        url = cfg.url
        place = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)

    def missing(why: str) -> ConfigError:
        # segkit run's --weights is its shortcut for the model option (segkit.cli.args)
        file = (
            named_options("model_options", {"weights": "/path/to/file"})
            if given() == PYTHON
            else "--weights /path/to/file"
        )
        return ConfigError(
            f"timm_unet: ImageNet weights for encoder '{encoder}' are not on this machine "
            f"and {why}. Download {url} and place it at {place} (or pass {file})"
        )

    if offline():
        raise missing("SEGKIT_OFFLINE is set, so segkit does not download them")
    try:
        if cfg.hf_hub_id:
            from timm.models._hub import download_from_hf

            print(f"timm_unet: downloading {url} into {_hf_hub_cache()}", file=sys.stderr)
            found = download_from_hf(cfg.hf_hub_id, filename, cache_dir=_hf_hub_cache())
        else:
            from timm.models._hub import download_cached_file

            print(f"timm_unet: downloading {url} into {place.parent}", file=sys.stderr)
            found = download_cached_file(url, check_hash=False, progress=True)
    except Exception as e:  # no network, proxy, server error, offline hub mode...
        raise missing(f"could not be downloaded ({described(e, 200)})") from None
    return Path(found)


def _create_encoder(
    encoder: str, in_channels: int, file: Path | None, zero_init_last: bool = True
) -> nn.Module:
    """``timm.create_model(encoder, features_only=True)``, loading ``file`` through timm
    (which filters the classifier and adapts the first conv to ``in_channels``).

    ``zero_init_last=False`` is passed to timm where the encoder's family takes it (its
    residual branches then start as they would in torchvision, not at zero); a family
    without the option (EfficientNet, ConvNeXt, ...) does not zero-init anyway."""
    import timm

    kwargs: dict[str, Any] = {}
    if file is not None:
        kwargs = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(file)}}
    try:
        if not zero_init_last:
            try:
                return timm.create_model(
                    encoder,
                    features_only=True,
                    in_chans=in_channels,
                    zero_init_last=False,
                    **({"pretrained": False} | kwargs),
                )
            except TypeError as e:
                if "zero_init_last" not in str(e):
                    raise
        return timm.create_model(
            encoder, features_only=True, in_chans=in_channels, **({"pretrained": False} | kwargs)
        )
    except (RuntimeError, AssertionError, KeyError, ValueError, TypeError) as e:
        if file is not None:
            raise
        raise ConfigError(
            f"timm_unet: timm cannot build encoder '{encoder}' as a feature extractor "
            f"({type(e).__name__}: {str(e).strip()[:200]}); choose an encoder that supports "
            "features_only (ResNets, EfficientNets, ConvNeXts, RegNets, ...)"
        ) from e


def _load_file_into(encoder: nn.Module, path: Path) -> bool:
    """Load a state dict saved from this kind of encoder; False if the keys are not its.

    Raises:
        ConfigError: The file cannot be read.
    """
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), use_ema=False)
    except Exception as e:
        raise ConfigError(
            f"timm_unet: weights={path}: cannot read it as a state dict ({type(e).__name__}: "
            f"{str(e).strip()[:200]}); expected a .safetensors or .pth file"
        ) from None
    if any(k.startswith("encoder.") for k in state):  # saved from a whole TimmUNet
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    own = encoder.state_dict()
    if not set(own) <= set(state):
        return False
    if any(tuple(state[k].shape) != tuple(v.shape) for k, v in own.items()):
        return False  # e.g. saved with 3 input channels: let timm adapt the first conv
    encoder.load_state_dict({k: state[k] for k in own})
    return True


class _TimmLoadLog(logging.Handler):
    """Collects what timm's loader logs: it loads feature extractors non-strictly and
    only logs the keys a file lacks, which must not pass silently here."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.missing: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Missing keys"):
            self.missing.append(message)


def _encoder_keys_missing(encoder: nn.Module, messages: list[str]) -> list[str]:
    """The encoder's own keys among those timm reported missing (the classifier's, which
    the feature extractor drops, do not count). Feature wrappers flatten the first module
    levels ("stem.0" -> "stem_0"), so keys are compared with "." and "_" alike."""
    own = {k.replace(".", "_"): k for k in encoder.state_dict()}
    lacking: list[str] = []
    for message in messages:
        match = re.match(r"Missing keys \((.*)\) discovered", message)
        if match is None:
            return [message[:200]]  # an unknown log format: refuse rather than guess
        for key in match.group(1).split(", "):
            if key.replace(".", "_") in own:
                lacking.append(own[key.replace(".", "_")])
    return lacking


def _load_through_timm(encoder: str, in_channels: int, file: Path) -> nn.Module:
    """Create the encoder with timm loading ``file`` (a classifier's state dict: timm
    drops the head, applies the model's checkpoint filter and adapts the first conv).

    Raises:
        ConfigError: timm cannot load the file, or the file lacks some of the encoder's
            weights.
    """
    logger = logging.getLogger("timm.models._builder")
    log = _TimmLoadLog()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(log)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # timm's key lists would be noise; the error below says it
    try:
        enc = _create_encoder(encoder, in_channels, file)
    except Exception as e:
        detail = described(e)
    else:
        lacking = _encoder_keys_missing(enc, log.missing)
        if not lacking:
            return enc
        detail = f"it lacks {len(lacking)} of the encoder's tensors, e.g. {', '.join(lacking[:3])}"
    finally:
        logger.removeHandler(log)
        logger.setLevel(level)
        logger.propagate = propagate
    raise ConfigError(
        f"timm_unet: weights={file} do not fit encoder '{encoder}' ({detail}); pass a state "
        f"dict of timm's '{encoder}' or of this model's encoder (model.encoder.state_dict())"
    )


@declare(min_input_multiple=_min_input_multiple)
def create_timm_unet(
    in_channels: int = 3,
    out_channels: int = 1,
    encoder: str = "resnet34",
    weights: str | None = None,
    decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
    init: Literal["kaiming", "torch"] = "kaiming",
    head_kernel: int = 3,
) -> TimmUNet:
    """Create a UNet over a timm encoder.

    Args:
        in_channels: Channels of the input images.
        out_channels: Channels of the output logits.
        encoder: A timm model name (``timm.list_models()``), optionally with a pretrained
            tag (``"resnet34.a1_in1k"``).
        weights: ``None`` for random initialization; ``"imagenet"`` for timm's default
            pretrained weights of ``encoder``, read from the local Hugging Face or torch
            hub cache, downloaded there first when missing (unless ``SEGKIT_OFFLINE``
            is set); or the path of a ``.safetensors``/``.pth``
            state dict, of the encoder or of the full timm classifier.
        decoder_channels: Widths of the decoder stages, deepest first: as many as factors
            of 2 in the encoder's deepest reduction (5 for 32). The default suits
            encoders reducing by 32 and is shortened for others.
        init: ``"kaiming"`` (default): smp's decoder and head initialization, and an
            encoder without ``weights`` built with timm's ``zero_init_last=False``;
            ``"torch"``: PyTorch's defaults in the decoder and head, timm's own encoder
            init (segkit before issue 29).
        head_kernel: Kernel size of the head convolution, odd, 1 to 7: 3 (default, as
            smp's Unet) or 1 (segkit before issue 29: give ``head_kernel=1`` to load a
            checkpoint of that time).

    Returns:
        A :class:`TimmUNet` returning logits; H and W must be divisible by 32 (the
        deepest reduction).

    Raises:
        ConfigError: Unknown encoder (with close names), an encoder timm cannot use as a
            feature extractor, weights that are missing or do not fit, or bad
            ``decoder_channels``.
    """
    _check_encoder_name(encoder)
    if init not in INITS:
        raise ConfigError(
            f"timm_unet: init={init!r}; expected one of {', '.join(INITS)} (kaiming: smp's "
            "decoder init, no zero_init_last from scratch; torch: PyTorch's defaults), e.g. "
            f"{named_options('model_options', {'init': 'kaiming'})}"
        )
    if (
        not isinstance(head_kernel, int)
        or isinstance(head_kernel, bool)
        or head_kernel not in (1, 3, 5, 7)
    ):
        raise ConfigError(
            f"timm_unet: head_kernel={head_kernel!r}; expected an odd kernel size from 1 to 7, "
            f"e.g. {named_options('model_options', {'head_kernel': 3})}"
        )
    if isinstance(decoder_channels, str) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in decoder_channels
    ):
        widths = named_options("model_options", {"decoder_channels": [256, 128, 64, 32, 16]})
        raise ConfigError(
            f"timm_unet: decoder_channels={decoder_channels!r}; expected a list of positive "
            f"ints, e.g. {widths}"
        )
    if weights == "imagenet":
        cached, _, _ = _cached_pretrained_file(encoder)
        if cached is None:
            cached = _download_pretrained(encoder)
        enc = _load_through_timm(encoder, in_channels, cached)
    elif weights is not None:
        if not isinstance(weights, str):
            raise ConfigError(f"timm_unet: weights={weights!r}; expected 'imagenet' or a file path")
        file = Path(weights).expanduser()
        if not file.is_file():
            raise ConfigError(
                f"timm_unet: weights={weights}: file not found; expected 'imagenet' or the path "
                "of a .safetensors or .pth state dict of the encoder"
            )
        enc = _create_encoder(encoder, in_channels, None)
        if not _load_file_into(enc, file):
            # Not this encoder's own keys: a full classifier's state dict, perhaps with
            # another number of input channels. timm's loader maps those.
            enc = _load_through_timm(encoder, in_channels, file)
    else:
        # From scratch: timm's zero-initialized residual branches slow short runs (issue 29).
        enc = _create_encoder(encoder, in_channels, None, zero_init_last=init == "torch")
    decoder = tuple(decoder_channels)
    stages = int(round(math.log2(max(enc.feature_info.reduction()[-1], 1))))
    if decoder == DEFAULT_DECODER_CHANNELS and stages != len(DEFAULT_DECODER_CHANNELS):
        decoder = _default_widths(stages)
    return TimmUNet(enc, encoder, out_channels, decoder, init=init, head_kernel=head_kernel)
