"""content_sim against its formula, computed naively per (user, item) from the raw content, and against the
dense implementation it replaced (issue 11 item 20: the content must stay sparse)."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from coldstart.data.modalities import Dense, Sparse
from coldstart.data.splits import make_split
from coldstart.errors import DataError
from coldstart.models import MODELS
from coldstart.models.base import Recommender
from coldstart.nn.content import build_content, select_modalities


def _content(split, modalities=None) -> np.ndarray:
    """float64 [I, D]: the model's input content, densified (fine at test size)."""
    ds = split.dataset
    dense, sparse = build_content(select_modalities(ds.item_features, modalities), ds.item_features, split.n_items)
    return np.concatenate([dense, sparse.toarray()], axis=1).astype(np.float64)


def _check_naively(model, split, content, users, item_step):
    """The formula per (user, item): the mean cosine of centred content to the user's training items."""
    warm = sorted(set(split.train.items.tolist()))
    has = np.abs(content).sum(1) > 0
    centre = content[[i for i in warm if has[i]]].mean(0)
    train = split.matrix("train")
    got = model.score(torch.tensor(users)).numpy()
    for row, u in enumerate(users):
        mine = train.indices[train.indptr[u]:train.indptr[u + 1]]
        for i in range(0, split.n_items, item_step):
            cosines = []
            for j in mine:
                a, b = content[i] - centre, content[j] - centre
                a = a if has[i] else np.zeros_like(a)  # no content: x = 0, cosine 0 (still counted)
                b = b if has[j] else np.zeros_like(b)
                norm = np.linalg.norm(a) * np.linalg.norm(b)
                cosines.append(a @ b / norm if norm > 0 else 0.0)
            assert got[row, i] == pytest.approx(np.mean(cosines), abs=1e-5)


def _dense_reference(split, content) -> np.ndarray:
    """float64 [U, I]: the implementation before issue 11, which centred and stored the content densely."""
    has = np.abs(content).sum(1) > 0
    ref = split.train_item_mask() & has
    x = np.where(has[:, None], content - content[ref].mean(0), 0.0)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    train = split.matrix("train").astype(np.float64)
    return np.asarray(train @ x) / np.maximum(np.diff(train.indptr), 1)[:, None] @ x.T


@pytest.fixture(scope="module")
def mixed_split(synthetic):
    """Random dense (masked, off-centre), sparse (some empty rows) and one-column content; 5 items have none."""
    rng = np.random.default_rng(5)
    n = len(synthetic.item_ids)
    empty = np.arange(n) < 5
    words = sp.random(n, 300, density=0.03, format="csr", random_state=6, dtype=np.float32)
    words = sp.csr_matrix(sp.diags((~empty & (rng.random(n) > 0.2)).astype(np.float32)) @ words)
    words.eliminate_zeros()
    features = {
        "emb": Dense((rng.normal(size=(n, 6)) + 3.0).astype(np.float32), ~empty & (rng.random(n) > 0.1)),
        "words": Sparse(words),
        "year": Dense(rng.integers(1950, 2000, size=(n, 1)).astype(np.float32), ~empty & (rng.random(n) > 0.05)),
    }
    return make_split(dataclasses.replace(synthetic, item_features=features), "cold_item", seed=2)


def test_scores_equal_the_mean_cosine_to_the_users_training_items(synthetic_split):
    model = MODELS["content_sim"]().fit(synthetic_split)
    _check_naively(model, synthetic_split, _content(synthetic_split), [0, 7, 42], 13)


@pytest.mark.parametrize("modalities", [None, ("words",), ("emb", "year")])
def test_sparse_scores_equal_the_dense_implementation(mixed_split, modalities):
    model = MODELS["content_sim"](modalities=modalities).fit(mixed_split)
    content = _content(mixed_split, modalities)
    expected = _dense_reference(mixed_split, content)  # [U, I]
    got = model.score(torch.arange(mixed_split.n_users)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got[:, :5] == 0).all()  # items without content score 0
    _check_naively(model, mixed_split, content, [1, 30], 7)


def test_item_subsets_chunks_and_reloading_give_the_same_scores(mixed_split, tmp_path, monkeypatch):
    model = MODELS["content_sim"]().fit(mixed_split)
    users, items = torch.tensor([3, 0, 9, 3]), torch.tensor([7, 2, 100, 2])
    full = model.score(users)
    assert torch.allclose(model.score(users, items), full[:, items], atol=1e-6)
    monkeypatch.setattr("coldstart.models.content_sim.CHUNK_FLOATS", 1)  # one user per chunk
    assert torch.allclose(model.score(users), full, atol=1e-6)
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert torch.equal(loaded.score(users), model.score(users))


def test_wide_sparse_content_is_never_densified(synthetic):
    """A 500K-word vocabulary: densified it would be ~300 MB (and the old code refused it at max_dims)."""
    n = len(synthetic.item_ids)
    words = sp.random(n, 500_000, density=20 / 500_000, format="csr", random_state=1, dtype=np.float32)
    split = make_split(dataclasses.replace(synthetic, item_features={"words": Sparse(words)}), "cold_item", seed=1)
    tracemalloc.start()
    try:
        model = MODELS["content_sim"]().fit(split)
        scores = model.score(torch.arange(split.n_users))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80e6, f"peak {peak / 1e6:.0f} MB"
    assert scores.shape == (split.n_users, split.n_items) and torch.isfinite(scores).all()


def test_too_wide_dense_content_is_refused(synthetic_split):
    with pytest.raises(DataError, match="max_dims"):
        MODELS["content_sim"](max_dims=2).fit(synthetic_split)
