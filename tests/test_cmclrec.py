"""CMCLRec: Eq. 15 and Eq. 16 composed from their terms, the set loss against a loop, cold users read the
simulated sequence, the ablations, and two-stage training resumes exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from coldstart.data.sequences import disjoint_masks, masked_views
from coldstart.data.splits import make_split
from coldstart.errors import DataError
from coldstart.experiments import seed_everything
from coldstart.models import MODELS
from coldstart.models.sasrec import next_item_loss
from coldstart.nn.losses import cosine_info_nce, median_bandwidth, mmd, reconstruction
from coldstart.train import TrainOptions
from tests.conftest import interrupt_at

SMALL = {"max_len": 6, "feature_hidden": 16, "dim_E": 16, "code_dim": 8, "dropout": 0.0}


@pytest.fixture(scope="module")
def cold_user_split(synthetic):
    return make_split(synthetic, "cold_user", seed=1)


def fitted(split, **hyper):
    seed_everything(0)
    return MODELS["cmclrec"](**{"num_epoch": 1, "pre_epochs": 1, **SMALL, **hyper}).fit(split)


def built(split, **hyper):
    """An untrained model, prepared for the split as fit() would leave it (for loss and scoring tests)."""
    import numpy as np

    seed_everything(0)
    m = MODELS["cmclrec"](**{**SMALL, **hyper})
    m.dims_ = m.dims_for(split)
    m.build(m.dims_)
    train = split.matrix("train")
    m.seen_indptr_ = torch.from_numpy(train.indptr.astype(np.int64))
    m.seen_indices_ = torch.from_numpy(train.indices.astype(np.int64))
    m.prepare(split)
    return m


@pytest.fixture(scope="module")
def model(cold_user_split):
    return fitted(cold_user_split)


def test_pretrain_loss_is_equation_15(model):
    model.train()
    cfg, users = model.config, model.train_users_[:10]
    items = model.windows_[users][:, 1:]
    loss, _ = model.pretrain_loss(users, items, torch.Generator().manual_seed(5))
    # the same draws, in the same order, by hand
    g = torch.Generator().manual_seed(5)
    dense, cols, offsets, weights = model.user_content(users)
    d1, d2 = disjoint_masks(dense != 0, cfg.mask_rate, g)
    s1, s2 = disjoint_masks(weights != 0, cfg.mask_rate, g)
    h_f1 = model.feature_encoder(dense.masked_fill(d1, 0), cols, offsets, weights.masked_fill(s1, 0)).flatten(1)
    h_f2 = model.feature_encoder(dense.masked_fill(d2, 0), cols, offsets, weights.masked_fill(s2, 0)).flatten(1)
    v1, v2 = masked_views(items, cfg.mask_rate, model.dims_["n_items"] + 1, g)
    l_cf = cosine_info_nce(h_f1, h_f2, cfg.temperature)  # Eq. 3
    l_cs = cosine_info_nce(model.encode_sequence(v1)[:, -1], model.encode_sequence(v2)[:, -1], cfg.temperature)
    t_s = model.attention_s(model.encode_sequence(items), items != 0) * (items != 0)[..., None]
    t_f = model.attention_f(model.feature_encoder(dense, cols, offsets, weights))
    p_s, p_f = model.autoencoder_s.encode(t_s), model.autoencoder_f.encode(t_f)
    l_s = reconstruction(model.autoencoder_s.decode(p_s), t_s)  # Eq. 8
    l_f = reconstruction(model.autoencoder_f.decode(p_f), t_f)
    l_cross = mmd(p_s, p_f, median_bandwidth(p_s, p_f)) + reconstruction(model.autoencoder_s.decode(p_s), t_f)
    expected = cfg.alpha * l_cf + cfg.beta * l_cs + l_s + l_f + cfg.lambda_cross * l_cross  # Eqs. 11, 15
    torch.testing.assert_close(loss, expected)


def test_fine_tuning_loss_is_equation_16_for_warm_and_simulated_users(cold_user_split):
    for rate in (0.0, 1.0):
        m = built(cold_user_split, cold_rate=rate)
        m.train()
        batch = m.train_users_[:8]
        loss, parts = m.loss(batch, torch.Generator().manual_seed(1))
        g = torch.Generator().manual_seed(1)
        torch.rand(len(batch), generator=g)  # loss() draws the cold flags first
        pre, _ = m.pretrain_loss(batch, m.windows_[batch][:, :-1], g)
        window = m.windows_[batch]
        items = m.backbone.item_vectors(m.dims_["n_items"])
        if rate == 0.0:  # every user reads T_s of the real sequence
            inputs = window[:, :-1]
            x = m.sequence_input(m.encode_sequence(inputs), inputs != 0)
            rec = next_item_loss(m.backbone.run(x, inputs != 0), inputs != 0, window[:, 1:], items)
        else:  # every user reads the simulated sequence D_s(E_f(T_f))
            x = m.simulated_sequence(m.user_content(batch))
            g = m.backbone.run(x, torch.ones(x.shape[:2], dtype=torch.bool))[:, -1]
            rec = m.set_loss(g, batch, items)
        assert parts["pre"] == pytest.approx(pre.item(), rel=1e-5)
        torch.testing.assert_close(loss, m.config.eta * pre + rec, rtol=1e-5, atol=1e-5)


def test_set_loss_matches_a_loop(model):
    torch.manual_seed(0)
    users = model.train_users_[:3]
    g, items = torch.randn(3, 16), torch.randn(model.dims_["n_items"], 16)
    expected = 0.0
    for row, u in enumerate(users.tolist()):
        seen = model.seen_indices_[model.seen_indptr_[u]:model.seen_indptr_[u + 1]]
        expected += -F.log_softmax(g[row] @ items.T, 0)[seen].mean().item() / 3
    assert model.set_loss(g, users, items).item() == pytest.approx(expected, rel=1e-5)


def test_cold_users_read_the_simulated_sequence_and_warm_users_their_own(model, cold_user_split):
    model.eval()
    cold = torch.from_numpy(cold_user_split.cold_users[:3])
    warm = model.train_users_[:3]
    with torch.no_grad():
        items = model.backbone.item_vectors(model.dims_["n_items"])
        sim = model.simulated_sequence(model.user_content(cold))
        expected_cold = model.backbone.run(sim, torch.ones(sim.shape[:2], dtype=torch.bool))[:, -1] @ items.T
        recent = model.recent_[warm]
        real = model.sequence_input(model.encode_sequence(recent), recent != 0)
        expected_warm = model.backbone.run(real, recent != 0)[:, -1] @ items.T
    assert model.cold_users == "content"
    torch.testing.assert_close(model.rank_scores(cold), expected_cold)
    torch.testing.assert_close(model.score(warm), expected_warm)
    assert not torch.allclose(model.score(cold)[0], model.score(cold)[1])  # users differ by their features


@pytest.mark.parametrize("ablation", ["noda", "nocl", "none"])
def test_ablations(cold_user_split, ablation):
    m = built(cold_user_split, ablation=ablation)
    m.train()
    _, parts = m.pretrain_loss(m.train_users_[:8], m.windows_[m.train_users_[:8]][:, 1:], torch.Generator())
    assert ("cl_f" in parts) == (ablation == "nocl")  # data augmentation kept only by NoCL
    assert ("mmd" in parts) == (ablation == "noda")  # the cross-modal module kept only by NoDA
    assert hasattr(m, "linear_map") == (ablation in ("nocl", "none"))
    m.eval()
    assert torch.isfinite(m.rank_scores(torch.from_numpy(cold_user_split.cold_users))).all()


def test_bad_settings_are_rejected():
    for bad in ({"ablation": "nope"}, {"backbone": "gru"}, {"mask_rate": 0.7}, {"cold_rate": 2.0}):
        with pytest.raises(DataError):
            MODELS["cmclrec"](**bad)


def _fit_with_checkpoints(split, folder):
    seed_everything(0)
    hyper = {**SMALL, "dropout": 0.2, "num_epoch": 2, "pre_epochs": 1, "patience": 5}
    return MODELS["cmclrec"](**hyper).fit(split, TrainOptions(folder, seed=1))


@pytest.fixture(scope="module")
def uninterrupted(cold_user_split, tmp_path_factory):
    folder = tmp_path_factory.mktemp("whole")
    model = _fit_with_checkpoints(cold_user_split, folder)
    assert (folder / "pretrain" / "checkpoint.pt").exists() and (folder / "checkpoint.pt").exists()
    return model


@pytest.mark.parametrize("stop_at", [2, 3])  # right after stage 1 (stage 2's first epoch), inside stage 2
def test_two_stages_resume_exactly(cold_user_split, uninterrupted, tmp_path, monkeypatch, stop_at):
    from coldstart import train

    real_epoch = train.train_epoch
    interrupt_at(monkeypatch, stop_at)
    with pytest.raises(KeyboardInterrupt):
        _fit_with_checkpoints(cold_user_split, tmp_path / "cut")
    counted = []
    monkeypatch.setattr(train, "train_epoch", lambda *a, **k: (counted.append(1), real_epoch(*a, **k))[1])
    resumed = _fit_with_checkpoints(cold_user_split, tmp_path / "cut")
    assert len(counted) == 3 - (stop_at - 1)  # only the interrupted epoch and those after it run again
    users = torch.arange(cold_user_split.n_users)
    assert torch.equal(uninterrupted.rank_scores(users), resumed.rank_scores(users))
    a, b = uninterrupted.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
