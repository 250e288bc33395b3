"""DeepMusic: content-based music recommendation (van den Oord, Dieleman and Schrauwen, NeurIPS 2013).

    stage 1: latent factors (p_u, q_i) from the interactions (here MF-BPR; the paper uses WMF)
    stage 2: f_i = MLP(x_i) regressed onto q_i:  L = E_(i warm) ||f_i - q_i||^2                  (MSE objective)
    score(u, i) = p_u . q_i for warm items, p_u . f_i for cold items

The paper's network is a CNN over mel-spectrograms; here the content MLP reads extracted features
(`coldstart features`), as in the CLCRec paper's comparison. Stage 1's factors stay fixed in stage 2, which
stops early on the cold items' validation recall (best_epoch_ is stage 2's).

`side="user"` (user cold start, issue 13; the CMCLRec paper's DeepMusic baseline): f_u = MLP(x_u) over user
attributes regressed onto p_u over warm users, L = E_(u warm) ||f_u - p_u||^2; score(u, i) = p_u . q_i for warm
users, f_u . q_i for users without training interactions (cold_users="content"); `modalities` then names user
modalities, and items absent from train get the mean warm item vector.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.base import Recommender
from coldstart.models.content import ContentConfig, ContentRecommender
from coldstart.models.embedding import EmbeddingRecommender
from coldstart.models.pretrained import pretrain_mf, stage_options
from coldstart.models.user_content import UserContent, check_side, prepare_user_content, warm_user_mask
from coldstart.nn.content import ContentEncoder


@dataclasses.dataclass(frozen=True)
class DeepMusicConfig(ContentConfig):
    """ContentConfig; both stages share l_r, batch_size and the early-stopping settings.

    In stage 2 a batch holds batch_size warm items (side="user": warm users); reg_weight applies to stage 1 only.

    Attributes:
        side: "item" (content regressed onto item factors) or "user" (user attributes onto user factors).
    """

    side: str = "item"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_side(self)


class DeepMusic(ContentRecommender):
    """Content regressed onto pretrained item factors; cold items are scored through the regression."""

    name = "deepmusic"
    Config = DeepMusicConfig
    cold_items = "content"

    def __init__(self, **hyper) -> None:
        super().__init__(**hyper)
        if self.config.side == "user":
            if type(self).make_feature_encoder is not DeepMusic.make_feature_encoder:  # e.g. cb2cf's multiview net
                raise DataError(f"{self.name} has no side=user: its content network reads item modalities only",
                                field="side")
            self.cold_users = "content"  # cold users get their regressed factors (instance over ClassVar)
        self._user_input = None

    def dims_for(self, split: Split) -> dict[str, int]:
        if self.config.side == "item":
            return super().dims_for(split)
        dims = Recommender.dims_for(self, split)  # no item content: the regression reads user attributes
        self._user_input = prepare_user_content(self.name, split, self.config.modalities)
        dims.update(content_dense=0, content_sparse=0, content_nnz=0, **self._user_input.dims)
        return dims

    def make_feature_encoder(self, dims: dict[str, int]) -> ContentEncoder:
        if self.config.side == "item":
            return super().make_feature_encoder(dims)
        return ContentEncoder(dims["user_dense"], dims["user_sparse"], self.config.hidden, self.content_dim())

    def build(self, dims: dict[str, int]) -> None:
        if self.config.side == "user":
            self.user_content = UserContent(dims, self._user_input)
            self._user_input = None
        super().build(dims)

    def user_features(self, users: Tensor) -> Tensor:
        """side="user": the regressed user factors f_u [n, D] of user indices [n]."""
        return self.feature_encoder(*self.user_content.inputs(users))

    def encode(self) -> tuple[Tensor, Tensor]:
        if self.config.side == "user":  # users without training interactions: f_u
            warm = warm_user_mask(self.seen_indptr_)[:, None]  # [U, 1]
            f_u = self.user_features(torch.arange(self.dims_["n_users"]))  # [U, D]
            return torch.where(warm, self.user_embedding, f_u), self.item_embedding
        return super().encode()

    def _fit(self, split: Split, options=None) -> None:
        from coldstart import train

        users, items = pretrain_mf(self.config, split, options)
        with torch.no_grad():
            self.user_embedding.copy_(users)
            self.item_embedding.copy_(items)
        self.user_embedding.requires_grad_(False)  # the factors are targets now, not parameters
        self.item_embedding.requires_grad_(False)
        # Stage 2 leaves every warm score as it is, so validation recall over all items hardly moves with it;
        # it stops on the cold items' validation recall instead (train.validation_score falls back to all
        # items when there are none).
        stage2 = stage_options(options, None)
        if split.cold_kind == ("user" if self.config.side == "user" else "item"):
            stage2 = dataclasses.replace(stage2, valid_scenario="cold")
        train.fit(self, split, stage2)

    def prepare(self, split: Split) -> None:
        super().prepare(split)
        if self.config.side == "user":
            self.warm_list_ = torch.nonzero(warm_user_mask(self.seen_indptr_)).flatten()  # warm users
        else:
            self.warm_list_ = torch.nonzero(self.warm_items_).flatten()

    def batches(self, generator: torch.Generator) -> list[Tensor]:
        """One epoch: the warm items in a random order, in chunks of batch_size."""
        order = self.warm_list_[torch.randperm(len(self.warm_list_), generator=generator)]
        return list(torch.split(order, self.config.batch_size))

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """Mean squared error between f_i and the fixed q_i over the batch's items [B] (side="user": f_u, p_u)."""
        if self.config.side == "user":
            error = (self.user_features(batch) - self.user_embedding[batch]).pow(2).sum(-1).mean()
            return error, {"loss": error.item(), "mse": error.item()}
        error = (self.content_features(batch) - self.item_embedding[batch]).pow(2).sum(-1).mean()
        return error, {"loss": error.item(), "mse": error.item()}

    def cold_item_vectors(self, z_items: Tensor) -> Tensor:
        """Cold items are represented by their regressed factors f_i (side="user": the mean warm item vector)."""
        if self.config.side == "user":
            return EmbeddingRecommender.cold_item_vectors(self, z_items)
        return self.content_features(torch.nonzero(~self.warm_items_).flatten())
