"""Losses on similarity logits. Every one is computed in log space, so large logits cannot overflow."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(logits: Tensor) -> Tensor:
    """InfoNCE with the positive in column 0: mean over rows of -ln(exp(l_0) / sum_k exp(l_k)).

    Args:
        logits: float [B, 1 + K], already divided by the temperature.

    Returns:
        Scalar loss. log-sum-exp keeps it finite where exp(l) would overflow (official CLCRec: exp, then log).
    """
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def bpr(pos: Tensor, neg: Tensor) -> Tensor:
    """Bayesian personalised ranking: mean of -ln sigmoid(pos - neg); pos [B, 1] or [B], neg [B, K] or [B]."""
    return F.softplus(neg - pos).mean()
