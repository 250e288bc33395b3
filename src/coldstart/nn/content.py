"""Item content as model input, and the CLCRec feature encoder (an MLP with one hidden layer, Eq. 11).

Numeric modalities (Dense, Sparse, MultiLabel) are each L2-normalised per row, then concatenated: dense
ones into a dense block, sparse ones (tags, actors, bags of words) into a CSR block. The first layer reads
the CSR block with an EmbeddingBag (a sparse matrix product), so thousands of one-hot columns cost only
their non-zeros. Text and Image modalities need a feature extractor first and are skipped here.

A one-column Dense modality (a number such as the release year) is z-scored instead: normalised per row it
would be its sign, the same for every item. Its mean and std are taken over all rows of the content given
the first time (the whole catalogue, cold items included: content is not interaction data, so this leaks
nothing), kept in the ContentSpec, and reused for new items. A constant one is dropped with a log line, or
is an error when asked for by name.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coldstart.data.modalities import Dense, MultiLabel, Sparse
from coldstart.errors import DataError

log = logging.getLogger(__name__)

#: First word of a modality name -> the official CLCRec switch that controls it (has_v / has_a / has_t).
KIND_WORDS = {
    "v": {"v", "visual", "image", "poster", "video", "frame"},
    "a": {"a", "acoustic", "audio", "sound"},
    "t": {"t", "textual", "text", "plot", "title", "description", "abstract", "review", "summary"},
}


def modality_kind(name: str) -> str | None:
    """'v', 'a', 't' or None (categorical / other) from the first word of a modality name."""
    first = re.split(r"[_\-:. ]", name.lower(), maxsplit=1)[0]
    return next((kind for kind, words in KIND_WORDS.items() if first in words), None)


@dataclass
class ContentSpec:
    """Which modalities feed a model, in order, and how to rebuild their input for new items (JSON-able).

    Attributes:
        names, dims, dense: each modality's name, width and block (dense or sparse).
        vocabularies: label names of MultiLabel modalities, to remap new items' labels.
        standardise: name -> [mean, std] of each one-column Dense modality, filled by the first
            `build_content` call (the training content) and reused for new items.
    """

    names: list[str] = field(default_factory=list)
    dims: list[int] = field(default_factory=list)
    dense: list[bool] = field(default_factory=list)
    vocabularies: dict[str, list[str]] = field(default_factory=dict)
    standardise: dict[str, list[float]] = field(default_factory=dict)

    def views(self) -> list[tuple[int, int, bool]]:
        """(start, stop, dense) column range of each modality inside the dense or the sparse block."""
        out, offsets = [], {True: 0, False: 0}
        for dim, is_dense in zip(self.dims, self.dense):
            out.append((offsets[is_dense], offsets[is_dense] + dim, is_dense))
            offsets[is_dense] += dim
        return out

    @property
    def dense_dim(self) -> int:
        return sum(d for d, is_dense in zip(self.dims, self.dense) if is_dense)

    @property
    def sparse_dim(self) -> int:
        return sum(d for d, is_dense in zip(self.dims, self.dense) if not is_dense)


def select_modalities(features: dict, use: tuple[str, ...] | list[str] | None = None,
                      switches: dict[str, bool] | None = None) -> ContentSpec:
    """The spec of the numeric modalities to use.

    Args:
        features: name -> modality (a Dataset's item_features).
        use: names to use (default: every numeric modality).
        switches: {"v": has_v, "a": has_a, "t": has_t}; a False drops modalities of that kind.

    Raises:
        DataError: an unknown or non-numeric name in `use`, or a constant one-column modality named in `use`
            (by default such a modality is dropped with a log line: it carries no information).
    """
    switches = switches or {}
    if use is not None:
        missing = [n for n in use if n not in features]
        if missing:
            raise DataError(f"unknown modality {missing[0]!r} (have: {', '.join(features) or 'none'})",
                            field="modalities")
    spec = ContentSpec()
    for name in (use if use is not None else features):
        mod = features[name]
        if not isinstance(mod, (Dense, Sparse, MultiLabel)):
            if use is not None:
                raise DataError(f"modality {name!r} is {type(mod).__name__}: extract numeric features first "
                                "(coldstart features)", field="modalities")
            continue
        if not switches.get(modality_kind(name) or "", True):
            continue
        if isinstance(mod, Dense) and mod.dim == 1 and _column_stats(mod.values[:, 0], mod.mask)[1] == 0:
            why = f"one-column modality {name!r} has the same value in every row: it carries no information"
            if use is not None:
                raise DataError(f"{why}; leave it out of modalities", field="modalities")
            log.warning("%s; left out of the content", why)
            continue
        spec.names.append(name)
        spec.dims.append(mod.dim)
        spec.dense.append(isinstance(mod, Dense))
        if isinstance(mod, MultiLabel):
            spec.vocabularies[name] = list(mod.vocabulary)
    return spec


def _column_stats(values: np.ndarray, present: np.ndarray | None) -> tuple[float, float]:
    """(mean, population std) of a column over its present rows; (0, 0) when no row is present."""
    values = np.asarray(values, np.float64)
    if present is not None:
        values = values[np.asarray(present, bool)]
    if not len(values):
        return 0.0, 0.0
    mean = float(values.mean())
    # exactly 0 for a constant column (a sum of squared zeros), which a one-pass var() does not promise
    return mean, float(np.sqrt(np.mean((values - mean) ** 2)))


def _standardise_column(name: str, values: np.ndarray, present: np.ndarray | None, spec: ContentSpec) -> np.ndarray:
    """z-scores [N, 1] of a one-column modality with the spec's stats (fitted here on first use); missing rows 0."""
    if name not in spec.standardise:
        mean, std = _column_stats(values[:, 0], present)
        if std == 0:
            raise DataError("one-column modality has the same value in every row: it carries no information",
                            field=name)
        spec.standardise[name] = [mean, std]
    mean, std = spec.standardise[name]
    scaled = (np.asarray(values, np.float64) - mean) / std  # [N, 1]
    if present is not None:
        scaled[~np.asarray(present, bool)] = 0.0  # a missing value is the mean, as the meta preset does
    return scaled.astype(np.float32)


def _row_normalize_dense(values: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return (values / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _row_normalize_sparse(mat: sp.csr_matrix) -> sp.csr_matrix:
    mat = sp.csr_matrix(mat, dtype=np.float32, copy=True)
    norms = np.sqrt(np.asarray(mat.multiply(mat).sum(axis=1)).ravel())
    mat.data /= np.repeat(np.where(norms > 0, norms, 1.0), np.diff(mat.indptr)).astype(np.float32)
    return mat


def _as_matrix(name: str, value, spec: ContentSpec, pos: int, n_rows: int | None):
    """One modality of new items -> dense ndarray or CSR with the trained width."""
    if isinstance(value, MultiLabel) and name in spec.vocabularies:
        index = {lab: j for j, lab in enumerate(spec.vocabularies[name])}
        remap = np.array([index.get(lab, -1) for lab in value.vocabulary], dtype=np.int64)
        coo = value.values.tocoo()
        keep = remap[coo.col] >= 0  # labels never seen in training carry no weight
        value = sp.csr_matrix((coo.data[keep], (coo.row[keep], remap[coo.col[keep]])),
                              shape=(value.n_rows, spec.dims[pos]))
    elif isinstance(value, Dense):
        value = value.values if value.mask is None else np.where(value.mask[:, None], value.values, 0.0)
    elif isinstance(value, (Sparse, MultiLabel)):
        value = value.values
    elif isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    if sp.issparse(value):
        value = sp.csr_matrix(value)
    else:
        value = np.asarray(value, dtype=np.float32)
        if value.ndim == 1:
            value = value[None, :]
    if value.ndim != 2 or value.shape[1] != spec.dims[pos]:
        raise DataError(f"expected width {spec.dims[pos]}, got shape {tuple(value.shape)}", field=name)
    if n_rows is not None and value.shape[0] != n_rows:
        raise DataError(f"{value.shape[0]} rows, but other modalities have {n_rows}", field=name)
    data = value.data if sp.issparse(value) else value
    if not np.isfinite(data).all():
        raise DataError("NaN or inf in features", field=name)
    return value


def build_content(spec: ContentSpec, features: dict, n_rows: int | None = None) -> tuple[np.ndarray, sp.csr_matrix]:
    """(dense [N, Dd] float32, sparse CSR [N, Ds] float32): the normalised, concatenated input.

    Each modality is L2-normalised per row, except one-column Dense ones, which are z-scored with
    `spec.standardise` (fitted on these rows and stored there when the spec has none yet).

    Args:
        spec: from `select_modalities`; its `standardise` is filled in place on the first call.
        features: name -> Modality, array, CSR or tensor; a modality absent here is treated as missing (zeros).
        n_rows: expected number of rows (inferred from the first modality given when None).
    """
    given = [n for n in spec.names if n in features]
    if not given:
        raise DataError(f"no content given: expected some of {', '.join(spec.names)}", field="features")
    mats = {}
    for pos, name in enumerate(spec.names):
        if name in features:
            mats[name] = _as_matrix(name, features[name], spec, pos, n_rows)
            n_rows = mats[name].shape[0]
    dense_parts, sparse_parts = [], []
    for pos, name in enumerate(spec.names):
        mat = mats.get(name)
        if spec.dense[pos]:
            mat = np.zeros((n_rows, spec.dims[pos]), np.float32) if mat is None else mat
            mat = mat.toarray() if sp.issparse(mat) else mat
            if spec.dims[pos] == 1:
                raw = features.get(name)  # its Dense mask says which rows have a value
                present = np.zeros(n_rows, bool) if raw is None else raw.mask if isinstance(raw, Dense) else None
                dense_parts.append(_standardise_column(name, mat, present, spec))
            else:
                dense_parts.append(_row_normalize_dense(mat))
        else:
            mat = sp.csr_matrix((n_rows, spec.dims[pos]), dtype=np.float32) if mat is None else mat
            sparse_parts.append(_row_normalize_sparse(sp.csr_matrix(mat)))
    dense = np.concatenate(dense_parts, axis=1) if dense_parts else np.zeros((n_rows, 0), np.float32)
    sparse = sp.hstack(sparse_parts, format="csr", dtype=np.float32) if sparse_parts else \
        sp.csr_matrix((n_rows, 0), dtype=np.float32)
    return dense, sparse


def gather_csr_rows(indptr: Tensor, indices: Tensor, values: Tensor | None, rows: Tensor):
    """The non-zeros of some CSR rows, in row order, without a Python loop.

    Returns:
        (columns int64 [nnz'], offsets int64 [len(rows)] start of each row, values [nnz'] or None, counts [len(rows)]).
    """
    starts, counts = indptr[rows], indptr[rows + 1] - indptr[rows]
    offsets = torch.cumsum(counts, 0) - counts
    total = int(counts.sum())
    steps = torch.arange(total, device=starts.device)  # [nnz'] on the CSR's device (CUDA for a model trained there)
    pos = torch.repeat_interleave(starts - offsets, counts, output_size=total) + steps
    return indices[pos], offsets, None if values is None else values[pos], counts


class ContentEncoder(nn.Module):
    """f = W2 phi(W1 x + b1) + b2 with phi = leaky ReLU (CLCRec Eq. 11); x = [dense block | sparse block].

    With hidden = 0 it is the linear map f = W x + b (VBPR's E). Xavier-uniform initialisation over the full
    input width, as if W1 were one dense matrix.
    """

    def __init__(self, dense_dim: int, sparse_dim: int, hidden: int, out: int,
                 views: list[tuple[int, int, bool]] | None = None) -> None:
        """Args:
            dense_dim, sparse_dim: widths of the dense and the sparse input blocks.
            hidden: hidden width (0: a linear map).
            out: output width.
            views: optional (start, stop, dense) column ranges, one per modality. Each view then gets its own
                share of the hidden units, connected to its columns only (a multiview first layer, as CB2CF's
                per-view sub-networks); the output layer fuses them. Needs hidden >= the number of views.
        """
        super().__init__()
        fan_in = dense_dim + sparse_dim
        if fan_in == 0:
            raise DataError("no numeric item content to encode", field="modalities")
        width = out if hidden == 0 else hidden
        bound = (6.0 / (fan_in + width)) ** 0.5
        self.dense_weight = nn.Parameter(torch.empty(dense_dim, width).uniform_(-bound, bound))  # [Dd, H]
        self.sparse_weight = nn.Parameter(torch.empty(sparse_dim, width).uniform_(-bound, bound))  # [Ds, H]
        self.hidden_bias = nn.Parameter(torch.zeros(width))
        if views:
            if hidden < len(views):
                raise DataError(f"a multiview encoder needs hidden >= {len(views)} views, got {hidden}", field="hidden")
            dense_mask, sparse_mask = torch.zeros(dense_dim, width), torch.zeros(sparse_dim, width)
            cuts = torch.linspace(0, width, len(views) + 1).round().long().tolist()
            for v, (start, stop, is_dense) in enumerate(views):
                (dense_mask if is_dense else sparse_mask)[start:stop, cuts[v]:cuts[v + 1]] = 1.0
            with torch.no_grad():  # zero the cross-view weights once; the masks keep them at zero
                self.dense_weight.mul_(dense_mask)
                self.sparse_weight.mul_(sparse_mask)
            self.dense_weight.register_hook(lambda grad: grad * dense_mask)
            self.sparse_weight.register_hook(lambda grad: grad * sparse_mask)
        self.out = None
        if hidden:
            self.out = nn.Linear(hidden, out)
            nn.init.xavier_uniform_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, dense: Tensor, columns: Tensor, offsets: Tensor, weights: Tensor) -> Tensor:
        """float [n, out] from dense [n, Dd] and the sparse rows (columns, offsets, weights) of n items."""
        hidden = dense @ self.dense_weight + self.hidden_bias  # [n, H]
        if self.sparse_weight.shape[0]:
            hidden = hidden + F.embedding_bag(columns, self.sparse_weight, offsets, mode="sum",
                                              per_sample_weights=weights)  # [n, H]
        return hidden if self.out is None else self.out(F.leaky_relu(hidden))  # [n, out]
