"""A synthetic dataset with planted structure, for fast tests and demos.

Users and items have latent factors; a user interacts with items drawn (without replacement) in proportion
to exp(taste . factor + popularity). Item content is a noisy linear function of the item factors, and user
attributes of the user factors, so a content model can recover cold items and cold users.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from coldstart.data.dataset import Dataset, from_frame
from coldstart.data.modalities import Dense, MultiLabel


def load(n_users: int = 300, n_items: int = 400, dim: int = 8, mean_interactions: int = 25,
         content_dim: int = 32, noise: float = 0.5, seed: int = 0) -> Dataset:
    """Generate the dataset.

    Args:
        n_users, n_items: sizes (every user gets >= 3 interactions; items without any are dropped).
        dim: latent dimension of the planted factors.
        mean_interactions: mean interactions per user.
        content_dim: width of the item content / user attribute matrices.
        noise: std of the Gaussian noise added to content.
        seed: random seed; the same seed gives the same dataset.
    """
    rng = np.random.default_rng(seed)
    tastes = rng.normal(size=(n_users, dim)) / np.sqrt(dim) * 3.0  # [U, D]
    factors = rng.normal(size=(n_items, dim))  # [I, D]
    popularity = rng.normal(scale=0.5, size=n_items)  # [I]
    logits = tastes @ factors.T + popularity  # [U, I]
    # Gumbel top-k samples k items per user without replacement, proportional to exp(logits), in one shot.
    keys = logits + rng.gumbel(size=logits.shape)
    counts = np.clip(rng.poisson(mean_interactions, size=n_users), 3, n_items)
    order = np.argsort(-keys, axis=1)  # [U, I]
    take = np.arange(n_items)[None, :] < counts[:, None]  # [U, I]
    users = np.repeat(np.arange(n_users), counts)
    items = order[take]
    timestamps = 1_600_000_000 + rng.integers(0, 10_000_000, size=len(users))
    frame = pd.DataFrame({"user": users, "item": items, "timestamp": timestamps})
    item_proj = rng.normal(size=(dim, content_dim))
    user_proj = rng.normal(size=(dim, content_dim))
    content = factors @ item_proj + rng.normal(scale=noise, size=(n_items, content_dim))
    attributes = tastes @ user_proj + rng.normal(scale=noise, size=(n_users, content_dim))
    topic = [[f"topic{int(np.argmax(f))}"] for f in factors]
    item_ids = [str(i) for i in range(n_items)]
    return from_frame(
        "synthetic", frame,
        item_features={"content": (item_ids, Dense(content.astype(np.float32))),
                       "topic": (item_ids, MultiLabel.from_lists(topic))},
        user_features={"attributes": ([str(u) for u in range(n_users)], Dense(attributes.astype(np.float32)))},
    )
