"""Popularity: every user gets the items with the most training interactions.

Cold items have no training interaction, so they all score log(1) = 0 and tie; the evaluator orders ties by a fixed random
permutation of the items.
On the cold scenario this model is therefore an arbitrary fixed order, no better than random.
"""

from __future__ import annotations

import torch
from torch import Tensor

from coldstart.data.splits import Split
from coldstart.models.base import Recommender


class Popularity(Recommender):
    """Score = log(1 + number of training interactions of the item), the same for every user."""

    name = "pop"
    cold_items = "none"
    #: Scores do not depend on the user, so a user without training interactions is ranked like any other.
    cold_users = "popularity"

    def build(self, dims: dict[str, int]) -> None:
        self.register_buffer("popularity_", torch.zeros(dims["n_items"]))

    def _fit(self, split: Split, options=None) -> None:
        counts = torch.bincount(torch.from_numpy(split.train.items), minlength=split.n_items)
        self.popularity_ = torch.log1p(counts.float())

    def score(self, users: Tensor, items: Tensor | None = None) -> Tensor:
        pop = self.popularity_ if items is None else self.popularity_[items]
        return pop.expand(len(users), -1)  # [B, I]
