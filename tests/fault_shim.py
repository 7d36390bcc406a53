"""``segkit`` with a kill point: ``python tests/fault_shim.py run ...`` is ``segkit run ...``
that SIGKILLs itself at the instant ``SEGKIT_TEST_KILL_AT`` names (the fault campaign of
tests/test_faults.py; nothing else uses it).

A self-inflicted SIGKILL at a chosen line is the same event for everything outside the
process as a kill from outside landing at that instant, without the luck of timing: the
campaign uses both. The points are the windows a random kill rarely hits:

======================  ================================================================
``ckpt-mid-write``      inside ``torch.save`` of ``last.pt``, half its bytes written
``best-first-write``    inside the process's first ``torch.save`` of ``best.pt`` (a new
                        run: the run's first checkpoint), half its bytes written
``ckpt-before-rename``  ``last.pt``'s temporary file complete and synced, not renamed
``best-then-last``      ``best.pt`` renamed into place, ``last.pt`` not yet begun
``background-write``    checkpoints written by the background thread (the GPU path),
                        killed from that thread mid-write while the next epoch trains
``validation``          after the first validation batch
``metrics-row``         ``metrics.csv``'s new version written, not renamed
``epoch-1``             after the first training batch of the first epoch (no checkpoint)
``epoch-1-hold``        the same instant, but the run waits there (up to 5 minutes, then
                        dies), having written the file ``SEGKIT_TEST_MARK`` names: a live
                        run in its first epoch, for the test to act on
``config``              the run folder made, ``config.json`` not yet in it
``test-phase``          after the first batch of the test pass (training finished)
``report``              ``predictions.png`` written, not renamed
``resume-rewrite``      a resumed run's cut-back ``metrics.csv``, not renamed
``predict-10th``        ``segkit predict``: the 10th overlay written, not renamed
======================  ================================================================
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    import torch

    from segkit.training import engine

    real_replace = os.replace
    real_save = torch.save
    resumed = "--resume" in sys.argv

    overlays = [0]

    def replace(src, dst, *args, **kwargs):
        name = os.path.basename(str(dst))
        if point == "predict-10th" and name.endswith("_overlay.png"):
            overlays[0] += 1
            if overlays[0] == 10:
                die()
        if point == "ckpt-before-rename" and name == "last.pt":
            die()
        if point == "metrics-row" and name == "metrics.csv" and not resumed:
            die()
        if point == "resume-rewrite" and name == "metrics.csv" and resumed:
            die()
        if point == "config" and name == "config.json":
            die()
        if point == "report" and name == "predictions.png":
            die()
        real_replace(src, dst, *args, **kwargs)
        if point == "best-then-last" and name == "best.pt":
            die()

    def save(obj, f, *args, **kwargs):
        name = os.readlink(f"/proc/self/fd/{f.fileno()}") if hasattr(f, "fileno") else ""
        first_best = point == "best-first-write" and ".best.pt." in name
        if first_best or (point in ("ckpt-mid-write", "background-write") and ".last.pt." in name):
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            die()
        return real_save(obj, f, *args, **kwargs)

    os.replace = replace  # segkit.system.files renames through it
    torch.save = save
    if point == "background-write":
        engine._write_in_background = lambda runtime: True

    real_evaluate, real_train = engine.evaluate, engine.train_one_epoch

    def first_batch_then_die(loader):
        for i, batch in enumerate(loader):
            if i == 1:
                hold_or_die()
            yield batch
        hold_or_die()  # a loader of one batch: after it

    def hold_or_die():
        if point == "epoch-1-hold":
            with open(os.environ["SEGKIT_TEST_MARK"], "w") as mark:
                mark.write(str(os.getpid()))
            time.sleep(300)
        die()

    def evaluate(model, loader, *args, **kwargs):
        testing = "meter" in kwargs  # the test pass keeps per-image scores
        if (point == "validation" and not testing) or (point == "test-phase" and testing):
            loader = first_batch_then_die(loader)
        return real_evaluate(model, loader, *args, **kwargs)

    class _Sized:
        def __init__(self, loader):
            self.loader = loader

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            return first_batch_then_die(self.loader)

    def train_one_epoch(model, loader, *args, **kwargs):
        if point in ("epoch-1", "epoch-1-hold") and kwargs.get("epoch") == 1:
            loader = _Sized(loader)
        return real_train(model, loader, *args, **kwargs)

    engine.evaluate = evaluate
    engine.train_one_epoch = train_one_epoch


if __name__ == "__main__":
    # Loader workers import this file again (as __mp_main__): nothing above runs there.
    point = os.environ.get("SEGKIT_TEST_KILL_AT", "")
    if point:
        install(point)
    from segkit.cli import main

    sys.exit(main(sys.argv[1:]))
