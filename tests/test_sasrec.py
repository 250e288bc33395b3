"""SASRec: next-item loss against its definition, inference from the newest training window, cold rules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from coldstart.data.sequences import train_sequences
from coldstart.data.splits import make_split
from coldstart.experiments import seed_everything
from coldstart.models import MODELS
from coldstart.models.sasrec import next_item_loss


@pytest.fixture(scope="module")
def cold_user_split(synthetic):
    return make_split(synthetic, "cold_user", seed=1)


@pytest.fixture(scope="module")
def model(cold_user_split):
    seed_everything(0)
    return MODELS["sasrec"](num_epoch=2, max_len=6, dropout=0.0).fit(cold_user_split)


def test_next_item_loss_matches_the_softmax_over_all_items():
    torch.manual_seed(0)
    out, items = torch.randn(2, 3, 4), torch.randn(5, 4)
    valid = torch.tensor([[False, True, True], [True, True, True]])
    targets = torch.tensor([[0, 2, 5], [1, 3, 4]])  # item + 1
    terms = [-F.log_softmax(out[b, t] @ items.T, 0)[targets[b, t] - 1]
             for b in range(2) for t in range(3) if valid[b, t]]
    assert next_item_loss(out, valid, targets, items).item() == pytest.approx(float(sum(terms) / len(terms)), rel=1e-5)


def test_training_pairs_are_shifted_windows(model, cold_user_split):
    window = model.windows_
    seqs = train_sequences(cold_user_split, 7)
    assert torch.equal(window, seqs.items) and torch.equal(model.recent_, seqs.items[:, 1:])
    lengths = (window != 0).sum(1)
    assert set(model.train_users_.tolist()) == set(torch.nonzero(lengths >= 2).flatten().tolist())


def test_scores_come_from_the_newest_window(model):
    model.eval()
    users = torch.arange(4)
    with torch.no_grad():
        h = model.backbone(model.recent_[users])[:, -1]
        expected = h @ model.backbone.item_vectors(model.dims_["n_items"]).T
    torch.testing.assert_close(model.score(users), expected)


def test_cold_users_are_ranked_by_popularity(model, cold_user_split):
    assert model.cold_users == "none" and model.cold_items == "none"
    cold = torch.from_numpy(cold_user_split.cold_users[:3])
    counts = torch.bincount(torch.from_numpy(cold_user_split.train.items), minlength=cold_user_split.n_items)
    assert torch.equal(model.rank_scores(cold), counts.float().expand(3, -1))
