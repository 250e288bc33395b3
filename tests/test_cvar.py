"""CVAR (SIGIR'22): its loss terms against their formulas on hand-made tensors, and cold scores from content."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from coldstart.errors import DataError
from coldstart.experiments import seed_everything
from coldstart.models.cvar import CVAR, gaussian_kl, gaussian_w2, reparameterize
from coldstart.nn.losses import bpr
from tests.conftest import interrupt_at


def naive_kl(mu_q, var_q, mu_p, var_p):
    """KL of two diagonal Gaussians from the univariate formula, dimension by dimension in plain Python."""
    total = 0.0
    for mq, vq, mp, vp in zip(mu_q, var_q, mu_p, var_p):
        total += math.log(math.sqrt(vp) / math.sqrt(vq)) + (vq + (mq - mp) ** 2) / (2 * vp) - 0.5
    return total


def test_gaussian_kl_matches_the_univariate_formula():
    mu_q, var_q = [0.3, -1.2, 2.0], [0.5, 2.0, 1.5]
    mu_p, var_p = [0.0, 0.4, 1.0], [1.0, 0.25, 3.0]
    kl = gaussian_kl(torch.tensor([mu_q]), torch.tensor([var_q]).log(), torch.tensor([mu_p]), torch.tensor([var_p]).log())
    assert kl.shape == (1,)
    assert kl.item() == pytest.approx(naive_kl(mu_q, var_q, mu_p, var_p), rel=1e-5)
    # Without a second Gaussian it is the standard normal; a Gaussian has no divergence from itself.
    std = gaussian_kl(torch.tensor([mu_q]), torch.tensor([var_q]).log())
    assert std.item() == pytest.approx(naive_kl(mu_q, var_q, [0.0] * 3, [1.0] * 3), rel=1e-5)
    same = gaussian_kl(torch.tensor([mu_p]), torch.tensor([var_p]).log(), torch.tensor([mu_p]), torch.tensor([var_p]).log())
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_gaussian_kl_against_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(4, 5, generator=gen, dtype=torch.float64) for _ in range(4))
    q = torch.distributions.Normal(mu_q, (0.5 * lv_q).exp())
    p = torch.distributions.Normal(mu_p, (0.5 * lv_p).exp())
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mu_q, lv_q, mu_p, lv_p), expected)


def test_gaussian_w2_by_hand():
    # means differ by (3, 4) -> 25; standard deviations 1 vs 2 and 3 vs 1 -> 1 + 4 = 5.
    mu_q, mu_p = torch.tensor([[3.0, 4.0]]), torch.zeros(1, 2)
    lv_q, lv_p = torch.tensor([[1.0, 9.0]]).log(), torch.tensor([[4.0, 1.0]]).log()
    assert gaussian_w2(mu_q, lv_q, mu_p, lv_p).item() == pytest.approx(30.0, rel=1e-6)


def test_reparameterisation_shape_and_moments():
    mu = torch.tensor([[1.0, -2.0, 0.5]]).expand(20000, 3)
    logvar = torch.tensor([[0.0, math.log(4.0), math.log(0.25)]]).expand(20000, 3)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    assert z.shape == (20000, 3)
    assert torch.allclose(z.mean(0), mu[0], atol=0.05)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 2.0, 0.5]), atol=0.05)
    again = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    assert torch.equal(z, again)  # the epoch's generator fixes the noise: resume replays it


@pytest.fixture(scope="module")
def fitted(synthetic_split):
    seed_everything(0)
    return CVAR(num_epoch=3, latent_dim=4, vae_hidden=8, hidden=16, dim_E=8).fit(synthetic_split)


def test_losses_match_their_formulas(fitted):
    model = fitted
    cfg = model.config
    users = torch.tensor([0, 1, 2])
    items = torch.tensor([[0, 3], [3, 5], [1, 0]])  # [B, 1 + K], item 0 and 3 repeat
    torch.manual_seed(0)
    terms = model.losses(users, items, torch.Generator().manual_seed(7))
    # Rebuild every term by hand from the same noise (drawn once per distinct item, ascending ids).
    unique = torch.tensor([0, 1, 3, 5])
    e = model.item_embedding[unique]
    out = model.posterior(e)
    mu, lv = out[:, :4], out[:, 4:].clamp(-10, 10)
    prior = model.content_features(unique)
    mu_p, lv_p = prior[:, :4], prior[:, 4:].clamp(-10, 10)
    eps = torch.randn(4, 4, generator=torch.Generator().manual_seed(7))
    e_hat = model.decoder(mu + (0.5 * lv).exp() * eps)
    recon = ((e_hat - e) ** 2).sum(1).mean()
    kl = (0.5 * (lv.exp() + mu**2 - 1 - lv).sum(1)).mean()
    w2 = (((mu - mu_p) ** 2).sum(1) + (((0.5 * lv).exp() - (0.5 * lv_p).exp()) ** 2).sum(1)).mean()
    pos = {0: 0, 1: 1, 3: 2, 5: 3}
    p_u = model.user_embedding[users]
    s = torch.stack([torch.stack([p_u[b] @ e_hat[pos[int(i)]] for i in items[b]]) for b in range(3)])
    main = torch.log1p(torch.exp(s[:, 1:] - s[:, :1])).mean()
    for name, want in (("recon", recon), ("kl", kl), ("align", w2), ("main", main)):
        assert terms[name].item() == pytest.approx(want.item(), rel=1e-4, abs=1e-6), name
    total = cfg.main_weight * main + cfg.recon_weight * recon + cfg.kl_weight * kl + cfg.align_weight * w2
    assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-4)
    assert bpr(s[:, :1], s[:, 1:]).item() == pytest.approx(main.item(), rel=1e-5)


def test_backbone_is_frozen_and_warm_scores_are_the_backbone(fitted, synthetic_split):
    model = fitted
    assert not model.user_embedding.requires_grad and not model.item_embedding.requires_grad
    warm = torch.from_numpy(np.flatnonzero(synthetic_split.train_item_mask()))
    scores = model.score(torch.arange(3), warm)
    assert torch.allclose(scores, model.user_embedding[:3] @ model.item_embedding[warm].T, atol=1e-6)


def test_cold_scores_depend_on_content(fitted, synthetic_split):
    model = fitted
    cold = torch.from_numpy(synthetic_split.cold_items)
    before = model.score(torch.arange(5), cold).clone()
    assert torch.isfinite(before).all()
    assert before.std() > 0  # different content, different vectors
    with torch.no_grad():
        model.content_dense_[cold] = torch.flip(model.content_dense_[cold], [0])
    model.train(False)  # drop the inference cache
    after = model.score(torch.arange(5), cold)
    assert not torch.allclose(before, after)
    with torch.no_grad():
        model.content_dense_[cold] = torch.flip(model.content_dense_[cold], [0])  # restore for other tests
    model.train(False)
    assert torch.allclose(model.score(torch.arange(5), cold), before)


def test_new_item_embeddings_decode_the_prior_mean(fitted, synthetic_split):
    model = fitted
    names = model.spec_.names
    dataset = synthetic_split.dataset
    cold = synthetic_split.cold_items[:3]
    feats = {n: dataset.item_features[n].take(cold) for n in names}  # dense content and multi-hot topics
    vecs = model.item_embeddings(feats)
    assert vecs.shape == (3, model.config.dim_E)
    model.train(False)
    _, items = model.inference_vectors()
    assert torch.allclose(vecs, items[torch.from_numpy(cold)], atol=1e-5)


def test_bad_settings_are_data_errors():
    with pytest.raises(DataError):
        CVAR(align="mmd")
    with pytest.raises(DataError):
        CVAR(latent_dim=0)
    with pytest.raises(DataError):
        CVAR(kl_weight=-1.0)


@pytest.mark.parametrize("stop_at", [2, 6])  # an epoch of stage 1 (MF-BPR), an epoch of stage 2 (the CVAE)
def test_resumes_inside_either_stage_bit_for_bit(synthetic_split, tmp_path, monkeypatch, stop_at):
    from coldstart import train
    from coldstart.train import TrainOptions

    def fit(folder):
        seed_everything(0)
        return CVAR(num_epoch=4, latent_dim=4, vae_hidden=8, hidden=16, dim_E=8).fit(synthetic_split, TrainOptions(folder, seed=1))

    whole = fit(tmp_path / "whole")
    real_epoch = train.train_epoch
    interrupt_at(monkeypatch, stop_at)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "cut")
    monkeypatch.setattr(train, "train_epoch", real_epoch)
    resumed = fit(tmp_path / "cut")
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
