"""GIR's protocol setting: cold_item_only over the users with >= min_user_positives positives (GIR section 6.1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coldstart.data.dataset import from_frame
from coldstart.data.splits import Split, make_split
from coldstart.errors import DataError


@pytest.fixture(scope="module")
def small():
    """Users u0..u5 with 1..6 positives over items i0..i19; item i19 is liked only by u0 (one positive)."""
    rows = [("u0", "i19")]
    for u in range(1, 6):
        rows += [(f"u{u}", f"i{(u * 3 + k) % 19}") for k in range(u + 1)]
    return from_frame("small", pd.DataFrame(rows, columns=["user", "item"]))


def test_zero_keeps_the_old_split(synthetic):
    old = make_split(synthetic, "cold_item_only", seed=4)
    new = make_split(synthetic, "cold_item_only", seed=4, min_user_positives=0)
    assert old.fingerprint() == new.fingerprint()
    assert "min_user_positives" not in new.params  # old run folders keep comparing equal


def test_users_below_the_threshold_lose_every_interaction(small):
    split = make_split(small, "cold_item_only", seed=0, min_user_positives=4)
    counts = np.bincount(small.users, minlength=small.n_users)
    kept = set(np.flatnonzero(counts >= 4))
    assert kept == {small.user_index()[u] for u in ("u3", "u4", "u5")}
    seen = set()
    for phase in ("train", "valid", "test"):
        seen |= set(split.part(phase).users.tolist())
    assert seen == kept  # every kept user's rows survive, no other user's do
    assert len(split.train) + len(split.valid) + len(split.test) == int(counts[list(kept)].sum())
    assert split.params["min_user_positives"] == 4
    assert split.params["users_dropped"] == 3
    # items that only dropped users liked take no role: neither train nor cold
    active = np.zeros(small.n_items, bool)
    active[small.items[np.isin(small.users, list(kept))]] = True
    assert split.params["items_without_positives"] == int((~active).sum())
    assert active[split.cold_items].all()
    roles = np.concatenate([np.unique(split.train.items), split.cold_items])
    assert sorted(roles.tolist()) == sorted(np.flatnonzero(active).tolist())


def test_the_ratios_divide_the_items_that_keep_a_positive(synthetic):
    split = make_split(synthetic, "cold_item_only", seed=2, min_user_positives=15)
    n_active = synthetic.n_items - split.params["items_without_positives"]
    assert len(split.cold_items) == n_active - int(round(0.85 * n_active))
    assert not np.isin(split.valid.items, split.train.items).any()
    assert not np.isin(split.test.items, split.train.items).any()
    assert split.valid.cold.all() and split.test.cold.all()


def test_saved_split_reloads_with_the_parameter(synthetic, tmp_path):
    split = make_split(synthetic, "cold_item_only", seed=2, min_user_positives=15)
    split.save(tmp_path / "split")
    back = Split.load(tmp_path / "split", dataset=synthetic)
    assert back.fingerprint() == split.fingerprint()
    assert back.params["min_user_positives"] == 15


def test_bad_thresholds(synthetic):
    with pytest.raises(DataError):
        make_split(synthetic, "cold_item_only", seed=0, min_user_positives=-1)
    with pytest.raises(DataError):
        make_split(synthetic, "cold_item_only", seed=0, min_user_positives=10_000)


@pytest.mark.data
def test_ml1m_users_with_20_positives():
    from coldstart import load_dataset
    from tests.conftest import data_root

    root = data_root("ml-1m")
    dataset = load_dataset("ml-1m", root=root)
    split = make_split(dataset, "cold_item_only", seed=1, min_user_positives=20)
    users = np.unique(np.concatenate([split.train.users, split.valid.users, split.test.users]))
    assert np.bincount(dataset.users, minlength=dataset.n_users)[users].min() >= 20
    assert split.params["users_dropped"] == 858 and split.params["items_without_positives"] == 7


def test_report_metrics_and_the_metrics_option():
    from coldstart.cli import parse_metric_names
    from coldstart.studies.report import report_metrics

    assert report_metrics([10, 20]) == ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]  # the default is unchanged
    names = parse_metric_names("ndcg, precision,recall")
    assert report_metrics([1, 5], names) == ["ndcg@1", "precision@1", "recall@1", "ndcg@5", "precision@5", "recall@5"]
    with pytest.raises(DataError):
        parse_metric_names("recall,auc")
