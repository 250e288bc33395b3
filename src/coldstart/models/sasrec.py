"""SASRec: self-attentive sequential recommendation (Kang and McAuley, ICDM 2018).

    input   the user's newest `max_len` training items in time order (data/sequences.py), left-padded
    h_t     = Blocks(E[i_1..i_t] * sqrt(d) + P)_t         causal self-attention: position t sees items <= t
    loss    -1/|pos| sum_(u, t) ln softmax(h_t E^T)_(i_(t+1))   next item at every position, over all items
            (CMCLRec Eq. 14; the SASRec paper samples one negative with a binary loss instead)
    score   s(u, i) = h_n(u) . e_i  from the user's newest training window (inference "from the latest history")

Cold items have never been a target or an input, so their embeddings stay at their initialisation:
cold_items = "none". A user without training interactions has an empty history and no representation:
cold_users = "none", so `rank_scores` ranks such users by training popularity (logged).

Randomness (batch order, dropout) comes from train.py's per-epoch generator, so a resumed run is exact.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from coldstart.data.sequences import train_sequences
from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.base import Recommender
from coldstart.models.bpr import check_fraction, check_positive
from coldstart.nn.sequence import BACKBONES


@dataclasses.dataclass(frozen=True)
class SASRecConfig:
    """Settings of SASRec (and the sequential part of CMCLRec).

    Attributes:
        dim_E: embedding size d.
        max_len: window of the newest training items read per user (n in the paper).
        n_blocks: self-attention blocks.
        dropout: dropout rate on embeddings and inside the blocks.
        l_r: Adam learning rate.
        batch_size: users per batch.
        num_epoch, patience, min_epochs, valid_k, valid_scenario: train.py's early-stopping settings;
            SASRec watches the warm validation users by default (its cold users are popularity).
    """

    dim_E: int = 64
    max_len: int = 50
    n_blocks: int = 2
    dropout: float = 0.2
    l_r: float = 0.001
    batch_size: int = 128
    num_epoch: int = 200
    patience: int = 10
    min_epochs: int = 5
    valid_k: int = 20
    valid_scenario: str = "warm"

    def __post_init__(self) -> None:
        check_positive(self, "dim_E", "max_len", "l_r", "batch_size", "num_epoch", "patience", "valid_k")
        check_fraction(self, "dropout")
        if self.n_blocks < 0:
            raise DataError(f"must be >= 0, got {self.n_blocks}", field="n_blocks")
        if self.valid_scenario not in ("all", "warm", "cold"):
            raise DataError(f"must be all, warm or cold, got {self.valid_scenario!r}", field="valid_scenario")


class SASRec(Recommender):
    """Causal self-attention over each user's time-ordered training history; next-item softmax over all items."""

    name = "sasrec"
    Config = SASRecConfig
    cold_items = "none"
    cold_users = "none"
    search_space = {"l_r": [1e-4, 1e-3, 1e-2], "dropout": [0.0, 0.2, 0.5]}
    _cache: Tensor | None = None

    def build(self, dims: dict[str, int]) -> None:
        cfg = self.config
        self.backbone = BACKBONES["sasrec"](dims["n_items"], cfg.dim_E, cfg.max_len, cfg.n_blocks, cfg.dropout)
        # The newest max_len training items of every user (item + 1, 0 = padding): the inference input.
        self.register_buffer("recent_", torch.zeros(dims["n_users"], cfg.max_len, dtype=torch.int64))
        self._cache = None

    def _fit(self, split: Split, options=None) -> None:
        from coldstart import train

        train.fit(self, split, options)

    # -- training hooks (train.py) -------------------------------------------------------------------------
    def prepare(self, split: Split) -> None:
        """Training windows of max_len + 1 items (input = all but the newest, target = shifted by one)."""
        seqs = train_sequences(split, self.config.max_len + 1)
        self.windows_ = seqs.items  # [U, L + 1]
        self.recent_ = seqs.items[:, 1:].clone()  # [U, L]: the newest L items
        self.train_users_ = torch.nonzero(seqs.lengths >= 2).flatten()  # a next-item target needs two items
        if not len(self.train_users_):
            raise DataError("no user has two training interactions: SASRec has nothing to learn from",
                            field="train")
        self._cache = None

    def batches(self, generator: torch.Generator) -> list[Tensor]:
        """One epoch: the users with >= 2 training items in a random order, in chunks of batch_size."""
        order = self.train_users_[torch.randperm(len(self.train_users_), generator=generator)]
        return list(torch.split(order, self.config.batch_size))

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """Softmax cross-entropy of the next item at every non-padding position of the batch's users [B]."""
        window = self.windows_[batch]  # [B, L + 1]
        inputs, targets = window[:, :-1], window[:, 1:]  # [B, L] each
        out = self.backbone(inputs, generator)  # [B, L, d]
        loss = next_item_loss(out, inputs != 0, targets, self.backbone.item_vectors(self.dims_["n_items"]))
        return loss, {"loss": loss.item()}

    # -- inference ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def user_vectors(self) -> Tensor:
        """h_n [U, d] of every user from their newest training window (cached in eval mode)."""
        if self._cache is not None and not self.training:
            return self._cache
        out = torch.cat([self.backbone(chunk)[:, -1] for chunk in torch.split(self.recent_, 1024)])  # [U, d]
        if not self.training:
            self._cache = out
        return out

    def score(self, users: Tensor, items: Tensor | None = None) -> Tensor:
        item_vecs = self.backbone.item_vectors(self.dims_["n_items"]).detach()  # [I, d]
        if items is not None:
            item_vecs = item_vecs[items]
        return self.user_vectors()[users] @ item_vecs.T  # [B, I]


def next_item_loss(out: Tensor, valid: Tensor, targets: Tensor, item_vectors: Tensor) -> Tensor:
    """Mean over valid positions of -ln softmax(out_t . E^T)[target_t] (CMCLRec Eq. 14 at every position).

    Args:
        out: [B, L, d] sequence outputs.
        valid: bool [B, L] positions with an input item (their target is the next item).
        targets: int64 [B, L] item + 1 (0 where not valid).
        item_vectors: [I, d].
    """
    logits = out[valid] @ item_vectors.T  # [n, I], only the valid positions
    if not len(logits):
        return out.sum() * 0.0
    return F.cross_entropy(logits, targets[valid] - 1)
