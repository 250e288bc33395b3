"""Random: a fixed random score per (user, item), reproducible under a seed; the floor every model must beat."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from coldstart.models.base import Recommender


@dataclasses.dataclass(frozen=True)
class RandomConfig:
    seed: int = 0
    dim: int = 64


class RandomScores(Recommender):
    """Scores are dot products of random Gaussian user and item vectors: random rankings, stable per user."""

    name = "random"
    Config = RandomConfig
    #: Scores never depend on training, so a cold user's random ranking is as meaningful as a warm user's:
    #: the popularity fallback would turn the floor into pop for them.
    cold_users = "random"

    def build(self, dims: dict[str, int]) -> None:
        gen = torch.Generator().manual_seed(self.config.seed)
        self.register_buffer("user_vectors_", torch.randn(dims["n_users"], self.config.dim, generator=gen))
        self.register_buffer("item_vectors_", torch.randn(dims["n_items"], self.config.dim, generator=gen))

    def score(self, users: Tensor, items: Tensor | None = None) -> Tensor:
        item_vecs = self.item_vectors_ if items is None else self.item_vectors_[items]
        return self.user_vectors_[users] @ item_vecs.T  # [B, I]
