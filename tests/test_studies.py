"""Studies: the report arithmetic against hand-made runs, the significance test against brute force, and
`compare`, `sweep` and `tune` end to end on ml-100k with tiny budgets (resumable, validation-only tuning)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from coldstart.errors import DataError
from coldstart.experiments import RunConfig
from coldstart.studies.report import load_results, table2, table3, write_reports
from coldstart.studies.runs import Job, Variant, apply_settings, apply_tuned, parse_variants
from coldstart.studies.significance import paired_t_p, paired_users, wilcoxon_p
from coldstart.studies.sweep import figure_grid, parse_values
from tests.conftest import data_root
from tests.test_bad_input import run_cli


def brute_force_wilcoxon(x, y) -> float:
    """Exact two-sided signed-rank p-value by enumerating every sign pattern (no ties, no zero differences)."""
    d = np.asarray(x, float) - np.asarray(y, float)
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    observed = ranks[d > 0].sum()
    total = ranks.sum()
    stats = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))]
    low = min(observed, total - observed)
    return min(1.0, 2 * np.mean([s <= low for s in stats]))


def test_wilcoxon_matches_brute_force_enumeration():
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.normal(size=9)
        y = x + rng.normal(0.3, 1.0, size=9)
        assert wilcoxon_p(x, y) == pytest.approx(brute_force_wilcoxon(x, y), abs=1e-12)
    assert wilcoxon_p(np.ones(4), np.ones(4)) == 1.0
    assert math.isnan(wilcoxon_p(np.array([]), np.array([])))


def test_paired_t_matches_formula():
    x, y = np.array([0.30, 0.32, 0.29, 0.35]), np.array([0.28, 0.27, 0.30, 0.31])
    d = x - y
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    from scipy import stats

    assert paired_t_p(x, y) == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1))
    assert math.isnan(paired_t_p(x[:1], y[:1]))


def test_paired_users_joins_on_seed_and_user():
    a = pd.DataFrame({"seed": [1, 1, 2], "user": [5, 6, 5], "recall@10": [0.1, 0.2, 0.3]})
    b = pd.DataFrame({"seed": [2, 1, 1], "user": [5, 6, 7], "recall@10": [0.9, 0.8, 0.7]})
    x, y = paired_users(a, b, "recall@10")
    assert sorted(zip(x, y)) == [(0.2, 0.8), (0.3, 0.9)]


def fake_study(tmp_path, values: dict[str, list[float]], users: dict[str, list[list[float]]]):
    """Run folders with metrics.json / per_user.csv: values[label][seed] is cold recall@10 (warm = all = half)."""
    jobs = []
    for label, per_seed in values.items():
        for seed, value in enumerate(per_seed, 1):
            folder = tmp_path / label / f"seed{seed}"
            folder.mkdir(parents=True)
            block = lambda v: {"recall@10": v, "ndcg@10": v / 2}
            doc = {"train_seconds": 1.0, "test": {"warm": block(value / 2), "cold": block(value), "all": block(value / 2)}}
            (folder / "metrics.json").write_text(json.dumps(doc))
            rows = [{"phase": "test", "scenario": s, "user": u, "recall@10": r, "ndcg@10": r / 2}
                    for s in ("warm", "cold", "all") for u, r in enumerate(users[label][seed - 1])]
            pd.DataFrame(rows).to_csv(folder / "per_user.csv", index=False)
            jobs.append(Job(RunConfig("d", label), folder,
                            {"model": label, "seed": seed}))
    return jobs


def test_table2_mean_std_best_strongest_improvement_and_p(tmp_path):
    users = {"clcrec": [[0.5, 0.4, 0.3, 0.9, 0.1, 0.6], [0.4, 0.4, 0.2, 0.8, 0.3, 0.7]],
             "duif": [[0.3, 0.1, 0.2, 0.4, 0.0, 0.5], [0.2, 0.2, 0.1, 0.5, 0.2, 0.45]]}
    jobs = fake_study(tmp_path, {"clcrec": [0.30, 0.34], "duif": [0.20, 0.22]}, users)
    results = load_results(jobs)
    long = table2(results, "clcrec", ["recall@10", "ndcg@10"]).set_index(["label", "scenario", "metric"])
    row = long.loc[("clcrec", "cold", "recall@10")]
    assert row["mean"] == pytest.approx(0.32) and row["std"] == pytest.approx(np.std([0.30, 0.34], ddof=1))
    assert row["best"] and not row["strongest_baseline"]
    assert long.loc[("duif", "cold", "recall@10")]["strongest_baseline"]
    assert row["improvement_pct"] == pytest.approx((0.32 - 0.21) / 0.21 * 100)
    x = np.mean(users["clcrec"], axis=0)  # each user once: the mean over the two seeds
    y = np.mean(users["duif"], axis=0)
    assert row["p_user_wilcoxon"] == pytest.approx(wilcoxon_p(x, y)) and row["paired_users"] == 6
    written = write_reports(jobs, tmp_path, [10])
    md = written["table2.md"].read_text()
    assert "**0.3200 ± 0.0283**" in md and "<u>0.2100 ± 0.0141</u>" in md and "+52.38%" in md
    assert "\\textbf{0.3200 $\\pm$ 0.0283}" in written["table2.tex"].read_text()
    assert "table3.md" not in written  # no BPR twin in this study


def test_table3_pairs_each_contrastive_encoder_with_its_bpr_twin(tmp_path):
    users = {"mf_bpr": [[0.1 + i * 0.01 for i in range(6)]], "clcrec": [[0.2 + i * 0.011 for i in range(6)]]}
    jobs = fake_study(tmp_path, {"mf_bpr": [0.1], "clcrec": [0.2]}, users)
    frame = table3(load_results(jobs), ["recall@10"]).set_index(["scenario", "metric"])
    assert list(frame.columns) == ["MF-BPR", "CEN_MF", "p user CEN_MF vs MF-BPR", "p seed CEN_MF vs MF-BPR"]
    assert frame.loc[("cold", "recall@10"), "CEN_MF"] == pytest.approx(0.2)
    assert math.isnan(frame.loc[("cold", "recall@10"), "MF-BPR"])  # no cold-item representation: n/a
    assert frame.loc[("all", "recall@10"), "p user CEN_MF vs MF-BPR"] == pytest.approx(0.03125)  # 6 of 6 better
    assert math.isnan(frame.loc[("all", "recall@10"), "p seed CEN_MF vs MF-BPR"])  # one seed


def test_settings_reach_the_models_that_have_them():
    variants = parse_variants("pop,mf_bpr,clcrec_gcn")
    assert variants[2].model == "clcrec" and variants[2].hyper == {"encoder": "lightgcn"}
    apply_settings(variants, {"num_epoch": 3, "clcrec_gcn.num_neg": 4})
    assert variants[0].hyper == {} and variants[1].hyper == {"num_epoch": 3}
    assert variants[2].hyper == {"encoder": "lightgcn", "num_epoch": 3, "num_neg": 4}
    for bad in ({"nope": 1}, {"duif.l_r": 1}, {"mf_bpr.lr_lambda": 0.5}):
        with pytest.raises(DataError):
            apply_settings(parse_variants("pop,mf_bpr"), bad)
    with pytest.raises(DataError, match="unknown model"):
        parse_variants("mf_bpr,nope")
    with pytest.raises(DataError, match="twice"):
        parse_variants("mf_bpr,mf_bpr")


def test_tuned_file_applies_to_its_label(tmp_path):
    (tmp_path / "best.json").write_text(json.dumps({"label": "mf_bpr", "params": {"l_r": 0.01}}))
    variants = [Variant("mf_bpr", "mf_bpr")]
    apply_tuned(variants, [tmp_path])
    assert variants[0].hyper == {"l_r": 0.01}
    with pytest.raises(DataError, match="not among"):
        apply_tuned([Variant("duif", "duif")], [tmp_path / "best.json"])


def test_sweep_values_and_ranges():
    assert parse_values("0,0.1,...,0.8", "p") == [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert parse_values("1,2,...,4", "p") == [1, 2, 3, 4] and isinstance(parse_values("1,2,...,4", "p")[0], int)
    assert parse_values("1,128", "p") == [1, 128] and parse_values("mf,lightgcn", "p") == ["mf", "lightgcn"]
    for bad in ("0,...,1", "1,0,...,3", ""):
        with pytest.raises(DataError):
            parse_values(bad, "p")
    assert figure_grid("5") == ("num_sample", [0, 0.2, 0.4, 0.6, 0.8, 1.0], "num_neg", [1, 128], {"lr_lambda": 0.0})
    assert figure_grid("7")[:3] == ("lr_lambda", [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], None)
    with pytest.raises(DataError, match="unknown figure"):
        figure_grid("4")


TINY = ["--set", "num_epoch=1", "--set", "min_epochs=1", "--set", "batch_size=4096", "--set", "dim_E=16"]


def test_compare_end_to_end_is_resumable_and_refuses_mixed_settings(tmp_path):
    data_root("ml-100k")
    out = tmp_path / "study"
    args = ["compare", "--dataset", "ml-100k", "--models", "pop,mf_bpr,clcrec", "--seeds", "1,2", "--output",
            str(out), *TINY, "--set", "clcrec.num_neg=8", "--k", "10"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    for name in ("table2.md", "table2.csv", "table2.tex", "table3.md", "study.json"):
        assert (out / name).exists(), name
    long = pd.read_csv(out / "table2.csv")
    assert set(long["label"]) == {"pop", "mf_bpr", "clcrec"} and set(long["seeds"]) == {2}
    metrics = json.loads((out / "runs" / "clcrec" / "seed2" / "metrics.json").read_text())
    cell = long[(long.label == "clcrec") & (long.scenario == "cold") & (long.metric == "recall@10")].iloc[0]
    first = json.loads((out / "runs" / "clcrec" / "seed1" / "metrics.json").read_text())
    assert cell["mean"] == pytest.approx((first["test"]["cold"]["recall@10"] + metrics["test"]["cold"]["recall@10"]) / 2)
    assert json.loads((out / "runs" / "clcrec" / "seed1" / "config.json").read_text())["hyperparameters"]["num_neg"] == 8
    # A rerun reuses every finished run; one whose settings differ is refused with exit code 2.
    stamp = (out / "runs" / "mf_bpr" / "seed1" / "metrics.json").stat().st_mtime_ns
    proc = run_cli(*args)
    assert proc.returncode == 0 and (out / "runs" / "mf_bpr" / "seed1" / "metrics.json").stat().st_mtime_ns == stamp
    (out / "runs" / "clcrec" / "seed2" / "metrics.json").unlink()  # as if killed before its end
    proc = run_cli(*args)
    assert proc.returncode == 0 and "seed=2: resumed" in proc.stdout
    assert json.loads((out / "runs" / "clcrec" / "seed2" / "metrics.json").read_text())["test"] == metrics["test"]
    proc = run_cli(*args[:-2], "--set", "clcrec.num_neg=4", "--k", "10")
    assert proc.returncode == 2 and "other settings" in proc.stderr and "num_neg" in proc.stderr


def test_sweep_end_to_end_writes_csv_and_png(tmp_path):
    data_root("ml-100k")
    out = tmp_path / "sweep"
    proc = run_cli("sweep", "--dataset", "ml-100k", "--model", "clcrec", "--param", "lr_lambda=0,0.5",
                   "--series", "num_neg=1,4", "--output", str(out), *TINY)
    assert proc.returncode == 0, proc.stderr
    summary = pd.read_csv(out / "sweep_summary.csv")
    assert set(summary["value"]) == {0.0, 0.5} and set(summary["num_neg"]) == {1, 4}
    assert (out / "sweep.png").stat().st_size > 1000
    config = json.loads((out / "runs" / "num_neg=4" / "lr_lambda=0.5" / "seed1" / "config.json").read_text())
    assert config["hyperparameters"]["num_neg"] == 4 and config["hyperparameters"]["lr_lambda"] == 0.5
    bad = run_cli("sweep", "--dataset", "ml-100k", "--param", "nope=1,2", "--output", str(tmp_path / "x"))
    assert bad.returncode == 2 and "nope" in bad.stderr
    bad = run_cli("tune", "--dataset", "ml-100k", "--model", "mf_bpr", "--set", "l_r=0.1", "--output", str(tmp_path / "t"))
    assert bad.returncode == 2 and "l_r is searched" in bad.stderr


def test_tune_end_to_end_uses_validation_only_and_feeds_compare(tmp_path):
    data_root("ml-100k")
    out = tmp_path / "tune"
    proc = run_cli("tune", "--dataset", "ml-100k", "--model", "mf_bpr", "--output", str(out), *TINY,
                   "--space", "l_r=0.001,0.01", "--space", "reg_weight=0.001")
    assert proc.returncode == 0, proc.stderr
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and set(trials["l_r"]) == {0.001, 0.01}
    best = json.loads((out / "best.json").read_text())
    assert best["value"] == pytest.approx(trials["objective"].max())
    assert best["params"]["l_r"] == trials.loc[trials["objective"].idxmax(), "l_r"]
    for run in (out / "trials").iterdir():  # the test split was never evaluated
        assert "test" not in json.loads((run / "metrics.json").read_text())
        assert set(pd.read_csv(run / "per_user.csv")["phase"]) == {"valid"}
    assert (out / "tune.png").exists()
    study = tmp_path / "study"
    proc = run_cli("compare", "--dataset", "ml-100k", "--models", "mf_bpr", "--seeds", "1", "--output", str(study),
                   "--tuned", str(out), "--set", "num_epoch=1")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((study / "runs" / "mf_bpr" / "seed1" / "config.json").read_text())
    assert config["hyperparameters"]["l_r"] == best["params"]["l_r"]


def test_atomic_files_get_the_mode_a_plain_open_gives(tmp_path):
    import os

    from coldstart.models.base import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # mkstemp alone would give 0o600
