"""Data at scale: the generator's planted structure, Parquet -> memory-mapped index arrays, and the evaluator's
chunking (users and items) and single scoring pass, each against the plain computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from coldstart.data.generate import generate, write_folder
from coldstart.data.loaders import load_dataset
from coldstart.data.splits import make_split
from coldstart.errors import DataError
from coldstart.eval.evaluate import evaluate, evaluate_scores, random_expectation
from coldstart.models import MODELS

pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    data = generate(n_users=400, n_items=300, n_interactions=8_000, n_topics=8, seed=2)
    write_folder(data, root / "gen")
    return root / "gen", data


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the index cache of data/columnar.py


def test_generator_sizes_and_determinism():
    a = generate(n_users=200, n_items=150, n_interactions=3_000, n_topics=5, seed=7)
    b = generate(n_users=200, n_items=150, n_interactions=3_000, n_topics=5, seed=7)
    assert len(a.users) == 3_000 and np.array_equal(a.users, b.users) and np.array_equal(a.items, b.items)
    assert len(np.unique(a.users)) == 200  # every user keeps at least one interaction
    assert len(np.unique(a.users * 150 + a.items)) == 3_000  # distinct pairs
    assert a.text.shape == (150, 64) and a.image.shape == (150, 32) and a.tags.shape[0] == 150
    with pytest.raises(DataError):
        generate(n_users=100, n_items=10, n_interactions=50)


def test_planted_topics_are_in_the_interactions():
    data = generate(n_users=500, n_items=400, n_interactions=10_000, n_topics=10, seed=1)
    share = np.mean(data.item_topic[data.items] == data.user_topics[data.users, 0])
    assert share > 0.5  # p_primary = 0.6 plus chance; a structureless generator gives 1 / 10


def test_parquet_round_trip_is_memory_mapped_and_matches_csv(folder, tmp_path):
    root, data = folder
    ds = load_dataset(str(root))
    assert isinstance(ds.users, np.memmap) and not ds.users.flags.writeable
    raw_users = ds.user_ids[np.asarray(ds.users)].astype(np.int64)
    raw_items = ds.item_ids[np.asarray(ds.items)].astype(np.int64)
    assert np.array_equal(raw_users, data.users) and np.array_equal(raw_items, data.items)
    # The same data as CSV through the generic reader gets the same index, content and split.
    csv_root = tmp_path / "csv"
    (csv_root / "items").mkdir(parents=True)
    pd.DataFrame({"user": data.users, "item": data.items, "timestamp": data.timestamps}).to_csv(
        csv_root / "interactions.csv", index=False)
    for f in (root / "items").iterdir():
        (csv_root / "items" / f.name).write_bytes(f.read_bytes())
    other = load_dataset(str(csv_root))
    assert np.array_equal(ds.user_ids, other.user_ids) and np.array_equal(ds.item_ids, other.item_ids)
    assert np.array_equal(ds.users, other.users) and np.array_equal(ds.timestamps, other.timestamps)
    assert np.array_equal(ds.item_features["text"].values, other.item_features["text"].values)
    assert make_split(ds, "cold_item", seed=0).fingerprint() == make_split(other, "cold_item", seed=0).fingerprint()
    again = load_dataset(str(root))  # second load: from the cache
    assert np.array_equal(again.items, ds.items)


def test_parquet_duplicate_pair_is_a_data_error(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (tmp_path / "d").mkdir()
    pq.write_table(pa.table({"user": [1, 2, 1], "item": [5, 5, 5]}), tmp_path / "d" / "interactions.parquet")
    with pytest.raises(DataError, match="duplicate interaction"):
        load_dataset(str(tmp_path / "d"))


def test_generated_structure_is_learnable(folder):
    """Popularity beats random on warm items, content similarity beats random on cold items."""
    root, _ = folder
    split = make_split(load_dataset(str(root)), "cold_item", seed=0)
    pop = MODELS["pop"]().fit(split)
    warm = evaluate(pop, split, "valid", scenarios=("warm",)).metrics["warm"]["recall@20"]
    assert warm > 1.5 * random_expectation(split, "valid", "warm", ks=(20,))["recall@20"]
    sim = MODELS["content_sim"]().fit(split)
    cold = evaluate(sim, split, "valid", scenarios=("cold",)).metrics["cold"]["recall@20"]
    assert cold > 1.5 * random_expectation(split, "valid", "cold", ks=(20,))["recall@20"]


def _score_functions(split):
    gen = torch.Generator().manual_seed(0)
    users, items = torch.randn(split.n_users, 8, generator=gen), torch.randn(split.n_items, 8, generator=gen)
    levels = torch.randint(0, 3, (split.n_users, split.n_items), generator=gen).float()  # ties everywhere
    return {"mf": lambda u: users[u] @ items.T, "levels": lambda u: levels[u],
            "constant": lambda u: torch.zeros(len(u), split.n_items)}


@pytest.mark.parametrize("protocol", ["cold_item", "cold_user"])
def test_chunked_evaluation_equals_unchunked_exactly(synthetic, protocol):
    split = make_split(synthetic, protocol, seed=1)
    for name, fn in _score_functions(split).items():
        whole = evaluate_scores(fn, split, "test")
        tiny = evaluate_scores(fn, split, "test", max_entries=7 * split.n_items, item_chunk=23)  # 7 users, 23 items
        assert whole.metrics == tiny.metrics, name
        pd.testing.assert_frame_equal(whole.per_user, tiny.per_user, check_exact=True)


@pytest.mark.parametrize("protocol", ["cold_item", "cold_user"])
def test_one_pass_equals_three_separate_passes(synthetic, protocol):
    split = make_split(synthetic, protocol, seed=1)
    for name, fn in _score_functions(split).items():
        together = evaluate_scores(fn, split, "valid", batch_size=17)
        apart = [evaluate_scores(fn, split, "valid", scenarios=(s,), batch_size=17) for s in ("warm", "cold", "all")]
        assert together.metrics == {s: r.metrics[s] for s, r in zip(("warm", "cold", "all"), apart) if r.metrics}
        frame = pd.concat([r.per_user for r in apart], ignore_index=True)
        pd.testing.assert_frame_equal(together.per_user, frame, check_exact=True)


def test_scores_are_scored_once_per_user(synthetic_split):
    calls = []

    def fn(users):
        calls.append(users.clone())
        return torch.zeros(len(users), synthetic_split.n_items)

    res = evaluate_scores(fn, synthetic_split, "test")
    scored = torch.cat(calls)
    assert len(scored) == len(torch.unique(scored)) == res.n_users["all"]


def test_generate_command_writes_a_loadable_folder(tmp_path):
    from tests.test_bad_input import run_cli

    proc = run_cli("generate", str(tmp_path / "g"), "--users", "50", "--items", "40", "--interactions", "400",
                   "--topics", "3")
    assert proc.returncode == 0, proc.stderr
    ds = load_dataset(str(tmp_path / "g"))
    assert (ds.n_users, ds.n_interactions) == (50, 400) and set(ds.item_features) == {"text", "image", "tags"}
    proc = run_cli("generate", str(tmp_path / "h"), "--users", "50", "--items", "2", "--interactions", "400")
    assert proc.returncode == 2 and "too dense" in proc.stderr
