"""Vectorised negative sampling: batched rejection against a sorted array of positive (user, item) keys."""

from __future__ import annotations

import numpy as np
import torch

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


class NegativeSampler:
    """Training-time negatives in torch: uniform over `candidates`, rejecting each user's positives.

    Membership is a dense bitmap [U, I] when it fits in `bitmap_limit` bytes (one gather per draw), otherwise
    the sorted keys above (one binary search per draw). Rejected draws are redrawn together, round by round.

    Args:
        users, items: int arrays [N] of the positive pairs (training interactions only: never valid or test).
        n_users, n_items: sizes.
        candidates: int item indices negatives are drawn from (default: every item).
        bitmap_limit: largest bitmap, in bytes.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
                 candidates: np.ndarray | None = None, bitmap_limit: int = 1 << 28) -> None:
        self.n_items = n_items
        pool = np.arange(n_items) if candidates is None else np.asarray(candidates, dtype=np.int64)
        if len(pool) == 0:
            raise DataError("no candidate items to sample negatives from", field="candidates")
        self.pool = torch.from_numpy(pool.astype(np.int64))
        users_t = torch.from_numpy(np.asarray(users, dtype=np.int64))
        items_t = torch.from_numpy(np.asarray(items, dtype=np.int64))
        if n_users * n_items <= bitmap_limit:
            self.bitmap: torch.Tensor | None = torch.zeros(n_users * n_items, dtype=torch.bool)
            self.bitmap[users_t * n_items + items_t] = True
            self.keys = None
        else:
            self.bitmap = None
            self.keys = torch.unique(users_t * n_items + items_t)  # sorted

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """bool, shape of items: whether (user, item) is a positive; users broadcast against items."""
        query = users * self.n_items + items
        if self.bitmap is not None:
            return self.bitmap[query]
        pos = torch.searchsorted(self.keys, query).clamp_(max=len(self.keys) - 1)
        return self.keys[pos] == query

    def sample(self, users: torch.Tensor, n: int, generator: torch.Generator, max_rounds: int = 100) -> torch.Tensor:
        """int64 [B, n] negatives for int64 users [B], none a positive of its row's user."""
        users_col = users[:, None]  # [B, 1]
        out = self.pool[torch.randint(len(self.pool), (len(users), n), generator=generator)]  # [B, n]
        bad = self.is_positive(users_col, out)
        for _ in range(max_rounds):
            count = int(bad.sum())
            if count == 0:
                return out
            redraw = self.pool[torch.randint(len(self.pool), (count,), generator=generator)]
            out[bad] = redraw
            bad[bad.clone()] = self.is_positive(users_col.expand_as(out)[bad], redraw)
        raise DataError(f"could not draw negatives after {max_rounds} rounds: some user has (almost) no negative item",
                        field="negatives")
