"""CLCRec time to quality: wall time to the validation recall@K the official settings reach, official vs fast.

    python benchmarks/bench_time_to_quality.py --dataset ml-100k
    OMP_NUM_THREADS=1 python benchmarks/bench_time_to_quality.py --dataset ml-1m --arms baseline   # hours: start early
    python benchmarks/bench_time_to_quality.py --dataset ml-1m --arms fast --fast-batch 4096

Two arms on the same split (cold_item, VALIDATION split only: the test split is never evaluated):

- baseline: CLCRec with the official settings (batch 256, l_r 0.001, early stopping with the model's patience).
  Its best validation recall@K is the target; baseline_seconds is the wall time to the epoch that reached it.
- fast: a larger batch, the learning rate scaled with it (`--lr-rule sqrt`: l_r * sqrt(B / 256), or `linear`),
  a linear warm-up over `--warmup` epochs and an optional cosine decay, through train.py's `lr_scale` hook.
  fast_seconds is the wall time to the first validation at or above the target (null when never reached).

Wall time counts everything a user waits for: prepare, every epoch and every validation. CPU seconds of this
process are recorded too: on a shared machine they are the fair comparison (with one thread they equal the wall
time of a quiet core), and the figure uses them unless --x seconds. Each arm checkpoints after every epoch in
its own folder under --output (model, optimizer, curve), so an interrupted run resumes where it stopped.
The figure (recall against seconds: the official arm, this fast arm, and every other fast configuration already
run into the same --output folder) goes to docs/images/time_to_quality_<dataset>.png; `--arms none` only redraws it
and prints the JSON from the saved curves.
The last line printed is JSON: {"dataset", "baseline_seconds", "fast_seconds", "target_recall", "speedup", ...}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from coldstart import train
from coldstart.data.loaders import load_dataset
from coldstart.data.splits import make_split
from coldstart.experiments import seed_everything
from coldstart.models import MODELS
from coldstart.models.base import atomic_torch_save

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_BATCH, OFFICIAL_LR = 256, 0.001


def schedule(warmup: float, decay_epochs: float | None):
    """lr multiplier as a pure function of progress in epochs (exact on resume): linear warm-up, then
    constant, or a cosine to 0.05 over `decay_epochs` when given."""

    def lr_scale(progress: float) -> float:
        if warmup > 0 and progress < warmup:
            return (progress + 1e-3) / warmup
        if decay_epochs:
            t = min(1.0, (progress - warmup) / max(decay_epochs - warmup, 1e-9))
            return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t))
        return 1.0

    return lr_scale


def run_arm(name: str, split, hyper: dict, folder: Path, max_epochs: int, seed: int, target: float | None,
            lr_scale=None, patience: int | None = None) -> list[dict]:
    """Train one arm epoch by epoch with validation after each; resume from folder/state.pt.

    Stops at `max_epochs`, when recall >= target (fast arm), or after `patience` epochs without improvement
    (the official early-stopping rule, at least the config's min_epochs; for the fast arm it means the
    configuration peaked below the target).

    Returns:
        the curve: one dict per epoch (epoch, seconds and cpu_seconds cumulative, recall).
    """
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.pt"
    seed_everything(seed)
    model = MODELS["clcrec"](**hyper)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    # What Recommender.fit does before training, here by hand so that each epoch can be timed and validated.
    model.dims_ = model.dims_for(split)
    model.build(model.dims_)
    seen = split.matrix("train")
    model.seen_indptr_ = torch.from_numpy(seen.indptr.astype("int64"))
    model.seen_indices_ = torch.from_numpy(seen.indices.astype("int64"))
    if lr_scale is not None:
        model.lr_scale = lr_scale  # train.set_learning_rate reads the optional hook from the instance
    model.prepare(split)
    optimizer = train.make_optimizer(model)
    scenario = train.resolve_scenario(model, train.TrainOptions())
    curve, start, carried_wall, carried_cpu = [], 0, 0.0, 0.0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        curve, start = state["curve"], state["epoch"]
        carried_wall, carried_cpu = state["seconds"], state["cpu_seconds"]
        wall0, cpu0 = time.perf_counter(), time.process_time()  # set-up of a resumed process is not counted twice
        print(f"[{name}] resumed after epoch {start} ({carried_wall:.0f}s so far)", flush=True)
    patience = patience or model.config.patience
    for epoch in range(start, max_epochs):
        if curve and target is not None and curve[-1]["recall"] >= target:
            break
        if curve and patience:  # both arms: a fast configuration that stopped improving will not reach the target
            best_epoch = max(range(len(curve)), key=lambda e: curve[e]["recall"]) + 1
            if len(curve) - best_epoch >= patience and len(curve) >= model.config.min_epochs:
                break
        sums, n = train.train_epoch(model, optimizer, train.epoch_generator(seed, epoch), epoch=epoch)
        model.eval()
        recall = train.validation_score(model, split, scenario, model.config.valid_k)
        row = {"epoch": epoch + 1, "seconds": round(carried_wall + time.perf_counter() - wall0, 3),
               "cpu_seconds": round(carried_cpu + time.process_time() - cpu0, 3), "recall": recall,
               "loss": round(sums.get("loss", float("nan")) / max(n, 1), 5),
               "load": round(os.getloadavg()[0], 2)}
        curve.append(row)
        print(f"[{name}] {json.dumps(row)}", flush=True)
        atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "curve": curve,
                           "epoch": epoch + 1, "seconds": row["seconds"], "cpu_seconds": row["cpu_seconds"]},
                          state_path)
    (folder / "curve.json").write_text(json.dumps(curve, indent=1) + "\n")
    return curve


def first_at(curve: list[dict], target: float) -> dict | None:
    """The first epoch whose recall reaches the target."""
    return next((row for row in curve if row["recall"] >= target - 1e-12), None)


def plot(curves: dict[str, list[dict]], target: float, dataset: str, path: Path, key: str = "cpu_seconds") -> None:
    from coldstart.studies.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, curve in curves.items():
        if curve:
            ax.plot([r[key] for r in curve], [r["recall"] for r in curve], marker="o", ms=3, label=label)
    ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.4f}")
    ax.set_xscale("log")
    ax.set_xlabel(("CPU seconds of the process, 1 thread" if key == "cpu_seconds" else "wall seconds")
                  + " (log scale)")
    ax.set_ylabel("validation recall@20 (all)")
    ax.set_title(f"CLCRec time to quality, {dataset} cold_item")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--features", default="", help="feature presets, comma-separated (default: the dataset's "
                        "own content)")
    parser.add_argument("--split-seed", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--arms", default="baseline,fast")
    parser.add_argument("--fast-batch", type=int, default=2048)
    parser.add_argument("--lr-rule", choices=("sqrt", "linear"), default="sqrt")
    parser.add_argument("--lr", type=float, default=None, help="fast arm's l_r (overrides --lr-rule)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up epochs of the fast arm")
    parser.add_argument("--decay-epochs", type=float, default=0.0, help="cosine decay length (0: constant)")
    parser.add_argument("--max-epochs", type=int, default=100, help="cap on the baseline's epochs")
    parser.add_argument("--max-fast-epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--x", choices=("cpu_seconds", "seconds"), default="cpu_seconds",
                        help="the figure's time axis: CPU seconds (robust to other processes' load) or wall seconds")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.output or Path("/work/runs/h16b") / f"ttq-{args.dataset}"
    dataset = load_dataset(args.dataset, download=False)
    split = make_split(dataset, "cold_item", seed=args.split_seed)
    if args.features:
        from coldstart.features import with_features

        split.dataset, _ = with_features(split.dataset, args.features.split(","), train=split.train)
    arms = args.arms.split(",")
    base_hyper = {"batch_size": OFFICIAL_BATCH, "l_r": OFFICIAL_LR}
    baseline = run_arm("baseline", split, base_hyper, out / "baseline", args.max_epochs, args.seed, None) \
        if "baseline" in arms else _saved(out / "baseline")
    if not baseline:
        print("no baseline curve yet: run --arms baseline first")
        return
    target = max(r["recall"] for r in baseline)
    base_row = first_at(baseline, target)
    ratio = args.fast_batch / OFFICIAL_BATCH
    lr = args.lr or OFFICIAL_LR * (math.sqrt(ratio) if args.lr_rule == "sqrt" else ratio)
    label = f"fast-b{args.fast_batch}-lr{lr:g}-w{args.warmup:g}-d{args.decay_epochs:g}"
    fast = []
    if "fast" in arms:
        fast = run_arm(label, split, {"batch_size": args.fast_batch, "l_r": lr}, out / label, args.max_fast_epochs,
                       args.seed, target, schedule(args.warmup, args.decay_epochs or None))
    else:
        fast = _saved(out / label)
    fast_row = first_at(fast, target) if fast else None
    figure = args.figure or ROOT / "docs" / "images" / f"time_to_quality_{args.dataset}.png"
    curves = {f"official (batch {OFFICIAL_BATCH}, l_r {OFFICIAL_LR:g})": baseline,
              f"batch {args.fast_batch}, l_r {lr:g}, warm-up {args.warmup:g} ep"
              + (f", cosine {args.decay_epochs:g} ep" if args.decay_epochs else ""): fast}
    for other in sorted(out.glob("fast-*")):  # every other configuration tried in this folder, in the same figure
        if other.name != label and _saved(other):
            curves[other.name.removeprefix("fast-")] = _saved(other)
    plot(curves, target, args.dataset, figure, args.x)
    result = {"dataset": args.dataset, "target_recall": round(target, 5), "target_epoch": base_row["epoch"],
              "baseline_seconds": base_row["seconds"], "baseline_cpu_seconds": base_row["cpu_seconds"],
              "fast_seconds": fast_row["seconds"] if fast_row else None,
              "fast_cpu_seconds": fast_row["cpu_seconds"] if fast_row else None,
              "fast_epoch": fast_row["epoch"] if fast_row else None,
              "fast_best_recall": max((r["recall"] for r in fast), default=None), "fast_arm": label,
              "speedup": round(base_row["seconds"] / fast_row["seconds"], 2) if fast_row else None,
              "cpu_speedup": round(base_row["cpu_seconds"] / fast_row["cpu_seconds"], 2) if fast_row else None,
              "figure": str(figure)}
    print(json.dumps(result))


def _saved(folder: Path) -> list[dict]:
    """An arm's curve from its checkpoint; empty when it never ran."""
    if (folder / "state.pt").exists():
        return torch.load(folder / "state.pt", map_location="cpu", weights_only=True)["curve"]
    return []


if __name__ == "__main__":
    main()
