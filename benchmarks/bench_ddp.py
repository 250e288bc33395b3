"""Epoch time of data-parallel training: 1 process against N processes (DDP) on whatever machine this is.

    python benchmarks/bench_ddp.py --dataset ml-100k --model clcrec --nproc 1,2 --epochs 3
    python benchmarks/bench_ddp.py --dataset synthetic --data n_users=20000 --data n_items=5000 --nproc 1,2,4,8

Every configuration trains the same model with the same GLOBAL batch (config.batch_size) for --epochs epochs without
validation, through train.fit (so under DDP exactly the code `coldstart run --nproc N` runs), in processes started
here with torch.multiprocessing (gloo on CPU; NCCL too where each rank has its own GPU). CPU threads: each of the N
processes gets --cores / N threads (default: every core of this machine; --threads fixes it), so 1 and N processes
use the same cores. The epoch time is the median over the epochs after the first (which pays for allocations and
caches). The last line printed is one JSON object: {"device", "cores", "dataset", "model", "batch_size", "results": {N: {"epoch_seconds",
"threads", "final_loss"}}, "speedup": {N: seconds(1) / seconds(N)}}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: list[str]) -> dict:
    return {k: _value(v) for k, _, v in (item.partition("=") for item in items)}


def _worker(rank: int, world: int, init: str, spec: dict, out: str) -> None:
    import torch.distributed as dist

    from coldstart.data.loaders import load_dataset
    from coldstart.data.splits import make_split
    from coldstart.experiments import seed_everything
    from coldstart.models import MODELS
    from coldstart.train import TrainOptions

    torch.set_num_threads(spec["threads"])
    if world > 1:
        backend = "gloo"
        if torch.cuda.is_available() and torch.cuda.device_count() >= world:
            torch.cuda.set_device(rank)
            backend = "cpu:gloo,cuda:nccl"
        dist.init_process_group(backend, init_method=init, rank=rank, world_size=world)
    seed_everything(0)
    dataset = load_dataset(spec["dataset"], **spec["data"])
    split = make_split(dataset, "cold_item", seed=0)
    model = MODELS[spec["model"]](**spec["hyper"])
    start = time.perf_counter()
    model.fit(split, TrainOptions(seed=0, valid_scenario=None))
    total = time.perf_counter() - start
    if rank == 0:
        seconds = [h["seconds"] for h in model.history_]
        result = {"epoch_seconds": round(statistics.median(seconds[1:] or seconds), 3), "epochs": seconds,
                  "fit_seconds": round(total, 2), "threads": spec["threads"],
                  "final_loss": model.history_[-1].get("loss"), "train_pairs": len(split.train)}
        Path(out).write_text(json.dumps(result))
    if world > 1:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="clcrec")
    parser.add_argument("--nproc", default="1,2", help="process counts, comma-separated")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPU cores shared by the processes")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per process (default: cores / N, so every configuration uses the same cores)")
    parser.add_argument("--set", action="append", default=[], help="model hyperparameter key=value")
    parser.add_argument("--data", action="append", default=[], help="loader option key=value")
    args = parser.parse_args()
    import torch.multiprocessing as mp

    hyper = {"num_epoch": args.epochs, **_pairs(args.set)}
    results = {}
    for n in [int(x) for x in args.nproc.split(",")]:
        spec = {"dataset": args.dataset, "model": args.model, "data": _pairs(args.data), "hyper": hyper,
                "threads": args.threads or max(args.cores // n, 1)}
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "result.json")
            mp.spawn(_worker, args=(n, f"file://{tmp}/rendezvous", spec, out), nprocs=n, join=True)
            results[n] = json.loads(Path(out).read_text())
        print(f"{n} process(es): {results[n]['epoch_seconds']} s per epoch ({results[n]['threads']} threads each)",
              flush=True)
    from coldstart.models import MODELS

    base = results.get(1)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(json.dumps({"device": device, "cores": args.cores, "dataset": args.dataset, "model": args.model,
                      "batch_size": MODELS[args.model](**hyper).config.batch_size, "hyper": hyper,
                      "results": results,
                      "speedup": {n: round(base["epoch_seconds"] / r["epoch_seconds"], 3) for n, r in results.items()}
                      if base else {}}))


if __name__ == "__main__":
    main()
