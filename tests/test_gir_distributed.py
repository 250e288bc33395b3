"""GIR's Eq. 1 under DDP: the ranks' shard losses, weighted by their rows, equal the one-process loss."""

from __future__ import annotations

import torch

from coldstart.models.gir import liked_pairs
from coldstart.nn.losses import contrastive_rating_loss, contrastive_rating_loss_shard


def _shards(n_rows: int, sizes: list[int]):
    start = 0
    for size in sizes:
        yield start, slice(start, start + size)
        start += size


def test_shard_losses_add_up_to_the_global_batch_loss():
    gen = torch.Generator().manual_seed(0)
    u, v = torch.randn(7, 4, generator=gen), torch.randn(7, 4, generator=gen)
    full = contrastive_rating_loss(u, v, None, 0.5)
    total = sum(contrastive_rating_loss_shard(u[rows], v[rows], u, v, offset, temperature=0.5) * (rows.stop - rows.start)
                for offset, rows in _shards(7, [3, 2, 2])) / 7
    assert torch.allclose(total, full, atol=1e-6)


def test_shard_losses_with_the_false_negative_filter_and_their_gradients():
    gen = torch.Generator().manual_seed(1)
    users = torch.tensor([0, 1, 2, 0, 3, 1])
    items = torch.tensor([4, 2, 0, 1, 3, 0])
    # user 0 also likes item 2, user 1 also likes items 4 and 1: in-batch false negatives
    pairs = torch.tensor([0 * 5 + 4, 0 * 5 + 2, 1 * 5 + 2, 1 * 5 + 4, 1 * 5 + 1, 1 * 5 + 0, 2 * 5 + 0, 0 * 5 + 1,
                          3 * 5 + 3])
    keys = torch.sort(torch.unique(pairs)).values
    u = torch.randn(6, 3, generator=gen, requires_grad=True)
    v = torch.randn(6, 3, generator=gen, requires_grad=True)
    full = contrastive_rating_loss(u, v, liked_pairs(keys, 5, users, items))
    grads = torch.autograd.grad(full, (u, v))
    total = 0.0
    for offset, rows in _shards(6, [4, 2]):
        by_user = liked_pairs(keys, 5, users[rows], items)
        by_item = liked_pairs(keys, 5, users, items[rows]).T
        part = contrastive_rating_loss_shard(u[rows], v[rows], u, v, offset, by_user, by_item)
        total = total + part * (rows.stop - rows.start) / 6
    assert torch.allclose(total, full, atol=1e-6)
    for got, want in zip(torch.autograd.grad(total, (u, v)), grads):
        assert torch.allclose(got, want, atol=1e-6)
