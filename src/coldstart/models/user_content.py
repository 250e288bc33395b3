"""User attributes as model input: the user side of models/content.py, for user cold start.

Numeric user modalities (Dense, Sparse, MultiLabel in `dataset.user_features`: ml-100k's age, gender,
occupation; ml-1m's gender, age bucket, occupation; KuaiRec's user_features.csv; bring-your-own users/*.csv,
.npz, .npy; `--features user:...` presets) go through exactly the item side's normalisation
(`nn/content.py: build_content`: each modality L2-normalised per row, one-column Dense ones z-scored) and are
kept in the model as buffers (a dense block + a CSR block), so a loaded model still has every user's input.

Use from a model (three calls)::

    # dims_for(split):
    self._user_input = prepare_user_content(self.name, split, cfg.user_modalities)
    dims.update(self._user_input.dims)              # user_dense, user_sparse, user_nnz
    # build(dims):
    self.user_content = UserContent(dims, self._user_input)    # buffers (filled when fitting, empty on load)
    self.user_encoder = ContentEncoder(dims["user_dense"], dims["user_sparse"], hidden, out)
    # anywhere:
    x = self.user_content.inputs(users)              # (dense [n, Dd], columns, offsets, weights)
    f_u = self.user_encoder(*x)                      # [n, out]

`self.user_content.dense_` etc. are saved with the model (sizes come from the dims, so `load` rebuilds them);
the ContentSpec (names, vocabularies, standardisation) is its extra state, so `new_user_inputs(features)` can
build the input of users that were not in the dataset at all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.nn.content import ContentSpec, build_content, gather_csr_rows, select_modalities


def user_content_spec(model: str, split: Split, modalities: tuple[str, ...] | None = None) -> ContentSpec:
    """The user modalities a model uses, or a DataError saying why there are none.

    Args:
        model: the model's name, for the message.
        split: the split, whose dataset holds the user features.
        modalities: the configured modality names (None: every numeric one).
    """
    dataset = split.dataset
    if dataset is None or not dataset.user_features:
        raise DataError(f"{model} needs user attributes: the split's dataset has no user features (ml-100k, "
                        "ml-1m, KuaiRec have some; bring-your-own data: users/*.csv)", field="user_features")
    spec = select_modalities(dataset.user_features, modalities)
    if not spec.names:
        raise DataError(f"no numeric user modality to use among {', '.join(dataset.user_features)} "
                        "(text needs a feature preset first, e.g. --features user:tfidf:zip)", field="user_modalities")
    return spec


@dataclass
class UserInput:
    """The normalised user content of one split: spec, dense [U, Dd] float32, sparse CSR [U, Ds] float32."""

    spec: ContentSpec
    dense: np.ndarray
    sparse: sp.csr_matrix

    @property
    def dims(self) -> dict[str, int]:
        """The sizes a model stores in its dims (so `load` can rebuild the buffers)."""
        return {"user_dense": int(self.dense.shape[1]), "user_sparse": int(self.sparse.shape[1]),
                "user_nnz": int(self.sparse.nnz)}


def prepare_user_content(model: str, split: Split, modalities: tuple[str, ...] | None = None) -> UserInput:
    """Select and normalise the split's user modalities (one row per user of the split's index).

    Args:
        model: the model's name, for error messages.
        split: the split (its dataset holds the user features).
        modalities: names to use (None: every numeric user modality).
    """
    spec = user_content_spec(model, split, modalities)
    dense, sparse = build_content(spec, split.dataset.user_features, n_rows=split.n_users)
    return UserInput(spec, dense, sparse)


class UserContent(nn.Module):
    """Every user's normalised attributes as buffers: dense_ [U, Dd], and the CSR block (indptr_, indices_, values_)."""

    def __init__(self, dims: dict[str, int], data: UserInput | None = None) -> None:
        """Args:
            dims: the model's dims (n_users, user_dense, user_sparse, user_nnz).
            data: the content to store (None when the model is being loaded: buffers come from the state).
        """
        super().__init__()
        n_users = dims["n_users"]
        self.spec = ContentSpec()
        self.register_buffer("dense_", torch.zeros(n_users, dims["user_dense"]))  # [U, Dd]
        self.register_buffer("indptr_", torch.zeros(n_users + 1, dtype=torch.int64))  # [U + 1]
        self.register_buffer("indices_", torch.zeros(dims["user_nnz"], dtype=torch.int64))  # [nnz]
        self.register_buffer("values_", torch.zeros(dims["user_nnz"]))  # [nnz]
        self.sparse_dim = dims["user_sparse"]
        if data is not None:
            self.spec = data.spec
            self.dense_ = torch.from_numpy(np.ascontiguousarray(data.dense, dtype=np.float32))
            self.indptr_ = torch.from_numpy(data.sparse.indptr.astype(np.int64))
            self.indices_ = torch.from_numpy(data.sparse.indices.astype(np.int64))
            self.values_ = torch.from_numpy(data.sparse.data.astype(np.float32))

    @property
    def dense_dim(self) -> int:
        return self.dense_.shape[1]

    def inputs(self, users: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(dense [n, Dd], columns [nnz'], offsets [n], weights [nnz']) of user indices [n]: a ContentEncoder input."""
        cols, offsets, values, _ = gather_csr_rows(self.indptr_, self.indices_, self.values_, users)
        return self.dense_[users], cols, offsets, values

    def to_dense(self, users: Tensor | None = None) -> Tensor:
        """[n, Dd + Ds]: the users' whole input as one dense matrix (for small attribute sets such as MovieLens')."""
        users = torch.arange(len(self.dense_)) if users is None else users
        cols, offsets, values, counts = gather_csr_rows(self.indptr_, self.indices_, self.values_, users)
        sparse = torch.zeros(len(users), self.sparse_dim)
        sparse[torch.repeat_interleave(torch.arange(len(users)), counts), cols] = values
        return torch.cat([self.dense_[users], sparse], 1)

    def has_content(self) -> Tensor:
        """bool [U]: users with at least one non-zero attribute."""
        counts = self.indptr_[1:] - self.indptr_[:-1]
        return (self.dense_.abs().sum(1) > 0) | (counts > 0)

    def new_user_inputs(self, features: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The input of brand-new users from their raw modalities (remapped by the stored spec), for an encoder.

        Args:
            features: modality name -> Dense / Sparse / MultiLabel / array for the modalities in `self.spec.names`.
        """
        dense, sparse = build_content(self.spec, features)
        return (torch.from_numpy(dense), torch.from_numpy(sparse.indices.astype(np.int64)),
                torch.from_numpy(sparse.indptr[:-1].astype(np.int64)), torch.from_numpy(sparse.data.astype(np.float32)))

    def get_extra_state(self) -> dict:
        return {"spec": dataclasses.asdict(self.spec), "sparse_dim": self.sparse_dim}

    def set_extra_state(self, state: dict) -> None:
        self.spec = ContentSpec(**state["spec"])
        self.sparse_dim = int(state["sparse_dim"])


def warm_user_mask(seen_indptr: Tensor) -> Tensor:
    """bool [U]: users with at least one training interaction (from a model's seen-item CSR buffers)."""
    return (seen_indptr[1:] - seen_indptr[:-1]) > 0


SIDES = ("item", "user")


def check_side(config) -> None:
    """DataError unless `config.side` is "item" or "user" (the side whose content feeds a two-stage baseline)."""
    if config.side not in SIDES:
        raise DataError(f"must be item or user, got {config.side!r}", field="side")
