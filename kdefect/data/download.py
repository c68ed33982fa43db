"""Where a dataset's files are: a local copy (folder or archive) or a verified download.

Order: an explicit ``data_dir`` (option or ``$KDEFECT_DATA_DIR``) -> an
earlier download in the cache (``$KDEFECT_CACHE_DIR``, default
``~/.cache/kdefect``) -> a download from the dataset's official source,
verified by SHA-256, with a progress bar. Downloads and extractions are
atomic: they go to a temporary name in the cache and are renamed when
complete, so an interrupted or failed run leaves nothing half-written.

A local copy may be the extracted folder (or a folder holding it) or the
archive itself (``.zip``), which is extracted once into the cache.
"""

import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kdefect.errors import InputError


class DownloadError(InputError):
    """A dataset could not be fetched or did not match its checksum.

    Example:
    >>> issubclass(DownloadError, ValueError)
    True
    """


@dataclass(frozen=True)
class Source:
    """Where a dataset is published.

    Args:
        url: official download address (None: no direct download exists).
        sha256: checksum of the archive served at ``url``.
        filename: archive name in the cache.
        page: where a person gets the dataset when there is no direct download.

    Example:
    >>> SOURCES["ksdd"].filename
    'KolektorSDD.zip'
    """

    url: str = None
    sha256: str = None
    filename: str = None
    page: str = None


SOURCES = {
    "ksdd": Source(
        url="https://go.vicos.si/kolektorsdd",
        sha256="65dc621693418585de9c4467d1340ea7958a6181816f0dc2883a1e8b61f9d4dc",
        filename="KolektorSDD.zip",
        page="https://www.vicos.si/resources/kolektorsdd/",
    ),
    "ksdd2": Source(page="https://www.vicos.si/resources/kolektorsdd2/"),
    "dagm": Source(page="https://www.kaggle.com/datasets/mhskjelvareid/dagm-2007-competition-dataset-optical-inspection"),
    "steel": Source(page="https://www.kaggle.com/c/severstal-steel-defect-detection/data"),
}


def _is_ksdd(path):
    return any(p.is_dir() and re.fullmatch(r"kos\d+", p.name) for p in path.iterdir())


def _is_dagm(path):
    return any(p.is_dir() and re.fullmatch(r"Class\d+", p.name) for p in path.iterdir())


def _is_steel(path):
    return (path / "train.csv").is_file() and (path / "train_images").is_dir()


def _is_ksdd2(path):
    return (path / "train").is_dir() and (path / "test").is_dir() and any((path / "train").glob("*_GT.png"))


def _is_folder(path):
    return (path / "images").is_dir() or ((path / "train").is_dir() and (path / "test").is_dir())


MARKERS = {
    "ksdd": (_is_ksdd, "item folders kos01 ... kos50"),
    "dagm": (_is_dagm, "class folders Class1 ... Class10"),
    "steel": (_is_steel, "train.csv and train_images/"),
    "ksdd2": (_is_ksdd2, "train/ and test/ with <id>.png and <id>_GT.png"),
    "folder": (_is_folder, "images/ (and optional masks/), or train/ and test/ holding them"),
}


def cache_dir():
    """The download cache: ``$KDEFECT_CACHE_DIR`` or ``~/.cache/kdefect``.

    Example:
    >>> os.environ["KDEFECT_CACHE_DIR"] = "/tmp/kd"; str(cache_dir())
    '/tmp/kd'
    >>> del os.environ["KDEFECT_CACHE_DIR"]
    """
    return Path(os.environ.get("KDEFECT_CACHE_DIR") or Path.home() / ".cache" / "kdefect")


def sha256sum(path, chunk=1 << 20):
    """Hex SHA-256 of a file.

    Example:
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x"; _ = p.write_bytes(b"abc")
    >>> sha256sum(p)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url, dest, sha256=None, progress=True, timeout=60):
    """Download ``url`` to ``dest`` atomically, checking ``sha256`` when given.

    The bytes go to a temporary file beside ``dest`` (hashed on the fly, with
    a tqdm progress bar) that is renamed to ``dest`` only when complete and
    verified; on any failure it is removed and ``DownloadError`` is raised.

    Example (any URL urllib reads):
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); _ = (d / "src").write_bytes(b"abc")
    >>> download((d / "src").as_uri(), d / "dst", progress=False).read_bytes()
    b'abc'
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part", delete=False)
    tmp = Path(handle.name)
    digest = hashlib.sha256()
    try:
        with handle, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"download {dest.name}", disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    handle.write(block)
                    digest.update(block)
                    bar.update(len(block))
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise DownloadError(
                f"download of {url} has SHA-256 {digest.hexdigest()}, expected {sha256}; "
                "the file was discarded (retry, or download it yourself and pass it as data_dir)"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as err:
        if isinstance(err, urllib.error.HTTPError):
            why = f"HTTP {err.code} {err.reason}"
        else:
            why = getattr(err, "reason", None) or err
        raise DownloadError(
            f"cannot download {url}: {why} "
            "(download it yourself and pass the folder or archive as data_dir / KDEFECT_DATA_DIR)"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def extract(archive, dest):
    """Extract a ``.zip`` archive into the new folder ``dest`` atomically; returns ``dest``.

    Member paths are checked before anything is written (no absolute paths
    or ``..``) and CRCs while extracting; extraction goes to a temporary folder beside ``dest`` that is
    renamed when complete. An existing ``dest`` is returned untouched, also when another
    process (a second training started at the same time) finishes extracting first.

    Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with zipfile.ZipFile(d / "a.zip", "w") as z: z.writestr("kos01/x.txt", "hi")
    >>> sorted(p.name for p in extract(d / "a.zip", d / "out").iterdir())
    ['kos01']
    """
    archive, dest = Path(archive), Path(dest)
    if dest.is_dir():
        return dest
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                parts = Path(member).parts
                if member.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise InputError(f"archive {archive} has an unsafe member path {member!r}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
            try:
                zf.extractall(tmp)  # checks every member's CRC
                try:
                    os.replace(tmp, dest)
                except OSError:
                    if not dest.is_dir():
                        raise
                    # another process extracted the same archive and renamed first: use its copy
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise InputError(f"cannot extract archive {archive}: {err} (expected a valid .zip file)") from None
    return dest


def find_root(name, path):
    """The folder at or below ``path`` (two levels at most) laid out like dataset ``name``.

    Raises ``InputError`` for a missing or empty folder or one that does not
    hold the dataset's layout.

    Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "KolektorSDD" / "kos01").mkdir(parents=True)
    >>> find_root("ksdd", d).name
    'KolektorSDD'
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"data directory {path} does not exist")
    if not path.is_dir():
        raise InputError(f"data directory {path} is not a folder (nor a .zip archive)")
    if not any(path.iterdir()):
        raise InputError(f"data directory {path} is empty")
    check, expected = MARKERS[name]
    level = [path]
    for _ in range(3):
        for candidate in level:
            if check(candidate):
                return candidate
        level = sorted(c for p in level for c in p.iterdir() if c.is_dir() and not c.name.startswith("."))
    raise InputError(f"data directory {path} does not hold the {name} dataset: expected {expected}")


def _local_archive_dest(name, archive, cache):
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache / name / f"{archive.stem}-{key}"


def dataset_root(name, data_dir=None, cache=None, url=None, sha256=None, progress=True):
    """The folder holding dataset ``name``, fetching it into the cache when needed.

    Args:
        name: ``ksdd``, ``dagm``, ``steel``, ``ksdd2`` or ``folder``.
        data_dir: a local copy: the dataset folder, a folder holding it, or
            its ``.zip`` archive (extracted once into the cache). None: look
            in the cache, then download (KSDD only has a direct source).
        cache: cache folder (default ``cache_dir()``).
        url, sha256: override the official source (tests use a loopback server).
        progress: show a progress bar while downloading.

    Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "kos01").mkdir()
    >>> dataset_root("ksdd", d) == d
    True
    """
    cache = Path(cache) if cache is not None else cache_dir()
    if data_dir is not None:
        local = Path(data_dir).expanduser()
        if local.is_file() and local.suffix.lower() == ".zip":
            return find_root(name, extract(local, _local_archive_dest(name, local, cache)))
        return find_root(name, local)
    source = SOURCES.get(name, Source())
    url = url or source.url
    if url is None:
        where = f" from {source.page}" if source.page else ""
        raise InputError(
            f"dataset {name!r} cannot be downloaded automatically: get it{where} and pass its "
            "folder (or archive) as data_dir or in KDEFECT_DATA_DIR"
        )
    sha256 = sha256 or source.sha256
    filename = source.filename or f"{name}.zip"
    target = cache / name / Path(filename).stem
    if not target.is_dir():
        archive = cache / name / filename
        if not (archive.is_file() and (sha256 is None or sha256sum(archive) == sha256.lower())):
            download(url, archive, sha256, progress)
        extract(archive, target)
    return find_root(name, target)
