"""Heater (Zhu et al., "Recommendation for New Users and New Items via Randomized Training and
Mixture-of-Experts Transformation", SIGIR 2020), as described by the CLCRec paper and issue 5.

    inputs: pretrained preference vectors P_u, Q_i (here MF-BPR) and item content x_i
    psi_i = sum_k softmax(G x_i)_k (W_k x_i + b_k)             mixture-of-experts transformation of the content
    randomized training: the item input r_i is psi_i with probability random_prob, else Q_i
    U_u = MLP_U(P_u),  V_i = MLP_V(r_i)
    L = E_(u,i) (P_u . Q_i - U_u . V_i)^2 + alpha * E_i ||psi_i - Q_i||^2                 (SSE to the pretrained)
    inference: V_i = MLP_V(Q_i) for warm items, MLP_V(psi_i) for cold items

`side="user"` (user cold start, issue 13) mirrors it: psi_u = MoE(x_u) over user attributes, the user input is
psi_u with probability random_prob else P_u, U_u = MLP_U(r_u), V_i = MLP_V(Q_i), the SSE term is
||psi_u - P_u||^2 over warm users, and users without training interactions are scored with MLP_U(psi_u)
(cold_users="content"); `modalities` then names user modalities.

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
from coldstart.models.embedding import EmbeddingRecommender, compact, rows
from coldstart.models.user_content import check_side, warm_user_mask
from coldstart.nn.content import ContentEncoder


@dataclasses.dataclass(frozen=True)
class HeaterConfig(ContentConfig):
    """ContentConfig plus Heater's settings; `hidden` is the towers' hidden width (the experts are linear).

    Attributes:
        n_experts: experts of the content transformation.
        random_prob: probability that an item's input is its content representation in training.
        alpha: weight of the SSE between psi_i and Q_i.
        side: "item" (the content map reads item content) or "user" (user attributes; user cold start).
    """

    num_neg: int = 5
    n_experts: int = 5
    random_prob: float = 0.5
    alpha: float = 1.0
    side: str = "item"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_side(self)
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
        tower = nn.Linear(d, d) if hidden == 0 else \
            nn.Sequential(nn.Linear(d, hidden), nn.LeakyReLU(), nn.Linear(hidden, d))
        if self.config.side == "item":
            self.item_tower = tower  # MLP_V over the randomized item input
        else:
            self.user_tower = tower  # MLP_U over the randomized user input (DropoutNet built MLP_V)

    def preference_dim(self) -> int:
        return 0  # the content map reads content only; Q_i enters through the randomized input

    def content_dim(self) -> int:
        return self.config.n_experts * (self.config.dim_E + 1)  # every expert's output and its gate logit

    def make_feature_encoder(self, dims: dict[str, int]) -> ContentEncoder | None:
        if self.config.side == "user":
            return None  # built on the user attributes (make_user_encoder)
        return ContentEncoder(dims["content_dense"], dims["content_sparse"], 0, self.content_dim())  # linear

    def make_user_encoder(self, dims: dict[str, int]) -> ContentEncoder:
        return ContentEncoder(dims["user_dense"], dims["user_sparse"], 0, self.content_dim())  # linear

    def content_representation(self, items: Tensor) -> Tensor:
        """psi [n, D]: the gated sum of the experts' linear maps of the items' content (side="user": of the
        users' attributes; `items` are then user indices)."""
        k, d = self.config.n_experts, self.config.dim_E
        if self.config.side == "user":
            out = self.feature_encoder(*self.user_content.inputs(items))  # [n, k * (d + 1)]
        else:
            out = self.content_features(items)  # [n, k * (d + 1)]
        experts = out[:, : k * d].reshape(-1, k, d)  # [n, k, d]
        gates = torch.softmax(out[:, k * d:], dim=1)  # [n, k]
        return (gates[:, :, None] * experts).sum(1)  # [n, d]

    def encode(self) -> tuple[Tensor, Tensor]:
        if self.config.side == "user":  # cold users: MLP_U(psi_u)
            psi = self.content_representation(torch.arange(self.dims_["n_users"]))  # [U, D]
            warm = warm_user_mask(self.seen_indptr_)[:, None]  # [U, 1]
            return self.user_tower(torch.where(warm, self.pref_users_, psi)), self.item_tower(self.pref_items_)
        return self.user_tower(self.pref_users_), self.item_tower(self.pref_items_)

    def cold_item_vectors(self, z_items: Tensor) -> Tensor:
        if self.config.side == "user":
            return EmbeddingRecommender.cold_item_vectors(self, z_items)
        return self.item_tower(self.content_representation(torch.nonzero(~self.warm_items_).flatten()))

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """Squared error to the preference scores with randomized item inputs, plus alpha * SSE(psi, Q)
        (side="user": randomized user inputs, SSE(psi_u, P_u))."""
        cfg = self.config
        if cfg.side == "user":
            return self._user_side_loss(batch, generator)
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

    def _user_side_loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The mirrored objective: randomized user inputs r_u in {psi_u, P_u}, plus alpha * SSE(psi_u, P_u)."""
        cfg = self.config
        users, items = self.batch_pairs(batch, cfg.num_neg, generator)  # [B], [B, 1 + K]
        unique_u, user_slot, _ = compact(users, self.dims_["n_users"])  # [m], [B]
        unique_i, slots, _ = compact(items, self.dims_["n_items"])  # [n], [B, 1 + K]
        pref_u, pref_v = rows(self.pref_users_, unique_u), rows(self.pref_items_, unique_i)  # [m, D], [n, D]
        psi = self.content_representation(unique_u)  # [m, D]
        use_content = torch.rand(len(unique_u), generator=generator) < cfg.random_prob  # [m]
        user_vec = self.user_tower(torch.where(use_content[:, None], psi, pref_u))  # [m, D]
        predicted = torch.gather((user_vec @ self.item_tower(pref_v).T)[user_slot], 1, slots)  # [B, 1 + K]
        target = torch.gather((pref_u @ pref_v.T)[user_slot], 1, slots)  # [B, 1 + K]
        error = (predicted - target).pow(2).mean()
        sse = (psi - pref_u).pow(2).sum(-1).mean()
        loss = error + cfg.alpha * sse
        return loss, {"loss": loss.item(), "mse": error.item(), "sse": sse.item()}
