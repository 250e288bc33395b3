"""Shared machinery of the id-embedding models trained by train.py: MF-BPR, LightGCN and CLCRec.

- Id embeddings e_u, e_i (Xavier-uniform), and a CF encoder: "mf" (z = e) or "lightgcn" (z = layer mean of
  symmetric-normalised propagation over the training graph).
- Training pairs are the split's train interactions, shuffled per epoch; negatives are drawn per batch,
  uniformly among the items that occur in train, rejecting the user's train positives (never valid/test).
- Inference vectors are computed from the current parameters when first needed in eval mode and cached
  until the model is switched to train mode or reloaded (never taken from a stale training batch).
- Device: a model that sets `trains_on_device` moves its parameters and the tensors its loss and scoring read
  (warm mask, content tables, the LightGCN graph) to `config.device` in `prepare`; the base class's seen-item CSR,
  the training pairs and the negative sampler stay on the CPU, every random draw is made there from the epoch's
  CPU generator (so CPU and CUDA runs draw the same negatives), and the ids are moved in the loss. `score()`
  computes on the device and returns CPU scores. On the CPU every move returns the same tensor: bit for bit the
  CPU-only code. A saved model loads on the CPU (base.load's map_location).
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from coldstart.data.sampling import NegativeSampler
from coldstart.data.splits import Split
from coldstart.models.base import Recommender
from coldstart.nn.device import resolve_device
from coldstart.nn.graph import normalized_adjacency, propagate

log = logging.getLogger("coldstart")

ENCODERS = ("mf", "lightgcn")
#: Buffers of the base class that stay on the CPU on every device: the seen-item CSR that `seen_mask`,
#: `rank_scores`' popularity and the LightGCN graph are built from on the CPU.
CPU_BUFFERS = ("seen_indptr_", "seen_indices_")


def rows(table: Tensor, ids: Tensor) -> Tensor:
    """table[ids] for any shape of ids -> [*ids.shape, D], via index_select.

    The backward of plain indexing accumulates repeated ids in a thread-dependent order on CPU (runs with
    2 threads differed bit-wise); index_select's backward is deterministic.
    """
    return table.index_select(0, ids.flatten()).view(*ids.shape, table.shape[-1])


def batch_mean(table: Tensor, idx: Tensor, per_row) -> Tensor:
    """Mean of per_row(table[i]) over the batch's indices idx (any shape), computed once per distinct row and
    weighted by how often it occurs: the same value as per_row(table[idx]).mean(), with less memory."""
    unique, _, counts = compact(idx, len(table))
    return (per_row(rows(table, unique)) * counts).sum() / idx.numel()


def compact(ids: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """torch.unique(ids, return_inverse=True, return_counts=True) for ids in [0, size), without sorting.

    A bincount over the id range is O(len(ids) + size), several times faster than a sort for the
    [B, 1 + K] id tensors of a batch.

    Returns:
        (unique int64 [n] ascending, inverse int64 shaped like ids, counts int64 [n]).
    """
    counts = torch.bincount(ids.flatten(), minlength=size)  # [size]
    present = counts > 0
    unique = torch.nonzero(present).flatten()  # [n]
    position = torch.cumsum(present, 0) - 1  # [size]: index of each id in `unique`
    return unique, position[ids], counts[unique]


class EmbeddingRecommender(Recommender):
    """Base of models with user / item id embeddings and a CF encoder; subclasses define `loss`."""

    #: The CLCRec paper's grid (§3.1.4), used for every trained model there: 16 points.
    search_space = {"l_r": [1e-4, 1e-3, 1e-2, 1e-1], "reg_weight": [1e-4, 1e-3, 1e-2, 1e-1]}
    #: Whether `prepare` moves the model to `config.device` (a `device` field of its Config). False keeps the model
    #: on the CPU: the content baselines, whose losses build CPU tensors, and CIERec, whose own `device` means only
    #: its fine-tuned backbone and scoring blocks.
    trains_on_device: ClassVar[bool] = False
    _cache: tuple[Tensor, Tensor] | None = None
    _adjacency: Tensor | None = None

    def build(self, dims: dict[str, int]) -> None:
        cfg = self.config
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dims["n_users"], cfg.dim_E)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dims["n_items"], cfg.dim_E)))
        self.register_buffer("warm_items_", torch.zeros(dims["n_items"], dtype=torch.bool))
        self._cache, self._adjacency = None, None

    # -- encoder -----------------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Propagation layers: the config's n_layers under a LightGCN encoder, 0 (plain MF) otherwise."""
        if getattr(self.config, "encoder", "lightgcn") != "lightgcn":
            return 0
        return getattr(self.config, "n_layers", 0)

    def encode(self) -> tuple[Tensor, Tensor]:
        """Collaborative embeddings (z_users [U, D], z_items [I, D]) from the current parameters."""
        if self.n_layers == 0:
            return self.user_embedding, self.item_embedding
        ego = torch.cat([self.user_embedding, self.item_embedding])  # [U + I, D]
        out = propagate(self.adjacency(), ego, self.n_layers)
        return out[: self.dims_["n_users"]], out[self.dims_["n_users"]:]

    def adjacency(self) -> Tensor:
        """The normalised training graph, rebuilt from the seen-item buffers (so a loaded model has it too), on the
        parameters' device."""
        if self._adjacency is None:
            counts = self.seen_indptr_[1:] - self.seen_indptr_[:-1]
            users = torch.repeat_interleave(torch.arange(len(counts)), counts).numpy()
            self._adjacency = normalized_adjacency(users, self.seen_indices_.numpy(), self.dims_["n_users"],
                                                   self.dims_["n_items"]).to(self.device_)
        return self._adjacency

    # -- device ----------------------------------------------------------------------------------------------
    @property
    def device_(self) -> torch.device:
        """Where the parameters live: config.device after `prepare` for models that train on a device, else (and
        after `load`) the CPU."""
        table = self._parameters.get("user_embedding")
        if table is None:  # dropoutnet / heater delete the id tables (their towers replace them)
            table = next(self.parameters(), torch.empty(0))
        return table.device

    def to_device(self, device: torch.device) -> None:
        """Move parameters and buffers to `device`, except the base class's CPU bookkeeping (CPU_BUFFERS).

        A no-op on the CPU (`Tensor.to` returns the same tensor). Derived tensors (inference cache, graph) are
        dropped and rebuilt on first use.
        """
        kept = {name: getattr(self, name) for name in CPU_BUFFERS}
        self.to(device)
        for name, tensor in kept.items():
            setattr(self, name, tensor)
        self._cache, self._adjacency = None, None

    # -- training hooks (train.py) -------------------------------------------------------------------------
    def _fit(self, split: Split, options=None) -> None:
        from coldstart import train

        train.fit(self, split, options)

    def prepare(self, split: Split) -> None:
        """Training pairs, the negative sampler and the warm-item mask."""
        self.train_users_ = torch.from_numpy(split.train.users.astype(np.int64))
        self.train_items_ = torch.from_numpy(split.train.items.astype(np.int64))
        warm = split.train_item_mask()
        self.warm_items_ = torch.from_numpy(warm)
        self.sampler_ = NegativeSampler(split.train.users, split.train.items, split.n_users, split.n_items,
                                        candidates=np.flatnonzero(warm))
        self._adjacency = None
        if self.trains_on_device:
            device = resolve_device(self.config.device)
            self.to_device(device)  # before train.py builds the optimizer, so its state lives there too
            log.info("%s: training on %s", self.name, device)

    def batches(self, generator: torch.Generator) -> list[Tensor]:
        """One epoch: the training pairs in a random order, in chunks of batch_size."""
        order = torch.randperm(len(self.train_users_), generator=generator)
        return list(torch.split(order, self.config.batch_size))

    def batch_pairs(self, batch: Tensor, n_neg: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(users int64 [B], items int64 [B, 1 + n_neg]): column 0 the positive, then sampled negatives.

        On the CPU, like every draw from the epoch's generator; a loss moves them to `device_` once drawn.
        """
        batch = batch.cpu()  # DDP with device_ids moves a step's inputs to the GPU; the pairs stay on the CPU
        users, pos = self.train_users_[batch], self.train_items_[batch]
        negs = self.sampler_.sample(users, n_neg, generator)  # [B, K]
        return users, torch.cat([pos[:, None], negs], dim=1)

    def regularizer(self, users: Tensor, items: Tensor) -> Tensor:
        """||Theta||^2 on the batch: mean squared norm of its user rows plus that of its item slots [B, 1 + K]."""
        squared = lambda r: r.pow(2).sum(-1)  # noqa: E731
        return batch_mean(self.user_embedding, users, squared) + batch_mean(self.item_embedding, items, squared)

    # -- inference ------------------------------------------------------------------------------------------
    def cold_item_vectors(self, z_items: Tensor) -> Tensor:
        """Vectors of the items absent from training; default: the mean warm item vector (documented rule)."""
        mean = z_items[self.warm_items_].mean(0) if self.warm_items_.any() else z_items.mean(0)
        return mean.expand(int((~self.warm_items_).sum()), -1)

    @torch.no_grad()
    def inference_vectors(self) -> tuple[Tensor, Tensor]:
        """(users [U, D], items [I, D]) used for scoring; cached while in eval mode."""
        if self._cache is not None and not self.training:
            return self._cache
        z_users, z_items = self.encode()
        items = z_items.clone()
        if (~self.warm_items_).any():
            items[~self.warm_items_] = self.cold_item_vectors(z_items)
        result = (z_users.detach(), items.detach())
        if not self.training:
            self._cache = result
        return result

    def score(self, users: Tensor, items: Tensor | None = None) -> Tensor:
        """z_u . z_i computed where the vectors live; CPU scores [B, I], as the evaluator expects."""
        z_users, z_items = self.inference_vectors()
        item_vecs = z_items if items is None else z_items[items.to(z_items.device)]
        return (z_users[users.to(z_users.device)] @ item_vecs.T).cpu()  # [B, I]
