"""Shared pieces of the serve tests: a tiny trained run (synthetic data, CLCRec, two epochs) and small images."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np

API_KEY = "test-key-0123456789abcdef"
#: Synthetic data with two presets, so POST /items goes through fitted TF-IDF + SVD and a multi-hot block.
RUN_SETTINGS = dict(dataset="synthetic", model="clcrec", protocol="cold_item", seed=0,
                    data={"n_users": 60, "n_items": 90, "mean_interactions": 12, "seed": 3},
                    hyper={"num_epoch": 2, "min_epochs": 1, "num_neg": 8, "dim_E": 16, "hidden": 32},
                    features=["tfidf:topic@4", "multihot:topic"], ks=[10])


def make_run(folder: Path) -> Path:
    """Train the tiny run into `folder` (experiments.run: it also writes features/)."""
    from coldstart.experiments import RunConfig, run

    run(RunConfig(**RUN_SETTINGS), folder)
    return folder


def png_bytes(width: int = 32, height: int = 48, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A small random image in the given format."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_run_fixture(tmp_path_factory):
    """Body of each serve test module's session-scoped `serve_run` fixture (the run is trained once per session)."""
    import pytest

    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    pytest.importorskip("faiss", reason="the serve extra is not installed")
    global _RUN
    if _RUN is None or not (_RUN / "metrics.json").exists():
        _RUN = make_run(tmp_path_factory.mktemp("serve") / "run")
    return _RUN


_RUN: Path | None = None
