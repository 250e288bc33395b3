"""Time the full-ranking evaluator: every user against every item, masked, top-K, all metrics.

    python benchmarks/bench_evaluate.py            # ml-1m (needs COLDSTART_DATA_DIR) and a 6,040 x 3,706 synthetic
    python benchmarks/bench_evaluate.py --threads 2
    python benchmarks/bench_evaluate.py --threads 1 --topk-only   # only the top-k micro-benchmark

Scores come from random 64-d user and item embeddings (an MF model's cost); scoring is included in the time.

The top-k micro-benchmark times `topk_deterministic` against the packed-key implementation it replaced (one
int64 topk over hashed keys for every [B, I] entry, kept here as `packed_key_topk`) on one 2048 x 3533 batch,
the two interleaved in one process so that load from other processes hits both alike; it checks they agree.
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
from coldstart.eval.evaluate import evaluate_scores, tie_rank, topk_deterministic


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


def packed_key_topk(scores: torch.Tensor, k: int, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous `topk_deterministic`: hash every (user, item), pack with the score, one int64 topk."""
    n = scores.shape[1]
    k = min(k, n)
    s = scores.float() + 0.0
    bits = s.view(torch.int32)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # [B, I]
    tie = tie_rank(users[:, None], torch.arange(n)[None, :])  # [B, I]
    keys = (ordered.to(torch.int64) << 32) | (0x7FFFFFFF - tie)  # [B, I]
    top = torch.topk(keys, k, dim=1, sorted=True).indices  # [B, k]
    return top, torch.gather(s, 1, top) > float("-inf")


def topk_cases(n_rows: int = 2048, n_items: int = 3533) -> dict[str, torch.Tensor]:
    """Score batches [B, I] with the tie patterns the evaluator meets."""
    gen = torch.Generator().manual_seed(0)
    mf = torch.randn(n_rows, 64, generator=gen) @ torch.randn(64, n_items, generator=gen)  # [B, I]
    seen = torch.rand(n_rows, n_items, generator=gen) < 0.03  # ~100 train items per user masked
    masked = mf.masked_fill(seen, float("-inf"))
    cold = masked.clone()
    cold[:, : int(n_items * 0.8)] = float("-inf")  # cold scenario: only the 20% cold items are candidates
    levels = torch.randint(0, 5, (n_rows, n_items), generator=gen).float().masked_fill(seen, float("-inf"))
    return {
        "MF scores, seen masked (no ties)": masked,
        "MF scores, cold candidates only": cold,
        "5 integer levels (ties at the cut)": levels,
        "constant model (all tie)": torch.zeros(n_rows, n_items).masked_fill(seen, float("-inf")),
    }


def bench_topk(k: int = 20, repeats: int = 15) -> None:
    """Median ms per batch of the packed-key and the current `topk_deterministic`, interleaved."""
    cases = topk_cases()
    users = torch.randperm(10_000, generator=torch.Generator().manual_seed(1))[: next(iter(cases.values())).shape[0]]
    for name, scores in cases.items():
        fns = {"packed-key (old)": lambda: packed_key_topk(scores, k, users),
               "topk_deterministic": lambda: topk_deterministic(scores, k, users)}
        outs = {label: fn() for label, fn in fns.items()}  # also the warm-up
        a, b = outs.values()
        if not (torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])):
            raise AssertionError(f"topk_deterministic differs from the packed-key ranking on {name}")
        times: dict[str, list[float]] = {label: [] for label in fns}
        for rep in range(repeats):
            for label in (list(fns) if rep % 2 == 0 else list(fns)[::-1]):  # alternate who goes first
                start = time.perf_counter()
                fns[label]()
                times[label].append(time.perf_counter() - start)
        med = {label: sorted(t)[len(t) // 2] * 1000 for label, t in times.items()}
        old, new = med.values()
        print(f"top-{k} of {tuple(scores.shape)} {name:36s} packed-key {old:6.1f} ms  "
              f"topk_deterministic {new:6.1f} ms  ({old / new:.1f}x)")
    s = cases["MF scores, seen masked (no ties)"]
    for label, fn in (("plain float torch.topk", lambda: torch.topk(s, k, dim=1)),
                      ("tie_rank of all [B, I]", lambda: tie_rank(users[:, None], torch.arange(s.shape[1])[None, :]))):
        fn()
        t = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
        print(f"reference: {label:24s} {sorted(t)[len(t) // 2] * 1000:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--topk-only", action="store_true", help="run only the top-k micro-benchmark")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus")
    bench_topk()
    if args.topk_only:
        return
    try:
        ml1m = load_dataset("ml-1m", download=False)
        bench("ml-1m cold_item (6,038 x 3,533)", make_split(ml1m, "cold_item", seed=0))
    except DataError as exc:
        print(f"ml-1m skipped: {exc}")
    synth = load_dataset("synthetic", n_users=6040, n_items=3706, mean_interactions=95, seed=0)
    bench("synthetic 6,040 x 3,706 cold_item", make_split(synth, "cold_item", seed=0))


if __name__ == "__main__":
    main()
