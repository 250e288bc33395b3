"""DUIF: Deep User-Image Features (Geng et al., "Learning Image and User Features for Recommendation in
Social Networks", ICCV 2015), the content-only baseline of the CLCRec paper.

    score(u, i) = p_u . f_i,        f_i = W2 leaky_relu(W1 x_i + b1) + b2   (the item's content, through an MLP)
    L = -E_(u,i,j) ln sigmoid(score(u, i) - score(u, j)) + reg_weight * E_u ||p_u||^2     (BPR, pairwise)

Every item, warm or cold, is represented by its content alone, so warm and cold items are scored the same way.
The paper learns the image CNN end to end; here f_i starts from extracted features (`coldstart features`),
as in the CLCRec paper's comparison.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from coldstart.models.content import ContentConfig, ContentRecommender
from coldstart.models.embedding import compact, rows
from coldstart.nn.device import DeviceSetting
from coldstart.nn.losses import bpr


@dataclasses.dataclass(frozen=True)
class DUIFConfig(DeviceSetting, ContentConfig):
    """ContentConfig with BPR's defaults: one negative per positive, batches of 2048, reg_weight on p_u only."""


class DUIF(ContentRecommender):
    """User embeddings against content-only item representations, trained with BPR."""

    name = "duif"
    Config = DUIFConfig
    cold_items = "content"
    trains_on_device = True

    def build(self, dims: dict[str, int]) -> None:
        super().build(dims)
        del self.item_embedding  # items have no id embedding: f_i comes from content alone

    def encode(self) -> tuple[Tensor, Tensor]:
        """(p [U, D], f [I, D]): user embeddings and the content representation of every item."""
        return self.user_embedding, self.content_features(torch.arange(self.dims_["n_items"], device=self.device_))

    def cold_item_vectors(self, z_items: Tensor) -> Tensor:
        return z_items[~self.warm_items_]  # already content representations

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """BPR over (u, i, j_1..j_K) with scores p_u . f; each distinct item of the batch is encoded once."""
        cfg = self.config
        users, items = self.batch_pairs(batch, cfg.num_neg, generator)  # [B], [B, 1 + K], drawn on the CPU
        users, items = users.to(self.device_), items.to(self.device_)
        unique, slots, _ = compact(items, self.dims_["n_items"])
        p = rows(self.user_embedding, users)  # [B, D]
        scores = torch.gather(p @ self.content_features(unique).T, 1, slots)  # [B, 1 + K]
        rank = bpr(scores[:, :1], scores[:, 1:])
        reg = p.pow(2).sum(-1).mean()
        loss = rank + cfg.reg_weight * reg
        return loss, {"loss": loss.item(), "bpr": rank.item(), "reg": reg.item()}
