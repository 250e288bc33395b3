"""Content similarity: a training-free content-based baseline (the classic user-profile scorer of
content-based filtering; Pazzani and Billsus, "Content-based recommendation systems", 2007).

    x_i = normalise(c_i - mean_{j in warm} c_j)          c_i: the item's content (the normalised modalities,
                                                        concatenated, as the content models see it)
    p_u = (1 / |I_u|) sum_{j in I_u} x_j                 I_u: the user's training items
    score(u, i) = p_u . x_i                              the mean cosine of i to the user's items

Nothing is learnt, so it measures what the content alone says about a user's taste: a floor that a trained
cold-start model has to beat. Centring matters for pretrained embeddings, whose vectors share one large
direction; without it every user's profile mostly scores closeness to that direction. Items without content
get x = 0 (score 0). Warm and cold items are scored alike.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.base import Recommender
from coldstart.models.content import item_content_spec
from coldstart.nn.content import build_content


@dataclasses.dataclass(frozen=True)
class ContentSimConfig:
    """Attributes:
        modalities: names of the item modalities to use (default: every numeric one).
        max_dims: refuse content wider than this (it is stored densely: items x dims floats).
    """

    modalities: tuple[str, ...] | None = None
    max_dims: int = 8192

    def __post_init__(self) -> None:
        if self.modalities is not None:
            object.__setattr__(self, "modalities", tuple(self.modalities))  # JSON gives a list
        if self.max_dims < 1:
            raise DataError(f"must be >= 1, got {self.max_dims}", field="max_dims")


class ContentSim(Recommender):
    """score(u, i) = mean over the user's training items j of cos(x_i, x_j), x = centred content."""

    name = "content_sim"
    Config = ContentSimConfig
    cold_items = "content"

    def dims_for(self, split: Split) -> dict[str, int]:
        dims = super().dims_for(split)
        spec = item_content_spec(self.name, split, self.config.modalities)
        width = sum(spec.dims)
        if width > self.config.max_dims:
            raise DataError(f"content has {width} columns, more than max_dims={self.config.max_dims}; use a "
                            "feature preset (--features) or raise max_dims", field="max_dims")
        dense, sparse = build_content(spec, split.dataset.item_features, n_rows=split.n_items)
        self._content = np.concatenate([dense, sparse.toarray()], axis=1)  # [I, D]
        dims["content_dims"] = self._content.shape[1]
        return dims

    def build(self, dims: dict[str, int]) -> None:
        self.register_buffer("item_vectors_", torch.zeros(dims["n_items"], dims["content_dims"]))
        self.register_buffer("user_profiles_", torch.zeros(dims["n_users"], dims["content_dims"]))

    def _fit(self, split: Split, options=None) -> None:
        content = torch.from_numpy(self._content).float()  # [I, D]
        del self._content
        has = content.abs().sum(1) > 0  # [I]
        warm = torch.zeros(split.n_items, dtype=torch.bool)
        warm[torch.from_numpy(split.train.items)] = True
        centre = content[warm & has].mean(0) if (warm & has).any() else torch.zeros(content.shape[1])
        x = torch.where(has[:, None], content - centre, 0.0)
        x = torch.nn.functional.normalize(x, dim=1)  # [I, D], zero rows stay zero
        train = split.matrix("train")
        train.data[:] = 1.0  # membership, whatever the stored value
        counts = np.maximum(np.diff(train.indptr), 1)[:, None]  # [U, 1]
        self.item_vectors_ = x
        self.user_profiles_ = torch.from_numpy(np.asarray(train @ x.numpy()) / counts).float()  # [U, D] mean

    def score(self, users: Tensor, items: Tensor | None = None) -> Tensor:
        x = self.item_vectors_ if items is None else self.item_vectors_[items]
        return self.user_profiles_[users] @ x.T  # [B, I]
