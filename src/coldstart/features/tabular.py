"""Categorical, multi-label and numeric columns -> dense blocks (multi-hot, one-hot, standardised numbers)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from coldstart.data.modalities import MultiLabel


def multi_hot(labels: MultiLabel, top_n: int | None = None, min_count: int = 1) -> tuple[np.ndarray, list[str]]:
    """float32 [N, V'] indicator columns of the labels kept, and their names.

    Args:
        labels: the multi-label modality (genres, director, actors, MPAA rating).
        top_n: keep only the N labels carried by most rows (ties broken by label order).
        min_count: drop labels carried by fewer rows; a label on one item tells a cold item nothing.
    """
    mat = sp.csr_matrix(labels.values)
    counts = np.bincount(mat.indices, minlength=mat.shape[1])
    keep = np.flatnonzero(counts >= min_count)
    if top_n is not None and len(keep) > top_n:
        keep = np.sort(keep[np.argsort(-counts[keep], kind="stable")[:top_n]])
    block = (mat[:, keep] > 0).astype(np.float32).toarray()
    return block, [labels.vocabulary[j] for j in keep]


def column_stats(values: np.ndarray, mask: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-column mean and std over the present cells (finite and not masked out).

    Args:
        values: float [N, D] or [N], possibly with NaN.
        mask: optional bool [N]; False marks a row without a value.

    Returns:
        (values float64 [N, D], present bool [N, D], mean [D], std [D]); the statistics a new row must be
        standardised with (features/fitted.py saves them with a run).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    present = np.isfinite(values)
    if mask is not None:
        present &= np.asarray(mask, bool)[:, None]
    counts = np.maximum(present.sum(axis=0), 1)
    mean = np.where(present, values, 0.0).sum(axis=0) / counts
    std = np.sqrt((np.where(present, values - mean, 0.0) ** 2).sum(axis=0) / counts)
    return values, present, mean, std


def standardize(values: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Z-score numeric columns; missing cells (NaN, inf, or rows with mask False) become 0, the column mean.

    Args:
        values: float [N, D], possibly with NaN.
        mask: optional bool [N]; False marks a row without a value (as a Dense modality's mask does).

    Returns:
        (float32 [N, D] standardised, bool [N] True where the row had every value, {"missing": cells}).
    """
    values, present, mean, std = column_stats(values, mask)
    centred = np.where(present, values - mean, 0.0)
    scaled = centred / np.where(std > 0, std, 1.0)
    return scaled.astype(np.float32), present.all(axis=1), {"missing": int((~present).sum())}


def one_hot(categories: list[str], vocabulary: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """float32 [N, V] one-hot of one category string per row ("" = unknown, an all-zero row)."""
    vocab = vocabulary if vocabulary is not None else sorted({c for c in categories if c})
    index = {c: j for j, c in enumerate(vocab)}
    cols = np.array([index.get(c, -1) for c in categories], dtype=np.int64)
    block = np.zeros((len(categories), len(vocab)), np.float32)
    rows = np.flatnonzero(cols >= 0)
    block[rows, cols[rows]] = 1.0
    return block, list(vocab)


#: ML-1M's age buckets (users.dat: 1 = under 18, 18 = 18-24, ..., 56 = 56+), applied to ML-100K's exact ages
#: so both datasets share one encoding.
AGE_EDGES = np.array([18, 25, 35, 45, 50, 56])
AGE_LABELS = np.array(["1", "18", "25", "35", "45", "50", "56"])


def age_bucket(ages: np.ndarray) -> list[str]:
    """The ML-1M bucket label of each age ("" when missing)."""
    ages = np.asarray(ages, dtype=np.float64).ravel()
    labels = AGE_LABELS[np.digitize(np.nan_to_num(ages, nan=0.0), AGE_EDGES)]
    return np.where(np.isfinite(ages), labels, "").tolist()


def zip_prefix(codes: list[str], digits: int = 1) -> list[str]:
    """The first `digits` characters of US ZIP codes; non-numeric codes (e.g. Canadian) become "other"."""
    return [c.strip()[:digits] if c.strip()[:digits].isdigit() else "other" for c in codes]


def concat_blocks(blocks: list[np.ndarray], scale: list[bool] | None = None) -> np.ndarray:
    """Concatenate blocks, first scaling each row of each indicator block to unit L2 norm.

    Without this, a block with many ones per row (actors) would drown one with a single one (director).

    Args:
        blocks: float [N, D_b] each.
        scale: per block, whether to scale it (default all). Standardised numbers are left as they are:
            a one-column block scaled to unit norm would keep only its sign.
    """
    scale = [True] * len(blocks) if scale is None else scale
    scaled = []
    for block, do_scale in zip(blocks, scale):
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        scaled.append(block / np.where(norms > 0, norms, 1.0) if do_scale else block)
    return np.concatenate(scaled, axis=1).astype(np.float32)
