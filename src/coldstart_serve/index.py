"""A FAISS inner-product index over item vectors: exact (flat), IVF or HNSW, with per-query filters.

Scores are inner products z_u . v_i, the models' own scores, so the exact index ranks as `model.score` does.
Seen-item exclusion and the warm / cold candidate filters are one allowed-items bitmap per query, handed to
FAISS as an IDSelectorBitmap, so every index kind filters inside the search instead of over-fetching.
Items added at run time get the next position, which is their id in the index.

An approximate index searched with a restrictive filter can miss allowed items (the probed IVF lists or the
HNSW neighbourhood hold too few of them), so when at most `exact_below` items are allowed they are scored
exactly instead: a brute-force pass over 2,048 vectors costs less than the index search itself.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from coldstart.errors import DataError
from coldstart.features.extras import require

KINDS = ("exact", "ivf", "hnsw")


class ItemIndex:
    """Inner-product search over item vectors.

    Args:
        vectors: float32 [I, D] item vectors (row i is item position i).
        kind: "exact" (IndexFlatIP), "ivf" (IndexIVFFlat, nlist ~ 2 sqrt(I), nprobe lists searched) or "hnsw"
            (IndexHNSWFlat, M links per node, ef_search candidates).
        nprobe, hnsw_m, ef_search, ef_construction: the approximate indexes' settings.
        exact_below: approximate kinds score the allowed items exactly when at most this many are allowed.
        threads: FAISS OpenMP threads (1: concurrent requests each get a core instead of fighting for both).
    """

    def __init__(self, vectors: np.ndarray, kind: str = "exact", nprobe: int = 16, hnsw_m: int = 32,
                 ef_search: int = 64, ef_construction: int = 80, exact_below: int = 2048, threads: int = 1) -> None:
        if kind not in KINDS:
            raise DataError(f"unknown index {kind!r} (use {', '.join(KINDS)})", field="index")
        faiss = require("faiss", "serve", "the item index")
        faiss.omp_set_num_threads(threads)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or not len(vectors):
            raise DataError(f"need a non-empty [items, dim] matrix, got shape {vectors.shape}", field="vectors")
        self.faiss, self.kind, self.dim = faiss, kind, vectors.shape[1]
        self.nprobe, self.ef_search, self.exact_below = nprobe, ef_search, exact_below
        self._vectors = vectors.copy()  # [I, D]: the exact path over few allowed items
        self._lock = threading.Lock()
        if kind == "exact":
            self.index = faiss.IndexFlatIP(self.dim)
        elif kind == "ivf":
            self.nlist = max(1, min(int(2 * math.sqrt(len(vectors))), len(vectors) // 39 or 1))
            self._quantizer = faiss.IndexFlatIP(self.dim)  # kept referenced: the IVF index does not own it
            self.index = faiss.IndexIVFFlat(self._quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.train(vectors)
        else:
            self.index = faiss.IndexHNSWFlat(self.dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = ef_construction
        self.index.add(vectors)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append item vectors [n, D]; returns their positions."""
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if vectors.shape[1] != self.dim:
            raise DataError(f"vector width {vectors.shape[1]}, index width {self.dim}", field="vectors")
        with self._lock:
            start = len(self)
            self.index.add(vectors)
            self._vectors = np.concatenate([self._vectors, vectors])
        return np.arange(start, start + len(vectors))

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        """float32 [n, D]: the stored vectors of some positions."""
        return self._vectors[np.asarray(positions, np.int64)]

    def _search_subset(self, queries: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among the given item positions."""
        scores = queries @ self._vectors[rows].T  # [B, n_allowed]
        k_eff = min(k, len(rows))
        top = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff] if k_eff else np.zeros((len(queries), 0), int)
        top_scores = np.take_along_axis(scores, top, 1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        ids = rows[np.take_along_axis(top, order, 1)]
        out_scores = np.take_along_axis(top_scores, order, 1).astype(np.float32)
        if k_eff < k:
            ids = np.pad(ids, ((0, 0), (0, k - k_eff)), constant_values=-1)
            out_scores = np.pad(out_scores, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
        return ids.astype(np.int64), out_scores

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per query by inner product, among the allowed ones.

        Args:
            queries: float32 [B, D] user vectors.
            k: list length.
            allowed: optional bool [n_items] (True: may be returned); None allows every item.

        Returns:
            (positions int64 [B, k], scores float32 [B, k]); -1 / -inf where fewer items qualify (or, for the
            approximate kinds, were reached).
        """
        faiss = self.faiss
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            n = len(self)
            k_eff = max(1, min(k, n))
            bitmap = None
            if allowed is not None:
                allowed = np.asarray(allowed, bool)
                if len(allowed) < n:  # items added after the mask was built are not yet visible to its caller
                    allowed = np.concatenate([allowed, np.zeros(n - len(allowed), bool)])
                if self.kind != "exact" and int(allowed[:n].sum()) <= self.exact_below:
                    return self._search_subset(queries, k, np.flatnonzero(allowed[:n]))
                bitmap = np.packbits(allowed[:n], bitorder="little")
                selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
            else:
                selector = None
            if self.kind == "ivf":
                params = faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
            elif self.kind == "hnsw":
                params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.ef_search, 2 * k_eff))
            else:
                params = faiss.SearchParameters(sel=selector)
            scores, ids = self.index.search(queries, k_eff, params=params)
            del bitmap  # FAISS read it during the search only
        if k_eff < k:
            ids = np.pad(ids, ((0, 0), (0, k - k_eff)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return ids.astype(np.int64), scores


def recall_at_k(exact_ids: np.ndarray, approx_ids: np.ndarray) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (ignoring -1 padding)."""
    hits, total = 0, 0
    for want, got in zip(exact_ids, approx_ids):
        want = set(want[want >= 0].tolist())
        hits += len(want & set(got[got >= 0].tolist()))
        total += len(want)
    return hits / max(total, 1)
