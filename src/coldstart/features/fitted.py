"""Fitted feature presets: what a run's presets learnt from the training content, saved with the run, and the
transformation of a new item's (or user's) raw content into the model's numeric modalities.

Training turns raw content into numeric modalities with presets (presets.py, extract.py). Some presets learn
from the whole catalogue: TF-IDF its vocabulary and inverse document frequencies, SVD its components, tabular
blocks the labels they keep, the mean and standard deviation of numbers and the category vocabularies. A new
item must go through exactly that transformation, so `fit_features` records it (run directory: `features/`,
written by experiments.py) and `FittedFeatures.transform` replays it on new content:

    fitted = FittedFeatures.load(run / "features")
    features = fitted.transform("item", [{"text": {"title": "Heat", "plot": "..."},
                                          "labels": {"genres": ["Action", "Crime"]},
                                          "images": {"poster": png_bytes}}], names=model.spec_.names)
    vectors = model.item_embeddings(features)          # [1, dim_E]

New content is gathered by the preset's own `gather` function from a one-off dataset holding only the new rows
(raw label vocabularies are the training ones, so label columns line up), and the stateless extractors
(sentence embeddings, EfficientNet image features) run through the same encoder methods as in training.
Presets built from training interactions (review text, per-interaction tags) have no raw form for a new item:
such a modality takes a precomputed vector (`vectors=`) or counts as missing.

Layout of `features/`: fitted.json (format, dataset, raw modality descriptions, one entry per preset) and
fitted.npz (the arrays, keys "<preset position>.<name>").
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from coldstart.data.modalities import Dense, Image, MultiLabel, Sparse, Text
from coldstart.errors import DataError
from coldstart.features import tabular
from coldstart.features.presets import Extracted, get_preset

log = logging.getLogger("coldstart")

FORMAT = 1
SIDES = ("item", "user")


@dataclass
class FittedPreset:
    """One preset's fitted state.

    Attributes:
        spec: the preset as the run's config names it ("textual", "tfidf:title@64").
        name, side, extractor, settings: the preset's output modality name, side, extractor and settings.
        inputs: the raw modalities its content is gathered from.
        state: JSON-able fitted values (vocabularies, kept label columns).
        arrays: fitted arrays (idf, SVD components, means and standard deviations).
    """

    spec: str
    name: str
    side: str
    extractor: str
    settings: dict
    inputs: list[str] = field(default_factory=list)
    state: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def needs_vector(self) -> bool:
        """True when new content cannot be transformed (the preset reads training interactions)."""
        return self.extractor not in TRANSFORMS


@dataclass
class FittedFeatures:
    """Everything needed to turn raw content into a run's numeric modalities.

    Attributes:
        dataset: the dataset name (named presets are looked up by it).
        raw: side -> raw modality name -> {"kind": text | labels | image | dense | sparse, "vocabulary": [...]
            (labels), "dim": n (dense, sparse)}: the raw content a new row may carry.
        presets: the fitted presets, in the run's order.
    """

    dataset: str
    raw: dict[str, dict[str, dict]]
    presets: list[FittedPreset]
    _encoders: dict = field(default_factory=dict, repr=False, compare=False)

    # -- describing ----------------------------------------------------------------------------------------
    def outputs(self, side: str) -> list[str]:
        """Names of the numeric modalities this side's content becomes (presets, or numeric raw modalities)."""
        names = [p.name for p in self.presets if p.side == side]
        if names:
            return names
        return [n for n, d in self.raw.get(side, {}).items() if d["kind"] in ("labels", "dense", "sparse")]

    def inputs(self, side: str, names: list[str] | None = None) -> dict[str, dict]:
        """The raw content fields that feed the given modalities (default: all of this side's outputs).

        Returns:
            raw modality name -> its description (kind, vocabulary or dim).
        """
        names = self.outputs(side) if names is None else names
        used: dict[str, dict] = {}
        by_name = {p.name: p for p in self.presets if p.side == side}
        for name in names:
            preset = by_name.get(name)
            fields = preset.inputs if preset is not None else [name]
            for raw in fields:
                if raw in self.raw.get(side, {}) and (preset is None or not preset.needs_vector):
                    used[raw] = self.raw[side][raw]
        return used

    # -- transforming ----------------------------------------------------------------------------------------
    def transform(self, side: str, rows: list[dict], names: list[str] | None = None,
                  vectors: dict[str, np.ndarray] | None = None) -> tuple[dict[str, Any], dict]:
        """Numeric modalities of new rows, computed exactly as training computed them.

        Args:
            side: "item" or "user".
            rows: one dict per new entity with optional keys "text" {name: str}, "labels" {name: [str]},
                "numbers" {name: float or [float]}, "images" {name: bytes}; names are raw modality names.
            names: the modalities wanted (a model's `spec_.names`; default: every output of the side).
            vectors: modality name -> float [n, dim] given as is (a precomputed feature vector); it replaces
                the transformation for that modality.

        Returns:
            (modality name -> Dense / Sparse / MultiLabel for `model.item_embeddings`, a report with
            "unknown_labels" {name: [label]} and "missing" [modality names without any content]).

        Raises:
            DataError: a field of the wrong type or width, an unknown field name.
        """
        if side not in SIDES:
            raise DataError(f"side must be item or user, got {side!r}", field="side")
        n = len(rows)
        names = self.outputs(side) if names is None else list(names)
        vectors = dict(vectors or {})
        mini, report = self._mini_dataset(side, rows)
        by_name = {p.name: p for p in self.presets if p.side == side}
        out: dict[str, Any] = {}
        for name in names:
            if name in vectors:
                out[name] = _vector_modality(name, vectors.pop(name), n)
                continue
            preset = by_name.get(name)
            if preset is None:
                if name in mini[side]:
                    out[name] = mini[side][name]
                continue
            if preset.needs_vector:
                report["missing"].append(name)  # no raw form for a new row: missing content, as documented
                continue
            content = get_preset(mini["ns"], preset.spec).gather(mini["ns"], None)
            values, mask = TRANSFORMS[preset.extractor](self, preset, content)
            out[name] = Extracted(values, mask).modality()
        if vectors:
            raise DataError(f"unknown modality {sorted(vectors)[0]!r} for a vector (have: {', '.join(names)})",
                            field="vectors")
        return out, report

    def _mini_dataset(self, side: str, rows: list[dict]) -> tuple[dict, dict]:
        """A one-off dataset holding the new rows' raw content with the training vocabularies."""
        n = len(rows)
        known = self.raw.get(side, {})
        for pos, row in enumerate(rows):
            for key, given in row.items():
                if key not in ("text", "labels", "numbers", "images"):
                    raise DataError(f"unknown content kind {key!r} (use text, labels, numbers, images)",
                                    field=f"rows[{pos}]")
                for name in given or {}:
                    want = {"text": "text", "labels": "labels", "numbers": "dense", "images": "image"}[key]
                    if name not in known:
                        raise DataError(f"unknown {side} field {name!r} (have: {', '.join(known) or 'none'})",
                                        field=f"{key}.{name}")
                    if known[name]["kind"] != want:
                        raise DataError(f"{name!r} is {known[name]['kind']} content, not {want}", field=f"{key}.{name}")
        feats: dict[str, Any] = {}
        unknown: dict[str, list[str]] = {}
        for name, desc in known.items():
            kind = desc["kind"]
            if kind == "text":
                texts = [(row.get("text") or {}).get(name) or "" for row in rows]
                if not all(isinstance(t, str) for t in texts):
                    raise DataError("text must be a string", field=f"text.{name}")
                feats[name] = Text(texts)
            elif kind == "labels":
                vocab = desc["vocabulary"]
                lists = [list((row.get("labels") or {}).get(name) or []) for row in rows]
                if not all(isinstance(lab, str) for row in lists for lab in row):
                    raise DataError("labels must be strings", field=f"labels.{name}")
                index = set(vocab)
                missing = sorted({lab for row in lists for lab in row if lab not in index})
                if missing:
                    unknown[name] = missing
                feats[name] = MultiLabel.from_lists(lists, vocabulary=vocab)
            elif kind == "dense":
                dim = desc["dim"]
                values = np.zeros((n, dim), np.float32)
                present = np.zeros(n, bool)
                for r, row in enumerate(rows):
                    value = (row.get("numbers") or {}).get(name)
                    if value is None:
                        continue
                    arr = np.asarray(value, np.float64).reshape(-1)
                    if arr.shape != (dim,) or not np.isfinite(arr).all():
                        raise DataError(f"expected {dim} finite number(s)", field=f"numbers.{name}")
                    values[r], present[r] = arr, True
                feats[name] = Dense(values, None if present.all() else present)
            elif kind == "image":
                feats[name] = UploadedImages([(row.get("images") or {}).get(name) for row in rows])
        ns = SimpleNamespace(name=self.dataset, item_features=feats if side == "item" else {},
                             user_features=feats if side == "user" else {}, interaction_features={},
                             n_items=n if side == "item" else 0, n_users=n if side == "user" else 0)
        return {"ns": ns, side: feats}, {"unknown_labels": unknown, "missing": []}

    def warm_up(self, side: str = "item", names: list[str] | None = None) -> None:
        """Load the encoders the given modalities need (sentence model, EfficientNet) now, not on the first row."""
        from coldstart.features.image import ImageEncoder
        from coldstart.features.text import SentenceEncoder

        names = self.outputs(side) if names is None else names
        for preset in self.presets:
            if preset.side != side or preset.name not in names:
                continue
            if preset.extractor == "sentence":
                model, size = preset.settings["model"], preset.settings["batch_size"]
                self.encoder(f"sentence:{model}", lambda: SentenceEncoder(model, size))._load()
            elif preset.extractor == "image":
                self.encoder("image", lambda: ImageEncoder(preset.settings["batch_size"]))._load()

    def encoder(self, key: str, factory: Callable[[], Any]) -> Any:
        """A cached encoder (sentence model, EfficientNet): loaded once per FittedFeatures."""
        if key not in self._encoders:
            self._encoders[key] = factory()
        return self._encoders[key]

    # -- persistence -----------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write fitted.json and fitted.npz into `folder`, atomically (a temporary folder renamed into place)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            meta = {"format": FORMAT, "dataset": self.dataset, "raw": self.raw,
                    "presets": [{"spec": p.spec, "name": p.name, "side": p.side, "extractor": p.extractor,
                                 "settings": p.settings, "inputs": p.inputs, "state": p.state,
                                 "arrays": sorted(p.arrays)} for p in self.presets]}
            (tmp / "fitted.json").write_text(json.dumps(meta) + "\n")
            arrays = {f"{i}.{k}": v for i, p in enumerate(self.presets) for k, v in p.arrays.items()}
            with open(tmp / "fitted.npz", "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o755)
            if folder.exists():
                old = folder.with_name(f".{folder.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(folder, old)
                os.replace(tmp, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "FittedFeatures":
        """Read a `features/` folder written by `save`.

        Raises:
            DataError: a missing or damaged file, or an unknown format.
        """
        folder = Path(folder)
        path = folder / "fitted.json"
        if not path.exists():
            raise DataError("missing fitted.json (a run from before fitted presets were saved: "
                            "see coldstart.features.fitted.fit_features)", path=folder)
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno) from exc
        if meta.get("format") != FORMAT:
            raise DataError(f"unknown format {meta.get('format')!r} (expected {FORMAT})", path=path, field="format")
        with np.load(folder / "fitted.npz", allow_pickle=False) as npz:
            stored = {k: npz[k] for k in npz.files}
        presets = [FittedPreset(p["spec"], p["name"], p["side"], p["extractor"], p["settings"], p["inputs"],
                                p["state"], {k: stored[f"{i}.{k}"] for k in p["arrays"]})
                   for i, p in enumerate(meta["presets"])]
        return cls(meta["dataset"], meta["raw"], presets)


class UploadedImages(Image):
    """An Image modality over bytes held in memory (new items' uploads), read by the same encoder as training."""

    def __init__(self, blobs: list[bytes | None]) -> None:
        super().__init__([None if b is None else str(r) for r, b in enumerate(blobs)], Path("<upload>"))
        self.blobs = blobs

    def read_bytes(self, row: int) -> bytes | None:
        return self.blobs[row]

    def validate(self, name: str, row_ids: np.ndarray | None = None) -> None:
        """In-memory bytes have no source folder to check."""


def _vector_modality(name: str, value, n: int) -> Dense:
    arr = np.asarray(value, np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] != n or not np.isfinite(arr).all():
        raise DataError(f"expected {n} finite row(s), got shape {arr.shape}", field=f"vectors.{name}")
    return Dense(arr)


# ---- fitting -------------------------------------------------------------------------------------------------

class _Recorder(dict):
    """A modality dict that records which names a gather function reads."""

    def __init__(self, data: dict, used: list[str]) -> None:
        super().__init__(data)
        self.used = used

    def _note(self, key) -> None:
        if key not in self.used:
            self.used.append(key)

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        self._note(key)
        return super().__contains__(key)

    def get(self, key, default=None):
        self._note(key)
        return super().get(key, default)


def describe_raw(features: dict) -> dict[str, dict]:
    """name -> {"kind", "vocabulary" / "dim"} of a side's raw modalities."""
    out: dict[str, dict] = {}
    for name, mod in features.items():
        if isinstance(mod, Text):
            out[name] = {"kind": "text"}
        elif isinstance(mod, MultiLabel):
            out[name] = {"kind": "labels", "vocabulary": [str(v) for v in mod.vocabulary]}
        elif isinstance(mod, Image):
            out[name] = {"kind": "image"}
        elif isinstance(mod, Dense):
            out[name] = {"kind": "dense", "dim": int(mod.dim)}
        elif isinstance(mod, Sparse):
            out[name] = {"kind": "sparse", "dim": int(mod.dim)}
    return out


def fit_features(dataset, specs: list[str], train=None) -> FittedFeatures:
    """Fit the run's presets on the raw dataset, as `with_features` extracts them.

    Args:
        dataset: the raw Dataset (before `with_features`).
        specs: the run's preset names or generic specs.
        train: the split's training part (only presets built from interactions read it).

    Returns:
        The FittedFeatures (raw modality descriptions and every preset's fitted state).
    """
    presets = []
    for spec in specs:
        preset = get_preset(dataset, spec)
        used: list[str] = []
        view = SimpleNamespace(name=dataset.name, item_features=_Recorder(dataset.item_features, used),
                               user_features=_Recorder(dataset.user_features, used),
                               interaction_features=dataset.interaction_features, users=dataset.users,
                               items=dataset.items, n_items=dataset.n_items, n_users=dataset.n_users)
        if preset.needs_train and train is None:
            raise DataError(f"preset {preset.name!r} is built from training interactions: give the train part",
                            field="preset")
        content = preset.gather(view, train)
        fitted = FittedPreset(spec, preset.name, preset.side, preset.extractor, dict(preset.settings), used)
        fitter = FITTERS.get(preset.extractor)
        if fitter is not None:
            fitter(fitted, content)
        presets.append(fitted)
    raw = {"item": describe_raw(dataset.item_features), "user": describe_raw(dataset.user_features)}
    return FittedFeatures(dataset.name, raw, presets)


def _fit_tfidf(fitted: FittedPreset, documents) -> None:
    """TF-IDF as text.tfidf fits it (same settings, same SVD seed), keeping the vocabulary, idf and components."""
    from sklearn.feature_extraction.text import TfidfTransformer, TfidfVectorizer

    min_df = fitted.settings.get("min_df", 1)
    if sp.issparse(documents):
        counts = sp.csr_matrix(documents, dtype=np.float32)
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        keep = np.flatnonzero(df >= min_df)
        transformer = TfidfTransformer(sublinear_tf=True)
        weights = transformer.fit_transform(counts[:, keep])
        fitted.arrays["keep"] = keep.astype(np.int64)
        fitted.state["input"] = "counts"
    else:
        vectorizer = TfidfVectorizer(min_df=min_df, stop_words="english", sublinear_tf=True, dtype=np.float32)
        try:
            weights = vectorizer.fit_transform(documents)
        except ValueError as exc:
            raise DataError(f"no terms to weight ({exc})", field="documents") from exc
        terms = vectorizer.get_feature_names_out()
        fitted.state["terms"] = [str(t) for t in terms]
        transformer = vectorizer
        fitted.state["input"] = "text"
    fitted.arrays["idf"] = np.asarray(transformer.idf_, np.float64)
    svd_dim = fitted.settings.get("svd_dim")
    if svd_dim is None:
        return
    from sklearn.decomposition import TruncatedSVD

    weights = sp.csr_matrix(weights, dtype=np.float32)
    dim = min(svd_dim, weights.shape[1] - 1, weights.shape[0] - 1)
    if dim < 1:
        raise DataError(f"too few terms ({weights.shape[1]}) or rows ({weights.shape[0]}) for SVD", field="svd_dim")
    svd = TruncatedSVD(n_components=dim, random_state=0)  # text.tfidf's seed: the same components
    svd.fit(weights)
    fitted.arrays["components"] = svd.components_.astype(np.float32)  # [dim, V]


def _fit_tabular(fitted: FittedPreset, blocks: list) -> None:
    """Per block: the kept label columns, the numbers' mean and std, the category vocabulary."""
    kinds = []
    for b, (kind, *spec) in enumerate(blocks):
        kinds.append(kind)
        if kind == "labels":
            labels = spec[0]
            _, names = tabular.multi_hot(labels, top_n=spec[1], min_count=spec[2])
            index = {lab: j for j, lab in enumerate(labels.vocabulary)}
            fitted.arrays[f"keep{b}"] = np.array([index[n] for n in names], np.int64)
        elif kind == "number":
            mean, std = _number_stats(spec[0].values, spec[0].mask)
            fitted.arrays[f"mean{b}"], fitted.arrays[f"std{b}"] = mean, std
        else:
            _, vocab = tabular.one_hot(spec[0])
            fitted.state[f"vocabulary{b}"] = list(vocab)
    fitted.state["blocks"] = kinds


def _fit_labels(fitted: FittedPreset, indicator) -> None:
    """The label-indicator preset keeps its columns as they are: nothing to fit."""


def _number_stats(values: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], std [D]) over present cells: exactly the statistics tabular.standardize uses."""
    from coldstart.features.tabular import column_stats

    return column_stats(values, mask)[2:]


FITTERS: dict[str, Callable[[FittedPreset, Any], None]] = {"tfidf": _fit_tfidf, "tabular": _fit_tabular,
                                                           "labels": _fit_labels}


# ---- transforming ----------------------------------------------------------------------------------------------

def _transform_sentence(owner: FittedFeatures, preset: FittedPreset, texts: list[str]):
    from coldstart.features.text import SentenceEncoder

    settings = preset.settings
    encoder = owner.encoder(f"sentence:{settings['model']}",
                            lambda: SentenceEncoder(settings["model"], settings["batch_size"]))
    return encoder.encode(texts)


def _transform_image(owner: FittedFeatures, preset: FittedPreset, images: Image):
    from coldstart.features.image import ImageEncoder

    encoder = owner.encoder("image", lambda: ImageEncoder(preset.settings["batch_size"]))
    values, mask, unreadable = encoder.encode(images)
    if unreadable:
        raise DataError(f"unreadable image in row(s) {unreadable}", field=preset.inputs[0] if preset.inputs else "image")
    return values, mask


def _transform_tfidf(owner: FittedFeatures, preset: FittedPreset, documents):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    if preset.state["input"] == "counts":
        counts = sp.csr_matrix(documents, dtype=np.float32)[:, preset.arrays["keep"]]
    else:
        vocab = {t: j for j, t in enumerate(preset.state["terms"])}
        counts = CountVectorizer(vocabulary=vocab, stop_words="english", dtype=np.float32).transform(documents)
    counts = sp.csr_matrix(counts, dtype=np.float64)
    counts.data = np.log(counts.data) + 1.0  # sublinear_tf
    weights = normalize(counts @ sp.diags(preset.arrays["idf"]), norm="l2")  # TfidfTransformer's formula
    weights = sp.csr_matrix(weights, dtype=np.float32)
    mask = np.diff(weights.indptr) > 0
    if "components" not in preset.arrays:
        return weights, mask
    dense = np.asarray(weights @ preset.arrays["components"].T, np.float32)  # [n, dim]
    dense[~mask] = 0.0
    return dense, mask


def _transform_tabular(owner: FittedFeatures, preset: FittedPreset, blocks: list):
    parts, scale = [], []
    for b, (kind, *spec) in enumerate(blocks):
        if kind == "labels":
            mat = sp.csr_matrix(spec[0].values)
            parts.append((mat[:, preset.arrays[f"keep{b}"]] > 0).astype(np.float32).toarray())
        elif kind == "number":
            values = np.asarray(spec[0].values, np.float64)
            values = values[:, None] if values.ndim == 1 else values
            present = np.isfinite(values)
            if spec[0].mask is not None:
                present &= np.asarray(spec[0].mask, bool)[:, None]
            mean, std = preset.arrays[f"mean{b}"], preset.arrays[f"std{b}"]
            centred = np.where(present, values - mean, 0.0)
            parts.append((centred / np.where(std > 0, std, 1.0)).astype(np.float32))
        else:
            parts.append(tabular.one_hot(spec[0], preset.state[f"vocabulary{b}"])[0])
        scale.append(kind != "number")
    values = tabular.concat_blocks(parts, scale)
    return values, np.abs(values).sum(axis=1) > 0


TRANSFORMS: dict[str, Callable[[FittedFeatures, FittedPreset, Any], tuple]] = {
    "sentence": _transform_sentence, "image": _transform_image, "tfidf": _transform_tfidf,
    "tabular": _transform_tabular,
}


def load_or_fit(run_dir: str | Path, dataset_loader: Callable[[], Any] | None = None) -> FittedFeatures:
    """A run's fitted features: `features/` when present, else refitted from the raw dataset (logged loudly).

    Runs written before fitted presets were saved have no `features/`; the presets are deterministic functions
    of the dataset and the training split, so refitting them gives the same transformation.

    Args:
        run_dir: the run directory.
        dataset_loader: returns the raw Dataset (the run's dataset); needed only for a refit.
    """
    run_dir = Path(run_dir)
    if (run_dir / "features" / "fitted.json").exists():
        return FittedFeatures.load(run_dir / "features")
    if dataset_loader is None:
        raise DataError("the run has no features/ folder and no dataset was given to refit its presets",
                        path=run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    log.warning("%s has no features/ (written before fitted presets were saved): refitting %s from the dataset",
                run_dir, ", ".join(config.get("features") or []) or "the raw modality descriptions")
    dataset = dataset_loader()
    train = None
    if any(get_preset(dataset, s).needs_train for s in config.get("features") or []):
        from coldstart.data.splits import Split

        train = Split.load(run_dir / "split", dataset=dataset).train
    return fit_features(dataset, config.get("features") or [], train)
