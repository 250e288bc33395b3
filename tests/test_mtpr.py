"""MTPR: the four pairwise terms against their formula on a tiny batch, and counterfactual cold items."""

from __future__ import annotations

import math

import torch

from coldstart.train import epoch_generator
from tests.conftest import trained


def _model(split, **hyper):
    return trained("mtpr", split, num_epoch=2, **hyper)


def test_loss_equals_the_four_bpr_terms(synthetic_split):
    model = _model(synthetic_split, num_neg=2, reg_weight=0.0)
    batch = torch.arange(3)
    users, items = model.batch_pairs(batch, 2, epoch_generator(6, 0))
    loss, _ = model.loss(batch, epoch_generator(6, 0))

    def vec(i: int, counterfactual: bool) -> torch.Tensor:
        e = torch.zeros(model.config.dim_E) if counterfactual else model.item_embedding[i]
        return torch.cat([e, model.content_features(torch.tensor([i]))[0]])

    total = 0.0
    with torch.no_grad():
        for pos_cf, neg_cf in ((False, False), (True, True), (False, True), (True, False)):
            terms = []
            for b in range(3):
                w = torch.cat([model.user_embedding[users[b]], model.user_content[users[b]]])
                for k in (1, 2):
                    diff = float(w @ vec(int(items[b, 0]), pos_cf) - w @ vec(int(items[b, k]), neg_cf))
                    terms.append(-math.log(1 / (1 + math.exp(-diff))))
            total += sum(terms) / len(terms)
    assert abs(loss.item() - total) < 1e-5


def test_cold_items_use_the_counterfactual_representation(synthetic_split):
    model = _model(synthetic_split)
    model.eval()
    scores = model.score(torch.arange(3))
    cold = torch.nonzero(~model.warm_items_).flatten()
    with torch.no_grad():
        torch.testing.assert_close(scores[:, cold], model.user_content[:3] @ model.content_features(cold).T)
