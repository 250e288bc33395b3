"""The FAISS item index: exact equals brute force, IVF / HNSW recall against exact, filters with every kind."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss", reason="the serve extra is not installed")

from coldstart_serve.index import ItemIndex, recall_at_k  # noqa: E402


def clustered(n: int = 3000, dim: int = 32, clusters: int = 40, seed: int = 0):
    """Item and user vectors around shared cluster centres, as trained embeddings are (not uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)) * 2
    items = centres[rng.integers(clusters, size=n)] + rng.standard_normal((n, dim)) * 0.7
    users = centres[rng.integers(clusters, size=300)] + rng.standard_normal((300, dim)) * 0.7
    return items.astype(np.float32), users.astype(np.float32)


def brute(items, users, k, allowed=None):
    scores = users @ items.T  # [U, I]
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_exact_is_brute_force_with_and_without_filters():
    items, users = clustered()
    index = ItemIndex(items, "exact")
    ids, scores = index.search(users, 20)
    np.testing.assert_array_equal(np.sort(ids, 1), np.sort(brute(items, users, 20), 1))
    np.testing.assert_allclose(scores[:, 0], (users @ items.T).max(1), rtol=1e-5)
    allowed = np.random.default_rng(1).random(len(items)) < 0.2
    ids, _ = index.search(users, 20, allowed)
    np.testing.assert_array_equal(np.sort(ids, 1), np.sort(brute(items, users, 20, allowed), 1))


@pytest.mark.parametrize("kind, floor", [("ivf", 0.9), ("hnsw", 0.95)])
def test_approximate_recall_against_exact(kind, floor):
    items, users = clustered()
    exact, _ = ItemIndex(items, "exact").search(users, 20)
    approx, _ = ItemIndex(items, kind).search(users, 20)
    assert recall_at_k(exact, approx) >= floor


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_filters_hold_for_every_kind(kind):
    items, users = clustered(n=4000)
    index = ItemIndex(items, kind)
    rng = np.random.default_rng(2)
    allowed = rng.random(len(items)) < 0.7  # e.g. 2,800 warm candidates minus a user's seen items: FAISS filters
    ids, scores = index.search(users[:50], 20, allowed)
    assert allowed[ids[ids >= 0]].all()
    assert (ids >= 0).mean() > 0.9  # the filter is applied inside the search, lists stay (nearly) full
    assert np.all(np.diff(np.where(ids >= 0, scores, -np.inf), axis=1) <= 1e-6)
    exact, _ = ItemIndex(items, "exact").search(users[:50], 20, allowed)
    assert recall_at_k(exact, ids) >= (1.0 if kind == "exact" else 0.8)
    few = rng.random(len(items)) < 0.05  # 200 allowed: scored exactly by every kind
    ids, _ = index.search(users[:50], 20, few)
    exact, _ = ItemIndex(items, "exact").search(users[:50], 20, few)
    np.testing.assert_array_equal(ids, exact)


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_added_items_are_found(kind):
    items, users = clustered(n=800)
    index = ItemIndex(items, kind)
    new = users[:3] * 3  # each new item is the best match of one user by far
    positions = index.add(new)
    assert positions.tolist() == [800, 801, 802] and len(index) == 803
    ids, _ = index.search(users[:3], 5)
    assert ids[:, 0].tolist() == [800, 801, 802]
    only_old = np.ones(803, bool)
    only_old[800:] = False
    ids, _ = index.search(users[:3], 5, only_old)
    assert (ids < 800).all()
    short = np.zeros(803, bool)
    short[[5, 9]] = True
    ids, scores = index.search(users[:1], 4, short)
    assert sorted(ids[0][:2].tolist()) == [5, 9] and ids[0][2:].tolist() == [-1, -1]
    assert np.isinf(scores[0][2:]).all()


def test_bad_arguments():
    from coldstart.errors import DataError

    with pytest.raises(DataError, match="unknown index"):
        ItemIndex(np.ones((4, 2), np.float32), "lsh")
    with pytest.raises(DataError):
        ItemIndex(np.ones((0, 2), np.float32))
    with pytest.raises(DataError, match="width"):
        ItemIndex(np.ones((4, 2), np.float32)).add(np.ones((1, 3)))
