"""A synthetic dataset at scale (1M users x 100K items x 10M interactions in about a minute), written as a
bring-your-own folder (interactions.parquet + three item content modalities) that `coldstart run --dataset
PATH` loads like any other.

Planted structure, so that metrics mean something:

- Items belong to one of `n_topics` topics and have a log-normal popularity.
- Each user has a primary and a secondary topic; an interaction picks the primary topic with probability
  `p_primary`, the secondary with `p_secondary`, otherwise any item; within the chosen pool the item is drawn in
  proportion to popularity. So collaborative filtering can learn user -> topic affinities, and popularity
  alone is a real but weaker baseline.
- Item content reveals the topic through three modalities of different strength: `text` (dense, topic centroid
  + noise, strongest), `image` (dense, another centroid + more noise) and `tags` (multi-hot, 5 tags per item,
  each from the topic's own tag block with probability 0.6). A content model can therefore place cold items.

Every step is vectorised over interactions (no [users x items] matrix): draws go through cumulative
popularity and `searchsorted`, duplicates are removed through sorted (user * I + item) keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from coldstart.data.paths import temp_sibling
from coldstart.errors import DataError
from coldstart.features.extras import require


@dataclass
class Generated:
    """The generated data, by dense index (raw ids are the index as a decimal string).

    Attributes:
        users, items, timestamps: int64 [N], sorted by (user, item).
        text: float32 [I, text_dim]; image: float32 [I, image_dim]; tags: binary CSR [I, n_tags].
        item_topic: int64 [I]; user_topics: int64 [U, 2] (primary, secondary): the planted truth.
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    text: np.ndarray
    image: np.ndarray
    tags: sp.csr_matrix
    item_topic: np.ndarray
    user_topics: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_topics)

    @property
    def n_items(self) -> int:
        return len(self.item_topic)


def generate(n_users: int = 1_000_000, n_items: int = 100_000, n_interactions: int = 10_000_000,
             n_topics: int = 50, p_primary: float = 0.6, p_secondary: float = 0.25, text_dim: int = 64,
             image_dim: int = 32, n_tags: int = 2_000, tags_per_item: int = 5, seed: int = 0) -> Generated:
    """Draw the dataset (see the module docstring for the planted structure).

    Every user keeps at least one interaction; (user, item) pairs are distinct. Items nobody drew are possible
    in tiny instances (a loader then drops them, as for any dataset).

    Args:
        n_users, n_items, n_interactions: sizes (n_interactions distinct pairs, at least one per user).
        n_topics: number of planted topics.
        p_primary, p_secondary: probability that an interaction comes from the user's first / second topic.
        text_dim, image_dim: widths of the dense modalities.
        n_tags, tags_per_item: the tag vocabulary and the tags drawn per item.
        seed: random seed; the same arguments give the same data.

    Raises:
        DataError: impossible sizes (fewer interactions than users, more than users x items).
    """
    if min(n_users, n_items, n_topics) < 1 or n_interactions < n_users:
        raise DataError(f"need n_interactions >= n_users >= 1 and n_items, n_topics >= 1 (got {n_users} users, "
                        f"{n_items} items, {n_interactions} interactions, {n_topics} topics)", field="generate")
    if n_interactions > 0.5 * n_users * n_items:
        raise DataError("more than half of all (user, item) pairs: too dense to draw distinct pairs",
                        field="n_interactions")
    if not (0 <= p_primary and 0 <= p_secondary and p_primary + p_secondary <= 1):
        raise DataError("p_primary + p_secondary must lie in [0, 1]", field="p_primary")
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, n_topics, n_items)  # [I]
    pop = rng.lognormal(0.0, 1.0, n_items)  # [I]
    user_topics = np.stack([rng.integers(0, n_topics, n_users), rng.integers(0, n_topics, n_users)], 1)  # [U, 2]
    activity = rng.lognormal(0.0, 1.0, n_users)  # [U]

    # Items ordered by topic: a topic's items are one contiguous block of the cumulative popularity.
    by_topic = np.argsort(topic, kind="stable")  # [I]
    cum = np.concatenate([[0.0], np.cumsum(pop[by_topic])])  # [I + 1]
    bounds = np.searchsorted(topic[by_topic], np.arange(n_topics + 1))  # [T + 1] block starts in by_topic
    lo_c, hi_c = cum[bounds[:-1]], cum[bounds[1:]]  # [T] cumulative popularity at block edges

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        """n (user, item) draws: one guaranteed per user first, the rest in proportion to activity."""
        extra = n - n_users
        act = np.cumsum(activity)
        u = np.concatenate([np.arange(n_users),
                            np.searchsorted(act, rng.random(extra) * act[-1], side="right")]) if extra > 0 \
            else np.arange(n_users)
        u = np.minimum(u, n_users - 1)
        r = rng.random(len(u))
        t = np.where(r < p_primary, user_topics[u, 0], np.where(r < p_primary + p_secondary, user_topics[u, 1], -1))
        anywhere = t < 0
        t0 = np.where(anywhere, 0, t)
        lo = np.where(anywhere, 0.0, lo_c[t0])
        hi = np.where(anywhere, cum[-1], hi_c[t0])
        pos = np.searchsorted(cum, lo + rng.random(len(u)) * (hi - lo), side="right") - 1  # index into by_topic
        first = np.where(anywhere, 0, bounds[t0])
        last = np.where(anywhere, n_items - 1, np.maximum(bounds[t0 + 1] - 1, bounds[t0]))
        # A topic without items (tiny instances) falls back to the whole catalogue.
        empty = ~anywhere & (bounds[t0 + 1] == bounds[t0])
        pos = np.where(empty, rng.integers(0, n_items, len(u)), np.clip(pos, first, last))
        return u.astype(np.int64), by_topic[pos].astype(np.int64)

    keys = np.zeros(0, np.int64)
    need = n_interactions
    for _ in range(20):  # duplicates are redrawn: a few rounds at most
        u, i = draw(n_users + (int((need - n_users) * 1.1) if keys.size == 0 else int(need * 1.3)) + 16)
        if keys.size:  # later rounds: drop the guaranteed one-per-user block, users already have theirs
            u, i = u[n_users:], i[n_users:]
        keys = np.unique(np.concatenate([keys, u * n_items + i]))
        if len(keys) >= n_interactions:
            break
        need = n_interactions - len(keys)
    users_sorted = keys // n_items
    first_of_user = np.flatnonzero(np.r_[True, users_sorted[1:] != users_sorted[:-1]])  # [U] one row per user
    if len(keys) > n_interactions:  # keep every user's first pair, the rest at random
        rest = np.setdiff1d(np.arange(len(keys)), first_of_user, assume_unique=True)
        keep = np.sort(np.concatenate([first_of_user, rng.choice(rest, n_interactions - n_users, replace=False)]))
        keys = keys[keep]
    users, items = keys // n_items, keys % n_items
    timestamps = 1_600_000_000 + rng.integers(0, 100_000_000, len(keys))

    # Content: the topic, seen through three noisy modalities.
    text_centres = rng.normal(size=(n_topics, text_dim))  # [T, Dt]
    text = text_centres[topic] + rng.normal(scale=1.0, size=(n_items, text_dim))  # [I, Dt]
    image_centres = rng.normal(size=(n_topics, image_dim))  # [T, Di]
    image = 0.7 * image_centres[topic] + rng.normal(scale=1.0, size=(n_items, image_dim))  # [I, Di]
    block = max(1, n_tags // n_topics)  # tags of topic t: [t * block, (t + 1) * block)
    own = rng.random((n_items, tags_per_item)) < 0.6  # [I, k]
    own_tag = (topic[:, None] * block + rng.integers(0, block, (n_items, tags_per_item))) % n_tags
    tag = np.where(own, own_tag, rng.integers(0, n_tags, (n_items, tags_per_item)))  # [I, k]
    tags = sp.csr_matrix((np.ones(tag.size, np.float32), (np.repeat(np.arange(n_items), tags_per_item),
                                                          tag.ravel())), shape=(n_items, n_tags))
    tags.sum_duplicates()
    tags.data[:] = 1.0
    return Generated(users, items, timestamps, text.astype(np.float32), image.astype(np.float32), tags,
                     topic.astype(np.int64), user_topics.astype(np.int64))


def write_folder(data: Generated, root: str | Path, row_group_size: int = 1 << 20) -> Path:
    """Write `data` as a bring-your-own folder (loaders/tabular.py): interactions.parquet (int64 user, item,
    timestamp), items/text.npy, items/image.npy (+ .ids.txt) and items/tags.npz (scipy sparse + .ids.txt).

    Items that no interaction names are left out of the feature files (the loader refuses feature rows of
    unknown ids). Every file is written to a temporary name and renamed.
    """
    pa = require("pyarrow", "parquet", "Parquet files")
    pq = require("pyarrow.parquet", "parquet", "Parquet files")
    root = Path(root)
    (root / "items").mkdir(parents=True, exist_ok=True)
    table = pa.table({"user": data.users, "item": data.items, "timestamp": data.timestamps})
    _atomic(root / "interactions.parquet", lambda tmp: pq.write_table(table, tmp, row_group_size=row_group_size))
    used = np.zeros(data.n_items, bool)
    used[data.items] = True
    rows = np.flatnonzero(used)
    ids = "\n".join(map(str, rows)) + "\n"
    for name, values in (("text", data.text), ("image", data.image)):
        _atomic(root / "items" / f"{name}.npy", lambda tmp, v=values: np.save(tmp, v[rows]), suffix=".npy")
        _atomic(root / "items" / f"{name}.ids.txt", lambda tmp: Path(tmp).write_text(ids))
    _atomic(root / "items" / "tags.npz", lambda tmp: sp.save_npz(tmp, data.tags[rows]), suffix=".npz")
    _atomic(root / "items" / "tags.ids.txt", lambda tmp: Path(tmp).write_text(ids))
    return root


def _atomic(path: Path, write, suffix: str = "") -> None:
    """Call write(temporary path) and rename the result onto `path`."""
    fd, tmp = temp_sibling(path, suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
