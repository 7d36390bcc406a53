"""The ``timm_unet`` plugin: UNets over timm encoders of three families, their decoder
built from ``feature_info``, weights from local files, from the local caches, and
downloaded (faked: no test touches the network) or refused offline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import segkit
from segkit.config import COMMAND_LINE, given_as
from segkit.errors import ConfigError
from segkit.registry import create
from segkit.testing import check_model

#: One encoder per family and stem: ResNet and EfficientNet have their first feature at
#: stride 2, ConvNeXt at stride 4 (a patchify stem); all end at stride 32.
ENCODERS = {
    "resnet34": {"reductions": [2, 4, 8, 16, 32], "channels": [64, 64, 128, 256, 512]},
    "efficientnet_b0": {"reductions": [2, 4, 8, 16, 32], "channels": [16, 24, 40, 112, 320]},
    "convnext_tiny": {"reductions": [4, 8, 16, 32], "channels": [96, 192, 384, 768]},
}


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.slow  # the whole kit on full-size encoders (5-35 s each on 2 cores)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_conformance(encoder: str) -> None:
    # The registry-wide tests in test_models.py cover the default (resnet34) rule by
    # rule; here every encoder family runs the whole kit.
    check_model("timm_unet", options={"encoder": encoder})


@pytest.mark.parametrize("encoder", ENCODERS)
def test_decoder_is_built_from_feature_info(encoder: str) -> None:
    model = create("models", "timm_unet", encoder=encoder, decoder_channels=[64, 32, 16, 16, 8])
    info = model.encoder.feature_info
    assert info.reduction() == ENCODERS[encoder]["reductions"]
    assert info.channels() == ENCODERS[encoder]["channels"]
    assert model.min_input_multiple == 32
    # Five stages from stride 32 to 1; each concatenates the feature at its stride, if any.
    reductions = info.reduction()
    expected = [
        reductions.index(32 >> (s + 1)) if 32 >> (s + 1) in reductions else None for s in range(5)
    ]
    assert model.skip_index == expected
    skips = [stage.skip_channels for stage in model.decoder]
    assert skips == [info.channels()[i] if i is not None else 0 for i in expected]
    if encoder == "convnext_tiny":
        assert model.skip_index[-2:] == [None, None]  # stride 4 -> 2 -> 1 without skips


def test_parameter_count() -> None:
    import timm

    model = create("models", "timm_unet", encoder="resnet34")
    encoder_only = _params(timm.create_model("resnet34", num_classes=0))
    assert _params(model.encoder) == encoder_only == 21_284_672  # ResNet-34 minus its fc
    # Decoder: five stages of two 3x3 convs (+BN), widths 256..16, skips 256, 128, 64, 64.
    assert round(_params(model) / 1e6, 1) == 24.4
    smaller = create(
        "models", "timm_unet", encoder="resnet34", decoder_channels=[128, 64, 32, 16, 8]
    )
    assert _params(smaller) < _params(model)
    assert smaller.head.in_channels == 8


def _distinct_encoder(encoder: str, seed: int) -> torch.nn.Module:
    """A timm_unet whose encoder holds weights no initialization would give."""
    torch.manual_seed(seed)
    model = create("models", "timm_unet", encoder=encoder)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for name, b in model.encoder.named_buffers():
            if name.endswith("running_mean"):
                b.add_(0.1)
    return model.eval()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_from_a_local_file(suffix: str, tmp_path: Path) -> None:
    source = _distinct_encoder("resnet34", seed=0)
    path = tmp_path / f"encoder{suffix}"
    state = {k: v.contiguous() for k, v in source.encoder.state_dict().items()}
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, path)

    torch.manual_seed(0)  # the decoder is initialized as the source's was
    loaded = create("models", "timm_unet", encoder="resnet34", weights=str(path)).eval()
    torch.manual_seed(0)
    fresh = create("models", "timm_unet", encoder="resnet34").eval()

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
        assert not torch.allclose(fresh(x), source(x))


def test_weights_from_a_full_timm_classifier_with_one_input_channel(tmp_path: Path) -> None:
    # The published kind of file: the whole classifier, 3 input channels. timm's loader
    # drops the head and folds the first conv to 1 channel (sum over RGB).
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    classifier = timm.create_model("efficientnet_b0")
    path = tmp_path / "efficientnet_b0.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, path)

    model = create(
        "models", "timm_unet", encoder="efficientnet_b0", in_channels=1, weights=str(path)
    )

    stem = model.encoder.state_dict()["conv_stem.weight"]
    torch.testing.assert_close(
        stem, classifier.state_dict()["conv_stem.weight"].sum(1, keepdim=True)
    )
    torch.testing.assert_close(
        model.encoder.state_dict()["blocks.6.0.bn3.weight"],
        classifier.state_dict()["blocks.6.0.bn3.weight"],
    )


def test_weights_file_that_does_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, path)
    with pytest.raises(
        ConfigError,
        match=rf"timm_unet: weights={path} do not fit encoder 'resnet34' \(it lacks 1\d\d of "
        r"the encoder's tensors, e.g. conv1.weight, bn1.weight, bn1.bias\)",
    ):
        create("models", "timm_unet", encoder="resnet34", weights=str(path))
    with pytest.raises(
        ConfigError,
        match=r"weights=/no/such/file.pth: file not found; expected 'imagenet' or the path",
    ):
        create("models", "timm_unet", weights="/no/such/file.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"junk.pth: cannot read it as a state dict"):
        create("models", "timm_unet", weights=str(tmp_path / "junk.pth"))


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_imagenet_offline_without_cached_weights_says_which_file_to_place_where(
    empty_caches: Path,
) -> None:
    with given_as(COMMAND_LINE), pytest.raises(ConfigError) as info:  # segkit run's shortcut
        create("models", "timm_unet", encoder="resnet34", weights="imagenet")
    place = empty_caches / "hf" / "models--timm--resnet34.a1_in1k" / "snapshots" / "main"
    with pytest.raises(ConfigError) as python:  # from Python: the model option
        create("models", "timm_unet", encoder="resnet34", weights="imagenet")
    assert str(python.value) == str(info.value).replace(
        "--weights /path/to/file", "model_options={'weights': '/path/to/file'}"
    )
    assert str(info.value) == (
        "timm_unet: ImageNet weights for encoder 'resnet34' are not on this machine and "
        "SEGKIT_OFFLINE is set, so segkit does not download them. Download "
        "https://huggingface.co/timm/resnet34.a1_in1k/resolve/main/model.safetensors and place "
        f"it at {place / 'model.safetensors'} (or pass --weights /path/to/file)"
    )


def _tiny_classifier_file(path: Path) -> dict[str, torch.Tensor]:
    """A small stand-in for timm's published weights: the 140k-parameter test_efficientnet
    classifier, random, as a safetensors file at ``path``."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(5)
    state = {
        k: v.contiguous() for k, v in timm.create_model("test_efficientnet").state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, path)
    return state


def _encoder_matches(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.encoder.state_dict()
    assert own and all(torch.equal(v, state[k]) for k, v in own.items() if k in state)
    assert sum(k in state for k in own) > 10


def test_a_file_placed_where_the_offline_error_says_is_used(empty_caches: Path) -> None:
    with pytest.raises(ConfigError, match=r"place it at (\S+) \(or pass") as info:
        create("models", "timm_unet", encoder="test_efficientnet", weights="imagenet")
    place = Path(str(info.value).split("place it at ")[1].split(" (or pass")[0])
    state = _tiny_classifier_file(place)
    _encoder_matches(
        create("models", "timm_unet", encoder="test_efficientnet", weights="imagenet"), state
    )


def test_missing_weights_are_downloaded_through_timm_into_its_cache(
    empty_caches: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # No network in tests: timm's download function is replaced by one that "downloads"
    # into the cache layout huggingface_hub writes (refs/main -> a snapshot).
    import timm.models._hub as hub

    calls = []

    def fake_download(model_id: str, filename: str, cache_dir=None) -> str:
        calls.append((model_id, filename, Path(cache_dir)))
        repo = Path(cache_dir) / "models--timm--test_efficientnet.r160_in1k"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("c0ffee")
        target = repo / "snapshots" / "c0ffee" / filename
        _tiny_classifier_file(target)
        return str(target)

    monkeypatch.delenv("SEGKIT_OFFLINE")
    monkeypatch.setattr(hub, "download_from_hf", fake_download)
    first = create("models", "timm_unet", encoder="test_efficientnet", weights="imagenet")
    assert calls == [("timm/test_efficientnet.r160_in1k", "model.safetensors", empty_caches / "hf")]
    assert (
        "downloading https://huggingface.co/timm/test_efficientnet.r160_in1k"
        in capsys.readouterr().err
    )
    # The second time it comes from the cache: no download.
    second = create("models", "timm_unet", encoder="test_efficientnet", weights="imagenet")
    assert len(calls) == 1
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            first.encoder.state_dict().values(), second.encoder.state_dict().values(), strict=True
        )
    )

    def no_network(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(hub, "download_from_hf", no_network)
    with pytest.raises(
        ConfigError,
        match=r"encoder 'resnet34' are not on this machine and could not be downloaded "
        r"\(ConnectionError: Failed to resolve 'huggingface.co'\)\. Download https://huggingface.co/"
        r"timm/resnet34.a1_in1k/resolve/main/model.safetensors and place it at ",
    ):
        create("models", "timm_unet", encoder="resnet34", weights="imagenet")


def test_imagenet_weights_come_from_the_local_hugging_face_cache(empty_caches: Path) -> None:
    # Lay out the cache as huggingface_hub does after a download: refs/main names the
    # snapshot that holds the file. Nothing may touch the network.
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(2)
    classifier = timm.create_model("resnet34")
    repo = empty_caches / "hf" / "models--timm--resnet34.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in classifier.state_dict().items()},
        repo / "snapshots" / "0123abcd" / "model.safetensors",
    )

    model = create("models", "timm_unet", encoder="resnet34", weights="imagenet")

    expected = classifier.state_dict()
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_unknown_encoder_suggests_close_names() -> None:
    with pytest.raises(
        ConfigError,
        match=r"timm_unet: timm has no model named 'resnet43'\. Did you mean .*'resnet34'.*\? "
        r"List the names with `python -c \"import timm; print\(timm.list_models\('res\*'\)\)\"`",
    ):
        create("models", "timm_unet", encoder="resnet43")
    with pytest.raises(ConfigError, match=r"Did you mean .*'efficientnet_b0'"):
        create("models", "timm_unet", encoder="efficientnet-b0")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"decoder_channels": [64, 32]},
            r"decoder_channels=\[64, 32\] has 2 entries; encoder 'resnet34' reduces by 32, which takes 5 decoder stages",
        ),
        (
            {"decoder_channels": "64,32"},
            r"decoder_channels='64,32'; expected a list of positive ints",
        ),
        ({"weights": 3}, r"weights=3; expected 'imagenet' or a file path"),
        ({"encoder": ""}, r"encoder=''; expected a timm model name"),
    ],
)
def test_bad_options(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create("models", "timm_unet", **options)


def test_bad_decoder_channels_give_an_example_as_the_settings_are_given() -> None:
    with pytest.raises(ConfigError) as e:  # from Python: the keyword
        create("models", "timm_unet", decoder_channels="64,32")
    assert str(e.value).endswith("e.g. model_options={'decoder_channels': [256, 128, 64, 32, 16]}")
    with given_as(COMMAND_LINE), pytest.raises(ConfigError) as e:  # quoted for the shell
        create("models", "timm_unet", decoder_channels="64,32")
    assert str(e.value).endswith("e.g. --model-opt 'decoder_channels=[256,128,64,32,16]'")


def test_size_error_names_the_encoder_and_a_size_that_works() -> None:
    model = segkit.create_model("timm_unet", encoder="efficientnet_b0").eval()
    with pytest.raises(
        ConfigError,
        match=r"timm_unet \(efficientnet_b0\): input height=250, width=100 is not divisible by 32; resize or pad your images to \(256, 128\)",
    ):
        model(torch.randn(1, 3, 250, 100))
    assert math.log2(model.min_input_multiple) == len(model.decoder)


def test_an_encoder_registered_with_timm_after_the_names_were_listed_is_taken():
    # timm's names are listed once per process, and each encoder's multiple is read once (a
    # study's compare asks it of every run's model); a model a user registers with timm
    # afterwards is still taken. The declared multiple is what the core reads before it
    # builds a model (on the meta device: no weights).
    import timm
    from timm.models import register_model

    import segkit_timm

    assert segkit_timm._min_input_multiple(encoder="resnet18") == 32  # names listed now
    name = "segkit_test_registered_late"
    if name not in timm.list_models():

        @register_model
        def segkit_test_registered_late(pretrained: bool = False, **kwargs):  # noqa: ARG001
            return timm.create_model("resnet18", pretrained=False, **kwargs)

    assert segkit_timm._min_input_multiple(encoder=name) == 32
    with pytest.raises(ConfigError, match="no model named 'resnet3x'"):
        segkit_timm._min_input_multiple(encoder="resnet3x")
