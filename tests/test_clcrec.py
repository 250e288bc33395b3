"""CLCRec behaviour the paper describes, and the official implementation's defects that ours does not repeat."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstart.errors import DataError
from coldstart.eval.evaluate import evaluate_scores
from coldstart.models import MODELS
from coldstart.train import epoch_generator
from tests.conftest import trained


def _model(split, **hyper):
    return trained("clcrec", split, num_epoch=1, **hyper)


def _grads(model, batch=torch.arange(32)):
    model.zero_grad(set_to_none=True)
    loss, _ = model.loss(batch, epoch_generator(0, 0))
    loss.backward()
    enc = [p.grad for p in model.feature_encoder.parameters()]
    enc_norm = sum(0.0 if g is None else float(g.norm()) for g in enc)
    item = model.item_embedding.grad
    return enc_norm, 0.0 if item is None else float(item.norm())


def test_rho_zero_trains_ui_on_collaborative_embeddings_only(synthetic_split):
    # lambda = 0 leaves L_UI alone; with rho = 0 no feature representation enters it.
    enc, item = _grads(_model(synthetic_split, lr_lambda=0.0, num_sample=0.0, reg_weight=0.0, num_neg=8))
    assert enc == 0.0 and item > 0.0


def test_rho_one_trains_ui_on_feature_representations_only(synthetic_split):
    enc, item = _grads(_model(synthetic_split, lr_lambda=0.0, num_sample=1.0, reg_weight=0.0, num_neg=8))
    assert enc > 0.0 and item == 0.0


def test_rho_between_mixes_both(synthetic_split):
    enc, item = _grads(_model(synthetic_split, lr_lambda=0.0, num_sample=0.5, reg_weight=0.0, num_neg=8))
    assert enc > 0.0 and item > 0.0


def test_feature_encoder_runs_only_on_the_batch_items(synthetic_split):
    model = _model(synthetic_split, num_neg=4)
    seen = []
    original = model.content_features
    model.content_features = lambda items: (seen.append(items.clone()), original(items))[1]
    batch = torch.arange(3)
    users, items = model.batch_pairs(batch, 4, epoch_generator(1, 0))
    model.loss(batch, epoch_generator(1, 0))
    assert len(seen) == 1
    assert set(seen[0].tolist()) == set(items.flatten().tolist())  # not the catalogue
    assert len(seen[0]) < synthetic_split.n_items


def test_inference_uses_current_parameters_and_content_for_cold_items(synthetic_split):
    model = _model(synthetic_split, num_neg=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    loss, _ = model.loss(torch.arange(64), epoch_generator(2, 0))
    loss.backward()
    optimizer.step()  # the official code would score with vectors from before this step
    model.eval()
    users = torch.arange(10)
    z_users, z_items = model.encode()
    cold = torch.from_numpy(synthetic_split.cold_items)
    warm = torch.from_numpy(np.flatnonzero(synthetic_split.train_item_mask()))
    scores = model.score(users)
    assert torch.allclose(scores[:, warm], z_users[users] @ z_items[warm].T, atol=1e-6)
    features = {name: mod.take(cold.numpy()) for name, mod in synthetic_split.dataset.item_features.items()}
    new_items = model.item_embeddings(features)  # content alone, as for a brand-new item
    assert torch.allclose(scores[:, cold], z_users[users] @ new_items.T, atol=1e-5)


def test_masked_items_cannot_outrank_candidates_with_negative_scores(synthetic_split):
    """Official code sets masked scores to 1e-15; with negative candidate scores those masked items win."""
    train = torch.from_numpy(synthetic_split.matrix("train").toarray() > 0)
    gen = torch.Generator().manual_seed(0)
    base = -1.0 - torch.rand(synthetic_split.n_users, synthetic_split.n_items, generator=gen)  # all negative

    def with_seen(value):
        return lambda users: torch.where(train[users], torch.tensor(value), base[users])

    ours = evaluate_scores(with_seen(1e-15), synthetic_split, "valid", ks=(10,))
    reference = evaluate_scores(with_seen(-1e9), synthetic_split, "valid", ks=(10,))
    assert ours.metrics == reference.metrics


def test_bad_hyperparameters_and_missing_content_are_clear(synthetic_split):
    with pytest.raises(DataError, match="lr_lambda"):
        MODELS["clcrec"](lr_lambda=1.5)
    with pytest.raises(DataError, match="unknown encoder"):
        MODELS["clcrec"](encoder="gat")
    with pytest.raises(DataError, match="unknown modality 'nope'"):
        MODELS["clcrec"](modalities=["nope"], num_epoch=1).fit(synthetic_split)
    with pytest.raises(DataError, match="no numeric item modality"):
        MODELS["clcrec"](has_t=False, modalities=[], num_epoch=1).fit(synthetic_split)


def test_modality_switches_follow_the_official_flags():
    from coldstart.nn.content import modality_kind

    assert modality_kind("visual") == "v" and modality_kind("poster_efficientnet") == "v"
    assert modality_kind("acoustic") == "a" and modality_kind("plot_minilm") == "t"
    assert modality_kind("genres") is None


def test_item_embeddings_remap_labels_by_name(synthetic_split):
    from coldstart.data.modalities import Dense, MultiLabel

    model = _model(synthetic_split, num_neg=8)
    model.eval()
    topic = synthetic_split.dataset.item_features["topic"]
    content = synthetic_split.dataset.item_features["content"]
    row = 5
    labels = topic.labels(row)
    # Same item, but its labels given in a vocabulary of another order, plus a label never seen in training.
    vocab = ["never-seen"] + list(reversed(topic.vocabulary))
    other = MultiLabel.from_lists([labels + ["never-seen"]], vocabulary=vocab)
    new = model.item_embeddings({"content": Dense(content.values[row:row + 1]), "topic": other})
    same = model.item_embeddings({"content": content.take(np.array([row])), "topic": topic.take(np.array([row]))})
    assert torch.allclose(new, same, atol=1e-6)
    with pytest.raises(DataError, match="field 'content': expected width"):
        model.item_embeddings({"content": np.zeros((1, 3)), "topic": other})
