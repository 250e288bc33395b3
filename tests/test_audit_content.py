"""Issue 11 item 7: a one-column numeric modality (the release year) must carry information into the models.

Normalised per row like the other modalities, a one-column row is its sign: +1 for every film. It is z-scored
instead, with stats over all rows of the content, kept in the ContentSpec for new items.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from coldstart.data.modalities import Dense
from coldstart.data.splits import make_split
from coldstart.errors import DataError
from coldstart.models.base import Recommender
from coldstart.nn.content import build_content, select_modalities
from tests.conftest import trained


def _years(values, mask=None) -> Dense:
    return Dense(np.asarray(values, np.float32)[:, None], None if mask is None else np.asarray(mask, bool))


def test_one_column_modality_is_z_scored_not_reduced_to_its_sign():
    features = {"year": _years([1990, 1995, 2000, 0], mask=[True, True, True, False])}  # last: no year
    spec = select_modalities(features)
    dense, _ = build_content(spec, features)
    present = np.array([1990.0, 1995.0, 2000.0])
    expected = (present - present.mean()) / present.std()  # stats over the rows that have a value
    np.testing.assert_allclose(dense[:3, 0], expected, rtol=1e-6)
    assert dense[0, 0] != dense[1, 0] != dense[2, 0]  # different years, different content
    assert dense[3, 0] == 0.0  # missing: the mean
    assert spec.standardise["year"] == pytest.approx([1995.0, present.std()])


def test_new_items_reuse_the_training_stats():
    spec = select_modalities({"year": _years([1990, 2000])})
    build_content(spec, {"year": _years([1990, 2000])})  # the training content fits the stats
    dense, _ = build_content(spec, {"year": _years([2005])})  # one new item: not refitted (std 0 would fail)
    assert dense[0, 0] == pytest.approx((2005 - 1995) / 5)


def test_a_constant_one_column_modality_is_dropped_with_a_log_line_or_refused_by_name(caplog):
    features = {"year": _years([1995, 1995, 1995]), "other": Dense(np.eye(3, dtype=np.float32))}
    with caplog.at_level(logging.WARNING, logger="coldstart"):
        spec = select_modalities(features)
    assert spec.names == ["other"]
    assert "'year' has the same value in every row" in caplog.text
    with pytest.raises(DataError, match="same value in every row"):
        select_modalities(features, use=["year"])
    with pytest.raises(DataError, match="same value"):  # direct callers of build_content are checked too
        build_content(dataclasses.replace(spec, names=["year"], dims=[1], dense=[True]), features)


def test_content_models_keep_the_stats_for_new_items(synthetic, tmp_path):
    rng = np.random.default_rng(0)
    n = len(synthetic.item_ids)
    year = _years(rng.integers(1950, 2000, n))
    dataset = dataclasses.replace(synthetic, item_features={**synthetic.item_features, "year": year})
    model = trained("clcrec", make_split(dataset, "cold_item", seed=1), num_epoch=1).eval()
    assert set(model.spec_.standardise) == {"year"}
    loaded = Recommender.load(model.save(tmp_path / "m"))
    rows = np.array([3, 8])
    new = {name: mod.take(rows) for name, mod in dataset.item_features.items()}
    with torch.no_grad():
        expected = model.content_features(torch.from_numpy(rows))
    assert torch.allclose(loaded.item_embeddings(new), expected, atol=1e-5)


def test_ml100k_year_reaches_the_models_as_information(ml100k):
    spec = select_modalities(ml100k.item_features)
    assert spec.names == ["genres", "year"]  # the title is text: it needs a feature extractor first
    dense, sparse = build_content(spec, ml100k.item_features)
    assert dense.shape[1] == 1 and sparse.shape[1] == 19
    years = ml100k.item_features["year"].values[:, 0]
    first, other = 0, int(np.flatnonzero(years != years[0])[0])
    assert dense[first, 0] != dense[other, 0]
    assert len(np.unique(dense[:, 0])) > 50
