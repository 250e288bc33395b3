"""Run directories that never lose data (issue 11): the marker and --overwrite, the lock, failed and damaged runs,
split seeds apart from model seeds (and tuned settings only on their own split), early stopping's scenario,
training seconds across a resume, and the cold-entity fields of metrics.json."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from coldstart import experiments, train
from coldstart.errors import DataError
from coldstart.experiments import RunConfig
from coldstart.models import MODELS
from coldstart.rundir import MARKER, RunLock
from coldstart.studies.runs import Job, Variant, apply_tuned, run_job, split_seeds_of
from coldstart.train import CHECKPOINT, PREVIOUS, TrainOptions
from tests.conftest import interrupt_at
from tests.test_bad_input import run_cli

SMALL = {"n_users": 80, "n_items": 90, "mean_interactions": 12, "seed": 3}
FAST = {"num_epoch": 3, "min_epochs": 1, "patience": 5, "dim_E": 8, "batch_size": 256}


def config(model: str = "pop", **kw) -> RunConfig:
    return RunConfig(dataset="synthetic", model=model, data=dict(SMALL), ks=[10], **kw)


# -- item 10: --overwrite only deletes run directories ---------------------------------------------------------

def test_overwrite_refuses_a_folder_that_is_not_a_run_directory(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for overwrite in (False, True):
        with pytest.raises(DataError, match="not a run directory") as err:
            experiments.run(config(), mine, overwrite=overwrite)
        assert str(mine) in str(err.value)
    assert (mine / "thesis.tex").read_text() == "years of work" and not (mine / MARKER).exists()
    # The report of the issue: --output . --overwrite in a folder of someone's files.
    proc = run_cli("run", "--dataset", "synthetic", "--model", "pop", "--output", ".", "--overwrite", cwd=mine)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "not a run directory" in proc.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


def test_overwrite_replaces_marked_empty_and_older_run_directories(tmp_path):
    out = tmp_path / "run"
    experiments.run(config(), out)
    assert (out / MARKER).read_text().strip() == str(os.getpid())  # written first, holds the pid
    with pytest.raises(DataError, match="finished run; pass --overwrite"):
        experiments.run(config(), out)
    (out / "stale.txt").write_text("from the old run")
    experiments.run(config(seed=1), out, overwrite=True)
    assert not (out / "stale.txt").exists() and json.loads((out / "metrics.json").read_text())["seed"] == 1
    (out / MARKER).unlink()  # a run directory written before the marker existed: config.json + split/
    experiments.run(config(seed=2), out, overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    experiments.run(config(), empty)
    assert (empty / "metrics.json").exists()


# -- item 16: one process per run directory ---------------------------------------------------------------------

def test_a_second_process_cannot_use_a_locked_run_directory(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from coldstart.rundir import RunLock\n"
                               "with RunLock(sys.argv[1]):\n print('locked', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataError, match=rf"in use by another process \(pid {holder.pid}\)"):
            experiments.run(config(), out)
        experiments.run(config(), tmp_path / "other")  # other folders are free
    finally:
        holder.kill()
        holder.wait()
    experiments.run(config(), out)  # the kernel dropped the killed holder's lock
    assert (out / "metrics.json").exists()


def test_resume_takes_the_lock_too(tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        experiments.run(config("mf_bpr", hyper=FAST), out)
    with RunLock(out):  # another handle, as another process would hold it
        with pytest.raises(DataError, match="in use by another process"):
            experiments.resume(out)


# -- item 18: a failed run does not block the fixed rerun ------------------------------------------------------

def test_a_run_that_failed_before_any_checkpoint_is_replaced_without_overwrite(tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 1, RuntimeError)  # a crash inside fit, after the folder, config and split exist
    with pytest.raises(RuntimeError):
        experiments.run(config("mf_bpr", hyper=FAST), out)
    assert (out / "config.json").exists() and not (out / "checkpoint").exists()
    monkeypatch.undo()
    said = []
    experiments.run(config("mf_bpr", hyper=FAST), out, status=said.append)
    assert (out / "metrics.json").exists() and any("replacing" in line for line in said)


def test_a_failed_run_removes_only_the_folder_it_created(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(DataError):
        experiments.run(config(split={"cold_fraction": 7}), out)  # fails while splitting
    assert not out.exists()
    out.mkdir(parents=True)
    with pytest.raises(DataError):
        experiments.run(config(split={"cold_fraction": 7}), out)
    assert out.is_dir()  # the user's (empty) folder stays


def test_an_unfinished_run_with_a_checkpoint_needs_resume_or_overwrite(tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        experiments.run(config("mf_bpr", hyper=FAST), out)
    with pytest.raises(DataError, match="--resume"):
        experiments.run(config("mf_bpr", hyper=FAST), out)


# -- item 17: damaged files on resume ----------------------------------------------------------------------------

def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_damaged_checkpoint_falls_back_to_the_previous_one_loudly(synthetic_split, tmp_path, caplog):
    folder = tmp_path / "ckpt"
    MODELS["mf_bpr"](**FAST).fit(synthetic_split, TrainOptions(folder, seed=0))
    assert torch.load(folder / PREVIOUS, weights_only=True)["epoch"] == 2
    truncate(folder / CHECKPOINT)
    said = []
    with caplog.at_level(logging.WARNING, logger="coldstart"):
        model = MODELS["mf_bpr"](**FAST).fit(synthetic_split, TrainOptions(folder, resume=True, seed=0,
                                                                          status=said.append))
    assert len(said) == 1 and "previous checkpoint" in said[0] and "epoch 2" in said[0]
    assert "damaged checkpoint" in caplog.text
    assert [h["epoch"] for h in model.history_] == [1, 2, 3]  # only epoch 3 ran again
    truncate(folder / CHECKPOINT)
    truncate(folder / PREVIOUS)
    with pytest.raises(DataError, match=f"delete {folder} to restart training from scratch, or rerun with --overwrite"):
        MODELS["mf_bpr"](**FAST).fit(synthetic_split, TrainOptions(folder, resume=True, seed=0))


def test_damaged_files_on_resume_are_one_line_errors(tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        experiments.run(config("mf_bpr", hyper=FAST), out)
    monkeypatch.undo()
    (out / "checkpoint" / CHECKPOINT).write_bytes(b"PK\x03\x04 not really")  # no previous one after one epoch
    proc = run_cli("run", "--resume", str(out), "--no-progress")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert str(out / "checkpoint" / CHECKPOINT) in proc.stderr and "--overwrite" in proc.stderr
    truncate(out / "config.json")
    with pytest.raises(DataError, match="config.json: damaged file") as err:
        experiments.resume(out)
    assert "--overwrite" in str(err.value)


def test_checkpoints_keep_the_previous_epoch(synthetic_split, tmp_path):
    folder = tmp_path / "ckpt"
    MODELS["mf_bpr"](**FAST).fit(synthetic_split, TrainOptions(folder, seed=0))
    newest, previous = (torch.load(folder / n, weights_only=True) for n in (CHECKPOINT, PREVIOUS))
    assert (newest["epoch"], previous["epoch"]) == (3, 2) and not (folder / (PREVIOUS + ".tmp")).exists()


# -- item 19: train_seconds of a resumed run, early stopping's scenario -------------------------------------------

def test_train_seconds_add_up_over_a_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        experiments.run(config("mf_bpr", hyper=FAST), out)
    monkeypatch.undo()
    path = out / "checkpoint" / CHECKPOINT
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["train_seconds"] > 0
    ckpt["train_seconds"] = 1000.0  # as if the first process had trained for a long time
    torch.save(ckpt, path)
    metrics = experiments.resume(out)
    assert 1000 < metrics["train_seconds"] < 1000 + 600


def record_scenarios(monkeypatch) -> list:
    """The scenario of every validation during training, in order."""
    seen, real = [], train._validation

    def validation(model, split, scenario, k):
        seen.append(scenario)
        return real(model, split, scenario, k)

    monkeypatch.setattr(train, "_validation", validation)
    return seen


def test_valid_scenario_is_validated_and_steers_early_stopping(synthetic_split, monkeypatch):
    with pytest.raises(DataError, match="valid_scenario"):
        MODELS["mf_bpr"](valid_scenario="test")
    seen = record_scenarios(monkeypatch)
    model = MODELS["mf_bpr"](num_epoch=1, dim_E=8, valid_scenario="cold").fit(synthetic_split, TrainOptions(seed=0))
    from coldstart.eval.evaluate import evaluate

    cold = evaluate(model, synthetic_split, "valid", scenarios=("cold",), ks=(20,), metrics=["recall"])
    assert seen == ["cold"] and model.history_[0]["valid_recall@20"] == cold.metrics["cold"]["recall@20"]


def test_two_stage_models_keep_warm_validation_for_stage_one(synthetic_split, monkeypatch):
    seen = record_scenarios(monkeypatch)
    MODELS["dropoutnet"](num_epoch=1, valid_scenario="cold").fit(synthetic_split, TrainOptions(seed=0))
    assert seen == ["warm", "cold"]  # stage 1 (MF-BPR) on warm items, stage 2 on the configured scenario


def test_a_scenario_without_validation_users_is_a_warning_not_a_silent_switch(synthetic_split, caplog):
    import dataclasses

    warm_only = dataclasses.replace(synthetic_split, valid=synthetic_split.valid.select(~synthetic_split.valid.cold))
    said = []
    with caplog.at_level(logging.WARNING, logger="coldstart"):
        MODELS["mf_bpr"](num_epoch=2, min_epochs=1, dim_E=8, valid_scenario="cold").fit(
            warm_only, TrainOptions(seed=0, status=said.append))
    assert len(said) == 1 and "no users in the cold scenario" in said[0] and "over all" in said[0]
    assert "no users in the cold scenario" in caplog.text


# -- item 5: the split seed apart from the model seed -------------------------------------------------------------

def test_split_seed_fixes_the_split_while_the_seed_varies_the_model(tmp_path):
    docs = {}
    for name, cfg in {"a": config(seed=2, split_seed=1), "b": config(seed=3, split_seed=1),
                      "c": config(seed=3)}.items():
        experiments.run(cfg, tmp_path / name)
        docs[name] = (json.loads((tmp_path / name / "config.json").read_text()),
                      json.loads((tmp_path / name / "metrics.json").read_text()))
    (ca, ma), (cb, mb), (cc, mc) = docs["a"], docs["b"], docs["c"]
    assert ca["split_fingerprint"] == cb["split_fingerprint"] != cc["split_fingerprint"]
    assert (ca["seed"], ca["split_seed"], ma["seed"], ma["split_seed"]) == (2, 1, 2, 1)
    assert (cc["split_seed"], mc["split_seed"]) == (3, 3)


def test_runner_compares_the_split_seed_and_reuses_older_run_directories(tmp_path):
    folder = tmp_path / "run"
    job = Job(config("mf_bpr", hyper=FAST, seed=1), folder)
    run_job(job, lambda m: None)
    saved = json.loads((folder / "config.json").read_text())
    del saved["split_seed"], saved["hyperparameters"]["valid_scenario"]  # written before either existed
    (folder / "config.json").write_text(json.dumps(saved))
    assert run_job(job, lambda m: None)[1] == "done before"
    with pytest.raises(DataError, match="split_seed: 1 there, 2 now"):
        run_job(Job(config("mf_bpr", hyper=FAST, seed=1, split_seed=2), folder), lambda m: None)
    (folder / "config.json").write_text("{")
    with pytest.raises(DataError, match="config.json: damaged file"):
        run_job(job, lambda m: None)


def test_tuned_settings_are_refused_on_another_split(tmp_path):
    (tmp_path / "best.json").write_text(json.dumps({"label": "mf_bpr", "seed": 1, "split_seed": 1,
                                                    "params": {"l_r": 0.01}}))
    apply_tuned([Variant("mf_bpr", "mf_bpr")], [tmp_path], split_seeds_of("cold_item", [2, 3], 1))
    with pytest.raises(DataError, match="tests on split seed 2"):
        apply_tuned([Variant("mf_bpr", "mf_bpr")], [tmp_path], split_seeds_of("cold_item", [1], 2))
    with pytest.raises(DataError, match="pass --split-seed 1"):
        apply_tuned([Variant("mf_bpr", "mf_bpr")], [tmp_path], split_seeds_of("cold_item", [1, 2, 3], None))
    (tmp_path / "best.json").write_text(json.dumps({"label": "mf_bpr", "seed": 2, "params": {}}))  # older file
    with pytest.raises(DataError, match="tuned on split seed 2"):
        apply_tuned([Variant("mf_bpr", "mf_bpr")], [tmp_path], [1])
    apply_tuned([Variant("mf_bpr", "mf_bpr")], [tmp_path], split_seeds_of("published", [1, 2], None))


def test_tune_then_compare_only_on_the_tuning_split(tmp_path):
    tuned, tiny = tmp_path / "tune", ["--set", "num_epoch=1", "--set", "min_epochs=1", "--set", "dim_E=8"]
    proc = run_cli("tune", "--dataset", "synthetic", "--model", "mf_bpr", "--seed", "5", "--split-seed", "1",
                   "--space", "l_r=0.01", "--space", "reg_weight=0.001", "--output", str(tuned), *tiny)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tuned / "best.json").read_text())["split_seed"] == 1 and "--split-seed 1" in proc.stdout
    study = ["compare", "--dataset", "synthetic", "--models", "mf_bpr", "--tuned", str(tuned), *tiny, "--k", "10"]
    refused = run_cli(*study, "--seeds", "1", "--split-seed", "2", "--output", str(tmp_path / "a"))
    assert refused.returncode == 2 and "split seed" in refused.stderr and not (tmp_path / "a").exists()
    refused = run_cli(*study, "--seeds", "1,2", "--output", str(tmp_path / "b"))
    assert refused.returncode == 2 and "--split-seed 1" in refused.stderr
    proc = run_cli(*study, "--seeds", "2,3", "--split-seed", "1", "--output", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    runs = tmp_path / "c" / "runs" / "mf_bpr"
    configs = [json.loads((runs / f"seed{s}" / "config.json").read_text()) for s in (2, 3)]
    assert configs[0]["split_fingerprint"] == configs[1]["split_fingerprint"]
    assert [c["seed"] for c in configs] == [2, 3] and {c["split_seed"] for c in configs} == {1}
    assert json.loads((tmp_path / "c" / "study.json").read_text())["split_seed"] == 1


# -- metrics.json: how cold entities were scored ------------------------------------------------------------------

def test_metrics_say_how_cold_entities_are_scored(tmp_path):
    metrics = experiments.run(config("mf_bpr", protocol="cold_user", hyper={**FAST, "num_epoch": 1}), tmp_path / "u")
    assert metrics["cold_items"] == "none" and metrics["cold_users"] == getattr(MODELS["mf_bpr"], "cold_users", "none")
    if metrics["cold_users"] == "none":
        assert "cold users are scored by training popularity" in metrics["note"]
    assert "no representation for cold items" in metrics["note"]
    assert json.loads((tmp_path / "u" / "metrics.json").read_text())["note"] == metrics["note"]


def test_python_callers_get_typed_split_and_data_errors_before_any_folder(tmp_path):
    """experiments.run checks split and loader settings itself, not only through the CLI."""
    from coldstart.errors import DataError
    from coldstart.experiments import RunConfig, run

    for cfg in (RunConfig("synthetic", "pop", data={"bogus": 1}), RunConfig("synthetic", "pop", split={"cold_fraction": "abc"})):
        with pytest.raises(DataError):
            run(cfg, tmp_path / "out")
        assert not (tmp_path / "out").exists()
