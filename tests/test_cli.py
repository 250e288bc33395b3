"""End to end: `coldstart run` writes a run directory an independent script can read, and `coldstart evaluate`
on recommendations computed outside the project reproduces an independent recall / NDCG computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from tests.conftest import data_root
from tests.test_bad_input import run_cli


def independent_recall_ndcg(train, valid, test, recs, k, scenario):
    """Plain pandas/Python, from the CSV files only; recommendations contain no ties."""
    warm_items = set(train["item"])
    seen = train.groupby("user")["item"].agg(set).to_dict()
    for u, items in valid.groupby("user")["item"].agg(set).items():
        seen[u] = seen.get(u, set()) | items
    rel = test[test["scenario"] == scenario].groupby("user")["item"].agg(set)
    recalls, ndcgs = [], []
    for user, relevant in rel.items():
        mine = recs[recs["user"] == user].sort_values("score", ascending=False)
        ranked = [i for i in mine["item"] if i not in seen.get(user, set())
                  and ((i in warm_items) == (scenario == "warm"))][:k]
        hits = [1 if i in relevant else 0 for i in ranked]
        recalls.append(sum(hits) / len(relevant))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k)))
        ndcgs.append(sum(h / math.log2(r + 2) for r, h in enumerate(hits)) / idcg)
    return float(np.mean(recalls)), float(np.mean(ndcgs))


def test_run_then_evaluate_outside_recommendations(tmp_path):
    data_root("ml-100k")
    run_dir = tmp_path / "runs" / "x"
    proc = run_cli("run", "--dataset", "ml-100k", "--model", "pop", "--protocol", "cold_item", "--output", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert "warm" in proc.stdout and "cold" in proc.stdout and "all" in proc.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("dataset", "model", "protocol", "seed", "best_epoch", "train_seconds", "valid", "test"):
        assert key in metrics
    assert set(metrics["test"]) == {"warm", "cold", "all"}
    assert {"recall@10", "ndcg@20", "precision@10", "hit_rate@20", "mrr@10", "map@20"} <= set(metrics["test"]["cold"])
    for name in ("config.json", "per_user.csv", "train.log", "model/model.pt", "split/meta.json"):
        assert (run_dir / name).exists(), name
    # An independent script reads the split with plain pandas.
    train, valid, test = (pd.read_csv(run_dir / "split" / f"{p}.csv", dtype=str) for p in ("train", "valid", "test"))
    meta = json.loads((run_dir / "split" / "meta.json").read_text())
    assert set(test.loc[test.scenario == "cold", "item"]) <= set(meta["cold_items"])
    assert not set(train["item"]) & set(meta["cold_items"])
    # Recommendations computed outside the project: random distinct scores over every item.
    rng = np.random.default_rng(0)
    users = sorted(set(test["user"]))
    items = sorted(set(train["item"]) | set(valid["item"]) | set(test["item"]))
    grid = pd.DataFrame([(u, i) for u in users for i in items], columns=["user", "item"])
    grid["score"] = rng.permutation(len(grid)).astype(np.float64)
    recs = grid.sample(frac=0.5, random_state=0)  # some items are not recommended at all
    recs.to_csv(tmp_path / "recs.csv", index=False)
    for scenario in ("warm", "cold"):
        out = tmp_path / f"m_{scenario}.json"
        proc = run_cli("evaluate", "--split", str(run_dir / "split"), "--recommendations", str(tmp_path / "recs.csv"),
                       "--phase", "test", "--scenario", scenario, "--k", "10,20", "--output", str(out))
        assert proc.returncode == 0, proc.stderr
        got = json.loads(out.read_text())["test"][scenario]
        recall, ndcg = independent_recall_ndcg(train, valid, test, recs, 20, scenario)
        assert abs(got["recall@20"] - recall) < 1e-6 and abs(got["ndcg@20"] - ndcg) < 1e-6


def test_split_and_datasets_commands(tmp_path):
    proc = run_cli("split", "--dataset", "synthetic", "--protocol", "cold_user", "--seed", "3",
                   "--set", "split.test_fraction=0.4", "--output", str(tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["protocol"] == "cold_user" and meta["test_fraction"] == 0.4 and meta["cold_users"]
    proc = run_cli("datasets", "--no-sizes")
    assert proc.returncode == 0 and "ml-100k" in proc.stdout and "citeulike-a" in proc.stdout
