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


_CHUNK = 1 << 17  # entries of the [rows, I] tie-rank block hashed at once: ~0.5 MiB of uint32, stays in cache
_MUL1, _MUL2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)  # _mix31's multipliers, as uint32 for NumPy


def _item_keys(item_ids: Tensor) -> np.ndarray:
    """uint32 [n]: the item half of `tie_rank` (item * golden mod 2**31), computed once per ranking."""
    return ((item_ids.to(torch.int64) & _MASK31) * _GOLDEN & _MASK31).cpu().numpy().astype(np.uint32)


def _tie_rank_block(users: Tensor, item_keys: np.ndarray) -> Tensor:
    """`tie_rank(users[:, None], items[None, :])` as int32 [c, n], from the items' `_item_keys`.

    The same arithmetic on uint32 in NumPy: every value stays below 2**31, a uint32 product wraps mod 2**32 and
    the mask then reduces it mod 2**31, exactly what the int64 version computes. NumPy's uint32 shifts and
    products are SIMD; torch's int64 shifts are not (measured 5-10x slower), and this block is the whole cost of
    ranking a row whose list ends inside a run of ties (a constant model, pop on cold items).
    """
    user_key = _mix31((users.to(torch.int64).cpu() + _USER_SALT) & _MASK31).numpy().astype(np.uint32)  # [c]
    x = np.add(user_key[:, None], item_keys[None, :], dtype=np.uint32)  # [c, n], < 2**32: no wrap
    np.bitwise_and(x, np.uint32(_MASK31), out=x)
    tmp = np.empty_like(x)
    for shift, mul in ((16, _MUL1), (13, _MUL2)):
        np.bitwise_xor(x, np.right_shift(x, np.uint32(shift), out=tmp), out=x)
        np.multiply(x, mul, out=x)
        np.bitwise_and(x, np.uint32(_MASK31), out=x)
    np.bitwise_xor(x, np.right_shift(x, np.uint32(16), out=tmp), out=x)
    return torch.from_numpy(x.view(np.int32))


def _fill_cut_ties(s: Tensor, top: Tensor, top_vals: Tensor, rows: Tensor, users: Tensor,
                   item_keys: np.ndarray) -> None:
    """In `rows`, put the tied items with the lowest tie ranks into the slots that hold the row's k-th score t.

    These rows' lists end inside a run of equal scores: r slots hold t but more than r items score t, so tie
    rank decides which are listed. A sorted topk put the t's in the last r slots; they are overwritten in place.
    The rows are hashed densely ([rows, I]) in cache-sized chunks: hashing only the tied entries (nonzero,
    gather, scatter) was measured slower, as its index traffic costs more than the hash it saves.

    Args:
        s: float32 [B, I] scores. top: int64 [B, k] column indices, written into. top_vals: [B, k] their
            scores, descending. rows: int64 [R] the rows to fix. users: int64 [B]. item_keys: uint32 [I], the
            `_item_keys` of the columns' item ids.
    """
    n_keep, n = top.shape[1], s.shape[1]
    step = max(1, _CHUNK // n)
    for start in range(0, len(rows), step):
        part = rows[start : start + step]  # [c]
        t = top_vals[part, -1:]  # [c, 1] each row's k-th score
        n_slots = (top_vals[part] == t).sum(1)  # [c] slots holding t: the trailing ones, top_vals is sorted
        rank = _tie_rank_block(users[part], item_keys).to(s.device)  # [c, I] int32
        # Items not scoring t rank after every tied one. _MASK31 itself is a possible rank, but of one item only,
        # and a cut row has more tied items than slots, so that item is never needed: the first n_slots are right.
        rank.masked_fill_(s[part] != t, _MASK31)
        most = int(n_slots.max())
        # [c, most] column indices, lowest rank first; a row uses its first n_slots, all tied.
        chosen = torch.topk(rank, most, dim=1, largest=False, sorted=True).indices
        j = torch.arange(most, device=s.device)[None, :]  # [1, most]
        use = j < n_slots[:, None]  # [c, most]
        slot = n_keep - n_slots[:, None] + j  # [c, most] target column among the trailing n_slots
        top[part[:, None].expand_as(slot)[use], slot[use]] = chosen[use]


def topk_deterministic(scores: Tensor, k: int, users: Tensor | None = None,
                       item_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
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
        item_ids: int64 [I], the item index of each column, which keys the tie-break (default 0..I-1). Ranking
            a subset of the catalogue's columns with their own ids gives the order the full ranking gives them,
            which is what lets the evaluator rank candidate groups and item chunks separately and merge them.

    Returns:
        (indices int64 [B, k], valid bool [B, k]): column indices into `scores` (item ids when item_ids is
        None); valid is False where the slot holds an excluded (-inf) item.
    """
    n_rows, n = scores.shape
    device = scores.device
    if users is None:
        users = torch.zeros(n_rows, dtype=torch.int64, device=device)
    elif users.shape != (n_rows,):
        raise DataError(f"users has shape {tuple(users.shape)}, expected ({n_rows},): one user per row of scores",
                        field="users")
    users = users.to(device=device, dtype=torch.int64)
    if item_ids is None:
        item_ids = torch.arange(n, device=device)
    elif item_ids.shape != (n,):
        raise DataError(f"item_ids has shape {tuple(item_ids.shape)}, expected ({n},)", field="item_ids")
    item_ids = item_ids.to(device=device, dtype=torch.int64)
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
            _fill_cut_ties(s, top, top_vals, rows, users, _item_keys(item_ids))
    # Order the listed items: score first, then the lower tie rank; keys are distinct within a row.
    keys = _order_keys(top_vals, users, item_ids[top])  # [B, k]
    order = torch.sort(keys, dim=1, descending=True).indices  # [B, k]
    top = torch.gather(top, 1, order)  # [B, k]; the scores keep their order, so top_vals still lines up
    valid = top_vals > float("-inf")  # [B, k]
    return top, valid


def _order_keys(values: Tensor, users: Tensor, items: Tensor) -> Tensor:
    """int64 [B, k] keys whose descending order is the ranking: score (high bits), then lower tie rank.

    values: float32 [B, k] with -0.0 already turned into +0.0; users int64 [B]; items int64 [B, k] item ids.
    """
    tie = tie_rank(users[:, None], items)  # [B, k]
    return (_ordered_int(values).to(torch.int64) << 32) | (_MASK31 - tie)


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
        warm = torch.from_numpy(split.warm_item_mask())
        candidates = warm if scenario == "warm" else ~warm
    else:
        candidates = torch.ones(split.n_items, dtype=torch.bool)
    return rel, candidates


#: Entries ([users x items]) of one block of full ranking. Scores (float32), their reordered copy and the ranking's
#: temporaries cost about 12-16 bytes per entry, so a block stays near 100-130 MB whatever the catalogue size:
#: users per batch = MAX_ENTRIES // items, and a catalogue wider than that is ranked in item chunks.
MAX_ENTRIES = 1 << 23


@dataclass
class _Scenario:
    """One scenario of a phase: relevant pairs as sorted keys (user * I + item), its users, candidate groups."""

    name: str
    keys: Tensor  # int64 [nnz] sorted
    n_rel: np.ndarray  # [U] relevant items per user (all phases' masking aside, as the metrics define it)
    users: np.ndarray  # [U'] users with a relevant item, ascending
    groups: list[int]  # indices of the candidate groups whose union is this scenario's candidates


def _scenario_plan(split: Split, phase: str, scenarios) -> tuple[list[_Scenario], list[np.ndarray]]:
    """The scenarios that have users, and the disjoint candidate groups their candidate sets are unions of.

    Items are grouped by which scenarios list them as candidates (for item protocols: warm items, cold items;
    "all" is their union; for cold_user every scenario ranks every item: one group). Each group is ranked once
    per user and the scenarios' lists are merged from the groups' lists, which is exact because the ranking is a
    total order (score, then tie rank) and the top k of a union is the top k of the groups' top k.
    """
    plans, masks = [], []
    for scenario in scenarios:
        rel, candidates = scenario_parts(split, phase, scenario)
        rel.sort_indices()
        n_rel = np.diff(rel.indptr)
        users = np.flatnonzero(n_rel > 0)
        if len(users) == 0:
            continue
        rows = np.repeat(np.arange(split.n_users, dtype=np.int64), n_rel)
        keys = torch.from_numpy(rows * split.n_items + rel.indices.astype(np.int64))  # [nnz] sorted: CSR order
        plans.append(_Scenario(scenario, keys, n_rel, users, []))
        masks.append(candidates.numpy())
    if not plans:
        return [], []
    signature = np.zeros(split.n_items, dtype=np.int64)  # [I] bit j set: candidate of plans[j]
    for j, mask in enumerate(masks):
        signature |= mask.astype(np.int64) << j
    groups = []
    for sig in np.unique(signature[signature > 0]):
        groups.append(np.flatnonzero(signature == sig))
        for j, plan in enumerate(plans):
            if (int(sig) >> j) & 1:
                plan.groups.append(len(groups) - 1)
    return plans, groups


def _merge_top(parts: list[tuple[Tensor, Tensor, Tensor]], k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The top k of several ranked lists of the same rows: (items, values, keys), each [R, k_i], merged by key."""
    if len(parts) == 1:
        return parts[0]
    items, values, keys = (torch.cat([p[j] for p in parts], dim=1) for j in range(3))  # [R, sum k_i]
    keys, order = torch.topk(keys, min(k, keys.shape[1]), dim=1, sorted=True)  # keys are distinct per row
    return torch.gather(items, 1, order), torch.gather(values, 1, order), keys


def _rank_columns(block: Tensor, k: int, users: Tensor, item_ids: Tensor, chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top k of every row of `block` ([R, n] scores of the items `item_ids`), in item chunks of `chunk` columns.

    Returns:
        (items int64 [R, k'], values float32 [R, k'], keys int64 [R, k']), k' = min(k, n), best first.
    """
    parts = []
    for c0 in range(0, block.shape[1], chunk):
        cols, ids = block[:, c0 : c0 + chunk], item_ids[c0 : c0 + chunk]
        top, _ = topk_deterministic(cols, k, users, ids)  # [R, k_c] column indices, ranked
        values = torch.gather(cols, 1, top) + 0.0  # + 0.0: -0.0 and +0.0 are one key, as in topk_deterministic
        items = ids[top]
        parts.append((items, values, _order_keys(values, users, items)))
    return _merge_top(parts, k)


def evaluate_scores(score_fn: ScoreFn, split: Split, phase: str = "test", scenarios=SCENARIOS,
                    ks=(10, 20), metrics: list[str] | None = None, batch_size: int = 2048,
                    progress: Callable[[int], None] | None = None, max_entries: int = MAX_ENTRIES,
                    item_chunk: int | None = None) -> EvalResult:
    """Full-ranking evaluation of any scoring function, every scenario from one scoring pass.

    Users are taken in batches (the users relevant in any requested scenario, ascending); each batch is scored
    once, its seen items masked once, each candidate group (`_scenario_plan`) ranked once, and every scenario's
    list merged from its groups. Per user this is exactly the ranking of scoring, masking and ranking each
    scenario separately (tests/test_scale.py checks both), at the cost of one pass over the catalogue instead
    of one per scenario, and with no dense [B, I] relevance or seen matrices.

    Args:
        score_fn: user indices (int64 [B]) -> scores (float [B, I]) over every item.
        split: the split.
        phase: "valid" or "test"; when testing, items seen in valid are masked too.
        scenarios: any of "warm", "cold", "all".
        ks: cut-offs.
        metrics: names from METRICS (default: all).
        batch_size: most users per batch (fewer when batch x items would exceed `max_entries`).
        progress: called with the number of user-rankings (users x scenarios) done after each batch.
        max_entries: users x items of one block; bounds memory (about 16 bytes per entry).
        item_chunk: columns ranked at once (default: max_entries // users per batch, i.e. whole groups unless
            a single user's row exceeds max_entries).
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
    plans, groups = _scenario_plan(split, phase, list(dict.fromkeys(scenarios)))
    if not plans:
        return EvalResult({}, pd.DataFrame(), {})
    n_items, top_k = split.n_items, ks[-1]
    # The largest group is ranked in place over the whole row (the other items set to -inf, a broadcast fill);
    # the others are copied out first (index_select): together one pass over the catalogue, no reordering copy.
    big = max(range(len(groups)), key=lambda j: len(groups[j]))
    outside_big = torch.ones(n_items, dtype=torch.bool)
    outside_big[torch.from_numpy(groups[big])] = False
    mask_big = bool(outside_big.any())
    group_ids = [torch.from_numpy(g.astype(np.int64)) for g in groups]
    all_ids = torch.arange(n_items)
    union = np.unique(np.concatenate([p.users for p in plans]))  # [U*] ascending
    member = {p.name: np.isin(union, p.users) for p in plans}  # [U*] bool per scenario
    rows_per_batch = max(1, min(batch_size, max_entries // max(n_items, 1)))
    chunk = item_chunk or max(top_k + 1, max_entries // rows_per_batch)
    per_user = {p.name: {f"{m}@{k}": [] for m in names for k in ks} for p in plans}
    for start in range(0, len(union), rows_per_batch):
        batch = union[start : start + rows_per_batch]
        users_t = torch.from_numpy(batch)
        with torch.no_grad():
            raw = score_fn(users_t)
        if raw.shape != (len(batch), n_items):
            raise DataError(f"scores have shape {tuple(raw.shape)}, expected ({len(batch)}, {n_items})",
                            field="scores")
        raw = raw.float()
        if torch.isnan(raw).any():
            raise DataError("scores contain NaN", field="scores")
        block = raw.clone()  # [B, I] the one copy: score_fn's output may be a view of the model's state
        del raw
        sub = seen[batch]
        rows = np.repeat(np.arange(len(batch), dtype=np.int64), np.diff(sub.indptr))
        block.view(-1).index_fill_(0, torch.from_numpy(rows * n_items + sub.indices), float("-inf"))
        in_batch = {name: m[start : start + rows_per_batch] for name, m in member.items()}
        ranked = {}  # group -> (row positions in the batch [R], (items, values, keys) [R, k])
        for j in sorted(range(len(groups)), key=lambda j: j == big):  # the big group last: it overwrites block
            need = np.zeros(len(batch), dtype=bool)
            for p in plans:
                if j in p.groups:
                    need |= in_batch[p.name]
            if not need.any():
                continue
            idx = np.flatnonzero(need)
            rows_j = block if len(idx) == len(batch) else block.index_select(0, torch.from_numpy(idx))
            if j == big:
                if mask_big:
                    rows_j.masked_fill_(outside_big[None, :], float("-inf"))  # in place when rows_j is block
                cols_j, ids = rows_j, all_ids
            else:
                cols_j, ids = rows_j.index_select(1, group_ids[j]), group_ids[j]  # [R, n_j]
            ranked[j] = (idx, _rank_columns(cols_j, top_k, users_t[idx], ids, chunk))
        done = 0
        for p in plans:
            rows_p = np.flatnonzero(in_batch[p.name])
            if len(rows_p) == 0:
                continue
            parts = []
            for j in p.groups:
                idx, (items, values, keys) = ranked[j]
                at = torch.from_numpy(np.searchsorted(idx, rows_p))  # rows_p is a subset of idx, both ascending
                parts.append((items[at], values[at], keys[at]))
            items, values, _ = _merge_top(parts, top_k)  # [R, k']
            users_p = users_t[rows_p]
            query = users_p[:, None] * n_items + items  # [R, k']
            found = torch.searchsorted(p.keys, query).clamp_(max=len(p.keys) - 1)
            hits = (p.keys[found] == query) & (values > float("-inf"))  # [R, k'] relevant and not excluded
            if hits.shape[1] < top_k:  # fewer candidates than the largest cut-off: the missing slots are misses
                hits = torch.nn.functional.pad(hits, (0, top_k - hits.shape[1]), value=False)
            n_rel = torch.from_numpy(p.n_rel[batch[rows_p]]).double()
            for key, values_k in compute_all(hits, n_rel, ks, names).items():
                per_user[p.name][key].append(values_k)
            done += len(rows_p)
        if progress is not None:
            progress(done)
    out_metrics, out_users, frames = {}, {}, []
    for p in plans:
        columns = {key: torch.cat(v).numpy() for key, v in per_user[p.name].items()}
        frames.append(pd.DataFrame({"scenario": p.name, "user": split.user_ids[p.users], **columns}))
        out_metrics[p.name] = {key: float(np.mean(v)) for key, v in columns.items()}
        out_users[p.name] = int(len(p.users))
    return EvalResult(out_metrics, pd.concat(frames, ignore_index=True), out_users)


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


def draw_user_negatives(users: np.ndarray, every: sp.csr_matrix, n_negatives: int,
                        generator: torch.Generator, candidates: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`n_negatives` distinct items per user, drawn uniformly without replacement among the items the user never
    interacted with (`every`: CSR [U, I] of every phase); used only by `evaluate_sampled(per_user=True)`.

    Each row gets i.i.d. uniform keys for every item, its interacted items get key 2 (never below a real key
    in [0, 1)), and the n smallest keys are taken: a uniform draw without replacement, one topk per batch.

    Args:
        candidates: bool [I], the items negatives may be drawn from (None: every item).

    Returns:
        (items int64 [B, n], valid bool [B, n]): valid is False where the user has fewer than n non-interacted items.
    """
    n_items = every.shape[1]
    keys = torch.rand(len(users), n_items, generator=generator)  # [B, I]
    keys[_csr_rows_dense(every, users)] = 2.0
    if candidates is not None:
        keys[:, ~candidates] = 2.0
    n = min(n_negatives, n_items)
    vals, items = torch.topk(keys, n, dim=1, largest=False)  # [B, n]
    return items, vals < 2.0


def evaluate_sampled(score_fn: ScoreFn, split: Split, phase: str = "test", scenarios=SCENARIOS, ks=(10, 20),
                     n_negatives: int = 500, seed: int = 0, batch_size: int = 1024, per_user: bool = False,
                     repeats: int = 1, negatives: str = "all") -> EvalResult:
    """Sampled ranking, in one of two forms, averaged over `repeats` independent draws of the negatives.

    per_user=False (one list per positive): each held-out positive is ranked among `n_negatives` items drawn
    uniformly (with replacement) from the scenario's candidates the user never interacted with in any phase.
    Metrics are hit_rate@k, ndcg@k (1 / log2(rank + 2) when rank < k) and mrr, averaged over positives.

    per_user=True (the CIERec paper's protocol, section IV-A2): each user's held-out positives of the scenario
    together with `n_negatives` items drawn uniformly without replacement from every item the user never
    interacted with (in any phase; "from the dataset", whatever its scenario) form one candidate list, ranked
    once; the metrics are those of full ranking (recall@k, ndcg@k, ... from eval/metrics.py) on that list,
    averaged over users. The paper repeats the draw five times and reports the mean (`repeats=5`).
    `negatives="scenario"` draws them from the scenario's candidates instead (as full ranking ranks them: the
    cold scenario's negatives are then cold items too); a user with fewer such items than `n_negatives` gets all.

    Ties are broken as in full ranking (`tie_rank` of user and item). Scores are computed once per user batch
    and reused by every repeat; repeat r draws from its own generator seeded by (seed, r), so the draws do not
    depend on how many repeats are asked for. per_user frame: each user's (or positive's) values averaged
    over the repeats. The result has sampled=True; reports must label these numbers as sampled.
    """
    if repeats < 1:
        raise DataError(f"must be >= 1, got {repeats}", field="repeats")
    if n_negatives < 1:
        raise DataError(f"must be >= 1, got {n_negatives}", field="n_negatives")
    if phase not in ("valid", "test"):
        raise DataError(f"phase must be valid or test, got {phase!r}", field="phase")
    if negatives not in ("all", "scenario"):
        raise DataError(f"must be all or scenario, got {negatives!r}", field="negatives")
    ks = sorted({int(k) for k in ks})
    every_csr = split.matrix("train", "valid", "test")
    out_metrics, out_users, frames = {}, {}, []
    if per_user:
        for scenario in scenarios:
            rel, pool = scenario_parts(split, phase, scenario)
            pool = pool if negatives == "scenario" else None
            n_rel_all = np.diff(rel.indptr)
            users = np.flatnonzero(n_rel_all > 0)
            if len(users) == 0:
                continue
            gens = [torch.Generator().manual_seed(int(seed) * 1_000_003 + r) for r in range(repeats)]
            per_rep: list[dict[str, list[Tensor]]] = [{} for _ in range(repeats)]
            for start in range(0, len(users), batch_size):
                batch = users[start : start + batch_size]
                with torch.no_grad():
                    scores = score_fn(torch.from_numpy(batch)).float()  # [B, I]
                if torch.isnan(scores).any():
                    raise DataError("scores contain NaN", field="scores")
                relevant = _csr_rows_dense(rel, batch)  # [B, I]
                n_rel = torch.from_numpy(n_rel_all[batch]).double()
                for r in range(repeats):
                    negs, ok = draw_user_negatives(batch, every_csr, n_negatives, gens[r], pool)  # [B, n]
                    keep = relevant.clone()  # [B, I] the candidate list: positives + negatives
                    rows_ = torch.arange(len(batch))[:, None].expand_as(negs)
                    keep[rows_[ok], negs[ok]] = True
                    masked = torch.where(keep, scores, torch.tensor(float("-inf")))  # [B, I]
                    top, valid = topk_deterministic(masked, ks[-1], users=torch.from_numpy(batch))
                    hits = torch.gather(relevant, 1, top) & valid  # [B, K]
                    if hits.shape[1] < ks[-1]:
                        hits = torch.nn.functional.pad(hits, (0, ks[-1] - hits.shape[1]), value=False)
                    for key, values in compute_all(hits, n_rel, ks).items():
                        per_rep[r].setdefault(key, []).append(values)
            columns = {key: np.mean([torch.cat(per_rep[r][key]).numpy() for r in range(repeats)], axis=0)
                       for key in per_rep[0]}
            frames.append(pd.DataFrame({"scenario": scenario, "user": split.user_ids[users], **columns}))
            out_metrics[scenario] = {key: float(np.mean(v)) for key, v in columns.items()}
            out_users[scenario] = int(len(users))
        return EvalResult(out_metrics, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
                          out_users, sampled=True)
    every = every_csr.tocoo()
    keys = positive_keys(every.row, every.col, split.n_items)
    for scenario in scenarios:
        rel, candidates = scenario_parts(split, phase, scenario)
        coo = rel.tocoo()
        if coo.nnz == 0:
            continue
        pool = np.flatnonzero(candidates.numpy())
        users, pos = coo.row.astype(np.int64), coo.col.astype(np.int64)
        ranks_per_rep = []
        for r in range(repeats):
            # repeats=1 keeps the original single draw from default_rng(seed)
            rng = np.random.default_rng(seed if r == 0 else [int(seed), r])
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
            ranks_per_rep.append(ranks)
        stacked = np.stack(ranks_per_rep)  # [R, P]
        columns = {"mrr": (1.0 / (stacked + 1.0)).mean(0)}
        for k in ks:
            columns[f"hit_rate@{k}"] = (stacked < k).astype(np.float64).mean(0)
            columns[f"ndcg@{k}"] = np.where(stacked < k, 1.0 / np.log2(stacked + 2.0), 0.0).mean(0)
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
