"""Batched, masked full-ranking evaluation (warm / cold / all), and the CIERec-style sampled ranking.

For each user batch: score all items, set items the user saw in train (and valid, when testing) and items
outside the scenario's candidates to -inf, take the top-K once for the largest K, and compute every metric
from that one hit matrix. Ranking is deterministic and ties carry no information: equal scores are ordered by
a keyed hash of (user, item) (`tie_rank`), so a model that gives many items one score ranks them in an
independent pseudo-random order for every user, never by item index (which follows the id order, roughly
popularity on MovieLens) and never by one order shared by all users (which would hand every user the same
random list and let luck look like skill).
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


_MASK31 = 0x7FFFFFFF  # tie ranks live in [0, 2**31): a product with a 32-bit constant stays below 2**63
_GOLDEN = 0x9E3779B9  # odd, so item -> item * _GOLDEN mod 2**31 is a bijection
_USER_SALT = 0x5BD1E995  # keeps user 0 away from _mix31's fixed point 0


def _mix31(x: Tensor) -> Tensor:
    """MurmurHash3's finaliser (shifts and odd multipliers) on 31 bits, in place on int64 x in [0, 2**31).

    Every step (x ^= x >> s; x = x * odd mod 2**31) is a bijection of [0, 2**31), so the mix is one too.
    One scratch tensor serves the three shifts: on [B, I] the cost is memory traffic, not arithmetic.
    """
    shifted = torch.empty_like(x)
    x.bitwise_xor_(torch.bitwise_right_shift(x, 16, out=shifted))
    x.mul_(0x85EBCA6B).bitwise_and_(_MASK31)
    x.bitwise_xor_(torch.bitwise_right_shift(x, 13, out=shifted))
    x.mul_(0xC2B2AE35).bitwise_and_(_MASK31)
    return x.bitwise_xor_(torch.bitwise_right_shift(x, 16, out=shifted))


def tie_rank(users: Tensor, items: Tensor) -> Tensor:
    """Tie-break rank of (user, item) pairs (lower ranks first among equal scores), a keyed hash.

    rank = mix31(mix31(user + salt) + item * golden mod 2**31). For one user the map item -> rank is a
    bijection of [0, 2**31), so distinct items never tie, and users get independent-looking orders. Exact int64
    arithmetic that stays below 2**63 (no overflow, no floats), so the ranks do not depend on the device.

    Args:
        users: int64 user indices, broadcastable against `items` (e.g. [B, 1]).
        items: int64 item indices (e.g. [1, I] or [B, N]).

    Returns:
        int64 ranks in [0, 2**31) of the broadcast shape.
    """
    user_key = _mix31((users.to(torch.int64) + _USER_SALT) & _MASK31)
    item_key = (items.to(torch.int64) & _MASK31).mul_(_GOLDEN).bitwise_and_(_MASK31)
    return _mix31((user_key + item_key).bitwise_and_(_MASK31))


def _ordered_int(s: Tensor) -> Tensor:
    """Order-preserving int32 view of float32 `s` (no NaN, no -0.0): a < b as floats iff as ints."""
    bits = s.view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negatives: flip the magnitude bits so larger |x| sorts lower


_CHUNK = 1 << 17  # entries of the [rows, I] int64 tie-rank block hashed at once: ~1 MiB, stays in cache


def _fill_cut_ties(s: Tensor, top: Tensor, top_vals: Tensor, rows: Tensor, users: Tensor) -> None:
    """In `rows`, put the tied items with the lowest tie ranks into the slots that hold the row's k-th score t.

    These rows' lists end inside a run of equal scores: r slots hold t but more than r items score t, so tie
    rank decides which are listed. A sorted topk put the t's in the last r slots; they are overwritten in place.
    The rows are hashed densely ([rows, I]) in cache-sized chunks: hashing only the tied entries (nonzero,
    gather, scatter) was measured slower, as its index traffic costs more than the hash it saves.

    Args:
        s: float32 [B, I] scores. top: int64 [B, k] item ids, written into. top_vals: [B, k] their scores,
            descending. rows: int64 [R] the rows to fix. users: int64 [B].
    """
    n_keep, n = top.shape[1], s.shape[1]
    items = torch.arange(n, device=s.device)[None, :]  # [1, I]
    step = max(1, _CHUNK // n)
    for start in range(0, len(rows), step):
        part = rows[start : start + step]  # [c]
        t = top_vals[part, -1:]  # [c, 1] each row's k-th score
        n_slots = (top_vals[part] == t).sum(1)  # [c] slots holding t: the trailing ones, top_vals is sorted
        rank = tie_rank(users[part, None], items)  # [c, I]
        rank.masked_fill_(s[part] != t, _MASK31 + 1)  # items not scoring t rank after every tied one
        most = int(n_slots.max())
        # [c, most] item ids, lowest rank first; a row uses its first n_slots, all tied (it has > n_slots ties).
        chosen = torch.topk(rank, most, dim=1, largest=False, sorted=True).indices
        j = torch.arange(most, device=s.device)[None, :]  # [1, most]
        use = j < n_slots[:, None]  # [c, most]
        slot = n_keep - n_slots[:, None] + j  # [c, most] target column among the trailing n_slots
        top[part[:, None].expand_as(slot)[use], slot[use]] = chosen[use]


def topk_deterministic(scores: Tensor, k: int, users: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Top-k item indices per row, highest score first, ties by `tie_rank` of (row's user, item).

    The ranking is the one of a single topk over int64 keys (order-preserving int32 view of the float32 score
    in the high bits, reversed tie rank in the low bits) over all [B, I] entries, but computed without hashing
    every entry, which costs ~10x a float topk:

    1. A float topk of k + 1 per row gives the k listed scores and t, the k-th. Every item scoring above t is
       listed whatever its tie rank; items scoring t share the remaining slots.
    2. Only where the (k + 1)-th score also equals t (the list ends inside a run of ties) does the choice among
       the items scoring t depend on tie rank: those rows alone are hashed ([R, I], in cache-sized chunks) and
       their tied items with the lowest ranks fill the slots holding t (`_fill_cut_ties`). Rows of a constant
       model, or with fewer than k finite scores (t = -inf), take this path: a whole-row hash, still ~4x
       cheaper than the packed-key topk over those rows.
    3. The k listed items are sorted by the packed (score, reversed tie rank) key, which orders the ties above
       t too: [B, k] work. Packed keys are distinct within a row, so the result is unique, as before.

    Returns exactly what the single packed-key topk returned (tests/test_metrics.py compares the two on
    tie-heavy random scores).

    Args:
        scores: float [B, I]; -inf marks excluded items; NaN is not allowed.
        k: list length (clipped to I).
        users: int64 [B], the user index of each row, which keys the tie-break. None uses user 0 for every
            row: one tie order shared by all rows, only right when the rows are not different users.

    Returns:
        (items int64 [B, k], valid bool [B, k]): valid is False where the slot holds an excluded (-inf) item.
    """
    n_rows, n = scores.shape
    device = scores.device
    if users is None:
        users = torch.zeros(n_rows, dtype=torch.int64, device=device)
    elif users.shape != (n_rows,):
        raise DataError(f"users has shape {tuple(users.shape)}, expected ({n_rows},): one user per row of scores",
                        field="users")
    users = users.to(device=device, dtype=torch.int64)
    if k < 0:
        raise DataError(f"k must be non-negative, got {k}", field="k")
    k = min(k, n)
    if k == 0:
        return torch.zeros((n_rows, 0), dtype=torch.int64, device=device), torch.zeros((n_rows, 0), dtype=torch.bool,
                                                                                        device=device)
    # Float comparisons (topk, ==, !=) already treat -0.0 and +0.0 as equal, so only the [B, k] values that
    # become keys need the + 0.0 below; a copy of all [B, I] scores is not needed.
    s = scores.float()  # [B, I]
    # One more than k, when there is one, tells whether the list ends inside a run of ties.
    vals, idx = torch.topk(s, min(k + 1, n), dim=1, sorted=True)  # [B, k(+1)] descending scores
    top, top_vals = idx[:, :k].clone(), vals[:, :k] + 0.0  # [B, k]; + 0.0 turns -0.0 into +0.0: one key
    if vals.shape[1] > k:
        rows = torch.nonzero(vals[:, k] == vals[:, k - 1]).squeeze(1)  # [R] rows cut inside a tie run
        if len(rows):
            _fill_cut_ties(s, top, top_vals, rows, users)
    # Order the listed items: score first, then the lower tie rank; keys are distinct within a row.
    tie = tie_rank(users[:, None], top)  # [B, k]
    keys = (_ordered_int(top_vals).to(torch.int64) << 32) | (_MASK31 - tie)  # [B, k]
    order = torch.sort(keys, dim=1, descending=True).indices  # [B, k]
    top = torch.gather(top, 1, order)  # [B, k]; the scores keep their order, so top_vals still lines up
    valid = top_vals > float("-inf")  # [B, k]
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
            top, valid = topk_deterministic(scores, ks[-1], users=torch.from_numpy(batch))
            relevant = _csr_rows_dense(rel, batch)  # [B, I]
            hits = torch.gather(relevant, 1, top) & valid  # [B, K]
            if hits.shape[1] < ks[-1]:  # fewer items than the largest cut-off: the missing slots are misses
                hits = torch.nn.functional.pad(hits, (0, ks[-1] - hits.shape[1]), value=False)
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


def random_expectation(split: Split, phase: str = "test", scenario: str = "cold", ks=(10, 20)) -> dict[str, float]:
    """Exact expected recall@k, precision@k and ndcg@k of a uniformly random ranking, averaged like `evaluate`.

    Per user with N candidates (the scenario's items not seen before `phase`), m of them relevant, R relevant
    items in all and n = min(k, N) slots: each slot holds a relevant item with probability m / N, so
    E[recall@k] = m n / (N R), E[precision@k] = m n / (N k), E[ndcg@k] = (m / N) sum_{r<n} 1/log2(r+2) / IDCG.
    This is the level a model that gives the candidates one constant score reaches in expectation.
    """
    seen = split.matrix("train") if phase == "valid" else split.matrix("train", "valid")
    rel, candidates = scenario_parts(split, phase, scenario)
    c = candidates.numpy().astype(np.float64)  # [I]
    n_rel = np.diff(rel.indptr).astype(np.float64)  # [U]
    users = n_rel > 0
    rel.data[:] = 1.0
    unseen_rel = rel - rel.multiply(seen)  # [U, I] relevant and not seen
    n_cand = (c.sum() - seen @ c)[users]  # [U'] candidates per user
    m = (unseen_rel @ c)[users]
    r = n_rel[users]
    cum_disc = np.cumsum(1.0 / np.log2(np.arange(2, max(ks) + 2)))  # [K]
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n_cand > 0, m / n_cand, 0.0)  # probability that one slot holds a relevant item
    for k in sorted(set(ks)):
        n = np.minimum(k, n_cand).astype(np.int64)
        out[f"recall@{k}"] = float(np.mean(share * n / r))
        out[f"precision@{k}"] = float(np.mean(share * n / k))
        dcg = np.where(n > 0, cum_disc[np.maximum(n, 1) - 1], 0.0)
        out[f"ndcg@{k}"] = float(np.mean(share * dcg / cum_disc[np.minimum(r, k).astype(np.int64) - 1]))
    return out


def evaluate(model, split: Split, phase: str = "test", **kwargs) -> EvalResult:
    """Full-ranking evaluation of a fitted model; see evaluate_scores.

    Scores come from `model.rank_scores(users)` when the model has it (its scores plus the documented fallback
    for users it cannot represent, e.g. popularity for cold users), else from `model.score(users)`; both map
    user indices [B] to scores [B, I].
    """
    if hasattr(model, "eval"):
        model.eval()
    score = getattr(model, "rank_scores", None) or model.score
    return evaluate_scores(lambda users: score(users), split, phase, **kwargs)


def evaluate_sampled(score_fn: ScoreFn, split: Split, phase: str = "test", scenarios=SCENARIOS, ks=(10, 20),
                     n_negatives: int = 500, seed: int = 0, batch_size: int = 1024) -> EvalResult:
    """Sampled ranking (CIERec protocol): each held-out positive is ranked among `n_negatives` items drawn
    uniformly (with replacement) from the scenario's candidates the user never interacted with in any phase.

    Metrics are hit_rate@k, ndcg@k (1 / log2(rank + 2) when rank < k) and mrr, averaged over positives.
    Ties are broken as in full ranking: a negative with an equal score ranks first when its `tie_rank` for
    this user is lower.
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
            u = torch.from_numpy(users[sl])[:, None]  # [B, 1]
            ahead = (s_neg > s_pos) | ((s_neg == s_pos) & (tie_rank(u, n) < tie_rank(u, p[:, None])))  # [B, N]
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
