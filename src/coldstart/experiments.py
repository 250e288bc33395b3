"""`run`: one dataset, model, protocol and seed -> a run directory.

    RUN/config.json        every resolved setting (dataset options, protocol parameters, hyperparameters, eval,
                           feature presets)
    RUN/features.json      one report per feature preset (sizes, items without content, timing, cache hit)
    RUN/split/             the split (train/valid/test.csv + meta.json)
    RUN/model/             the checkpoint (config.json + model.pt)
    RUN/metrics.json       {"dataset", "model", "protocol", "seed", "best_epoch", "train_seconds", "valid": {...}, "test": {...}}
    RUN/per_user.csv       per-user metrics (phase, scenario, user, metric columns), for significance tests
    RUN/train.log          what happened, with timings (one line per epoch for trained models)
    RUN/checkpoint/        checkpoint.pt after every epoch (trained models), so `resume` can continue;
                           removed once metrics.json is written
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from coldstart.data.loaders import load_dataset
from coldstart.data.splits import Split, make_split
from coldstart.errors import DataError
from coldstart.eval.evaluate import SCENARIOS, EvalResult, evaluate
from coldstart.models import MODELS
from coldstart.models.base import atomic_write
from coldstart.train import CHECKPOINT, TrainOptions

log = logging.getLogger("coldstart")


@dataclass
class RunConfig:
    """Everything a run needs; `coldstart run` builds one from its flags and --config / --set."""

    dataset: str
    model: str
    protocol: str = "cold_item"
    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)  # loader options, e.g. {"min_rating": 4}
    split: dict[str, Any] = field(default_factory=dict)  # protocol parameters, e.g. {"cold_fraction": 0.2}
    hyper: dict[str, Any] = field(default_factory=dict)  # model hyperparameters
    ks: list[int] = field(default_factory=lambda: [10, 20])
    features: list[str] = field(default_factory=list)  # feature presets replacing the raw content, e.g. ["textual"]
    phases: list[str] = field(default_factory=lambda: ["valid", "test"])  # tuning runs use ["valid"] only


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=1) + "\n").encode())


def _file_logger(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def run(cfg: RunConfig, output: str | Path, overwrite: bool = False,
        status: Callable[[str], None] | None = None, progress: bool = False) -> dict:
    """Load, split, fit, evaluate on valid and test, and write the run directory.

    Args:
        cfg: the run configuration.
        output: the run directory.
        overwrite: replace an existing run directory.
        status: called with a short description of each step (the CLI shows it).
        progress: show per-epoch progress bars while training.

    Returns:
        The metrics.json content.
    """
    say = status or (lambda msg: None)
    if cfg.model not in MODELS:
        raise DataError(f"unknown model {cfg.model!r} (use {', '.join(MODELS)})", field="model")
    model = MODELS[cfg.model](**cfg.hyper)  # validates hyperparameters before any work
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError("run directory exists and is not empty; pass --overwrite or choose another --output", path=out)
    seed_everything(cfg.seed)
    say(f"loading {cfg.dataset}")
    dataset = load_dataset(cfg.dataset, **cfg.data)
    say(f"splitting ({cfg.protocol}, seed {cfg.seed})")
    split = make_split(dataset, cfg.protocol, seed=cfg.seed, **cfg.split)
    feature_reports = use_features(cfg, split, progress, say)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    handler = _file_logger(out / "train.log")
    try:
        log.info("dataset %s", dataset.summary())
        split.save(out / "split")
        resolved = {"dataset": cfg.dataset, "model": cfg.model, "protocol": cfg.protocol, "seed": cfg.seed,
                    "data": cfg.data, "split": {**split.params, "seed": split.seed},
                    "hyperparameters": model.hyperparameters(), "ks": cfg.ks, "features": cfg.features,
                    "phases": cfg.phases,
                    "split_fingerprint": split.fingerprint()}
        _write_json(out / "config.json", resolved)
        if feature_reports:
            _write_json(out / "features.json", feature_reports)
        log.info("split %s: train %d, valid %d, test %d", cfg.protocol, len(split.train), len(split.valid), len(split.test))
        for report in feature_reports:
            log.info("features %s", json.dumps(report))
        return _train_and_report(cfg, model, split, out, TrainOptions(out / "checkpoint", False, progress, cfg.seed), say)
    finally:
        log.removeHandler(handler)
        handler.close()


def resume(output: str | Path, status: Callable[[str], None] | None = None, progress: bool = False) -> dict:
    """Continue an interrupted run from its last epoch checkpoint; the result equals an uninterrupted run.

    Args:
        output: the run directory written by `run`.
        status, progress: as in `run`.

    Returns:
        The metrics.json content (read back when the run had already finished).
    """
    say = status or (lambda msg: None)
    out = Path(output)
    if (out / "metrics.json").exists():
        say("run already finished")
        return json.loads((out / "metrics.json").read_text())
    if not (out / "config.json").exists():
        raise DataError("not a run directory (no config.json)", path=out)
    saved = json.loads((out / "config.json").read_text())
    split_params = {k: v for k, v in saved["split"].items() if k != "seed"}
    cfg = RunConfig(dataset=saved["dataset"], model=saved["model"], protocol=saved["protocol"], seed=saved["seed"],
                    data=saved["data"], split=split_params, hyper=saved["hyperparameters"], ks=saved["ks"], features=saved.get("features", []),
                    phases=saved.get("phases", ["valid", "test"]))
    model = MODELS[cfg.model](**cfg.hyper)
    seed_everything(cfg.seed)
    say(f"loading {cfg.dataset}")
    dataset = load_dataset(cfg.dataset, **cfg.data)
    split = Split.load(out / "split", dataset=dataset)
    feature_reports = use_features(cfg, split, progress, say)
    has_checkpoint = (out / "checkpoint" / CHECKPOINT).exists()
    handler = _file_logger(out / "train.log")
    try:
        log.info("resuming %s (%s)", out, "from the last checkpoint" if has_checkpoint else "no checkpoint: from the start")
        for report in feature_reports:
            log.info("features %s", json.dumps(report))
        options = TrainOptions(out / "checkpoint", has_checkpoint, progress, cfg.seed)
        return _train_and_report(cfg, model, split, out, options, say)
    finally:
        log.removeHandler(handler)
        handler.close()


def use_features(cfg: RunConfig, split: Split, progress: bool, say: Callable[[str], None]) -> list[dict]:
    """Replace the split's dataset content by the configured feature presets (built from train only)."""
    if not cfg.features:
        return []
    from coldstart.features import with_features

    say(f"features: {', '.join(cfg.features)}")
    split.dataset, reports = with_features(split.dataset, cfg.features, train=split.train, progress=progress,
                                           status=say)
    return reports


def _train_and_report(cfg: RunConfig, model, split: Split, out: Path, options: TrainOptions,
                      say: Callable[[str], None]) -> dict:
    """Fit (with checkpoints), save the model, evaluate the configured phases, write metrics.json and per_user.csv."""
    say(f"training {cfg.model}")
    start = time.perf_counter()
    model.fit(split, options)
    train_seconds = time.perf_counter() - start
    log.info("trained %s in %.2fs", cfg.model, train_seconds)
    model.save(out / "model")
    say("evaluating")
    results = {phase: evaluate(model, split, phase, ks=cfg.ks) for phase in cfg.phases}
    metrics = metrics_document(cfg, split, results, train_seconds, getattr(model, "best_epoch_", None))
    if getattr(model, "cold_items", "content") == "none":
        metrics["note"] = f"{cfg.model} has no representation for cold items; see its docs for how it scores them"
    per_user = pd.concat([r.per_user.assign(phase=p) for p, r in results.items()], ignore_index=True)
    per_user.to_csv(out / "per_user.csv.tmp", index=False)
    (out / "per_user.csv.tmp").replace(out / "per_user.csv")
    _write_json(out / "metrics.json", metrics)
    log.info("%s %s", cfg.phases[-1], json.dumps(metrics[cfg.phases[-1]]))
    shutil.rmtree(out / "checkpoint", ignore_errors=True)  # the run is complete; model/ holds the best epoch
    return metrics


def metrics_document(cfg: RunConfig, split: Split, results: dict[str, EvalResult], train_seconds: float,
                     best_epoch: int | None) -> dict:
    """The metrics.json schema (later tools rely on it)."""
    doc = {"dataset": cfg.dataset, "model": cfg.model, "protocol": cfg.protocol, "seed": cfg.seed,
           "best_epoch": best_epoch, "train_seconds": round(train_seconds, 3),
           "scenarios_over": "users" if split.cold_kind == "user" else "items"}
    for phase, res in results.items():
        doc[phase] = {s: res.metrics[s] for s in SCENARIOS if s in res.metrics}
        doc[f"{phase}_users"] = res.n_users
    return doc
