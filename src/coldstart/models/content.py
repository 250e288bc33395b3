"""Shared base of models that encode item content: the content buffers, the feature encoder and new-item embedding.

The item content (every numeric modality of the split's dataset, or the configured ones) is normalised and
stored in the model as buffers (dense block + CSR), so a loaded model scores cold items without the dataset.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.bpr import TrainedConfig
from coldstart.models.embedding import EmbeddingRecommender
from coldstart.nn.content import ContentEncoder, ContentSpec, build_content, gather_csr_rows, select_modalities


@dataclasses.dataclass(frozen=True)
class ContentConfig(TrainedConfig):
    """TrainedConfig plus the content settings.

    Attributes:
        hidden: hidden width of the feature encoder MLP; 0 makes it a linear map.
        has_v, has_a, has_t: use visual / acoustic / textual modalities (by modality name, see nn/content.py).
        modalities: names of the item modalities to use (default: every numeric one).
    """

    hidden: int = 256
    has_v: bool = True
    has_a: bool = True
    has_t: bool = True
    modalities: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden < 0:
            raise DataError(f"must be >= 0 (0: a linear map), got {self.hidden}", field="hidden")
        if self.modalities is not None:
            object.__setattr__(self, "modalities", tuple(self.modalities))  # JSON gives a list


def item_content_spec(model: str, split: Split, modalities: tuple[str, ...] | None,
                      kinds: dict[str, bool] | None = None) -> ContentSpec:
    """The item modalities a content model uses, or a DataError saying why there are none.

    Args:
        model: the model's name, for the message.
        split: the split, whose dataset holds the item features.
        modalities: the configured modality names (None: every numeric one).
        kinds: {"v", "a", "t"} -> keep visual / acoustic / textual modalities (None: all).
    """
    dataset = split.dataset
    if dataset is None or not dataset.item_features:
        raise DataError(f"{model} needs item content: the split's dataset has no item features "
                        "(load the split together with its dataset)", field="item_features")
    spec = select_modalities(dataset.item_features, modalities, kinds)
    if not spec.names:
        raise DataError(f"no numeric item modality to use among {', '.join(dataset.item_features)} "
                        "(text and images need `coldstart features` first)", field="modalities")
    return spec


class ContentRecommender(EmbeddingRecommender):
    """An EmbeddingRecommender with item content and a feature encoder f = MLP(content) of width dim_E."""

    Config = ContentConfig

    def __init__(self, **hyper: Any) -> None:
        super().__init__(**hyper)
        self.spec_ = ContentSpec()
        self._pending_content: tuple[np.ndarray, sp.csr_matrix] | None = None

    # -- content -------------------------------------------------------------------------------------------
    def dims_for(self, split: Split) -> dict[str, int]:
        dims = super().dims_for(split)
        cfg = self.config
        self.spec_ = item_content_spec(self.name, split, cfg.modalities,
                                       {"v": cfg.has_v, "a": cfg.has_a, "t": cfg.has_t})
        dense, sparse = build_content(self.spec_, split.dataset.item_features, n_rows=split.n_items)
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
        self.feature_encoder = self.make_feature_encoder(dims)
        if self._pending_content is not None:
            dense, sparse = self._pending_content
            self.content_dense_ = torch.from_numpy(dense)
            self.content_indptr_ = torch.from_numpy(sparse.indptr.astype(np.int64))
            self.content_indices_ = torch.from_numpy(sparse.indices.astype(np.int64))
            self.content_values_ = torch.from_numpy(sparse.data.astype(np.float32))
            self._pending_content = None

    def make_feature_encoder(self, dims: dict[str, int]) -> ContentEncoder:
        """The feature encoder over [preference | dense content] and the sparse content."""
        return ContentEncoder(self.preference_dim() + dims["content_dense"], dims["content_sparse"],
                              self.config.hidden, self.content_dim())

    def content_dim(self) -> int:
        """Width of the feature representation f (dim_E, so that f is comparable with user vectors)."""
        return self.config.dim_E

    def preference_dim(self) -> int:
        """Width of a collaborative input placed before the content (DropoutNet's preference vector); 0: none."""
        return 0

    def _encode(self, dense: Tensor, sparse_rows: tuple[Tensor, Tensor, Tensor],
                preference: Tensor | None) -> Tensor:
        """The feature encoder on [preference | dense content] and the sparse content; no preference = zeros."""
        if self.preference_dim():
            if preference is None:
                preference = torch.zeros(len(dense), self.preference_dim(), device=dense.device)
            dense = torch.cat([preference, dense], 1)  # [n, P + Dd]
        return self.feature_encoder(dense, *sparse_rows)

    def get_extra_state(self) -> dict:
        return dataclasses.asdict(self.spec_)

    def set_extra_state(self, state: dict) -> None:
        self.spec_ = ContentSpec(**state)

    def content_features(self, items: Tensor, preference: Tensor | None = None) -> Tensor:
        """Feature representations f [n, D] of item indices [n] (only these rows are encoded).

        Args:
            items: item indices [n].
            preference: [n, preference_dim()] collaborative input of models that take one (None: zeros).
        """
        cols, offsets, values, _ = gather_csr_rows(self.content_indptr_, self.content_indices_,
                                                   self.content_values_, items)
        return self._encode(self.content_dense_[items], (cols, offsets, values), preference)

    @torch.no_grad()
    def item_embeddings(self, features: dict) -> Tensor:
        """Feature representations of brand-new items from content alone, comparable with user vectors.

        Args:
            features: modality name -> Dense / Sparse / MultiLabel (remapped by label name), array [n, D] or
                CSR, for the modalities in `self.spec_.names`; a modality left out counts as missing content.

        Returns:
            float [n, dim_E] on the CPU (encoded where the model lives); score(u, new item) = z_u . f.
        """
        dense, sparse = build_content(self.spec_, features)
        self.eval()
        device = self.device_
        sparse_rows = (torch.from_numpy(sparse.indices.astype(np.int64)).to(device),
                       torch.from_numpy(sparse.indptr[:-1].astype(np.int64)).to(device),
                       torch.from_numpy(sparse.data.astype(np.float32)).to(device))
        return self._encode(torch.from_numpy(dense).to(device), sparse_rows, None).cpu()

