"""`tune`: Optuna over a model's search space, scored on the validation split only.

Every trial is a run directory whose config has phases ["valid"], so the test split is never evaluated while
tuning (not even written to metrics.json). Trials are reused on a rerun (runs.py), which makes tuning resumable
with an in-memory Optuna study: the sampler asks the same points again and finished ones cost nothing.

    DIR/trials/<name=value,...>/   one run directory per trial
    DIR/trials.csv                 trial, parameters, objective, best epoch, training seconds
    DIR/best.json                  {"label", "model", "dataset", "protocol", "seed", "split_seed", "objective", "value",
                                    "params": the best point plus the fixed --set values}; `compare --tuned` reads it
    DIR/tune.png                   objective over the grid (two parameters: a heatmap; one: a curve)
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
from coldstart.features.extras import require
from coldstart.models.base import atomic_write
from coldstart.studies.runs import Job, Variant, model_fields, run_job, split_seeds_of

SAMPLERS = ("grid", "tpe")


def parse_objective(text: str) -> tuple[str, str]:
    """"all:recall@20" -> ("all", "recall@20")."""
    scenario, colon, metric = text.partition(":")
    if not colon or scenario not in ("warm", "cold", "all") or "@" not in metric:
        raise DataError(f"expected scenario:metric@k such as cold:recall@20, got {text!r}", field="--objective")
    return scenario, metric


@dataclass
class Tuning:
    """What `tune` searches: one variant on one dataset / protocol / seed, a space, an objective.

    `seed` seeds the model and the sampler; `split_seed` the split (None: `seed`). A study may only use the
    result on that same split (runs.apply_tuned refuses others).
    """

    dataset: str
    variant: Variant
    space: dict[str, list[Any]]
    protocol: str = "cold_item"
    seed: int = 0
    objective: str = "all:recall@20"
    sampler: str = "grid"
    trials: int | None = None  # default: the grid's size
    data: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    ks: list[int] = field(default_factory=lambda: [10, 20])
    features: list[str] = field(default_factory=list)
    split_seed: int | None = None

    def check(self) -> None:
        if not self.space:
            raise DataError(f"{self.variant.model} has no search space; give --space name=v1,v2",
                            field="--space")
        allowed = model_fields(self.variant.model)
        for name, values in self.space.items():
            if name not in allowed:
                raise DataError(f"{self.variant.model} has no hyperparameter {name!r}", field="--space")
            if not values:
                raise DataError(f"no values for {name!r}", field="--space")
        if self.sampler not in SAMPLERS:
            raise DataError(f"unknown sampler {self.sampler!r} (use {', '.join(SAMPLERS)})", field="--sampler")
        if self.trials is not None and self.trials < 1:
            raise DataError(f"must be >= 1, got {self.trials}", field="--trials")
        parse_objective(self.objective)

    def job(self, output: Path, params: dict[str, Any]) -> Job:
        name = ",".join(f"{k}={v}" for k, v in params.items())
        cfg = RunConfig(dataset=self.dataset, model=self.variant.model, protocol=self.protocol, seed=self.seed,
                        data=self.data, split=self.split, hyper={**self.variant.hyper, **params}, ks=self.ks,
                        features=self.features, phases=["valid"], split_seed=self.split_seed)
        return Job(cfg, output / "trials" / name, dict(params))


def grid_size(space: dict[str, list[Any]]) -> int:
    return math.prod(len(v) for v in space.values())


def run_tuning(tuning: Tuning, output: str | Path, status: Callable[[str], None] | None = None,
               progress: bool = False) -> dict[str, Any]:
    """Run the search; write trials.csv and best.json; returns the best.json content."""
    optuna = require("optuna", "tune", "tuning")
    tuning.check()
    say = status or (lambda message: None)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    scenario, metric = parse_objective(tuning.objective)
    n_trials = tuning.trials or grid_size(tuning.space)
    if tuning.sampler == "grid":
        n_trials = min(n_trials, grid_size(tuning.space))
        sampler = optuna.samplers.GridSampler(tuning.space, seed=tuning.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=tuning.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rows: list[dict[str, Any]] = []

    def objective(trial) -> float:
        params = {name: trial.suggest_categorical(name, values) for name, values in tuning.space.items()}
        job = tuning.job(output, params)
        n = trial.number + 1
        tag = " ".join(f"{k}={v}" for k, v in params.items())
        metrics, how = run_job(job, lambda m: say(f"[{n}/{n_trials}] {tag}: {m}"), progress)
        block = metrics["valid"].get(scenario)
        if block is None or metric not in block:
            raise DataError(f"the validation split has no {scenario}:{metric}", field="--objective")
        value = float(block[metric])
        rows.append({"trial": n, **params, "objective": value, "best_epoch": metrics.get("best_epoch"),
                     "train_seconds": metrics.get("train_seconds"), "run": str(job.folder)})
        say(f"[{n}/{n_trials}] {tag}: valid {scenario} {metric} {value:.4f} ({how})")
        return value

    study.optimize(objective, n_trials=n_trials)
    trials = pd.DataFrame(rows)
    atomic_write(output / "trials.csv", trials.to_csv(index=False).encode())
    best = {"label": tuning.variant.label, "model": tuning.variant.model, "dataset": tuning.dataset,
            "protocol": tuning.protocol, "seed": tuning.seed,
            "split_seed": split_seeds_of(tuning.protocol, [tuning.seed], tuning.split_seed)[0],
            "features": tuning.features,
            "objective": f"valid {tuning.objective}", "value": study.best_value, "trials": len(rows),
            "params": {**tuning.variant.hyper, **study.best_params}}
    atomic_write(output / "best.json", (json.dumps(best, indent=1) + "\n").encode())
    if len(tuning.space) <= 2:
        from coldstart.studies.plots import plot_tuning

        plot_tuning(trials, list(tuning.space), f"valid {tuning.objective}", output / "tune.png",
                    f"{tuning.variant.label} on {tuning.dataset} ({tuning.protocol}, seed {tuning.seed}"
                    + ("" if tuning.split_seed in (None, tuning.seed) else f", split seed {tuning.split_seed}") + ")")
    return best
