"""Dataset location: local copies, the cache, and downloads from a loopback HTTP server only."""

import functools
import http.server
import os
import threading
import zipfile
from pathlib import Path

import pytest

from kdefect.config import TrainConfig
from kdefect.data.datasets import load_splits
from kdefect.data.download import DownloadError, cache_dir, dataset_root, extract, find_root, sha256sum
from kdefect.errors import InputError

SHARED_ZIP = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "KolektorSDD.zip"


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A loopback HTTP server serving a folder with the shared KSDD archive and a small zip."""
    root = tmp_path_factory.mktemp("served")
    if SHARED_ZIP.is_file():
        os.symlink(SHARED_ZIP, root / "KolektorSDD.zip")
    with zipfile.ZipFile(root / "small.zip", "w") as zf:
        zf.writestr("kos01/Part0.jpg", b"not really a jpeg")
    handler = functools.partial(_Handler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def _leftovers(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


def test_download_verify_extract_and_reuse(server, tmp_path):
    base, _ = server
    digest = sha256sum(SHARED_ZIP)  # the shared copy differs from the official archive
    cache = tmp_path / "cache"
    _Handler.requests.clear()
    root = dataset_root("ksdd", cache=cache, url=f"{base}/KolektorSDD.zip", sha256=digest, progress=False)
    assert root == cache / "ksdd" / "KolektorSDD"
    assert len([p for p in root.iterdir() if p.name.startswith("kos")]) == 50
    assert (cache / "ksdd" / "KolektorSDD.zip").is_file()
    assert not [p for p in (cache / "ksdd").iterdir() if p.name.startswith(".")]  # no temporary files left
    # A second call uses the cache: no new request.
    assert dataset_root("ksdd", cache=cache, url=f"{base}/KolektorSDD.zip", sha256=digest) == root
    assert _Handler.requests == ["/KolektorSDD.zip"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    base, _ = server
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"small.zip has SHA-256 [0-9a-f]{64}, expected 0+"):
        dataset_root("ksdd", cache=cache, url=f"{base}/small.zip", sha256="0" * 64, progress=False)
    assert _leftovers(cache) == ["ksdd"]


def test_download_errors_name_the_url(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError, match=r"cannot download http://127.0.0.1:\d+/missing.zip: HTTP 404"):
        dataset_root("ksdd", cache=tmp_path, url=f"{base}/missing.zip", progress=False)
    assert _leftovers(tmp_path) == ["ksdd"]


def test_download_with_progress_bar(server, tmp_path, capsys):
    base, root = server
    path = tmp_path / "small.zip"
    from kdefect.data.download import download

    download(f"{base}/small.zip", path, sha256=sha256sum(root / "small.zip"), progress=True)
    assert path.read_bytes() == (root / "small.zip").read_bytes()
    assert "download small.zip" in capsys.readouterr().err


def test_no_official_source_for_kaggle_datasets(tmp_path):
    with pytest.raises(InputError, match=r"'dagm' cannot be downloaded automatically: get it from https://www.kaggle"):
        dataset_root("dagm", cache=tmp_path)


def test_local_folder_and_env(tmp_path, monkeypatch):
    (tmp_path / "KolektorSDD" / "kos01").mkdir(parents=True)
    assert dataset_root("ksdd", tmp_path) == tmp_path / "KolektorSDD"
    monkeypatch.setenv("KDEFECT_DATA_DIR", str(tmp_path))
    assert TrainConfig(dataset="ksdd").resolved_data_dir() == str(tmp_path)
    monkeypatch.setenv("KDEFECT_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_local_zip_extracted_once(tmp_path):
    archive = tmp_path / "KolektorSDD.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("kos01/Part0.jpg", b"x")
    cache = tmp_path / "cache"
    root = dataset_root("ksdd", archive, cache=cache)
    assert (root / "kos01" / "Part0.jpg").read_bytes() == b"x"
    (root / "marker").write_text("kept")
    assert dataset_root("ksdd", archive, cache=cache) == root and (root / "marker").is_file()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "nope", r"data directory .*nope does not exist"),
        (lambda d: d, r"data directory .* is empty"),
        (lambda d: (d / "other").mkdir() or d, r"does not hold the ksdd dataset: expected item folders kos01"),
    ],
)
def test_bad_data_dir(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        find_root("ksdd", make(tmp_path))


def test_bad_data_dir_through_the_loader(tmp_path):
    with pytest.raises(InputError, match=r"data directory .*missing does not exist"):
        load_splits(TrainConfig(dataset="ksdd", data_dir=str(tmp_path / "missing"), scale=0.125))


def test_corrupt_archive_writes_nothing(tmp_path):
    archive = tmp_path / "KolektorSDD.zip"
    archive.write_bytes(b"PK\x03\x04 this is not a zip")
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=r"cannot extract archive .*KolektorSDD.zip"):
        dataset_root("ksdd", archive, cache=cache)
    assert not cache.exists() or _leftovers(cache) in ([], ["ksdd"])


def test_crc_error_writes_nothing(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("kos01/Part0.jpg", b"A" * 1000)
    data = bytearray(archive.read_bytes())
    data[data.index(b"A" * 10)] = ord("B")  # corrupt the stored bytes, not the header
    archive.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"cannot extract archive .*bad.zip"):
        extract(archive, tmp_path / "out")
    assert _leftovers(tmp_path) == ["bad.zip"]


def test_unsafe_archive_member(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(InputError, match=r"unsafe member path '../evil.txt'"):
        extract(archive, tmp_path / "out")
    assert _leftovers(tmp_path) == ["evil.zip"]


def test_extract_race_with_a_second_process(tmp_path, monkeypatch):
    # Two trainings started at once both extract; the one that renames second must use the
    # first one's folder instead of failing with "Directory not empty".
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("kos01/Part0.jpg", b"x")
    dest = tmp_path / "out"
    real_replace = os.replace

    def other_process_wins(src, dst):
        (Path(dst) / "kos01").mkdir(parents=True)
        (Path(dst) / "kos01" / "Part0.jpg").write_bytes(b"first")
        real_replace(src, dst)  # raises: dst is a non-empty folder

    monkeypatch.setattr("kdefect.data.download.os.replace", other_process_wins)
    assert extract(archive, dest) == dest
    assert (dest / "kos01" / "Part0.jpg").read_bytes() == b"first"
    assert _leftovers(tmp_path) == ["a.zip", "out", "out/kos01", "out/kos01/Part0.jpg"]
