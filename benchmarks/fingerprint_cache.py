"""``segkit evaluate``'s time with the fingerprint cache cold and warm, in one process.

A 1-epoch ``unet`` at 32 px on a small generated set gives a checkpoint that records its
images' fingerprints; ``evaluate`` then scores a larger generated folder (other samples:
every image is hashed and looked up, then scored). Cold: an empty ``$SEGKIT_CACHE``
fingerprints folder, every image hashed; warm: the same files, their states remembered.
The two alternate ``--repeats`` times; the medians and their ratio are printed, with the
hashing alone (:func:`segkit.training.checkpoint.fingerprints_of`) cold and warm.

    python benchmarks/fingerprint_cache.py --count 400 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def _age(folder: Path) -> None:
    """Date every file an hour back: a dataset is older than the cache's settling time."""
    old = time.time_ns() - 3600 * 10**9
    for path in folder.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(old, old))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=400, help="images of the folder scored")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="segkit-prints-"))
    os.environ["SEGKIT_CACHE"] = str(work / "cache")

    import segkit
    from segkit.config import RunConfig
    from segkit.system.file_hashes import cache_folder
    from segkit.training import checkpoint as ckpt_io
    from segkit.training import engine
    from segkit_datasets.synthetic import write_synthetic

    train = write_synthetic(work / "train", count=20, seed=7)
    scored = write_synthetic(work / "scored", count=args.count, seed=11)
    _age(scored)
    config = RunConfig(
        model="unet", image_size=32, batch_size=4, num_workers=0, epochs=1,
        data=str(train), out=str(work / "runs"), device="cpu",
    )  # fmt: skip
    best = engine.train(config, quiet=True).run_dir / "best.pt"
    samples = segkit.registry.create("datasets", "oxford_pet", scored)
    listed = [s for split in ("train", "valid", "test") for s in samples.samples(split)]
    size = sum(Path(s.image).stat().st_size for s in listed) / 2**20

    times: dict[str, list[float]] = {"cold": [], "warm": [], "hash cold": [], "hash warm": []}
    for _ in range(args.repeats):
        for state in ("cold", "warm"):
            if state == "cold":
                shutil.rmtree(cache_folder(), ignore_errors=True)
            t0 = time.perf_counter()
            ckpt_io.fingerprints_of(listed)
            times[f"hash {state}"].append(time.perf_counter() - t0)
            if state == "cold":
                shutil.rmtree(cache_folder(), ignore_errors=True)
            t0 = time.perf_counter()
            result = segkit.evaluate(best, data=str(scored), device="cpu", num_workers=0)
            times[state].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{len(listed)} images, {size:.1f} MB; {int(result.metrics['images'])} scored")
    for key, value in med.items():
        print(f"{key:>10}: {value:.3f} s (median of {args.repeats})")
    print(f"evaluate warm/cold: {med['warm'] / med['cold']:.3f}")
    print(f"hashing warm/cold: {med['hash warm'] / med['hash cold']:.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
