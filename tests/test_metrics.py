"""The evaluator against a deliberately naive pure-Python reference, including ties, users with fewer
candidates than K, and users with no relevant items."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from coldstart.data.splits import make_split
from coldstart.eval.evaluate import evaluate_sampled, evaluate_scores, tie_rank, topk_deterministic
from coldstart.eval.metrics import compute_all


M31 = 0x7FFFFFFF


def naive_mix31(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & M31
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & M31
    return x ^ (x >> 16)


def naive_tie_rank(user: int, item: int) -> int:
    """The documented keyed hash in plain Python integers (no overflow possible)."""
    return naive_mix31((naive_mix31((user + 0x5BD1E995) & M31) + ((item * 0x9E3779B9) & M31)) & M31)


def naive_user_metrics(ranked: list[int], relevant: set[int], k: int) -> dict[str, float]:
    top = ranked[:k]
    hits = [1 if i in relevant else 0 for i in top]
    n_rel = len(relevant)
    dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
    idcg = sum(1 / math.log2(r + 2) for r in range(min(n_rel, k)))
    first = next((r for r, h in enumerate(hits) if h), None)
    ap, seen_hits = 0.0, 0
    for r, h in enumerate(hits):
        if h:
            seen_hits += 1
            ap += seen_hits / (r + 1)
    return {
        f"recall@{k}": sum(hits) / n_rel,
        f"precision@{k}": sum(hits) / k,
        f"ndcg@{k}": dcg / idcg,
        f"hit_rate@{k}": 1.0 if sum(hits) else 0.0,
        f"mrr@{k}": 0.0 if first is None else 1 / (first + 1),
        f"map@{k}": ap / min(n_rel, k),
    }


def naive_evaluate(scores: np.ndarray, split, phase: str, scenario: str, ks) -> dict[str, float]:
    """Loop over users and items in plain Python; sort by (-score, the user's tie rank)."""
    train_items = set(split.train.items.tolist())
    seen: dict[int, set] = {}
    phases = ["train"] if phase == "valid" else ["train", "valid"]
    for p in phases:
        part = split.part(p)
        for u, i in zip(part.users.tolist(), part.items.tolist()):
            seen.setdefault(u, set()).add(i)
    relevant: dict[int, set] = {}
    part = split.part(phase)
    for u, i, c in zip(part.users.tolist(), part.items.tolist(), part.cold.tolist()):
        if scenario == "all" or c == (scenario == "cold"):
            relevant.setdefault(u, set()).add(i)
    totals: dict[str, list[float]] = {}
    for u in sorted(relevant):
        cands = []
        for i in range(split.n_items):
            if i in seen.get(u, set()):
                continue
            if split.cold_kind == "item" and scenario == "warm" and i not in train_items:
                continue
            if split.cold_kind == "item" and scenario == "cold" and i in train_items:
                continue
            cands.append(i)
        ranked = sorted(cands, key=lambda i: (-float(scores[u, i]), naive_tie_rank(u, i)))
        for k in ks:
            for key, v in naive_user_metrics(ranked, relevant[u], k).items():
                totals.setdefault(key, []).append(v)
    return {key: sum(v) / len(v) for key, v in totals.items()}


@pytest.mark.parametrize("protocol", ["cold_item", "cold_user"])
@pytest.mark.parametrize("phase", ["valid", "test"])
def test_full_ranking_matches_naive_reference(synthetic, protocol, phase):
    split = make_split(synthetic, protocol, seed=2)
    rng = np.random.default_rng(0)
    # Few distinct values: many ties. K = 40 exceeds the cold candidates of some users.
    scores = rng.integers(0, 4, size=(split.n_users, split.n_items)).astype(np.float32)
    ks = (1, 5, 40)
    fast = evaluate_scores(lambda u: torch.from_numpy(scores[u.numpy()]), split, phase, ks=ks, batch_size=17)
    for scenario in ("warm", "cold", "all"):
        ref = naive_evaluate(scores, split, phase, scenario, ks)
        assert set(ref) == set(fast.metrics[scenario])
        for key, value in ref.items():
            assert fast.metrics[scenario][key] == pytest.approx(value, abs=1e-6), (scenario, key)


def test_users_without_relevant_items_are_not_averaged(synthetic_split):
    res = evaluate_scores(lambda u: torch.zeros(len(u), synthetic_split.n_items), synthetic_split, "test")
    part = synthetic_split.test
    assert res.n_users["cold"] == len(np.unique(part.users[part.cold]))
    assert len(res.per_user[res.per_user.scenario == "cold"]) == res.n_users["cold"]


def test_fewer_candidates_than_k_never_counts_excluded_items():
    scores = torch.tensor([[0.5, float("-inf"), float("-inf"), 0.1]])
    top, valid = topk_deterministic(scores, 4)
    assert valid.tolist() == [[True, True, False, False]]
    assert top[0, :2].tolist() == [0, 3]


def test_tie_rank_matches_the_plain_python_hash():
    users = torch.tensor([0, 1, 2, 941, 2**31 - 1])[:, None]
    items = torch.tensor([0, 1, 7, 1681, 99_999, 2**31 - 1])[None, :]
    expected = [[naive_tie_rank(u, i) for i in items[0].tolist()] for u in users[:, 0].tolist()]
    assert tie_rank(users, items).tolist() == expected  # int64 ops never overflow
    assert len(torch.unique(tie_rank(torch.tensor([[5]]), torch.arange(200_000)[None, :]))) == 200_000


def test_ties_follow_each_users_tie_rank():
    scores = torch.zeros(3, 50)
    users = torch.tensor([0, 7, 7])
    top, _ = topk_deterministic(scores, 50, users=users)
    for row, user in enumerate(users.tolist()):
        assert top[row].tolist() == sorted(range(50), key=lambda i: naive_tie_rank(user, i))
    assert top[0].tolist() != top[1].tolist() and top[1].tolist() == top[2].tolist()
    shared, _ = topk_deterministic(scores, 50)  # no users: user 0's order on every row
    assert shared.tolist() == [top[0].tolist()] * 3


def test_negative_zero_ties_with_zero():
    a, _ = topk_deterministic(torch.tensor([[-0.0, 0.0, 0.0]]), 3)
    b, _ = topk_deterministic(torch.tensor([[0.0, 0.0, 0.0]]), 3)
    assert a.tolist() == b.tolist()


def test_metric_functions_on_a_hand_case():
    hits = torch.tensor([[False, True, True, False]])
    n_rel = torch.tensor([3.0])
    m = compute_all(hits, n_rel, [4])
    assert m["recall@4"].item() == pytest.approx(2 / 3)
    assert m["precision@4"].item() == pytest.approx(0.5)
    assert m["mrr@4"].item() == pytest.approx(0.5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@4"].item() == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / idcg)
    assert m["map@4"].item() == pytest.approx((1 / 2 + 2 / 3) / 3)


def test_nan_scores_are_rejected(synthetic_split):
    from coldstart.errors import DataError

    with pytest.raises(DataError, match="NaN"):
        evaluate_scores(lambda u: torch.full((len(u), synthetic_split.n_items), float("nan")), synthetic_split, "test")


def test_sampled_ranking_matches_naive_reference(synthetic_split):
    split = synthetic_split
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, size=(split.n_users, split.n_items)).astype(np.float32)
    res = evaluate_sampled(lambda u: torch.from_numpy(scores[u.numpy()]), split, "test", scenarios=("cold",),
                           ks=(10,), n_negatives=30, seed=5)
    assert res.sampled
    every = split.matrix("train", "valid", "test")
    frame = res.per_user
    assert len(frame) == int(split.test.cold.sum())
    # hit_rate@10 and ndcg@10 must agree with the rank implied by mrr for every positive.
    rank = np.round(1 / frame["mrr"].to_numpy() - 1).astype(int)
    assert np.all((rank < 10) == (frame["hit_rate@10"].to_numpy() == 1))
    np.testing.assert_allclose(frame["ndcg@10"], np.where(rank < 10, 1 / np.log2(rank + 2), 0.0))
    # A model that scores every positive strictly highest has rank 0 for every positive.
    best = np.zeros_like(scores)
    best[split.test.users, split.test.items] = 10.0
    perfect = evaluate_sampled(lambda u: torch.from_numpy(best[u.numpy()]), split, "test", scenarios=("cold",),
                               ks=(10,), n_negatives=30, seed=5)
    assert perfect.metrics["cold"]["mrr"] == 1.0
    # Sampled negatives are never interacted items and always cold candidates.
    from coldstart.data.sampling import positive_keys, sample_negatives

    coo = every.tocoo()
    keys = positive_keys(coo.row, coo.col, split.n_items)
    pool = np.flatnonzero(~split.train_item_mask())
    negs = sample_negatives(split.test.users, 30, split.n_items, keys, np.random.default_rng(0), candidates=pool)
    assert not every[np.repeat(split.test.users, 30), negs.ravel()].any()
    assert np.isin(negs, pool).all()


# -- topk_deterministic against the packed-key reference ---------------------------------------------------------

def packed_key_topk(scores: torch.Tensor, k: int, users: torch.Tensor | None = None):
    """The implementation before the float-topk fast path, kept as the reference: one int64 topk over the whole
    [B, I] matrix of (order-preserving int32 score << 32) | (2**31 - 1 - tie rank)."""
    n_rows, n = scores.shape
    if users is None:
        users = torch.zeros(n_rows, dtype=torch.int64)
    k = min(k, n)
    s = scores.float() + 0.0
    bits = s.view(torch.int32)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    tie = tie_rank(users[:, None], torch.arange(n)[None, :])
    keys = (ordered.to(torch.int64) << 32) | (M31 - tie)
    top = torch.topk(keys, k, dim=1, sorted=True).indices
    return top, torch.gather(s, 1, top) > float("-inf")


def tie_heavy_scores(rng: np.random.Generator, n_rows: int, n_items: int) -> torch.Tensor:
    """Scores full of ties: few integer levels (a random number per case), whole constant rows, -inf blocks and
    scattered -inf (some rows with fewer finite items than k, some all -inf), -0.0 next to +0.0, +inf."""
    levels = int(rng.integers(1, 6))
    out = rng.integers(-levels, levels + 1, size=(n_rows, n_items)).astype(np.float32)
    if rng.random() < 0.3:  # some rows continuous: ties only by accident
        cont = rng.random(n_rows) < 0.5
        out[cont] = rng.standard_normal((int(cont.sum()), n_items)).astype(np.float32)
    out[rng.random(n_rows) < 0.2] = rng.integers(-2, 3)  # constant rows (a constant model)
    out[out == 0] = np.where(rng.random(int((out == 0).sum())) < 0.5, -0.0, 0.0)
    out[rng.random((n_rows, n_items)) < rng.random() * 0.6] = -np.inf  # scattered exclusions
    if n_items > 1:
        lo = int(rng.integers(0, n_items))
        out[:, lo : lo + int(rng.integers(1, n_items))] = -np.inf  # a block of excluded items (e.g. warm items)
    out[rng.random(n_rows) < 0.1] = -np.inf  # rows with nothing left to recommend
    out[rng.random((n_rows, n_items)) < 0.02] = np.inf
    return torch.from_numpy(out)


def test_topk_deterministic_equals_the_packed_key_reference_on_heavy_ties():
    rng = np.random.default_rng(0)
    for case in range(400):
        n_rows = int(rng.integers(0, 40))
        n_items = int(rng.integers(1, 90))
        scores = tie_heavy_scores(rng, n_rows, n_items)
        users = None if case % 4 == 0 else torch.from_numpy(rng.integers(0, 2**31, n_rows))
        for k in {1, int(rng.integers(1, n_items + 1)), n_items - 1, n_items, n_items + 3} - {0}:
            top, valid = topk_deterministic(scores, k, users)
            ref_top, ref_valid = packed_key_topk(scores, k, users)
            assert top.dtype == torch.int64 and valid.dtype == torch.bool
            assert torch.equal(top, ref_top), (case, k)
            assert torch.equal(valid, ref_valid), (case, k)


def test_topk_deterministic_equals_the_reference_at_evaluation_size():
    """2048 rows as the evaluator uses: mostly distinct scores, with injected ties above, at and below the
    k-th score, rows whose finite items are fewer than k, and constant rows."""
    rng = np.random.default_rng(1)
    scores = torch.from_numpy(rng.standard_normal((2048, 700)).astype(np.float32))
    scores[::7, 100:400] = 2.5  # a tie run that holds the whole list
    scores[1::7] = scores[1::7].round()  # integer levels: the cut falls inside a tie run
    scores[2::7, 10:] = float("-inf")  # 10 finite items for k = 20: the list ends among -inf
    scores[3::7] = 0.0
    scores[3::7, ::2] = -0.0  # -0.0 and +0.0 tie
    scores[4::7, :40] = 3.0  # 40 tied items above every other, k = 20 of them listed
    scores[5::7, :5] = 3.0  # 5 tied items above the cut: ordered by tie rank, all listed
    users = torch.from_numpy(rng.permutation(10_000)[:2048])
    for k in (1, 10, 20, 100):
        top, valid = topk_deterministic(scores, k, users)
        ref_top, ref_valid = packed_key_topk(scores, k, users)
        assert torch.equal(top, ref_top) and torch.equal(valid, ref_valid), k


def test_topk_deterministic_reads_float64_scores_as_float32():
    """Doubles that differ only below float32 precision tie, as they did in the packed-key ranking."""
    scores = torch.tensor([[1.0, 1.0 + 1e-12, 1.0 - 1e-12, 0.5, 1.0]], dtype=torch.float64)
    for k in range(1, 6):
        assert torch.equal(topk_deterministic(scores, k, torch.tensor([3]))[0],
                           packed_key_topk(scores, k, torch.tensor([3]))[0])


def test_topk_deterministic_degenerate_shapes():
    top, valid = topk_deterministic(torch.zeros(0, 5), 3)
    assert top.shape == valid.shape == (0, 3)
    top, valid = topk_deterministic(torch.zeros(2, 0), 3)
    assert top.shape == valid.shape == (2, 0)
    top, valid = topk_deterministic(torch.full((2, 4), float("-inf")), 2)
    assert not valid.any() and torch.equal(top, packed_key_topk(torch.full((2, 4), float("-inf")), 2)[0])
    with pytest.raises(ValueError, match="k must be non-negative"):
        topk_deterministic(torch.zeros(2, 4), -1)
