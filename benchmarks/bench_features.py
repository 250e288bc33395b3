"""Time every feature preset of a dataset from scratch (no cache): the full extraction, as `coldstart features` runs it.

    python benchmarks/bench_features.py                          # ml-1m: visual, textual, textual_tfidf, meta, demographics
    python benchmarks/bench_features.py --dataset ml-100k
    python benchmarks/bench_features.py --dataset amazon-musical-instruments   # reviews of the cold_item seed-0 train part

Each preset runs once (the extraction is deterministic, and a full pass over the posters takes minutes); the model
loading time is included, as a user would see it. Needs COLDSTART_DATA_DIR and the text / vision extras.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from coldstart.data.loaders import load_dataset
from coldstart.data.splits import make_split
from coldstart.features import PRESETS, FeatureCache, extract


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--presets", default=None, help="comma-separated (default: every preset of the dataset)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    dataset = load_dataset(args.dataset)
    names = args.presets.split(",") if args.presets else list(PRESETS[dataset.name])
    train = make_split(dataset, "cold_item", seed=0).train
    print(f"{'preset':15s} {'rows':>6s} {'dim':>5s} {'no content':>10s} {'seconds':>8s} {'rows/s':>8s}")
    for name in names:
        start = time.perf_counter()
        modality, report = extract(dataset, name, train=train, cache=FeatureCache(None))
        seconds = time.perf_counter() - start
        print(f"{name:15s} {report['rows']:6d} {report['dim']:5d} {report['rows_without_content']:10d} "
              f"{seconds:8.2f} {report['rows'] / seconds:8.1f}")


if __name__ == "__main__":
    main()
