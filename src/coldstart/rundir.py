"""Run directories that never lose data: a marker, an exclusive lock, and the rules for replacing one.

Every run directory holds `.coldstart-run`, created first thing by `run` / `resume`. It is both

- the **marker**: `--overwrite` (and the study runner) only ever empties a folder that is empty or marked, so
  `--output . --overwrite` cannot wipe a folder of someone's files; folders written before the marker existed
  are recognised by their signature (config.json and split/);
- the **lock**: the process working in the folder holds `fcntl.flock` on it (non-blocking, exclusive) and
  writes its pid into it, so a second run or resume of the same folder stops with "in use by another process
  (pid N)" instead of mixing its files with the first one's. The kernel drops the lock when the process dies,
  so a killed run never leaves a stale lock behind.

A marked folder with neither metrics.json nor a checkpoint is a run that failed before it had anything to keep
(bad settings, a crash while loading): a new run replaces it without `--overwrite`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from coldstart.errors import DataError

log = logging.getLogger("coldstart")

MARKER = ".coldstart-run"


def is_run_dir(folder: Path) -> bool:
    """Whether `folder` was written by `run`: the marker, or (older runs) config.json next to split/."""
    return (folder / MARKER).exists() or ((folder / "config.json").is_file() and (folder / "split").is_dir())


def has_results(folder: Path) -> bool:
    """Whether a run directory holds something worth keeping: metrics.json or an epoch checkpoint."""
    checkpoints = folder / "checkpoint"
    return (folder / "metrics.json").exists() or (checkpoints.is_dir() and any(checkpoints.rglob("checkpoint*.pt")))


def replace_problem(folder: Path, overwrite: bool) -> str | None:
    """Why `run` may not write into `folder` (None: it may, after emptying it).

    Args:
        folder: the run directory asked for.
        overwrite: whether --overwrite was given.
    """
    if not folder.exists():
        return None
    if not folder.is_dir():
        return "exists and is not a folder; choose another --output"
    if not any(p.name != MARKER for p in folder.iterdir()):
        return None
    if not is_run_dir(folder):
        if overwrite:
            return (f"is not a run directory (no {MARKER} marker), so --overwrite will not delete it; "
                    "choose another --output")
        return "exists, is not empty and is not a run directory; choose another --output"
    if has_results(folder) and not overwrite:
        if (folder / "metrics.json").exists():
            return "holds a finished run; pass --overwrite to replace it or choose another --output"
        return (f"holds an unfinished run with a checkpoint; continue it with --resume {folder}, "
                "or pass --overwrite to start again")
    return None


def clear(folder: Path) -> None:
    """Remove everything in a run directory except the marker (which the caller holds locked)."""
    for entry in folder.iterdir():
        if entry.name == MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class RunLock:
    """Exclusive, non-blocking lock on a run directory for the duration of a `with` block.

    Creates the folder and its marker when absent. Raises DataError when another process holds the lock.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / MARKER
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataError(f"run directory is in use by another process (pid {holder})", path=self.folder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def read_json(path: Path, what_to_do: str) -> Any:
    """json.loads a run directory file; DataError naming the file and `what_to_do` when it is damaged."""
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"damaged file ({type(exc).__name__}: {exc}); {what_to_do}", path=path) from exc
