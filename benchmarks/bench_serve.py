"""Load test of `coldstart serve` on loopback: recommendations at a fixed rate, adding items, index recall.

    python benchmarks/bench_serve.py RUN_DIR [--rate 50,200] [--seconds 10] [--items 40] [--index exact]

Bounded and loopback-only: the server is started here on 127.0.0.1 (a free port), every phase has a fixed
request count, and the server is stopped at the end. Phases:

1. start-up (load the run, its dataset and encoders, build the index);
2. recommendations at a fixed rate (open loop: requests are sent on schedule whether or not earlier ones have
   answered, so a slow server shows up in the latency instead of lowering the rate), random users, k=20;
3. the highest closed-loop throughput of recommendations (8 concurrent clients);
4. new items: POST /items with the full content of the split's cold films (text, labels, numbers and the
   poster: image decode and encoding included) under new ids, one at a time; for each, the time from sending
   the POST to a GET /users/{u}/recommendations?candidates=cold whose list holds the new item (u: its top
   audience member, found with GET /items/{id}/audience in between).
5. index (last, in this process): recall@20 of IVF / HNSW against exact on the run's own user and item
   vectors (1,000 users, seen items excluded, with and without the cold-candidate filter) and the latency of
   one query per kind.

The load generator shares the machine's cores with the server, so the numbers are upper bounds on latency;
the server's CPU time per request (from /proc) prices a request independently of what else the machine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc), to price a request independently of the load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float]) -> dict:
    arr = np.asarray(values) * 1000.0
    return {"n": len(arr), "p50_ms": round(float(np.percentile(arr, 50)), 2),
            "p90_ms": round(float(np.percentile(arr, 90)), 2), "p99_ms": round(float(np.percentile(arr, 99)), 2),
            "max_ms": round(float(arr.max()), 2)}


def index_phase(run: Path) -> dict:
    """Recall@20 and per-query latency of each index kind on the run's vectors."""
    from coldstart_serve.app import Service
    from coldstart_serve.index import ItemIndex, recall_at_k

    service = Service(run, db=Path(tempfile.mkdtemp()) / "bench.db", load_data=False)
    items, users = service.item_vecs, service.user_vecs[service.user_has_vector]
    rng = np.random.default_rng(0)
    sample = rng.choice(len(users), size=min(1000, len(users)), replace=False)
    out = {"items": int(len(items)), "users_evaluated": int(len(sample)), "dim": int(items.shape[1])}
    masks = []
    for u in sample:
        allowed = np.ones(len(items), bool)
        allowed[service.seen_items(int(np.flatnonzero(service.user_has_vector)[u]))] = False
        masks.append(allowed)
    cold = service.item_kind > 0
    exact = ItemIndex(items, "exact")
    for kind in ("exact", "ivf", "hnsw"):
        start = time.perf_counter()
        index = exact if kind == "exact" else ItemIndex(items, kind)
        build = time.perf_counter() - start
        row = {"build_s": round(build, 3)}
        for label, extra in (("all", None), ("cold", cold)):
            got, want, times = [], [], []
            for u, allowed in zip(sample, masks):
                mask = allowed if extra is None else allowed & extra
                t = time.perf_counter()
                ids, _ = index.search(users[u], 20, mask)
                times.append(time.perf_counter() - t)
                got.append(ids[0])
                want.append(exact.search(users[u], 20, mask)[0][0])
            row[f"recall@20_{label}"] = round(recall_at_k(np.array(want), np.array(got)), 4)
            row[f"query_ms_p50_{label}"] = round(float(np.percentile(times, 50)) * 1000, 3)
            row[f"query_ms_p99_{label}"] = round(float(np.percentile(times, 99)) * 1000, 3)
        out[kind] = row
    service.store.close()
    return out


def start_server(run: Path, index: str, db: Path, key_file: Path, port: int) -> subprocess.Popen:
    cli = Path(sys.executable).with_name("coldstart")
    proc = subprocess.Popen([str(cli), "serve", str(run), "--port", str(port), "--index", index, "--db", str(db),
                             "--api-key-file", str(key_file)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not start within 300 s")


async def fixed_rate(base: str, users: list[str], rate: float, seconds: float) -> dict:
    """Open-loop GET /users/{u}/recommendations at `rate` requests per second for `seconds`."""
    import httpx

    n = int(rate * seconds)
    latencies, errors = [], 0
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    # At most 32 requests in flight: a request due while all are busy waits for a slot (its latency still counts
    # from its scheduled time); queueing thousands inside httpx's pool would measure the client, not the server.
    slots = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        async def one(at: float, user: str):
            nonlocal errors
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with slots:
                    response = await client.get(f"/users/{user}/recommendations", params={"k": 20})
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            # measured from the scheduled send time: waiting for a free slot counts as latency
            latencies.append(time.perf_counter() - at)
            errors += not ok

        start = time.perf_counter() + 0.2
        await asyncio.gather(*(one(start + k / rate, random.choice(users)) for k in range(n)))
        elapsed = time.perf_counter() - start
    return {"target_rps": rate, "achieved_rps": round(n / elapsed, 1), "errors": errors, **percentiles(latencies)}


async def closed_loop(base: str, users: list[str], concurrency: int, requests: int) -> dict:
    import httpx

    latencies = []
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        remaining = requests

        async def worker():
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                await client.get(f"/users/{random.choice(users)}/recommendations", params={"k": 20})
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"concurrency": concurrency, "rps": round(len(latencies) / elapsed, 1), **percentiles(latencies)}


def new_item_bodies(run: Path, count: int) -> list[tuple[dict, bytes | None]]:
    """The full raw content of the split's cold films, as new items under new ids."""
    from coldstart.data.loaders import load_dataset
    from coldstart.data.modalities import Dense, Image, MultiLabel, Text
    from coldstart.data.splits import Split

    config = json.loads((run / "config.json").read_text())
    dataset = load_dataset(config["dataset"], **config.get("data", {}))
    split = Split.load(run / "split", dataset=dataset)
    rows = []
    for i in split.cold_items[:count]:
        i = int(i)
        body = {"id": f"bench-{dataset.item_ids[i]}", "text": {}, "labels": {}, "numbers": {}}
        poster = None
        for name, mod in dataset.item_features.items():
            if isinstance(mod, Text) and mod.texts[i]:
                body["text"][name] = mod.texts[i][:20_000]
            elif isinstance(mod, MultiLabel) and mod.labels(i):
                body["labels"][name] = mod.labels(i)[:500]
            elif isinstance(mod, Dense) and mod.dim == 1 and (mod.mask is None or mod.mask[i]):
                body["numbers"][name] = float(mod.values[i, 0])
            elif isinstance(mod, Image) and poster is None:
                poster = mod.read_bytes(i)
        body["title"] = body["text"].get("title", body["id"])[:300]
        rows.append((body, poster))
    return rows


def add_items(base: str, key: str, bodies: list[tuple[dict, bytes | None]]) -> dict:
    import httpx

    post_times, visible_times, positions, failures = [], [], [], 0
    with httpx.Client(base_url=base, timeout=30) as client:
        for body, poster in bodies:
            files = {"poster": ("poster.jpg", poster, "image/jpeg")} if poster else None
            t = time.perf_counter()
            made = client.post("/items", data={"item": json.dumps(body)}, files=files, headers={"X-API-Key": key})
            posted = time.perf_counter() - t
            if made.status_code != 201:
                failures += 1
                print("POST failed:", made.status_code, made.text[:200], file=sys.stderr)
                continue
            post_times.append(posted)
            top = client.get(f"/items/{body['id']}/audience", params={"k": 1}).json()["users"][0]["user"]
            listed = client.get(f"/users/{top}/recommendations", params={"k": 1000, "candidates": "cold"}).json()
            ids = [r["item"] for r in listed["items"]]
            if body["id"] not in ids:
                failures += 1
                continue
            visible_times.append(time.perf_counter() - t)
            positions.append(ids.index(body["id"]) + 1)
    return {"post": percentiles(post_times), "post_to_listed": percentiles(visible_times), "failures": failures,
            "with_poster": sum(p is not None for _, p in bodies),
            "median_cold_rank_for_top_audience_user": float(np.median(positions)) if positions else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--index", default="exact", choices=["exact", "ivf", "hnsw"])
    parser.add_argument("--rate", type=lambda t: [float(r) for r in t.split(",")], default=[50.0, 200.0],
                        help="request rates of the fixed-rate phase, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument("--output", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()
    random.seed(0)
    results: dict = {"run": str(args.run), "index": args.index, "cores": os.cpu_count(),
                     "load_average_at_start": round(os.getloadavg()[0], 1),
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    key = "bench-key-0123456789abcdef"
    (work / "key").write_text(key + "\n")
    port = free_port()
    t = time.perf_counter()
    server = start_server(args.run, args.index, work / "serve.db", work / "key", port)
    results["startup_s"] = round(time.perf_counter() - t, 1)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        total = httpx.get(f"{base}/users", params={"limit": 1}).json()["total"]
        users = httpx.get(f"{base}/users", params={"limit": 1000, "offset": 0}).json()["users"]
        users += httpx.get(f"{base}/users", params={"limit": 1000, "offset": max(0, total - 1000)}).json()["users"]
        asyncio.run(fixed_rate(base, users, 50, 2))  # warm-up, not reported
        results["recommendations_fixed_rate"] = []
        for rate in args.rate:
            before = cpu_seconds(server.pid)
            row = asyncio.run(fixed_rate(base, users, rate, args.seconds))
            row["server_cpu_ms_per_request"] = round((cpu_seconds(server.pid) - before) / row["n"] * 1000, 3)
            row["load_average"] = round(os.getloadavg()[0], 1)
            results["recommendations_fixed_rate"].append(row)
            print(json.dumps(row), flush=True)
        before = cpu_seconds(server.pid)
        row = asyncio.run(closed_loop(base, users, 8, int(max(args.rate) * 5)))
        row["server_cpu_ms_per_request"] = round((cpu_seconds(server.pid) - before) / row["n"] * 1000, 3)
        results["recommendations_closed_loop"] = row
        print(json.dumps(row), flush=True)
        bodies = new_item_bodies(args.run, args.items)
        before = cpu_seconds(server.pid)
        results["new_items"] = add_items(base, key, bodies)
        results["new_items"]["server_cpu_ms_per_item"] = round((cpu_seconds(server.pid) - before) /
                                                               max(1, len(bodies)) * 1000, 1)
        print(json.dumps(results["new_items"]), flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    if not args.skip_index:  # last, in this process: loading the model here first slowed the client down
        results["index_phase"] = index_phase(args.run)
    text = json.dumps(results, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
