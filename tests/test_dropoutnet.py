"""DropoutNet: the objective against Eq. 1 on a tiny batch, input dropout, and zero preference for cold items."""

from __future__ import annotations

import pytest
import torch

from coldstart.train import epoch_generator
from tests.conftest import trained


def _model(split, **hyper):
    return trained("dropoutnet", split, num_epoch=2, **hyper)


@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_loss_equals_eq1_with_and_without_the_preference_input(synthetic_split, dropout):
    model = _model(synthetic_split, num_neg=2, dropout=dropout)
    batch = torch.arange(3)
    users, items = model.batch_pairs(batch, 2, epoch_generator(4, 0))
    loss, _ = model.loss(batch, epoch_generator(4, 0))
    errors = []
    with torch.no_grad():
        for b in range(3):
            u = int(users[b])
            f_u = model.user_tower(model.pref_users_[u:u + 1])[0]
            for k in range(3):
                v = int(items[b, k])
                pref = model.pref_items_[v:v + 1] * (1.0 - dropout)  # dropout 1 zeroes every V_v
                f_v = model.content_features(items[b, k:k + 1], pref)[0]
                target = float(model.pref_users_[u] @ model.pref_items_[v])
                errors.append((target - float(f_u @ f_v)) ** 2)
    assert abs(loss.item() - sum(errors) / len(errors)) < 1e-5


def test_cold_items_are_scored_without_a_preference_vector(synthetic_split):
    model = _model(synthetic_split)
    model.eval()
    scores = model.score(torch.arange(3))
    cold = torch.nonzero(~model.warm_items_).flatten()
    warm = torch.nonzero(model.warm_items_).flatten()
    with torch.no_grad():
        f_u = model.user_tower(model.pref_users_[:3])
        torch.testing.assert_close(scores[:, cold], f_u @ model.content_features(cold).T)
        torch.testing.assert_close(scores[:, warm], f_u @ model.content_features(warm, model.pref_items_[warm]).T)
    assert not any(p is model.pref_items_ for p in model.parameters())  # the targets are not trained
