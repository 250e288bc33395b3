"""The shared contract test, parametrised over every registered model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstart.data.splits import make_split
from coldstart.errors import DataError
from coldstart.experiments import seed_everything
from coldstart.models import MODELS, Recommender


#: Small budgets so the trained models fit in a second; the contract does not depend on quality.
FAST = {
    "mf_bpr": {"num_epoch": 2},
    "lightgcn": {"num_epoch": 2, "n_layers": 2},
    "clcrec": {"num_epoch": 2, "num_neg": 8},
    "duif": {"num_epoch": 2},
    "vbpr": {"num_epoch": 2},
    "deepmusic": {"num_epoch": 2},
    "dropoutnet": {"num_epoch": 2},
    "mtpr": {"num_epoch": 2},
    "cb2cf": {"num_epoch": 2},
    "heater": {"num_epoch": 2},
    "cvar": {"num_epoch": 2},
    "sasrec": {"num_epoch": 2, "max_len": 8},
    "cmclrec": {"num_epoch": 2, "pre_epochs": 1, "max_len": 8, "feature_hidden": 16},
    "cierec": {"num_epoch": 2, "annotations": ["topic"], "min_label_count": 1},
    "melu": {"num_epoch": 2, "support_size": 4, "query_size": 4},
    "gir": {"num_epoch": 2, "d": 8, "heads": 2, "dim_E": 8, "batch_size": 256, "dense_hidden": 0},
    # one line per model, so that models added in parallel never edit the same line
}


@pytest.fixture(params=sorted(MODELS))
def fitted(request, synthetic_split):
    seed_everything(0)
    return MODELS[request.param](**FAST.get(request.param, {})).fit(synthetic_split)


def test_score_shape_and_finite_cold_scores(fitted, synthetic_split):
    users = torch.arange(7)
    scores = fitted.score(users)
    assert scores.shape == (7, synthetic_split.n_items)
    cold = torch.from_numpy(synthetic_split.cold_items)
    assert torch.isfinite(scores[:, cold]).all()
    items = torch.tensor([0, 3, 5])
    # atol: a [B, 3] product rounds differently from a [B, I] one (6e-8 seen for vbpr near a zero score).
    assert torch.allclose(fitted.score(users, items), scores[:, items], atol=1e-6)


def test_recommend_masks_seen_items(fitted, synthetic_split):
    users = torch.arange(synthetic_split.n_users)
    top, top_scores = fitted.recommend(users, k=10)
    train = synthetic_split.matrix("train")
    assert top.shape == (synthetic_split.n_users, 10)
    rows = np.repeat(users.numpy(), 10)
    assert not np.asarray(train[rows, top.numpy().ravel().copy()]).any()
    cold = torch.from_numpy(synthetic_split.cold_items)
    only_cold, _ = fitted.recommend(users[:5], k=5, candidates=cold)
    assert torch.isin(only_cold, cold).all()


def test_save_load_round_trip(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    back = Recommender.load(tmp_path / "m")
    assert type(back) is type(fitted)
    users = torch.arange(5)
    assert torch.equal(back.score(users), fitted.score(users))
    assert torch.equal(back.recommend(users, 5)[0], fitted.recommend(users, 5)[0])


def test_deterministic_under_a_seed(fitted, synthetic_split):
    seed_everything(0)
    again = type(fitted)(**fitted.hyperparameters()).fit(synthetic_split)
    assert torch.equal(again.score(torch.arange(9)), fitted.score(torch.arange(9)))


@pytest.fixture(scope="module")
def cold_user_split(synthetic):
    return make_split(synthetic, "cold_user", seed=1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_rank_scores_are_finite_for_cold_users(name, cold_user_split):
    seed_everything(0)
    model = MODELS[name](**FAST.get(name, {})).fit(cold_user_split)
    model.eval()
    cold = torch.from_numpy(cold_user_split.cold_users)
    # "content": a representation learnt (or computed) from user attributes (issue 13's user-side models)
    assert len(cold) > 0 and model.cold_users in ("none", "popularity", "random", "content")
    scores = model.rank_scores(cold)
    assert scores.shape == (len(cold), cold_user_split.n_items) and torch.isfinite(scores).all()


def test_unknown_hyperparameter_is_rejected():
    for name, klass in MODELS.items():
        with pytest.raises(DataError, match=f"unknown hyperparameter 'nope' for {name}"):
            klass(nope=1)


def test_popularity_orders_by_training_counts(synthetic_split):
    model = MODELS["pop"]().fit(synthetic_split)
    counts = torch.bincount(torch.from_numpy(synthetic_split.train.items), minlength=synthetic_split.n_items)
    assert torch.equal(torch.argsort(model.score(torch.tensor([0]))[0], stable=True),
                       torch.argsort(counts.float(), stable=True))
