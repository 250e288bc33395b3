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
