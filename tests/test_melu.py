"""MeLU: the local update against a per-user loop, the meta-objective against its formula, the task halves,
and what a user with an empty support set gets (the global initialisation from attributes alone)."""

from __future__ import annotations

import pytest
import torch

from coldstart.data.splits import make_split
from coldstart.train import epoch_generator
from tests.conftest import trained


@pytest.fixture(scope="module")
def user_split(synthetic):
    return make_split(synthetic, "cold_user", seed=1)


@pytest.fixture(scope="module")
def melu(user_split):
    model = trained("melu", user_split, num_epoch=2, support_size=3, query_size=2, local_steps=2, local_lr=0.05)
    model.prepare(user_split)
    return model


def _mlp(params, e_items, e_user):
    """The decision network of one user, written out: [n, D] items, [D] user -> [n]."""
    W1, b1, W2, b2, w3, b3 = params
    x = torch.cat([e_items, e_user.expand(len(e_items), -1)], 1)  # [n, 2D]
    h = torch.relu(x @ W1 + b1)
    h = torch.relu(h @ W2 + b2)
    return (h @ w3).squeeze(-1) + b3


def _local_update(model, e_user, items, labels, create_graph):
    """theta2_u by local_steps plain gradient steps on one user's support MSE (the paper's Eq. for the local update)."""
    params = [p for p in model.decision_parameters()]
    e_items = model.item_embeddings(items)
    for _ in range(model.config.local_steps):
        loss = (_mlp(params, e_items, e_user) - labels).pow(2).mean()
        grads = torch.autograd.grad(loss, params, create_graph=create_graph)
        params = [p - model.config.local_lr * g for p, g in zip(params, grads)]
    return params


def test_batched_local_update_equals_a_per_user_loop(melu):
    gen = epoch_generator(3, 0)
    melu.batches(gen)
    users = melu.warm_users_[:4]
    items, labels = melu.draw(users, 3, "support", gen)
    e_users = melu.user_embeddings(users)
    batched = melu.adapt(e_users, items, labels, create_graph=False)
    for b in range(len(users)):
        one = _local_update(melu, e_users[b], items[b], labels[b], create_graph=False)
        for got, want in zip(batched, one):
            torch.testing.assert_close(got[b], want, atol=1e-5, rtol=1e-4)


def test_meta_loss_and_its_second_order_gradient_match_the_formula(melu):
    melu.zero_grad()
    gen = epoch_generator(5, 1)
    melu.batches(gen)
    batch = melu.warm_users_[:3]
    state = gen.get_state()
    loss, _ = melu.loss(batch, gen)
    loss.backward()
    got = melu.W1.grad.clone()
    melu.zero_grad()
    # the same draws, then the meta-objective user by user: mean over users of the query MSE at theta2_u
    gen.set_state(state)
    support, s_labels = melu.draw(batch, 3, "support", gen)
    query, q_labels = melu.draw(batch, 2, "query", gen)
    e_users = melu.user_embeddings(batch)
    losses = []
    for b in range(len(batch)):
        params = _local_update(melu, e_users[b], support[b], s_labels[b], create_graph=True)
        losses.append((_mlp(params, melu.item_embeddings(query[b]), e_users[b]) - q_labels[b]).pow(2).mean())
    want = torch.stack(losses).mean()
    assert abs(loss.item() - want.item()) < 1e-5
    want.backward()
    torch.testing.assert_close(got, melu.W1.grad, atol=1e-5, rtol=1e-4)
    melu.zero_grad()


def test_support_and_query_are_disjoint_halves(melu):
    gen = epoch_generator(7, 0)
    melu.batches(gen)
    counts = melu.seen_indptr_[1:] - melu.seen_indptr_[:-1]
    users = melu.warm_users_[counts[melu.warm_users_] >= 4][:10]
    support, _ = melu.draw(users, 20, "support", gen)
    query, _ = melu.draw(users, 20, "query", gen)
    for b, u in enumerate(users.tolist()):
        seen = set(melu.seen_indices_[melu.seen_indptr_[u]:melu.seen_indptr_[u + 1]].tolist())
        s_pos, q_pos = set(support[b, :20].tolist()), set(query[b, :20].tolist())
        assert s_pos <= seen and q_pos <= seen and not (s_pos & q_pos)
        assert not (set(support[b, 20:].tolist()) & seen)  # negatives are never training positives


def test_a_user_with_an_empty_support_set_gets_the_global_initialisation(melu, user_split):
    melu.eval()
    cold = torch.from_numpy(user_split.cold_users[:3])
    warm = melu.warm_users_[:3]
    assert (melu.seen_indptr_[cold + 1] == melu.seen_indptr_[cold]).all()  # no training interaction at all
    with torch.no_grad():
        e_items = melu.item_embeddings()
        scores = melu.score(cold)
        for b, u in enumerate(cold.tolist()):  # no local update: theta2 itself, on the attribute embedding e_u
            want = _mlp(melu.decision_parameters(), e_items, melu.user_embeddings(torch.tensor([u]))[0])
            torch.testing.assert_close(scores[b], want, atol=1e-5, rtol=1e-4)
        # warm users are adapted: their scores are not the global network's
        global_warm = torch.stack([_mlp(melu.decision_parameters(), e_items, e) for e in melu.user_embeddings(warm)])
        assert not torch.allclose(melu.score(warm), global_warm)
    # a user's scores do not depend on who shares the batch (inference support is a function of the user)
    torch.testing.assert_close(melu.score(warm[:1]), melu.score(warm)[:1])


def test_first_order_drops_the_second_order_terms(user_split):
    model = trained("melu", user_split, num_epoch=1, support_size=3, query_size=2, first_order=True)
    model.prepare(user_split)
    model.zero_grad()  # training leaves its last step's gradients
    gen = epoch_generator(9, 0)
    model.batches(gen)
    batch = model.warm_users_[:2]
    state = gen.get_state()
    loss, _ = model.loss(batch, gen)
    loss.backward()
    got = model.b3.grad.clone()
    model.zero_grad()
    gen.set_state(state)
    support, s_labels = model.draw(batch, 3, "support", gen)
    query, q_labels = model.draw(batch, 2, "query", gen)
    e_users = model.user_embeddings(batch)
    total = 0.0
    for b in range(2):
        params = [p.detach().requires_grad_() for p in _local_update(model, e_users[b], support[b], s_labels[b], False)]
        q = (_mlp(params, model.item_embeddings(query[b]), e_users[b]) - q_labels[b]).pow(2).mean() / 2
        total = total + torch.autograd.grad(q, params[5])[0]  # FOMAML: the query gradient at theta2_u
    torch.testing.assert_close(got, total, atol=1e-5, rtol=1e-4)
