"""MF-BPR (Rendle et al., UAI 2009) and LightGCN (He et al., SIGIR 2020), trained with the BPR loss.

Neither has a representation for items absent from training. Cold items are scored with the mean
training-item vector: every cold item gets the same score for a user, so their order among themselves
is the evaluator's fixed tie order (a random ranking), while their scores stay comparable with warm items.
Reports that show these models say so (cold_items = "none").
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from coldstart.errors import DataError
from coldstart.models.embedding import EmbeddingRecommender, compact, rows
from coldstart.nn.device import DeviceSetting
from coldstart.nn.losses import bpr


@dataclasses.dataclass(frozen=True)
class TrainedConfig:
    """Settings every model trained by train.py has (CLCRec's official names where they exist).

    Attributes:
        dim_E: embedding size.
        l_r: Adam learning rate.
        reg_weight: weight of the squared L2 norm of the batch's id embeddings (CLCRec: the official mean norm).
        num_neg: negatives per positive.
        batch_size: positive pairs per batch.
        num_epoch: most epochs.
        patience: early stopping after this many epochs without a better validation recall.
        min_epochs: no early stop before this many epochs (Xavier-initialised tables sit on a plateau first).
        valid_k: K of the validation recall@K used for early stopping.
        valid_scenario: the validation scenario early stopping watches, "all", "warm" or "cold" (the metric
            key in the history stays valid_recall@K); two-stage models choose per stage (models/pretrained.py).
    """

    dim_E: int = 64
    l_r: float = 0.001
    reg_weight: float = 1e-4
    num_neg: int = 1
    batch_size: int = 2048
    num_epoch: int = 1000
    patience: int = 10
    min_epochs: int = 20
    valid_k: int = 20
    valid_scenario: str = "all"

    def __post_init__(self) -> None:
        check_positive(self, "dim_E", "l_r", "num_neg", "batch_size", "num_epoch", "patience", "valid_k")
        if self.valid_scenario not in ("all", "warm", "cold"):
            raise DataError(f"must be all, warm or cold, got {self.valid_scenario!r}", field="valid_scenario")
        if self.reg_weight < 0:
            raise DataError(f"must be >= 0, got {self.reg_weight}", field="reg_weight")


@dataclasses.dataclass(frozen=True)
class BPRConfig(DeviceSetting, TrainedConfig):
    """MF-BPR: the shared settings with BPR's defaults (one negative per positive, batches of 2048)."""


@dataclasses.dataclass(frozen=True)
class LightGCNConfig(BPRConfig):
    """BPRConfig plus n_layers: propagation layers (the LightGCN paper's default is 3)."""

    n_layers: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_layers < 0:
            raise DataError(f"must be >= 0, got {self.n_layers}", field="n_layers")


def check_fraction(config, *names: str) -> None:
    """DataError naming the first field outside [0, 1] (probabilities and mixing weights)."""
    for name in names:
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:
            raise DataError(f"must be in [0, 1], got {value}", field=name)


def check_positive(config, *names: str) -> None:
    """DataError naming the first field that is not > 0."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise DataError(f"must be > 0, got {value}", field=name)


class MFBPR(EmbeddingRecommender):
    """Matrix factorisation trained with BPR: score(u, i) = e_u . e_i."""

    name = "mf_bpr"
    Config = BPRConfig
    cold_items = "none"
    trains_on_device = True

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """BPR over (u, i, j_1..j_K) plus reg_weight * ||Theta||^2 of the batch."""
        cfg = self.config
        users, items = self.batch_pairs(batch, cfg.num_neg, generator)  # [B], [B, 1 + K], drawn on the CPU
        users, items = users.to(self.device_), items.to(self.device_)
        z_users, z_items = self.encode()
        unique, slots, _ = compact(items, self.dims_["n_items"])  # score each distinct item once, then gather
        scores = torch.gather(rows(z_users, users) @ rows(z_items, unique).T, 1, slots)  # [B, 1 + K]
        rank = bpr(scores[:, :1], scores[:, 1:])
        reg = self.regularizer(users, items)
        loss = rank + cfg.reg_weight * reg
        return loss, {"loss": loss.item(), "bpr": rank.item(), "reg": reg.item()}


class LightGCN(MFBPR):
    """LightGCN: MF embeddings smoothed by n_layers of normalised graph propagation (layer-mean readout)."""

    name = "lightgcn"
    Config = LightGCNConfig
