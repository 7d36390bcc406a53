"""Oxford-IIIT Pet download, served from a local folder (file://) or 127.0.0.1: no network."""

from __future__ import annotations

import functools
import http.server
import io
import re
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from segkit.errors import DataError
from segkit_datasets.oxford_pet import fetch_oxford_pet

IMAGES = {"images/Abyssinian_1.jpg": b"\xff\xd8jpeg-1", "images/beagle_2.jpg": b"\xff\xd8jpeg-2"}
ANNOTATIONS = {
    "annotations/trainval.txt": b"Abyssinian_1 1 1 1\n",
    "annotations/test.txt": b"beagle_2 2 2 1\n",
    "annotations/trimaps/Abyssinian_1.png": b"\x89PNG-1",
}


def write_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    """A folder holding both tiny archives, outside the download root."""
    folder = tmp_path / "server"
    write_tar_gz(folder / "images.tar.gz", IMAGES)
    write_tar_gz(folder / "annotations.tar.gz", ANNOTATIONS)
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data" / "oxford-pet"


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_unpacked(root: Path) -> None:
    assert files_under(root) == {**IMAGES, **ANNOTATIONS}
    # No temporary folder or archive left beside the two parts.
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "images"]


def test_both_archives_are_unpacked_into_root(server_dir: Path, root: Path) -> None:
    assert fetch_oxford_pet(root, base_url=server_dir.as_uri()) == root
    assert_unpacked(root)


def test_trailing_slash_in_base_url(server_dir: Path, root: Path) -> None:
    fetch_oxford_pet(root, base_url=server_dir.as_uri() + "/")
    assert_unpacked(root)


@pytest.fixture
def http_url(server_dir: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(server_dir))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/pets"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_over_http(server_dir: Path, root: Path, http_url: str) -> None:
    # SimpleHTTPRequestHandler serves server_dir at /, so move the archives under /pets.
    (server_dir / "pets").mkdir()
    for name in ("images.tar.gz", "annotations.tar.gz"):
        (server_dir / name).rename(server_dir / "pets" / name)
    fetch_oxford_pet(root, base_url=http_url)
    assert_unpacked(root)


def test_http_404_raises_data_error_naming_the_url(root: Path, http_url: str) -> None:
    url = f"{http_url}/images.tar.gz"  # nothing under /pets
    with pytest.raises(DataError, match=re.escape(url) + r": download failed \(File not found\)"):
        fetch_oxford_pet(root, base_url=http_url)
    assert list(root.iterdir()) == []


def test_unpacked_parts_are_kept_and_not_downloaded_again(tmp_path: Path, root: Path) -> None:
    # Only annotations.tar.gz is served: fetching images.tar.gz would fail.
    folder = tmp_path / "only-annotations"
    write_tar_gz(folder / "annotations.tar.gz", ANNOTATIONS)
    (root / "images").mkdir(parents=True)
    (root / "images" / "mine.jpg").write_bytes(b"kept")
    fetch_oxford_pet(root, base_url=folder.as_uri())
    assert files_under(root) == {"images/mine.jpg": b"kept", **ANNOTATIONS}
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "images"]


def test_fully_unpacked_root_needs_no_download(server_dir: Path, root: Path) -> None:
    fetch_oxford_pet(root, base_url=server_dir.as_uri())
    # Both parts are there: a second call never touches the (now missing) server.
    fetch_oxford_pet(root, base_url=(server_dir / "gone").as_uri())
    assert_unpacked(root)


def test_empty_existing_folder_is_downloaded(server_dir: Path, root: Path) -> None:
    (root / "images").mkdir(parents=True)
    fetch_oxford_pet(root, base_url=server_dir.as_uri())
    assert_unpacked(root)


def test_missing_file_raises_data_error_naming_the_url_and_what_to_do(
    tmp_path: Path, root: Path
) -> None:
    base = (tmp_path / "no-such-folder").as_uri()
    url = f"{base}/images.tar.gz"
    with pytest.raises(DataError, match=re.escape(url) + ": download failed") as info:
        fetch_oxford_pet(root, base_url=base)
    message = str(info.value)
    assert f"download images.tar.gz elsewhere and unpack it into {root}" in message
    assert list(root.iterdir()) == []  # no temporary folder left behind


def test_unreachable_host_raises_data_error(root: Path) -> None:
    # A port nothing listens on: the connection is refused at once.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/pets"
    with pytest.raises(DataError, match=re.escape(f"{base}/images.tar.gz: download failed")):
        fetch_oxford_pet(root, base_url=base)
    assert list(root.iterdir()) == []


def test_corrupt_archive_raises_data_error_naming_the_url(server_dir: Path, root: Path) -> None:
    (server_dir / "images.tar.gz").write_bytes(b"this is not a gzip file" * 10)
    url = f"{server_dir.as_uri()}/images.tar.gz"
    with pytest.raises(DataError, match=re.escape(url) + ": archive is corrupt"):
        fetch_oxford_pet(root, base_url=server_dir.as_uri())
    assert list(root.iterdir()) == []


def test_member_escaping_root_is_refused(server_dir: Path, root: Path, tmp_path: Path) -> None:
    write_tar_gz(
        server_dir / "images.tar.gz",
        {"images/ok.jpg": b"fine", "../evil": b"pwned", "images/../../evil2": b"pwned"},
    )
    root.mkdir(parents=True)

    def outside_root() -> list[Path]:
        return sorted(p for p in tmp_path.rglob("*") if p != root and root not in p.parents)

    before = outside_root()
    url = f"{server_dir.as_uri()}/images.tar.gz"
    with pytest.raises(DataError, match=re.escape(url)):
        fetch_oxford_pet(root, base_url=server_dir.as_uri())
    assert not (root.parent / "evil").exists()
    assert not (root.parent / "evil2").exists()
    assert outside_root() == before
    assert not [p for p in root.iterdir() if p.name not in ("images", "annotations")]


def test_rerun_after_truncated_archive_completes_the_folder(server_dir: Path, root: Path) -> None:
    big = bytes(range(256)) * 2000  # 512 kB, so the cut lands inside this member
    members = {"images/a.jpg": b"first", "images/big.jpg": big, "images/z.jpg": b"last"}
    good = write_tar_gz(server_dir / "images.tar.gz", members).read_bytes()
    cut = server_dir.parent / "cut"
    cut.mkdir()
    (cut / "images.tar.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="run the command again"):
        fetch_oxford_pet(root, base_url=cut.as_uri())
    # As the message says: run it again, now with the whole archive.
    fetch_oxford_pet(root, base_url=server_dir.as_uri())
    assert files_under(root / "images") == {
        k.removeprefix("images/"): v for k, v in members.items()
    }
