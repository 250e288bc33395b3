"""CiteULike-a (Wang & Blei): user libraries, item tags and the citation graph; published cold splits in splits.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from coldstart.data.dataset import Dataset, from_frame
from coldstart.data.modalities import MultiLabel, Sparse
from coldstart.data.readers import require_file
from coldstart.errors import DataError


def read_count_lists(path: Path) -> list[np.ndarray]:
    """Read a file whose line k is `n id_1 ... id_n`; check n against the ids on the line.

    Raises:
        DataError: naming the line of a non-integer token or a wrong count.
    """
    require_file(path)
    out = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            tokens = line.split()
            try:
                nums = np.array(tokens, dtype=np.int64)
            except ValueError:
                bad = next(t for t in tokens if not t.lstrip("-").isdigit())
                raise DataError(f"expected integers, got {bad!r}", path=path, line=line_no) from None
            if len(nums) == 0 or nums[0] != len(nums) - 1:
                raise DataError(f"count {nums[0] if len(nums) else 'missing'} but {max(len(nums) - 1, 0)} ids",
                                path=path, line=line_no)
            out.append(nums[1:])
    return out


def _csr(lists: list[np.ndarray], n_cols: int) -> sp.csr_matrix:
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])])
    indices = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(lists), n_cols))


def load(root: Path) -> Dataset:
    """Load raw/users.dat (0-based item ids per user line), raw/item-tag.dat, raw/tags.dat, raw/citations.dat.

    Raw ids are the 0-based line numbers, as in the published Heater / ALDI splits (GAR's are 1-based).
    Items get `tags` (multi-label over the tag vocabulary) and `citations` (sparse [I, I] over raw item ids).
    """
    raw = Path(root) / "raw"
    libraries = read_count_lists(raw / "users.dat")
    users = np.repeat(np.arange(len(libraries)), [len(x) for x in libraries])
    frame = pd.DataFrame({"user": users, "item": np.concatenate(libraries)})
    n_items = int(frame["item"].max()) + 1
    item_features = {}
    if (raw / "item-tag.dat").exists():
        item_tags = read_count_lists(raw / "item-tag.dat")
        n_items = max(n_items, len(item_tags))
        vocab = (raw / "tags.dat").read_text(encoding="utf-8").splitlines() if (raw / "tags.dat").exists() else None
        width = len(vocab) if vocab else int(max((t.max() for t in item_tags if len(t)), default=-1)) + 1
        vocab = vocab or [str(t) for t in range(width)]
        item_features["tags"] = (list(map(str, range(len(item_tags)))), MultiLabel(_csr(item_tags, width), vocab))
    if (raw / "citations.dat").exists():
        cites = read_count_lists(raw / "citations.dat")
        item_features["citations"] = (list(map(str, range(len(cites)))), Sparse(_csr(cites, n_items)))
    ds = from_frame("citeulike-a", frame, item_features=item_features, source=str(raw))
    if ds.n_items != n_items:
        raise DataError(f"{n_items - ds.n_items} items have no user; citation columns would not align",
                        path=raw / "users.dat")
    return ds
