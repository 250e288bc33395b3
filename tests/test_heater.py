"""Heater: the objective against its formula (randomized inputs at 0 and 1), the mixture of experts, cold items."""

from __future__ import annotations

import pytest
import torch

from coldstart.train import epoch_generator
from tests.conftest import trained


def _model(split, **hyper):
    return trained("heater", split, num_epoch=2, **hyper)


def _psi(model, i: int) -> torch.Tensor:
    """The mixture of experts written out: softmax gates times each expert's output."""
    k, d = model.config.n_experts, model.config.dim_E
    out = model.content_features(torch.tensor([i]))[0]
    gates = torch.softmax(out[k * d:], 0)
    return sum(gates[e] * out[e * d:(e + 1) * d] for e in range(k))


@pytest.mark.parametrize("random_prob", [0.0, 1.0])
def test_loss_equals_the_formula(synthetic_split, random_prob):
    model = _model(synthetic_split, num_neg=2, random_prob=random_prob, alpha=0.3)
    batch = torch.arange(3)
    users, items = model.batch_pairs(batch, 2, epoch_generator(8, 0))
    loss, _ = model.loss(batch, epoch_generator(8, 0))
    errors, sse = [], {}
    with torch.no_grad():
        for b in range(3):
            u = int(users[b])
            f_u = model.user_tower(model.pref_users_[u])
            for k in range(3):
                i = int(items[b, k])
                psi = _psi(model, i)
                v = model.item_tower(psi if random_prob == 1.0 else model.pref_items_[i])
                errors.append((float(model.pref_users_[u] @ model.pref_items_[i]) - float(f_u @ v)) ** 2)
                sse[i] = float((psi - model.pref_items_[i]).pow(2).sum())
    expected = sum(errors) / len(errors) + 0.3 * sum(sse.values()) / len(sse)  # SSE over the distinct items
    assert abs(loss.item() - expected) < 1e-4


def test_cold_items_go_through_the_content_representation(synthetic_split):
    model = _model(synthetic_split)
    model.eval()
    scores = model.score(torch.arange(2))
    cold = int(torch.nonzero(~model.warm_items_)[0])
    warm = int(torch.nonzero(model.warm_items_)[0])
    with torch.no_grad():
        f_u = model.user_tower(model.pref_users_[:2])
        torch.testing.assert_close(scores[:, cold], f_u @ model.item_tower(_psi(model, cold)))
        torch.testing.assert_close(scores[:, warm], f_u @ model.item_tower(model.pref_items_[warm]))
