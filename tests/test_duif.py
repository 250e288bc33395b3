"""DUIF: the loss against its formula on a tiny batch, and content-only scoring of every item."""

from __future__ import annotations

import math

import numpy as np
import torch

from coldstart.train import epoch_generator
from tests.conftest import trained


def _model(split, **hyper):
    return trained("duif", split, num_epoch=1, **hyper)


def test_loss_equals_bpr_formula_on_a_tiny_batch(synthetic_split):
    model = _model(synthetic_split, num_neg=3, reg_weight=0.01)
    batch = torch.arange(4)
    users, items = model.batch_pairs(batch, 3, epoch_generator(5, 0))
    loss, parts = model.loss(batch, epoch_generator(5, 0))
    terms, reg = [], 0.0
    with torch.no_grad():
        for b in range(4):  # the paper's formula, one (u, i, j) triple at a time
            p = model.user_embedding[users[b]]
            f = [model.content_features(items[b, k:k + 1])[0] for k in range(4)]
            for k in range(1, 4):
                diff = float(p @ f[0] - p @ f[k])
                terms.append(-math.log(1 / (1 + math.exp(-diff))))
            reg += float(p @ p)
    expected = sum(terms) / len(terms) + 0.01 * reg / 4
    assert abs(loss.item() - expected) < 1e-5
    assert abs(parts["bpr"] - sum(terms) / len(terms)) < 1e-5


def test_items_are_scored_from_content_alone(synthetic_split):
    model = _model(synthetic_split)
    assert not hasattr(model, "item_embedding")
    model.eval()
    scores = model.score(torch.arange(5))
    f = model.content_features(torch.arange(synthetic_split.n_items))
    np.testing.assert_allclose(scores.numpy(), (model.user_embedding[:5] @ f.T).detach().numpy(), atol=1e-5)
    cold = torch.from_numpy(synthetic_split.cold_items)
    assert scores[:, cold].std() > 0  # cold items get distinct, content-based scores
