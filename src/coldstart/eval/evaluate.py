"""Batched, masked full-ranking evaluation (warm / cold / all), and the CIERec-style sampled ranking.

For each user batch: score all items, set items the user saw in train (and valid, when testing) and items
outside the scenario's candidates to -inf, take the top-K once for the largest K, and compute every metric
from that one hit matrix. Ranking is deterministic: equal scores are ordered by lower item index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import Tensor

from coldstart.data.sampling import positive_keys, sample_negatives
from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.eval.metrics import METRICS, compute_all

SCENARIOS = ("warm", "cold", "all")
ScoreFn = Callable[[Tensor], Tensor]  # user indices [B] -> scores [B, I]


@dataclass
class EvalResult:
    """Mean metrics per scenario and the per-user values behind them.

    Attributes:
        metrics: {scenario: {"recall@10": mean, ...}}; scenarios without relevant users are absent.
        per_user: one row per (scenario, user) with every metric, for significance tests.
        n_users: {scenario: number of users evaluated}.
        sampled: True for sampled ranking (metrics are then per test positive, not per user).
    """

    metrics: dict[str, dict[str, float]]
    per_user: pd.DataFrame
    n_users: dict[str, int]
    sampled: bool = False


_TIE_ORDERS: dict[int, Tensor] = {}


def tie_order(n_items: int) -> Tensor:
    """int64 [I]: the tie-break rank of each item (lower ranks first), a fixed permutation seeded with 0."""
    if n_items not in _TIE_ORDERS:
        _TIE_ORDERS[n_items] = torch.randperm(n_items, generator=torch.Generator().manual_seed(0))
    return _TIE_ORDERS[n_items]


def topk_deterministic(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k item indices per row, highest score first, ties by `tie_order`.

    Float32 scores map to order-preserving int32 keys; the key (high 32 bits) and the reversed tie rank
    (low 32 bits) form one int64, so a single topk gives an exact, deterministic ranking.

    Args:
        scores: float [B, I]; -inf marks excluded items; NaN is not allowed.
        k: list length (clipped to I).

    Returns:
        (items int64 [B, k], valid bool [B, k]): valid is False where the slot holds an excluded (-inf) item.
    """
    k = min(k, scores.shape[1])
    s = scores.float() + 0.0  # + 0.0 turns -0.0 into +0.0 so both rank equal
    bits = s.view(torch.int32)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # [B, I] int32, same order as the floats
    n = scores.shape[1]
    tie = tie_order(n).to(scores.device)
    keys = (ordered.to(torch.int64) << 32) | (0xFFFFFFFF - tie)  # [B, I]
    top = torch.topk(keys, k, dim=1, sorted=True).indices  # [B, k]
    valid = torch.gather(s, 1, top) > float("-inf")
    return top, valid


def _csr_rows_dense(mat: sp.csr_matrix, rows: np.ndarray) -> Tensor:
    """Dense bool [len(rows), I] of a CSR's rows."""
    sub = mat[rows]
    out = torch.zeros(sub.shape, dtype=torch.bool)
    r = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
    out[torch.from_numpy(r), torch.from_numpy(sub.indices.astype(np.int64))] = True
    return out


def scenario_parts(split: Split, phase: str, scenario: str) -> tuple[sp.csr_matrix, Tensor]:
    """The relevant matrix (CSR [U, I]) and candidate item mask (bool [I]) of one phase and scenario."""
    if scenario not in SCENARIOS:
        raise DataError(f"unknown scenario {scenario!r} (use {', '.join(SCENARIOS)})", field="scenario")
    part = split.part(phase)
    rows = np.ones(len(part), bool) if scenario == "all" else (part.cold == (scenario == "cold"))
    rel = sp.csr_matrix((np.ones(int(rows.sum()), np.float32), (part.users[rows], part.items[rows])),
                        shape=(split.n_users, split.n_items))
    rel.sum_duplicates()
    if split.cold_kind == "item" and scenario != "all":
        warm = torch.from_numpy(split.train_item_mask())
        candidates = warm if scenario == "warm" else ~warm
    else:
        candidates = torch.ones(split.n_items, dtype=torch.bool)
    return rel, candidates


def evaluate_scores(score_fn: ScoreFn, split: Split, phase: str = "test", scenarios=SCENARIOS,
                    ks=(10, 20), metrics: list[str] | None = None, batch_size: int = 2048,
                    progress: Callable[[int], None] | None = None) -> EvalResult:
    """Full-ranking evaluation of any scoring function.

    Args:
        score_fn: user indices (int64 [B]) -> scores (float [B, I]) over every item.
        split: the split.
        phase: "valid" or "test"; when testing, items seen in valid are masked too.
        scenarios: any of "warm", "cold", "all".
        ks: cut-offs.
        metrics: names from METRICS (default: all).
        batch_size: users per batch.
        progress: called with the number of users done after each batch.
    """
    if phase not in ("valid", "test"):
        raise DataError(f"phase must be valid or test, got {phase!r}", field="phase")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise DataError("cut-offs must be positive integers", field="k")
    names = list(METRICS) if metrics is None else list(metrics)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise DataError(f"unknown metric {unknown[0]!r} (use {', '.join(METRICS)})", field="metrics")
    seen = split.matrix("train") if phase == "valid" else split.matrix("train", "valid")
    out_metrics, out_users, frames = {}, {}, []
    for scenario in scenarios:
        rel, candidates = scenario_parts(split, phase, scenario)
        n_rel_all = np.diff(rel.indptr)
        users = np.flatnonzero(n_rel_all > 0)
        if len(users) == 0:
            continue
        per_user = {f"{m}@{k}": [] for m in names for k in ks}
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            with torch.no_grad():
                scores = score_fn(torch.from_numpy(batch)).float().clone()  # [B, I]
            if scores.shape != (len(batch), split.n_items):
                raise DataError(f"scores have shape {tuple(scores.shape)}, expected ({len(batch)}, {split.n_items})",
                                field="scores")
            if torch.isnan(scores).any():
                raise DataError("scores contain NaN", field="scores")
            scores[:, ~candidates] = float("-inf")
            scores[_csr_rows_dense(seen, batch)] = float("-inf")
            top, valid = topk_deterministic(scores, ks[-1])
            relevant = _csr_rows_dense(rel, batch)  # [B, I]
            hits = torch.gather(relevant, 1, top) & valid  # [B, K]
            n_rel = torch.from_numpy(n_rel_all[batch]).double()
            for key, values in compute_all(hits, n_rel, ks, names).items():
                per_user[key].append(values)
            if progress is not None:
                progress(len(batch))
        columns = {key: torch.cat(v).numpy() for key, v in per_user.items()}
        frame = pd.DataFrame({"scenario": scenario, "user": split.user_ids[users], **columns})
        frames.append(frame)
        out_metrics[scenario] = {key: float(np.mean(v)) for key, v in columns.items()}
        out_users[scenario] = int(len(users))
    per_user_frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return EvalResult(out_metrics, per_user_frame, out_users)


def evaluate(model, split: Split, phase: str = "test", **kwargs) -> EvalResult:
    """Full-ranking evaluation of a fitted model (anything with `score(users) -> [B, I]`); see evaluate_scores."""
    if hasattr(model, "eval"):
        model.eval()
    return evaluate_scores(lambda users: model.score(users), split, phase, **kwargs)


def evaluate_sampled(score_fn: ScoreFn, split: Split, phase: str = "test", scenarios=SCENARIOS, ks=(10, 20),
                     n_negatives: int = 500, seed: int = 0, batch_size: int = 1024) -> EvalResult:
    """Sampled ranking (CIERec protocol): each held-out positive is ranked among `n_negatives` items drawn
    uniformly (with replacement) from the scenario's candidates the user never interacted with in any phase.

    Metrics are hit_rate@k, ndcg@k (1 / log2(rank + 2) when rank < k) and mrr, averaged over positives.
    Ties are broken as in full ranking: a negative with an equal score ranks first when its tie rank is lower.
    The result has sampled=True; reports must label these numbers as sampled.
    """
    rng = np.random.default_rng(seed)
    every = split.matrix("train", "valid", "test").tocoo()
    keys = positive_keys(every.row, every.col, split.n_items)
    ks = sorted({int(k) for k in ks})
    out_metrics, out_users, frames = {}, {}, []
    for scenario in scenarios:
        rel, candidates = scenario_parts(split, phase, scenario)
        coo = rel.tocoo()
        if coo.nnz == 0:
            continue
        pool = np.flatnonzero(candidates.numpy())
        users, pos = coo.row.astype(np.int64), coo.col.astype(np.int64)
        negs = sample_negatives(users, n_negatives, split.n_items, keys, rng, candidates=pool)  # [P, N]
        ranks = np.empty(len(users), dtype=np.int64)
        for start in range(0, len(users), batch_size):
            sl = slice(start, start + batch_size)
            with torch.no_grad():
                scores = score_fn(torch.from_numpy(users[sl])).float()  # [B, I]
            p = torch.from_numpy(pos[sl])
            n = torch.from_numpy(negs[sl])
            s_pos = scores.gather(1, p[:, None])  # [B, 1]
            s_neg = scores.gather(1, n)  # [B, N]
            tie = tie_order(split.n_items)
            ahead = (s_neg > s_pos) | ((s_neg == s_pos) & (tie[n] < tie[p][:, None]))
            ranks[sl] = ahead.sum(1).numpy()
        columns = {"mrr": 1.0 / (ranks + 1.0)}
        for k in ks:
            columns[f"hit_rate@{k}"] = (ranks < k).astype(np.float64)
            columns[f"ndcg@{k}"] = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
        frames.append(pd.DataFrame({"scenario": scenario, "user": split.user_ids[users],
                                    "item": split.item_ids[pos], **columns}))
        out_metrics[scenario] = {key: float(np.mean(v)) for key, v in columns.items()}
        out_users[scenario] = int(len(np.unique(users)))
    return EvalResult(out_metrics, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
                      out_users, sampled=True)


def scores_from_recommendations(recs: pd.DataFrame, split: Split, source: str = "recommendations") -> ScoreFn:
    """A score function from a recommendation list (columns user, item, score; raw ids).

    Items not listed for a user score -inf (never recommended). Unknown ids or a repeated (user, item)
    raise DataError naming the line.
    """
    users = pd.Index(split.user_ids).get_indexer(recs["user"].astype(str))
    items = pd.Index(split.item_ids).get_indexer(recs["item"].astype(str))
    for name, idx in (("user", users), ("item", items)):
        if (idx < 0).any():
            row = int(np.argmax(idx < 0))
            raise DataError(f"unknown {name} id {recs[name].iloc[row]} (not in the split)", path=source,
                            line=row + 2, field=name)
    dup = pd.Series(users * split.n_items + items).duplicated().to_numpy()
    if dup.any():
        row = int(np.argmax(dup))
        raise DataError("repeated (user, item) pair", path=source, line=row + 2)
    score = recs["score"].to_numpy(np.float32)
    if not np.isfinite(score).all():
        row = int(np.argmax(~np.isfinite(score)))
        raise DataError("score must be a finite number", path=source, line=row + 2, field="score")
    mat = sp.csr_matrix((score, (users, items)), shape=(split.n_users, split.n_items))
    listed = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=mat.shape)

    def score_fn(batch: Tensor) -> Tensor:
        rows = batch.numpy()
        out = torch.full((len(rows), split.n_items), float("-inf"))
        present = _csr_rows_dense(listed, rows)
        out[present] = torch.from_numpy(mat[rows].toarray()).float()[present]
        return out

    return score_fn
