"""Issue 11, items 1, 2, 4 and 19: per-user tie-breaking against the analytic random level, honest report cells
for models without a cold representation, and significance tests that count each user once."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from coldstart.data.splits import Part, Split, make_split
from coldstart.eval.evaluate import evaluate, evaluate_sampled, evaluate_scores, random_expectation
from coldstart.experiments import RunConfig
from coldstart.models import MODELS
from coldstart.studies.report import load_results, table2, write_reports
from coldstart.studies.runs import Job
from coldstart.studies.significance import paired_t_p, paired_users, wilcoxon_p
from tests.conftest import data_root
from tests.test_metrics import naive_tie_rank


# -- item 1: ties ---------------------------------------------------------------------------------------------

def one_item_split(n_users: int = 400) -> Split:
    """Items 0-29 warm (each user trains on three of them), items 30-59 cold; every user's only test positive
    is cold item 45. One shared tie order would give all users the same list: recall@10 of 0 or 1 for all."""
    users = np.repeat(np.arange(n_users), 3)
    train = Part(users, (users + np.tile([0, 7, 13], n_users)) % 30, np.zeros(len(users), bool))
    test = Part(np.arange(n_users), np.full(n_users, 45), np.ones(n_users, bool))
    return Split("cold_item", "item", np.arange(n_users).astype(str), np.arange(60).astype(str), train,
                 Part.empty(), test, np.arange(30, 60), np.zeros(0, np.int64))


def test_constant_scores_give_each_user_an_independent_random_list():
    split = one_item_split()
    res = evaluate_scores(lambda u: torch.zeros(len(u), 60), split, "test", scenarios=("cold",), ks=(10,))
    recall = res.per_user["recall@10"].to_numpy()
    expected = random_expectation(split, "test", "cold", (10,))["recall@10"]
    assert expected == pytest.approx(10 / 30)
    assert 0 < recall.mean() < 1  # some users get item 45 in their top 10, others do not
    se = math.sqrt(expected * (1 - expected) / len(recall))
    assert abs(recall.mean() - expected) < 4 * se


def naive_random_expectation(split: Split, phase: str, scenario: str, k: int) -> dict[str, float]:
    """Plain-Python loop over users: the exact expectation of recall, precision and ndcg under a uniform ranking."""
    seen: dict[int, set] = {}
    for p in (["train"] if phase == "valid" else ["train", "valid"]):
        part = split.part(p)
        for u, i in zip(part.users.tolist(), part.items.tolist()):
            seen.setdefault(u, set()).add(i)
    warm = set(split.train.items.tolist())
    relevant: dict[int, set] = {}
    part = split.part(phase)
    for u, i, c in zip(part.users.tolist(), part.items.tolist(), part.cold.tolist()):
        if scenario == "all" or c == (scenario == "cold"):
            relevant.setdefault(u, set()).add(i)
    out = {"recall": [], "precision": [], "ndcg": []}
    for u, rel in relevant.items():
        cands = [i for i in range(split.n_items) if i not in seen.get(u, set()) and not (
            split.cold_kind == "item" and scenario != "all" and (i in warm) != (scenario == "warm"))]
        n_cand, m = len(cands), len(rel & set(cands))
        slots = min(k, n_cand)
        share = m / n_cand if n_cand else 0.0
        out["recall"].append(share * slots / len(rel))
        out["precision"].append(share * slots / k)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
        out["ndcg"].append(share * sum(1 / math.log2(r + 2) for r in range(slots)) / idcg)
    return {f"{name}@{k}": float(np.mean(v)) for name, v in out.items()}


@pytest.mark.parametrize("protocol", ["cold_item", "cold_user"])
@pytest.mark.parametrize("phase", ["valid", "test"])
def test_random_expectation_matches_a_plain_python_count(synthetic, protocol, phase):
    split = make_split(synthetic, protocol, seed=2)
    for scenario in ("warm", "cold", "all"):
        fast = random_expectation(split, phase, scenario, (5, 40))
        for k in (5, 40):
            for key, value in naive_random_expectation(split, phase, scenario, k).items():
                assert fast[key] == pytest.approx(value, abs=1e-12), (scenario, key)


def hypergeometric_recall_se(split: Split, phase: str, k: int) -> float:
    """Standard error of the mean cold recall@k over users under independent uniform rankings."""
    seen = split.matrix("train", "valid")
    rel = split.matrix(phase).multiply(~split.train_item_mask()[None, :]).tocsr()
    rel.eliminate_zeros()
    users = np.flatnonzero(np.diff(rel.indptr) > 0)
    cold = (~split.train_item_mask()).astype(float)
    var = []
    for u in users:
        seen_u, rel_u = seen[u].toarray()[0] > 0, rel[u].toarray()[0] > 0
        n_cand, r = cold.sum() - seen_u @ cold, rel_u.sum()
        m = (rel_u & ~seen_u).sum()
        n, share = min(k, n_cand), m / n_cand
        hits_var = n * share * (1 - share) * (n_cand - n) / (n_cand - 1) if n_cand > 1 else 0.0  # hypergeometric
        var.append(hits_var / r**2)
    return math.sqrt(np.sum(var)) / len(users)


def test_pop_is_at_the_random_level_on_ml100k_cold_items():
    from coldstart.data.loaders import load_dataset

    split = make_split(load_dataset("ml-100k", root=data_root("ml-100k")), "cold_item", seed=1)
    res = evaluate(MODELS["pop"]().fit(split), split, "test", scenarios=("cold",), ks=(20,))
    expected = random_expectation(split, "test", "cold", (20,))["recall@20"]
    se = hypergeometric_recall_se(split, "test", 20)
    assert abs(res.metrics["cold"]["recall@20"] - expected) < 4 * se, (res.metrics["cold"]["recall@20"], expected, se)


def test_sampled_ties_follow_each_users_tie_rank(synthetic_split):
    from coldstart.data.sampling import positive_keys, sample_negatives

    split = synthetic_split
    scores = np.random.default_rng(3).integers(0, 2, size=(split.n_users, split.n_items)).astype(np.float32)
    res = evaluate_sampled(lambda u: torch.from_numpy(scores[u.numpy()]), split, "test", scenarios=("cold",),
                           ks=(10,), n_negatives=30, seed=5)
    coo = split.matrix("train", "valid", "test").tocoo()
    rel = split.test.cold
    order = np.lexsort((split.test.items[rel], split.test.users[rel]))  # the evaluator's CSR (user, item) order
    users, pos = split.test.users[rel][order], split.test.items[rel][order]
    negs = sample_negatives(users, 30, split.n_items, positive_keys(coo.row, coo.col, split.n_items),
                            np.random.default_rng(5), candidates=np.flatnonzero(~split.train_item_mask()))
    ahead = lambda u, n, p: scores[u, n] > scores[u, p] or (  # noqa: E731
        scores[u, n] == scores[u, p] and naive_tie_rank(u, n) < naive_tie_rank(u, p))
    ranks = [sum(ahead(u, n, p) for n in row) for u, p, row in zip(users.tolist(), pos.tolist(), negs.tolist())]
    np.testing.assert_allclose(res.per_user["mrr"].to_numpy(), 1 / (np.array(ranks) + 1.0))


class TwoHooks:
    """score() knows nothing; rank_scores() puts each user's test items first."""

    def __init__(self, split):
        self.best = torch.zeros(split.n_users, split.n_items)
        self.best[split.test.users, split.test.items] = 1.0

    def score(self, users):
        return torch.zeros(len(users), self.best.shape[1])

    def rank_scores(self, users):
        return self.best[users]


def test_evaluate_ranks_with_rank_scores_when_the_model_has_it(synthetic_split):
    res = evaluate(TwoHooks(synthetic_split), synthetic_split, "test", ks=(40,))
    assert res.metrics["all"]["hit_rate@40"] == 1.0


def test_module_docstring_no_longer_claims_index_order():
    import coldstart.eval.evaluate as ev

    assert "lower item index" not in ev.__doc__ and "tie_rank" in ev.__doc__


# -- item 4: significance --------------------------------------------------------------------------------------

def test_paired_users_averages_each_user_over_the_seeds_both_models_share():
    a = pd.DataFrame({"seed": [1, 2, 3, 1, 2], "user": [5, 5, 5, 6, 6], "recall@10": [0.1, 0.3, 0.8, 0.2, 0.4]})
    b = pd.DataFrame({"seed": [1, 2, 1], "user": [5, 5, 6], "recall@10": [0.0, 0.5, 0.9]})  # no seed 3; user 6 once
    x, y = paired_users(a, b, "recall@10")
    np.testing.assert_allclose(x, [0.2, 0.2])  # user 5: mean of seeds 1, 2 (seed 3 has no partner); user 6: seed 1
    np.testing.assert_allclose(y, [0.25, 0.9])


def test_wilcoxon_counts_each_user_once_whatever_the_number_of_seeds():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, size=30)
    frames = {}
    for name, shift in (("a", 0.02), ("b", 0.0)):
        # Three seeds with identical per-user values: pairing (seed, user) would triple n and shrink p.
        frames[name] = pd.DataFrame({"seed": np.repeat([1, 2, 3], 30), "user": np.tile(np.arange(30), 3),
                                     "recall@10": np.tile(base + shift + rng.normal(0, 0.05, 30) * (name == "a"), 3)})
    x, y = paired_users(frames["a"], frames["b"], "recall@10")
    assert len(x) == 30
    one_seed = paired_users(frames["a"][frames["a"].seed == 1], frames["b"][frames["b"].seed == 1], "recall@10")
    assert wilcoxon_p(x, y) == pytest.approx(wilcoxon_p(*one_seed))


def test_paired_t_is_robust_to_rounding():
    x = np.array([0.1 + 0.2, 0.7, 0.3])
    y = np.array([0.3, 0.1 + 0.6, 0.3])  # equal up to rounding: x - y is [5.6e-17, 0, 0]
    assert paired_t_p(x, y) == 1.0
    b = np.array([0.001, 0.002, 0.003])
    a = b + np.array([1e-18, 1.1e-18, 1.05e-18])  # rounding-sized differences: scipy alone gives p = 0.013
    assert paired_t_p(a, b) == 1.0
    assert paired_t_p(np.array([0.4, 0.5, 0.6]), np.array([0.3, 0.4, 0.5])) == 0.0  # one exact nonzero difference
    assert math.isnan(paired_t_p(x[:1], y[:1]))
    d = np.array([0.03, -0.01, 0.02, 0.05])
    t = d.mean() / (d.std(ddof=1) / 2)
    assert paired_t_p(d + 0.5, np.full(4, 0.5)) == pytest.approx(2 * stats.t.sf(abs(t), 3))


def test_wilcoxon_ignores_rounding_differences():
    y = np.linspace(0.1, 0.9, 12)
    x = y + np.spacing(y)  # one ulp above, as a sum in another order gives: scipy alone says p = 0.0005
    assert wilcoxon_p(x, y) == 1.0


# -- item 2: report cells ---------------------------------------------------------------------------------------

def study(tmp_path, values: dict[str, list[float]], cold_kind: str = "item", n_users: int = 8) -> list[Job]:
    """Run folders: values[label][seed - 1] is the model's mean cold recall@10 (warm = all = 0.1); per-user values
    are that mean plus a fixed zero-mean pattern."""
    pattern = np.linspace(-0.05, 0.05, n_users)
    jobs = []
    for label, per_seed in values.items():
        for seed, value in enumerate(per_seed, 1):
            folder = tmp_path / label / f"seed{seed}"
            folder.mkdir(parents=True)
            block = lambda v: {"recall@10": v, "ndcg@10": v / 2}
            doc = {"train_seconds": 1.0, "scenarios_over": cold_kind + "s",
                   "test": {"warm": block(0.1), "cold": block(value), "all": block(0.1)}}
            (folder / "metrics.json").write_text(json.dumps(doc))
            rows = [{"phase": "test", "scenario": s, "user": u, "recall@10": r, "ndcg@10": r / 2}
                    for s, v in (("warm", 0.1), ("cold", value), ("all", 0.1)) for u, r in enumerate(v + pattern)]
            pd.DataFrame(rows).to_csv(folder / "per_user.csv", index=False)
            jobs.append(Job(RunConfig("d", label), folder, {"model": label, "seed": seed}))
    return jobs


def test_models_without_cold_items_show_na_and_are_never_best_in_cold_cells(tmp_path):
    # pop has the highest cold number (luck, under the old shared tie order): it must be neither shown nor best.
    jobs = study(tmp_path, {"pop": [0.5, 0.5], "mf_bpr": [0.45, 0.44], "duif": [0.2, 0.22], "clcrec": [0.3, 0.34]})
    long = table2(load_results(jobs), "clcrec", ["recall@10"]).set_index(["label", "scenario", "metric"])
    cold = long.xs(("cold", "recall@10"), level=("scenario", "metric"))
    assert cold.loc["pop", "mark"] == "†" and math.isnan(cold.loc["pop", "mean"]) and not cold.loc["pop", "best"]
    assert cold.loc["clcrec", "best"] and cold.loc["duif", "strongest_baseline"]
    assert cold.loc["clcrec", "versus"] == "duif"
    warm = long.xs(("warm", "recall@10"), level=("scenario", "metric"))
    assert warm.loc["pop", "mean"] == pytest.approx(0.1)  # warm cells are results
    written = write_reports(jobs, tmp_path, [10])
    md_rows = {line.split(" | ")[0].strip("| "): line for line in written["table2.md"].read_text().splitlines()}
    assert "n/a" in md_rows["pop †"] and "0.5000" not in md_rows["pop †"]
    assert "†: no representation for cold items" in written["table2.md"].read_text()
    assert "0.5000" not in written["table2.tex"].read_text() and "pop $^\\dagger$" in written["table2.tex"].read_text()
    csv = pd.read_csv(written["table2.csv"])
    assert csv[(csv.label == "pop") & (csv.scenario == "cold")]["mean"].isna().all()
    t3 = pd.read_csv(written["table3.csv"]).set_index(["scenario", "metric"])
    assert math.isnan(t3.loc[("cold", "recall@10"), "MF-BPR"])
    assert math.isnan(t3.loc[("cold", "recall@10"), "p user CEN_MF vs MF-BPR"])
    assert t3.loc[("cold", "recall@10"), "CEN_MF"] == pytest.approx(0.32)
    assert "n/a" in written["table3.md"].read_text()


def test_cold_user_fallback_models_are_marked_and_excluded_from_best(tmp_path, monkeypatch):
    monkeypatch.setattr(MODELS["mf_bpr"], "cold_users", "none", raising=False)
    monkeypatch.setattr(MODELS["pop"], "cold_users", "popularity", raising=False)
    monkeypatch.setattr(MODELS["clcrec"], "cold_users", "content", raising=False)
    jobs = study(tmp_path, {"mf_bpr": [0.5], "pop": [0.2], "clcrec": [0.3]}, cold_kind="user")
    results = load_results(jobs)
    assert results.cold_kind == "user"
    long = table2(results, "clcrec", ["recall@10"]).set_index(["label", "scenario", "metric"])
    cold = long.xs(("cold", "recall@10"), level=("scenario", "metric"))
    assert cold.loc["mf_bpr", "mark"] == "‡" and cold.loc["mf_bpr", "mean"] == pytest.approx(0.5)  # shown
    assert not cold.loc["mf_bpr", "best"] and cold.loc["clcrec", "best"] and cold.loc["pop", "strongest_baseline"]
    assert cold.loc["pop", "mark"] == ""  # pop's scores ignore the user: its cold-user number is its own
    md = write_reports(jobs, tmp_path, [10])["table2.md"].read_text()
    assert "mf_bpr ‡" in md and "popularity fallback" in md
    assert "p (per seed): not available with one seed" in md


def test_report_shows_both_p_values_per_user_aggregated(tmp_path):
    jobs = study(tmp_path, {"duif": [0.2, 0.25, 0.22], "clcrec": [0.3, 0.33, 0.31]})
    results = load_results(jobs)
    long = table2(results, "clcrec", ["recall@10"]).set_index(["label", "scenario", "metric"])
    row = long.loc[("clcrec", "cold", "recall@10")]
    assert row["paired_users"] == 8 and row["paired_seeds"] == 3  # 8 users, not 24 (seed, user) pairs
    users = results.per_user[results.per_user.scenario == "cold"].groupby(["label", "user"])["recall@10"].mean()
    assert row["p_user_wilcoxon"] == pytest.approx(wilcoxon_p(users["clcrec"].to_numpy(), users["duif"].to_numpy()))
    assert row["p_seed_ttest"] == pytest.approx(stats.ttest_rel([0.3, 0.33, 0.31], [0.2, 0.25, 0.22]).pvalue)
    md = write_reports(jobs, tmp_path, [10])["table2.md"].read_text()
    assert "p (per seed) clcrec vs strongest" in md and "paired t-test over the 3 seeds" in md


def test_cut_offs_larger_than_the_catalogue_count_missing_slots_as_misses():
    """--k above the number of items used to crash in the metrics (a slice shorter than k)."""
    import numpy as np
    import pandas as pd

    from coldstart.data.dataset import from_frame

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30), 3)
    items = np.concatenate([rng.permutation(5)[:3] for _ in range(30)])
    ds = from_frame("tiny", pd.DataFrame({"user": users.astype(str), "item": items.astype(str)}))
    split = make_split(ds, "cold_user", seed=0)
    res = evaluate_scores(lambda u: torch.zeros(len(u), split.n_items), split, "test", ks=(2, 50))
    for scenario, values in res.metrics.items():
        assert 0.0 <= values["recall@50"] <= 1.0 and values["precision@50"] <= split.n_items / 50
