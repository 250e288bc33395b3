"""Where datasets live: COLDSTART_DATA_DIR, the user cache, or an official download with a checksum."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from coldstart.errors import DataError

DATA_DIR_ENV = "COLDSTART_DATA_DIR"


def temp_sibling(path: Path, suffix: str = "") -> tuple[int, str]:
    """(fd, name) of a new temporary file beside `path`, for write-then-rename.

    mkstemp creates files readable by their owner only; the final file gets the mode a plain open() would give
    (0666 minus the umask), so reports and models stay readable by whoever could read the folder.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, name


def data_dirs() -> list[Path]:
    """Folders searched for a dataset, in order: $COLDSTART_DATA_DIR (may list several, os.pathsep) then the cache."""
    dirs = [Path(p).expanduser() for p in os.environ.get(DATA_DIR_ENV, "").split(os.pathsep) if p]
    return dirs + [cache_dir()]


def cache_dir() -> Path:
    """The per-user cache: $XDG_CACHE_HOME/coldstart (default ~/.cache/coldstart)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "coldstart"


def find_dataset_dir(name: str, required: tuple[str, ...]) -> Path | None:
    """Return the first `<dir>/<name>` among `data_dirs()` that holds all `required` files, or None."""
    for base in data_dirs():
        folder = base / name
        if folder.is_dir() and all((folder / r).exists() for r in required):
            return folder
    return None


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str | None = None) -> Path:
    """Download `url` to `dest` atomically (temporary file, then rename) and check its MD5.

    Args:
        url: http(s) or file:// address.
        dest: final path of the file.
        md5: expected hex digest; a mismatch deletes the download and raises DataError.

    Returns:
        `dest`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = temp_sibling(dest, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
        if md5 is not None and (got := md5sum(tmp)) != md5:
            raise DataError(f"checksum mismatch: expected md5 {md5}, got {got}", path=url)
        os.replace(tmp, dest)
    except OSError as exc:
        raise DataError(f"download failed ({exc}); set {DATA_DIR_ENV} to a folder holding the data", path=url) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch_zip(name: str, url: str, md5: str | None, inner: str, required: tuple[str, ...]) -> Path:
    """Download an official archive into the cache and unpack its folder `inner` as `<cache>/<name>`.

    Args:
        name: dataset folder name in the cache.
        url: archive address.
        md5: expected MD5 of the archive.
        inner: the folder inside the archive that holds the files.
        required: files that must be present after unpacking.

    Returns:
        The dataset folder.
    """
    target = cache_dir() / name
    archive = download(url, cache_dir() / f"{name}.zip", md5)
    staging = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=f"{name}.unpack"))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
        src = staging / inner
        missing = [r for r in required if not (src / r).exists()]
        if missing:
            raise DataError(f"archive lacks {', '.join(missing)}", path=archive)
        if target.exists():
            shutil.rmtree(target)
        os.replace(src, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
