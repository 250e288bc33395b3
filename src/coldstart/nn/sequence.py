"""Sequence modules of SASRec (Kang and McAuley, ICDM'18) and CMCLRec (Xu et al., SIGIR'24).

- `dropout`: inverted dropout drawing from a given generator (train.py's per-epoch generator), so that a
  resumed run replays its epoch exactly (nn.Dropout draws from the global generator, which a resume resets).
- `SelfAttention`: one attention head, CMCLRec Eqs. 5-7: sigma_k = M_k a_i (k = 1, 2, 3, no bias),
  alpha_ij = softmax_j(sigma_1^i . sigma_2^j / sqrt(d)), b_i = sum_j alpha_ij sigma_3^j; optionally causal
  (j <= i) and restricted to valid (non-padding) keys. This is also SASRec's attention (single head).
- `SASRecBlock`: SASRec's block: x + Attn(LN(x)), then x + FFN(LN(x)) (pre-norm residuals, ReLU FFN),
  padding rows zeroed after each sub-layer (the paper's timeline mask).
- `SASRecBackbone`: item + learnable position embeddings, a stack of causal blocks, a final LayerNorm; its
  `run(x, valid)` takes already embedded inputs, which is how CMCLRec feeds it simulated sequences (Eq. 13).
- `FeatureEncoder` (CMCLRec's Psi_f): an MLP from user content to `tokens` vectors of width d.
- `AutoEncoder` (E, D): flattened [L, d] -> p [d_p] -> [L, d].
- `BACKBONES`: the sequential models CMCLRec can wrap (name -> class); a new one registers here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coldstart.nn.content import ContentEncoder


def dropout(x: Tensor, p: float, generator: torch.Generator | None, training: bool) -> Tensor:
    """Inverted dropout with an explicit generator (identity in eval mode, with p = 0 or without a generator)."""
    if not training or p <= 0.0 or generator is None:
        return x
    keep = torch.rand(x.shape, generator=generator) >= p  # [*x.shape]
    return x * keep.to(x.dtype) / (1.0 - p)


def attention_mask(valid: Tensor, causal: bool) -> Tensor:
    """bool [B, L, L]: query i may attend to key j (j valid, and j <= i when causal; i -> i always).

    The diagonal is always allowed so that a padding query (no valid key before it under left padding) gets a
    finite softmax instead of NaN; its output is zeroed afterwards anyway.
    """
    length = valid.shape[1]
    allowed = valid[:, None, :].expand(-1, length, -1)  # [B, L, L]
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool).tril()[None]
    return allowed | torch.eye(length, dtype=torch.bool)[None]


class SelfAttention(nn.Module):
    """One self-attention head (CMCLRec Eqs. 5-7; SASRec's attention layer)."""

    def __init__(self, dim: int, causal: bool = False) -> None:
        super().__init__()
        self.m1 = nn.Linear(dim, dim, bias=False)  # M_1: queries sigma_1
        self.m2 = nn.Linear(dim, dim, bias=False)  # M_2: keys sigma_2
        self.m3 = nn.Linear(dim, dim, bias=False)  # M_3: values sigma_3
        self.causal = causal
        self.dim = dim

    def weights(self, a: Tensor, valid: Tensor | None = None) -> Tensor:
        """alpha [B, L, L] of Eq. 6 for inputs a [B, L, d] (valid: bool [B, L], default all)."""
        if valid is None:
            valid = torch.ones(a.shape[:2], dtype=torch.bool)
        logits = self.m1(a) @ self.m2(a).transpose(1, 2) / math.sqrt(self.dim)  # [B, L, L]
        logits = logits.masked_fill(~attention_mask(valid, self.causal), float("-inf"))
        return torch.softmax(logits, dim=-1)

    def forward(self, a: Tensor, valid: Tensor | None = None) -> Tensor:
        """b [B, L, d] = alpha @ (M_3 a) (Eq. 7)."""
        return self.weights(a, valid) @ self.m3(a)


class SASRecBlock(nn.Module):
    """x + Attn(LN(x)); x + FFN(LN(x)); padding rows zeroed (SASRec section III-B/C)."""

    def __init__(self, dim: int, dropout_rate: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, causal=True)
        self.ffn1, self.ffn2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.p = dropout_rate

    def forward(self, x: Tensor, valid: Tensor, generator: torch.Generator | None = None) -> Tensor:
        keep = valid[..., None].to(x.dtype)  # [B, L, 1]
        x = (x + dropout(self.attention(self.norm1(x), valid), self.p, generator, self.training)) * keep
        hidden = dropout(F.relu(self.ffn1(self.norm2(x))), self.p, generator, self.training)
        return (x + dropout(self.ffn2(hidden), self.p, generator, self.training)) * keep  # [B, L, d]


class SASRecBackbone(nn.Module):
    """SASRec: E[item] * sqrt(d) + P[position] -> causal blocks -> LayerNorm; items scored by E (shared).

    Item rows: 0 padding (kept at zero), 1..n_items the items, n_items + 1 the mask token of CMCLRec's views.
    """

    def __init__(self, n_items: int, dim: int, length: int, n_blocks: int, dropout_rate: float) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 2, dim, padding_idx=0)
        nn.init.xavier_uniform_(self.item_embedding.weight[1:].data)
        self.position_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(length, dim)))
        self.blocks = nn.ModuleList(SASRecBlock(dim, dropout_rate) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(dim)
        self.p = dropout_rate
        self.dim = dim

    def embed(self, items: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """[B, L, d]: scaled item embeddings plus positions (right-aligned), padding rows zero."""
        length = items.shape[1]
        x = self.item_embedding(items) * math.sqrt(self.dim) + self.position_embedding[-length:]  # [B, L, d]
        return dropout(x, self.p, generator, self.training) * (items != 0)[..., None].to(x.dtype)

    def run(self, x: Tensor, valid: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Outputs [B, L, d] of the blocks on embedded inputs x [B, L, d] (R(X) of CMCLRec Eq. 13)."""
        for block in self.blocks:
            x = block(x, valid, generator)
        return self.norm(x)

    def forward(self, items: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Outputs [B, L, d] for padded item sequences [B, L] (0 = padding)."""
        return self.run(self.embed(items, generator), items != 0, generator)

    def item_vectors(self, n_items: int) -> Tensor:
        """[I, d]: the output embeddings of items 0..n_items-1 (rows 1..n_items of the shared table)."""
        return self.item_embedding.weight[1:n_items + 1]


#: Sequential backbones CMCLRec can wrap: name -> class with embed / run / item_vectors (see SASRecBackbone).
BACKBONES: dict[str, type[nn.Module]] = {"sasrec": SASRecBackbone}


class FeatureEncoder(nn.Module):
    """CMCLRec's Psi_f: user content (dense block + sparse rows) -> `tokens` vectors of width d via an MLP."""

    def __init__(self, dense_dim: int, sparse_dim: int, hidden: int, tokens: int, dim: int) -> None:
        super().__init__()
        self.mlp = ContentEncoder(dense_dim, sparse_dim, hidden, tokens * dim)
        self.tokens, self.dim = tokens, dim

    def forward(self, dense: Tensor, columns: Tensor, offsets: Tensor, weights: Tensor) -> Tensor:
        return self.mlp(dense, columns, offsets, weights).view(-1, self.tokens, self.dim)  # [B, L, d]


class AutoEncoder(nn.Module):
    """E: [L, d] -> p [d_p] (flatten, linear, tanh); D: p -> [L, d] (linear). The pair (E_s, D_s) or (E_f, D_f)."""

    def __init__(self, tokens: int, dim: int, code: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(tokens * dim, code)
        self.decoder = nn.Linear(code, tokens * dim)
        self.tokens, self.dim = tokens, dim

    def encode(self, t: Tensor) -> Tensor:
        return torch.tanh(self.encoder(t.flatten(1)))  # [B, d_p]

    def decode(self, p: Tensor) -> Tensor:
        return self.decoder(p).view(-1, self.tokens, self.dim)  # [B, L, d]
