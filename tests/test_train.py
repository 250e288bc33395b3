"""The training loop: early stopping, checkpoints, and resume after a killed process equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from coldstart.experiments import seed_everything
from coldstart.models import MODELS
from coldstart.train import CHECKPOINT, TrainOptions

RUN = [sys.executable, "-m", "coldstart.cli", "run", "--dataset", "synthetic", "--model", "clcrec", "--seed", "2",
       "--set", "num_epoch=25", "--set", "patience=25", "--set", "num_neg=16", "--set", "batch_size=64",
       "--no-progress"]


def test_early_stopping_keeps_the_best_epoch(synthetic_split, tmp_path):
    seed_everything(0)
    model = MODELS["mf_bpr"](num_epoch=60, patience=3, min_epochs=1, l_r=0.05).fit(synthetic_split, TrainOptions(tmp_path, seed=0))
    history = model.history_
    scores = [h["valid_recall@20"] for h in history]
    assert model.best_epoch_ == 1 + scores.index(max(scores))
    assert len(history) == 60 or len(history) - model.best_epoch_ == 3
    assert (tmp_path / CHECKPOINT).exists()


def test_resume_without_a_checkpoint_is_an_error(synthetic_split, tmp_path):
    from coldstart.errors import DataError

    with pytest.raises(DataError, match="no checkpoint to resume from"):
        MODELS["mf_bpr"](num_epoch=2).fit(synthetic_split, TrainOptions(tmp_path, resume=True))


def _wait_for_epoch(log_path, epoch, proc, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log_path.exists() and f"epoch {epoch}:" in log_path.read_text():
            return
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be interrupted")
        time.sleep(0.05)
    pytest.fail("the run did not reach the epoch in time")


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(RUN + ["--output", str(whole)], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(RUN + ["--output", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_for_epoch(killed / "train.log", 3, proc)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: only the atomic checkpoint survives
    proc.wait()
    assert not (killed / "metrics.json").exists()
    done = subprocess.run([sys.executable, "-m", "coldstart.cli", "run", "--resume", str(killed), "--no-progress"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" in (killed / "train.log").read_text()
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (whole, killed))
    assert a["test"] == b["test"] and a["valid"] == b["valid"] and a["best_epoch"] == b["best_epoch"]
    sa = torch.load(whole / "model" / "model.pt", weights_only=True)
    sb = torch.load(killed / "model" / "model.pt", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa if isinstance(sa[k], torch.Tensor))


@pytest.mark.parametrize("model_name", ["deepmusic", "dropoutnet"])
@pytest.mark.parametrize("stop_at", [2, 6])  # an epoch of stage 1 (pretraining), an epoch of stage 2
def test_two_stage_models_resume_inside_either_stage(synthetic_split, tmp_path, monkeypatch, model_name, stop_at):
    from coldstart import train
    from coldstart.experiments import seed_everything

    def fit(folder):
        seed_everything(0)
        return MODELS[model_name](num_epoch=4).fit(synthetic_split, TrainOptions(folder, seed=1))

    whole = fit(tmp_path / "whole")
    real_epoch, calls = train.train_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt  # Ctrl-C in the middle of an epoch: that epoch is lost, no other
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "cut")
    counted = []
    monkeypatch.setattr(train, "train_epoch", lambda *a, **k: (counted.append(1), real_epoch(*a, **k))[1])
    resumed = fit(tmp_path / "cut")
    assert len(counted) == 8 - (stop_at - 1)  # only the interrupted epoch and those after it run again
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


def test_stage_one_validates_on_warm_items_or_trains_the_full_budget(synthetic_split):
    """MF-BPR cannot score cold items, so stage 1 of the two-stage baselines must not select on them."""
    import dataclasses

    from coldstart.models import MODELS
    from coldstart.models.pretrained import pretrain_options

    assert pretrain_options(synthetic_split, None).valid_scenario == "warm"
    cold_only = dataclasses.replace(synthetic_split, valid=synthetic_split.valid.select(synthetic_split.valid.cold))
    assert pretrain_options(cold_only, None).valid_scenario is None
    mf = MODELS["mf_bpr"](num_epoch=3, min_epochs=1, patience=1).fit(cold_only, pretrain_options(cold_only, None))
    assert mf.best_epoch_ == 3 and all(h["valid_recall@20"] is None for h in mf.history_)
