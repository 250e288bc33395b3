"""`run`: one dataset, model, protocol and seed -> a run directory.

    RUN/.coldstart-run     the marker and lock file (rundir.py): written first, holds the pid of the process at work
    RUN/config.json        every resolved setting (dataset options, protocol parameters, hyperparameters, eval,
                           feature presets)
    RUN/features.json      one report per feature preset (sizes, items without content, timing, cache hit)
    RUN/features/          the presets' fitted state and the raw modality descriptions (features/fitted.py), which
                           turn a new item's raw content into the model's input exactly as in training
    RUN/split/             the split (train/valid/test.csv + meta.json)
    RUN/model/             the checkpoint (config.json + model.pt)
    RUN/metrics.json       {"dataset", "model", "protocol", "seed", "split_seed", "best_epoch", "train_seconds",
                           "cold_items", "cold_users", "valid": {...}, "test": {...}}
    RUN/per_user.csv       per-user metrics (phase, scenario, user, metric columns), for significance tests
    RUN/train.log          what happened, with timings (one line per epoch for trained models)
    RUN/checkpoint/        checkpoint.pt after every epoch and the one before it, checkpoint.prev.pt (trained
                           models), so `resume` can continue; removed once metrics.json is written

`seed` seeds the model (initialisation, negatives, batch order); `split_seed` the split (None: `seed`), so a
study can keep one split and vary only the initialisation.
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

from coldstart import distributed
from coldstart.data.loaders import load_dataset
from coldstart.data.splits import Split, make_split
from coldstart.errors import DataError
from coldstart.eval.evaluate import SCENARIOS, EvalResult, evaluate
from coldstart.models import MODELS
from coldstart.models.base import atomic_write
from coldstart.rundir import MARKER, RunLock, clear, read_json, replace_problem
from coldstart.train import TrainOptions, checkpoint_seconds, has_checkpoint

log = logging.getLogger("coldstart")


@dataclass
class RunConfig:
    """Everything a run needs; `coldstart run` builds one from its flags and --config / --set."""

    dataset: str
    model: str
    protocol: str = "cold_item"
    seed: int = 0  # the model's seed; also the split's unless split_seed is given
    data: dict[str, Any] = field(default_factory=dict)  # loader options, e.g. {"min_rating": 4}
    split: dict[str, Any] = field(default_factory=dict)  # protocol parameters, e.g. {"cold_fraction": 0.2}
    hyper: dict[str, Any] = field(default_factory=dict)  # model hyperparameters
    ks: list[int] = field(default_factory=lambda: [10, 20])
    features: list[str] = field(default_factory=list)  # feature presets replacing the raw content, e.g. ["textual"]
    phases: list[str] = field(default_factory=lambda: ["valid", "test"])  # tuning runs use ["valid"] only
    split_seed: int | None = None  # seed of the split; None: `seed` (as before the two were separated)

    def split_seed_used(self) -> int | None:
        """The seed the split is drawn with (None for a published split, which has no seed)."""
        if self.protocol == "published":
            return None
        return self.seed if self.split_seed is None else self.split_seed


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

    The folder must be absent, empty, or a run directory (rundir.py): a finished run or one with a checkpoint
    is only replaced with `overwrite`, a run that failed before either is replaced without it, and any other
    folder is refused. The folder is locked for the whole run.

    Args:
        cfg: the run configuration.
        output: the run directory.
        overwrite: replace an existing run directory.
        status: called with a short description of each step (the CLI shows it).
        progress: show per-epoch progress bars while training.

    Returns:
        The metrics.json content.

    Raises:
        DataError: bad settings, a folder that may not be replaced, or one another process is using.
    """
    say = status or (lambda msg: None)
    if cfg.model not in MODELS:
        raise DataError(f"unknown model {cfg.model!r} (use {', '.join(MODELS)})", field="model")
    model = MODELS[cfg.model](**cfg.hyper)  # validates hyperparameters before any work
    from coldstart.settings import check_data, check_split

    check_data(cfg.dataset, cfg.data)  # the CLI checks these too; Python callers get the same one-line errors
    check_split(cfg.protocol, cfg.split)
    out = Path(output)
    if distributed.init_from_env() and not distributed.is_main():
        return _follow_run(cfg, model, out)  # under torchrun: rank 0 alone owns the folder
    problem = replace_problem(out, overwrite)  # before the lock creates the marker in someone's folder
    if problem is not None:
        raise DataError(problem, path=out)
    created = not out.exists()
    with RunLock(out):
        try:
            problem = replace_problem(out, overwrite)  # another process may have finished a run here meanwhile
            if problem is not None:
                raise DataError(problem, path=out)
            return _run_locked(cfg, model, out, status=say, progress=progress)
        except BaseException:
            # Remove only what this call created: a folder it made that holds nothing but the marker. Anything
            # more (train.log, split/) stays for the post-mortem; the next run replaces it (rundir.py).
            if created and [p.name for p in out.iterdir()] == [MARKER]:
                shutil.rmtree(out, ignore_errors=True)
            raise


def _run_locked(cfg: RunConfig, model, out: Path, status: Callable[[str], None], progress: bool) -> dict:
    """`run` once the folder is known replaceable and locked: the old contents go once the split is made."""
    say = status
    seed_everything(cfg.seed)
    say(f"loading {cfg.dataset}")
    dataset = load_dataset(cfg.dataset, **cfg.data)
    split_seed = cfg.split_seed_used()
    say(f"splitting ({cfg.protocol}, seed {split_seed})" if split_seed == cfg.seed or split_seed is None else
        f"splitting ({cfg.protocol}, split seed {split_seed}; model seed {cfg.seed})")
    split = make_split(dataset, cfg.protocol, seed=cfg.seed if split_seed is None else split_seed, **cfg.split)
    feature_reports = use_features(cfg, split, progress, say)
    # The other ranks made their own split: same? (no-op in one process; after the features, which they then read
    # from the cache instead of extracting them again)
    distributed.check_same(split.fingerprint(), "split")
    if any(p.name != MARKER for p in out.iterdir()):
        say(f"replacing the previous contents of {out}")
    clear(out)
    handler = _file_logger(out / "train.log")
    try:
        log.info("dataset %s", dataset.summary())
        split.save(out / "split")
        resolved = {"dataset": cfg.dataset, "model": cfg.model, "protocol": cfg.protocol, "seed": cfg.seed,
                    "split_seed": split_seed,
                    "data": cfg.data, "split": {**split.params, "seed": split.seed},
                    "hyperparameters": model.hyperparameters(), "ks": cfg.ks, "features": cfg.features,
                    "phases": cfg.phases,
                    "split_fingerprint": split.fingerprint()}
        _write_json(out / "config.json", resolved)
        if feature_reports:
            _write_json(out / "features.json", feature_reports)
        save_fitted_features(cfg, dataset, split, out)
        log.info("split %s: train %d, valid %d, test %d", cfg.protocol, len(split.train), len(split.valid), len(split.test))
        for report in feature_reports:
            log.info("features %s", json.dumps(report))
        options = TrainOptions(out / "checkpoint", False, progress, cfg.seed, status=say)
        return _train_and_report(cfg, model, split, out, options, say)
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

    Raises:
        DataError: not a run directory, a damaged config.json or checkpoint (naming the file and what to do),
            or a folder another process is using.
    """
    say = status or (lambda msg: None)
    out = Path(output)
    start_over = f"delete {out} and run again, or rerun `coldstart run ... --output {out} --overwrite`"
    if (out / "metrics.json").exists():
        say("run already finished")
        return read_json(out / "metrics.json", start_over)
    if not (out / "config.json").exists():
        raise DataError("not a run directory (no config.json)", path=out)
    if distributed.init_from_env() and not distributed.is_main():
        return _follow_resume(out, start_over)  # the run directory must be on a file system every rank sees
    with RunLock(out):
        if (out / "metrics.json").exists():  # finished by another process while this one waited to lock
            say("run already finished")
            return read_json(out / "metrics.json", start_over)
        return _resume_locked(out, read_json(out / "config.json", start_over), start_over, say, progress)


def _resume_locked(out: Path, saved: dict, start_over: str, say: Callable[[str], None], progress: bool) -> dict:
    """`resume` once the folder is locked and its config.json read."""
    cfg = _saved_config(saved, out, start_over)
    model = MODELS[cfg.model](**cfg.hyper)
    seed_everything(cfg.seed)
    say(f"loading {cfg.dataset}")
    dataset = load_dataset(cfg.dataset, **cfg.data)
    split = Split.load(out / "split", dataset=dataset)
    feature_reports = use_features(cfg, split, progress, say)
    distributed.check_same(split.fingerprint(), "split")
    resuming = has_checkpoint(out / "checkpoint")
    handler = _file_logger(out / "train.log")
    try:
        log.info("resuming %s (%s)", out, "from the last checkpoint" if resuming else "no checkpoint: from the start")
        if not (out / "features" / "fitted.json").exists():
            save_fitted_features(cfg, dataset, split, out)
        for report in feature_reports:
            log.info("features %s", json.dumps(report))
        options = TrainOptions(out / "checkpoint", resuming, progress, cfg.seed, status=say)
        return _train_and_report(cfg, model, split, out, options, say)
    finally:
        log.removeHandler(handler)
        handler.close()


def _saved_config(saved: dict, out: Path, start_over: str) -> RunConfig:
    """The RunConfig a run directory's config.json describes; DataError naming the file when it is damaged."""
    try:
        split_params = {k: v for k, v in saved["split"].items() if k != "seed"}
        cfg = RunConfig(dataset=saved["dataset"], model=saved["model"], protocol=saved["protocol"],
                        seed=saved["seed"], data=saved["data"], split=split_params, hyper=saved["hyperparameters"],
                        ks=saved["ks"], features=saved.get("features", []),
                        phases=saved.get("phases", ["valid", "test"]), split_seed=saved.get("split_seed"))
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"damaged file (no valid {exc} setting); {start_over}", path=out / "config.json") from exc
    if cfg.model not in MODELS:
        raise DataError(f"unknown model {cfg.model!r}; {start_over}", path=out / "config.json", field="model")
    return cfg


def _follow_run(cfg: RunConfig, model, out: Path) -> dict:
    """`run` on a rank other than 0: the same data, split and features, then its share of the training.

    It writes nothing: rank 0 locks and writes the run directory, checkpoints and metrics, and evaluates. The split
    is made here rather than read from rank 0's folder (no shared file system needed) and checked against rank 0's
    fingerprint, which also waits for rank 0's feature extraction, so this rank reads the features from the cache.

    Returns:
        {} (the metrics are rank 0's).
    """
    seed_everything(cfg.seed)
    dataset = load_dataset(cfg.dataset, **cfg.data)
    split_seed = cfg.split_seed_used()
    split = make_split(dataset, cfg.protocol, seed=cfg.seed if split_seed is None else split_seed, **cfg.split)
    distributed.check_same(split.fingerprint(), "split")
    use_features(cfg, split, False, lambda message: None)
    model.fit(split, TrainOptions(out / "checkpoint", False, False, cfg.seed))
    return {}


def _follow_resume(out: Path, start_over: str) -> dict:
    """`resume` on a rank other than 0: read the run's settings and split from its folder, then train its share
    (rank 0 reads the checkpoint and sends it, fit decides whether to resume)."""
    cfg = _saved_config(read_json(out / "config.json", start_over), out, start_over)
    model = MODELS[cfg.model](**cfg.hyper)
    seed_everything(cfg.seed)
    dataset = load_dataset(cfg.dataset, **cfg.data)
    split = Split.load(out / "split", dataset=dataset)
    distributed.check_same(split.fingerprint(), "split")
    use_features(cfg, split, False, lambda message: None)
    model.fit(split, TrainOptions(out / "checkpoint", has_checkpoint(out / "checkpoint"), False, cfg.seed))
    return {}


def use_features(cfg: RunConfig, split: Split, progress: bool, say: Callable[[str], None]) -> list[dict]:
    """Replace the split's dataset content by the configured feature presets (built from train only)."""
    if not cfg.features:
        return []
    from coldstart.features import with_features

    say(f"features: {', '.join(cfg.features)}")
    split.dataset, reports = with_features(split.dataset, cfg.features, train=split.train, progress=progress,
                                           status=say)
    return reports


def save_fitted_features(cfg: RunConfig, dataset, split: Split, out: Path) -> None:
    """Write RUN/features/: the presets' fitted state (vocabularies, idf, SVD, standardisation) and the raw
    modality descriptions, so new items get exactly the training transformation (features/fitted.py)."""
    from coldstart.features.fitted import fit_features

    try:
        fit_features(dataset, cfg.features, train=split.train).save(out / "features")
    except (DataError, ValueError, OSError) as exc:  # serving needs it, training does not: say so, go on
        log.warning("could not save the fitted feature presets (RUN/features/; `coldstart serve` will refit them "
                    "from the dataset): %s", exc)


def _train_and_report(cfg: RunConfig, model, split: Split, out: Path, options: TrainOptions,
                      say: Callable[[str], None]) -> dict:
    """Fit (with checkpoints), save the model, evaluate the configured phases, write metrics.json and per_user.csv."""
    say(f"training {cfg.model}")
    # Seconds the interrupted processes spent, as stored in their checkpoints (0 for a fresh run).
    carried = checkpoint_seconds(options.checkpoint_dir)
    start = time.perf_counter()
    model.fit(split, options)
    train_seconds = carried + time.perf_counter() - start
    log.info("trained %s in %.2fs%s", cfg.model, train_seconds,
             f" ({carried:.2f}s of them before the resume)" if carried else "")
    model.save(out / "model")
    say("evaluating")
    results = {phase: evaluate(model, split, phase, ks=cfg.ks) for phase in cfg.phases}
    metrics = metrics_document(cfg, split, results, train_seconds, getattr(model, "best_epoch_", None))
    metrics["cold_items"] = getattr(model, "cold_items", "content")
    metrics["cold_users"] = getattr(model, "cold_users", "none")
    notes = []
    if metrics["cold_items"] == "none":
        notes.append(f"{cfg.model} has no representation for cold items; see its docs for how it scores them")
    if split.cold_kind == "user" and metrics["cold_users"] == "none":
        notes.append("cold users are scored by training popularity; see docs/models/baselines.md")
    if notes:
        metrics["note"] = "\n".join(notes)
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
           "split_seed": split.seed, "best_epoch": best_epoch, "train_seconds": round(train_seconds, 3),
           "scenarios_over": "users" if split.cold_kind == "user" else "items"}
    for phase, res in results.items():
        doc[phase] = {s: res.metrics[s] for s in SCENARIOS if s in res.metrics}
        doc[f"{phase}_users"] = res.n_users
    return doc
