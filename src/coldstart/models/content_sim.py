"""Content similarity: a training-free content-based baseline (the classic user-profile scorer of
content-based filtering; Pazzani and Billsus, "Content-based recommendation systems", 2007).

    x_i = normalise(c_i - mu)                            c_i: the item's content (the normalised modalities,
                                                        concatenated, as the content models see it);
                                                        mu: the mean of c over warm items with content
    p_u = (1 / |I_u|) sum_{j in I_u} x_j                 I_u: the user's training items
    score(u, i) = p_u . x_i                              the mean cosine of i to the user's items

Nothing is learnt, so it measures what the content alone says about a user's taste: a floor that a trained
cold-start model has to beat. Centring matters for pretrained embeddings, whose vectors share one large
direction; without it every user's profile mostly scores closeness to that direction. Items without content
get x = 0 (score 0). Warm and cold items are scored alike.

The content is [dense block d | sparse block S] (`nn/content.py: build_content`). Centring the dense block
costs nothing extra, so it is centred explicitly. Centring S would make it dense (a 26K-item x 20K-word bag
of words took 9 GB), so it stays sparse and the mean enters through rank-1 corrections. With
s_i = 1 / |c_i - mu| (0 without content), S'_i = s_i S_i, m_i = S_i . mu_S, a_u = mean_{j in I_u} s_j,
r_u = mean_{j in I_u} s_j m_j and q_u = mean_{j in I_u} S'_j (sparse):

    |c_i - mu|^2 = |d_i - mu_d|^2 + |S_i|^2 - 2 m_i + |mu_S|^2
    score(u, i)  = p^d_u . x^d_i  +  q_u . S'_i  -  a_u s_i m_i  -  s_i (r_u - a_u |mu_S|^2)

The dense profiles p^d [U, Dd] and the per-user and per-item scalars are computed once in `fit`; q_u . S'_i is
computed at scoring time, a chunk of users at a time, so memory stays bounded whatever the vocabulary size.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.base import Recommender
from coldstart.models.content import item_content_spec
from coldstart.nn.content import build_content

#: Floats in one chunk of dense sparse-block profiles [users, Ds] (16 MB): bounds scoring memory.
CHUNK_FLOATS = 1 << 22


@dataclasses.dataclass(frozen=True)
class ContentSimConfig:
    """Attributes:
        modalities: names of the item modalities to use (default: every numeric one).
        max_dims: refuse a dense content block wider than this (it is stored densely: items x dims floats,
            and users x dims for the profiles); sparse modalities stay sparse and do not count.
    """

    modalities: tuple[str, ...] | None = None
    max_dims: int = 8192

    def __post_init__(self) -> None:
        if self.modalities is not None:
            object.__setattr__(self, "modalities", tuple(self.modalities))  # JSON gives a list
        if self.max_dims < 1:
            raise DataError(f"must be >= 1, got {self.max_dims}", field="max_dims")


class ContentSim(Recommender):
    """score(u, i) = mean over the user's training items j of cos(x_i, x_j), x = centred content."""

    name = "content_sim"
    Config = ContentSimConfig
    cold_items = "content"

    def dims_for(self, split: Split) -> dict[str, int]:
        dims = super().dims_for(split)
        spec = item_content_spec(self.name, split, self.config.modalities)
        if spec.dense_dim > self.config.max_dims:
            raise DataError(f"dense content has {spec.dense_dim} columns, more than max_dims={self.config.max_dims}; "
                            "use a smaller feature preset (--features) or raise max_dims", field="max_dims")
        self._content = build_content(spec, split.dataset.item_features, n_rows=split.n_items)
        dims["content_dense"], dims["content_sparse"] = self._content[0].shape[1], self._content[1].shape[1]
        return dims

    def build(self, dims: dict[str, int]) -> None:
        n_users, n_items, width = dims["n_users"], dims["n_items"], dims["content_dense"]
        self.register_buffer("item_dense_", torch.zeros(n_items, width))  # [I, Dd] s_i (d_i - mu_d)
        self.register_buffer("item_indptr_", torch.zeros(n_items + 1, dtype=torch.int64))  # CSR of S' [I, Ds]
        self.register_buffer("item_indices_", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("item_values_", torch.zeros(0))
        self.register_buffer("item_scale_", torch.zeros(n_items))  # [I] s_i
        self.register_buffer("item_offset_", torch.zeros(n_items))  # [I] s_i m_i
        self.register_buffer("user_dense_", torch.zeros(n_users, width))  # [U, Dd] mean of x^d over I_u
        self.register_buffer("user_weight_", torch.zeros(n_users))  # [U] a_u
        self.register_buffer("user_offset_", torch.zeros(n_users))  # [U] r_u - a_u |mu_S|^2

    def _fit(self, split: Split, options=None) -> None:
        dense, sparse = self._content  # [I, Dd] float32, CSR [I, Ds] float32
        del self._content
        sparse = sp.csr_matrix(sparse, dtype=np.float64)  # float64 for the norms: |S|^2 - 2m + |mu|^2 cancels
        has = (np.abs(dense).sum(1) > 0) | (np.asarray(abs(sparse).sum(1)).ravel() > 0)  # [I]
        ref = split.train_item_mask() & has  # warm items with content define the mean
        n_ref = max(int(ref.sum()), 1)  # no such item: mu = 0
        mu_dense = dense[ref].astype(np.float64).sum(0) / n_ref  # [Dd]
        mu_sparse = np.asarray(sparse.T @ ref.astype(np.float64)).ravel() / n_ref  # [Ds], dense: one row
        centred = dense.astype(np.float64) - mu_dense  # [I, Dd]
        m = np.asarray(sparse @ mu_sparse).ravel()  # [I] S_i . mu_S
        mm = float(mu_sparse @ mu_sparse)
        sq_dense = (centred**2).sum(1)
        sq_sparse = np.asarray(sparse.multiply(sparse).sum(1)).ravel()  # [I] |S_i|^2
        norm2 = sq_dense + sq_sparse - 2 * m + mm
        # A row equal to the mean is the zero vector (normalised to 0), but the sparse identity leaves rounding
        # noise of about 1e-16 (|S_i|^2 + |mu_S|^2); 1e-10 of that scale is far above the noise.
        zero = norm2 <= 1e-10 * (sq_sparse + mm)
        scale = np.where(has & ~zero, 1.0 / np.sqrt(np.maximum(norm2, 1e-300)), 0.0)  # [I] s_i
        scaled = sp.csr_matrix(sp.diags(scale) @ sparse)  # [I, Ds] S'
        scaled.sort_indices()
        train = split.matrix("train")
        train.data = np.repeat(1.0 / np.maximum(np.diff(train.indptr), 1), np.diff(train.indptr))  # [U, I] mean
        item_dense = centred * scale[:, None]  # [I, Dd]
        weight = train @ scale  # [U] a_u
        self.item_dense_ = torch.from_numpy(item_dense).float()
        self.item_indptr_ = torch.from_numpy(scaled.indptr.astype(np.int64))
        self.item_indices_ = torch.from_numpy(scaled.indices.astype(np.int64))
        self.item_values_ = torch.from_numpy(scaled.data).float()
        self.item_scale_ = torch.from_numpy(scale).float()
        self.item_offset_ = torch.from_numpy(scale * m).float()
        self.user_dense_ = torch.from_numpy(np.asarray(train @ item_dense)).float()  # [U, Dd]
        self.user_weight_ = torch.from_numpy(weight).float()
        self.user_offset_ = torch.from_numpy(train @ (scale * m) - weight * mm).float()

    def _csr(self, indptr: Tensor, indices: Tensor, values: np.ndarray, n_cols: int) -> sp.csr_matrix:
        """A scipy CSR matrix over CSR buffers (scipy may copy the indices to int32: O(nnz), cheap per batch)."""
        return sp.csr_matrix((values, indices.numpy(), indptr.numpy()), shape=(len(indptr) - 1, n_cols))

    @torch.no_grad()
    def score(self, users: Tensor, items: Tensor | None = None) -> Tensor:
        users = torch.as_tensor(users, dtype=torch.int64)
        pick = slice(None) if items is None else torch.as_tensor(items, dtype=torch.int64)
        out = self.user_dense_[users] @ self.item_dense_[pick].T  # [B, I']
        # rank-1 corrections in place: a [B, I'] temporary each would double the peak memory
        out.addr_(self.user_weight_[users], self.item_offset_[pick], alpha=-1)  # a_u s_i m_i
        out.addr_(self.user_offset_[users], self.item_scale_[pick], alpha=-1)  # s_i (r_u - a_u |mu_S|^2)
        n_sparse = self.dims_["content_sparse"]
        if not n_sparse or not len(self.item_values_):
            return out
        items_csr = self._csr(self.item_indptr_, self.item_indices_, self.item_values_.numpy(), n_sparse)
        counts = self.seen_indptr_[1:] - self.seen_indptr_[:-1]  # [U]
        mean = torch.repeat_interleave(1.0 / counts.clamp(min=1).float(), counts)  # [nnz] 1 / |I_u|
        seen = self._csr(self.seen_indptr_, self.seen_indices_, mean.numpy(), self.dims_["n_items"])
        seen = seen[users.numpy()]  # [B, I] 1 / |I_u| at the user's training items
        targets = items_csr if items is None else items_csr[pick.numpy()]  # [I', Ds]
        chunk = max(1, CHUNK_FLOATS // n_sparse)
        for start in range(0, len(users), chunk):  # a chunk of users, not one user, per step
            profiles = (seen[start:start + chunk] @ items_csr).toarray()  # [b, Ds] q_u
            out[start:start + chunk] += torch.from_numpy(np.asarray(targets @ profiles.T).T)  # [b, I']
        return out
