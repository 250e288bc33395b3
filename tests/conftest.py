"""Shared fixtures: small synthetic data built in code, and the real data when COLDSTART_DATA_DIR has it."""

from __future__ import annotations

import os
from pathlib import Path

# Models default to device "auto", which picks a GPU when torch sees one; CUDA training is not bit-reproducible, so
# the bit-exact tests (determinism, exact resume) would fail on a GPU machine. Hide the GPUs (before anything
# initialises CUDA) unless COLDSTART_TEST_CUDA=1 asks for tests/test_device.py's CUDA checks.
if os.environ.get("COLDSTART_TEST_CUDA") != "1":
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

from coldstart.data.loaders import load_dataset  # noqa: E402
from coldstart.data.splits import make_split  # noqa: E402


def data_root(name: str) -> Path:
    """The real dataset folder, or skip the test when it is absent."""
    for base in os.environ.get("COLDSTART_DATA_DIR", "").split(os.pathsep):
        if base and (Path(base) / name).is_dir():
            return Path(base) / name
    pytest.skip(f"{name} not under COLDSTART_DATA_DIR")


@pytest.fixture(scope="session")
def synthetic():
    return load_dataset("synthetic", n_users=120, n_items=150, mean_interactions=15, seed=3)


@pytest.fixture(scope="session")
def synthetic_split(synthetic):
    return make_split(synthetic, "cold_item", seed=1)


@pytest.fixture(scope="session")
def ml100k():
    return load_dataset("ml-100k", root=data_root("ml-100k"))


def trained(name: str, split, **hyper):
    """MODELS[name](**hyper) fitted on the split from seed 0, left in train mode (for loss tests)."""
    from coldstart.experiments import seed_everything
    from coldstart.models import MODELS

    seed_everything(0)
    model = MODELS[name](**hyper).fit(split)
    model.train()
    return model


def interrupt_at(monkeypatch, call: int, error: type[BaseException] = KeyboardInterrupt) -> None:
    """Make the `call`-th training epoch raise `error` (a killed or crashing run)."""
    from coldstart import train

    real, calls = train.train_epoch, []

    def epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise error("stopped by the test")
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", epoch)
