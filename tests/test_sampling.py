"""Training negatives: never a training positive, only from the candidate items, and blind to valid / test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstart.data.sampling import NegativeSampler


@pytest.mark.parametrize("bitmap_limit", [1 << 28, 0])  # dense bitmap, and sorted keys with binary search
def test_sampler_never_returns_a_training_positive(synthetic_split, bitmap_limit):
    sp = synthetic_split
    warm = np.flatnonzero(sp.train_item_mask())
    sampler = NegativeSampler(sp.train.users, sp.train.items, sp.n_users, sp.n_items, candidates=warm,
                              bitmap_limit=bitmap_limit)
    users = torch.from_numpy(np.repeat(np.arange(sp.n_users), 20))
    negs = sampler.sample(users, 50, torch.Generator().manual_seed(0))  # [U * 20, 50]
    train = sp.matrix("train").toarray().astype(bool)
    assert negs.shape == (len(users), 50)
    assert not train[users[:, None].numpy(), negs.numpy()].any()
    assert np.isin(negs.numpy(), warm).all()
    # Valid / test positives of warm items are legitimate negatives: they must turn up (no leakage of held-out data).
    held = sp.matrix("valid", "test").toarray().astype(bool)
    assert held[users[:, None].numpy(), negs.numpy()].sum() > 0


def test_sampler_is_deterministic_under_a_generator(synthetic_split):
    sp = synthetic_split
    sampler = NegativeSampler(sp.train.users, sp.train.items, sp.n_users, sp.n_items)
    users = torch.arange(sp.n_users)
    a = sampler.sample(users, 8, torch.Generator().manual_seed(3))
    b = sampler.sample(users, 8, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_compact_equals_torch_unique():
    from coldstart.models.embedding import compact

    ids = torch.randint(0, 50, (7, 9), generator=torch.Generator().manual_seed(0))
    unique, inverse, counts = compact(ids, 60)
    ref_unique, ref_inverse, ref_counts = torch.unique(ids, return_inverse=True, return_counts=True)
    assert torch.equal(unique, ref_unique) and torch.equal(inverse, ref_inverse) and torch.equal(counts, ref_counts)
