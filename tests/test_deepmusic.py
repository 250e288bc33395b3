"""DeepMusic: the regression loss against its formula, fixed stage-1 factors, and content scores for cold items."""

from __future__ import annotations

import torch

from coldstart.experiments import seed_everything
from coldstart.models import MODELS
from coldstart.train import TrainOptions, epoch_generator
from tests.conftest import trained


def _model(split, **hyper):
    return trained("deepmusic", split, num_epoch=3, **hyper)


def test_loss_is_the_squared_error_to_the_fixed_factors(synthetic_split):
    model = _model(synthetic_split)
    model.train()
    batch = model.batches(epoch_generator(3, 0))[0][:5]
    loss, _ = model.loss(batch, epoch_generator(3, 0))
    with torch.no_grad():
        expected = sum(float(((model.content_features(batch[k:k + 1])[0] - model.item_embedding[int(batch[k])]) ** 2)
                             .sum()) for k in range(5)) / 5
    assert abs(loss.item() - expected) < 1e-5
    assert bool(model.warm_items_[batch].all())  # stage 2 trains on warm items only
    assert not model.item_embedding.requires_grad and not model.user_embedding.requires_grad


def test_warm_items_use_the_factors_and_cold_items_the_regression(synthetic_split):
    model = _model(synthetic_split)
    model.eval()
    scores = model.score(torch.arange(4))
    warm = torch.nonzero(model.warm_items_).flatten()
    cold = torch.nonzero(~model.warm_items_).flatten()
    with torch.no_grad():
        torch.testing.assert_close(scores[:, warm], model.user_embedding[:4] @ model.item_embedding[warm].T)
        torch.testing.assert_close(scores[:, cold], model.user_embedding[:4] @ model.content_features(cold).T)


def test_both_stages_keep_checkpoints(synthetic_split, tmp_path):
    seed_everything(0)
    MODELS["deepmusic"](num_epoch=2).fit(synthetic_split, TrainOptions(checkpoint_dir=tmp_path, seed=1))
    assert (tmp_path / "pretrain" / "checkpoint.pt").exists() and (tmp_path / "checkpoint.pt").exists()
