"""The on-disk feature cache: one .npz (+ a .json report) per extraction, keyed by what determines it.

The key hashes the dataset name, the preset, the extractor and its settings and version, and a hash of the
exact content the extractor reads (texts, label matrices, image bytes' CRCs, the row order). Change any of
them and the key changes, so a stale entry is never read. Entries are written to a temporary file and renamed,
so an interrupted extraction leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from coldstart.data.modalities import Dense, Image, MultiLabel, Sparse, Text
from coldstart.data.paths import cache_dir
from coldstart.models.base import atomic_write

CACHE_ENV = "COLDSTART_FEATURE_CACHE"


def default_cache_dir() -> Path:
    """$COLDSTART_FEATURE_CACHE, else <the coldstart cache>/features."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else cache_dir() / "features"


def content_hash(*parts: Any) -> str:
    """SHA-256 over strings, string lists, arrays, sparse matrices and modalities (hex)."""
    digest = hashlib.sha256()
    for part in parts:
        _update(digest, part)
    return digest.hexdigest()


def _update(digest, part: Any) -> None:
    if part is None:
        digest.update(b"\x00none")
    elif isinstance(part, str):
        digest.update(b"\x00s" + part.encode("utf-8", "surrogatepass"))
    elif isinstance(part, (list, tuple)):
        digest.update(f"\x00l{len(part)}".encode())
        for item in part:
            _update(digest, item)
    elif isinstance(part, np.ndarray):
        digest.update(f"\x00a{part.dtype.str}{part.shape}".encode())
        digest.update(np.ascontiguousarray(part).tobytes() if part.dtype != object else
                      "\x00".join(map(str, part.ravel())).encode())
    elif sp.issparse(part):
        mat = sp.csr_matrix(part)
        mat.sort_indices()
        for arr in (np.asarray(mat.shape), mat.indptr, mat.indices, mat.data):
            _update(digest, arr)
    elif isinstance(part, Text):
        _update(digest, part.texts)
    elif isinstance(part, (Dense,)):
        _update(digest, (part.values, part.mask))
    elif isinstance(part, (Sparse, MultiLabel)):
        _update(digest, (part.values, list(part.vocabulary or [])))
    elif isinstance(part, Image):
        _update(digest, _image_signature(part))
    elif isinstance(part, dict):
        _update(digest, json.dumps(part, sort_keys=True, default=str))
    else:
        _update(digest, repr(part))


def _image_signature(images: Image) -> list:
    """Per row: the reference and the member's CRC-32 and size (zip), or size and mtime (folder); cheap to read."""
    if images.source.suffix == ".zip":
        with zipfile.ZipFile(images.source) as zf:
            info = {i.filename: (i.CRC, i.file_size) for i in zf.infolist()}
        return [None if r is None else f"{r}:{info.get(r)}" for r in images.refs]
    out = []
    for ref in images.refs:
        path = None if ref is None else images.source / ref
        stat = path.stat() if path is not None and path.exists() else None
        out.append(None if ref is None else f"{ref}:{stat and (stat.st_size, stat.st_mtime_ns)}")
    return out


class FeatureCache:
    """A folder of extracted feature matrices.

    Args:
        root: the cache folder (default: `default_cache_dir()`); None disables caching.
    """

    def __init__(self, root: str | Path | None = "default") -> None:
        self.root = default_cache_dir() if root == "default" else (None if root is None else Path(root))

    def path(self, dataset: str, preset: str, key: str) -> Path | None:
        if self.root is None:
            return None
        return self.root / dataset / f"{preset}-{key[:16]}.npz"

    def load(self, dataset: str, preset: str, key: str) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray | None, dict] | None:
        """(values, mask, report) of a cached extraction, or None on a miss (or an unreadable entry)."""
        path = self.path(dataset, preset, key)
        if path is None or not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                if "key" not in npz.files or str(npz["key"]) != key:
                    return None
                if "indptr" in npz.files:
                    values = sp.csr_matrix((npz["data"], npz["indices"], npz["indptr"]), shape=tuple(npz["shape"]))
                else:
                    values = npz["values"]
                mask = npz["mask"] if "mask" in npz.files else None
                report = json.loads(str(npz["report"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None  # a damaged entry is recomputed, never trusted
        return values, mask, report

    def save(self, dataset: str, preset: str, key: str, values, mask: np.ndarray | None, report: dict) -> Path | None:
        """Write one entry atomically; returns its path (None when caching is off)."""
        path = self.path(dataset, preset, key)
        if path is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"key": np.asarray(key), "report": np.asarray(json.dumps(report))}
        if sp.issparse(values):
            csr = sp.csr_matrix(values)
            arrays |= {"data": csr.data, "indices": csr.indices, "indptr": csr.indptr, "shape": np.asarray(csr.shape)}
        else:
            arrays["values"] = np.asarray(values, np.float32)
        if mask is not None:
            arrays["mask"] = np.asarray(mask, bool)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # multi-hot blocks are mostly zeros
        atomic_write(path, buffer.getvalue())
        atomic_write(path.with_suffix(".json"), (json.dumps(report, indent=1) + "\n").encode())
        return path
