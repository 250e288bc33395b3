"""How much does each feature preset tell about who will like a cold item? A training-free probe.

    python benchmarks/probe_features.py --dataset ml-1m --presets visual,textual,textual_tfidf,meta,raw
    python benchmarks/probe_features.py --dataset ml-100k --presets textual,meta,raw --seeds 1,2,3
    python benchmarks/probe_features.py --presets visual+textual+meta          # "+" joins presets

The probe scores a cold item for a user by its mean cosine similarity to the user's training items:
score(u, i) = (1 / |I_u|) sum_{j in I_u} cos(x_i, x_j), with x the preset's vector, centred over items and
L2-normalised. No parameter
is fitted, so the numbers compare the content, not a model's tuning. "raw" uses every numeric modality the loader
gives (genres, year, director, ...), each L2-normalised, as CLCRec sees them without presets. Cold recall@20 on the
validation split of `cold_item` (`--phase test` for the test split), with the same evaluator as every model;
random ranking is printed for scale.
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.sparse as sp
import torch

from coldstart.data.loaders import load_dataset
from coldstart.data.splits import make_split
from coldstart.eval.evaluate import evaluate_scores
from coldstart.features import extract
from coldstart.nn.content import build_content, select_modalities


def combined(dataset, presets: str, train) -> np.ndarray:
    """Presets joined by "+": each block centred and unit-normalised, then concatenated and normalised again."""
    blocks = np.concatenate([unit_rows(dataset, p, train) for p in presets.split("+")], axis=1)
    norms = np.linalg.norm(blocks, axis=1, keepdims=True)
    return (blocks / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def unit_rows(dataset, preset: str, train) -> np.ndarray:
    """float32 [I, D]: centred over the items that have content, then unit rows (rows without content stay zero).

    Centring matters for pretrained embeddings: their vectors share a large common direction, and without
    centring every user's profile mostly scores how close an item is to that direction, the same for all users.
    """
    if preset == "raw":
        spec = select_modalities(dataset.item_features)
        dense, sparse = build_content(spec, dataset.item_features, dataset.n_items)
        values = np.concatenate([dense, sparse.toarray()], axis=1)
    else:
        modality, _ = extract(dataset, preset, train=train)
        values = modality.values.toarray() if sp.issparse(modality.values) else modality.values
    has = np.abs(values).sum(axis=1) > 0
    values = np.where(has[:, None], values - values[has].mean(axis=0), 0.0)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return (values / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def probe(split, vectors: np.ndarray | None, phase: str) -> float:
    """Cold recall@20 of the mean-similarity scorer on one phase (random scores when vectors is None)."""
    train = split.matrix("train")
    counts = np.maximum(np.asarray(train.sum(axis=1)).ravel(), 1)
    if vectors is None:
        gen = torch.Generator().manual_seed(0)
        score = lambda users: torch.rand(len(users), split.n_items, generator=gen)  # noqa: E731
    else:
        x = torch.from_numpy(vectors)  # [I, D]
        profile = torch.from_numpy(np.asarray((sp.diags(1.0 / counts) @ train) @ vectors, np.float32))  # [U, D]
        score = lambda users: profile[users] @ x.T  # noqa: E731  [B, I]
    return evaluate_scores(score, split, phase, scenarios=("cold",), ks=(20,)).metrics["cold"]["recall@20"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--presets", default="visual,textual,textual_tfidf,meta,raw")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--phase", default="valid", help="valid (default: compare content without looking at test) or test")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    seeds = [int(s) for s in args.seeds.split(",")]
    splits = [make_split(dataset, "cold_item", seed=s) for s in seeds]
    print(f"{args.dataset}, cold_item seeds {seeds}: cold {args.phase} recall@20 of the content-similarity probe")
    rows = [("random", [probe(s, None, args.phase) for s in splits])]
    for preset in args.presets.split(","):
        rows.append((preset, [probe(s, combined(dataset, preset, s.train), args.phase) for s in splits]))
    for name, values in rows:
        print(f"{name:15s} " + " ".join(f"{v:.4f}" for v in values) + f"   mean {np.mean(values):.4f}")


if __name__ == "__main__":
    main()
