"""CB2CF: the multiview first layer keeps each view's hidden units on that view's columns through training."""

from __future__ import annotations

import torch

from coldstart.experiments import seed_everything
from coldstart.models import MODELS
from coldstart.nn.content import ContentSpec


def test_views_are_the_column_ranges_of_each_modality():
    spec = ContentSpec(names=["a", "b", "c"], dims=[4, 10, 3], dense=[True, False, True])
    assert spec.views() == [(0, 4, True), (0, 10, False), (4, 7, True)]


def test_each_view_keeps_its_own_hidden_units_after_training(synthetic_split):
    seed_everything(0)
    model = MODELS["cb2cf"](num_epoch=3, hidden=8).fit(synthetic_split)
    assert model.spec_.names == ["content", "topic"]  # one dense view, one sparse view
    dense, sparse = model.feature_encoder.dense_weight, model.feature_encoder.sparse_weight  # [32, 8], [V, 8]
    assert torch.count_nonzero(dense[:, 4:]) == 0 and torch.count_nonzero(sparse[:, :4]) == 0
    assert torch.count_nonzero(dense[:, :4]) == dense[:, :4].numel()
    assert torch.count_nonzero(sparse[:, 4:]) > 0
    reference = MODELS["deepmusic"](num_epoch=3, hidden=8)
    seed_everything(0)
    reference.fit(synthetic_split)
    assert torch.count_nonzero(reference.feature_encoder.dense_weight[:, 4:]) > 0  # one MLP: no blocks
