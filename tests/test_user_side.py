"""User-side baselines (issue 13): user attributes as model input, DropoutNet / Heater / DeepMusic with side="user"
against their formulas, user_content_sim against a naive loop, and the report's cold-user mark."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstart.data.splits import make_split
from coldstart.errors import DataError
from coldstart.models import MODELS, Recommender
from coldstart.models.user_content import UserContent, prepare_user_content, user_content_spec
from coldstart.nn.content import build_content
from coldstart.train import epoch_generator
from tests.conftest import trained


@pytest.fixture(scope="module")
def user_split(synthetic):
    return make_split(synthetic, "cold_user", seed=1)


def test_user_content_matches_build_content_and_round_trips(user_split, tmp_path):
    data = prepare_user_content("x", user_split)
    assert data.spec.names == ["attributes"]
    dense, sparse = build_content(user_content_spec("x", user_split), user_split.dataset.user_features,
                                  n_rows=user_split.n_users)
    np.testing.assert_array_equal(data.dense, dense)
    table = UserContent({"n_users": user_split.n_users, **data.dims}, data)
    users = torch.tensor([4, 0, 7])
    torch.testing.assert_close(table.to_dense(users), torch.from_numpy(np.hstack([dense, sparse.toarray()])[[4, 0, 7]]))
    torch.save(table.state_dict(), tmp_path / "t.pt")
    back = UserContent({"n_users": user_split.n_users, **data.dims})
    back.load_state_dict(torch.load(tmp_path / "t.pt", weights_only=True))
    assert back.spec.names == ["attributes"] and torch.equal(back.to_dense(users), table.to_dense(users))
    new = back.new_user_inputs({"attributes": user_split.dataset.user_features["attributes"].values[[4, 0, 7]]})
    torch.testing.assert_close(new[0], table.inputs(users)[0])


def test_no_user_features_is_a_one_line_error(user_split):
    split = make_split(user_split.dataset, "cold_user", seed=1)
    split.dataset = type(split.dataset)(**{**split.dataset.__dict__, "user_features": {}})
    with pytest.raises(DataError, match="needs user attributes"):
        MODELS["dropoutnet"](side="user", num_epoch=1).fit(split)
    with pytest.raises(DataError, match="item or user"):
        MODELS["heater"](side="users")


@pytest.mark.parametrize("name", ["dropoutnet", "heater", "deepmusic"])
def test_side_user_declares_a_cold_user_representation(name):
    assert MODELS[name]().cold_users == "none"
    assert MODELS[name](side="user").cold_users == "content"
    assert MODELS["user_content_sim"].cold_users == "content" and MODELS["melu"].cold_users == "content"


@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_dropoutnet_user_loss_is_eq1_with_mirrored_towers(user_split, dropout):
    model = trained("dropoutnet", user_split, num_epoch=2, side="user", num_neg=2, dropout=dropout)
    model.prepare(user_split)
    batch = torch.arange(4)
    users, items = model.batch_pairs(batch, 2, epoch_generator(4, 0))
    loss, _ = model.loss(batch, epoch_generator(4, 0))
    errors = []
    with torch.no_grad():
        for b in range(4):
            u = int(users[b])
            f_u = model.user_features(users[b:b + 1], model.pref_users_[u:u + 1] * (1.0 - dropout))[0]
            for k in range(3):
                v = int(items[b, k])
                f_v = model.item_tower(model.pref_items_[v])
                errors.append((float(model.pref_users_[u] @ model.pref_items_[v]) - float(f_u @ f_v)) ** 2)
    assert abs(loss.item() - sum(errors) / len(errors)) < 1e-5


def test_dropoutnet_user_scores_cold_users_from_attributes_alone(user_split):
    model = trained("dropoutnet", user_split, num_epoch=2, side="user")
    model.eval()
    cold, warm = torch.from_numpy(user_split.cold_users[:3]), torch.tensor([0, 1, 2])
    assert (model.seen_indptr_[warm + 1] > model.seen_indptr_[warm]).all()
    with torch.no_grad():
        f_v = model.item_tower(model.pref_items_)
        torch.testing.assert_close(model.score(cold), model.user_features(cold) @ f_v.T)  # U_u = 0
        torch.testing.assert_close(model.score(warm), model.user_features(warm, model.pref_users_[warm]) @ f_v.T)
        assert not model.pref_users_[cold].any()  # the untrained MF rows of cold users are not used
    assert torch.equal(model.rank_scores(cold), model.score(cold))  # no popularity fallback


@pytest.mark.parametrize("random_prob", [0.0, 1.0])
def test_heater_user_loss_matches_its_formula(user_split, random_prob):
    model = trained("heater", user_split, num_epoch=2, side="user", num_neg=2, random_prob=random_prob, alpha=0.5)
    model.prepare(user_split)
    batch = torch.arange(3)
    users, items = model.batch_pairs(batch, 2, epoch_generator(2, 0))
    loss, parts = model.loss(batch, epoch_generator(2, 0))
    errors, sse = [], []
    with torch.no_grad():
        for b in range(3):
            u = int(users[b])
            psi = model.content_representation(users[b:b + 1])[0]
            r_u = psi if random_prob == 1.0 else model.pref_users_[u]
            for k in range(3):
                v = int(items[b, k])
                pred = float(model.user_tower(r_u) @ model.item_tower(model.pref_items_[v]))
                errors.append((float(model.pref_users_[u] @ model.pref_items_[v]) - pred) ** 2)
        unique = torch.unique(users)
        sse = (model.content_representation(unique) - model.pref_users_[unique]).pow(2).sum(-1).mean()
    assert abs(parts["mse"] - sum(errors) / len(errors)) < 1e-5
    assert abs(loss.item() - (sum(errors) / len(errors) + 0.5 * float(sse))) < 1e-5
    model.eval()
    cold = torch.from_numpy(user_split.cold_users[:2])
    with torch.no_grad():
        want = model.user_tower(model.content_representation(cold)) @ model.item_tower(model.pref_items_).T
    torch.testing.assert_close(model.score(cold), want)


def test_deepmusic_user_regresses_attributes_onto_user_factors(user_split):
    model = trained("deepmusic", user_split, num_epoch=2, side="user")
    model.prepare(user_split)
    batch = model.warm_list_[:5]
    loss, _ = model.loss(batch, epoch_generator(0, 0))
    with torch.no_grad():
        want = np.mean([float((model.user_features(batch[b:b + 1])[0] - model.user_embedding[int(batch[b])])
                              .pow(2).sum()) for b in range(5)])
    assert abs(loss.item() - want) < 1e-5
    model.eval()
    cold = torch.from_numpy(user_split.cold_users[:3])
    with torch.no_grad():
        torch.testing.assert_close(model.score(cold), model.user_features(cold) @ model.item_embedding.T)
        torch.testing.assert_close(model.score(torch.tensor([0])), model.user_embedding[:1] @ model.item_embedding.T)
    assert not model.user_embedding.requires_grad  # the stage-1 factors are targets


def test_user_content_sim_against_a_naive_loop(user_split, tmp_path):
    model = MODELS["user_content_sim"](k=5).fit(user_split)
    users = torch.tensor([0, 3, *user_split.cold_users[:2].tolist()])
    scores = model.score(users)
    attrs = np.hstack([d.toarray() if hasattr(d, "toarray") else d
                       for d in build_content(user_content_spec("x", user_split), user_split.dataset.user_features)])
    train = user_split.matrix("train").toarray()
    warm = train.sum(1) > 0
    x = attrs - attrs[warm].mean(0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    for b, u in enumerate(users.tolist()):
        sims = [(x[u] @ x[v], v) for v in range(len(x)) if warm[v] and v != u]
        top = sorted(sims, key=lambda t: (-t[0], t[1]))[:5]
        w = np.array([max(s, 0.0) for s, _ in top])
        want = sum(wi * train[v] for wi, (_, v) in zip(w, top)) / w.sum()
        np.testing.assert_allclose(scores[b].numpy(), want, atol=1e-5)
    model.save(tmp_path / "m")
    assert torch.equal(Recommender.load(tmp_path / "m").score(users), scores)


def test_report_marks_follow_the_runs_own_cold_users():
    from coldstart.studies.report import Results, mark

    results = Results(None, None, {}, ["dropoutnet", "dropoutnet_user"],
                      {"dropoutnet": "dropoutnet", "dropoutnet_user": "dropoutnet"}, "user",
                      {"dropoutnet": "none", "dropoutnet_user": "content"})
    assert mark(results, "dropoutnet") == "‡" and mark(results, "dropoutnet_user") == ""


def _byo_folder(root, n_users=40, n_items=30):
    """A bring-your-own folder: interactions.csv plus users/ feature files in three formats."""
    rng = np.random.default_rng(0)
    root.mkdir()
    jobs = ["artist", "engineer", "nurse"]
    lines = ["user,item"]
    for u in range(n_users):  # users of one job like one third of the catalogue
        liked = rng.choice(np.arange(n_items)[np.arange(n_items) % 3 == u % 3], 5, replace=False)
        lines += [f"u{u},i{i}" for i in liked]
    (root / "interactions.csv").write_text("\n".join(lines) + "\n")
    (root / "users").mkdir()
    (root / "users" / "job.csv").write_text("id,job\n" + "".join(f"u{u},{jobs[u % 3]}\n" for u in range(n_users)))
    (root / "users" / "age.csv").write_text("id,age\n" + "".join(f"u{u},{20 + u}\n" for u in range(n_users)))
    np.save(root / "users" / "emb.npy", rng.normal(size=(n_users, 4)).astype(np.float32))
    (root / "users" / "emb.ids.txt").write_text("".join(f"u{u}\n" for u in range(n_users)))
    return root


def test_bring_your_own_user_files_and_user_presets_feed_the_user_side(tmp_path):
    from coldstart.data.loaders import load_dataset
    from coldstart.features.cache import FeatureCache
    from coldstart.features.extract import with_features

    data = load_dataset(str(_byo_folder(tmp_path / "byo")))
    split = make_split(data, "cold_user", seed=0)
    # numeric files are model input as they are; the text column needs a preset first (skipped here)
    assert prepare_user_content("x", split).spec.names == ["age", "emb"]
    featured, reports = with_features(data, ["user:onehot:job"], cache=FeatureCache(tmp_path / "cache"))
    assert list(featured.user_features) == ["onehot_job"] and reports[0]["side"] == "user"
    jobs = featured.user_features["onehot_job"].values  # [U, 3] one-hot of artist / engineer / nurse
    np.testing.assert_array_equal(np.asarray(jobs).argmax(1), [int(u[1:]) % 3 for u in featured.user_ids])
    split = make_split(featured, "cold_user", seed=0)
    model = MODELS["dropoutnet"](side="user", num_epoch=2).fit(split)
    assert model.user_content.spec.names == ["onehot_job"]
    sim = MODELS["user_content_sim"](k=5).fit(split)
    cold = torch.from_numpy(split.cold_users)
    top = sim.recommend(cold, k=3)[0]
    # the job decides the taste, and the attribute neighbours share it: every top item is of the user's third
    job = torch.tensor([int(split.user_ids[u][1:]) % 3 for u in split.cold_users])
    items = torch.tensor([int(split.item_ids[i][1:]) for i in top.flatten()]).view_as(top)
    assert ((items % 3) == job[:, None]).all()


def test_user_preset_specs_are_checked(synthetic):
    from coldstart.features.presets import get_preset

    preset = get_preset(synthetic, "user:tfidf:attributes@4")
    assert preset.side == "user" and preset.name == "text_attributes_tfidf"
    assert get_preset(synthetic, "user:onehot:attributes").side == "user"
    with pytest.raises(DataError, match="no user modality 'nope'"):
        get_preset(synthetic, "user:multihot:nope").gather(synthetic, None)
    with pytest.raises(DataError, match="unknown preset"):
        get_preset(synthetic, "users:onehot:x")
