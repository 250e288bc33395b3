"""Issue 11 items 2 and 6: the cold-user rule of the model contract, CLCRec's official regulariser and hybrid."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from coldstart.data.splits import make_split
from coldstart.errors import DataError
from coldstart.experiments import seed_everything
from coldstart.models import MODELS, Recommender
from coldstart.train import epoch_generator
from tests.conftest import trained


@pytest.fixture(scope="module")
def user_split(synthetic):
    return make_split(synthetic, "cold_user", seed=1)


def _cold_and_warm(model):
    counts = model.seen_indptr_[1:] - model.seen_indptr_[:-1]
    return torch.nonzero(counts == 0).flatten(), torch.nonzero(counts > 0).flatten()


def test_cold_users_are_ranked_by_training_popularity_and_warm_users_keep_their_scores(user_split, tmp_path,
                                                                                        caplog):
    seed_everything(0)
    model = MODELS["mf_bpr"](num_epoch=2).fit(user_split)
    model.eval()
    cold, warm = _cold_and_warm(model)
    assert len(cold) > 0 and len(warm) > 0
    popularity = torch.bincount(torch.from_numpy(user_split.train.items), minlength=user_split.n_items).float()
    users = torch.cat([warm[:5], cold[:5]])
    with caplog.at_level(logging.WARNING, logger="coldstart"):
        scores = model.rank_scores(users)
        model.rank_scores(users)
    assert torch.equal(scores[5:], popularity.expand(5, -1))
    assert torch.equal(scores[:5], model.score(users)[:5])
    fallbacks = [r for r in caplog.records if "ranked by training item popularity" in r.getMessage()]
    assert len(fallbacks) == 1 and f"{len(cold)} of {user_split.n_users} users" in fallbacks[0].getMessage()
    # The rule reads the seen-item buffers, so a loaded model applies it too.
    model.save(tmp_path / "m")
    assert torch.equal(Recommender.load(tmp_path / "m").rank_scores(users), scores)
    top, _ = model.recommend(cold[:3], k=10)
    assert torch.equal(torch.sort(popularity[top], 1, descending=True).values,
                       torch.sort(popularity, descending=True).values[:10].expand(3, -1))


def test_models_whose_scores_ignore_training_keep_them_for_cold_users(user_split):
    assert MODELS["pop"].cold_users == "popularity" and MODELS["random"].cold_users == "random"
    assert all(MODELS[name].cold_users == "none" for name in ("mf_bpr", "lightgcn", "clcrec", "dropoutnet"))
    for name in ("pop", "random"):
        model = MODELS[name]().fit(user_split)
        cold, _ = _cold_and_warm(model)
        assert torch.equal(model.rank_scores(cold), model.score(cold))


def test_clcrec_regulariser_is_the_official_mean_norm(synthetic_split):
    model = trained("clcrec", synthetic_split, num_epoch=1, num_neg=4, reg_weight=0.3)
    users, items = model.batch_pairs(torch.arange(5), 4, epoch_generator(3, 0))  # [5], [5, 5]
    # The official formula: users repeated once per slot, L2 norms (sqrt of the sum of squares), means, halved.
    user_rows = model.user_embedding[users.repeat_interleave(items.shape[1])]
    item_rows = model.item_embedding[items.flatten()]
    official = ((torch.sqrt((user_rows ** 2).sum(1))).mean() + (torch.sqrt((item_rows ** 2).sum(1))).mean()) / 2
    assert torch.allclose(model.regularizer(users, items), official, rtol=1e-6)
    squared = model.user_embedding[users].pow(2).sum(1).mean() + item_rows.pow(2).sum(1).mean()
    assert not torch.allclose(model.regularizer(users, items), squared)  # the old meaning of reg_weight
    _, parts = model.loss(torch.arange(5), epoch_generator(3, 0))
    assert parts["reg"] == pytest.approx(official.item(), rel=1e-6)


def test_official_hybrid_swaps_int_n_rho_slots_drawn_with_replacement(synthetic_split):
    model = trained("clcrec", synthetic_split, num_epoch=1, num_neg=4, hybrid="official", num_sample=0.5)
    shape = torch.Size([7, 5])
    swap = model.hybrid_swap(shape, epoch_generator(2, 0))
    drawn = torch.randint(35, (int(35 * 0.5),), generator=epoch_generator(2, 0))  # the official draw
    expected = torch.zeros(35, dtype=torch.bool)
    expected[drawn] = True
    assert torch.equal(swap, expected.view(shape))
    assert int(swap.sum()) == len(torch.unique(drawn)) <= 17
    # Over many batches the swapped share is 1 - (1 - 1/N)^(N rho) ~ 1 - e^-rho, well below rho's 0.5.
    big = torch.Size([256, 129])
    n = big[0] * big[1]
    share = torch.stack([model.hybrid_swap(big, epoch_generator(e, 0)).float().mean() for e in range(20)]).mean()
    assert share.item() == pytest.approx(1 - (1 - 1 / n) ** int(n * 0.5), abs=2e-3)
    assert share.item() == pytest.approx(1 - math.exp(-0.5), abs=2e-3)


def test_per_slot_hybrid_swaps_each_slot_with_probability_rho(synthetic_split):
    model = trained("clcrec", synthetic_split, num_epoch=1, num_neg=4, num_sample=0.5)
    assert model.config.hybrid == "per_slot"
    swap = model.hybrid_swap(torch.Size([7, 5]), epoch_generator(2, 0))
    assert torch.equal(swap, torch.rand(7, 5, generator=epoch_generator(2, 0)) < 0.5)
    share = model.hybrid_swap(torch.Size([256, 129]), epoch_generator(0, 0)).float().mean()
    assert share.item() == pytest.approx(0.5, abs=1e-2)


def test_unknown_hybrid_is_a_data_error():
    with pytest.raises(DataError, match="unknown hybrid 'both'"):
        MODELS["clcrec"](hybrid="both")


def test_clcrec_warns_when_the_ui_loss_never_leaves_its_starting_value(synthetic_split, caplog):
    """The official mean-norm regulariser can pin the id embeddings at zero (a huge reg_weight here); say so."""
    import math

    from coldstart.experiments import seed_everything
    from coldstart.models import MODELS

    start = math.log(1 + 8)
    frozen = [{"ui": start + 1e-4}] * 5
    model = MODELS["clcrec"](num_neg=8)
    assert "not learning" in model.training_warning(frozen)
    assert model.training_warning(frozen[:4]) is None  # too early to tell
    assert model.training_warning([{"ui": start - 0.05}] + frozen[1:]) is None  # it moved once: learning
    seed_everything(0)
    with caplog.at_level("WARNING", logger="coldstart"):
        MODELS["clcrec"](num_neg=8, reg_weight=1000.0, num_epoch=6, min_epochs=6, batch_size=4096).fit(synthetic_split)
    assert sum("U-I loss is still ln(1 + num_neg)" in r.message for r in caplog.records) == 1
