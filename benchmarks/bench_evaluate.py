"""Time the full-ranking evaluator: every user against every item, masked, top-K, all metrics.

    python benchmarks/bench_evaluate.py            # ml-1m (needs COLDSTART_DATA_DIR) and a 6,040 x 3,706 synthetic
    python benchmarks/bench_evaluate.py --threads 2

Scores come from random 64-d user and item embeddings (an MF model's cost); scoring is included in the time.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from coldstart.data.loaders import load_dataset
from coldstart.data.splits import make_split
from coldstart.errors import DataError
from coldstart.eval.evaluate import evaluate_scores


def bench(name: str, split, repeats: int = 5) -> None:
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(split.n_users, 64, generator=gen)
    items = torch.randn(split.n_items, 64, generator=gen)
    score = lambda u: users[u] @ items.T  # noqa: E731  [B, I]
    evaluate_scores(score, split, "test", scenarios=("all",))  # warm-up
    for scenarios in (("all",), ("warm", "cold", "all")):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            res = evaluate_scores(score, split, "test", scenarios=scenarios, ks=(10, 20))
            times.append(time.perf_counter() - start)
        n = sum(res.n_users.values())
        print(f"{name:34s} {'+'.join(scenarios):15s} users ranked {n:6d} x {split.n_items} items: "
              f"best {min(times):.3f}s  median {sorted(times)[len(times) // 2]:.3f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus")
    try:
        ml1m = load_dataset("ml-1m", download=False)
        bench("ml-1m cold_item (6,038 x 3,533)", make_split(ml1m, "cold_item", seed=0))
    except DataError as exc:
        print(f"ml-1m skipped: {exc}")
    synth = load_dataset("synthetic", n_users=6040, n_items=3706, mean_interactions=95, seed=0)
    bench("synthetic 6,040 x 3,706 cold_item", make_split(synth, "cold_item", seed=0))


if __name__ == "__main__":
    main()
