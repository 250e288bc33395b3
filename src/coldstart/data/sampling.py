"""Vectorised negative sampling: batched rejection against a sorted array of positive (user, item) keys."""

from __future__ import annotations

import numpy as np

from coldstart.errors import DataError


def positive_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted unique int64 keys user * n_items + item, for membership tests with np.searchsorted."""
    return np.unique(users.astype(np.int64) * n_items + items.astype(np.int64))


def is_positive(keys: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """bool, same shape as items: whether (user, item) is among the sorted `keys`. users broadcast against items."""
    query = users.astype(np.int64) * n_items + items.astype(np.int64)
    pos = np.searchsorted(keys, query)
    pos = np.minimum(pos, len(keys) - 1) if len(keys) else pos
    return (keys[pos] == query) if len(keys) else np.zeros(query.shape, bool)


def sample_negatives(users: np.ndarray, n: int, n_items: int, keys: np.ndarray, rng: np.random.Generator,
                     candidates: np.ndarray | None = None, max_rounds: int = 100) -> np.ndarray:
    """Draw `n` negatives per user (with replacement), uniformly among `candidates` minus the user's positives.

    Whole rejected entries are redrawn together, round after round; there is no loop per sample.

    Args:
        users: int [B] user index per row.
        n: negatives per row.
        n_items: catalogue size (for the keys).
        keys: sorted positive keys from `positive_keys`.
        rng: NumPy random generator.
        candidates: item indices to draw from (default: all items).
        max_rounds: give up (DataError) if some user still has only positives after this many rounds.

    Returns:
        int64 [B, n] item indices, none of them a positive of its row's user.
    """
    pool = np.arange(n_items) if candidates is None else np.asarray(candidates, dtype=np.int64)
    if len(pool) == 0:
        raise DataError("no candidate items to sample negatives from", field="candidates")
    users_col = np.asarray(users, dtype=np.int64)[:, None]  # [B, 1]
    out = pool[rng.integers(0, len(pool), size=(len(users), n))]  # [B, n]
    bad = is_positive(keys, users_col, out, n_items)
    for _ in range(max_rounds):
        if not bad.any():
            return out
        redraw = pool[rng.integers(0, len(pool), size=int(bad.sum()))]
        out[bad] = redraw
        rows = np.nonzero(bad)[0]
        bad[bad] = is_positive(keys, users_col[rows, 0], redraw, n_items)
    raise DataError(f"could not draw negatives after {max_rounds} rounds: some user has (almost) no negative item",
                    field="negatives")
