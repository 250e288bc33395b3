"""User content similarity: the training-free user-side baseline (users with similar attributes: their items).

    x_u = normalise(a_u - mu)          a_u: the user's attributes as the models see them (models/user_content.py:
                                       the numeric user modalities, each normalised, concatenated); mu: their
                                       mean over warm users (users with training interactions)
    N_k(u) = the k warm users v != u with the largest cos(x_u, x_v) = x_u . x_v (ties: lower index first)
    score(u, i) = sum_{v in N_k(u)} max(x_u . x_v, 0) R_vi / sum_{v in N_k(u)} max(x_u . x_v, 0)
                                       R: binary training interactions; the share of similar users who took i

It is the user-side counterpart of `content_sim` (which scores an item by its content's similarity to the
user's items): the classic demographic k-nearest-neighbour recommender. Nothing is learnt. Warm users are
scored the same way, from their attributes alone, so its warm numbers measure what attributes say, not
history. A user whose attributes equal the mean (or who has none) has no positive similarity to anyone; the
weights then fall back to 1 for each of the k neighbours (the most popular items among them), logged. Items
absent from train get score 0 (cold_items = "none": it has no item representation).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.base import Recommender
from coldstart.models.user_content import prepare_user_content, warm_user_mask

log = logging.getLogger("coldstart")


@dataclasses.dataclass(frozen=True)
class UserContentSimConfig:
    """Attributes:
        k: neighbours per user (among warm users).
        modalities: names of the user modalities to use (default: every numeric one).
        max_dims: refuse an attribute block wider than this (it is stored densely: users x dims floats).
    """

    k: int = 50
    modalities: tuple[str, ...] | None = None
    max_dims: int = 8192

    def __post_init__(self) -> None:
        if self.modalities is not None:
            object.__setattr__(self, "modalities", tuple(self.modalities))  # JSON gives a list
        if self.k < 1:
            raise DataError(f"must be >= 1, got {self.k}", field="k")
        if self.max_dims < 1:
            raise DataError(f"must be >= 1, got {self.max_dims}", field="max_dims")


class UserContentSim(Recommender):
    """score(u, i): the similarity-weighted share of u's k most similar warm users (by attributes) who took i."""

    name = "user_content_sim"
    Config = UserContentSimConfig
    cold_items = "none"
    cold_users = "content"

    def dims_for(self, split: Split) -> dict[str, int]:
        dims = super().dims_for(split)
        data = prepare_user_content(self.name, split, self.config.modalities)
        width = data.dense.shape[1] + data.sparse.shape[1]
        if width > self.config.max_dims:
            raise DataError(f"user attributes have {width} columns, more than max_dims={self.config.max_dims}",
                            field="max_dims")
        self._attributes = np.hstack([data.dense, data.sparse.toarray()]).astype(np.float64)  # [U, D]
        dims["user_dims"] = width
        return dims

    def build(self, dims: dict[str, int]) -> None:
        self.register_buffer("user_vectors_", torch.zeros(dims["n_users"], dims["user_dims"]))  # [U, D] x_u

    def _fit(self, split: Split, options=None) -> None:
        attributes = self._attributes
        del self._attributes
        warm = warm_user_mask(self.seen_indptr_).numpy()  # [U]
        mu = attributes[warm].mean(0) if warm.any() else np.zeros(attributes.shape[1])  # [D]
        centred = attributes - mu  # [U, D]
        norms = np.linalg.norm(centred, axis=1, keepdims=True)  # [U, 1]
        self.user_vectors_ = torch.from_numpy(centred / np.where(norms > 1e-12, norms, 1.0)).float()

    @torch.no_grad()
    def neighbours(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """(indices int64 [B, k'], weights float [B, k']) of each user's nearest warm users, k' = min(k, warm - 1)."""
        warm = warm_user_mask(self.seen_indptr_)  # [U]
        sims = self.user_vectors_[users] @ self.user_vectors_.T  # [B, U]
        sims[:, ~warm] = -torch.inf  # only warm users have items to give
        sims[torch.arange(len(users)), users] = -torch.inf  # not oneself
        k = max(1, min(self.config.k, int(warm.sum()) - 1))
        # a stable order on ties (identical attributes are common: 2 genders x 7 ages x 21 jobs on ml-1m)
        order = torch.argsort(-sims, dim=1, stable=True)[:, :k]  # [B, k]
        weights = torch.gather(sims, 1, order).clamp(min=0)  # [B, k]
        weights = torch.where(torch.isfinite(weights), weights, 0.0)
        none = weights.sum(1) == 0  # [B] no positive similarity: equal weights
        if none.any():
            if not getattr(self, "_equal_logged", False):
                self._equal_logged = True
                log.warning("%s: %d of %d users have no neighbour with a positive attribute similarity; their "
                            "k neighbours get equal weights", self.name, int(none.sum()), len(users))
            weights[none] = 1.0
        return order, weights / weights.sum(1, keepdim=True)

    @torch.no_grad()
    def score(self, users: Tensor, items: Tensor | None = None) -> Tensor:
        users = torch.as_tensor(users, dtype=torch.int64)
        order, weights = self.neighbours(users)  # [B, k]
        n_users, n_items = self.dims_["n_users"], self.dims_["n_items"]
        rows = np.repeat(np.arange(len(users)), order.shape[1])
        mix = sp.csr_matrix((weights.flatten().numpy().astype(np.float64), (rows, order.flatten().numpy())),
                            shape=(len(users), n_users))  # [B, U]
        seen = sp.csr_matrix((np.ones(len(self.seen_indices_)), self.seen_indices_.numpy(),
                              self.seen_indptr_.numpy()), shape=(n_users, n_items))  # [U, I]
        out = torch.from_numpy(np.asarray((mix @ seen).todense(), dtype=np.float32))  # [B, I]
        return out if items is None else out[:, torch.as_tensor(items, dtype=torch.int64)]
