"""The Dataset: interactions plus raw-id <-> index maps plus named content modalities. It never splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from coldstart.data.modalities import Dense, Image, Modality, MultiLabel, Sparse, Text
from coldstart.errors import DataError


@dataclass
class Dataset:
    """Implicit-feedback interactions with content for items and users.

    Indices are dense 0..n-1; `user_ids[u]` / `item_ids[i]` give the raw id (as str) of index u / i.

    Attributes:
        name: dataset name (e.g. "ml-100k").
        user_ids: raw user ids, str array [U].
        item_ids: raw item ids, str array [I].
        users: user index per interaction, int64 [N].
        items: item index per interaction, int64 [N].
        timestamps: optional int64 [N] (seconds), used for ordered histories.
        ratings: optional float32 [N], the explicit rating before thresholding.
        item_features: named modalities, each with I rows.
        user_features: named modalities, each with U rows.
        interaction_features: named modalities with one row per interaction (e.g. review text). Content
            built from these must use training interactions only, or it leaks the held-out data.
    """

    name: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None
    ratings: np.ndarray | None = None
    item_features: dict[str, Modality] = field(default_factory=dict)
    user_features: dict[str, Modality] = field(default_factory=dict)
    interaction_features: dict[str, Modality] = field(default_factory=dict)
    root: Path | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.users)

    def user_index(self) -> dict[str, int]:
        """Raw user id -> index."""
        return {u: k for k, u in enumerate(self.user_ids)}

    def item_index(self) -> dict[str, int]:
        """Raw item id -> index."""
        return {i: k for k, i in enumerate(self.item_ids)}

    def validate(self) -> None:
        """Check shapes, index ranges, duplicates and every modality; raise DataError naming the problem."""
        n = len(self.users)
        if len(self.items) != n:
            raise DataError(f"{n} user indices but {len(self.items)} item indices", field="interactions")
        for name, arr in (("timestamps", self.timestamps), ("ratings", self.ratings)):
            if arr is not None and len(arr) != n:
                raise DataError(f"{len(arr)} values for {n} interactions", field=name)
        if n and (self.users.min() < 0 or self.users.max() >= self.n_users):
            raise DataError("user index out of range", field="users")
        if n and (self.items.min() < 0 or self.items.max() >= self.n_items):
            raise DataError("item index out of range", field="items")
        for name, mod in self.interaction_features.items():
            if mod.n_rows != n:
                raise DataError(f"{mod.n_rows} rows for {n} interactions", field=f"interaction_features.{name}")
        for kind, feats, ids in (("item", self.item_features, self.item_ids), ("user", self.user_features, self.user_ids)):
            for name, mod in feats.items():
                if mod.n_rows != len(ids):
                    raise DataError(f"{mod.n_rows} rows for {len(ids)} {kind}s", field=f"{kind}_features.{name}")
                mod.validate(f"{kind}_features.{name}", ids)

    def interactions_frame(self) -> pd.DataFrame:
        """The interactions as a DataFrame with raw ids (user, item[, timestamp, rating])."""
        frame = pd.DataFrame({"user": self.user_ids[self.users], "item": self.item_ids[self.items]})
        if self.timestamps is not None:
            frame["timestamp"] = self.timestamps
        if self.ratings is not None:
            frame["rating"] = self.ratings
        return frame

    def content_names(self) -> dict[str, list[str]]:
        """Names of the content modalities per side: {"item": [...], "user": [...], "interaction": [...]}.

        Interaction-level content (e.g. Amazon review text) belongs to no item until a split says which
        interactions are training ones (see `features.with_features`), so it is listed on its own.
        """
        return {"item": list(self.item_features), "user": list(self.user_features),
                "interaction": list(self.interaction_features)}

    def summary(self) -> dict:
        """Sizes and modalities, for `coldstart datasets` and logs."""
        density = self.n_interactions / max(1, self.n_users * self.n_items)
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "density": round(density, 6),
            "timestamps": self.timestamps is not None,
            "item_features": {k: type(v).__name__ for k, v in self.item_features.items()},
            "user_features": {k: type(v).__name__ for k, v in self.user_features.items()},
            "interaction_features": {k: type(v).__name__ for k, v in self.interaction_features.items()},
        }


def from_frame(
    name: str,
    frame: pd.DataFrame,
    item_features: dict[str, tuple[list[str], Modality]] | None = None,
    user_features: dict[str, tuple[list[str], Modality]] | None = None,
    unknown_features: str = "drop",
    source: str | None = None,
    text_columns: tuple[str, ...] = (),
    interaction_features: dict[str, Modality] | None = None,
) -> Dataset:
    """Build a Dataset from an interaction frame with raw ids, aligning feature rows by raw id.

    The index covers exactly the users and items that occur in `frame` (sorted by raw id, numerically
    when every id is an integer). Entities of the index without a feature row get an empty row
    (zeros / no labels / "" / no image) and, for Dense, mask False.

    Args:
        name: dataset name.
        frame: columns user, item and optionally timestamp, rating (raw ids, any type).
        item_features: modality name -> (raw ids of its rows, modality).
        user_features: same for users.
        unknown_features: "drop" ignores feature rows whose id has no interaction (a catalogue listing
            more entities than were rated); "error" raises DataError for them (bring-your-own data).
        source: file name used in error messages.
        text_columns: columns of `frame` kept as per-interaction Text modalities.
        interaction_features: further per-interaction modalities, one row per row of `frame`, in its order
            (e.g. the tags a user put on the item of that interaction).

    Returns:
        The Dataset.
    """
    frame = frame.copy()
    frame["user"] = frame["user"].astype(str)
    frame["item"] = frame["item"].astype(str)
    user_ids = _sorted_ids(frame["user"].unique())
    item_ids = _sorted_ids(frame["item"].unique())
    users = pd.Index(user_ids).get_indexer(frame["user"]).astype(np.int64)
    items = pd.Index(item_ids).get_indexer(frame["item"]).astype(np.int64)
    ts = frame["timestamp"].to_numpy(np.int64) if "timestamp" in frame else None
    ratings = frame["rating"].to_numpy(np.float32) if "rating" in frame else None
    return Dataset(
        name=name,
        user_ids=user_ids,
        item_ids=item_ids,
        users=users,
        items=items,
        timestamps=ts,
        ratings=ratings,
        item_features=_align_all(item_features or {}, item_ids, "item", unknown_features, source),
        user_features=_align_all(user_features or {}, user_ids, "user", unknown_features, source),
        interaction_features={**{c: Text(frame[c].astype(str).tolist()) for c in text_columns},
                              **(interaction_features or {})},
    )


def from_indexed(name: str, user_ids: np.ndarray, item_ids: np.ndarray, users: np.ndarray, items: np.ndarray,
                 timestamps: np.ndarray | None = None, ratings: np.ndarray | None = None,
                 item_features: dict[str, tuple[list[str], Modality]] | None = None,
                 user_features: dict[str, tuple[list[str], Modality]] | None = None,
                 unknown_features: str = "drop", source: str | None = None) -> Dataset:
    """A Dataset from interactions already indexed (data/columnar.py), aligning feature rows by raw id.

    `user_ids` / `item_ids` must be sorted as `from_frame` sorts them (numerically for integer ids), so that the
    same data gets the same index either way; the arrays are kept as given (e.g. memory-mapped, read-only).
    """
    return Dataset(name=name, user_ids=user_ids, item_ids=item_ids, users=users, items=items, timestamps=timestamps,
                   ratings=ratings,
                   item_features=_align_all(item_features or {}, item_ids, "item", unknown_features, source),
                   user_features=_align_all(user_features or {}, user_ids, "user", unknown_features, source))


def _sorted_ids(ids: np.ndarray) -> np.ndarray:
    """Sort raw ids numerically when all are integers (MovieLens), else lexically; return a str array."""
    ids = np.asarray(ids, dtype=str)
    try:
        order = np.argsort(ids.astype(np.int64), kind="stable")
    except ValueError:
        order = np.argsort(ids, kind="stable")
    return ids[order].astype(object).astype(str)


def _align_all(feats, index_ids, kind, unknown, source) -> dict[str, Modality]:
    return {name: align_rows(rows_ids, mod, index_ids, f"{kind}_features.{name}", unknown, source)
            for name, (rows_ids, mod) in feats.items()}


def align_rows(row_ids, modality: Modality, index_ids: np.ndarray, field_name: str,
               unknown: str = "drop", source: str | None = None) -> Modality:
    """Reorder a modality's rows to `index_ids`; missing entities get an empty row.

    Raises:
        DataError: on duplicate feature ids, or on unknown ids when `unknown == "error"`.
    """
    row_ids = pd.Index(np.asarray(row_ids, dtype=str))
    if row_ids.has_duplicates:
        dup = row_ids[row_ids.duplicated()][0]
        raise DataError(f"duplicate feature row for id {dup}", path=source, field=field_name)
    pos = row_ids.get_indexer(index_ids)  # [n_index], -1 where the entity has no feature row
    if unknown == "error":
        known = set(index_ids)
        extra = [r for r in row_ids if r not in known]
        if extra:
            raise DataError(f"feature row for unknown id {extra[0]} ({len(extra)} unknown in all)",
                            path=source, field=field_name)
    return _take_with_empty(modality, pos)


def _take_with_empty(mod: Modality, pos: np.ndarray) -> Modality:
    have = pos >= 0
    safe = np.where(have, pos, 0)
    if isinstance(mod, Dense):
        vals = mod.values[safe].astype(np.float32, copy=True)
        vals[~have] = 0.0
        mask = have if mod.mask is None else (have & mod.mask[safe])
        return Dense(vals, None if mask.all() else mask)
    if isinstance(mod, (Sparse, MultiLabel)):
        keep = sp.diags(have.astype(np.float32))
        mat = sp.csr_matrix(keep @ mod.values[safe])
        mat.eliminate_zeros()
        mat.sort_indices()
        return Sparse(mat, mod.vocabulary) if isinstance(mod, Sparse) else MultiLabel(mat, mod.vocabulary)
    if isinstance(mod, Text):
        return Text([mod.texts[p] if p >= 0 else "" for p in pos])
    if isinstance(mod, Image):
        return Image([mod.refs[p] if p >= 0 else None for p in pos], mod.source)
    raise TypeError(f"unknown modality {type(mod).__name__}")
