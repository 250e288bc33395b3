"""GIR transfer (Table 9, last row): content and frozen item towers taken from another run (models/gir.py).

Two tiny bring-your-own catalogues built in code: a source whose films carry a 4-column content vector, and a
target whose first 24 films are source films under other ids (same title + year) and whose last 6 match nothing.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from coldstart.data.loaders import load_dataset
from coldstart.data.match import source_rows, take_rows
from coldstart.data.modalities import Dense, Image, MultiLabel, Sparse, Text
from coldstart.data.splits import make_split
from coldstart.errors import DataError
from coldstart.experiments import RunConfig, run, seed_everything
from coldstart.models.base import Recommender
from coldstart.models.gir import GIR, content_from_run
from coldstart.nn.item_tower import ContentLayout, check_content
from tests.conftest import interrupt_at

TINY = {"modalities": ["emb"], "d": 8, "heads": 2, "dim_E": 8, "dense_hidden": 0, "batch_size": 64,
        "min_epochs": 1}
N_SOURCE, N_TARGET, N_SHARED = 40, 30, 24


def _write(root, prefix, titles, n_users, seed, features):
    rng = np.random.default_rng(seed)
    n = len(titles)
    items = [f"{prefix}{k}" for k in range(n)]
    pairs = {(f"u{u}", items[u % n]) for u in range(n_users)}  # every item interacts at least once
    pairs |= {(f"u{u}", items[i]) for u in range(n_users) for i in rng.choice(n, 6, replace=False)}
    (root / "items").mkdir(parents=True)
    pd.DataFrame(sorted(pairs), columns=["user", "item"]).to_csv(root / "interactions.csv", index=False)
    pd.DataFrame({"item": items, "title": titles}).to_csv(root / "items" / "title.csv", index=False)
    for name, values in features.items():
        frame = pd.DataFrame(values, columns=[f"c{j}" for j in range(values.shape[1])])
        frame.insert(0, "item", items)
        frame.to_csv(root / "items" / f"{name}.csv", index=False)
    return root


@pytest.fixture(scope="module")
def catalogues(tmp_path_factory):
    base = tmp_path_factory.mktemp("transfer")
    rng = np.random.default_rng(0)
    source_titles = [f"Film {k} ({1950 + k})" for k in range(N_SOURCE)]
    # the target writes the shared films in another order and ml-1m style ("Film, The"-free here), plus 6 unknowns
    target_titles = [source_titles[5 + k] for k in range(N_SHARED)][::-1] + \
        [f"Other {k} ({2001 + k})" for k in range(N_TARGET - N_SHARED)]
    source = _write(base / "src", "s", source_titles, 60, 1, {"emb": rng.normal(size=(N_SOURCE, 4))})
    target = _write(base / "tgt", "t", target_titles, 50, 2, {"own": rng.normal(size=(N_TARGET, 2))})
    seed_everything(0)
    source_run = base / "src_run"
    run(RunConfig(dataset=str(source), model="gir", protocol="cold_item", hyper=TINY | {"num_epoch": 2}), source_run)
    return {"source": source, "target": target, "source_run": source_run, "base": base}


@pytest.fixture(scope="module")
def target_split(catalogues):
    return make_split(load_dataset(str(catalogues["target"])), "cold_item", seed=0)


def _expected_rows(target_split, source):
    """Source index per target index from the titles (the matched pairs, written the slow way)."""
    src = load_dataset(str(source))
    by_title = dict(zip(src.item_features["title"].texts, range(src.n_items)))
    return np.array([by_title.get(t, -1) for t in target_split.dataset.item_features["title"].texts])


# -- the content mapping -----------------------------------------------------------------------------------------
def test_take_rows_gives_matched_items_the_source_rows_and_the_rest_no_content(tmp_path, caplog):
    features = {
        "dense": Dense(np.arange(12, dtype=np.float32).reshape(4, 3), np.array([True, True, False, True])),
        "sparse": Sparse(sp.csr_matrix(np.eye(4, dtype=np.float32))),
        "labels": MultiLabel(sp.csr_matrix(np.eye(4, dtype=np.float32)), ["a", "b", "c", "d"]),
        "text": Text(["w", "x", "y", "z"]),
        "image": Image(["0.jpg", "1.jpg", None, "3.jpg"], tmp_path),
    }
    rows = np.array([3, -1, 0, 2, -1])
    with caplog.at_level(logging.WARNING, logger="coldstart"):
        out = take_rows(features, rows)
    assert "2 unmatched items get an all-zero row" in caplog.text  # sparse has no mask: said out loud
    dense = out["dense"]
    assert np.array_equal(dense.values[[0, 2, 3]], features["dense"].values[[3, 0, 2]])
    assert (dense.values[[1, 4]] == 0).all()
    assert dense.mask.tolist() == [True, False, True, False, False]  # source row 2 had no content either
    assert out["sparse"].values.toarray()[[1, 4]].sum() == 0
    assert out["sparse"].values.toarray()[0].tolist() == [0, 0, 0, 1]
    assert out["labels"].vocabulary == ["a", "b", "c", "d"]
    assert out["labels"].values.getnnz(axis=1).tolist() == [1, 0, 1, 1, 0]
    assert out["text"].texts == ["z", "", "w", "y", ""]
    assert out["image"].refs == ["3.jpg", None, "0.jpg", None, None] and out["image"].source == tmp_path


def test_source_rows_takes_the_lowest_source_row_of_a_film_listed_twice():
    pairs = pd.DataFrame({"source_item": [4, 1, 2], "target_item": [0, 0, 2]})
    assert source_rows(pairs, 4).tolist() == [1, -1, 2, -1]
    assert source_rows(pairs.iloc[:0], 2).tolist() == [-1, -1]


def test_content_from_run_maps_by_title_and_warns_about_unmatched(catalogues, target_split, caplog):
    with caplog.at_level(logging.INFO, logger="coldstart"):
        content, source_ids = content_from_run(catalogues["source_run"], target_split.dataset)
    assert f"{N_TARGET - N_SHARED} of {N_TARGET} tgt items match no src film" in caplog.text
    expected = _expected_rows(target_split, catalogues["source"])
    source = load_dataset(str(catalogues["source"]))
    matched = expected >= 0
    assert matched.sum() == N_SHARED
    emb = content["emb"]
    assert np.array_equal(emb.values[matched], source.item_features["emb"].values[expected[matched]].astype(np.float32))
    assert emb.mask.tolist() == matched.tolist()
    assert "own" not in content  # the target's own content is not read
    assert source_ids[matched].tolist() == source.item_ids[expected[matched]].tolist()
    assert all(i is None for i in source_ids[~matched])


# -- frozen towers -----------------------------------------------------------------------------------------------
def test_frozen_towers_do_not_change_and_only_the_user_table_trains(catalogues, target_split, monkeypatch):
    from coldstart import train

    seen = {}
    real_fit = train.fit

    def recording_fit(model, split, options=None):
        seen["tower"] = {k: v.clone() for k, v in model.tower.state_dict().items()}
        seen["users"] = model.user_embedding.detach().clone()
        seen["optimized"] = [p for group in model.make_optimizer().param_groups for p in group["params"]]
        return real_fit(model, split, options)

    monkeypatch.setattr(train, "fit", recording_fit)
    seed_everything(0)
    model = GIR(towers_from=str(catalogues["source_run"]), num_epoch=2, **TINY).fit(target_split)
    source = Recommender.load(catalogues["source_run"] / "model")
    after = model.tower.state_dict()
    assert all(torch.equal(seen["tower"][k], after[k]) for k in after)  # bit-identical through training
    assert all(torch.equal(source.tower.state_dict()[k], after[k]) for k in after)  # and equal to the source's
    assert not any(p.requires_grad for p in model.tower.parameters())
    assert len(seen["optimized"]) == 1 and seen["optimized"][0] is model.user_embedding
    assert not torch.equal(seen["users"], model.user_embedding.detach())  # the user table did train
    # matched items score with the source's own vectors of the same film; unmatched ones share the no-content vector
    expected = _expected_rows(target_split, catalogues["source"])
    vectors = model.inference_vectors()
    matched = expected >= 0
    torch.testing.assert_close(vectors[torch.from_numpy(matched)], source.item_vectors_[expected[matched]])
    unmatched = vectors[torch.from_numpy(~matched)]
    torch.testing.assert_close(unmatched, unmatched[:1].expand_as(unmatched))


def test_towers_from_logs_the_overlap_with_the_source_training_films(catalogues, target_split, caplog):
    with caplog.at_level(logging.INFO, logger="coldstart"):
        GIR(towers_from=str(catalogues["source_run"]), num_epoch=1, **TINY).fit(target_split)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("gir towers_from: {"))
    counts = json.loads(line.split(": ", 1)[1])
    cold = np.unique(target_split.test.items[target_split.test.cold])
    assert counts["cold_test_items"] == len(cold)
    assert counts["source_training"] + counts["source_not_training"] + counts["unmatched"] == len(cold)
    trained = set(pd.read_csv(catalogues["source_run"] / "split" / "train.csv", dtype=str)["item"])
    expected = _expected_rows(target_split, catalogues["source"])
    ids = load_dataset(str(catalogues["source"])).item_ids
    assert counts["source_training"] == sum(expected[i] >= 0 and ids[expected[i]] in trained for i in cold)
    # cold test films the frozen towers trained on are a leak of the source's interactions: a warning, not info
    assert counts["source_training"] > 0  # this fixture has some, so the warning below must be there
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and "cold test items are training items of" in r.getMessage()]
    assert warned and warned[0].startswith(f"gir towers_from: {counts['source_training']} of {len(cold)} ")


def test_incompatible_sources_name_the_field(catalogues, target_split, tmp_path):
    src = str(catalogues["source_run"])
    with pytest.raises(DataError) as err:
        GIR(towers_from=src, num_epoch=1, **(TINY | {"d": 16})).fit(target_split)
    assert err.value.field == "d"
    with pytest.raises(DataError) as err:
        GIR(towers_from=src, num_epoch=1, **(TINY | {"modalities": None})).fit(target_split)
    assert err.value.field == "modalities"
    with pytest.raises(DataError) as err:
        GIR(towers_from=src, content_from=str(tmp_path), **TINY)
    assert err.value.field == "content_from"
    pop_run = tmp_path / "pop_run"
    pop_run.mkdir()
    (pop_run / "config.json").write_text(json.dumps({"dataset": str(catalogues["source"]), "model": "pop"}))
    with pytest.raises(DataError) as err:
        GIR(towers_from=str(pop_run), num_epoch=1, **TINY).fit(target_split)
    assert err.value.field == "towers_from" and "gir run" in str(err.value)
    with pytest.raises(DataError) as err:
        GIR(towers_from=str(tmp_path / "nowhere"), num_epoch=1, **TINY).fit(target_split)
    assert err.value.field == "towers_from"
    layout = ContentLayout(dense=["emb"], dense_stats={"emb": [[0.0] * 4, [1.0] * 4]})
    with pytest.raises(DataError) as err:
        check_content(layout, {"emb": Dense(np.zeros((3, 3), np.float32))})
    assert err.value.field == "emb" and "width 4" in str(err.value)
    with pytest.raises(DataError) as err:
        check_content(layout, {"emb": Text(["a", "b", "c"])})
    assert err.value.field == "emb"
    with pytest.raises(DataError) as err:
        check_content(layout, {})
    assert err.value.field == "emb"


def test_transfer_run_saves_loads_and_resumes_bit_for_bit(catalogues, target_split, tmp_path, monkeypatch):
    from coldstart import train
    from coldstart.train import TrainOptions

    def fit(folder, resume=False):
        seed_everything(0)
        model = GIR(towers_from=str(catalogues["source_run"]), num_epoch=3, **TINY)
        return model.fit(target_split, TrainOptions(folder, resume=resume, seed=1))

    whole = fit(tmp_path / "whole")
    real_epoch = train.train_epoch
    interrupt_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "cut")
    monkeypatch.setattr(train, "train_epoch", real_epoch)
    resumed = fit(tmp_path / "cut", resume=True)
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
    users = torch.arange(target_split.n_users)
    loaded = Recommender.load(whole.save(tmp_path / "saved"))
    assert loaded.config.towers_from == str(catalogues["source_run"])
    assert torch.equal(loaded.score(users), whole.score(users))


def test_transfer_from_the_cli_settings_writes_a_finished_run(catalogues, tmp_path):
    """`coldstart run --set towers_from=...` goes through experiments.run: same settings, a finished folder."""
    seed_everything(0)
    out = tmp_path / "transfer_run"
    metrics = run(RunConfig(dataset=str(catalogues["target"]), model="gir", protocol="cold_item",
                            hyper=TINY | {"num_epoch": 1, "towers_from": str(catalogues["source_run"])}), out)
    assert "test" in metrics and (out / "model" / "model.pt").is_file()
    saved = json.loads((out / "config.json").read_text())
    assert saved["hyperparameters"]["towers_from"] == str(catalogues["source_run"])


def test_content_from_alone_trains_the_towers_on_the_mapped_content(catalogues, target_split):
    seed_everything(0)
    model = GIR(content_from=str(catalogues["source_run"]), num_epoch=1, **TINY).fit(target_split)
    source = Recommender.load(catalogues["source_run"] / "model")
    assert any(p.requires_grad for p in model.tower.parameters())
    assert model.layout_.dense == ["emb"] and model.layout_.dense_stats != source.layout_.dense_stats  # its own stats
    assert model.frozen_vectors_ is None


def test_a_transfer_run_is_refused_as_a_content_source(catalogues, target_split, tmp_path):
    """A run that itself took content_from / towers_from read another run's content, not its dataset's: using it
    as a source would silently give the items its dataset's own content (here the target's `own` vectors)."""
    seed_everything(0)
    chained = tmp_path / "chained_run"
    run(RunConfig(dataset=str(catalogues["target"]), model="gir", protocol="cold_item",
                  hyper=TINY | {"num_epoch": 1, "towers_from": str(catalogues["source_run"])}), chained)
    with pytest.raises(DataError, match="itself a transfer run") as err:
        content_from_run(chained, target_split.dataset)
    assert err.value.field == "content_from"
    with pytest.raises(DataError, match="itself a transfer run") as err:
        GIR(towers_from=str(chained), num_epoch=1, **TINY).fit(target_split)
    assert err.value.field == "towers_from"
