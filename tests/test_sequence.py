"""Sequences (data/sequences.py), the sequence modules (nn/sequence.py) and CMCLRec's losses (nn/losses.py),
each against its definition on hand-made tensors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from coldstart.data.dataset import from_frame
from coldstart.data.sequences import disjoint_masks, masked_views, pair_hash, train_sequences
from coldstart.data.splits import Part, Split
from coldstart.nn.losses import cosine_info_nce, gaussian_kernel, median_bandwidth, mmd, reconstruction
from coldstart.nn.sequence import AutoEncoder, SASRecBackbone, SelfAttention, attention_mask


def _split(frame: pd.DataFrame, with_dataset: bool = True) -> Split:
    dataset = from_frame("tiny", frame)
    train = Part(dataset.users, dataset.items, np.zeros(dataset.n_interactions, bool))
    return Split("hand", "user", dataset.user_ids, dataset.item_ids, train, Part.empty(), Part.empty(),
                 np.zeros(0, np.int64), np.zeros(0, np.int64), dataset=dataset if with_dataset else None)


def test_sequences_are_time_ordered_left_padded_and_truncated():
    # user a: items 3, 1, 2 at times 30, 10, 20 (row order is not time order); user b: one item; c: 5 items
    frame = pd.DataFrame({
        "user": ["a", "a", "a", "b", "c", "c", "c", "c", "c"],
        "item": ["3", "1", "2", "1", "1", "2", "3", "4", "5"],
        "timestamp": [30, 10, 20, 5, 1, 2, 3, 4, 5]})
    seqs = train_sequences(_split(frame), length=4)
    assert seqs.ordered_by == "timestamp"
    # item raw id "k" has index k - 1, stored as k
    assert seqs.items.tolist() == [[0, 1, 2, 3], [0, 0, 0, 1], [2, 3, 4, 5]]
    assert seqs.lengths.tolist() == [3, 1, 5]


def test_timestamp_ties_are_broken_by_dataset_row():
    frame = pd.DataFrame({"user": ["a"] * 4, "item": ["4", "2", "3", "1"], "timestamp": [7, 7, 5, 7]})
    seqs = train_sequences(_split(frame), length=4)
    # time 5 first (item 3), then the three items at time 7 in dataset row order: 4, 2, 1
    assert seqs.items.tolist() == [[3, 4, 2, 1]]


def test_without_timestamps_the_order_is_a_fixed_hash_and_said(caplog):
    frame = pd.DataFrame({"user": ["a", "a", "a"], "item": ["3", "1", "2"]})
    with caplog.at_level("WARNING", logger="coldstart"):
        seqs = train_sequences(_split(frame), length=3)
    assert seqs.ordered_by == "hash"
    assert "not a time-ordered sequence" in caplog.text
    split = _split(frame)
    keys = pair_hash(split.train.users, split.train.items)
    expected = (split.train.items[np.argsort(keys)] + 1).tolist()
    assert seqs.items.tolist() == [expected]
    reversed_split = _split(frame.iloc[::-1].reset_index(drop=True))
    as_ids = lambda sp, seq: [str(sp.item_ids[i - 1]) for i in seq]  # noqa: E731
    again = train_sequences(reversed_split, length=3).items[0].tolist()
    assert as_ids(reversed_split, again) == as_ids(split, expected)  # the file's row order plays no part


def test_without_timestamps_ids_in_ascending_order_do_not_become_the_sequence():
    # ml-1m's file lists each user's films by ascending id: the order must not carry that pattern
    frame = pd.DataFrame({"user": ["a"] * 200, "item": [f"{i:04d}" for i in range(200)]})
    seqs = train_sequences(_split(frame), length=200).items[0] - 1  # item indices in sequence order
    increasing = (seqs[1:] > seqs[:-1]).float().mean().item()
    assert 0.35 < increasing < 0.65  # about half, as in a random order; 1.0 for the file order


def test_pair_hash_is_fixed_and_spreads():
    users, items = np.array([0, 0, 1, 7]), np.array([1, 2, 1, 3])
    assert pair_hash(users, items).tolist() == pair_hash(users.copy(), items.copy()).tolist()
    assert (pair_hash(users, items) >= 0).all() and len(set(pair_hash(users, items).tolist())) == 4


def test_masked_views_are_disjoint_and_keep_padding():
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8]] * 50)
    v1, v2 = masked_views(items, 0.3, mask_token=99, generator=torch.Generator().manual_seed(0))
    m1, m2 = v1 == 99, v2 == 99
    assert not (m1 & m2).any()  # never masked in both views
    assert m1.any() and m2.any()
    assert (v1[items == 0] == 0).all() and (v2[items == 0] == 0).all()  # padding never masked
    assert torch.equal(v1[~m1], items[~m1]) and torch.equal(v2[~m2], items[~m2])
    rate = m1.sum() / (items != 0).sum()
    assert 0.2 < rate < 0.4
    valid = torch.rand(500, 7, generator=torch.Generator().manual_seed(1)) > 0.3
    a, b = disjoint_masks(valid, 0.5, torch.Generator().manual_seed(2))
    assert not (a & b).any() and torch.equal(a | b, valid)  # at rate 0.5 the views partition the entries
    with pytest.raises(ValueError):
        disjoint_masks(valid, 0.6, torch.Generator())


def test_self_attention_matches_equations_5_to_7():
    torch.manual_seed(0)
    layer = SelfAttention(4).requires_grad_(False)
    a = torch.randn(2, 3, 4)
    out = layer(a)
    m1, m2, m3 = layer.m1.weight, layer.m2.weight, layer.m3.weight  # sigma_k = M_k a_i
    for b in range(2):
        for i in range(3):
            logits = torch.tensor([float((m1 @ a[b, i]) @ (m2 @ a[b, j])) / math.sqrt(4) for j in range(3)])
            alpha = torch.exp(logits) / torch.exp(logits).sum()  # Eq. 6
            expected = sum(alpha[j] * (m3 @ a[b, j]) for j in range(3))  # Eq. 7
            assert torch.allclose(out[b, i], expected, atol=1e-5)


def test_attention_mask_causal_and_padding():
    valid = torch.tensor([[False, True, True]])
    mask = attention_mask(valid, causal=True)[0]
    assert mask.tolist() == [[True, False, False], [False, True, False], [False, True, True]]


def test_sasrec_causal_mask_later_positions_do_not_change_earlier_outputs():
    torch.manual_seed(0)
    backbone = SASRecBackbone(n_items=20, dim=8, length=6, n_blocks=2, dropout_rate=0.0).eval()
    items = torch.tensor([[0, 0, 3, 5, 7, 9]])
    changed = items.clone()
    changed[0, 4:] = torch.tensor([11, 2])
    out, out_changed = backbone(items), backbone(changed)
    assert torch.allclose(out[0, :4], out_changed[0, :4], atol=1e-6)
    assert not torch.allclose(out[0, 4:], out_changed[0, 4:])
    assert torch.isfinite(out).all() and (out[0, :2] == out[0, 0]).all()  # padding rows: LayerNorm of zeros


def test_dropout_draws_from_the_given_generator():
    torch.manual_seed(0)
    backbone = SASRecBackbone(n_items=20, dim=8, length=5, n_blocks=1, dropout_rate=0.5).train()
    items = torch.tensor([[0, 1, 2, 3, 4]])
    first = backbone(items, torch.Generator().manual_seed(3))
    torch.manual_seed(123)  # the global generator must not matter
    assert torch.equal(first, backbone(items, torch.Generator().manual_seed(3)))


def test_cosine_info_nce_matches_equation_3():
    torch.manual_seed(0)
    h1, h2, tau = torch.randn(4, 5), torch.randn(4, 5), 0.3
    cos = lambda x, y: float(x @ y / (x.norm() * y.norm()))  # noqa: E731
    expected = -sum(math.log(math.exp(cos(h1[k], h2[k]) / tau) /
                             sum(math.exp(cos(h1[k], h2[t]) / tau) for t in range(4))) for k in range(4)) / 4
    assert cosine_info_nce(h1, h2, tau).item() == pytest.approx(expected, rel=1e-5)


def test_mmd_matches_a_naive_double_loop():
    torch.manual_seed(0)
    p, q, sigma = torch.randn(5, 3), torch.randn(5, 3) + 0.5, 1.3
    kernel = lambda x, y: math.exp(-float((x - y).pow(2).sum()) / (2 * sigma**2))  # noqa: E731  Eq. 10
    n = 5
    pp = sum(kernel(p[i], p[j]) for i in range(n) for j in range(n)) / n**2
    pq = sum(kernel(p[i], q[j]) for i in range(n) for j in range(n)) / n**2
    qq = sum(kernel(q[i], q[j]) for i in range(n) for j in range(n)) / n**2
    assert mmd(p, q, sigma).item() == pytest.approx(pp - 2 * pq + qq, rel=1e-5)  # Eq. 9
    assert gaussian_kernel(p, q, sigma)[1, 2].item() == pytest.approx(kernel(p[1], q[2]), rel=1e-6)
    assert mmd(p, p, sigma).item() == pytest.approx(0.0, abs=1e-7)
    both = torch.cat([p, q])
    d2 = sorted(float((both[i] - both[j]).pow(2).sum()) for i in range(10) for j in range(10) if i != j)
    # torch's median of an even count is the lower middle value
    assert median_bandwidth(p, q) == pytest.approx(math.sqrt(d2[len(d2) // 2 - 1] / 2), rel=1e-4)


def test_reconstruction_is_the_per_user_squared_norm_averaged():
    pred = torch.tensor([[[1.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [3.0, 0.0]]])  # [2 users, L=2, d=2]
    target = torch.zeros_like(pred)
    assert reconstruction(pred, target).item() == pytest.approx((1 + 4 + 9) / 2)  # Eq. 8 sum / N


def test_autoencoder_shapes():
    ae = AutoEncoder(tokens=3, dim=4, code=2)
    p = ae.encode(torch.randn(5, 3, 4))
    assert p.shape == (5, 2) and ae.decode(p).shape == (5, 3, 4)
