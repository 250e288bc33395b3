"""Strict delimited-file reading: vectorised with pandas, but every error names the file and line."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.errors import DataError

# A byte that never occurs in the text files we read: multi-character separators ("::") are mapped to it
# so that pandas' fast C parser can be used instead of the slow regex engine.
_UNIT_SEP = "\x1f"


def require_file(path: Path) -> Path:
    """Raise DataError if `path` is missing, is not a regular file (a folder), or is empty."""
    path = Path(path)
    if not path.exists():
        raise DataError("missing required file", path=path)
    if not path.is_file():
        raise DataError("expected a file, found a folder" if path.is_dir() else "expected a regular file", path=path)
    if path.stat().st_size == 0:
        raise DataError("empty file", path=path)
    return path


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole file as text, newlines normalised to \\n; a UTF-8 byte-order mark is accepted and dropped.

    Raises:
        DataError: naming the file and line of the first byte that is not valid in `encoding`.
    """
    return _decode(require_file(path).read_bytes(), path, encoding).replace("\r\n", "\n")


def _decode(raw: bytes, path: Path, encoding: str) -> str:
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"byte 0x{raw[exc.start]:02x} is not valid {encoding} text (save the file as {encoding})",
                        path=path, line=line) from None


def read_header(path: Path, sep: str = ",") -> list[str]:
    """The field names on the first line of a delimited file (quotes allowed; BOM and encoding as `read_text`)."""
    import csv

    with open(require_file(path), "rb") as fh:
        first = _decode(fh.readline(), path, "utf-8").rstrip("\r\n")
    return next(csv.reader([first], delimiter=sep)) if first else []


def check_ids(frame: pd.DataFrame, columns: tuple[str, ...], path: Path, first_line: int | None) -> None:
    """Raise DataError at the first missing or empty (blank) raw id in `columns`.

    Raw ids are strings and never parsed as missing ("NA" is an id); a blank one, or a null in a Parquet
    column, is an error because it would silently become an entity of its own.

    Args:
        frame: the rows; id columns hold str (text files) or anything (Parquet, where nulls can occur).
        columns: the id columns to check.
        path: the file, for the message.
        first_line: line number of the frame's first row in a text file, or None for a row-numbered file
            (Parquet), where the message names the 0-based row instead.
    """
    for col in columns:
        values = frame[col]
        bad = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            what = "missing" if values.isna().iloc[row] else "empty"
            if first_line is None:
                raise DataError(f"{what} id in row {row}", path=path, field=str(col))
            raise DataError(f"{what} id", path=path, line=first_line + row, field=str(col))


def read_table(
    path: Path,
    columns: list[str],
    sep: str = ",",
    header: bool = False,
    numeric: tuple[str, ...] = (),
    encoding: str = "utf-8",
    min_columns: int | None = None,
) -> pd.DataFrame:
    """Read a delimited text file whose rows must have exactly `len(columns)` fields.

    Args:
        path: the file.
        columns: names given to the fields, in order.
        sep: field separator (any length).
        header: whether the first line is a header (skipped; its line is counted).
        numeric: columns that must parse as numbers; they are returned as float64 or int64.
        encoding: text encoding ("latin-1" for the old MovieLens files).
        min_columns: accept rows with at least this many fields (missing trailing fields become "").

    Returns:
        A DataFrame with string columns except `numeric`.

    Raises:
        DataError: naming the file and 1-based line of the first malformed row.
    """
    text = read_text(path, encoding)
    if sep != _UNIT_SEP and len(sep) > 1:
        text = text.replace(sep, _UNIT_SEP)
        sep = _UNIT_SEP
    n = len(columns)
    first = 2 if header else 1  # line number of the first data row
    if not text.strip():
        raise DataError("empty file", path=path)
    quoted = sep == ","  # only comma files use quotes; "::", tab and "|" files are read verbatim
    lines = pd.Series(text.split("\n"))
    if lines.iloc[-1] == "":
        lines = lines.iloc[:-1]
    lines = lines.iloc[1:] if header else lines
    if lines.empty:
        raise DataError("no data rows", path=path)
    # Count fields per line, vectorised. Lines holding a quote may have separators inside quoted fields:
    # pandas' parser checks those (it raises on too many fields; missing ones read as "").
    n_fields = lines.str.count(re.escape(sep)).to_numpy() + 1
    n_fields[(lines == "").to_numpy()] = 0
    checkable = ~lines.str.contains('"', regex=False).to_numpy() if quoted else np.ones(len(lines), bool)
    low = n if min_columns is None else min_columns
    bad = checkable & ((n_fields < low) | (n_fields > n))
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"expected {n} fields, found {n_fields[row]}", path=path, line=first + row)
    try:
        raw = pd.read_csv(
            io.StringIO(text), sep=sep, header=None, names=list(range(n)), dtype=str,
            keep_default_na=False, na_values=[], skip_blank_lines=False, skiprows=1 if header else 0,
            quoting=0 if quoted else 3, engine="c",
        )
    except pd.errors.ParserError as exc:
        raise DataError(f"malformed row ({str(exc).strip()})", path=path) from exc
    frame = raw.fillna("")
    frame.columns = columns
    for col in numeric:
        values = pd.to_numeric(frame[col].str.strip(), errors="coerce")
        if values.isna().any():
            row = int(np.argmax(values.isna().to_numpy()))
            raise DataError(f"expected a number, got {frame[col].iloc[row]!r}", path=path, line=first + row, field=col)
        if (values == values.round()).all() and np.abs(values).max() < 2**62:
            values = values.astype(np.int64)
        frame[col] = values
    return frame


def check_duplicates(frame: pd.DataFrame, path: Path, header: bool, on_duplicate: str = "error") -> pd.DataFrame:
    """Raise DataError at the first repeated (user, item) pair, or drop repeats when on_duplicate == "drop"."""
    dup = frame.duplicated(["user", "item"], keep="first").to_numpy()
    if not dup.any():
        return frame
    if on_duplicate == "drop":
        return frame[~dup].reset_index(drop=True)
    row = int(np.argmax(dup))
    u, i = frame["user"].iloc[row], frame["item"].iloc[row]
    raise DataError(f"duplicate interaction (user {u}, item {i}); pass on_duplicate='drop' to keep the first",
                    path=path, line=row + (2 if header else 1))


def threshold(frame: pd.DataFrame, min_rating: float | None) -> pd.DataFrame:
    """Keep interactions with rating >= min_rating (explicit -> implicit feedback); None keeps all."""
    if min_rating is None or "rating" not in frame:
        return frame
    return frame[frame["rating"] >= min_rating].reset_index(drop=True)
