"""GIR's Feature Fusion Layer (Kim et al., KDD'24, section 5.2): C modality token sequences -> one item vector v.

Each modality arrives as (tokens float [B, T_c, d], mask bool [B, T_c]) with its aggregate ([CLS]) at token 0.

- LateFusion (5.2.1): concatenate the C aggregates [B, C * d], then 0, 1 or 2 fully connected layers to D
  (0 layers: D = C * d). It also returns the aggregates z^(c), which the alignment loss (Eq. 2) needs.
- EarlyFusion (5.2.2): every token of every modality, plus a learnable modality embedding, through one fusion
  Transformer; v is its [CLS] output or the mean of the real tokens, then a linear map to D when D != d.
- MixedFusion (5.2.3): the modalities in `early` fused early into one aggregate, which then joins the other
  modalities' aggregates in a late fusion.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from coldstart.errors import DataError
from coldstart.nn.transformer import TransformerStack, masked_mean

Tokens = tuple[Tensor, Tensor]


def fc_head(in_dim: int, out_dim: int, layers: int) -> nn.Module:
    """0 layers: identity (needs in_dim == out_dim); 1: Linear; 2: Linear -> GELU -> Linear (hidden = out_dim)."""
    if layers == 0:
        if in_dim != out_dim:
            raise DataError(f"late fusion without FC layers gives C * d = {in_dim}, not D = {out_dim}; "
                            f"set dim_E={in_dim} or fc_layers >= 1", field="fc_layers")
        return nn.Identity()
    if layers == 1:
        return nn.Linear(in_dim, out_dim)
    if layers == 2:
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    raise DataError(f"must be 0, 1 or 2, got {layers}", field="fc_layers")


class LateFusion(nn.Module):
    """v = FC([z^(1); ...; z^(C)]) with z^(c) = tokens_c[:, 0] (5.2.1).

    Args:
        n_modalities: C.
        d: token width.
        out_dim: D.
        fc_layers: 0, 1 or 2.
    """

    def __init__(self, n_modalities: int, d: int, out_dim: int, fc_layers: int) -> None:
        super().__init__()
        self.head = fc_head(n_modalities * d, out_dim, fc_layers)

    def forward(self, inputs: list[Tokens]) -> tuple[Tensor, Tensor]:
        """-> (v [B, D], z [B, C, d]: the per-modality aggregates, for the alignment loss)."""
        z = torch.stack([tokens[:, 0] for tokens, _ in inputs], 1)  # [B, C, d]
        return self.head(z.flatten(1)), z


class EarlyFusion(nn.Module):
    """v = pool(Transformer([CLS]; tokens_1 + m_1; ...; tokens_C + m_C)) (5.2.2), then Linear to D if D != d.

    Args:
        n_modalities: C (one learnable modality embedding m_c each).
        d: token width.
        out_dim: D.
        layers, heads, dropout: the fusion Transformer.
        pool: "cls" (the fusion [CLS] output) or "mean" (mean of the real tokens, [CLS] excluded).
    """

    def __init__(self, n_modalities: int, d: int, out_dim: int, layers: int, heads: int, dropout: float = 0.0,
                 pool: str = "cls") -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise DataError(f"must be cls or mean, got {pool!r}", field="pool")
        self.pool = pool
        self.modality = nn.Parameter(torch.randn(n_modalities, d) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.encoder = TransformerStack(d, layers, heads, dropout)
        self.head = nn.Identity() if out_dim == d else nn.Linear(d, out_dim)

    def forward(self, inputs: list[Tokens]) -> tuple[Tensor, None]:
        """-> (v [B, D], None)."""
        tokens = torch.cat([t + self.modality[c] for c, (t, _) in enumerate(inputs)], 1)  # [B, sum T_c, d]
        mask = torch.cat([m for _, m in inputs], 1)  # [B, sum T_c]
        b = len(tokens)
        tokens = torch.cat([self.cls.expand(b, -1, -1), tokens], 1)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask], 1)
        out = self.encoder(tokens, mask)  # [B, 1 + sum T_c, d]
        pooled = out[:, 0] if self.pool == "cls" else masked_mean(out[:, 1:], mask[:, 1:])  # [B, d]
        return self.head(pooled), None


class MixedFusion(nn.Module):
    """Modalities `early` (positions in the input list) fused early into one aggregate; late fusion over it and
    the other modalities' aggregates (5.2.3).

    Args:
        n_modalities: C.
        early: positions of the modalities fused early (at least 2, not all).
        d, out_dim, fc_layers: the late part.
        layers, heads, dropout, pool: the early part's fusion Transformer.
    """

    def __init__(self, n_modalities: int, early: list[int], d: int, out_dim: int, fc_layers: int, layers: int,
                 heads: int, dropout: float = 0.0, pool: str = "cls") -> None:
        super().__init__()
        if len(set(early)) < 2 or len(set(early)) >= n_modalities:
            raise DataError(f"mixed fusion fuses 2 .. C - 1 = {n_modalities - 1} modalities early, got "
                            f"{len(set(early))}", field="early_modalities")
        self.early = sorted(set(early))
        self.late_positions = [c for c in range(n_modalities) if c not in self.early]
        self.fuse_early = EarlyFusion(len(self.early), d, d, layers, heads, dropout, pool)
        self.fuse_late = LateFusion(len(self.late_positions) + 1, d, out_dim, fc_layers)

    def forward(self, inputs: list[Tokens]) -> tuple[Tensor, Tensor]:
        """-> (v [B, D], z [B, 1 + C_late, d]: the early aggregate first, then the late modalities' aggregates)."""
        fused, _ = self.fuse_early([inputs[c] for c in self.early])  # [B, d]
        mask = torch.ones(len(fused), 1, dtype=torch.bool, device=fused.device)
        return self.fuse_late([(fused[:, None], mask)] + [inputs[c] for c in self.late_positions])
