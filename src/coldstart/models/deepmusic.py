"""DeepMusic: content-based music recommendation (van den Oord, Dieleman and Schrauwen, NeurIPS 2013).

    stage 1: latent factors (p_u, q_i) from the interactions (here MF-BPR; the paper uses WMF)
    stage 2: f_i = MLP(x_i) regressed onto q_i:  L = E_(i warm) ||f_i - q_i||^2                  (MSE objective)
    score(u, i) = p_u . q_i for warm items, p_u . f_i for cold items

The paper's network is a CNN over mel-spectrograms; here the content MLP reads extracted features
(`coldstart features`), as in the CLCRec paper's comparison. Stage 1's factors stay fixed in stage 2, which
stops early on the cold items' validation recall (best_epoch_ is stage 2's).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from coldstart.data.splits import Split
from coldstart.models.content import ContentConfig, ContentRecommender
from coldstart.models.pretrained import pretrain_mf, stage_options


@dataclasses.dataclass(frozen=True)
class DeepMusicConfig(ContentConfig):
    """ContentConfig; both stages share l_r, batch_size and the early-stopping settings.

    In stage 2 a batch holds batch_size warm items; reg_weight applies to stage 1 only.
    """


class DeepMusic(ContentRecommender):
    """Content regressed onto pretrained item factors; cold items are scored through the regression."""

    name = "deepmusic"
    Config = DeepMusicConfig
    cold_items = "content"

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
        if split.cold_kind == "item":
            stage2 = dataclasses.replace(stage2, valid_scenario="cold")
        train.fit(self, split, stage2)

    def prepare(self, split: Split) -> None:
        super().prepare(split)
        self.warm_list_ = torch.nonzero(self.warm_items_).flatten()

    def batches(self, generator: torch.Generator) -> list[Tensor]:
        """One epoch: the warm items in a random order, in chunks of batch_size."""
        order = self.warm_list_[torch.randperm(len(self.warm_list_), generator=generator)]
        return list(torch.split(order, self.config.batch_size))

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """Mean squared error between f_i and the fixed q_i over the batch's items [B]."""
        error = (self.content_features(batch) - self.item_embedding[batch]).pow(2).sum(-1).mean()
        return error, {"loss": error.item(), "mse": error.item()}

    def cold_item_vectors(self, z_items: Tensor) -> Tensor:
        """Cold items are represented by their regressed factors f_i."""
        return self.content_features(torch.nonzero(~self.warm_items_).flatten())
