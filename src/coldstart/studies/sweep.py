"""`sweep`: one model over the values of one hyperparameter (optionally one curve per value of a second), then
a CSV and a matplotlib figure with warm / cold / all panels (Figures 5-7 of the CLCRec paper).

    DIR/runs/<series>=<v>/<param>=<x>/seed<s>/   one run directory each, reused when finished
    DIR/sweep.csv                                  every (series, value, seed, phase, scenario, metric, score)
    DIR/sweep_summary.csv                          mean and std over seeds, the numbers behind the figure
    DIR/sweep.png                                  rows: metrics; columns: scenarios; one curve per series
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from coldstart.errors import DataError
from coldstart.experiments import RunConfig
from coldstart.models.base import atomic_write
from coldstart.studies.runs import Job, model_fields, run_jobs, split_seeds_of

#: The paper's ablations as ready-made sweeps: (param, values, series, series values, fixed hyperparameters).
FIGURES: dict[str, dict[str, Any]] = {
    # Figure 5: U-I CEN alone (lambda = 0, "we discard R-E CEN"), rho over {0, 0.2, ..., 1}, 1 and 128 negatives.
    "5": {"param": "num_sample", "values": "0,0.2,...,1", "series": "num_neg", "series_values": "1,128",
          "fixed": {"lr_lambda": 0.0}},
    # Figure 6: the number of R-E negatives, with one U-I negative "to emphasize the influence of R-E CEN".
    "6": {"param": "num_neg_re", "values": "2,8,32,128,256,512", "fixed": {"num_neg": 1}},
    # Figure 7: lambda over {0, 0.1, ..., 0.8}.
    "7": {"param": "lr_lambda", "values": "0,0.1,...,0.8"},
}


def parse_values(text: str, name: str) -> list[Any]:
    """"0,0.1,...,0.8" -> [0, 0.1, ..., 0.8] (arithmetic, step from the first two); "1,128" -> [1, 128].

    Values are JSON (numbers, true/false, null) or strings.
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if "..." in parts:
        at = parts.index("...")
        if at != 2 or len(parts) != 4:
            raise DataError(f"a range is written first,second,...,last; got {text!r}", field=name)
        try:
            first, second, last = (float(parts[i]) for i in (0, 1, 3))
        except ValueError:
            raise DataError(f"a range needs numbers, got {text!r}", field=name) from None
        step = second - first
        if step <= 0 or last < first:
            raise DataError(f"a range must increase, got {text!r}", field=name)
        count = int(math.floor((last - first) / step + 1e-9)) + 1
        integer = all(float(parts[i]).is_integer() and "." not in parts[i] for i in (0, 1, 3))
        values = [first + i * step for i in range(count)]
        return [int(round(v)) if integer else round(v, 10) for v in values]
    if not parts:
        raise DataError("no values given", field=name)
    out = []
    for part in parts:
        try:
            out.append(json.loads(part))
        except json.JSONDecodeError:
            out.append(part)
    return out


def figure_grid(figure: str) -> tuple[str, list[Any], str | None, list[Any], dict[str, Any]]:
    """(param, values, series, series values, fixed hyperparameters) of one of the paper's FIGURES."""
    if figure not in FIGURES:
        raise DataError(f"unknown figure {figure!r} (use {', '.join(FIGURES)})", field="--figure")
    spec = FIGURES[figure]
    series = spec.get("series")
    series_values = parse_values(spec["series_values"], "--figure") if series else [None]
    return spec["param"], parse_values(spec["values"], "--figure"), series, series_values, dict(spec.get("fixed", {}))


def parse_assignment(text: str, option: str) -> tuple[str, list[Any]]:
    """"name=v1,v2" -> ("name", [v1, v2])."""
    name, eq, values = text.partition("=")
    if not eq or not name.strip():
        raise DataError(f"expected name=value,value,..., got {text!r}", field=option)
    return name.strip(), parse_values(values, option)


@dataclass
class Sweep:
    """One model, one swept hyperparameter, optional series, seeds, and everything else fixed."""

    dataset: str
    model: str
    param: str
    values: list[Any]
    seeds: list[int]
    protocol: str = "cold_item"
    series: str | None = None
    series_values: list[Any] = field(default_factory=lambda: [None])
    hyper: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    ks: list[int] = field(default_factory=lambda: [10, 20])
    features: list[str] = field(default_factory=list)
    split_seed: int | None = None  # None: each seed draws its own split

    def split_seeds(self) -> list[int | None]:
        """The split seed of every run, in seed order (None for a published split)."""
        return split_seeds_of(self.protocol, self.seeds, self.split_seed)

    def jobs(self, output: Path) -> list[Job]:
        allowed = model_fields(self.model)
        for name in filter(None, (self.param, self.series, *self.hyper)):
            if name not in allowed:
                raise DataError(f"{self.model} has no hyperparameter {name!r}", field=name)
        if self.series == self.param:
            raise DataError("the series and the swept parameter must differ", field="--series")
        jobs = []
        for s_value in self.series_values:
            for value in self.values:
                hyper = {**self.hyper, self.param: value}
                folder = output / "runs"
                if self.series is not None:
                    hyper[self.series] = s_value
                    folder = folder / f"{self.series}={s_value}"
                for seed in self.seeds:
                    cfg = RunConfig(dataset=self.dataset, model=self.model, protocol=self.protocol, seed=seed,
                                    data=self.data, split=self.split, hyper=hyper, ks=self.ks,
                                    features=self.features, split_seed=self.split_seed)
                    tags = {self.series: s_value} if self.series else {}
                    jobs.append(Job(cfg, folder / f"{self.param}={value}" / f"seed{seed}",
                                    {**tags, self.param: value, "seed": seed}))
        return jobs


def run_sweep(sweep: Sweep, output: str | Path, status: Callable[[str], None] | None = None,
              progress: bool = False) -> pd.DataFrame:
    """Run (or reuse) every point, write sweep.csv and sweep_summary.csv; returns the summary."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    jobs = sweep.jobs(output)
    metrics = run_jobs(jobs, status, progress)
    rows = []
    for job, doc in zip(jobs, metrics):
        series = job.tags.get(sweep.series) if sweep.series else None
        for phase in ("valid", "test"):
            for scenario, block in doc.get(phase, {}).items():
                rows += [{"series": series, "value": job.tags[sweep.param], "seed": job.tags["seed"],
                          "phase": phase, "scenario": scenario, "metric": m, "score": v} for m, v in block.items()]
    long = pd.DataFrame(rows)
    summary = (long.groupby(["series", "value", "phase", "scenario", "metric"], dropna=False)["score"]
               .agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else math.nan, seeds="count")
               .reset_index())
    summary.insert(0, "param", sweep.param)
    if sweep.series:
        summary = summary.rename(columns={"series": sweep.series})
    atomic_write(output / "sweep.csv", long.to_csv(index=False).encode())
    atomic_write(output / "sweep_summary.csv", summary.to_csv(index=False).encode())
    return summary
