"""Read one feature file keyed by raw id (.csv, .parquet, .npz, .npy) into (ids, modality)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from coldstart.data.modalities import Dense, Modality, Sparse, Text
from coldstart.data.readers import require_file
from coldstart.errors import DataError

FEATURE_SUFFIXES = (".csv", ".parquet", ".npz", ".npy")
log = logging.getLogger("coldstart")


def read_feature_file(path: Path) -> tuple[list[str], Modality]:
    """Read a feature file.

    Formats:
        .csv / .parquet: first column = raw id; the rest all numeric -> Dense (missing cells get the column
            mean, with a warning), or one text column -> Text.
        .npz with arrays `ids` and `values` -> Dense; a scipy sparse .npz -> Sparse, ids in `<stem>.ids.txt`.
        .npy: a dense [N, D] matrix, ids in `<stem>.ids.txt` (one raw id per line).

    Raises:
        DataError: naming the file for unreadable content, a row/id count mismatch or mixed columns.
    """
    require_file(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        return _read_frame(path)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
        if {"ids", "values"} <= keys:
            with np.load(path, allow_pickle=False) as npz:
                return _check_rows(path, [str(i) for i in npz["ids"]], Dense(_as_matrix(path, npz["values"])))
        if "format" in keys:
            mat = sp.load_npz(path).tocsr().astype(np.float32)
            return _check_rows(path, _ids_file(path), Sparse(mat))
        raise DataError("expected arrays 'ids' and 'values' or a scipy sparse matrix", path=path)
    if suffix == ".npy":
        return _check_rows(path, _ids_file(path), Dense(_as_matrix(path, np.load(path, allow_pickle=False))))
    raise DataError(f"unsupported feature format (use one of {', '.join(FEATURE_SUFFIXES)})", path=path)


def _read_frame(path: Path) -> tuple[list[str], Modality]:
    if path.suffix.lower() == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except ImportError as exc:
            raise DataError("reading .parquet needs pyarrow: pip install 'coldstart[parquet]'", path=path) from exc
    else:
        try:
            frame = pd.read_csv(path, dtype={0: str})
        except pd.errors.ParserError as exc:
            raise DataError(f"malformed CSV ({exc})", path=path) from exc
    if frame.shape[1] < 2:
        raise DataError("expected an id column and at least one feature column", path=path)
    ids = frame.iloc[:, 0].astype(str).tolist()
    rest = frame.iloc[:, 1:]
    numeric = rest.apply(lambda c: pd.api.types.is_numeric_dtype(c))
    if numeric.all():
        return ids, Dense(_impute_missing(path, rest))
    if rest.shape[1] == 1:
        return ids, Text(rest.iloc[:, 0].fillna("").astype(str).tolist())
    bad = rest.columns[~numeric.to_numpy()][0]
    raise DataError("mixes text and numbers: give numeric columns only, or a single text column",
                    path=path, field=str(bad))


def _impute_missing(path: Path, frame: pd.DataFrame) -> np.ndarray:
    """float32 [N, D]; empty or NaN cells of a numeric table get their column's mean, with a warning per column.

    A feature table with a missing cell is ordinary raw content (an unknown year), not a broken file; a matrix
    file (.npy / .npz) with a NaN is treated as a bug upstream and rejected by `Dense.validate`.
    """
    values = frame.to_numpy(np.float64)
    missing = ~np.isfinite(values)
    if missing.any():
        present = np.where(missing, 0.0, values)
        means = present.sum(axis=0) / np.maximum((~missing).sum(axis=0), 1)
        values = np.where(missing, means, values)
        for col in np.flatnonzero(missing.any(axis=0)):
            log.warning("%s: %d missing or non-finite values in column %r set to the column mean",
                        path, int(missing[:, col].sum()), str(frame.columns[col]))
    return values.astype(np.float32)


def _as_matrix(path: Path, values: np.ndarray) -> np.ndarray:
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
        raise DataError(f"expected a numeric 2-D matrix, got {values.dtype} of shape {values.shape}", path=path)
    return values.astype(np.float32)


def _ids_file(path: Path) -> list[str]:
    ids_path = path.with_suffix(".ids.txt")
    if not ids_path.exists():
        raise DataError(f"needs its raw ids in {ids_path.name} (one per line)", path=path)
    return [line.strip() for line in ids_path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _check_rows(path: Path, ids: list[str], mod: Modality) -> tuple[list[str], Modality]:
    if len(ids) != mod.n_rows:
        raise DataError(f"{mod.n_rows} feature rows but {len(ids)} ids", path=path)
    return ids, mod
