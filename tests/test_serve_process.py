"""The real server process: `coldstart serve` under uvicorn, killed with SIGKILL right after an acknowledged write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("faiss", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
httpx = pytest.importorskip("httpx")

from tests.serve_helpers import API_KEY, free_port, png_bytes, serve_run_fixture  # noqa: E402


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory):
    return serve_run_fixture(tmp_path_factory)


def start(run: Path, db: Path, key_file: Path, port: int) -> subprocess.Popen:
    """`coldstart serve` in a subprocess on a loopback port; returns once /health answers."""
    cli = Path(sys.executable).with_name("coldstart")
    command = [str(cli)] if cli.exists() else [sys.executable, "-c", "from coldstart.cli import main; main()"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("COLDSTART_API_KEY", None)
    proc = subprocess.Popen(command + ["serve", str(run), "--port", str(port), "--db", str(db),
                                       "--api-key-file", str(key_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stdout.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not answer /health within 60 s")


def test_an_acknowledged_write_survives_sigkill(serve_run, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    db = tmp_path / "serve.db"
    port = free_port()
    server = start(serve_run, db, key_file, port)
    base = f"http://127.0.0.1:{port}"
    try:
        body = {"id": "survivor", "title": "Survivor", "labels": {"topic": ["topic1", "topic4"]}}
        made = httpx.post(f"{base}/items", data={"item": json.dumps(body)},
                          files={"poster": ("p.png", png_bytes(), "image/png")}, headers={"X-API-Key": API_KEY})
        feedback = httpx.post(f"{base}/interactions", json={"user": "3", "item": "survivor"},
                              headers={"Authorization": f"Bearer {API_KEY}"})
        os.kill(server.pid, signal.SIGKILL)  # right after the 2xx: no shutdown hook runs
        server.wait(timeout=10)
        assert made.status_code == 201, made.text
        assert feedback.status_code == 201, feedback.text
    finally:
        if server.poll() is None:
            server.kill()
    port = free_port()
    again = start(serve_run, db, key_file, port)
    base = f"http://127.0.0.1:{port}"
    try:
        assert httpx.get(f"{base}/items/survivor").json()["title"] == "Survivor"
        assert httpx.get(f"{base}/items/survivor/poster").content == png_bytes()
        listed = httpx.get(f"{base}/users/0/recommendations?k=200&candidates=cold").json()["items"]
        assert "survivor" in [r["item"] for r in listed]
        history = httpx.get(f"{base}/users/3?limit=1000").json()["history"]
        assert "survivor" in [h["item"] for h in history]
        # writes stay refused without the key after the restart too
        assert httpx.post(f"{base}/interactions", json={"user": "3", "item": "0"}).status_code == 401
    finally:
        again.send_signal(signal.SIGTERM)
        try:
            again.wait(timeout=15)
        except subprocess.TimeoutExpired:
            again.kill()
