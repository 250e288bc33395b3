"""Split protocols: proportions, disjointness, the move-back rule, determinism, save / load, published splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coldstart.data.loaders import load_dataset
from coldstart.data.splits import Split, make_split
from coldstart.errors import DataError
from tests.conftest import data_root


def pairs(part) -> set:
    return set(zip(part.users.tolist(), part.items.tolist()))


def test_cold_item_protocol(synthetic):
    split = make_split(synthetic, "cold_item", seed=4, cold_fraction=0.2)
    n_cold = round(0.2 * synthetic.n_items)
    assert len(split.cold_items) == n_cold
    train_items = set(split.train.items.tolist())
    cold = set(split.cold_items.tolist())
    assert not train_items & cold
    # every interaction lands in exactly one phase
    total = len(split.train) + len(split.valid) + len(split.test)
    assert total == synthetic.n_interactions
    assert not pairs(split.train) & pairs(split.valid) and not pairs(split.valid) & pairs(split.test)
    # cold rows are exactly the interactions of cold items, divided 1:1 by item between valid and test
    for part in (split.valid, split.test):
        assert set(part.items[part.cold].tolist()) <= cold
        assert not set(part.items[~part.cold].tolist()) & cold
    valid_cold, test_cold = set(split.valid.items[split.valid.cold]), set(split.test.items[split.test.cold])
    assert not valid_cold & test_cold
    # warm valid/test users and items all occur in train (the move-back rule)
    train_users = set(split.train.users.tolist())
    for part in (split.valid, split.test):
        assert set(part.users[~part.cold].tolist()) <= train_users
        assert set(part.items[~part.cold].tolist()) <= train_items
    warm_total = int((~split.valid.cold).sum() + (~split.test.cold).sum() + len(split.train))
    assert len(split.train) / warm_total == pytest.approx(0.8, abs=0.05)


def test_cold_item_only_protocol(synthetic):
    split = make_split(synthetic, "cold_item_only", seed=1)
    assert split.valid.cold.all() and split.test.cold.all()
    items = [len(set(p.items.tolist())) for p in (split.train, split.valid, split.test)]
    assert items[0] / synthetic.n_items == pytest.approx(0.85, abs=0.02)
    assert items[1] == pytest.approx(items[2], abs=2)


def test_cold_user_protocol(synthetic):
    split = make_split(synthetic, "cold_user", seed=1)
    cold_users = set(split.cold_users.tolist())
    assert not set(split.train.users.tolist()) & cold_users
    test_users = set(split.test.users.tolist())
    assert len(test_users) == pytest.approx(0.3 * synthetic.n_users, abs=2)
    warm_test = set(split.test.users[~split.test.cold].tolist())
    cold_test = set(split.test.users[split.test.cold].tolist())
    assert abs(len(warm_test) - len(cold_test)) <= 1
    # a warm held-out user keeps the earlier part of the history in train
    ts = synthetic.timestamps
    key = pd.Series(np.arange(synthetic.n_interactions), index=pd.MultiIndex.from_arrays([synthetic.users, synthetic.items]))
    for u in list(warm_test)[:10]:
        train_t = ts[key.loc[[(u, i) for i in split.train.items[split.train.users == u]]].to_numpy()]
        test_t = ts[key.loc[[(u, i) for i in split.test.items[split.test.users == u]]].to_numpy()]
        assert train_t.max() <= test_t.min()


@pytest.mark.parametrize("protocol", ["cold_item", "cold_item_only", "cold_user"])
def test_split_is_deterministic_and_round_trips(synthetic, tmp_path, protocol):
    a = make_split(synthetic, protocol, seed=7)
    b = make_split(synthetic, protocol, seed=7)
    c = make_split(synthetic, protocol, seed=8)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    a.save(tmp_path / "split")
    for dataset in (synthetic, None):
        back = Split.load(tmp_path / "split", dataset)
        assert back.fingerprint() == a.fingerprint()
        assert back.protocol == protocol and back.seed == 7
    frame = pd.read_csv(tmp_path / "split" / "train.csv")
    assert list(frame.columns) == ["user", "item", "scenario"]


def test_tampered_split_is_detected(synthetic_split, tmp_path):
    synthetic_split.save(tmp_path / "s")
    lines = (tmp_path / "s" / "test.csv").read_text().splitlines()
    (tmp_path / "s" / "test.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="fingerprint mismatch"):
        Split.load(tmp_path / "s")


def test_unknown_protocol_and_parameter(synthetic):
    with pytest.raises(DataError, match="unknown protocol 'nope'"):
        make_split(synthetic, "nope")
    with pytest.raises(DataError, match="unknown parameter 'bogus' for cold_item"):
        make_split(synthetic, "cold_item", bogus=1)
    with pytest.raises(DataError, match="cold_fraction"):
        make_split(synthetic, "cold_item", cold_fraction=1.5)


@pytest.mark.parametrize("source,train,valid,test", [
    ("heater", 164210, 13037, 27739),
    ("gar", 107418 + 24699, 16427 + 19802, 16482 + 20158),
    ("aldi", 132073, 16471 + 19802, 16482 + 20158),
])
def test_published_citeulike_splits(source, train, valid, test):
    ds = load_dataset("citeulike-a", root=data_root("citeulike-a"))
    split = make_split(ds, "published", source=source)
    assert (len(split.train), len(split.valid), len(split.test)) == (train, valid, test)
    assert len(split.cold_items) == 3396
    assert not set(split.train.items.tolist()) & set(split.cold_items.tolist())
