"""CIERec (issue 14): each gate, the LSTM fusion, the DQN gate's update and reward, Eq. 8 for MF and VBPR
against hand computations; the interaction_boundary split; sampled evaluation with repeats against a naive
reference; privileged annotations at test; Adagrad with its decay; exact resume with R's optimiser state."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from coldstart.data.dataset import from_frame
from coldstart.data.modalities import Image
from coldstart.data.splits import Split, make_split
from coldstart.errors import DataError
from coldstart.eval.evaluate import draw_user_negatives, evaluate_sampled, evaluate_scores
from coldstart.experiments import seed_everything
from coldstart.models import MODELS
from coldstart.nn.cierec import GradientGate, InferenceGate, SemanticFusion, VisualEncoder, VisualGate

TINY = {"num_epoch": 2, "annotations": ["topic"], "min_label_count": 1, "batch_size": 256}


def make(**hyper):
    """A small CIERec: TINY's settings overridden by `hyper`."""
    return MODELS["cierec"](**{**TINY, **hyper})


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def leaky(x):
    return np.where(x > 0, x, 0.01 * x)


def l2n(x):
    return x / max(np.linalg.norm(x), 1e-12)


# -- gates against the literal formulas ------------------------------------------------------------------------
def test_visual_gate_eq3_by_hand():
    torch.manual_seed(0)
    gate = VisualGate(3, 4, 2)
    p, e = torch.randn(3), torch.randn(4)
    W, b = gate.delta.weight.detach().numpy(), gate.delta.bias.detach().numpy()
    g = gate.gate.detach().numpy()
    delta = W @ np.concatenate([p.numpy(), e.numpy(), g]) + b  # delta(p || e || g_v)
    inner = l2n(e.numpy() * delta)
    want = leaky(gate.mlp.weight.detach().numpy() @ inner + gate.mlp.bias.detach().numpy())
    assert np.allclose(gate(p, e).detach().numpy(), want, atol=1e-6)
    # broadcasting users [B, 1, D] against items [1, I, De] gives the pair-wise formula
    P, E = torch.randn(2, 3), torch.randn(5, 4)
    out = gate(P[:, None], E[None])
    assert out.shape == (2, 5, 2)
    assert torch.allclose(out[1, 3], gate(P[1], E[3]), atol=1e-6)


def test_inference_gate_eq4_by_hand():
    torch.manual_seed(1)
    gate = InferenceGate(4)
    e = torch.randn(4)
    W, b, g = gate.delta.weight.detach().numpy(), gate.delta.bias.detach().numpy(), gate.gate.detach().numpy()
    want = l2n(e.numpy() * (W @ np.concatenate([e.numpy(), g]) + b))
    got = gate(e).detach().numpy()
    assert np.allclose(got, want, atol=1e-6) and abs(np.linalg.norm(got) - 1) < 1e-5
    assert torch.equal(gate(torch.zeros(4)), torch.zeros(4))  # the max(., eps) guard: no NaN


def lstm_by_hand(lstm, xs):
    """PyTorch's LSTM cell (gates i, f, g, o) written out in NumPy."""
    w_ih, w_hh = lstm.weight_ih_l0.detach().numpy(), lstm.weight_hh_l0.detach().numpy()
    b = lstm.bias_ih_l0.detach().numpy() + lstm.bias_hh_l0.detach().numpy()
    n = w_hh.shape[1]
    h, c = np.zeros(n), np.zeros(n)
    for x in xs:
        z = w_ih @ x + w_hh @ h + b
        i, f, g, o = sigmoid(z[:n]), sigmoid(z[n:2 * n]), np.tanh(z[2 * n:3 * n]), sigmoid(z[3 * n:])
        c = f * c + i * g
        h = o * np.tanh(c)
    return h


def test_semantic_fusion_eq5_by_hand():
    torch.manual_seed(2)
    fusion = SemanticFusion(4, 3, n_elements=6)
    c = torch.randn(2, 4)
    cols, offsets = torch.tensor([1, 4, 2]), torch.tensor([0, 2])  # row 0: elements 1, 4; row 1: element 2
    s_hat = fusion.annotation(cols, offsets)
    table = fusion.elements.weight.detach().numpy()
    assert np.allclose(s_hat[0].detach().numpy(), (table[1] + table[4]) / 2, atol=1e-6)  # mean of elements
    present = torch.tensor([True, False])
    out = fusion(c, s_hat, present).detach().numpy()
    assert np.allclose(out[0], lstm_by_hand(fusion.lstm, [c[0].numpy(), s_hat[0].detach().numpy()]), atol=1e-5)
    # absent annotations: the one-step sequence (c_i), by hand and through the None path
    assert np.allclose(out[1], lstm_by_hand(fusion.lstm, [c[1].numpy()]), atol=1e-5)
    assert np.allclose(fusion(c, None, None).detach().numpy()[1], out[1], atol=1e-6)


def test_visual_encoder_normalises_pixels_like_efficientnet_lite():
    class Probe(torch.nn.Module):
        def extract_features(self, x):
            self.seen = x
            return x  # [n, 3, S, S]: pooled = per-channel mean

    enc = VisualEncoder(3, 2, backbone=Probe())
    pixels = torch.tensor([[[[0, 255]], [[127, 127]], [[255, 255]]]], dtype=torch.uint8)  # [1, 3, 1, 2]
    pooled = enc.pooled(pixels)
    assert torch.allclose(enc.backbone.seen, (pixels.float() - 127) / 128)
    assert torch.allclose(pooled, torch.tensor([[(-127 / 128 + 1) / 2, 0.0, 1.0]]))


# -- R: the DQN gradient gate ----------------------------------------------------------------------------------
def test_gradient_gate_action_reward_and_update_by_hand():
    gate = GradientGate(lr=0.01, epsilon=0.0)
    with torch.no_grad():
        gate.policy.weight.zero_()
        gate.policy.bias.copy_(torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]))
    state0 = gate.state.clone()
    assert torch.allclose(state0, torch.full((5,), 0.2))
    scale = gate.act(None)
    probs = np.exp([0, 0, 1, 0, 0]) / np.exp([0, 0, 1, 0, 0]).sum()
    assert scale == 1.0 and gate.pending[1] == 2  # argmax: action 2, factor SCALES[2]
    assert np.allclose(gate.state.numpy(), probs, atol=1e-6)  # the next state is s^(t)
    # Eq. 6 with J = exp(-L^(t+1)): L_dqn = -log sigmoid(s_max * J)
    branch_loss = 0.7
    want = -math.log(sigmoid(probs[2] * math.exp(-branch_loss)))
    before = gate.policy.bias.detach().clone()
    got = gate.update(branch_loss)
    assert abs(got - want) < 1e-6 and gate.pending is None
    # Adam's first step moves every parameter by lr * sign(grad); the chosen action's logit goes up
    after = gate.policy.bias.detach()
    assert after[2] - before[2] == pytest.approx(0.01, rel=1e-3)
    assert torch.allclose(after[[0, 1, 3, 4]] - before[[0, 1, 3, 4]], torch.full((4,), -0.01), rtol=1e-3)
    assert gate.update(0.5) is None  # nothing pending: no step


def test_gradient_gate_reward_is_larger_for_a_lower_loss():
    grads = []
    for loss in (0.1, 2.0):
        prob = torch.tensor(0.4, requires_grad=True)
        GradientGate.dqn_loss(prob, torch.tensor(math.exp(-loss))).backward()
        grads.append(-float(prob.grad))
    assert grads[0] > grads[1] > 0  # always reinforces, more after a low branch loss


def test_gradient_gate_extra_state_round_trip():
    gate = GradientGate(epsilon=0.5)
    gen = torch.Generator().manual_seed(0)
    for loss in (0.5, 0.6, 0.4):
        gate.update(loss)
        gate.act(gen)
    other = GradientGate(epsilon=0.5)
    other.load_state_dict(gate.state_dict())
    assert torch.equal(other.state, gate.state) and other.pending[1] == gate.pending[1]
    gate.update(0.3), other.update(0.3)
    assert torch.equal(other.policy.weight, gate.policy.weight)  # same Adam moments -> same step


def test_gradient_hooks_scale_each_branch_into_the_encoder(synthetic_split):
    model = make(ablation="gr", num_epoch=1).fit(synthetic_split)
    model.train()
    model.prepare(synthetic_split)
    grads = {}
    for factor in (0.0, 1.0):
        for gate in (model.gate_v, model.gate_s):
            gate.act = lambda generator, f=factor: f  # force R's action
        loss, _ = model.loss(torch.arange(64), torch.Generator().manual_seed(0))
        model.zero_grad()
        loss.backward()
        grads[factor] = model.encoder.head.weight.grad.clone()
    assert torch.count_nonzero(grads[0.0]) == 0  # both branches cut: E gets no gradient (MF: e feeds v, s only)
    assert torch.count_nonzero(grads[1.0]) > 0


# -- Eq. 8 -----------------------------------------------------------------------------------------------------
def hand_score(model, u: int, i: int) -> float:
    """Eq. 3-8 for one (user, item) with concatenations written out, from the model's parameters."""
    P = lambda t: t.detach().numpy()  # noqa: E731
    cfg = model.config
    p, q = P(model.user_embedding)[u], P(model.item_embedding)[i] * bool(model.warm_items_[i])
    e = P(model.encoder.head.weight) @ P(model.visual_input_)[i] + P(model.encoder.head.bias)
    g = model.visual_gate
    delta = P(g.delta.weight) @ np.concatenate([p, e, P(g.gate)]) + P(g.delta.bias)
    v = leaky(P(g.mlp.weight) @ l2n(e * delta) + P(g.mlp.bias))
    ig = model.inference_gate
    c = l2n(e * (P(ig.delta.weight) @ np.concatenate([e, P(ig.gate)]) + P(ig.delta.bias)))
    s = lstm_by_hand(model.fusion_semantic.lstm, [c])  # test_annotations="absent"
    f = leaky(P(model.fuse.weight) @ np.concatenate([q, v, s]) + P(model.fuse.bias))
    y = float(P(model.alpha)) + P(model.user_bias)[u] + P(model.item_bias)[i] * bool(model.warm_items_[i]) + p @ f
    if cfg.backbone == "vbpr":
        y += P(model.content_bias.weight)[0] @ c + P(model.user_content)[u] @ c
    return float(y)


@pytest.mark.parametrize("backbone", ["mf", "vbpr"])
def test_eq8_scores_by_hand(synthetic_split, backbone):
    seed_everything(0)
    model = make(backbone=backbone).fit(synthetic_split)
    with torch.no_grad():
        model.alpha.fill_(0.3)
        model.user_bias.normal_()
        model.item_bias.normal_()
    model.eval()
    model._items_cache = None
    scores = model.score(torch.tensor([0, 5]))
    cold = int(synthetic_split.cold_items[0])
    for row, u in enumerate([0, 5]):
        for i in (1, 7, cold):
            assert scores[row, i].item() == pytest.approx(hand_score(model, u, i), abs=1e-4)
    # the training path (pair_scores on a batch) gives the same numbers as score()
    model.train()
    model.eval()
    parts = model.inference_parts()
    slots = torch.tensor([[1, 7], [7, cold]])
    pair = model.pair_scores(torch.tensor([0, 5]), parts, slots)[0]
    assert torch.allclose(pair, torch.stack([scores[0, [1, 7]], scores[1, [7, cold]]]), atol=1e-5)


@pytest.mark.parametrize("ablation", ["base", "ci"])
def test_lower_ablation_levels_score_consistently(synthetic_split, ablation):
    for backbone in ("mf", "vbpr"):
        model = make(num_epoch=1, backbone=backbone, ablation=ablation).fit(synthetic_split)
        parts = model.inference_parts()
        full = model.score(torch.tensor([2, 3]))
        pair = model.pair_scores(torch.tensor([2, 3]), parts, torch.tensor([[4, 9], [0, 1]]))[0]
        assert torch.allclose(pair, torch.stack([full[0, [4, 9]], full[1, [0, 1]]]), atol=1e-5)


# -- privileged annotations --------------------------------------------------------------------------------------
def test_annotations_are_privileged_unless_asked_for_at_test(synthetic_split):
    seed_everything(0)
    absent = make().fit(synthetic_split)
    users = torch.arange(4)
    before = absent.score(users)
    with torch.no_grad():
        absent.fusion_semantic.elements.weight.normal_()  # other annotation embeddings
    absent._items_cache = None
    assert torch.equal(absent.score(users), before)  # never read at inference
    absent.config = dataclasses.replace(absent.config, test_annotations="present")
    absent._items_cache = None
    assert not torch.allclose(absent.score(users), before)


def test_mf_semantics_reads_annotations(synthetic_split):
    model = make(ablation="base", base_input="semantics").fit(synthetic_split)
    assert model.annot_indices_.numel() > 0
    before = model.score(torch.arange(3))
    with torch.no_grad():
        model.fusion_semantic.elements.weight.normal_()
    model._items_cache = None
    assert not torch.allclose(model.score(torch.arange(3)), before)


# -- optimiser and resume ----------------------------------------------------------------------------------------
def test_adagrad_with_step_decay_and_r_outside_it(synthetic_split):
    model = make(ablation="gr", num_epoch=1, lr_decay=0.5, decay_every=4).fit(synthetic_split)
    opt = model.make_optimizer()
    assert isinstance(opt, torch.optim.Adagrad)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in model.gate_parameters())
    assert [model.lr_scale(x) for x in (0.0, 3.99, 4.0, 8.5)] == [1.0, 1.0, 0.5, 0.25]
    assert model.gate_v.optimizer().param_groups[0]["lr"] == pytest.approx(model.config.dqn_lr * 0.25)


def test_resume_is_exact_with_r_state(synthetic_split, tmp_path):
    from coldstart.train import TrainOptions

    hyper = {**TINY, "num_epoch": 2, "ablation": "pi"}
    seed_everything(0)
    straight = MODELS["cierec"](**hyper)
    straight.fit(synthetic_split, TrainOptions(tmp_path / "a", seed=7, valid_scenario=None))
    seed_everything(0)
    first = MODELS["cierec"](**{**hyper, "num_epoch": 1})
    first.fit(synthetic_split, TrainOptions(tmp_path / "b", seed=7, valid_scenario=None))
    seed_everything(1)  # another global state: the resumed epoch must not depend on it
    resumed = MODELS["cierec"](**hyper)
    resumed.fit(synthetic_split, TrainOptions(tmp_path / "b", resume=True, seed=7, valid_scenario=None))
    assert torch.equal(resumed.score(torch.arange(6)), straight.score(torch.arange(6)))
    assert torch.equal(resumed.gate_v.policy.weight, straight.gate_v.policy.weight)


def test_finetune_uses_the_cached_pixels(synthetic, monkeypatch, tmp_path):
    """Fine-tuning reads posters decoded once (features/raw.poster_pixels), never per batch; synthetic pixels."""
    import coldstart.features.raw as raw
    import coldstart.models.cierec as cierec_module

    n = synthetic.n_items
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n, 3, 8, 8), dtype=np.uint8)
    calls = []

    def fake_pixels(images, size, progress=False):
        calls.append(size)
        return pixels, np.ones(n, bool)

    class TinyNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1280, 3)

        def extract_features(self, x):
            return self.conv(x)

    monkeypatch.setattr(raw, "poster_pixels", fake_pixels)
    monkeypatch.setattr(cierec_module, "load_backbone", TinyNet)
    features = {**synthetic.item_features, "poster": Image([None] * n, tmp_path)}
    split = make_split(dataclasses.replace(synthetic, item_features=features), "cold_item", seed=1)
    model = make(num_epoch=1, encoder="finetune", image_size=8, device="cpu").fit(split)
    assert calls == [8]
    assert model.finetune_ and model.visual_input_.abs().sum() > 0  # refreshed from the fine-tuned backbone
    assert torch.isfinite(model.score(torch.arange(3))).all()


def test_no_images_falls_back_loudly(synthetic_split, caplog):
    with caplog.at_level("WARNING", logger="coldstart"):
        make(num_epoch=1).fit(synthetic_split)
    assert "falling back to the dense item content" in caplog.text


def test_bad_settings_are_data_errors():
    for bad in ({"backbone": "bpr"}, {"ablation": "all"}, {"pi_dropout": 2.0}, {"test_annotations": "x"}):
        with pytest.raises(DataError):
            MODELS["cierec"](**bad)


# -- the interaction_boundary protocol ---------------------------------------------------------------------------
def boundary_dataset():
    """Items a, b, a2, b2, b3 popular (5-6 users), c, d, e rare (3, 3, 1); e is user 0's first item."""
    rows = []
    for u in range(6):
        for t, item in enumerate(["e" if u == 0 else "a", "b", "a2", "b2", "c" if u < 3 else "d", "b3"]):
            rows.append((f"u{u}", item, 100 * u + t))
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    return from_frame("toy", frame)


def test_interaction_boundary_split():
    ds = boundary_dataset()
    split = make_split(ds, "interaction_boundary", seed=0, boundary=3, ratios=(0.5, 1 / 6, 1 / 3))
    counts = np.bincount(ds.items, minlength=ds.n_items)
    assert set(ds.item_ids[split.cold_items]) == set(ds.item_ids[counts <= 3])  # c (3), d (3), e (1)
    for part in (split.train, split.valid, split.test):
        assert np.array_equal(part.cold, counts[part.items] <= 3)
    # per user: earliest 3 of 6 in train, the 4th in valid, the last 2 in test (time order)
    time = {(ds.users[r], ds.items[r]): ds.timestamps[r] for r in range(ds.n_interactions)}
    for u in range(ds.n_users):
        t_train = [time[(u, i)] for i in split.train.items[split.train.users == u]]
        t_test = [time[(u, i)] for i in split.test.items[split.test.users == u]]
        assert len(t_train) == 3 and len(t_test) == 2 and max(t_train) < min(t_test)
    warm = split.warm_item_mask()
    assert not warm[split.cold_items].any() and warm.sum() == ds.n_items - len(split.cold_items)
    # cold items may occur in train; the scenario is the item's set all the same
    assert split.train.cold.any()


def test_interaction_boundary_saved_split_round_trips(tmp_path):
    ds = boundary_dataset()
    split = make_split(ds, "interaction_boundary", seed=0, ratios=(0.5, 1 / 6, 1 / 3))
    back = Split.load(split.save(tmp_path / "s"), dataset=ds)
    assert np.array_equal(back.warm_item_mask(), split.warm_item_mask())
    with pytest.raises(DataError):
        make_split(ds, "interaction_boundary", boundary=-1)


# -- sampled evaluation, per user, with repeats ------------------------------------------------------------------
def naive_sampled(scores, split, scenario, n_neg, seeds, k):
    """Per user: positives + that repeat's negatives, sorted by score (ties: tie_rank); recall/ndcg averaged."""
    from coldstart.eval.evaluate import scenario_parts, tie_rank

    rel, _ = scenario_parts(split, "test", scenario)
    every = split.matrix("train", "valid", "test")
    users = np.flatnonzero(np.diff(rel.indptr) > 0)
    out = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        negs, ok = draw_user_negatives(users, every, n_neg, gen)
        recalls, ndcgs = [], []
        for row, u in enumerate(users):
            pos = set(rel[u].indices.tolist())
            cands = sorted(pos | set(negs[row][ok[row]].tolist()))
            ties = tie_rank(torch.full((len(cands),), int(u)), torch.tensor(cands)).tolist()
            order = sorted(range(len(cands)), key=lambda j: (-scores[u, cands[j]], ties[j]))
            top = [cands[j] for j in order[:k]]
            hits = [1.0 if i in pos else 0.0 for i in top]
            recalls.append(sum(hits) / len(pos))
            dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
            ndcgs.append(dcg / sum(1 / math.log2(r + 2) for r in range(min(len(pos), k))))
        out.append((np.mean(recalls), np.mean(ndcgs)))
    return np.mean(out, axis=0)


def test_sampled_per_user_with_repeats_matches_a_naive_reference(synthetic_split):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(synthetic_split.n_users, synthetic_split.n_items)).astype(np.float32)
    scores[:, ::7] = 0.5  # ties
    fn = lambda u: torch.from_numpy(scores[u.numpy()])  # noqa: E731
    res = evaluate_sampled(fn, synthetic_split, "test", scenarios=("all", "cold"), ks=(10,), n_negatives=30,
                           seed=3, per_user=True, repeats=3, batch_size=1000)
    for scenario in ("all", "cold"):
        want = naive_sampled(scores, synthetic_split, scenario, 30, [3 * 1_000_003 + r for r in range(3)], 10)
        assert res.metrics[scenario]["recall@10"] == pytest.approx(want[0], abs=1e-9)
        assert res.metrics[scenario]["ndcg@10"] == pytest.approx(want[1], abs=1e-9)


def test_sampled_per_user_with_every_negative_is_full_ranking(synthetic_split):
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(synthetic_split.n_users, synthetic_split.n_items)).astype(np.float32)
    fn = lambda u: torch.from_numpy(scores[u.numpy()])  # noqa: E731
    sampled = evaluate_sampled(fn, synthetic_split, "test", scenarios=("all",), ks=(10,), n_negatives=10_000,
                               per_user=True, repeats=2)
    full = evaluate_scores(fn, synthetic_split, "test", scenarios=("all",), ks=(10,))
    for key in ("recall@10", "ndcg@10"):
        assert sampled.metrics["all"][key] == pytest.approx(full.metrics["all"][key], abs=1e-12)


def test_draw_user_negatives_without_replacement(synthetic_split):
    every = synthetic_split.matrix("train", "valid", "test")
    users = np.arange(20)
    negs, ok = draw_user_negatives(users, every, 50, torch.Generator().manual_seed(0))
    assert ok.all()
    for row, u in enumerate(users):
        drawn = negs[row].numpy()
        assert len(set(drawn)) == 50 and not np.isin(drawn, every[u].indices).any()


def test_sampled_scenario_negatives_with_every_item_is_full_ranking(synthetic_split):
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(synthetic_split.n_users, synthetic_split.n_items)).astype(np.float32)
    fn = lambda u: torch.from_numpy(scores[u.numpy()])  # noqa: E731
    sampled = evaluate_sampled(fn, synthetic_split, "test", scenarios=("cold", "warm"), ks=(10,),
                               n_negatives=10_000, per_user=True, negatives="scenario")
    full = evaluate_scores(fn, synthetic_split, "test", scenarios=("cold", "warm"), ks=(10,))
    for scenario in ("cold", "warm"):
        for key in ("recall@10", "ndcg@10"):
            assert sampled.metrics[scenario][key] == pytest.approx(full.metrics[scenario][key], abs=1e-12)
    with pytest.raises(DataError):
        evaluate_sampled(fn, synthetic_split, per_user=True, negatives="cold")
