"""Seconds per epoch, training pairs per second and peak memory of CLCRec training on ml-1m (cold_item split).

    python benchmarks/bench_clcrec.py                        # official settings and larger batches
    python benchmarks/bench_clcrec.py --batch-sizes 256 --encoders mf,lightgcn --content dense

Each configuration runs in a fresh process (so its peak RSS is its own) and times whole epochs of
train.train_epoch: negative sampling, feature encoding, both losses, backward and Adam, everything but
validation. Content "catalogue" is ml-1m's own numeric item content (genres, year, director, writers,
actors, MPAA: a 15.6K-wide sparse input); "dense" replaces it with random features of the shapes the
feature extractors produce (plot text 384-d, poster 1280-d) plus the genres.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from coldstart.data.loaders import load_dataset
    from coldstart.data.modalities import Dense
    from coldstart.data.splits import make_split
    from coldstart.models import MODELS
    from coldstart.train import epoch_generator, make_adam, train_epoch

    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.dataset)
    if args.content == "dense":
        rng = np.random.default_rng(0)
        dataset.item_features = {
            "genres": dataset.item_features["genres"],
            "plot": Dense(rng.normal(size=(dataset.n_items, 384)).astype(np.float32)),
            "poster": Dense(rng.normal(size=(dataset.n_items, 1280)).astype(np.float32)),
        }
    split = make_split(dataset, "cold_item", seed=0)
    hyper = {"num_neg": args.num_neg, "dim_E": 64, "batch_size": args.batch_size, "encoder": args.encoder}
    model = MODELS["clcrec"](**hyper)
    model.dims_ = model.dims_for(split)
    model.build(model.dims_)
    train = split.matrix("train")
    model.seen_indptr_ = torch.from_numpy(train.indptr.astype(np.int64))
    model.seen_indices_ = torch.from_numpy(train.indices.astype(np.int64))
    model.prepare(split)
    optimizer = make_adam(model.parameters(), 1e-3)
    times = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        train_epoch(model, optimizer, epoch_generator(0, epoch))
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"dataset": args.dataset, "content": args.content, "content_width": model.dims_["content_dense"]
            + model.dims_["content_sparse"], "encoder": args.encoder, "batch_size": args.batch_size,
            "num_neg": args.num_neg, "threads": args.threads, "train_pairs": len(split.train),
            "seconds_per_epoch": round(best, 2), "pairs_per_second": int(len(split.train) / best),
            "peak_rss_mb": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--content", default="catalogue", help="catalogue, dense, or both (comma-separated)")
    parser.add_argument("--encoders", default="mf")
    parser.add_argument("--batch-sizes", default="256,1024,2048")
    parser.add_argument("--num-neg", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per configuration (best is kept)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--encoder", default="mf", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=256, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    print("| content | width | encoder | batch | negatives | s / epoch | pairs / s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for content in args.content.split(","):
        for encoder in args.encoders.split(","):
            for batch in args.batch_sizes.split(","):
                cmd = [sys.executable, __file__, "--one", "--dataset", args.dataset, "--content", content,
                       "--encoder", encoder, "--batch-size", batch, "--num-neg", str(args.num_neg),
                       "--epochs", str(args.epochs), "--threads", str(args.threads)]
                r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                print(f"| {r['content']} | {r['content_width']} | {r['encoder']} | {r['batch_size']} | {r['num_neg']} "
                      f"| {r['seconds_per_epoch']} | {r['pairs_per_second']:,} | {r['peak_rss_mb']:,} |", flush=True)


if __name__ == "__main__":
    main()
