"""CB2CF: a neural multiview content-to-collaborative filtering model (Barkan et al., RecSys 2019).

    stage 1: collaborative item vectors q_i from the interactions (here MF-BPR; the paper uses item2vec)
    stage 2: f_i = W_out leaky_relu([h_1(x_i^1), ..., h_M(x_i^M)]) + b, one sub-network h_m per view (modality),
             regressed onto q_i:  L = E_(i warm) ||f_i - q_i||^2                                        (MSE)
    score(u, i) = p_u . q_i for warm items, p_u . f_i for cold items

Each view (genres, text, image, ...) gets its own hidden units, connected to that view's columns only, and
the output layer fuses the views. That multiview network is the difference from `deepmusic`, whose one MLP
reads all the content at once; the two-stage training and scoring are DeepMusic's.
"""

from __future__ import annotations

import dataclasses

from coldstart.models.deepmusic import DeepMusic, DeepMusicConfig
from coldstart.nn.content import ContentEncoder


@dataclasses.dataclass(frozen=True)
class CB2CFConfig(DeepMusicConfig):
    """DeepMusicConfig; `hidden` is split evenly between the views (modalities)."""


class CB2CF(DeepMusic):
    """DeepMusic with a multiview content network: one sub-network per modality, fused by the output layer."""

    name = "cb2cf"
    Config = CB2CFConfig

    def make_feature_encoder(self, dims: dict[str, int]) -> ContentEncoder:
        # At load time the content spec is restored after build; the saved weights already hold the
        # block structure, so only training needs the views.
        views = self.spec_.views() if self.spec_.names else None
        return ContentEncoder(dims["content_dense"], dims["content_sparse"], self.config.hidden, self.content_dim(),
                              views=views)
