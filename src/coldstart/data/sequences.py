"""Per-user, time-ordered training histories for sequential models (SASRec, CMCLRec), and their masked views.

Order: a user's training interactions are sorted by timestamp; ties (several ratings in the same second, as
MovieLens has) are broken by the interaction's row in the dataset, so the order is fixed and reproducible.
Without timestamps (ml-1m here, a split loaded without its dataset) there is no history to model, and the
file's row order is not neutral either: ml-1m's `implicit_ratings_ge4.csv` lists each user's films by ascending
id, and SASRec learned "the next id is a little larger" (training loss 7.5 -> 4.0 while validation recall@20
fell from 0.082 to 0.020). So the order is a fixed pseudo-random permutation of each user's items (a hash of
(user, item), the same on every run and machine): such a "sequence" is an arbitrary list, not a history, and
`train_sequences` says so with a warning.

Layout: item index i is stored as i + 1; 0 is padding and `n_items + 1` the mask token of augmented views.
Histories are left-padded, so the newest item is always the last column, and a history longer than the
window keeps its newest `length` items (SASRec's convention).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from coldstart.data.splits import Split

log = logging.getLogger("coldstart")

PAD = 0


@dataclass
class Sequences:
    """Left-padded training histories of every user.

    Attributes:
        items: int64 [U, length]: item index + 1 in time order, newest last; 0 pads the left.
        lengths: int64 [U]: the user's number of training interactions (may exceed `length`).
        ordered_by: "timestamp" or "hash" (no timestamps: a fixed pseudo-random order per user).
    """

    items: Tensor
    lengths: Tensor
    ordered_by: str

    @property
    def mask_token(self) -> int:
        """The token of masked positions in augmented views (one past the last item)."""
        return int(self.items.max()) + 1 if self.items.numel() else 1


def pair_hash(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """int64 [N]: a fixed pseudo-random key per (user, item) pair (splitmix64's finaliser on user * 2^32 + item).

    Sorting a user's items by it gives an order that depends on nothing in the data file (ids, row order) and is
    the same on every run and machine.
    """
    with np.errstate(over="ignore"):  # the mixing relies on uint64 wrap-around
        x = (users.astype(np.uint64) << np.uint64(32)) + items.astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(1)).astype(np.int64)


def interaction_times(split: Split) -> tuple[np.ndarray, np.ndarray, str]:
    """(primary key, tie key) per training interaction, and what the primary key is.

    The primary key is the interaction's timestamp when the split's dataset has them (matched by
    (user, item) through a sorted key array, no Python loop); the tie key is its row in the dataset. Without
    timestamps the primary key is `pair_hash` (a fixed pseudo-random order, since a file's row order can carry
    an artefact such as ids in ascending order) and the tie key the row in `split.train`.
    """
    train = split.train
    rows = np.arange(len(train), dtype=np.int64)
    dataset = split.dataset
    if dataset is None or dataset.timestamps is None:
        why = "the split has no dataset" if dataset is None else f"{dataset.name} has no timestamps"
        log.warning("sequences: %s; histories are each user's training items in a fixed pseudo-random order: "
                    "models read an arbitrary list, not a time-ordered sequence", why)
        return pair_hash(train.users, train.items), rows, "hash"
    n_items = np.int64(dataset.n_items)
    keys = dataset.users.astype(np.int64) * n_items + dataset.items.astype(np.int64)  # [N]
    order = np.argsort(keys, kind="stable")
    wanted = train.users.astype(np.int64) * n_items + train.items.astype(np.int64)  # [T]
    pos = np.clip(np.searchsorted(keys[order], wanted), 0, max(len(keys) - 1, 0))
    found = len(keys) > 0
    found = found and bool((keys[order][pos] == wanted).all())
    if not found:
        log.warning("sequences: some training interactions are not in the dataset %s; histories are each "
                    "user's training items in a fixed pseudo-random order, not a time-ordered sequence", dataset.name)
        return pair_hash(train.users, train.items), rows, "hash"
    source = order[pos]  # [T] the dataset row of each training interaction (the first one of a duplicate)
    return dataset.timestamps[source].astype(np.int64), source.astype(np.int64), "timestamp"


def train_sequences(split: Split, length: int) -> Sequences:
    """The newest `length` training items of every user, time-ordered and left-padded (vectorised).

    Args:
        split: the split; only `split.train` is read (never valid / test).
        length: window size (columns of the result).
    """
    train = split.train
    time, tie, ordered_by = interaction_times(split)
    users = train.users.astype(np.int64)
    order = np.lexsort((tie, time, users))  # by user, then time, then dataset row
    counts = np.bincount(users, minlength=split.n_users).astype(np.int64)  # [U]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_users = users[order]
    rank = np.arange(len(order)) - starts[sorted_users]  # position in the user's history, oldest 0
    from_end = counts[sorted_users] - 1 - rank  # 0 for the newest
    keep = from_end < length
    items = np.zeros((split.n_users, length), dtype=np.int64)
    items[sorted_users[keep], length - 1 - from_end[keep]] = train.items[order][keep].astype(np.int64) + 1
    return Sequences(torch.from_numpy(items), torch.from_numpy(counts), ordered_by)


def disjoint_masks(valid: Tensor, rate: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two disjoint random masks over the True entries of `valid` (augmentation of CMCLRec 3.3, Eq. 1).

    Each valid entry is masked in view 1 with probability `rate`, in view 2 with probability `rate`, never in
    both (one uniform draw u per entry: view 1 if u < rate, view 2 if rate <= u < 2 rate), so the two views
    hide different parts of the same input, as the paper requires.

    Args:
        valid: bool [...]: entries that may be masked (not padding).
        rate: masking probability per view, in [0, 0.5].
        generator: the epoch's generator.

    Returns:
        (mask1, mask2): bool, shaped like `valid`, disjoint.
    """
    if not 0.0 <= rate <= 0.5:
        raise ValueError(f"mask rate must be in [0, 0.5] for two disjoint views, got {rate}")
    u = torch.rand(valid.shape, generator=generator)
    first = valid & (u < rate)
    second = valid & (u >= rate) & (u < 2 * rate)
    return first, second


def masked_views(items: Tensor, rate: float, mask_token: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two differently masked copies of padded sequences [B, L]: masked positions hold `mask_token`."""
    first, second = disjoint_masks(items != PAD, rate, generator)
    token = torch.full_like(items, mask_token)
    return torch.where(first, token, items), torch.where(second, token, items)
