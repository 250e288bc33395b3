"""Match the items of two catalogues by normalised title and release year (e.g. ml-1m films to ml-100k films).

GIR (KDD'24) Table 9's last row scores the films of one dataset with content towers trained on another; the
films both catalogues hold must be known to say which target films the source model has seen. MovieLens has no
shared film id across releases, so films are matched by a key:

    key = (normalise(title), year)

`normalise` lower-cases, strips accents, moves a trailing article back to the front ("Usual Suspects, The" ->
"the usual suspects"), drops alternative titles in parentheses ("Seven (Se7en)" -> "seven"; "Postino, Il (The
Postman)" -> "il postino"), and keeps letters and digits only. A year in the title ("Toy Story (1995)", as
ml-100k writes them) is taken from there when no year is given. A key that two films of one catalogue share
(ml-100k lists 18 films twice under two ids) is the same film, so every such row matches: the result may
pair one film with several ids. The year in a title wins over a separate year field, because ml-100k's field is
the video release date ("Hard Eight (1996)" has 1997 there).

`source_rows` turns the pairs into one source row per target item (-1: no match) and `take_rows` gives the
target items the source's content modalities row by row, "no content" where nothing matched (gir's
`content_from` / `towers_from`, docs/models/gir.md).
"""

from __future__ import annotations

import logging
import re
import unicodedata

import numpy as np
import pandas as pd
import scipy.sparse as sp

from coldstart.data.dataset import Dataset
from coldstart.data.modalities import Dense, Image, MultiLabel, Sparse, Text
from coldstart.errors import DataError

log = logging.getLogger("coldstart")

_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_PAREN = re.compile(r"\s*\([^()]*\)")
_ARTICLES = ("the", "a", "an", "la", "le", "les", "l'", "il", "el", "los", "las", "das", "der", "die", "lo", "i")
_TRAILING_ARTICLE = re.compile(r"^(.*),\s*(" + "|".join(re.escape(a) for a in _ARTICLES) + r")$", re.IGNORECASE)


def split_year(title: str) -> tuple[str, int | None]:
    """("Toy Story", 1995) from "Toy Story (1995)"; (title, None) when it ends in no 4-digit year."""
    found = _YEAR.search(title)
    if not found:
        return title, None
    return title[: found.start()], int(found.group(1))


def normalise_title(title: str) -> str:
    """The comparable form of a film title (see the module docstring); '' when nothing is left."""
    text, _ = split_year(title.strip())
    text = _PAREN.sub("", text).strip()  # alternative / original titles in parentheses
    moved = _TRAILING_ARTICLE.match(text)
    if moved:
        article = moved.group(2)
        text = f"{article}{'' if article.endswith(chr(39)) else ' '}{moved.group(1)}"
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.replace("&", " and ")
    return " ".join(re.findall(r"[a-z0-9]+", text))


def title_keys(titles: list[str], years: np.ndarray | None = None) -> list[tuple[str, int | None]]:
    """(normalised title, year) per film; `years` (float [n], NaN or None: unknown) count where a title has none."""
    keys = []
    for k, title in enumerate(titles):
        _, in_title = split_year(title or "")
        year = in_title
        if year is None and years is not None and np.isfinite(years[k]) and years[k] > 0:
            year = int(round(float(years[k])))
        keys.append((normalise_title(title or ""), year))
    return keys


def match_titles(source_titles: list[str], target_titles: list[str], source_years: np.ndarray | None = None,
                 target_years: np.ndarray | None = None) -> pd.DataFrame:
    """Pairs (source row, target row) whose (normalised title, year) keys are equal.

    A film without a year or with an empty normalised title matches nothing.

    Returns:
        DataFrame with int64 columns `source` and `target` (row positions) and the str column `title`
        (the normalised title), ordered by source then target row.
    """
    frames = []
    for titles, years in ((source_titles, source_years), (target_titles, target_years)):
        keys = title_keys(list(titles), years)
        frame = pd.DataFrame({"title": [k[0] for k in keys], "year": [k[1] for k in keys]})
        frame["row"] = np.arange(len(frame), dtype=np.int64)
        frame = frame[(frame["title"] != "") & frame["year"].notna()]
        frames.append(frame)
    pairs = frames[0].merge(frames[1], on=["title", "year"], suffixes=("_source", "_target"))
    out = pd.DataFrame({"source": pairs["row_source"].to_numpy(np.int64), "target": pairs["row_target"].to_numpy(np.int64),
                        "title": pairs["title"].to_numpy(str)})
    return out.sort_values(["source", "target"], kind="stable").reset_index(drop=True)


def _titles_and_years(dataset: Dataset) -> tuple[list[str], np.ndarray | None]:
    title = dataset.item_features.get("title")
    if not isinstance(title, Text):
        raise DataError(f"{dataset.name} has no item title text to match on", field="item_features.title")
    year = dataset.item_features.get("year")
    years = None
    if isinstance(year, Dense) and year.values.shape[1] == 1:
        years = year.values[:, 0].astype(np.float64)
        if year.mask is not None:
            years = np.where(year.mask, years, np.nan)
    return list(title.texts), years


def match_items(source: Dataset, target: Dataset) -> pd.DataFrame:
    """Items of `source` and `target` that are the same film, by (normalised title, year).

    Both datasets need the raw `title` Text modality (the MovieLens loaders keep it; `year` is used when
    present, else a year at the end of the title).

    Returns:
        DataFrame with columns source_item, target_item (indices), source_id, target_id (raw ids) and title.
    """
    source_titles, source_years = _titles_and_years(source)
    target_titles, target_years = _titles_and_years(target)
    pairs = match_titles(source_titles, target_titles, source_years, target_years)
    return pd.DataFrame({"source_item": pairs["source"], "target_item": pairs["target"],
                         "source_id": source.item_ids[pairs["source"].to_numpy()],
                         "target_id": target.item_ids[pairs["target"].to_numpy()], "title": pairs["title"]})


def source_rows(matches: pd.DataFrame, n_target: int) -> np.ndarray:
    """The source item of each target item under `match_items`' pairs, -1 where none matched.

    A target film that several source rows match (a catalogue listing one film twice) takes the lowest-numbered
    source row, so the choice does not depend on the order of the pairs.

    Returns:
        int64 [n_target].
    """
    rows = np.full(n_target, -1, dtype=np.int64)
    if len(matches):
        first = matches.groupby("target_item", sort=False)["source_item"].min()  # [targets that match]
        rows[first.index.to_numpy(np.int64)] = first.to_numpy(np.int64)
    return rows


def take_rows(features: dict, rows: np.ndarray) -> dict:
    """Every modality's row `rows[t]` for target item t, and "no content" where rows[t] == -1.

    No content is what each modality already uses for an item without it: an empty text, no image reference, no
    labels, a Dense row with mask False (zeros underneath). A Sparse matrix has no mask, so an unmatched row is
    an all-zero row there, which a model without a missing-content flag reads as content (logged when it happens).

    Args:
        features: name -> modality, row-aligned with the source items.
        rows: int64 [n_target], a source row per target item or -1 (`source_rows`).

    Returns:
        name -> modality, row-aligned with the target items.
    """
    rows = np.asarray(rows, dtype=np.int64)
    missing = rows < 0  # [n_target]
    out = {}
    for name, mod in features.items():
        if missing.all():
            safe = np.zeros(len(rows), np.int64)
            if mod.n_rows == 0:
                raise DataError("the source has no rows to take content from", field=name)
        else:
            safe = np.where(missing, rows[~missing][0], rows)  # any valid row, blanked below
        if isinstance(mod, Dense):
            values = np.asarray(mod.values)[safe].copy()  # [n_target, w]
            values[missing] = 0.0
            present = np.ones(len(rows), bool) if mod.mask is None else np.asarray(mod.mask, bool)[safe]
            out[name] = Dense(values, present & ~missing)
        elif isinstance(mod, (Sparse, MultiLabel)):
            keep = sp.diags((~missing).astype(np.float32))  # zero the unmatched rows, sparsity kept
            values = sp.csr_matrix(keep @ sp.csr_matrix(mod.values)[safe], dtype=mod.values.dtype)
            values.eliminate_zeros()
            out[name] = type(mod)(values, mod.vocabulary)
            if isinstance(mod, Sparse) and missing.any():
                log.warning("modality %r is sparse and has no missing-content flag: %d unmatched items get an "
                            "all-zero row", name, int(missing.sum()))
        elif isinstance(mod, Text):
            texts = np.asarray(mod.texts, dtype=object)[safe]
            texts[missing] = ""
            out[name] = Text(texts.tolist())
        elif isinstance(mod, Image):
            refs = np.asarray(mod.refs, dtype=object)[safe]
            refs[missing] = None
            out[name] = Image(refs.tolist(), mod.source)
        else:
            raise DataError(f"modality of type {type(mod).__name__} cannot be mapped", field=name)
    return out
