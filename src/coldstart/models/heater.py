"""Heater (Zhu et al., "Recommendation for New Users and New Items via Randomized Training and
Mixture-of-Experts Transformation", SIGIR 2020), as described by the CLCRec paper and issue 5.

    inputs: pretrained preference vectors P_u, Q_i (here MF-BPR) and item content x_i
    psi_i = sum_k softmax(G x_i)_k (W_k x_i + b_k)             mixture-of-experts transformation of the content
    randomized training: the item input r_i is psi_i with probability random_prob, else Q_i
    U_u = MLP_U(P_u),  V_i = MLP_V(r_i)
    L = E_(u,i) (P_u . Q_i - U_u . V_i)^2 + alpha * E_i ||psi_i - Q_i||^2                 (SSE to the pretrained)
    inference: V_i = MLP_V(Q_i) for warm items, MLP_V(psi_i) for cold items

The Heater paper itself is not among our source documents; the equations above follow the descriptions we
have (randomized training, mixture-of-experts transformation, SSE to pretrained embeddings). Check them
against the paper before quoting its numbers.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from coldstart.errors import DataError
from coldstart.models.bpr import check_fraction
from coldstart.models.content import ContentConfig
from coldstart.models.dropoutnet import DropoutNet
from coldstart.models.embedding import compact, rows
from coldstart.nn.content import ContentEncoder


@dataclasses.dataclass(frozen=True)
class HeaterConfig(ContentConfig):
    """ContentConfig plus Heater's settings; `hidden` is the towers' hidden width (the experts are linear).

    Attributes:
        n_experts: experts of the content transformation.
        random_prob: probability that an item's input is its content representation in training.
        alpha: weight of the SSE between psi_i and Q_i.
    """

    num_neg: int = 5
    n_experts: int = 5
    random_prob: float = 0.5
    alpha: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_experts < 1:
            raise DataError(f"must be >= 1, got {self.n_experts}", field="n_experts")
        check_fraction(self, "random_prob")
        if self.alpha < 0:
            raise DataError(f"must be >= 0, got {self.alpha}", field="alpha")


class Heater(DropoutNet):
    """DropoutNet's stages and user tower, with a mixture-of-experts content map and randomized training."""

    name = "heater"
    Config = HeaterConfig

    def build(self, dims: dict[str, int]) -> None:
        super().build(dims)
        d, hidden = self.config.dim_E, self.config.hidden
        self.item_tower = nn.Linear(d, d) if hidden == 0 else \
            nn.Sequential(nn.Linear(d, hidden), nn.LeakyReLU(), nn.Linear(hidden, d))

    def preference_dim(self) -> int:
        return 0  # the content map reads content only; Q_i enters through the randomized input

    def content_dim(self) -> int:
        return self.config.n_experts * (self.config.dim_E + 1)  # every expert's output and its gate logit

    def make_feature_encoder(self, dims: dict[str, int]) -> ContentEncoder:
        return ContentEncoder(dims["content_dense"], dims["content_sparse"], 0, self.content_dim())  # linear

    def content_representation(self, items: Tensor) -> Tensor:
        """psi [n, D]: the gated sum of the experts' linear maps of the items' content."""
        k, d = self.config.n_experts, self.config.dim_E
        out = self.content_features(items)  # [n, k * (d + 1)]
        experts = out[:, : k * d].reshape(-1, k, d)  # [n, k, d]
        gates = torch.softmax(out[:, k * d:], dim=1)  # [n, k]
        return (gates[:, :, None] * experts).sum(1)  # [n, d]

    def encode(self) -> tuple[Tensor, Tensor]:
        return self.user_tower(self.pref_users_), self.item_tower(self.pref_items_)

    def cold_item_vectors(self, z_items: Tensor) -> Tensor:
        return self.item_tower(self.content_representation(torch.nonzero(~self.warm_items_).flatten()))

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """Squared error to the preference scores with randomized item inputs, plus alpha * SSE(psi, Q)."""
        cfg = self.config
        users, items = self.batch_pairs(batch, cfg.num_neg, generator)  # [B], [B, 1 + K]
        unique, slots, _ = compact(items, self.dims_["n_items"])
        pref_u, pref_v = rows(self.pref_users_, users), rows(self.pref_items_, unique)  # [B, D], [n, D]
        psi = self.content_representation(unique)  # [n, D]
        use_content = torch.rand(len(unique), generator=generator) < cfg.random_prob  # [n]
        item_vec = self.item_tower(torch.where(use_content[:, None], psi, pref_v))  # [n, D]
        predicted = torch.gather(self.user_tower(pref_u) @ item_vec.T, 1, slots)  # [B, 1 + K]
        target = torch.gather(pref_u @ pref_v.T, 1, slots)
        error = (predicted - target).pow(2).mean()
        sse = (psi - pref_v).pow(2).sum(-1).mean()
        loss = error + cfg.alpha * sse
        return loss, {"loss": loss.item(), "mse": error.item(), "sse": sse.item()}
