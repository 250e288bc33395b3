"""A bring-your-own run at scale: where a `pop` run's time and memory go, and the whole `coldstart run`.

    python benchmarks/bench_byo_run.py --generate 100000,50000,2000000 --folder /tmp/byo2m   # the issue's 2M case
    python benchmarks/bench_byo_run.py --folder /tmp/byo2m --whole

Phases (one process, wall and CPU seconds each, peak RSS at the end): load (Parquet -> memory-mapped index),
cold_item split, split.save (the run directory's CSV + meta), fingerprint, fit, evaluation of each phase
(warm + cold + all in one scoring pass), per_user.csv. --whole also times `coldstart run --model pop` end to end
in a child process and reports its peak RSS (resource.getrusage of the children).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def phases(folder: Path) -> dict:
    import pandas as pd

    from coldstart.data.loaders import load_dataset
    from coldstart.data.splits import make_split
    from coldstart.eval.evaluate import evaluate
    from coldstart.models import MODELS

    out: dict = {}
    clock = [time.perf_counter(), time.process_time()]

    def mark(name: str) -> None:
        now = [time.perf_counter(), time.process_time()]
        out[name] = {"wall": round(now[0] - clock[0], 2), "cpu": round(now[1] - clock[1], 2)}
        print(f"{name:22s} wall {out[name]['wall']:8.2f}s  cpu {out[name]['cpu']:8.2f}s", flush=True)
        clock[:] = [time.perf_counter(), time.process_time()]

    dataset = load_dataset(str(folder))
    mark("load")
    split = make_split(dataset, "cold_item", seed=0)
    mark("split")
    with tempfile.TemporaryDirectory() as tmp:
        split.save(Path(tmp) / "split")
        mark("split.save")
        split.fingerprint()
        mark("fingerprint")
        model = MODELS["pop"]().fit(split)
        mark("fit")
        results = {}
        for phase in ("valid", "test"):
            results[phase] = evaluate(model, split, phase)
            mark(f"evaluate {phase}")
        per_user = pd.concat([r.per_user.assign(phase=p) for p, r in results.items()], ignore_index=True)
        per_user.to_csv(Path(tmp) / "per_user.csv", index=False)
        mark("per_user.csv")
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["sizes"] = {"users": split.n_users, "items": split.n_items, "interactions": dataset.n_interactions}
    out["test_users"] = results["test"].n_users
    out["test_recall@20"] = {s: round(m["recall@20"], 5) for s, m in results["test"].metrics.items()}
    return out


def whole(folder: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "coldstart.cli", "run", "--dataset", str(folder), "--model", "pop",
                               "--output", str(Path(tmp) / "run"), "--no-progress"], capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode:
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
    return {"whole_run_seconds": round(seconds, 1), "returncode": done.returncode,
            "whole_run_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--generate", default=None, help="users,items,interactions: write the folder first")
    parser.add_argument("--whole", action="store_true", help="also time `coldstart run` end to end")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.generate:
        from coldstart.data.generate import generate, write_folder

        users, items, n = (int(float(x)) for x in args.generate.split(","))
        start = time.perf_counter()
        write_folder(generate(users, items, n, seed=0), args.folder)
        print(f"generated in {time.perf_counter() - start:.1f}s", flush=True)
    result = phases(args.folder)
    if args.whole:
        result.update(whole(args.folder))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
