"""Feature presets: which raw content each dataset's named modality is built from, and with which extractor.

A preset reads content from a Dataset (`gather`), and an extractor turns it into one matrix (`EXTRACTORS`).
The gathered content is exactly what is hashed into the cache key, so anything that changes the output changes
the key. Besides the named presets of the built-in datasets, any dataset accepts generic specs:

    sentence:<text modality>[+<text modality>...]   sentence embeddings of the texts joined by ". "
    tfidf:<text or label modality>[@<svd dim>]      TF-IDF (optionally reduced by SVD)
    image:<image modality>                          EfficientNet-Lite0 pooled features
    multihot:<label modality>[+<label modality>...] multi-hot blocks, each scaled to unit norm per row
    onehot:<modality>[+<modality>...]               one-hot of each row's value: labels of a MultiLabel, the text
                                                    of a Text (e.g. ml-100k's zip), the number of a one-column Dense

A `user:` prefix builds the modality from user modalities instead (user cold start): `user:tfidf:zip@16`,
`user:onehot:occupation+gender`, `user:multihot:occupation`, `user:sentence:bio`. The output is a user modality
named like the item one (e.g. meta_occupation), which the user-side models read (models/user_content.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from coldstart.data.dataset import Dataset
from coldstart.data.modalities import Dense, Image, MultiLabel, Sparse, Text
from coldstart.errors import DataError
from coldstart.features import tabular
from coldstart.features.text import DEFAULT_SENTENCE_MODEL


@dataclass
class Extracted:
    """One extraction: values (float32 [N, D] or CSR), mask (bool [N], False = no content) and a report dict."""

    values: np.ndarray | sp.csr_matrix
    mask: np.ndarray | None
    report: dict = field(default_factory=dict)

    def modality(self) -> Dense | Sparse:
        if sp.issparse(self.values):
            return Sparse(sp.csr_matrix(self.values, dtype=np.float32))
        mask = None if self.mask is None or self.mask.all() else self.mask
        return Dense(np.asarray(self.values, np.float32), mask)


@dataclass(frozen=True)
class Preset:
    """A named modality and how to build it.

    Attributes:
        name: the output modality's name (its first word tells CLCRec's has_v / has_t switches its kind).
        side: "item" or "user".
        description: one line for `coldstart features --list` and the docs.
        extractor: a key of EXTRACTORS.
        settings: the extractor's settings (part of the cache key).
        gather: (dataset, train interactions or None) -> the content the extractor reads.
        needs_train: the content depends on the split's training interactions (review text).
    """

    name: str
    side: str
    description: str
    extractor: str
    settings: dict
    gather: Callable[[Dataset, Any], Any]
    needs_train: bool = False


# ---- content gatherers -------------------------------------------------------------------------------------

def _modality(dataset: Dataset, name: str, kinds: tuple[type, ...], side: str = "item"):
    feats = dataset.item_features if side == "item" else dataset.user_features
    if name not in feats:
        raise DataError(f"{dataset.name} has no {side} modality {name!r} (have: {', '.join(feats) or 'none'})",
                        field="preset")
    mod = feats[name]
    if not isinstance(mod, kinds):
        want = " or ".join(k.__name__ for k in kinds)
        raise DataError(f"{side} modality {name!r} is {type(mod).__name__}, expected {want}", field="preset")
    return mod


def _joined_texts(dataset: Dataset, names: list[str], side: str = "item") -> list[str]:
    """Per row, the non-empty texts of the given Text modalities joined by ". "."""
    columns = [_modality(dataset, n, (Text,), side).texts for n in names]
    return [". ".join(t.strip() for t in row if t and t.strip()) for row in zip(*columns)]


def _labels_sentence(labels: MultiLabel, prefix: str) -> list[str]:
    """Per row, "<prefix>: a, b, c" (or "" when the row has no label)."""
    mat = sp.csr_matrix(labels.values)
    vocab = np.asarray(labels.vocabulary, dtype=object)
    return [f"{prefix}: {', '.join(vocab[mat.indices[a:b]])}" if b > a else ""
            for a, b in zip(mat.indptr[:-1], mat.indptr[1:])]


def _join(*columns: list[str]) -> list[str]:
    return [". ".join(t for t in row if t) for row in zip(*columns)]


def _train_rows(dataset: Dataset, train) -> np.ndarray:
    """int64 [T]: the dataset row (interaction) of each training interaction."""
    keys = dataset.users.astype(np.int64) * dataset.n_items + dataset.items  # (user, item) pairs are unique
    train_keys = np.asarray(train.users, np.int64) * dataset.n_items + np.asarray(train.items, np.int64)
    order = np.argsort(keys, kind="stable")
    pos = order[np.minimum(np.searchsorted(keys, train_keys, sorter=order), len(keys) - 1)]
    if not np.array_equal(keys[pos], train_keys):
        raise DataError("the training interactions are not interactions of this dataset", field="train")
    return pos


def _train_reviews(dataset: Dataset, train) -> tuple[list[str], np.ndarray, int]:
    """(review texts, item index per review, number of items) of the training interactions only."""
    reviews = dataset.interaction_features.get("review")
    if not isinstance(reviews, Text):
        raise DataError(f"{dataset.name} has no per-interaction review text", field="preset")
    pos = _train_rows(dataset, train)
    return [reviews.texts[r] for r in pos], dataset.items[pos], dataset.n_items


def _train_tags(dataset: Dataset, train) -> MultiLabel:
    """MultiLabel [I, V]: each item's tags, put on it in training interactions only; the vocabulary is the tags
    of those interactions, so not even a tag's name comes from a held-out pair."""
    tags = dataset.interaction_features.get("tags")
    if not isinstance(tags, MultiLabel):
        raise DataError(f"{dataset.name} has no per-interaction tags", field="preset")
    pos = _train_rows(dataset, train)
    pool = sp.csr_matrix((np.ones(len(pos), np.float32), (dataset.items[pos], np.arange(len(pos)))),
                         shape=(dataset.n_items, len(pos)))  # [I, T]: gathers each item's training rows
    per_item = sp.csr_matrix(pool @ tags.values[pos])  # [I, V]: how often each tag was put on the item
    used = np.flatnonzero(np.asarray(per_item.sum(axis=0)).ravel() > 0)
    per_item = sp.csr_matrix(per_item[:, used])
    per_item.data[:] = 1.0  # an indicator, like the item-level tag lists of the other datasets
    return MultiLabel(per_item, [tags.vocabulary[j] for j in used])


def _blocks(*specs) -> Callable[[Dataset, Any], list]:
    """A gatherer of tabular blocks, one per spec:

        ("labels", name, top_n, min_count)   multi-hot of a MultiLabel modality
        ("number", name)                      a Dense modality, standardised
        ("category", name, to_strings)        one-hot of one category string per row, from (dataset, side, name)

    Names are item modalities, or "user.<name>" for user modalities.
    """
    def gather(dataset: Dataset, train) -> list:
        out = []
        for spec in specs:
            kind, name = spec[0], spec[1]
            side, _, bare = name.rpartition(".")
            side = side or "item"
            if kind == "labels":
                out.append(("labels", _modality(dataset, bare, (MultiLabel,), side), spec[2], spec[3]))
            elif kind == "number":
                out.append(("number", _modality(dataset, bare, (Dense,), side)))
            else:  # category: a transform of a column to one category string per row
                out.append(("category", spec[2](dataset, side, bare)))
        return out
    return gather


def _age_categories(dataset: Dataset, side: str, name: str) -> list[str]:
    mod = _modality(dataset, name, (Dense, MultiLabel), side)
    if isinstance(mod, MultiLabel):  # already bucketed (ML-1M)
        return [",".join(mod.labels(r)) for r in range(mod.n_rows)]
    values = mod.values[:, 0].astype(np.float64)
    if mod.mask is not None:
        values = np.where(mod.mask, values, np.nan)
    return tabular.age_bucket(values)


def _label_categories(dataset: Dataset, side: str, name: str) -> list[str]:
    mod = _modality(dataset, name, (MultiLabel,), side)
    return [",".join(mod.labels(r)) for r in range(mod.n_rows)]


def _zip_categories(dataset: Dataset, side: str, name: str) -> list[str]:
    return tabular.zip_prefix(_modality(dataset, name, (Text,), side).texts, digits=1)


DEMOGRAPHICS = _blocks(("category", "user.age", _age_categories), ("category", "user.gender", _label_categories),
                       ("category", "user.occupation", _label_categories), ("category", "user.zip", _zip_categories))

SENTENCE = {"model": DEFAULT_SENTENCE_MODEL, "batch_size": 64}

# ---- the named presets -------------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Preset]] = {
    "ml-1m": {
        "visual": Preset("visual", "item", "poster -> EfficientNet-Lite0 ImageNet features (1280-d)", "image",
                         {"batch_size": 32}, lambda ds, tr: _modality(ds, "poster", (Image,))),
        "textual": Preset("textual", "item", "title + plot -> all-MiniLM-L6-v2 sentence embedding (384-d)", "sentence",
                          SENTENCE, lambda ds, tr: _joined_texts(ds, ["title", "plot"])),
        "textual_tfidf": Preset("textual_tfidf", "item", "title + plot -> TF-IDF -> SVD (128-d); no extra needed",
                                "tfidf", {"svd_dim": 128, "min_df": 2},
                                lambda ds, tr: _joined_texts(ds, ["title", "plot"])),
        "meta": Preset("meta", "item", "genres, director (>= 2 films), top-1000 actors (>= 2 films), MPAA, year",
                       "tabular", {}, _blocks(("labels", "genres", None, 1), ("labels", "director", None, 2),
                                              ("labels", "actors", 1000, 2), ("labels", "mpaa", None, 1),
                                              ("number", "year"))),
        "demographics": Preset("demographics", "user", "gender, age bucket, occupation, first ZIP digit (one-hot)",
                               "tabular", {}, DEMOGRAPHICS),
    },
    "ml-100k": {
        "textual": Preset("textual", "item", "title + genres -> all-MiniLM-L6-v2 sentence embedding (384-d)",
                          "sentence", SENTENCE,
                          lambda ds, tr: _join(_joined_texts(ds, ["title"]),
                                               _labels_sentence(_modality(ds, "genres", (MultiLabel,)), "Genres"))),
        "meta": Preset("meta", "item", "genres (19, multi-hot) and release year (standardised)", "tabular", {},
                       _blocks(("labels", "genres", None, 1), ("number", "year"))),
        "demographics": Preset("demographics", "user", "gender, age bucket (ML-1M's), occupation, first ZIP digit",
                               "tabular", {}, DEMOGRAPHICS),
    },
    "citeulike-a": {
        "tags": Preset("tags", "item", "tags -> TF-IDF -> SVD (300-d)", "tfidf", {"svd_dim": 300, "min_df": 1},
                       lambda ds, tr: _modality(ds, "tags", (MultiLabel,)).values),
    },
    "ml-latest-small": {
        "tags": Preset("tags", "item", "tags put on the item in training interactions (multi-hot, sparse)", "labels",
                       {}, lambda ds, tr: _train_tags(ds, tr).values, needs_train=True),
        "meta": Preset("meta", "item", "genres (multi-hot) and year (standardised)", "tabular", {},
                       _blocks(("labels", "genres", None, 1), ("number", "year"))),
    },
    "amazon-musical-instruments": {
        "reviews": Preset("reviews", "item", "mean all-MiniLM-L6-v2 embedding of the item's training reviews (384-d)",
                          "reviews", SENTENCE, _train_reviews, needs_train=True),
    },
}


def _value_categories(dataset: Dataset, side: str, name: str) -> list[str]:
    """One category string per row of any modality: its labels joined, its text, or its one number ("" = none)."""
    mod = _modality(dataset, name, (MultiLabel, Text, Dense), side)
    if isinstance(mod, MultiLabel):
        return [",".join(mod.vocabulary[j] for j in mod.values[r].indices) for r in range(mod.n_rows)]
    if isinstance(mod, Text):
        return [t.strip() for t in mod.texts]
    if mod.dim != 1:
        raise DataError(f"{side} modality {name!r} has {mod.dim} columns; onehot takes one-column numbers",
                        field="preset")
    present = np.ones(mod.n_rows, bool) if mod.mask is None else mod.mask
    return [f"{v:g}" if p else "" for v, p in zip(mod.values[:, 0], present)]


def _generic(dataset: Dataset, spec: str) -> Preset:
    match = re.fullmatch(r"(?:(user|item):)?(sentence|tfidf|image|multihot|onehot):([\w+\-.]+?)(?:@(\d+))?", spec)
    if match is None:
        known = ", ".join(PRESETS.get(dataset.name, {})) or "none"
        raise DataError(f"unknown preset {spec!r} for {dataset.name} (named presets: {known}; or [user:]kind:modality "
                        "with kind sentence, tfidf, image, multihot or onehot)", field="preset")
    side, kind, names, dim = match.group(1) or "item", match.group(2), match.group(3).split("+"), match.group(4)
    if dim is not None and kind != "tfidf":
        raise DataError(f"only tfidf takes @<svd dim>, got {spec!r}", field="preset")
    label = "_".join(names)
    prefix = "" if side == "item" else "user."  # _blocks' way of naming a user modality
    if kind == "sentence":
        return Preset(f"text_{label}", side, spec, "sentence", SENTENCE,
                      lambda ds, tr: _joined_texts(ds, names, side))
    if kind == "image":
        if len(names) != 1:
            raise DataError(f"image takes one modality, got {spec!r}", field="preset")
        return Preset(f"visual_{label}", side, spec, "image", {"batch_size": 32},
                      lambda ds, tr: _modality(ds, names[0], (Image,), side))
    if kind == "multihot":
        return Preset(f"meta_{label}", side, spec, "tabular", {},
                      _blocks(*(("labels", prefix + n, None, 1) for n in names)))
    if kind == "onehot":
        return Preset(f"onehot_{label}", side, spec, "tabular", {},
                      _blocks(*(("category", prefix + n, _value_categories) for n in names)))
    settings = {"svd_dim": None if dim is None else int(dim), "min_df": 1}

    def gather(ds: Dataset, tr):
        feats = ds.item_features if side == "item" else ds.user_features
        if len(names) == 1 and isinstance(feats.get(names[0]), (MultiLabel, Sparse)):
            return feats[names[0]].values
        return _joined_texts(ds, names, side)

    return Preset(f"text_{label}_tfidf", side, spec, "tfidf", settings, gather)


def get_preset(dataset: Dataset, name: str) -> Preset:
    """The named preset of this dataset, or a generic `kind:modality` spec.

    Raises:
        DataError: an unknown preset, listing the dataset's named presets.
    """
    named = PRESETS.get(dataset.name, {})
    if name in named:
        return named[name]
    return _generic(dataset, name)
