"""DropoutNet: addressing cold start in recommender systems (Volkovs, Yu and Poutanen, NeurIPS 2017).

    inputs: pretrained preference vectors U_u, V_v (here MF-BPR; the paper uses WMF) and item content x_v
    f_U(u) = MLP(U_u),   f_V(v) = MLP([V_v, x_v])                                       (user and item towers)
    L = E_(u,v) (U_u . V_v - f_U(u) . f_V(v))^2                                         (Eq. 1, the objective)
    input dropout: in training V_v is set to 0 with probability `dropout` (per item of the batch)
    inference: f_U(u) . f_V(v), with V_v = 0 for cold items (Eq. 2 / Section 3.2)

The pairs (u, v) of a batch are the training pairs plus num_neg sampled items per user, as the paper samples
observed and unobserved items. Without user content, the user tower reads U_u alone.

`side="user"` (user cold start, issue 13) mirrors the towers: the content tower reads user attributes,

    f_U(u) = MLP([U_u, x_u]),   f_V(v) = MLP(V_v)
    input dropout: in training U_u is set to 0 with probability `dropout` (per user of the batch)
    inference: U_u = 0 for users without training interactions (their MF row was never trained)

`modalities` then names user modalities (models/user_content.py). Items absent from train get the mean warm
item vector (the documented rule of models without cold items). The model then declares cold_users="content".
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from coldstart.data.splits import Split
from coldstart.models.bpr import check_fraction
from coldstart.models.content import ContentConfig, ContentRecommender
from coldstart.models.base import Recommender
from coldstart.models.embedding import EmbeddingRecommender, compact, rows
from coldstart.models.pretrained import pretrain_mf, stage_options
from coldstart.models.user_content import UserContent, check_side, prepare_user_content, warm_user_mask
from coldstart.nn.content import ContentEncoder


@dataclasses.dataclass(frozen=True)
class DropoutNetConfig(ContentConfig):
    """ContentConfig plus the input dropout rate; both stages share l_r, batch_size and early stopping.

    Attributes:
        dropout: probability that an item's preference input V_v is zeroed in training (the paper's best: 0.5);
            with side="user", a user's U_u.
        side: "item" (content tower on item content, item cold start) or "user" (on user attributes).
    """

    num_neg: int = 5
    dropout: float = 0.5
    side: str = "item"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction(self, "dropout")
        check_side(self)


class DropoutNet(ContentRecommender):
    """Towers over pretrained preferences and content, trained to reproduce the preference scores."""

    name = "dropoutnet"
    Config = DropoutNetConfig
    cold_items = "content"

    def __init__(self, **hyper) -> None:
        super().__init__(**hyper)
        if self.config.side == "user":
            self.cold_users = "content"  # users are represented from their attributes (instance over ClassVar)
        self._user_input = None

    # -- the content side ------------------------------------------------------------------------------
    def dims_for(self, split: Split) -> dict[str, int]:
        if self.config.side == "item":
            return super().dims_for(split)
        dims = Recommender.dims_for(self, split)  # no item content: the content tower reads user attributes
        self._user_input = prepare_user_content(self.name, split, self.config.modalities)
        dims.update(content_dense=0, content_sparse=0, content_nnz=0, **self._user_input.dims)
        return dims

    def make_feature_encoder(self, dims: dict[str, int]) -> ContentEncoder | None:
        if self.config.side == "item":
            return super().make_feature_encoder(dims)
        return None  # built on the user attributes in `build`, once user_content exists

    def make_user_encoder(self, dims: dict[str, int]) -> ContentEncoder:
        """side="user": the content tower over [U_u | user dense attributes] and the sparse attributes."""
        return ContentEncoder(self.preference_dim() + dims["user_dense"], dims["user_sparse"], self.config.hidden,
                              self.content_dim())

    def build(self, dims: dict[str, int]) -> None:
        super().build(dims)
        del self.user_embedding, self.item_embedding  # the towers replace the id tables
        d, hidden = self.config.dim_E, self.config.hidden
        self.register_buffer("pref_users_", torch.zeros(dims["n_users"], d))  # U, fixed after stage 1
        self.register_buffer("pref_items_", torch.zeros(dims["n_items"], d))  # V
        plain = nn.Linear(d, d) if hidden == 0 else \
            nn.Sequential(nn.Linear(d, hidden), nn.LeakyReLU(), nn.Linear(hidden, d))
        if self.config.side == "item":
            self.user_tower = plain  # f_U(U_u)
        else:
            self.item_tower = plain  # f_V(V_v)
            self.user_content = UserContent(dims, self._user_input)
            self._user_input = None
            self.feature_encoder = self.make_user_encoder(dims)

    def preference_dim(self) -> int:
        return self.config.dim_E  # the content tower reads [preference, content]

    def _fit(self, split: Split, options=None) -> None:
        from coldstart import train

        self.pref_users_, self.pref_items_ = pretrain_mf(self.config, split, options)
        stage2 = stage_options(options, None)
        if self.config.side == "user":
            # Rows of users without training interactions are MF's untrained initialisation: not a preference.
            self.pref_users_[~warm_user_mask(self.seen_indptr_)] = 0.0
            if split.cold_kind == "user":
                stage2 = dataclasses.replace(stage2, valid_scenario="cold")  # what stage 2 changes (as deepmusic)
        train.fit(self, split, stage2)

    def user_features(self, users: Tensor, preference: Tensor | None = None) -> Tensor:
        """side="user": f_U([U_u, x_u]) [n, D] of user indices [n]; no preference = zeros (a cold user)."""
        dense, cols, offsets, values = self.user_content.inputs(users)
        if preference is None:
            preference = torch.zeros(len(users), self.preference_dim())
        return self.feature_encoder(torch.cat([preference, dense], 1), cols, offsets, values)  # [n, D]

    def encode(self) -> tuple[Tensor, Tensor]:
        """(f_U [U, D], f_V [I, D]) with every warm entity's preference input present."""
        if self.config.side == "user":
            users = torch.arange(self.dims_["n_users"])
            warm = warm_user_mask(self.seen_indptr_)[:, None]  # [U, 1]
            f_u = self.user_features(users, torch.where(warm, self.pref_users_, 0.0))  # [U, D]
            return f_u, self.item_tower(self.pref_items_)
        items = torch.arange(self.dims_["n_items"])
        return self.user_tower(self.pref_users_), self.content_features(items, self.pref_items_)

    def cold_item_vectors(self, z_items: Tensor) -> Tensor:
        """Cold items have no preference vector: f_V([0, x_v]) (side="user": the mean warm item vector)."""
        if self.config.side == "user":
            return EmbeddingRecommender.cold_item_vectors(self, z_items)
        return self.content_features(torch.nonzero(~self.warm_items_).flatten())

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """Squared error between the towers' scores and the preference scores, with input dropout on V_v
        (side="user": on U_u)."""
        cfg = self.config
        if cfg.side == "user":
            return self._user_side_loss(batch, generator)
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

    def _user_side_loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """Eq. 1 with the towers mirrored: f_U([U_u or 0, x_u]) . f_V(V_v) against U_u . V_v."""
        cfg = self.config
        users, items = self.batch_pairs(batch, cfg.num_neg, generator)  # [B], [B, 1 + K]
        unique_u, user_slot, _ = compact(users, self.dims_["n_users"])  # [m], [B]
        unique_i, slots, _ = compact(items, self.dims_["n_items"])  # [n], [B, 1 + K]
        pref_u = rows(self.pref_users_, unique_u)  # [m, D]
        pref_v = rows(self.pref_items_, unique_i)  # [n, D]
        dropped = torch.rand(len(unique_u), generator=generator) < cfg.dropout  # [m]
        f_u = self.user_features(unique_u, torch.where(dropped[:, None], 0.0, pref_u))  # [m, D]
        f_v = self.item_tower(pref_v)  # [n, D]
        predicted = torch.gather((f_u @ f_v.T)[user_slot], 1, slots)  # [B, 1 + K]
        target = torch.gather((pref_u @ pref_v.T)[user_slot], 1, slots)  # [B, 1 + K]
        error = (predicted - target).pow(2).mean()
        return error, {"loss": error.item(), "mse": error.item()}
