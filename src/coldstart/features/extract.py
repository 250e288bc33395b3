"""Run a preset: gather its content, look up the cache, extract (with a progress bar) and store the result."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable, Iterator

import numpy as np
import scipy.sparse as sp

from coldstart.data.dataset import Dataset
from coldstart.data.modalities import Dense, Image, Sparse
from coldstart.errors import DataError
from coldstart.features import tabular
from coldstart.features.cache import FeatureCache, content_hash
from coldstart.features.presets import Extracted, Preset, get_preset

OnBatch = Callable[[int], None]


def _sentence(texts: list[str], settings: dict, on_batch: OnBatch) -> Extracted:
    from coldstart.features.text import SentenceEncoder

    values, mask = SentenceEncoder(settings["model"], settings["batch_size"]).encode(texts, on_batch)
    return Extracted(values, mask, {"empty_texts": int((~mask).sum())})


def _reviews(content: tuple[list[str], np.ndarray, int], settings: dict, on_batch: OnBatch) -> Extracted:
    """Embed every review, then average per item: one item document of many reviews would be truncated."""
    from coldstart.features.text import SentenceEncoder

    texts, items, n_items = content
    vectors, has_text = SentenceEncoder(settings["model"], settings["batch_size"]).encode(texts, on_batch)
    rows = items[has_text]
    pool = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, np.arange(len(rows)))),
                         shape=(n_items, len(rows)))  # [I, R]: sums the reviews of each item
    summed = np.asarray(pool @ vectors[has_text], dtype=np.float32)  # [I, D]
    norms = np.linalg.norm(summed, axis=1, keepdims=True)
    mask = norms[:, 0] > 0
    return Extracted(summed / np.where(norms > 0, norms, 1.0), mask,
                     {"reviews": len(texts), "empty_texts": int((~has_text).sum())})


def _tfidf(documents, settings: dict, on_batch: OnBatch) -> Extracted:
    from coldstart.features.text import tfidf

    values, mask, info = tfidf(documents, settings.get("svd_dim"), settings.get("min_df", 1))
    on_batch(mask.shape[0])
    return Extracted(values, mask, info | {"empty_documents": int((~mask).sum())})


def _labels(indicator: sp.csr_matrix, settings: dict, on_batch: OnBatch) -> Extracted:
    """A sparse label indicator [N, V] as it is: the model's content encoder normalises rows itself."""
    values = sp.csr_matrix(indicator, dtype=np.float32)
    on_batch(values.shape[0])
    mask = np.diff(values.indptr) > 0
    return Extracted(values, mask, {"labels": int(values.shape[1])})


def _image(images: Image, settings: dict, on_batch: OnBatch) -> Extracted:
    from coldstart.features.image import ImageEncoder

    values, mask, unreadable = ImageEncoder(settings["batch_size"]).encode(images, on_batch)
    return Extracted(values, mask, {"no_image": int(sum(r is None for r in images.refs)),
                                    "unreadable_rows": unreadable})


def _tabular(blocks: list, settings: dict, on_batch: OnBatch) -> Extracted:
    parts, scale, missing = [], [], 0
    for kind, *spec in blocks:
        if kind == "labels":
            part, _ = tabular.multi_hot(spec[0], top_n=spec[1], min_count=spec[2])
        elif kind == "number":
            part, _, info = tabular.standardize(spec[0].values, spec[0].mask)
            missing += info["missing"]
        else:
            part, _ = tabular.one_hot(spec[0])
        parts.append(part)
        scale.append(kind != "number")
    values = tabular.concat_blocks(parts, scale)
    on_batch(1)
    return Extracted(values, np.abs(values).sum(axis=1) > 0,
                     {"block_widths": [p.shape[1] for p in parts], "missing_numbers": missing})


#: extractor -> (version, compute, work units of the content for the progress bar). Bump a version when its
#: output changes, so old cache entries stop matching.
EXTRACTORS: dict[str, tuple[str, Callable[[Any, dict, OnBatch], Extracted], Callable[[Any], int]]] = {
    "sentence": ("1", _sentence, len),
    "reviews": ("1", _reviews, lambda content: len(content[0])),
    "tfidf": ("1", _tfidf, lambda docs: docs.shape[0] if sp.issparse(docs) else len(docs)),
    "labels": ("1", _labels, lambda indicator: indicator.shape[0]),
    "image": ("1", _image, lambda images: sum(r is not None for r in images.refs)),
    "tabular": ("2", _tabular, lambda blocks: 1),  # 2: standardised numbers are no longer scaled to their sign
}


def _row_ids(dataset: Dataset, side: str) -> np.ndarray:
    return dataset.item_ids if side == "item" else dataset.user_ids


def extract(dataset: Dataset, preset: str | Preset, train=None, cache: FeatureCache | None = None,
            progress: bool = False) -> tuple[Dense | Sparse, dict]:
    """Build one preset's modality for a dataset, from the cache when the same content was extracted before.

    Args:
        dataset: the loaded dataset.
        preset: a preset name of the dataset (see `PRESETS`), a generic `kind:modality` spec, or a Preset.
        train: the training interactions (a split's `train` part); required by presets built from interactions.
        cache: where extractions are kept (default: the user cache; `FeatureCache(None)` turns caching off).
        progress: show a progress bar while extracting.

    Returns:
        (the modality, row-aligned with the dataset's items or users; a report with sizes, content gaps, timing
        and whether the cache was hit).
    """
    preset = get_preset(dataset, preset) if isinstance(preset, str) else preset
    if preset.needs_train and train is None:
        raise DataError(f"preset {preset.name!r} is built from training interactions: give a split's train part "
                        "(coldstart features --protocol ...)", field="preset")
    cache = FeatureCache() if cache is None else cache
    version, compute, work = EXTRACTORS[preset.extractor]
    content = preset.gather(dataset, train)
    row_ids = _row_ids(dataset, preset.side)
    key = content_hash(dataset.name, preset.name, preset.side, preset.extractor, version, preset.settings,
                       row_ids, content)
    hit = cache.load(dataset.name, preset.name, key)
    if hit is not None:
        values, mask, report = hit
        return Extracted(values, mask).modality(), report | {"cache": "hit"}
    start = time.perf_counter()
    with _progress(progress, f"{preset.name} ({preset.extractor})", work(content)) as advance:
        result = compute(content, preset.settings, advance)
    if result.values.shape[0] != len(row_ids):
        raise DataError(f"extractor returned {result.values.shape[0]} rows for {len(row_ids)}", field=preset.name)
    report = {"dataset": dataset.name, "preset": preset.name, "side": preset.side, "extractor": preset.extractor,
              "settings": preset.settings, "description": preset.description, "rows": int(result.values.shape[0]),
              "dim": int(result.values.shape[1]),
              "rows_without_content": 0 if result.mask is None else int((~result.mask).sum()),
              "seconds": round(time.perf_counter() - start, 2), **result.report}
    if "unreadable_rows" in report:  # report raw ids, not row numbers
        report["unreadable_ids"] = [str(row_ids[r]) for r in report.pop("unreadable_rows")]
    path = cache.save(dataset.name, preset.name, key, result.values, result.mask, report)
    return result.modality(), report | {"cache": "miss" if path else "off", "path": str(path) if path else None}


@contextlib.contextmanager
def _progress(enabled: bool, description: str, total: int) -> Iterator[OnBatch]:
    """Yield an `advance(n)` callable over a rich progress bar (a no-op when disabled or not on a terminal)."""
    from rich.console import Console

    if not (enabled and Console().is_terminal):  # a bar in a log file or pipe is only noise
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def with_features(dataset: Dataset, presets: list[str], train=None, cache: FeatureCache | None = None,
                  progress: bool = False, status: Callable[[str], None] | None = None) -> tuple[Dataset, list[dict]]:
    """A copy of the dataset whose item (and / or user) modalities are exactly the presets' outputs.

    The raw modalities of a side that gets any preset are dropped, so a model that uses "every numeric
    modality" sees the presets and nothing else; a side without presets keeps its raw modalities.

    Args:
        dataset: the loaded dataset.
        presets: preset names or generic specs, e.g. ["visual", "textual", "meta"].
        train, cache, progress: as in `extract`.
        status: called with one line per preset (its size, gaps, timing, cache hit).

    Returns:
        (the new dataset, one report per preset).
    """
    if not presets:
        return dataset, []
    resolved = [get_preset(dataset, name) for name in presets]  # every name is checked before any extraction
    seen = set()
    for name, preset in zip(presets, resolved):
        if (preset.side, preset.name) in seen:
            raise DataError(f"preset {name!r} given twice", field="features")
        seen.add((preset.side, preset.name))
    built: dict[str, dict] = {"item": {}, "user": {}}
    reports = []
    for preset in resolved:
        modality, report = extract(dataset, preset, train=train, cache=cache, progress=progress)
        built[preset.side][preset.name] = modality
        reports.append(report)
        if status is not None:
            status(describe(report))
    changes = {f"{side}_features": mods for side, mods in built.items() if mods}
    return dataclasses.replace(dataset, **changes), reports


def describe(report: dict) -> str:
    """One line about an extraction, e.g. 'visual: 3,690 items x 1280, 9 without content, extracted in 95.2s'."""
    gaps = report.get("rows_without_content", 0)
    unreadable = report.get("unreadable_ids") or []
    text = f"{report['preset']}: {report['rows']:,} {report['side']}s x {report['dim']}"
    if gaps:
        text += f", {gaps:,} without content"
    if unreadable:
        text += f" ({len(unreadable)} unreadable images: {', '.join(unreadable[:5])}{', ...' if len(unreadable) > 5 else ''})"
    if report.get("missing_numbers"):
        missing = report["missing_numbers"]
        text += f", {missing} missing number{'s' if missing > 1 else ''} set to the column mean"
    if report.get("cache") == "hit":
        return text + f" (from the cache; extraction took {report['seconds']}s)"
    return text + f", extracted in {report['seconds']}s"
