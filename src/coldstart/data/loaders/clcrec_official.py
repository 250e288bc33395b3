"""The official CLCRec `Data/<name>/` folder, so users of the reference code can migrate.

Files: train.npy ([N, 2] user-item pairs), val_{warm,cold}.npy and test_{warm,cold}.npy (one list per user:
[user, item, item, ...]), warm_set.npy / cold_set.npy (item ids), feat_v / feat_a / feat_t (.npy or .pt,
[num_item, D]). In the reference code item ids are offset by num_user (users 0..U-1, items U..U+I-1), and
num_user / num_item are constants in its source, not in the folder. What the folder does declare is every item
id: warm_set.npy and cold_set.npy together list U..U+I-1 (the reference code samples negatives from exactly
that range). The offset is the smallest id they list; it is removed, so raw item ids here are 0..I-1. The
largest user id seen would be wrong whenever the last users have no interactions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.data.dataset import Dataset, from_frame
from coldstart.data.modalities import Dense
from coldstart.data.readers import require_file
from coldstart.errors import DataError

PHASE_FILES = {("valid", "warm"): "val_warm.npy", ("valid", "cold"): "val_cold.npy",
               ("test", "warm"): "test_warm.npy", ("test", "cold"): "test_cold.npy"}
MODALITY_NAMES = {"feat_v": "visual", "feat_a": "acoustic", "feat_t": "textual"}


def _pairs_from_lists(path: Path) -> np.ndarray:
    """[user, item, item, ...] rows -> int64 [M, 2] pairs."""
    rows = _load(path, allow_pickle=True)  # ragged lists: an object array in the reference files
    try:
        lists = [np.asarray(r, dtype=np.int64).ravel() for r in rows]
    except (TypeError, ValueError) as exc:
        raise DataError(f"expected [user, item, item, ...] rows of integers ({exc})", path=path) from None
    lengths = np.array([len(r) for r in lists], dtype=np.int64)
    if (lengths < 1).any():
        raise DataError(f"row {int(np.argmax(lengths < 1))} is empty (expected [user, item, ...])", path=path)
    flat = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    is_user = np.zeros(len(flat), bool)
    is_user[starts] = True
    users = np.repeat(flat[starts], lengths - 1)  # [M]: each row's user, once per item of the row
    return np.stack([users, flat[~is_user]], axis=1)


def _load(path: Path, allow_pickle: bool = False) -> np.ndarray:
    try:
        return np.load(require_file(path), allow_pickle=allow_pickle)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"not a readable .npy file ({exc})", path=path) from None


def item_offset(root: Path) -> tuple[int, int]:
    """(offset, number of items) declared by warm_set.npy and cold_set.npy.

    Raises:
        DataError: when the files are missing (nothing else in the folder declares the counts, and guessing
            from the largest user id shifts every item when the last users have no interactions), or when the
            ids they list are not one contiguous range.
    """
    missing = [n for n in ("warm_set.npy", "cold_set.npy") if not (root / n).exists()]
    if missing:
        raise DataError(f"missing {' and '.join(missing)}: the official folder declares its item ids there, and "
                        "without them the item id offset (num_user) cannot be known", path=root)
    sets = [np.asarray(list(_load(root / n, allow_pickle=True)), dtype=np.int64).ravel()
            for n in ("warm_set.npy", "cold_set.npy")]
    ids = np.unique(np.concatenate(sets))
    if len(ids) == 0:
        raise DataError("warm_set.npy and cold_set.npy list no item", path=root)
    offset, n_items = int(ids[0]), len(ids)
    if int(ids[-1]) - offset + 1 != n_items:
        raise DataError(f"warm_set.npy and cold_set.npy list {n_items} item ids between {offset} and {int(ids[-1])}: "
                        "not one contiguous range, so the item id offset is unclear", path=root)
    return offset, n_items


def read_parts(root: Path) -> tuple[dict[str, np.ndarray], int]:
    """All interaction parts as raw pairs with the item offset removed, plus the offset.

    Raises:
        DataError: naming the file of a pair whose user is not below the offset or whose item is outside the
            declared item range.
    """
    root = Path(root)
    train = _load(root / "train.npy", allow_pickle=True)
    if train.ndim != 2 or train.shape[1] != 2:
        raise DataError(f"expected [N, 2] user-item pairs, got shape {train.shape}", path=root / "train.npy")
    parts = {"train": train.astype(np.int64)}
    names = {"train": "train.npy"}
    for (phase, scen), name in PHASE_FILES.items():
        if (root / name).exists():
            parts[f"{phase}_{scen}"] = _pairs_from_lists(root / name)
            names[f"{phase}_{scen}"] = name
    offset, n_items = item_offset(root)
    for key, pairs in parts.items():
        bad = (pairs[:, 0] < 0) | (pairs[:, 1] < offset) | (pairs[:, 1] >= offset + n_items)
        if offset:  # users are 0..num_user-1 = 0..offset-1
            bad |= pairs[:, 0] >= offset
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"pair {row} ({pairs[row, 0]}, {pairs[row, 1]}) is outside the declared ids (users below "
                            f"{offset}, items {offset}..{offset + n_items - 1} from warm_set / cold_set)",
                            path=root / names[key])
    return {k: p - np.array([0, offset]) for k, p in parts.items()}, offset


def _load_matrix(path: Path) -> np.ndarray:
    if path.suffix == ".pt":
        import torch

        return torch.load(path, map_location="cpu").float().numpy()
    return _load(path).astype(np.float32)


def load(root: Path) -> Dataset:
    """Load the folder as a Dataset (all parts together); splits.published(..., source='clcrec') recovers the split."""
    root = Path(root)
    parts, _ = read_parts(root)
    _, n_items = item_offset(root)
    pairs = np.concatenate(list(parts.values()))
    frame = pd.DataFrame(pairs, columns=["user", "item"]).drop_duplicates()
    item_features = {}
    for stem, name in MODALITY_NAMES.items():
        for suffix in (".npy", ".pt"):
            if (root / f"{stem}{suffix}").exists():
                mat = _load_matrix(root / f"{stem}{suffix}")
                if len(mat) != n_items:
                    raise DataError(f"{len(mat)} feature rows, but warm_set / cold_set declare {n_items} items",
                                    path=root / f"{stem}{suffix}")
                item_features[name] = ([str(i) for i in range(len(mat))], Dense(mat))
                break
    return from_frame(root.name, frame, item_features=item_features, source=str(root))
