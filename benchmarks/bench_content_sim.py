"""content_sim on a large bag of words: fit + scoring every user, sparse (now) vs the dense implementation it replaced.

    python benchmarks/bench_content_sim.py                                  # 26K items x 20K words, 50K users, sparse
    python benchmarks/bench_content_sim.py --scale 0.5 --impl dense         # the old, densifying code, half size

Synthetic data: each item has ~50 distinct words (72 draws from a Zipf(1.1) vocabulary, term counts 1-3: the shape
of a real bag of words), users have Poisson(20) items drawn by a Zipf popularity; `cold_item` split seed 0. Every
user is scored against every item in batches of 2,048 users (as the evaluator does) and reduced to a top-20.
Prints one markdown row: fit s, scoring s, total s, CPU s (all threads), RSS before fit MB (the data), peak RSS MB
(ru_maxrss; one configuration per process, so the peak is that configuration's).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import scipy.sparse as sp
import torch

from coldstart.data.dataset import Dataset
from coldstart.data.modalities import Sparse
from coldstart.data.splits import Split, make_split
from coldstart.models import MODELS
from coldstart.models.content_sim import ContentSim


class DenseContentSim(ContentSim):
    """The implementation before issue 11 item 20: content densified, centred and stored as [I, D] and [U, D]."""

    def build(self, dims: dict[str, int]) -> None:
        pass

    def _fit(self, split: Split, options=None) -> None:
        dense, sparse = self._content
        del self._content
        content = torch.from_numpy(np.concatenate([dense, sparse.toarray()], axis=1)).float()  # [I, D]
        has = content.abs().sum(1) > 0  # [I]
        warm = torch.from_numpy(split.train_item_mask())
        centre = content[warm & has].mean(0)
        x = torch.nn.functional.normalize(torch.where(has[:, None], content - centre, 0.0), dim=1)  # [I, D]
        train = split.matrix("train")
        counts = np.maximum(np.diff(train.indptr), 1)[:, None]  # [U, 1]
        self.item_vectors_ = x
        self.user_profiles_ = torch.from_numpy(np.asarray(train @ x.numpy()) / counts).float()  # [U, D]

    def score(self, users, items=None):
        return self.user_profiles_[users] @ self.item_vectors_.T  # [B, I]


def synthetic(n_items: int, n_words: int, n_users: int, seed: int = 0) -> Dataset:
    """A bag-of-words catalogue and Zipf-popular interactions; every item is interacted with at least once."""
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, n_words + 1) ** 1.1
    rows = np.repeat(np.arange(n_items), 72)  # 72 Zipf draws give ~50 distinct words at 20K words
    words = sp.csr_matrix((rng.integers(1, 4, len(rows)).astype(np.float32),
                           (rows, rng.choice(n_words, len(rows), p=zipf / zipf.sum()))), shape=(n_items, n_words))
    words.sum_duplicates()  # repeated words add up
    counts = np.maximum(rng.poisson(20, n_users), 1)
    users = np.repeat(np.arange(n_users), counts)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, len(users), p=popularity / popularity.sum())
    items[rng.choice(len(users), n_items, replace=False)] = np.arange(n_items)  # every item interacts
    pairs = np.unique(np.stack([users, items], 1), axis=0)
    return Dataset("bow", np.array([str(u) for u in range(n_users)]), np.array([str(i) for i in range(n_items)]),
                   pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64), item_features={"words": Sparse(words)})


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["sparse", "dense"], default="sparse")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 26K items, 20K words, 50K users")
    args = parser.parse_args()
    n_items, n_words, n_users = (int(n * args.scale) for n in (26_000, 20_000, 50_000))
    split = make_split(synthetic(n_items, n_words, n_users), "cold_item", seed=0)
    nnz = split.dataset.item_features["words"].values.nnz
    before = rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    model = (MODELS["content_sim"] if args.impl == "sparse" else DenseContentSim)(max_dims=1 << 30).fit(split)
    fitted = time.perf_counter()
    model.eval()
    for first in range(0, split.n_users, 2048):
        torch.topk(model.score(torch.arange(first, min(first + 2048, split.n_users))), 20)
    done, cpu = time.perf_counter(), time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"| {args.impl} | {n_items:,} x {n_words:,} ({nnz:,} nnz) | {split.n_users:,} ({len(split.train):,} train) "
          f"| {fitted - start:.1f} | {done - fitted:.1f} | {done - start:.1f} | {cpu:.1f} | {before:,.0f} | {peak:,.0f} |")


if __name__ == "__main__":
    main()
