"""VBPR: Visual Bayesian Personalized Ranking (He and McAuley, AAAI 2016).

    x_ui = alpha + beta_u + beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i              (Eq. 2)
    L = -E_(u,i,j) ln sigmoid(x_ui - x_uj) + reg_weight * (||gamma_u||^2 + ||theta_u||^2 + ||gamma_i||^2 + beta_i^2)

alpha and beta_u cancel in every BPR difference and are left out. f_i is the item's content (every numeric
modality, normalised as for CLCRec), E and beta' one linear map of width dim_E + 1. Written as one dot product:

    user vector [gamma_u, theta_u, 1], item vector [gamma_i, E f_i, beta' . f_i + beta_i]

A cold item was never trained, so its gamma_i and beta_i are 0: it is scored by theta_u . E f_i + beta' . f_i,
the visual part alone, as the paper's cold-start experiment does.
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
class VBPRConfig(DeviceSetting, ContentConfig):
    """ContentConfig with VBPR's shape: dim_E is both K (gamma) and K' (theta); E is linear (hidden = 0)."""

    hidden: int = 0


class VBPR(ContentRecommender):
    """BPR on latent factors plus a content (visual) term; cold items use the content term alone."""

    name = "vbpr"
    Config = VBPRConfig
    cold_items = "content"
    trains_on_device = True

    def build(self, dims: dict[str, int]) -> None:
        super().build(dims)
        d = self.config.dim_E
        self.user_theta = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dims["n_users"], d)))  # [U, K']
        self.item_bias = nn.Parameter(torch.zeros(dims["n_items"]))  # [I]

    def content_dim(self) -> int:
        return self.config.dim_E + 1  # E f_i and beta' . f_i in one linear map

    def vectors(self, users: Tensor, items: Tensor, content: Tensor) -> tuple[Tensor, Tensor]:
        """(user vectors [n_u, 2K + 1], item vectors [n_i, 2K + 1]) whose dot product is x_ui (Eq. 2).

        Args:
            users: user indices [n_u].
            items: item indices [n_i] (their gamma_i and beta_i).
            content: the items' encoder output [n_i, K + 1] = [E f_i, beta' . f_i].
        """
        ones = torch.ones(len(users), 1, device=content.device)
        user_vec = torch.cat([rows(self.user_embedding, users), rows(self.user_theta, users), ones], 1)
        item_vec = torch.cat([rows(self.item_embedding, items), content[:, :-1],
                              (content[:, -1] + rows(self.item_bias[:, None], items)[:, 0])[:, None]], 1)
        return user_vec, item_vec

    def encode(self) -> tuple[Tensor, Tensor]:
        users = torch.arange(self.dims_["n_users"], device=self.device_)
        items = torch.arange(self.dims_["n_items"], device=self.device_)
        return self.vectors(users, items, self.content_features(items))

    def cold_item_vectors(self, z_items: Tensor) -> Tensor:
        """Cold items keep the content part of `encode`'s rows; their never-trained gamma_i and beta_i count as 0."""
        cold = ~self.warm_items_
        rows_ = z_items[cold]  # [n_cold, 2K + 1] = [gamma_i, E f_i, beta' . f_i + beta_i]
        k = self.config.dim_E
        return torch.cat([torch.zeros_like(rows_[:, :k]), rows_[:, k:-1],
                          (rows_[:, -1] - self.item_bias[cold])[:, None]], 1)

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """BPR on x_ui - x_uj; each distinct item of the batch is encoded and scored once."""
        cfg = self.config
        users, items = self.batch_pairs(batch, cfg.num_neg, generator)  # [B], [B, 1 + K], drawn on the CPU
        users, items = users.to(self.device_), items.to(self.device_)
        unique, slots, _ = compact(items, self.dims_["n_items"])
        user_vec, item_vec = self.vectors(users, unique, self.content_features(unique))
        scores = torch.gather(user_vec @ item_vec.T, 1, slots)  # [B, 1 + K]
        rank = bpr(scores[:, :1], scores[:, 1:])
        d = cfg.dim_E
        reg = (user_vec[:, :2 * d].pow(2).sum(-1).mean()
               + (item_vec[:, :d].pow(2).sum(-1) + rows(self.item_bias[:, None], unique)[:, 0] ** 2)[slots].mean())
        loss = rank + cfg.reg_weight * reg
        return loss, {"loss": loss.item(), "bpr": rank.item(), "reg": reg.item()}
