"""LightGCN propagation over the user-item training graph with torch.sparse (He et al., SIGIR 2020)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> Tensor:
    """D^-1/2 A D^-1/2 of the bipartite graph as a sparse CSR tensor [U + I, U + I].

    Nodes 0..U-1 are users, U..U+I-1 items. Duplicate pairs count once. Isolated nodes (cold items)
    have empty rows, so propagation leaves them at zero beyond layer 0.
    """
    keys = np.unique(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))
    u, i = keys // n_items, keys % n_items + n_users
    rows = np.concatenate([u, i])
    cols = np.concatenate([i, u])
    n = n_users + n_items
    degree = np.bincount(rows, minlength=n).astype(np.float64)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1)), 0.0)
    values = (inv_sqrt[rows] * inv_sqrt[cols]).astype(np.float32)
    coo = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(values), (n, n),
                                  check_invariants=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.coalesce().to_sparse_csr()


class _SymmetricSpMM(torch.autograd.Function):
    """adjacency @ x for a symmetric adjacency; the backward reuses the same CSR product (A^T g = A g).

    torch's generic sparse backward transposes the matrix on every call, about 4x slower on CPU.
    """

    @staticmethod
    def forward(ctx, adjacency: Tensor, x: Tensor) -> Tensor:
        ctx.adjacency = adjacency
        return adjacency @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, ctx.adjacency @ grad


def propagate(adjacency: Tensor, ego: Tensor, n_layers: int) -> Tensor:
    """Layer-mean readout (e^0 + e^1 + ... + e^L) / (L + 1), e^(l+1) = A_hat e^l.

    Args:
        adjacency: symmetric sparse [N, N] from `normalized_adjacency`.
        ego: float [N, D] layer-0 (id) embeddings.
        n_layers: L (0 gives the ego embeddings back, i.e. matrix factorisation).

    Returns:
        float [N, D].
    """
    total, layer = ego, ego
    for _ in range(n_layers):
        layer = _SymmetricSpMM.apply(adjacency, layer)  # [N, D]
        total = total + layer
    return total / (n_layers + 1)
