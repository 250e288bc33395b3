"""Ranking metrics as pure tensor functions of a hit matrix.

Every function takes `hits` (bool [U, K]: hits[u, r] is True when the item at rank r of user u's list is
relevant), `n_relevant` (float [U], > 0) and a cut-off k <= K, and returns one value per user (float [U]).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def _discounts(k: int, device) -> Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float64))  # [k]


def recall(hits: Tensor, n_relevant: Tensor, k: int) -> Tensor:
    """Relevant items in the top k over all relevant items."""
    return hits[:, :k].sum(1).double() / n_relevant


def precision(hits: Tensor, n_relevant: Tensor, k: int) -> Tensor:
    """Relevant items in the top k over k."""
    return hits[:, :k].sum(1).double() / k


def hit_rate(hits: Tensor, n_relevant: Tensor, k: int) -> Tensor:
    """1 if any relevant item is in the top k."""
    return hits[:, :k].any(1).double()


def ndcg(hits: Tensor, n_relevant: Tensor, k: int) -> Tensor:
    """DCG of the top k (gain 1 / log2(rank + 2)) over the ideal DCG of min(|relevant|, k) hits."""
    disc = _discounts(k, hits.device)  # [k]
    dcg = (hits[:, :k].double() * disc).sum(1)
    ideal_cum = torch.cumsum(disc, 0)  # [k]: ideal DCG with 1..k relevant items
    n_ideal = torch.clamp(n_relevant.long(), max=k) - 1
    return dcg / ideal_cum[n_ideal]


def mrr(hits: Tensor, n_relevant: Tensor, k: int) -> Tensor:
    """Reciprocal rank of the first relevant item in the top k (0 if none)."""
    top = hits[:, :k]
    first = top.double().argmax(1)  # first True (argmax returns the first maximum)
    return torch.where(top.any(1), 1.0 / (first.double() + 1.0), torch.zeros_like(first, dtype=torch.float64))


def average_precision(hits: Tensor, n_relevant: Tensor, k: int) -> Tensor:
    """AP@k: the mean of precision@r over the ranks r <= k of the hits, divided by min(|relevant|, k)."""
    top = hits[:, :k].double()
    ranks = torch.arange(1, k + 1, device=hits.device, dtype=torch.float64)
    prec_at_r = torch.cumsum(top, 1) / ranks  # [U, k]
    return (prec_at_r * top).sum(1) / torch.clamp(n_relevant, max=k)


METRICS: dict[str, Callable[[Tensor, Tensor, int], Tensor]] = {
    "recall": recall,
    "ndcg": ndcg,
    "precision": precision,
    "hit_rate": hit_rate,
    "mrr": mrr,
    "map": average_precision,
}


def compute_all(hits: Tensor, n_relevant: Tensor, ks: list[int], names: list[str] | None = None) -> dict[str, Tensor]:
    """Every metric at every k from one hit matrix: {"recall@10": float [U], ...}."""
    names = list(METRICS) if names is None else names
    n_relevant = n_relevant.double()
    return {f"{name}@{k}": METRICS[name](hits, n_relevant, k) for name in names for k in ks}
