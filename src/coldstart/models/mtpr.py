"""MTPR: multi-task pairwise ranking with counterfactual item representations (Du et al., "How to Learn Item
Representation for Cold-Start Multimedia Recommendation?", ACM MM 2020).

    item i, normal:          v_i  = [e_i, f_i]      e_i an id embedding, f_i = MLP(content)
    item i, counterfactual:  v'_i = [0,   f_i]      the all-zero collaborative part a cold item has
    user u:                  w_u  = [p_u, q_u],     score(u, i) = w_u . v_i
    L = BPR(v_i, v_j) + BPR(v'_i, v'_j) + BPR(v_i, v'_j) + BPR(v'_i, v_j) + reg_weight * ||Theta||^2

where BPR(a, b) = -E ln sigmoid(w_u . a - w_u . b) for a positive i and a sampled negative j. Training on both
representations at once teaches the model to rank counterfactual (cold) items among normal (warm) ones, so at
inference a cold item is simply scored through v'_i.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from coldstart.models.content import ContentConfig, ContentRecommender
from coldstart.models.embedding import compact, rows
from coldstart.nn.device import DeviceSetting
from coldstart.nn.losses import bpr


@dataclasses.dataclass(frozen=True)
class MTPRConfig(DeviceSetting, ContentConfig):
    """ContentConfig with BPR's defaults; dim_E is the width of each half (collaborative, content)."""


class MTPR(ContentRecommender):
    """Normal and counterfactual item representations ranked against each other with four BPR terms."""

    name = "mtpr"
    Config = MTPRConfig
    cold_items = "content"
    trains_on_device = True

    def build(self, dims: dict[str, int]) -> None:
        super().build(dims)
        self.user_content = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dims["n_users"], self.config.dim_E)))

    def encode(self) -> tuple[Tensor, Tensor]:
        """(w [U, 2D], v [I, 2D]): users and the normal representation of every item."""
        f = self.content_features(torch.arange(self.dims_["n_items"], device=self.device_))
        return torch.cat([self.user_embedding, self.user_content], 1), torch.cat([self.item_embedding, f], 1)

    def cold_item_vectors(self, z_items: Tensor) -> Tensor:
        """The counterfactual representation [0, f_i]."""
        cold = z_items[~self.warm_items_]
        return torch.cat([torch.zeros_like(cold[:, : self.config.dim_E]), cold[:, self.config.dim_E:]], 1)

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The four pairwise terms on (u, i, j_1..j_K); each distinct item is encoded and scored once."""
        cfg = self.config
        users, items = self.batch_pairs(batch, cfg.num_neg, generator)  # [B], [B, 1 + K], drawn on the CPU
        users, items = users.to(self.device_), items.to(self.device_)
        unique, slots, _ = compact(items, self.dims_["n_items"])
        by_content = torch.gather(rows(self.user_content, users) @ self.content_features(unique).T, 1, slots)
        by_id = torch.gather(rows(self.user_embedding, users) @ rows(self.item_embedding, unique).T, 1, slots)
        normal, counterfactual = by_id + by_content, by_content  # [B, 1 + K] each
        rank = (bpr(normal[:, :1], normal[:, 1:]) + bpr(counterfactual[:, :1], counterfactual[:, 1:])
                + bpr(normal[:, :1], counterfactual[:, 1:]) + bpr(counterfactual[:, :1], normal[:, 1:]))
        reg = self.regularizer(users, items) + rows(self.user_content, users).pow(2).sum(-1).mean()
        loss = rank + cfg.reg_weight * reg
        return loss, {"loss": loss.item(), "bpr": rank.item(), "reg": reg.item()}
