"""Bring your own data: an interactions file plus feature files keyed by raw id.

Layout::

    my-data/
      interactions.csv      header user,item[,timestamp][,rating]  (or interactions.parquet)
      items/<name>.csv      item features: first column the raw item id (see features_io for formats)
      users/<name>.npy      user features (+ users/<name>.ids.txt)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from coldstart.data.dataset import Dataset, from_frame
from coldstart.data.loaders.features_io import FEATURE_SUFFIXES, read_feature_file
from coldstart.data.readers import check_duplicates, read_table, require_file, threshold
from coldstart.errors import DataError


def read_interactions(path: Path) -> pd.DataFrame:
    """Read an interactions CSV / Parquet with columns user, item and optional timestamp, rating."""
    require_file(path)
    if path.suffix.lower() == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except ImportError as exc:
            raise DataError("reading .parquet needs pyarrow: pip install 'coldstart[parquet]'", path=path) from exc
        header = list(frame.columns)
    else:
        header = path.open(encoding="utf-8").readline().strip().split(",")
    for col in ("user", "item"):
        if col not in header:
            raise DataError(f"header must name columns user and item (got {','.join(map(str, header))})",
                            path=path, line=1, field=col)
    extra = [c for c in header if c not in ("user", "item", "timestamp", "rating")]
    if extra:
        raise DataError(f"unknown column {extra[0]!r} (allowed: user, item, timestamp, rating)", path=path, line=1)
    if path.suffix.lower() == ".parquet":
        for col in ("timestamp", "rating"):
            if col in frame and frame[col].isna().any():
                raise DataError("missing value", path=path, field=col)
        return frame
    numeric = tuple(c for c in header if c in ("timestamp", "rating"))
    return read_table(path, header, header=True, numeric=numeric)


def load(root: Path, min_rating: float | None = None, on_duplicate: str = "error") -> Dataset:
    """Load a bring-your-own-data folder (see the module docstring).

    Args:
        root: the folder.
        min_rating: if given and a rating column exists, keep interactions with rating >= min_rating.
        on_duplicate: "error" (default) names the first repeated (user, item) line; "drop" keeps the first.

    Raises:
        DataError: for missing or malformed files, feature rows for ids without interactions, NaN features.
    """
    root = Path(root)
    candidates = [root / "interactions.csv", root / "interactions.parquet"]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        raise DataError("missing required file interactions.csv (or interactions.parquet)", path=root)
    frame = threshold(check_duplicates(read_interactions(path), path, header=True, on_duplicate=on_duplicate), min_rating)
    feats: dict[str, dict] = {"items": {}, "users": {}}
    for kind, column in (("items", "item"), ("users", "user")):
        known = set(frame[column].astype(str))
        for file in sorted((root / kind).glob("*")):
            if file.suffix.lower() not in FEATURE_SUFFIXES:
                continue
            ids, modality = read_feature_file(file)
            unknown = [i for i in ids if i not in known]
            if unknown:
                raise DataError(f"feature row for unknown {column} id {unknown[0]} ({len(unknown)} unknown in all)",
                                path=file, line=ids.index(unknown[0]) + 2 if file.suffix == ".csv" else None)
            feats[kind][file.stem] = (ids, modality)
    return from_frame(root.name, frame, item_features=feats["items"], user_features=feats["users"], source=str(root))
