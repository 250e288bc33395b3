"""Scaling: time and peak memory of a CLCRec epoch and of a full three-scenario evaluation against interactions.

    python benchmarks/bench_scaling.py --sizes 1e6,3e6,1e7 --threads 2 --out /work/runs/h16b/scaling
    python benchmarks/bench_scaling.py --plot --out /work/runs/h16b/scaling      # figure + fitted slopes only

Data: `coldstart.data.generate` with users = interactions / 10 and a fixed catalogue of 100K items (the issue's
1M x 100K x 10M at the top), three item modalities (text 64-d, image 32-d, 2,000 tags), written as Parquet and
read back through the memory-mapped index (data/columnar.py); split cold_item, seed 0.

Each measurement runs in a fresh process (peak RSS, `resource.getrusage`, is per process):

- epoch: CLCRec at the official settings (batch 256, 128 negatives, dim 64, hidden 256). A full epoch at 10M is
  ~31K batches, hours on 2 cores, so `--batches` batches are timed after 3 warm-up batches and the epoch is
  extrapolated: seconds per batch x batches per epoch (the batch cost does not depend on N: the catalogue is
  fixed). The JSON says so ("extrapolated_from_batches").
- eval: `evaluate` of that (untrained) CLCRec on the test phase, warm + cold + all from one scoring pass: every
  user with a test item against every item. With --eval-users U the evaluation is run twice, on the first U / 2
  and the first U such users, and projected to all of them as fixed + per-user cost (the evaluator's cost is
  linear in users: batches are independent; the fixed part, masks and plans over all interactions, is not).

Results: one JSON line per measurement in OUT/results.jsonl; the log-log figure goes to
docs/images/scaling.png with the least-squares slope of log(cost) on log(interactions) printed per series.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_ITEMS = 100_000


def data_folder(base: Path, n: int, items: int = N_ITEMS) -> Path:
    """The generated folder for n interactions (made once)."""
    from coldstart.data.generate import generate, write_folder

    folder = base / f"gen-{n}-{items}"
    if not (folder / "interactions.parquet").exists():
        start = time.perf_counter()
        write_folder(generate(n_users=n // 10, n_items=items, n_interactions=n, seed=0), folder)
        print(f"generated {n:,} interactions in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
    return folder


def one(args) -> dict:
    """One measurement in this process."""
    import torch

    from coldstart import train
    from coldstart.data.loaders import load_dataset
    from coldstart.data.splits import make_split
    from coldstart.eval.evaluate import evaluate
    from coldstart.experiments import seed_everything
    from coldstart.models import MODELS

    torch.set_num_threads(args.threads)
    n = int(float(args.one))
    folder = data_folder(args.out / "data", n, args.items)
    t0 = time.perf_counter()
    dataset = load_dataset(str(folder))
    split = make_split(dataset, "cold_item", seed=0)
    setup = time.perf_counter() - t0
    seed_everything(0)
    model = MODELS["clcrec"](batch_size=256)
    model.dims_ = model.dims_for(split)
    model.build(model.dims_)
    seen = split.matrix("train")
    model.seen_indptr_ = torch.from_numpy(seen.indptr.astype("int64"))
    model.seen_indices_ = torch.from_numpy(seen.indices.astype("int64"))
    model.prepare(split)
    rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {"interactions": n, "users": split.n_users, "items": split.n_items, "train_pairs": len(split.train),
           "what": args.what, "threads": args.threads, "setup_seconds": round(setup, 2),
           "load_before": round(os.getloadavg()[0], 2)}
    if args.what == "epoch":
        optimizer = train.make_optimizer(model)
        model.train()
        batches = model.batches(train.epoch_generator(0, 0))
        gen = train.epoch_generator(0, 0)
        timed, warm = 0.0, 3
        cpu0 = None
        for b, batch in enumerate(batches):
            if b == warm:
                start, cpu0 = time.perf_counter(), time.process_time()
            loss, _ = model.loss(batch, gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if b + 1 == warm + args.batches:
                break
        timed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        per_batch = timed / args.batches
        row.update({"batches_per_epoch": len(batches), "extrapolated_from_batches": args.batches,
                    "seconds_per_batch": round(per_batch, 4), "cpu_seconds_per_batch": round(cpu / args.batches, 4),
                    "seconds": round(per_batch * len(batches), 1),
                    "cpu_seconds": round(cpu / args.batches * len(batches), 1)})
    else:
        model.eval()
        import numpy as np

        test = split.test
        test_users = np.unique(test.users)
        sizes = [len(test_users)] if not args.eval_users else [max(1, args.eval_users // 2), args.eval_users]
        measured = []
        for n_users in sizes:  # two sizes: the fixed cost (masks, plans) and the cost per user apart
            split.test = test.select(np.isin(test.users, test_users[:n_users]))
            start, cpu0 = time.perf_counter(), time.process_time()
            res = evaluate(model, split, "test")
            measured.append((res.n_users.get("all", 0), time.perf_counter() - start, time.process_time() - cpu0))
        split.test = test
        if len(measured) == 1:
            wall, cpu = measured[0][1], measured[0][2]
        else:  # linear in users: fixed + per_user * users
            (n1, w1, c1), (n2, w2, c2) = measured
            per_wall, per_cpu = (w2 - w1) / (n2 - n1), (c2 - c1) / (n2 - n1)
            wall = w1 + per_wall * (len(test_users) - n1)
            cpu = c1 + per_cpu * (len(test_users) - n1)
        row.update({"test_users": int(len(test_users)),
                    "measured": [[n, round(w, 2), round(c, 2)] for n, w, c in measured],
                    "user_rankings": sum(res.n_users.values()), "cpu_seconds": round(cpu, 1), "seconds": round(wall, 1),
                    "extrapolated_from_users": None if len(measured) == 1 else [m[0] for m in measured]})
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    row["rss_after_setup_mb"] = round(rss_setup, 1)
    row["load_after"] = round(os.getloadavg()[0], 2)
    return row


def fit_slope(xs, ys) -> float:
    import numpy as np

    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def plot(out: Path, figure: Path, metric: str = "cpu_seconds") -> None:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    from coldstart.studies.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for what, label in (("epoch", "CLCRec epoch (batch 256)"), ("eval", "evaluation, 3 scenarios")):
        sel = sorted((r for r in rows if r["what"] == what), key=lambda r: r["interactions"])
        if len(sel) < 2:
            continue
        xs = [r["interactions"] for r in sel]
        for ax, key, unit in ((axes[0], metric, "s"), (axes[1], "peak_rss_mb", "MB")):
            ys = [r[key] for r in sel]
            slope = fit_slope(xs, ys)
            ax.loglog(xs, ys, marker="o", label=f"{label}: slope {slope:.2f}")
            print(f"{what:5s} {key:12s} slope {slope:.3f}  " + "  ".join(f"{x:,}: {y}{unit}" for x, y in zip(xs, ys)))
    axes[0].set_ylabel("CPU seconds of the process" if metric == "cpu_seconds" else "wall seconds")
    axes[1].set_ylabel("peak RSS (MB)")
    for ax in axes:
        ax.set_xlabel("interactions")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Cost against interactions (users = N / 10, 100K items), log-log")
    figure.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, figure)
    print(f"figure: {figure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1e6,3e6,1e7")
    parser.add_argument("--what", default="epoch,eval")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=20, help="timed CLCRec batches (after 3 warm-up ones)")
    parser.add_argument("--eval-users", type=int, default=0, help="rank only this many users and scale (0: all)")
    parser.add_argument("--items", type=int, default=N_ITEMS, help="catalogue size")
    parser.add_argument("--out", type=Path, default=Path("/work/runs/h16b/scaling"))
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "images" / "scaling.png")
    parser.add_argument("--metric", choices=("cpu_seconds", "seconds"), default="cpu_seconds",
                        help="plotted cost: CPU seconds of the process (robust to load from other processes) or wall")
    parser.add_argument("--plot", action="store_true", help="only draw the figure from OUT/results.jsonl")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(one(args)), flush=True)
        return
    if not args.plot:
        for size in args.sizes.split(","):
            n = int(float(size))
            data_folder(args.out / "data", n, args.items)
            for what in args.what.split(","):
                cmd = [sys.executable, __file__, "--one", str(n), "--what", what, "--threads", str(args.threads),
                       "--batches", str(args.batches), "--eval-users", str(args.eval_users), "--out", str(args.out),
                       "--items", str(args.items)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    continue
                line = done.stdout.strip().splitlines()[-1]
                print(line, flush=True)
                with open(args.out / "results.jsonl", "a") as fh:
                    fh.write(line + "\n")
    plot(args.out, args.figure, args.metric)


if __name__ == "__main__":
    main()
