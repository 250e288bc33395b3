"""Losses against direct implementations of their formulas (CLCRec Eq. 5, BPR) on tiny batches."""

from __future__ import annotations

import math

import torch

from coldstart.experiments import seed_everything
from coldstart.models import MODELS
from coldstart.nn.losses import bpr, info_nce
from coldstart.train import epoch_generator


def test_info_nce_matches_the_formula_and_survives_huge_logits():
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.5, 3.0, 0.0]], dtype=torch.float64)
    direct = sum(-math.log(math.exp(r[0]) / sum(math.exp(x) for x in r)) for r in logits.tolist()) / 2
    assert abs(info_nce(logits).item() - direct) < 1e-12
    huge = torch.tensor([[1e4, 1e4 - 1.0, 0.0]])  # exp(1e4) overflows; the official exp-then-log gives nan
    assert torch.isnan(-torch.log(torch.exp(huge[:, 0]) / torch.exp(huge).sum(1))).all()
    assert abs(info_nce(huge).item() - math.log(1 + math.exp(-1.0))) < 1e-3  # float32 spacing at 1e4 is 1e-3


def test_bpr_matches_the_formula():
    pos, neg = torch.tensor([1.0, -0.5]), torch.tensor([0.0, 2.0])
    direct = -(math.log(1 / (1 + math.exp(-1.0))) + math.log(1 / (1 + math.exp(2.5)))) / 2
    assert abs(bpr(pos, neg).item() - direct) < 1e-6


def _clcrec(split, **hyper):
    seed_everything(0)
    model = MODELS["clcrec"](num_epoch=1, **hyper).fit(split)
    model.train()
    return model


def _eq5_by_hand(model, batch, generator):
    """Eq. 5 written out term by term with Python loops over rows and negatives."""
    cfg = model.config
    tau = cfg.temp_value
    users, items = model.batch_pairs(batch, cfg.num_neg, generator)
    swap = torch.rand(items.shape, generator=generator) < cfg.num_sample
    z_users, z_items = model.encode()
    f = model.content_features(torch.arange(model.dims_["n_items"]))
    ui, re = [], []
    for b in range(len(users)):
        u = z_users[users[b]]
        vec = [f[j] if swap[b, k] else z_items[j] for k, j in enumerate(items[b].tolist())]
        g = [torch.exp(u @ v / tau) for v in vec]  # density ratio g (Eq. 10)
        ui.append(-torch.log(g[0] / sum(g)))
        zi = z_items[items[b, 0]]
        h = [torch.exp(torch.dot(zi, f[j]) / (zi.norm() * f[j].norm()) / tau) for j in items[b].tolist()]  # Eq. 12
        re.append(-torch.log(h[0] / sum(h)))
    l_ui, l_re = torch.stack(ui).mean(), torch.stack(re).mean()
    # The official CLCRec regulariser: mean L2 norm (not squared) of the user rows and of the item slots, halved.
    reg = (model.user_embedding[users].norm(dim=1).mean() + model.item_embedding[items].norm(dim=2).mean()) / 2
    return cfg.lr_lambda * l_re + (1 - cfg.lr_lambda) * l_ui + cfg.reg_weight * reg


def test_clcrec_loss_equals_eq5_on_a_tiny_batch(synthetic_split):
    for encoder in ("mf", "lightgcn"):
        model = _clcrec(synthetic_split, num_neg=5, num_sample=0.5, lr_lambda=0.3, encoder=encoder, n_layers=2)
        batch = torch.arange(6)
        loss, parts = model.loss(batch, epoch_generator(7, 0))
        by_hand = _eq5_by_hand(model, batch, epoch_generator(7, 0))
        assert torch.allclose(loss, by_hand, rtol=1e-5, atol=1e-6), (encoder, loss.item(), by_hand.item())
        assert set(parts) == {"loss", "ui", "re", "reg"}


def test_clcrec_loss_is_finite_where_exp_overflows(synthetic_split):
    model = _clcrec(synthetic_split, num_neg=4, temp_value=0.05)
    with torch.no_grad():
        model.user_embedding.mul_(1e3)
        model.item_embedding.mul_(1e3)
    loss, _ = model.loss(torch.arange(8), epoch_generator(0, 0))
    assert torch.isfinite(loss)
