"""Bring your own data: an interactions file plus feature files keyed by raw id.

Layout::

    my-data/
      interactions.csv      header user,item[,timestamp][,rating]  (or interactions.parquet)
      items/<name>.csv      item features: first column the raw item id (see features_io for formats)
      users/<name>.npy      user features (+ users/<name>.ids.txt)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.data.columnar import integer_ids, read_indexed
from coldstart.data.dataset import Dataset, from_frame, from_indexed
from coldstart.data.loaders.features_io import (FEATURE_SUFFIXES, parquet_ids, read_feature_file, read_parquet,
                                                row_location)
from coldstart.data.readers import check_duplicates, check_ids, read_header, read_table, require_file, threshold
from coldstart.errors import DataError

log = logging.getLogger("coldstart")
COLUMNS = ("user", "item", "timestamp", "rating")


def read_interactions(path: Path) -> pd.DataFrame:
    """Read an interactions CSV / Parquet with columns user, item and optional timestamp, rating.

    Ids stay strings exactly as written ("NA" is an id); a blank or missing id is an error naming the line
    (CSV) or row (Parquet). A UTF-8 byte-order mark is accepted.
    """
    require_file(path)
    parquet = path.suffix.lower() == ".parquet"
    if parquet:
        frame = read_parquet(path)
        header = [str(c) for c in frame.columns]
    else:
        header = read_header(path)
    for col in ("user", "item"):
        if col not in header:
            raise DataError(f"header must name columns user and item (got {','.join(header)})",
                            path=path, line=None if parquet else 1, field=col)
    extra = [c for c in header if c not in COLUMNS]
    if extra:
        raise DataError(f"unknown column {extra[0]!r} (allowed: {', '.join(COLUMNS)})", path=path,
                        line=None if parquet else 1)
    if parquet:
        check_ids(frame, ("user", "item"), path, first_line=None)
        for col in ("timestamp", "rating"):
            if col in frame and frame[col].isna().any():
                row = int(np.argmax(frame[col].isna().to_numpy()))
                raise DataError(f"missing value in row {row}", path=path, field=col)
        frame = frame.copy()
        frame["user"], frame["item"] = parquet_ids(frame["user"]), parquet_ids(frame["item"])
        return frame
    numeric = tuple(c for c in header if c in ("timestamp", "rating"))
    frame = read_table(path, header, header=True, numeric=numeric)
    check_ids(frame, ("user", "item"), path, first_line=2)
    return frame


def load(root: Path, min_rating: float | None = None, on_duplicate: str = "error",
         missing_features: str = "error") -> Dataset:
    """Load a bring-your-own-data folder (see the module docstring).

    Args:
        root: the folder.
        min_rating: keep interactions with rating >= min_rating. The default None keeps every row: a rating
            column in your own data may use any scale, so no threshold is guessed (the MovieLens and Amazon
            loaders default to 4 because their 1-5 scale is known).
        on_duplicate: "error" (default) names the first repeated (user, item) line; "drop" keeps the first.
        missing_features: an empty or NaN cell in a numeric feature table: "error" (default) names the file,
            line and column; "mean" fills it with the column mean and logs a warning.

    Raises:
        DataError: for missing or malformed files, feature rows for ids without interactions, NaN features.
    """
    root = Path(root)
    candidates = [root / "interactions.csv", root / "interactions.parquet"]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        raise DataError("missing required file interactions.csv (or interactions.parquet)", path=root)
    indexed = None
    if path.suffix.lower() == ".parquet" and min_rating is None and on_duplicate == "error" and integer_ids(path):
        # Integer ids at scale: pyarrow -> memory-mapped index arrays, no string per row (data/columnar.py).
        indexed = read_indexed(path)
        known_ids = {"item": pd.Index(indexed.item_ids), "user": pd.Index(indexed.user_ids)}
        has_rating = indexed.ratings is not None
    else:
        frame = check_duplicates(read_interactions(path), path, header=True, on_duplicate=on_duplicate)
        has_rating = "rating" in frame
        frame = threshold(frame, min_rating)
        known_ids = {c: pd.Index(frame[c].astype(str).unique()) for c in ("item", "user")}
    if has_rating and min_rating is None:
        log.info("%s: every row is a positive interaction (set data.min_rating to threshold the ratings)", path)
    feats: dict[str, dict] = {"items": {}, "users": {}}
    for kind, column in (("items", "item"), ("users", "user")):
        known = known_ids[column]
        for file in sorted((root / kind).glob("*")):
            if file.suffix.lower() not in FEATURE_SUFFIXES:
                continue
            ids, modality = read_feature_file(file, missing=missing_features)
            unknown = ~pd.Index(ids).isin(known)
            if unknown.any():
                row = int(np.argmax(unknown))
                where, line, words = row_location(file, row)
                raise DataError(f"feature row{words} for unknown {column} id {ids[row]} ({int(unknown.sum())} "
                                "unknown in all)", path=where, line=line)
            feats[kind][file.stem] = (ids, modality)
    if indexed is not None:
        return from_indexed(root.name, indexed.user_ids, indexed.item_ids, indexed.users, indexed.items,
                            indexed.timestamps, indexed.ratings, item_features=feats["items"],
                            user_features=feats["users"], source=str(root))
    return from_frame(root.name, frame, item_features=feats["items"], user_features=feats["users"], source=str(root))
