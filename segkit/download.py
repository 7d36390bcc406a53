"""``segkit data fetch``: download and unpack the official Oxford-IIIT Pet archives.

Nothing in segkit downloads implicitly; this runs only when a user asks for it.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from segkit.errors import DataError

OFFICIAL_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data"
ARCHIVES = ("images.tar.gz", "annotations.tar.gz")


def fetch_oxford_pet(root: Path, base_url: str | None = None) -> Path:
    """Download ``images.tar.gz`` and ``annotations.tar.gz`` into ``root`` and unpack them.

    Already-unpacked parts are kept. Archives are unpacked with tarfile's ``data`` filter,
    which refuses members that would land outside ``root``.

    Raises:
        DataError: the download failed or an archive is corrupt; names the URL or file.
    """
    base = (base_url or OFFICIAL_URL).rstrip("/")
    root.mkdir(parents=True, exist_ok=True)
    for archive in ARCHIVES:
        folder = root / archive.split(".")[0]
        if folder.is_dir() and any(folder.iterdir()):
            continue
        url = f"{base}/{archive}"
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            target = Path(tmp) / archive
            try:
                with urllib.request.urlopen(url, timeout=60) as r, target.open("wb") as f:
                    shutil.copyfileobj(r, f, length=1 << 20)
            except (urllib.error.URLError, OSError) as e:
                raise DataError(
                    f"{url}: download failed ({getattr(e, 'reason', e)}). Without a network, "
                    f"download {archive} elsewhere and unpack it into {root}"
                ) from None
            try:
                with tarfile.open(target) as tar:
                    tar.extractall(root, filter="data")
            except (tarfile.TarError, OSError, EOFError) as e:
                raise DataError(f"{url}: archive is corrupt ({e}); run the command again") from None
    return root
