"""CLCRec: Contrastive Learning for Cold-Start Recommendation (Wei et al., ACM MM 2021).

    L = lambda * L_RE + (1 - lambda) * L_UI + eta * ||Theta||^2                                   (Eq. 5)
    L_UI = -E_(u,i) ln g(z_u, z_i) / (g(z_u, z_i) + sum_k g(z_u, z_jk)),  g = exp(z_u . z_i / tau)    (Eq. 10)
    L_RE = -E_i ln h(z_i, f_i) / (h(z_i, f_i) + sum_k h(z_i, f_jk)),      h = exp(cos(z_i, f_j) / tau) (Eq. 12)
    f_i = W2 leaky_relu(W1 x_i + b1) + b2                                                          (Eq. 11)

z comes from the CF encoder (encoder="mf": CEN_MF, "lightgcn": CEN_GCN). Hybrid contrastive training: in
L_UI each item slot uses f instead of z with probability rho (num_sample). At inference users use z_u, warm
items z_i and cold items f_i. docs/models/clcrec.md maps every equation to this code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor

from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.bpr import TrainedConfig, check_positive
from coldstart.models.embedding import ENCODERS, EmbeddingRecommender, compact, rows
from coldstart.nn.content import ContentEncoder, ContentSpec, build_content, gather_csr_rows, select_modalities
from coldstart.nn.losses import info_nce


@dataclasses.dataclass(frozen=True)
class CLCRecConfig(TrainedConfig):
    """Hyperparameters under the official names; defaults from the official README's Movielens command.

    The shared training settings (dim_E, l_r, batch_size, num_epoch, patience, min_epochs, valid_k) are
    documented in TrainedConfig; here reg_weight is eta, num_neg is K of L_UI, batch_size is 256.

    Attributes:
        encoder: CF encoder, "mf" (CEN_MF) or "lightgcn" (CEN_GCN).
        n_layers: propagation layers of the lightgcn encoder.
        hidden: hidden width of the feature encoder MLP.
        num_neg_re: K of L_RE; None reuses the U-I negatives (as the official code does); an integer draws
            that many other training items per anchor.
        lr_lambda: lambda, weight of L_RE (1 - lambda weighs L_UI).
        temp_value: tau, temperature of both density ratios.
        num_sample: rho, probability that an item slot of L_UI uses its feature representation.
        has_v, has_a, has_t: use visual / acoustic / textual modalities (by modality name, see nn/content.py).
        modalities: names of the item modalities to use (default: every numeric one).
    """

    reg_weight: float = 0.1
    num_neg: int = 128
    batch_size: int = 256
    encoder: str = "mf"
    n_layers: int = 3
    hidden: int = 256
    num_neg_re: int | None = None
    lr_lambda: float = 0.5
    temp_value: float = 2.0
    num_sample: float = 0.5
    has_v: bool = True
    has_a: bool = True
    has_t: bool = True
    modalities: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoder not in ENCODERS:
            raise DataError(f"unknown encoder {self.encoder!r} (use {', '.join(ENCODERS)})", field="encoder")
        check_positive(self, "hidden", "temp_value")
        for name in ("lr_lambda", "num_sample"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DataError(f"must be in [0, 1], got {getattr(self, name)}", field=name)
        if self.num_neg_re is not None and self.num_neg_re < 1:
            raise DataError(f"must be >= 1 or null, got {self.num_neg_re}", field="num_neg_re")
        if self.n_layers < 0:
            raise DataError(f"must be >= 0, got {self.n_layers}", field="n_layers")
        if self.modalities is not None:
            object.__setattr__(self, "modalities", tuple(self.modalities))  # JSON gives a list


class CLCRec(EmbeddingRecommender):
    """CLCRec with a CEN_MF or CEN_GCN encoder; cold items are scored through their content."""

    name = "clcrec"
    Config = CLCRecConfig
    cold_items = "content"

    def __init__(self, **hyper: Any) -> None:
        super().__init__(**hyper)
        self.spec_ = ContentSpec()
        self._pending_content: tuple[np.ndarray, sp.csr_matrix] | None = None

    # -- content -------------------------------------------------------------------------------------------
    def dims_for(self, split: Split) -> dict[str, int]:
        dims = super().dims_for(split)
        dataset = split.dataset
        if dataset is None or not dataset.item_features:
            raise DataError("clcrec needs item content: the split's dataset has no item features "
                            "(load the split together with its dataset)", field="item_features")
        cfg = self.config
        self.spec_ = select_modalities(dataset.item_features, cfg.modalities,
                                       {"v": cfg.has_v, "a": cfg.has_a, "t": cfg.has_t})
        if not self.spec_.names:
            raise DataError(f"no numeric item modality to use among {', '.join(dataset.item_features)} "
                            "(text and images need `coldstart features` first)", field="modalities")
        dense, sparse = build_content(self.spec_, dataset.item_features, n_rows=split.n_items)
        self._pending_content = (dense, sparse)
        dims.update(content_dense=dense.shape[1], content_sparse=sparse.shape[1], content_nnz=int(sparse.nnz))
        return dims

    def build(self, dims: dict[str, int]) -> None:
        super().build(dims)
        n_items = dims["n_items"]
        self.register_buffer("content_dense_", torch.zeros(n_items, dims["content_dense"]))
        self.register_buffer("content_indptr_", torch.zeros(n_items + 1, dtype=torch.int64))
        self.register_buffer("content_indices_", torch.zeros(dims["content_nnz"], dtype=torch.int64))
        self.register_buffer("content_values_", torch.zeros(dims["content_nnz"]))
        self.feature_encoder = ContentEncoder(dims["content_dense"], dims["content_sparse"], self.config.hidden,
                                              self.config.dim_E)
        if self._pending_content is not None:
            dense, sparse = self._pending_content
            self.content_dense_ = torch.from_numpy(dense)
            self.content_indptr_ = torch.from_numpy(sparse.indptr.astype(np.int64))
            self.content_indices_ = torch.from_numpy(sparse.indices.astype(np.int64))
            self.content_values_ = torch.from_numpy(sparse.data.astype(np.float32))
            self._pending_content = None

    def get_extra_state(self) -> dict:
        return dataclasses.asdict(self.spec_)

    def set_extra_state(self, state: dict) -> None:
        self.spec_ = ContentSpec(**state)

    def content_features(self, items: Tensor) -> Tensor:
        """Feature representations f [n, D] of item indices [n] (only these rows are encoded)."""
        cols, offsets, values, _ = gather_csr_rows(self.content_indptr_, self.content_indices_,
                                                   self.content_values_, items)
        return self.feature_encoder(self.content_dense_[items], cols, offsets, values)

    @torch.no_grad()
    def item_embeddings(self, features: dict) -> Tensor:
        """Feature representations of brand-new items from content alone, comparable with user vectors.

        Args:
            features: modality name -> Dense / Sparse / MultiLabel (remapped by label name), array [n, D] or
                CSR, for the modalities in `self.spec_.names`; a modality left out counts as missing content.

        Returns:
            float [n, dim_E]; score(u, new item) = z_u . f.
        """
        dense, sparse = build_content(self.spec_, features)
        self.eval()
        return self.feature_encoder(torch.from_numpy(dense), torch.from_numpy(sparse.indices.astype(np.int64)),
                                    torch.from_numpy(sparse.indptr[:-1].astype(np.int64)),
                                    torch.from_numpy(sparse.data.astype(np.float32)))

    def cold_item_vectors(self, z_items: Tensor) -> Tensor:
        """Cold items are represented by their feature representations f_i."""
        return self.content_features(torch.nonzero(~self.warm_items_).flatten())

    # -- training ------------------------------------------------------------------------------------------
    def other_items(self, anchors: Tensor, n: int, generator: torch.Generator) -> Tensor:
        """int64 [B, n]: training items drawn uniformly, none equal to its row's anchor (R-E negatives)."""
        pool = self.sampler_.pool
        if len(pool) < 2:
            raise DataError("R-E negatives need at least two training items", field="num_neg_re")
        out = pool[torch.randint(len(pool), (len(anchors), n), generator=generator)]
        same = out == anchors[:, None]
        while same.any():
            out[same] = pool[torch.randint(len(pool), (int(same.sum()),), generator=generator)]
            same = out == anchors[:, None]
        return out

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """Eq. 5 on one batch of positive pairs, with hybrid contrastive training in L_UI.

        Every distinct item of the batch is encoded and scored once: logits come from [B, n] products of
        the batch's users / anchors with the n distinct items, gathered at the sampled slots. This equals
        scoring every (row, slot) pair separately, without materialising [B, 1 + K, D] tensors.
        """
        cfg = self.config
        users, items = self.batch_pairs(batch, cfg.num_neg, generator)  # [B], [B, 1 + K]
        if cfg.num_neg_re is None:
            re_items = items  # [B, 1 + K]: anchor i, then the U-I negatives
        else:
            re_items = torch.cat([items[:, :1], self.other_items(items[:, 0], cfg.num_neg_re, generator)], 1)
        both = items if re_items is items else torch.cat([items, re_items], 1)
        unique, inverse, _ = compact(both, self.dims_["n_items"])
        slot_ui = inverse[:, : items.shape[1]]  # [B, 1 + K] positions in `unique`
        slot_re = slot_ui if re_items is items else inverse[:, items.shape[1]:]  # [B, 1 + K']
        f = self.content_features(unique)  # [n, D]: the feature encoder sees only the batch's items

        z_users, z_items = self.encode()
        z_u = rows(z_users, users)  # [B, D]
        z = rows(z_items, unique)  # [n, D]
        # L_UI with hybrid training: slot (b, k) uses f instead of z with probability rho.
        swap = torch.rand(items.shape, generator=generator) < cfg.num_sample  # [B, 1 + K]
        by_z = torch.gather(z_u @ z.T, 1, slot_ui)  # [B, 1 + K] z_u . z_j
        by_f = torch.gather(z_u @ f.T, 1, slot_ui)  # [B, 1 + K] z_u . f_j
        loss_ui = info_nce(torch.where(swap, by_f, by_z) / cfg.temp_value)
        # L_RE: cosine of the anchor's z_i with f of itself (slot 0) and of the negatives.
        anchor = F.normalize(rows(z_items, items[:, 0]), dim=-1)  # [B, D]
        cosine = torch.gather(anchor @ F.normalize(f, dim=-1).T, 1, slot_re)  # [B, 1 + K']
        loss_re = info_nce(cosine / cfg.temp_value)
        reg = self.regularizer(users, items)
        loss = cfg.lr_lambda * loss_re + (1 - cfg.lr_lambda) * loss_ui + cfg.reg_weight * reg
        return loss, {"loss": loss.item(), "ui": loss_ui.item(), "re": loss_re.item(), "reg": reg.item()}
