"""Nothing lost: resume after SIGKILL, clean Ctrl-C, NaN losses, bad files, failed writes
(in the background checkpoint writer too), --save-every."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN
from helpers import comparable, rows, tiny

import segkit
from segkit import registry
from segkit.cli import main
from segkit.config import RunConfig
from segkit.errors import CheckpointError, NumericalError, RunInterrupted
from segkit.training import checkpoint as ckpt_io
from segkit.training import engine
from segkit.training.engine import resume, train

TINY = [*TINY_RUN, "--seed", "3"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "segkit", *args]


def wait_for_epochs(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "metrics.csv").exists() and len(rows(run_dir)) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no {n} epochs in {timeout}s")


@pytest.fixture(params=[False, True], ids=["in-loop", "background"])
def writer_thread(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run the test with checkpoints written in the training loop (the CPU's way) and by
    the background thread (an accelerator's way)."""
    monkeypatch.setattr(engine, "_write_in_background", lambda runtime: request.param)
    return request.param


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_pets: Path, tmp_path: Path) -> None:
    args = [*TINY, "--data", str(tiny_pets), "--out", str(tmp_path), "--epochs", "4", "-q"]
    subprocess.run(cli("run", *args, "--name", "whole"), check=True, capture_output=True)

    proc = subprocess.Popen(
        cli("run", *args, "--name", "killed"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for_epochs(tmp_path / "killed", 2, proc)
        proc.send_signal(signal.SIGKILL)  # mid-epoch 3 (or between epochs): no chance to clean up
        proc.wait()
    finally:
        proc.kill()
    # metrics.csv can be one checkpoint ahead: epoch 2's last.pt may still have been being
    # written in the background, and then the kill leaves epoch 1's.
    done = ckpt_io.load(tmp_path / "killed" / "last.pt")["epoch"]
    assert 1 <= done < 4
    out = subprocess.run(
        cli("run", "--resume", str(tmp_path / "killed"), "-q"),
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.startswith("test dice ")

    whole, resumed = comparable(tmp_path / "whole"), comparable(tmp_path / "killed")
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole, resumed, strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["epoch"], key)
    import json

    sw = json.loads((tmp_path / "whole" / "summary.json").read_text())
    sr = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert sr["test_dice"] == pytest.approx(sw["test_dice"], abs=1e-5)


@pytest.mark.slow
def test_ctrl_c_keeps_the_checkpoint_and_says_how_to_resume(
    tiny_pets: Path, tmp_path: Path
) -> None:
    args = [
        *TINY,
        "--data",
        str(tiny_pets),
        "--out",
        str(tmp_path),
        "--epochs",
        "50",
        "--name",
        "int",
    ]
    # Ctrl-C's own disposition in the run: a test suite started in the background (`make
    # test-all &`, nohup) has SIGINT ignored, which its children inherit, and Python then
    # leaves it ignored: such a run rightly goes on after a SIGINT, as `nohup segkit run &`
    # must.
    proc = subprocess.Popen(
        cli("run", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for_epochs(tmp_path / "int", 1, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert f"Resume with: segkit run --resume {tmp_path / 'int'}" in err
    assert "the last checkpoint" in err
    assert ckpt_io.load(tmp_path / "int" / "last.pt")["epoch"] >= 1


def test_resume_of_a_missing_run_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["run", "--resume", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["run", "--resume", str(tmp_path / "empty")]) == 2
    assert "last.pt: checkpoint not found" in capsys.readouterr().err


@pytest.fixture
def nan_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake installed loss, `nan_at`, whose value is NaN on one given call."""
    site = tmp_path / "site"
    info = site / "fake_nan-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-nan\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[segkit.losses]\nnan_at = fake_nan:create\n")
    (site / "fake_nan.py").write_text(
        textwrap.dedent("""
        import torch
        import torch.nn.functional as F

        class NanAt(torch.nn.Module):
            def __init__(self, call):
                super().__init__()
                self.call, self.calls = call, 0

            def forward(self, logits, target):
                self.calls += 1
                loss = F.binary_cross_entropy_with_logits(logits.float(), target)
                return loss * float("nan") if self.calls == self.call else loss

        def create(call=7):
            return NanAt(call)
    """)
    )
    monkeypatch.syspath_prepend(str(site))
    registry.reset()
    yield
    registry.reset()
    sys.modules.pop("fake_nan", None)


@pytest.mark.slow
def test_nan_loss_stops_with_epoch_and_step_keeping_the_last_good_checkpoint(
    nan_loss, tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The background writer's way: the error waits for epoch 1's write in flight.
    monkeypatch.setattr(engine, "_write_in_background", lambda runtime: True)
    # 13 train images in batches of 4: 3 steps per epoch (the lone 13th image is dropped,
    # see build.lone_last_batch), then 1 valid batch (2 images). Call 7 is epoch 2's third
    # training step.
    config = tiny(tiny_pets, tmp_path, loss="nan_at", epochs=3, name="nan")
    assert len(registry.create("datasets", "oxford_pet", tiny_pets).samples("train")) == 13
    with pytest.raises(
        NumericalError, match=r"epoch 2, step 3: the loss is NaN or infinite.*on_nan='skip'"
    ):  # from Python: the keyword
        train(config, quiet=True)
    last = ckpt_io.load(tmp_path / "nan" / "last.pt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_nan_loss_can_be_skipped(nan_loss, tiny_pets: Path, tmp_path: Path) -> None:
    config = tiny(tiny_pets, tmp_path, loss="nan_at", epochs=2, name="skip", on_nan="skip")
    result = train(config, quiet=True)
    assert [r["skipped_steps"] for r in result.history] == [0, 1]
    assert result.test["dice"] == result.test["dice"]  # not NaN


@pytest.mark.slow
def test_corrupt_jpeg_is_skipped_and_listed_with_skip_bad_samples(
    broken_pets: Path, tmp_path: Path
) -> None:
    root = broken_pets
    name = (root / "annotations" / "trainval.txt").read_text().split()[0]
    jpeg = root / "images" / f"{name}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    config = tiny(root, tmp_path, epochs=1, name="skipbad", skip_bad_samples=True)
    result = train(config, quiet=True)
    listing = (result.run_dir / "bad_samples.txt").read_text()
    assert (
        "# 1 samples left out" in listing
        and f"{name}\t" in listing
        and "cannot decode image" in listing
    )
    train_ids = [s.id for s in registry.create("datasets", "oxford_pet", root).samples("train")]
    from segkit.build import drops_last_batch

    n = len(train_ids) - (name in train_ids)
    # --last-batch drop (the default): the partial last batch is left out.
    assert result.history[0]["train_images"] == n - (n % 4 if drops_last_batch(n, 4) else 0)


@pytest.mark.slow
def test_failed_checkpoint_write_names_the_path_and_keeps_the_previous_one(
    tiny_pets: Path, tmp_path: Path, monkeypatch, writer_thread: bool
) -> None:
    config = tiny(tiny_pets, tmp_path, epochs=3, name="full")
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        if obj["epoch"] >= 2:  # epoch 1 writes best.pt and last.pt; then the disk fills
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(
        CheckpointError,
        match=r"full/(best|last)\.pt: could not write checkpoint \(No space left on device\); the previous checkpoint, if any, is unchanged",
    ):
        train(config, quiet=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt_io.load(tmp_path / "full" / "last.pt")["epoch"] == 1
    assert not [p for p in (tmp_path / "full").iterdir() if p.name.endswith(".tmp")]
    assert ckpt_io.load(tmp_path / "full" / "best.pt")["epoch"] == 1


def test_checkpoint_of_a_model_no_longer_installed(tmp_path: Path, capsys) -> None:
    config = RunConfig(model="gone_model", image_size=32)
    state = {
        "format": ckpt_io.FORMAT,
        "version": ckpt_io.VERSION,
        "config": config.to_dict(),
        "model": {},
    }
    ckpt_io.save_atomic(state, tmp_path / "best.pt")
    assert main(["evaluate", str(tmp_path / "best.pt")]) == 2
    err = capsys.readouterr().err
    assert "was trained with model 'gone_model', which is not installed here" in err


@pytest.mark.slow
def test_resume_can_extend_a_finished_run(tiny_pets: Path, tmp_path: Path) -> None:
    config = tiny(tiny_pets, tmp_path, epochs=1, name="ext", keep_last=True)
    train(config, quiet=True)
    result = resume(tmp_path / "ext", epochs=2, quiet=True)
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert [int(r["epoch"]) for r in rows(tmp_path / "ext")] == [1, 2]


@pytest.mark.slow
def test_resume_restores_best_pt_lost_between_write_and_link(
    tiny_pets: Path, tmp_path: Path
) -> None:
    config = tiny(tiny_pets, tmp_path, epochs=1, name="link", keep_last=True)
    train(config, quiet=True)
    run = tmp_path / "link"
    assert ckpt_io.load(run / "best.pt")["kind"] == "weights"
    # Gone, as when a run of an older segkit (best.pt a hard link to last.pt) was killed
    # after writing last.pt and before linking best.pt to it.
    (run / "best.pt").unlink()
    result = resume(run, quiet=True)
    best, last = ckpt_io.load(run / "best.pt"), ckpt_io.load(run / "last.pt")
    assert best["kind"] == "weights" and best["epoch"] == 1
    assert all(torch.equal(best["model"][k], v) for k, v in last["model"].items())
    assert result.best_epoch == 1


@pytest.mark.slow
def test_save_every_2_resumes_from_its_last_save_and_matches_an_unbroken_run(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer_thread: bool
) -> None:
    options = {"epochs": 3, "save_every": 2, "seed": 4, "keep_last": True}
    whole = train(tiny(tiny_pets, tmp_path, name="whole", **options), quiet=True)
    assert ckpt_io.load(tmp_path / "whole" / "last.pt")["epoch"] == 3  # the last epoch, always

    real = engine.train_one_epoch
    seen = []

    def interrupted_in_epoch_3(*args, **kwargs):
        seen.append((kwargs["epoch"], (tmp_path / "cut" / "last.pt").exists()))
        if kwargs["epoch"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", interrupted_in_epoch_3)
    with pytest.raises(RunInterrupted, match="holds epoch 2"):
        train(tiny(tiny_pets, tmp_path, name="cut", **options), quiet=True)
    monkeypatch.setattr(engine, "train_one_epoch", real)
    assert seen[1] == (2, False)  # no last.pt after epoch 1 with --save-every 2
    resumed = resume(tmp_path / "cut", quiet=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(comparable(tmp_path / "whole"), comparable(tmp_path / "cut"), strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["epoch"], key)
    assert resumed.test["dice"] == pytest.approx(whole.test["dice"], abs=1e-5)


def _state(epoch: int) -> dict:
    return {"format": ckpt_io.FORMAT, "epoch": epoch, "w": torch.full((1000,), float(epoch))}


def test_background_write_on_a_full_disk_is_reported_and_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ckpt_io.BackgroundWriter()
    last = tmp_path / "last.pt"
    writer.submit([(_state(1), last)], epoch=1)
    writer.wait()
    real_save = torch.save

    def disk_fills(obj, f, *a, **k):
        f.write(b"PK\x03\x04partial")  # half a zip: the start of a real write
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_fills)
    writer.submit([(_state(2), last)], epoch=2)  # returns at once: the thread fails
    with pytest.raises(
        CheckpointError,
        match=r"last\.pt: could not write checkpoint \(No space left on device\); the previous",
    ):
        writer.wait()  # the next wait point reports it
    writer.wait()  # reported once
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt_io.load(last)["epoch"] == 1 and writer.saved_epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_written_in_the_loop_a_failed_write_is_raised_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ckpt_io.BackgroundWriter(background=False)
    writer.submit([(_state(1), tmp_path / "last.pt")], epoch=1)
    assert writer.saved_epoch == 1 and len(writer.write_seconds) == 1

    def disk_fills(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_fills)
    with pytest.raises(CheckpointError, match=r"last\.pt: could not write checkpoint"):
        writer.submit([(_state(2), tmp_path / "last.pt")], epoch=2)
    assert ckpt_io.load(tmp_path / "last.pt")["epoch"] == 1


def test_a_writer_dying_mid_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ckpt_io.BackgroundWriter()
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    writer.submit([(_state(1), best), (_state(1), last)], epoch=1)
    writer.wait()

    def dies(obj, f, *a, **k):
        f.write(b"PK\x03\x04partial")
        raise SystemExit("killed")  # as if the thread were stopped mid-write

    monkeypatch.setattr(torch, "save", dies)
    writer.submit([(_state(2), best), (_state(2), last)], epoch=2)
    with pytest.raises(CheckpointError, match=r"best\.pt: could not write checkpoint .*killed"):
        writer.wait()
    assert ckpt_io.load(best)["epoch"] == 1 and ckpt_io.load(last)["epoch"] == 1


def test_a_snapshot_is_a_copy_and_reuses_its_buffers() -> None:
    model = torch.nn.Linear(3, 2)
    snapshot = ckpt_io.Snapshot()
    first = snapshot.take({"model": model.state_dict(), "history": [{"epoch": 1}]})
    with torch.no_grad():
        model.weight.add_(1)
    assert not torch.equal(first["model"]["weight"], model.weight)
    second = snapshot.take({"model": model.state_dict(), "history": [{"epoch": 2}]})
    assert torch.equal(second["model"]["weight"], model.weight)
    assert second["model"]["weight"] is first["model"]["weight"]  # the same buffer, refilled
    assert first["history"] == [{"epoch": 1}]


def _channels_last_adam() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(conv.parameters(), fused=True)
    conv(torch.randn(2, 3, 6, 6)).sum().backward()
    optimizer.step()
    return conv, optimizer


def test_a_snapshot_keeps_channels_last_strides() -> None:
    # Found on an H100: moments snapshotted contiguous came back into channels_last
    # weights, and the fused CUDA Adam refused the resumed run's first step.
    conv, optimizer = _channels_last_adam()
    copy = ckpt_io.Snapshot().take({"optimizer": optimizer.state_dict()})
    for p, state in zip(conv.parameters(), copy["optimizer"]["state"].values(), strict=True):
        assert state["exp_avg"].stride() == p.stride()
        assert torch.equal(state["exp_avg"], optimizer.state[p]["exp_avg"])


def test_restored_adam_moments_take_their_parameters_layout() -> None:
    conv, optimizer = _channels_last_adam()
    saved = optimizer.state_dict()
    for state in saved["state"].values():  # as an older segkit's snapshot saved them
        for key in ("exp_avg", "exp_avg_sq"):
            state[key] = state[key].contiguous()
    fresh = torch.optim.Adam(conv.parameters(), fused=True)
    fresh.load_state_dict(saved)
    assert fresh.state[conv.weight]["exp_avg"].stride() != conv.weight.stride()
    ckpt_io.match_parameter_layout(fresh)
    for p in conv.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            assert fresh.state[p][key].stride() == p.stride()
            assert torch.equal(fresh.state[p][key], optimizer.state[p][key])


@pytest.mark.slow
def test_a_process_killed_mid_write_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time, torch
        from pathlib import Path
        from segkit.training import checkpoint as ckpt_io
        last = Path({str(tmp_path / "last.pt")!r})
        state = lambda e: {{"format": ckpt_io.FORMAT, "epoch": e, "w": torch.zeros(10**6)}}
        ckpt_io.save_atomic(state(1), last)
        def slow_save(obj, f, *a, **k):
            f.write(b"PK\\x03\\x04partial")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        torch.save = slow_save
        writer = ckpt_io.BackgroundWriter()
        writer.submit([(state(2), last)], epoch=2)
        writer.wait()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert ckpt_io.load(tmp_path / "last.pt")["epoch"] == 1


def test_resuming_a_run_of_an_older_segkit_keeps_metrics_csv_aligned(tmp_path: Path) -> None:
    from segkit.training.run_folder import RunFolder

    folder = RunFolder(tmp_path)
    old = {"epoch": 1, "train_loss": 0.5, "epoch_seconds": 2.0, "train_images": 13}
    folder.rewrite_metrics([old])  # what resume does with the old checkpoint's history
    new = {"epoch": 2, "train_loss": 0.4, "epoch_seconds": 1.0, "valid_s": 0.5}
    folder.append_metrics({**new, "train_images": 13})
    assert rows(tmp_path) == [
        {
            "epoch": "1",
            "train_loss": "0.5",
            "epoch_seconds": "2",
            "valid_s": "",
            "train_images": "13",
        },
        {
            "epoch": "2",
            "train_loss": "0.4",
            "epoch_seconds": "1",
            "valid_s": "0.5",
            "train_images": "13",
        },
    ]


@pytest.mark.slow
def test_a_finished_run_deletes_its_training_state_unless_keep_last(
    tiny_pets: Path, tmp_path: Path
) -> None:
    """By default a finished run keeps best.pt and the reports, not last.pt (3 times
    best.pt's size with Adam's moments), and resume says so; ``--keep-last`` keeps it."""
    result = train(tiny(tiny_pets, tmp_path, epochs=1, name="lean"), quiet=True)
    folder = result.run_dir
    assert not (folder / "last.pt").exists() and (folder / "best.pt").exists()
    assert (folder / "summary.json").exists()
    with pytest.raises(CheckpointError) as e:
        resume(folder, epochs=2, quiet=True)
    assert str(e.value) == (
        f"{folder}: the run finished and deleted its last.pt (a finished run keeps it only "
        "with --keep-last, keep_last=True in a RunConfig), so it cannot be resumed or extended; "
        "its best.pt still evaluates and predicts. To train longer, start a new run from epoch "
        f"1 (in {folder}-2; keep_last=True to extend it later): segkit.train(segkit.RunConfig."
        f"from_file({str(folder / 'config.json')!r}), out={str(tmp_path)!r}, name='lean-2', "
        f"epochs=N, keep_last=True) (or: segkit run --config {folder / 'config.json'} --name "
        "lean-2 --epochs N --keep-last)"
    )  # segkit.resume from Python: the call first
    assert main(["evaluate", str(folder / "best.pt"), "--num-workers", "0"]) == 0
    kept = train(tiny(tiny_pets, tmp_path, epochs=1, name="kept", keep_last=True), quiet=True)
    assert ckpt_io.load(kept.run_dir / "last.pt")["epoch"] == 1


@pytest.mark.slow
def test_a_run_that_fails_before_its_first_epoch_leaves_no_folder(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad file found in the first epoch: the run folder (config.json alone) is removed.
    Interrupted there (Ctrl-C, SIGTERM), the folder stays for the restart the message
    gives, and that restart, or the next run of that name, takes the same folder."""
    from segkit.errors import DataError

    real = engine.train_one_epoch

    def bad_file(*args, **kwargs):
        raise DataError(f"{tmp_path}/x.png: cannot decode image")

    monkeypatch.setattr(engine, "train_one_epoch", bad_file)
    with pytest.raises(DataError, match="x.png: cannot decode image"):
        train(tiny(tiny_pets, tmp_path, epochs=1, name="bad"), quiet=True)
    assert not list(tmp_path.iterdir())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train_one_epoch", interrupted)
    with pytest.raises(RunInterrupted) as e:
        train(tiny(tiny_pets, tmp_path, epochs=1), quiet=True)  # named <model>-<time>
    (folder,) = tmp_path.iterdir()
    assert [p.name for p in folder.iterdir()] == ["config.json"]
    assert str(e.value) == (
        "interrupted during epoch 1; no checkpoint had been written yet. Start it again "
        f"with: segkit.train(segkit.RunConfig.from_file({str(folder / 'config.json')!r}), "
        f"out={str(tmp_path)!r}, name={folder.name!r}) (or: segkit run --config "
        f"{folder / 'config.json'} --name {folder.name})"
    )  # started from Python: the call first, then the command
    monkeypatch.setattr(engine, "train_one_epoch", real)
    restart = str(e.value).split("with: ", 1)[1].split(" (or: ")[0]
    result = eval(restart, {"segkit": segkit}, {})  # as a notebook user pastes it
    assert result.run_dir == folder and [p.name for p in tmp_path.iterdir()] == [folder.name]
    shutil.rmtree(folder)
    monkeypatch.setattr(engine, "train_one_epoch", interrupted)
    with pytest.raises(RunInterrupted):
        train(tiny(tiny_pets, tmp_path, epochs=1), quiet=True)
    (folder,) = tmp_path.iterdir()
    monkeypatch.setattr(engine, "train_one_epoch", real)
    result = train(tiny(tiny_pets, tmp_path, epochs=1, name=folder.name), quiet=True)
    assert result.run_dir == folder and [p.name for p in tmp_path.iterdir()] == [folder.name]
