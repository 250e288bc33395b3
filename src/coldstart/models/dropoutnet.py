"""DropoutNet: addressing cold start in recommender systems (Volkovs, Yu and Poutanen, NeurIPS 2017).

    inputs: pretrained preference vectors U_u, V_v (here MF-BPR; the paper uses WMF) and item content x_v
    f_U(u) = MLP(U_u),   f_V(v) = MLP([V_v, x_v])                                       (user and item towers)
    L = E_(u,v) (U_u . V_v - f_U(u) . f_V(v))^2                                         (Eq. 1, the objective)
    input dropout: in training V_v is set to 0 with probability `dropout` (per item of the batch)
    inference: f_U(u) . f_V(v), with V_v = 0 for cold items (Eq. 2 / Section 3.2)

The pairs (u, v) of a batch are the training pairs plus num_neg sampled items per user, as the paper samples
observed and unobserved items. Without user content, the user tower reads U_u alone.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from coldstart.data.splits import Split
from coldstart.models.bpr import check_fraction
from coldstart.models.content import ContentConfig, ContentRecommender
from coldstart.models.embedding import compact, rows
from coldstart.models.pretrained import pretrain_mf, stage_options


@dataclasses.dataclass(frozen=True)
class DropoutNetConfig(ContentConfig):
    """ContentConfig plus the input dropout rate; both stages share l_r, batch_size and early stopping.

    Attributes:
        dropout: probability that an item's preference input V_v is zeroed in training (the paper's best: 0.5).
    """

    num_neg: int = 5
    dropout: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction(self, "dropout")


class DropoutNet(ContentRecommender):
    """Towers over pretrained preferences and content, trained to reproduce the preference scores."""

    name = "dropoutnet"
    Config = DropoutNetConfig
    cold_items = "content"

    def build(self, dims: dict[str, int]) -> None:
        super().build(dims)
        del self.user_embedding, self.item_embedding  # the towers replace the id tables
        d, hidden = self.config.dim_E, self.config.hidden
        self.register_buffer("pref_users_", torch.zeros(dims["n_users"], d))  # U, fixed after stage 1
        self.register_buffer("pref_items_", torch.zeros(dims["n_items"], d))  # V
        self.user_tower = nn.Linear(d, d) if hidden == 0 else \
            nn.Sequential(nn.Linear(d, hidden), nn.LeakyReLU(), nn.Linear(hidden, d))

    def preference_dim(self) -> int:
        return self.config.dim_E  # the item tower reads [V_v, content]

    def _fit(self, split: Split, options=None) -> None:
        from coldstart import train

        self.pref_users_, self.pref_items_ = pretrain_mf(self.config, split, options)
        train.fit(self, split, stage_options(options, None))

    def encode(self) -> tuple[Tensor, Tensor]:
        """(f_U [U, D], f_V [I, D]) with every item's preference input present."""
        items = torch.arange(self.dims_["n_items"])
        return self.user_tower(self.pref_users_), self.content_features(items, self.pref_items_)

    def cold_item_vectors(self, z_items: Tensor) -> Tensor:
        """Cold items have no preference vector: f_V([0, x_v])."""
        return self.content_features(torch.nonzero(~self.warm_items_).flatten())

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """Squared error between the towers' scores and the preference scores, with input dropout on V_v."""
        cfg = self.config
        users, items = self.batch_pairs(batch, cfg.num_neg, generator)  # [B], [B, 1 + K]
        unique, slots, _ = compact(items, self.dims_["n_items"])
        pref_u = rows(self.pref_users_, users)  # [B, D]
        pref_v = rows(self.pref_items_, unique)  # [n, D]
        dropped = torch.rand(len(unique), generator=generator) < cfg.dropout  # [n]
        f_v = self.content_features(unique, torch.where(dropped[:, None], 0.0, pref_v))  # [n, D]
        predicted = torch.gather(self.user_tower(pref_u) @ f_v.T, 1, slots)  # [B, 1 + K]
        target = torch.gather(pref_u @ pref_v.T, 1, slots)  # [B, 1 + K]
        error = (predicted - target).pow(2).mean()
        return error, {"loss": error.item(), "mse": error.item()}
