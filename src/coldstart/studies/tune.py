"""`tune`: Optuna over a model's search space, scored on the validation split only.

Every trial is a run directory whose config has phases ["valid"], so the test split is never evaluated while
tuning (not even written to metrics.json). Trials are reused on a rerun (runs.py), which makes tuning resumable
with an in-memory Optuna study: the sampler asks the same points again and finished ones cost nothing.

    DIR/trials/<name=value,...>/   one run directory per trial
    DIR/trials.csv                 trial, parameters, objective, best epoch, training seconds
    DIR/best.json                  {"label", "model", "dataset", "protocol", "seed", "split_seed", "objective", "value",
                                    "params": the best point plus the fixed --set values}; `compare --tuned` reads it
    DIR/tune.png                   objective over the grid (two parameters: a heatmap; one: a curve)
    DIR/study.db                   the shared Optuna study, with --workers > 1 and no --storage (SQLite)
    DIR/tune_spec.json             what the worker processes run (with --workers > 1)

Distributed tuning (`--storage URL`, `--workers N`): one Optuna study in RDB storage (SQLite locally; any
SQLAlchemy URL, e.g. PostgreSQL shared by several machines) holds a queue of trials. The process that starts the
tuning tops the queue up to `trials` (the grid's points in a seeded order, or empty TPE trials that sample their point
when claimed), then N worker processes (`python -m coldstart.studies.tune SPEC`) claim queued trials one at a time
until none is left. A claim is the storage's WAITING -> RUNNING transition, which succeeds for one process only:
under PostgreSQL / MySQL through SELECT ... FOR UPDATE; under SQLite only because every transaction here begins
with BEGIN IMMEDIATE (`open_storage`): with pysqlite's default deferred transactions two workers can both read the
trial as WAITING and both take it (the duplicate the 2-worker test looks for). A rerun re-queues the trials whose
worker on this machine died (RUNNING, with a dead process id); their run folders resume from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import random
import socket
import subprocess
import sys
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
log = logging.getLogger("coldstart")


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
    storage: str | None = None  # an SQLAlchemy URL: share the study (None: in memory, or DIR/study.db with workers)
    workers: int = 1  # local worker processes claiming trials from the shared study

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
        if self.workers < 1:
            raise DataError(f"must be >= 1, got {self.workers}", field="--workers")
        if self.storage is not None and "://" not in self.storage:
            raise DataError(f"expected an SQLAlchemy URL such as sqlite:///study.db or postgresql://host/db, got "
                            f"{self.storage!r}", field="--storage")
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
    """Run the search; write trials.csv and best.json; returns the best.json content.

    With `tuning.storage` or `tuning.workers > 1` the study lives in RDB storage and worker processes run the trials
    (`run_shared`); otherwise it is an in-memory study run here.
    """
    optuna = require("optuna", "tune", "tuning")
    tuning.check()
    if tuning.storage is not None or tuning.workers > 1:
        return run_shared(tuning, output, status, progress)
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
    return _write_results(tuning, output, pd.DataFrame(rows), study.best_value, study.best_params)


def _write_results(tuning: Tuning, output: Path, trials: pd.DataFrame, best_value: float,
                   best_params: dict[str, Any]) -> dict[str, Any]:
    """trials.csv, best.json and tune.png; returns the best.json content."""
    atomic_write(output / "trials.csv", trials.to_csv(index=False).encode())
    best = {"label": tuning.variant.label, "model": tuning.variant.model, "dataset": tuning.dataset,
            "protocol": tuning.protocol, "seed": tuning.seed,
            "split_seed": split_seeds_of(tuning.protocol, [tuning.seed], tuning.split_seed)[0],
            "features": tuning.features,
            "objective": f"valid {tuning.objective}", "value": best_value, "trials": len(trials),
            "params": {**tuning.variant.hyper, **best_params}}
    atomic_write(output / "best.json", (json.dumps(best, indent=1) + "\n").encode())
    if len(tuning.space) <= 2:
        from coldstart.studies.plots import plot_tuning

        plot_tuning(trials, list(tuning.space), f"valid {tuning.objective}", output / "tune.png",
                    f"{tuning.variant.label} on {tuning.dataset} ({tuning.protocol}, seed {tuning.seed}"
                    + ("" if tuning.split_seed in (None, tuning.seed) else f", split seed {tuning.split_seed}") + ")")
    return best


# -- shared studies: RDB storage, a queue of trials, worker processes -------------------------------------------
def open_storage(url: str):
    """Optuna RDBStorage for `url`; for SQLite, waits up to 60 s for a lock and begins every transaction IMMEDIATE.

    pysqlite opens a transaction only at the first write, so the read-check-write of a claim (WAITING -> RUNNING)
    is not atomic by default and two workers could claim the same trial. BEGIN IMMEDIATE takes the write lock at the
    start of each transaction, which serialises the claims (SQLAlchemy's recipe for pysqlite transactions).
    """
    optuna = require("optuna", "tune", "tuning")
    sqlite = url.startswith("sqlite")
    kwargs = {"connect_args": {"timeout": 60}} if sqlite else {}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # sqlalchemy's ArgumentError / OperationalError: a bad URL or an unreachable server
        raise DataError(f"cannot open the study storage ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                        field="--storage") from exc
    if sqlite:
        from sqlalchemy import event

        engine = storage.engine

        @event.listens_for(engine, "connect")
        def _no_implicit_begin(dbapi_connection, record) -> None:
            dbapi_connection.isolation_level = None  # pysqlite emits no BEGIN of its own; "begin" below does

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        engine.dispose()  # connections opened before the listeners are closed; new ones get them
    return storage


def study_name(tuning: Tuning) -> str:
    """A name that changes with every setting that changes the trials, so one storage can hold many tunings."""
    keys = {k: v for k, v in dataclasses.asdict(tuning).items() if k not in ("storage", "workers", "trials")}
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"coldstart-{tuning.variant.label}-{tuning.dataset}-{digest}".replace("/", "_")


def _sampler(optuna, tuning: Tuning, worker: int):
    """Grid trials arrive with fixed parameters (the sampler never picks them); TPE samples each claimed trial,
    with a seed per worker and constant_liar so that workers running at once spread out."""
    if tuning.sampler == "grid":
        return optuna.samplers.RandomSampler(seed=tuning.seed)
    return optuna.samplers.TPESampler(seed=tuning.seed * 1000 + worker, constant_liar=True)


def grid_points(space: dict[str, list[Any]], seed: int) -> list[dict[str, Any]]:
    """Every point of the grid, in an order shuffled by `seed` (the order trials are queued in)."""
    names = list(space)
    points = [dict(zip(names, values)) for values in itertools.product(*(space[n] for n in names))]
    random.Random(seed).shuffle(points)
    return points


def _alive(worker: str) -> bool:
    """Whether the worker "host:pid" may still run: another host's workers are assumed alive."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def fill_queue(study, tuning: Tuning, n_trials: int) -> int:
    """Re-queue the trials of dead workers on this machine and top the queue up to `n_trials`; returns how many
    trials were queued."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _alive(str(trial.user_attrs.get("worker", ":"))):
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # its folder resumes later
            log.warning("tune: trial %d's worker %s is gone; queued again", trial.number, trial.user_attrs["worker"])
    live = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING))
    queued = 0
    if tuning.sampler == "grid":
        taken = {json.dumps(t.system_attrs.get("fixed_params", t.params), sort_keys=True) for t in live}
        for point in grid_points(tuning.space, tuning.seed)[:n_trials]:
            if json.dumps(point, sort_keys=True) not in taken:
                study.enqueue_trial(point, skip_if_exists=False)
                queued += 1
    else:
        for _ in range(max(n_trials - len(live), 0)):
            study.enqueue_trial({})
            queued += 1
    return queued


def claim(study):
    """A queued trial this process now owns (RUNNING), or None when the queue is empty.

    The WAITING -> RUNNING transition succeeds for one process only (see open_storage); a lost race moves on to the
    next queued trial, as Optuna's own queue does. Never creates a trial, so the study holds exactly the queued ones.
    """
    from optuna import exceptions
    from optuna.trial import Trial, TrialState

    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if study._storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                return Trial(study, frozen._trial_id)
        except exceptions.UpdateFinishedTrialError:
            continue
    return None


def work(tuning: Tuning, output: Path, worker: int = 0, say: Callable[[str], None] | None = None,
         progress: bool = False) -> int:
    """Claim and run queued trials until none is left; returns how many this worker ran."""
    optuna = require("optuna", "tune", "tuning")
    from optuna.trial import TrialState

    say = say or (lambda message: None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = tuning.storage or default_storage(output)
    study = optuna.load_study(study_name=study_name(tuning), storage=open_storage(url),
                              sampler=_sampler(optuna, tuning, worker))
    scenario, metric = parse_objective(tuning.objective)
    done = 0
    while (trial := claim(study)) is not None:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            params = {name: trial.suggest_categorical(name, values) for name, values in tuning.space.items()}
            job = tuning.job(output, params)
            tag = f"[trial {trial.number}, worker {worker}] " + " ".join(f"{k}={v}" for k, v in params.items())
            metrics, how = run_job(job, lambda m: say(f"{tag}: {m}"), progress)
            block = metrics["valid"].get(scenario)
            if block is None or metric not in block:
                raise DataError(f"the validation split has no {scenario}:{metric}", field="--objective")
            value = float(block[metric])
            trial.set_user_attr("best_epoch", metrics.get("best_epoch"))
            trial.set_user_attr("train_seconds", metrics.get("train_seconds"))
            trial.set_user_attr("run", str(job.folder))
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)  # a rerun queues its point again (grid) or a new trial (tpe)
            raise
        study.tell(trial, value)
        say(f"{tag}: valid {scenario} {metric} {value:.4f} ({how})")
        done += 1
    return done


def default_storage(output: Path) -> str:
    """SQLite in the tuning folder: sqlite:///DIR/study.db."""
    return f"sqlite:///{(Path(output) / 'study.db').resolve()}"


def run_shared(tuning: Tuning, output: str | Path, status: Callable[[str], None] | None = None,
               progress: bool = False) -> dict[str, Any]:
    """The shared-study tuning: create or load the study, fill its queue, run `tuning.workers` local workers (in
    this process when 1), then write trials.csv and best.json from every finished trial of the study (those of
    other machines sharing the storage included)."""
    optuna = require("optuna", "tune", "tuning")
    from optuna.trial import TrialState

    say = status or (lambda message: None)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    url = tuning.storage or default_storage(output)
    tuning = dataclasses.replace(tuning, storage=url)
    n_trials = tuning.trials or grid_size(tuning.space)
    if tuning.sampler == "grid":
        n_trials = min(n_trials, grid_size(tuning.space))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=open_storage(url), study_name=study_name(tuning), direction="maximize",
                                load_if_exists=True, sampler=_sampler(optuna, tuning, 0))
    queued = fill_queue(study, tuning, n_trials)
    say(f"study {study.study_name} in {url}: {queued} trial(s) queued, {tuning.workers} worker(s)")
    if tuning.workers == 1:
        work(tuning, output, 0, say, progress)
    else:
        spec = output / "tune_spec.json"
        atomic_write(spec, (json.dumps(dataclasses.asdict(tuning), indent=1) + "\n").encode())
        procs = [subprocess.Popen([sys.executable, "-m", "coldstart.studies.tune", str(spec), str(output), str(k)])
                 for k in range(tuning.workers)]
        codes = [p.wait() for p in procs]
        failed = [(k, c) for k, c in enumerate(codes) if c != 0]
        if failed:
            raise DataError(f"tune worker {failed[0][0]} failed (exit {failed[0][1]}); rerun the same command to "
                            f"retry its trial (finished trials are kept)", path=output)
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not finished:
        raise DataError("no finished trial in the study", path=output)
    rows = [{"trial": t.number + 1, **t.params, "objective": t.value, "best_epoch": t.user_attrs.get("best_epoch"),
             "train_seconds": t.user_attrs.get("train_seconds"), "run": t.user_attrs.get("run"),
             "worker": t.user_attrs.get("worker")} for t in sorted(finished, key=lambda t: t.number)]
    best = max(finished, key=lambda t: (t.value, -t.number))
    return _write_results(tuning, output, pd.DataFrame(rows), best.value, best.params)


def _worker_main(argv: list[str]) -> int:
    """`python -m coldstart.studies.tune SPEC OUTPUT WORKER`: one worker process of `run_shared`."""
    from coldstart.studies.runs import Variant

    spec, output, worker = Path(argv[0]), Path(argv[1]), int(argv[2])
    raw = json.loads(spec.read_text())
    tuning = Tuning(**{**raw, "variant": Variant(**raw["variant"])})

    def say(message: str) -> None:
        print(message, flush=True)

    try:
        work(tuning, output, worker, say)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
