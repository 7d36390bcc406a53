"""A checkpoint whose model plugin is not installed: open_trained (what predict, evaluate,
export and compare share) names the distribution and version its run folder's config.json
records and the pip command that brings it back, without a misleading did-you-mean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import save_checkpoint
from PIL import Image

from segkit.cli import main
from segkit.errors import CheckpointError
from segkit.inference.trained import open_trained, recorded_plugin


def _run_folder(tmp_path: Path, model: str = "gone", resolved: dict | None = None) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    ckpt = save_checkpoint(folder / "best.pt", model=model)
    plugins = {"models": {"name": model, "distribution": "segkit_audit", "version": "0.1.0"}}
    record = {
        "model": model,
        "resolved": resolved if resolved is not None else {"plugins": plugins},
    }
    (folder / "config.json").write_text(json.dumps(record))
    return ckpt


def test_the_recorded_distribution_and_version_are_named_with_the_pip_command(tmp_path):
    ckpt = _run_folder(tmp_path)
    with pytest.raises(CheckpointError) as info:
        open_trained(ckpt, device="cpu")
    assert str(info.value) == (
        f"{ckpt}: trained with model 'gone' from distribution segkit_audit 0.1.0, which is "
        "not installed here; `pip install segkit_audit==0.1.0` (or a version of segkit_audit "
        "that still provides 'gone'), then run this again"
    )
    assert "Did you mean" not in str(info.value)


@pytest.mark.parametrize(
    "argv",
    [["evaluate", "{ckpt}"], ["export", "{ckpt}", "--out", "{tmp}/m.onnx"],
     ["predict", "{ckpt}", "{tmp}/in", "--out", "{tmp}/pred"]],
)  # fmt: skip
def test_evaluate_export_and_predict_say_it_in_one_line(tmp_path, capsys, argv):
    ckpt = _run_folder(tmp_path)
    (tmp_path / "in").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "in" / "a.png")
    code = main([a.format(ckpt=ckpt, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "`pip install segkit_audit==0.1.0`" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_without_a_record_the_message_stays_generic(tmp_path):
    ckpt = _run_folder(tmp_path, resolved={})  # an old run folder: nothing recorded
    with pytest.raises(CheckpointError, match=r"was trained with model 'gone', which is not "
                       r"installed here \(no model named 'gone'"):  # fmt: skip
        open_trained(ckpt, device="cpu")
    assert recorded_plugin(tmp_path / "elsewhere" / "best.pt", "models", "gone") is None
    # A record of another model (the config.json of another run) is not believed.
    assert recorded_plugin(ckpt, "models", "other") is None
    assert recorded_plugin(ckpt, "losses", "gone") is None


def test_a_checkpoint_moved_out_of_its_run_folder_still_names_the_distribution(tmp_path):
    import torch

    from segkit.training import checkpoint as ckpt_io

    path = save_checkpoint(tmp_path / "moved.pt", model="gone")  # no config.json beside it
    state = torch.load(path, weights_only=True)
    record = {"name": "gone", "distribution": "segkit_audit", "version": "0.1.0"}
    state["plugins"] = {"models": record}
    ckpt_io.save_atomic(state, path)
    with pytest.raises(CheckpointError, match=r"`pip install segkit_audit==0\.1\.0`"):
        open_trained(path, device="cpu")


def test_training_and_weights_checkpoints_record_the_plugins():
    from segkit.training import checkpoint as ckpt_io

    plugins = {"models": {"name": "unet", "distribution": "segkit", "version": "0.1.0"}}
    state = {
        "config": {},
        "model": {},
        "epoch": 3,
        "best_valid_dice": 0.5,
        "best_epoch": 2,
        "plugins": plugins,
    }
    assert ckpt_io.weights_state(state)["plugins"] == plugins


def test_resuming_a_run_whose_plugin_is_gone_names_the_distribution_to_install(tmp_path, capsys):
    """`segkit run --resume` of a run whose model package was uninstalled says which
    distribution and version to install, as predict does, not "no model named 'gone'"."""
    ckpt = _run_folder(tmp_path)
    ckpt.rename(ckpt.with_name("last.pt"))
    code = main(["run", "--resume", str(ckpt.parent)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == (
        f"segkit: error: {ckpt.with_name('last.pt')}: trained with model 'gone' from "
        "distribution segkit_audit 0.1.0, which is not installed here; `pip install "
        "segkit_audit==0.1.0` (or a version of segkit_audit that still provides 'gone'), "
        "then run this again"
    )


# ------------------------------------------------- a plugin other than the run's, by name

MINE = "def create(**options):\n    import segkit\n    return segkit.create_model('timm_unet', **options)\n"


def _recording(path: Path, model: str, distribution: str, version: str) -> Path:
    """``path`` recording that its run's model ``model`` came from ``distribution``."""
    import torch

    from segkit.training import checkpoint as ckpt_io

    state = torch.load(path, weights_only=True)
    state["plugins"] = {"models": {"name": model, "distribution": distribution, "version": version}}
    ckpt_io.save_atomic(state, path)
    return path


@pytest.fixture
def said(monkeypatch):
    """The registry forgets which shadow notes it said (each test says its own)."""
    from segkit import registry

    monkeypatch.setattr(registry, "_said_shadowed", set())


def test_a_third_party_model_now_a_built_in_name_says_the_built_in_is_built(
    tmp_path, capsys, site, said
):
    """The run used acme-seg's 'timm_unet'; segkit now has a built-in of that name, which
    open_trained built with no word. It says so in one line, whether acme-seg is gone or
    installed (hidden), and the model still opens."""
    from helpers import make_distribution

    from segkit import registry

    ckpt = _recording(save_checkpoint(tmp_path / "best.pt"), "timm_unet", "acme_seg", "2.1")
    version = registry.default_registry().info("models", "timm_unet").version
    trained = open_trained(ckpt, device="cpu")
    assert trained.label == "timm_unet"
    assert capsys.readouterr().err == (
        f"segkit: {ckpt} was trained with model 'timm_unet' from distribution 'acme_seg' 2.1, "
        "but 'timm_unet' is now the name of segkit's built-in model, and that is what this "
        f"builds (segkit {version}): the weights are loaded into another model, and the "
        "results may differ from the run's; acme_seg is not installed here\n"
    )
    open_trained(ckpt, device="cpu")
    assert capsys.readouterr().err == ""  # once

    # acme-seg installed: its model is hidden; one line (not the general note besides).
    make_distribution(site, "acme-seg", {"segkit.models": {"timm_unet": "fake_acme:create"}},
                      {"fake_acme": MINE}, version="2.1")  # fmt: skip
    registry.reset()
    registry._said_shadowed.clear()
    (tmp_path / "in").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "in" / "a.png")
    argv = ["predict", str(ckpt), str(tmp_path / "in"), "--out", str(tmp_path / "pred")]
    assert main([*argv, "--device", "cpu", "--num-workers", "0"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"segkit: {ckpt} was trained with model 'timm_unet' from distribution 'acme_seg' 2.1, "
        "but 'timm_unet' is now the name of segkit's built-in model, and that is what this "
        f"builds (segkit {version}): the weights are loaded into another model, and the "
        "results may differ from the run's; acme_seg's, installed here, is hidden by the "
        "built-in (rename its entry point to use it; `segkit list models` shows it)"
    ]


def test_another_version_of_the_runs_plugin_says_so_and_the_same_says_nothing(
    tmp_path, capsys, site, said
):
    from helpers import make_distribution

    from segkit import registry

    make_distribution(site, "acme-seg", {"segkit.models": {"mine": "fake_acme:create"}},
                      {"fake_acme": MINE}, version="1.2")  # fmt: skip
    registry.reset()
    ckpt = save_checkpoint(tmp_path / "best.pt", model="mine")
    _recording(ckpt, "mine", "acme_seg", "1.2")
    open_trained(ckpt, device="cpu")
    assert capsys.readouterr().err == ""
    _recording(ckpt, "mine", "acme_seg", "1.0")
    open_trained(ckpt, device="cpu")
    assert capsys.readouterr().err == (
        f"segkit: {ckpt} was trained with model 'mine' from distribution 'acme_seg' 1.0; "
        "version 1.2 is installed here and builds it: where acme_seg changed it since, the "
        "results differ from the run's (`pip install acme_seg==1.0` to match)\n"
    )
