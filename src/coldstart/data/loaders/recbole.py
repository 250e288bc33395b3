"""RecBole atomic files: <name>.inter, <name>.item, <name>.user (tab-separated, header `field:type`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coldstart.data.dataset import Dataset, from_frame
from coldstart.data.modalities import Dense, Modality, MultiLabel
from coldstart.data.readers import check_duplicates, check_ids, read_header, read_table, require_file, threshold
from coldstart.errors import DataError

_TYPES = ("token", "token_seq", "float", "float_seq")


def _read_atomic(path: Path) -> tuple[list[str], list[str], "object"]:
    """Return (field names, field types, frame with columns named by field)."""
    require_file(path)
    header = read_header(path, sep="\t")
    names, types = [], []
    for col in header:
        name, _, kind = col.partition(":")
        if kind not in _TYPES:
            raise DataError(f"header field {col!r} needs a type among {', '.join(_TYPES)}", path=path, line=1)
        names.append(name)
        types.append(kind)
    numeric = tuple(n for n, t in zip(names, types) if t == "float")
    return names, types, read_table(path, names, sep="\t", header=True, numeric=numeric)


def _modalities(path: Path, id_field: str) -> dict[str, tuple[list[str], Modality]]:
    names, types, frame = _read_atomic(path)
    if id_field not in names:
        raise DataError(f"missing id field {id_field}", path=path, line=1, field=id_field)
    ids = frame[id_field].astype(str).tolist()
    out: dict[str, tuple[list[str], Modality]] = {}
    for name, kind in zip(names, types):
        if name == id_field:
            continue
        col = frame[name]
        if kind == "float":
            out[name] = (ids, Dense(col.to_numpy(np.float32)[:, None]))
        elif kind == "float_seq":
            rows = [np.array(v.split(), dtype=np.float32) for v in col]
            if len({len(r) for r in rows}) != 1:
                raise DataError("float_seq rows differ in length", path=path, field=name)
            out[name] = (ids, Dense(np.stack(rows)))
        elif kind == "token":
            out[name] = (ids, MultiLabel.from_lists([[v] if v else [] for v in col]))
        else:
            out[name] = (ids, MultiLabel.from_lists([v.split() for v in col]))
    return out


def load(root: Path, min_rating: float | None = None, on_duplicate: str = "drop",
         user_field: str = "user_id", item_field: str = "item_id") -> Dataset:
    """Load RecBole atomic files from a folder holding exactly one <name>.inter (plus optional .item / .user).

    Args:
        root: the folder.
        min_rating: if given and the .inter file has a `rating` field, keep rating >= min_rating.
        on_duplicate: "drop" keeps the first of repeated (user, item) pairs; "error" raises.
        user_field, item_field: the id field names (RecBole's defaults).
    """
    root = Path(root)
    inters = sorted(root.glob("*.inter"))
    if len(inters) != 1:
        raise DataError(f"expected one .inter file, found {len(inters)}", path=root)
    inter = inters[0]
    names, types, frame = _read_atomic(inter)
    for f in (user_field, item_field):
        if f not in names:
            raise DataError(f"missing id field {f}", path=inter, line=1, field=f)
    frame = frame.rename(columns={user_field: "user", item_field: "item"})
    check_ids(frame, ("user", "item"), inter, first_line=2)
    keep = [c for c in ("user", "item", "rating", "timestamp") if c in frame]
    frame = threshold(check_duplicates(frame[keep], inter, header=True, on_duplicate=on_duplicate), min_rating)
    stem = inter.with_suffix("")
    item_path, user_path = stem.with_suffix(".item"), stem.with_suffix(".user")
    return from_frame(
        stem.name, frame,
        item_features=_modalities(item_path, item_field) if item_path.exists() else {},
        user_features=_modalities(user_path, user_field) if user_path.exists() else {},
        source=str(root),
    )
