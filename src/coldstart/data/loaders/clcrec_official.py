"""The official CLCRec `Data/<name>/` folder, so users of the reference code can migrate.

Files: train.npy ([N, 2] user-item pairs), val_{warm,cold}.npy and test_{warm,cold}.npy (one list per user:
[user, item, item, ...]), warm_set.npy / cold_set.npy (item ids), feat_v / feat_a / feat_t (.npy or .pt,
[num_item, D]). In the reference code item ids are offset by num_user (users 0..U-1, items U..U+I-1);
the offset is detected and removed, so raw item ids here are 0..I-1.
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
    rows = np.load(require_file(path), allow_pickle=True)
    pairs = [(int(r[0]), int(i)) for r in rows for i in list(r)[1:]]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def read_parts(root: Path) -> tuple[dict[str, np.ndarray], int]:
    """All interaction parts as raw pairs with the item offset removed, plus the offset."""
    train = np.load(require_file(root / "train.npy"), allow_pickle=True).astype(np.int64)
    if train.ndim != 2 or train.shape[1] != 2:
        raise DataError(f"expected [N, 2] user-item pairs, got shape {train.shape}", path=root / "train.npy")
    parts = {"train": train}
    for (phase, scen), name in PHASE_FILES.items():
        if (root / name).exists():
            parts[f"{phase}_{scen}"] = _pairs_from_lists(root / name)
    n_users = int(max(p[:, 0].max() for p in parts.values() if len(p))) + 1
    offset = n_users if train[:, 1].min() >= n_users else 0
    return {k: p - np.array([0, offset]) for k, p in parts.items()}, offset


def _load_matrix(path: Path) -> np.ndarray:
    if path.suffix == ".pt":
        import torch

        return torch.load(path, map_location="cpu").float().numpy()
    return np.load(path, allow_pickle=False).astype(np.float32)


def load(root: Path) -> Dataset:
    """Load the folder as a Dataset (all parts together); splits.published(..., source='clcrec') recovers the split."""
    root = Path(root)
    parts, _ = read_parts(root)
    pairs = np.concatenate(list(parts.values()))
    frame = pd.DataFrame(pairs, columns=["user", "item"]).drop_duplicates()
    item_features = {}
    for stem, name in MODALITY_NAMES.items():
        for suffix in (".npy", ".pt"):
            if (root / f"{stem}{suffix}").exists():
                mat = _load_matrix(root / f"{stem}{suffix}")
                item_features[name] = ([str(i) for i in range(len(mat))], Dense(mat))
                break
    return from_frame(root.name, frame, item_features=item_features, source=str(root))
