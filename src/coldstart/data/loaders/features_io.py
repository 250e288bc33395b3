"""Read one feature file keyed by raw id (.csv, .parquet, .npz, .npy) into (ids, modality).

Raw ids are kept as strings exactly as written: nothing is parsed as missing ("NA" and "null" are ids), a blank
or missing id is an error, and so is an id given twice. Every error names the file, and the line (text files)
or row (binary files) and column where known.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from coldstart.data.modalities import Dense, Modality, Sparse, Text
from coldstart.data.readers import check_ids, read_header, read_table, read_text, require_file
from coldstart.errors import DataError

FEATURE_SUFFIXES = (".csv", ".parquet", ".npz", ".npy")
MISSING = ("error", "mean")
#: cells of a numeric feature column read as a missing value (never applied to ids)
MISSING_CELLS = ("", "nan", "na", "n/a", "null", "none")
log = logging.getLogger("coldstart")


def read_feature_file(path: Path, missing: str = "error") -> tuple[list[str], Modality]:
    """Read a feature file.

    Formats:
        .csv / .parquet: first column = raw id; the rest all numeric -> Dense, or one text column -> Text
            (an empty cell is an empty text).
        .npz with arrays `ids` and `values` -> Dense; a scipy sparse .npz -> Sparse, ids in `<stem>.ids.txt`.
        .npy: a dense [N, D] matrix, ids in `<stem>.ids.txt` (one raw id per line).

    Args:
        path: the file.
        missing: an empty, NaN or infinite cell of a numeric table: "error" (default) raises naming the file,
            line and column; "mean" sets it to its column's mean and logs a warning per column. Matrix files
            (.npy / .npz) with a NaN or inf are always an error: they come from code, where it is a bug.

    Raises:
        DataError: naming the file (and line / row / column) for unreadable content, a missing, blank or
            repeated id, a row/id count mismatch, a NaN feature, or mixed text and numeric columns.
    """
    if missing not in MISSING:
        raise DataError(f"must be one of {', '.join(MISSING)}, got {missing!r}", field="missing_features")
    require_file(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, missing)
    if suffix == ".parquet":
        return _read_parquet(path, missing)
    if suffix == ".npz":
        keys, arrays = _npz_arrays(path, ("ids", "values"))
        if arrays is not None:
            ids = np.asarray(arrays["ids"]).astype(str).tolist()
            check_ids(pd.DataFrame({"id": ids}), ("id",), path, first_line=None)
            _check_unique(path, ids, None)
            return _check_rows(path, ids, Dense(_as_matrix(path, arrays["values"], ids)))
        if "format" in keys:
            try:
                mat = sp.load_npz(path).tocsr().astype(np.float32)
            except (ValueError, OSError, KeyError) as exc:
                raise DataError(f"not a readable scipy sparse .npz ({exc})", path=path) from exc
            ids = _ids_file(path)
            bad = ~np.isfinite(mat.data)
            if bad.any():
                row = int(np.searchsorted(mat.indptr, np.argmax(bad), side="right") - 1)
                raise DataError(f"NaN or inf in row {row} (id {ids[row] if row < len(ids) else '?'})", path=path)
            return _check_rows(path, ids, Sparse(mat))
        raise DataError("expected arrays 'ids' and 'values' or a scipy sparse matrix", path=path)
    if suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise _unreadable(path, exc) from None
        ids = _ids_file(path)
        return _check_rows(path, ids, Dense(_as_matrix(path, values, ids)))
    raise DataError(f"unsupported feature format (use one of {', '.join(FEATURE_SUFFIXES)})", path=path)


def row_location(path: Path, row: int) -> tuple[Path, int | None, str]:
    """Where row `row` (0-based) of a feature file is written: (file, line or None, words for the message)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return path, row + 2, ""  # after the header line
    if suffix in (".npy", ".npz") and path.with_suffix(".ids.txt").exists():
        return path.with_suffix(".ids.txt"), row + 1, ""
    return path, None, f" in row {row}"


def _npz_arrays(path: Path, wanted: tuple[str, ...]) -> tuple[set[str], dict[str, np.ndarray] | None]:
    """(the archive's array names, the `wanted` arrays or None when one is absent); DataError when unreadable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            return keys, ({k: npz[k] for k in wanted} if set(wanted) <= keys else None)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: Exception) -> DataError:
    """One line for NumPy's load errors: object arrays, a file that is not NumPy's format, a truncated file."""
    text = str(exc)
    if "Object arrays" in text:
        return DataError("holds Python objects (dtype object), not numbers; save a numeric array", path=path)
    if "pickled" in text:  # np.load found no .npy / .npz header and would fall back to unpickling
        return DataError(f"not a NumPy {path.suffix} file (no {path.suffix} header)", path=path)
    return DataError(f"damaged or truncated {path.suffix} file ({text.splitlines()[0] if text else type(exc).__name__})",
                     path=path)


def _read_csv(path: Path, missing: str) -> tuple[list[str], Modality]:
    header = read_header(path)
    if len(header) < 2:
        raise DataError("expected an id column and at least one feature column", path=path, line=1)
    columns = [f"c{j}" for j in range(len(header))]  # header names may repeat or be blank
    frame = read_table(path, columns, header=True)  # every cell a str, nothing parsed as missing
    ids = frame[columns[0]].tolist()
    check_ids(pd.DataFrame({header[0].strip() or "id": ids}), (header[0].strip() or "id",), path, first_line=2)
    _check_unique(path, ids, 2)
    cells = frame[columns[1:]]
    numbers = cells.apply(lambda c: pd.to_numeric(c.str.strip(), errors="coerce"))  # NaN where not a number
    blank = cells.apply(lambda c: c.str.strip().str.lower().isin(MISSING_CELLS)).to_numpy()
    # A column is numeric when every cell is a number or a missing-value marker; markers are then rejected
    # (or mean-filled) as missing values rather than turning the column into text.
    numeric = ~(~blank & numbers.isna().to_numpy()).any(axis=0)
    names = header[1:]
    if numeric.all():
        values = numbers.to_numpy(np.float64)
        return ids, Dense(_missing_cells(path, values, names, missing, first_line=2))
    if cells.shape[1] == 1:
        return ids, Text(cells.iloc[:, 0].tolist())
    raise DataError("mixes text and numbers: give numeric columns only, or a single text column",
                    path=path, line=1, field=names[int(np.argmin(numeric))])


def _read_parquet(path: Path, missing: str) -> tuple[list[str], Modality]:
    frame = read_parquet(path)
    if frame.shape[1] < 2:
        raise DataError("expected an id column and at least one feature column", path=path)
    id_col = str(frame.columns[0])
    check_ids(frame, (frame.columns[0],), path, first_line=None)
    ids = parquet_ids(frame.iloc[:, 0]).tolist()
    _check_unique(path, ids, None)
    rest = frame.iloc[:, 1:]
    numeric = rest.apply(lambda c: pd.api.types.is_numeric_dtype(c) and not pd.api.types.is_bool_dtype(c))
    names = [str(c) for c in rest.columns]
    if numeric.all():
        return ids, Dense(_missing_cells(path, rest.to_numpy(np.float64), names, missing, first_line=None))
    if rest.shape[1] == 1:
        return ids, Text(rest.iloc[:, 0].fillna("").astype(str).tolist())
    raise DataError(f"mixes text and numbers (id column {id_col!r}): give numeric columns only, or a single text "
                    "column", path=path, field=names[int(np.argmin(numeric.to_numpy()))])


def read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file as a DataFrame; DataError naming the file when it is not Parquet or pyarrow is missing."""
    try:
        return pd.read_parquet(path)
    except ImportError as exc:
        raise DataError("reading .parquet needs pyarrow: pip install 'coldstart[parquet]'", path=path) from exc
    except Exception as exc:  # pyarrow raises its own error types (ArrowInvalid, ...) for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"not a readable Parquet file ({reason})", path=path) from None


def parquet_ids(column: pd.Series) -> pd.Series:
    """Raw ids of a Parquet id column (checked for nulls first) as str; integral floats lose their '.0'."""
    if pd.api.types.is_float_dtype(column) and (column == column.round()).all():
        column = column.astype(np.int64)  # a float column of integer ids ("7.0") means id "7"
    return column.astype(str)


def _missing_cells(path: Path, values: np.ndarray, names: list[str], missing: str,
                   first_line: int | None) -> np.ndarray:
    """float32 [N, D]: the table's numbers, with empty / NaN / inf cells rejected or (missing="mean") filled.

    A silent fill hides bugs (a shifted column, a failed join), so rejecting is the default; an unknown year in
    hand-made content is the case `missing="mean"` is for.
    """
    bad = ~np.isfinite(values)  # [N, D]
    if not bad.any():
        return values.astype(np.float32)
    if missing == "error":
        row, col = (int(x) for x in np.argwhere(bad)[0])
        hint = "; --set data.missing_features=mean fills such cells with the column mean"
        if first_line is None:
            raise DataError(f"missing or non-finite value in row {row}{hint}", path=path, field=names[col])
        raise DataError(f"missing or non-finite value{hint}", path=path, line=first_line + row, field=names[col])
    present = np.where(bad, 0.0, values)
    means = present.sum(axis=0) / np.maximum((~bad).sum(axis=0), 1)
    values = np.where(bad, means, values)
    for col in np.flatnonzero(bad.any(axis=0)):
        log.warning("%s: %d missing or non-finite values in column %r set to the column mean",
                    path, int(bad[:, col].sum()), names[col])
    return values.astype(np.float32)


def _as_matrix(path: Path, values: np.ndarray, ids: list[str]) -> np.ndarray:
    """float32 [N, D] of a numeric 1-D or 2-D array; DataError naming the file for other shapes, types or NaN."""
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
        raise DataError(f"expected a numeric 2-D matrix, got {values.dtype} of shape {values.shape}", path=path)
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.argwhere(~finite)[0, 0])
        who = f" (id {ids[row]})" if row < len(ids) else ""
        raise DataError(f"NaN or inf in row {row}{who}", path=path)
    return values.astype(np.float32)


def _ids_file(path: Path) -> list[str]:
    """Raw ids of a matrix file, one per line of `<stem>.ids.txt`; blank lines inside are errors, not skipped
    (skipping one would shift every later id onto the wrong row)."""
    ids_path = path.with_suffix(".ids.txt")
    if not ids_path.exists():
        raise DataError(f"needs its raw ids in {ids_path.name} (one per line)", path=path)
    lines = read_text(ids_path).split("\n")
    while lines and not lines[-1].strip():  # trailing newlines are not ids
        lines.pop()
    ids = [line.strip() for line in lines]
    frame = pd.DataFrame({"id": ids})
    check_ids(frame, ("id",), ids_path, first_line=1)
    _check_unique(ids_path, ids, 1)
    return ids


def _check_unique(path: Path, ids: list[str], first_line: int | None) -> None:
    """DataError at the second occurrence of a repeated id (its line in a text file, else its row)."""
    dup = pd.Index(ids).duplicated()
    if dup.any():
        row = int(np.argmax(dup))
        if first_line is None:
            raise DataError(f"id {ids[row]} given twice (row {row})", path=path)
        raise DataError(f"id {ids[row]} given twice", path=path, line=first_line + row)


def _check_rows(path: Path, ids: list[str], mod: Modality) -> tuple[list[str], Modality]:
    if len(ids) != mod.n_rows:
        raise DataError(f"{mod.n_rows} feature rows but {len(ids)} ids", path=path)
    return ids, mod
