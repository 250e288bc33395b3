"""Table 2 and Table 3 of the CLCRec paper, from the run directories of a study, as markdown, CSV and LaTeX.

Table 2: rows are models, columns scenario x metric, cells mean +- std over seeds (sample std, n - 1). Per
column the best mean is bold and the strongest baseline (the best model other than the reference) underlined.
Three more rows: the improvement of the reference over the strongest baseline in %, and the p-values of the
per-user Wilcoxon test (users' metrics averaged over seeds first) and of the per-seed paired t-test
(significance.py).

Cold columns hold only results. Under item protocols a model without a cold-item representation
(`cold_items == "none"`, mark †) ranks cold items at random: its cold cells read "n/a" (NaN in the CSV). Under
`cold_user` a model with `cold_users == "none"` (mark ‡) ranks cold users by the popularity fallback: its cold
cells are shown. Either way such a model is never best, strongest or compared in the cold column.

Table 3: CEN_MF (clcrec) and CEN_GCN (clcrec_gcn) against MF-BPR (mf_bpr) and LightGCN (lightgcn), with the
per-user and per-seed p-values of each contrastive encoder against its BPR twin.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.errors import DataError
from coldstart.models import MODELS
from coldstart.models.base import atomic_write
from coldstart.studies.runs import Job
from coldstart.studies.significance import paired_t_p, paired_users, wilcoxon_p

SCENARIOS = ("warm", "cold", "all")
TABLE3 = {"mf_bpr": "MF-BPR", "lightgcn": "LightGCN", "clcrec": "CEN_MF", "clcrec_gcn": "CEN_GCN"}
TABLE3_PAIRS = (("clcrec", "mf_bpr"), ("clcrec_gcn", "lightgcn"))


@dataclass
class Results:
    """Finished runs of a study in long form.

    Attributes:
        summary: one row per (label, seed, scenario, metric): value (phase `phase` of metrics.json).
        per_user: one row per (label, seed, scenario, user) with a column per metric.
        seconds: label -> mean training seconds.
        labels: labels in study order.
        models: label -> registered model name.
        cold_kind: "item" or "user": what the runs' cold scenario is about (metrics.json scenarios_over).
    """

    summary: pd.DataFrame
    per_user: pd.DataFrame
    seconds: dict[str, float]
    labels: list[str]
    models: dict[str, str]
    cold_kind: str = "item"
    #: label -> the runs' own cold_users (metrics.json), which a setting can change (dropoutnet side=user).
    cold_users: dict[str, str] | None = None


def load_results(jobs: list[Job], phase: str = "test") -> Results:
    """Read metrics.json and per_user.csv of every job (tags model=label, seed)."""
    rows, users, seconds, labels, models, kinds, cold_users = [], [], {}, [], {}, set(), {}
    for job in jobs:
        label, seed = job.tags["model"], job.tags["seed"]
        metrics_file = job.folder / "metrics.json"
        if not metrics_file.exists():
            raise DataError("run not finished (no metrics.json)", path=job.folder)
        doc = json.loads(metrics_file.read_text())
        if phase not in doc:
            raise DataError(f"run has no {phase} metrics", path=metrics_file)
        if label not in labels:
            labels.append(label)
            models[label] = job.config.model
        seconds.setdefault(label, []).append(doc.get("train_seconds", math.nan))
        if "cold_users" in doc:
            cold_users[label] = doc["cold_users"]
        kinds.add("user" if doc.get("scenarios_over") == "users" else "item")
        for scenario, block in doc[phase].items():
            rows += [{"label": label, "seed": seed, "scenario": scenario, "metric": m, "value": v}
                     for m, v in block.items()]
        frame = pd.read_csv(job.folder / "per_user.csv")
        users.append(frame[frame["phase"] == phase].assign(label=label, seed=seed))
    if len(kinds) > 1:
        raise DataError("the study mixes item-cold and user-cold runs; report them separately", path=jobs[0].folder)
    return Results(pd.DataFrame(rows), pd.concat(users, ignore_index=True),
                   {k: float(np.mean(v)) for k, v in seconds.items()}, labels, models, kinds.pop() if kinds else "item",
                   cold_users)


def mark(results: Results, label: str) -> str:
    """"†" (no cold-item representation, item protocols), "‡" (cold users by popularity fallback) or ""."""
    cls = MODELS[results.models[label]]
    if results.cold_kind == "item" and getattr(cls, "cold_items", "content") == "none":
        return "†"
    cold_users = (results.cold_users or {}).get(label, getattr(cls, "cold_users", None))
    if results.cold_kind == "user" and cold_users == "none":
        return "‡"
    return ""


def is_result(results: Results, label: str, scenario: str) -> bool:
    """False for a cold cell that is no result of the model itself (a random ranking or a fallback rule):
    such a model is excluded from best, strongest and comparisons in that column."""
    return scenario != "cold" or not mark(results, label)


def is_hidden(results: Results, label: str, scenario: str) -> bool:
    """True for cold cells of a model without a cold-item representation: a random ranking, shown as n/a."""
    return scenario == "cold" and mark(results, label) == "†"


def report_metrics(ks: list[int], names: tuple[str, ...] | list[str] = ("recall", "ndcg")) -> list[str]:
    """The metrics of the tables: each of `names` (default recall and NDCG; eval/metrics.py METRICS) at each K."""
    return [f"{name}@{k}" for k in ks for name in names]


def table2(results: Results, reference: str, metrics: list[str]) -> pd.DataFrame:
    """Long-form Table 2: one row per (label, scenario, metric) with mean, std, n, and flags; plus the comparison.

    Columns: label, scenario, metric, mean, std, seeds, best, strongest_baseline, mark (see `mark`), and for the
    reference rows improvement_pct, p_user_wilcoxon, p_seed_ttest, paired_users, paired_seeds (against the
    strongest baseline of that column). Cold cells of † models have NaN mean and std; † and ‡ models are never
    best or strongest in the cold column.
    """
    if reference not in results.labels:
        raise DataError(f"reference model {reference!r} is not in the study", field="--reference")
    summary = results.summary[results.summary["metric"].isin(metrics)]
    scenarios = [s for s in SCENARIOS if s in set(summary["scenario"])]
    stats = (summary.groupby(["label", "scenario", "metric"])["value"]
             .agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else math.nan, seeds="count").reset_index())
    out = []
    for scenario in scenarios:
        for metric in metrics:
            cell = stats[(stats["scenario"] == scenario) & (stats["metric"] == metric)].set_index("label")
            if cell.empty:
                continue
            ranked = cell[[is_result(results, label, scenario) for label in cell.index]]
            best = ranked["mean"].idxmax() if len(ranked) else None
            others = ranked.drop(index=reference, errors="ignore")
            strongest = others["mean"].idxmax() if len(others) else None
            for label in results.labels:
                if label not in cell.index:
                    continue
                row = {"label": label, "scenario": scenario, "metric": metric, **cell.loc[label].to_dict(),
                       "best": label == best, "strongest_baseline": label == strongest, "mark": mark(results, label)}
                if is_hidden(results, label, scenario):
                    row["mean"] = row["std"] = math.nan
                if label == reference and label in ranked.index and strongest is not None:
                    row.update(compare_pair(results, reference, strongest, scenario, metric))
                    row["versus"] = strongest
                out.append(row)
    return pd.DataFrame(out)


def compare_pair(results: Results, a: str, b: str, scenario: str, metric: str) -> dict[str, float]:
    """Improvement of a over b in % (of the means over seeds) and both paired p-values (significance.py)."""
    summary = results.summary
    by_seed = (summary[(summary["scenario"] == scenario) & (summary["metric"] == metric)]
               .pivot_table(index="seed", columns="label", values="value"))
    both = by_seed[[a, b]].dropna()
    mean_a, mean_b = both[a].mean(), both[b].mean()
    improvement = (mean_a - mean_b) / mean_b * 100 if mean_b > 0 else math.nan
    users = results.per_user[results.per_user["scenario"] == scenario]
    x, y = paired_users(users[users["label"] == a], users[users["label"] == b], metric)
    return {"improvement_pct": improvement, "p_user_wilcoxon": wilcoxon_p(x, y),
            "p_seed_ttest": paired_t_p(both[a].to_numpy(), both[b].to_numpy()), "paired_users": len(x),
            "paired_seeds": len(both)}


def _cell(mean: float, std: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.2f}%"


def _latex(text: str) -> str:
    """Escape a plain cell for LaTeX."""
    for plain, tex in (("_", "\\_"), ("%", "\\%"), ("±", "$\\pm$"), ("<1e-4", "$<$1e-4"), ("†", "$^\\dagger$"),
                       ("‡", "$^\\ddagger$")):
        text = text.replace(plain, tex)
    return text


def _render(header: list[str], body: list[list[str]], latex: bool, text_columns: int = 1) -> str:
    """A markdown table, or a booktabs LaTeX tabular (body cells already escaped)."""
    if latex:
        lines = ["\\begin{tabular}{" + "l" * text_columns + "r" * (len(header) - text_columns) + "}", "\\toprule",
                 " & ".join(_latex(h) for h in header) + " \\\\", "\\midrule",
                 *(" & ".join(row) + " \\\\" for row in body), "\\bottomrule", "\\end{tabular}"]
    else:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                 *("| " + " | ".join(row) + " |" for row in body)]
    return "\n".join(lines) + "\n"


def _styled(text: str, best: bool, strongest: bool, latex: bool) -> str:
    """Bold for the best, underline for the strongest baseline."""
    if latex:
        text = _latex(text)
        text = f"\\underline{{{text}}}" if strongest else text
        return f"\\textbf{{{text}}}" if best else text
    text = f"<u>{text}</u>" if strongest else text
    return f"**{text}**" if best else text


def table2_text(long: pd.DataFrame, results: Results, reference: str, latex: bool = False) -> str:
    """Markdown (or LaTeX tabular) of a long Table 2."""
    columns = list(dict.fromkeys(zip(long["scenario"], long["metric"])))
    indexed = long.set_index(["label", "scenario", "metric"])
    plain = _latex if latex else (lambda text: text)
    body = []
    for label in results.labels:
        cells = [plain(label + (f" {mark(results, label)}" if mark(results, label) else ""))]
        for column in columns:
            if (label, *column) not in indexed.index:
                cells.append("")
                continue
            r = indexed.loc[(label, *column)]
            cells.append(_styled(_cell(r["mean"], r["std"]), r["best"], r["strongest_baseline"], latex))
        body.append([*cells, f"{results.seconds[label]:.1f}"])
    ref = long[long["label"] == reference].set_index(["scenario", "metric"])
    for name, key, fmt in (("% improv.", "improvement_pct", _pct), ("p (per user)", "p_user_wilcoxon", _p),
                           ("p (per seed)", "p_seed_ttest", _p)):
        if key in ref:
            body.append([plain(f"{name} {reference} vs strongest"),
                         *(plain(fmt(ref.loc[c, key])) if c in ref.index else "" for c in columns), ""])
    return _render(["model", *(f"{s} {m}" for s, m in columns), "train s"], body, latex)


def table3(results: Results, metrics: list[str]) -> pd.DataFrame | None:
    """Rows scenario x metric; columns MF-BPR, LightGCN, CEN_MF, CEN_GCN (those present), then per pair the
    per-user ("p user A vs B") and per-seed ("p seed A vs B") p-values.

    Cold cells of † models are NaN (n/a), and a pair with a † or ‡ model gets no p-value in the cold rows.
    None when the study holds neither pair of Table 3.
    """
    present = [label for label in TABLE3 if label in results.labels]
    pairs = [(a, b) for a, b in TABLE3_PAIRS if a in present and b in present]
    if not pairs:
        return None
    summary = results.summary
    rows = []
    for scenario in SCENARIOS:
        for metric in metrics:
            part = summary[(summary["scenario"] == scenario) & (summary["metric"] == metric)]
            if part.empty:
                continue
            row = {"scenario": scenario, "metric": metric}
            for label in present:
                hidden = is_hidden(results, label, scenario)
                row[TABLE3[label]] = math.nan if hidden else part[part["label"] == label]["value"].mean()
            for a, b in pairs:
                both = is_result(results, a, scenario) and is_result(results, b, scenario)
                pair = compare_pair(results, a, b, scenario, metric) if both else {}
                row[f"p user {TABLE3[a]} vs {TABLE3[b]}"] = pair.get("p_user_wilcoxon", math.nan)
                row[f"p seed {TABLE3[a]} vs {TABLE3[b]}"] = pair.get("p_seed_ttest", math.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def table3_text(frame: pd.DataFrame, latex: bool = False) -> str:
    header = list(frame.columns)
    plain = _latex if latex else (lambda text: text)
    body = [[str(r["scenario"]), plain(str(r["metric"])),
             *(plain(_p(r[c])) if c.startswith("p ") else _cell(r[c], math.nan) for c in header[2:])]
            for _, r in frame.iterrows()]
    return _render(header, body, latex, text_columns=2)


def write_reports(jobs: list[Job], output: Path, ks: list[int], reference: str | None = None,
                  names: list[str] | None = None) -> dict[str, Path]:
    """Write table2.{md,csv,tex} and (when possible) table3.{md,csv,tex}; returns name -> path.

    Args:
        jobs: the study's finished jobs.
        output: the study folder.
        ks: cut-offs of the reported metrics.
        reference: the model compared with the strongest baseline (default clcrec if present, else the first).
        names: the metrics reported at each K (default recall and ndcg; GIR's Table 2 adds precision).
    """
    results = load_results(jobs)
    reference = reference or ("clcrec" if "clcrec" in results.labels else results.labels[0])
    metrics = report_metrics(ks) if names is None else report_metrics(ks, names)
    long = table2(results, reference, metrics)
    written = {}
    seeds = sorted(set(results.summary["seed"]))
    note = report_note(results, reference)
    for suffix, text in (("md", note + table2_text(long, results, reference)),
                         ("tex", table2_text(long, results, reference, latex=True)),
                         ("csv", long.to_csv(index=False))):
        written[f"table2.{suffix}"] = _write(output / f"table2.{suffix}", text)
    frame = table3(results, metrics)
    if frame is not None:
        for suffix, text in (("md", report_note(results, None) + table3_text(frame)),
                             ("tex", table3_text(frame, latex=True)), ("csv", frame.to_csv(index=False))):
            written[f"table3.{suffix}"] = _write(output / f"table3.{suffix}", text)
    return written


def report_note(results: Results, reference: str | None) -> str:
    """The paragraph above a markdown table: what the cells, marks and p-values mean.

    Args:
        results: the study's runs.
        reference: Table 2's reference model; None for Table 3 (pairs, no bold or underline).
    """
    seeds = sorted(set(results.summary["seed"]))
    over = (f"Seed {seeds[0]} (one seed: no std)" if len(seeds) == 1 else
            "Mean ± sample std over seeds " + ", ".join(map(str, seeds)))
    parts = [over + " (test split)." + ("" if reference is None else
             f" Bold: best; underlined: strongest model other than {reference}; both p-values compare "
             f"{reference} with the strongest other model of the column, two-sided."),
             "p (per user): Wilcoxon signed-rank test over users, each user's metric first averaged over the seeds "
             "in which both models evaluated them: are the methods different for users of this population, "
             "averaging over training seeds?"]
    if len(seeds) == 1:
        parts.append("p (per seed): not available with one seed (n/a); the per-user p then compares two trained "
                     "instances rather than two methods.")
    else:
        parts.append(f"p (per seed): paired t-test over the {len(seeds)} seeds' means: does the difference hold "
                     f"across training seeds? (low power with {len(seeds)} seeds)")
    marks = {mark(results, label) for label in results.labels}
    if "†" in marks:
        parts.append("†: no representation for cold items: it ranks them at random, so its cold cells are n/a "
                     "and it is never best or compared there.")
    if "‡" in marks:
        parts.append("‡: cold users scored by the popularity fallback; never best or compared in the cold column.")
    return " ".join(parts) + "\n\n"


def _write(path: Path, text: str) -> Path:
    atomic_write(path, text.encode())
    return path
