"""VBPR: the loss against Eq. 2 and BPR on a tiny batch, and cold items scored by the content term alone."""

from __future__ import annotations

import math

import torch

from coldstart.train import epoch_generator
from tests.conftest import trained


def _model(split, **hyper):
    model = trained("vbpr", split, num_epoch=1, **hyper)
    with torch.no_grad():
        model.item_bias.normal_()  # non-zero biases, so the test sees them
    return model


def _x(model, u: int, i: int, warm: bool = True) -> float:
    """Eq. 2 without alpha and beta_u, term by term."""
    k = model.config.dim_E
    content = model.content_features(torch.tensor([i]))[0]  # [E f_i, beta' . f_i]
    visual = float(model.user_theta[u] @ content[:k] + content[k])
    if not warm:
        return visual
    return float(model.item_bias[i] + model.user_embedding[u] @ model.item_embedding[i]) + visual


def test_loss_equals_eq2_with_bpr_on_a_tiny_batch(synthetic_split):
    model = _model(synthetic_split, num_neg=2, reg_weight=0.01)
    batch = torch.arange(3)
    users, items = model.batch_pairs(batch, 2, epoch_generator(7, 0))
    loss, parts = model.loss(batch, epoch_generator(7, 0))
    terms, reg_users, reg_items = [], 0.0, 0.0
    with torch.no_grad():
        for b in range(3):
            u = int(users[b])
            for k in range(1, 3):
                diff = _x(model, u, int(items[b, 0])) - _x(model, u, int(items[b, k]))
                terms.append(-math.log(1 / (1 + math.exp(-diff))))
            reg_users += float(model.user_embedding[u].pow(2).sum() + model.user_theta[u].pow(2).sum())
            for k in range(3):
                i = int(items[b, k])
                reg_items += float(model.item_embedding[i].pow(2).sum() + model.item_bias[i] ** 2)
    rank = sum(terms) / len(terms)
    assert abs(parts["bpr"] - rank) < 1e-5
    assert abs(loss.item() - (rank + 0.01 * (reg_users / 3 + reg_items / 9))) < 1e-4


def test_cold_items_are_scored_by_the_content_term_alone(synthetic_split):
    model = _model(synthetic_split)
    model.eval()
    scores = model.score(torch.arange(3))
    cold = int(synthetic_split.cold_items[0])
    warm = int(torch.nonzero(model.warm_items_)[0])
    with torch.no_grad():
        for u in range(3):
            assert abs(float(scores[u, cold]) - _x(model, u, cold, warm=False)) < 1e-5
            assert abs(float(scores[u, warm]) - _x(model, u, warm)) < 1e-5
