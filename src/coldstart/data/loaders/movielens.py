"""MovieLens loaders: ml-100k, ml-1m (with the plot / poster content extension) and ml-latest-small.

Explicit ratings become implicit feedback by `min_rating` (default 4: rating >= 4 is a positive).
The index covers the users and items with at least one positive; catalogue rows of other movies are dropped.
"""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from coldstart.data.dataset import Dataset, _sorted_ids, from_frame
from coldstart.data.modalities import Dense, Image, MultiLabel, Text
from coldstart.data.paths import fetch_zip
from coldstart.data.readers import check_duplicates, read_table, require_file, threshold
from coldstart.errors import DataError

log = logging.getLogger("coldstart")
GROUPLENS = "https://files.grouplens.org/datasets/movielens"
# MD5 of the official archives, as published beside them on the GroupLens site (<archive>.md5).
ML100K_MD5 = "0e33842e24a9c977be4e0107933c0723"
ML1M_MD5 = "c4d9eecfca2ab87c1945afe126590906"

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]


def download_ml100k() -> Path:
    """Download and unpack the official ml-100k archive into the cache (MD5-checked)."""
    return fetch_zip("ml-100k", f"{GROUPLENS}/ml-100k.zip", ML100K_MD5, "ml-100k", ("u.data", "u.item", "u.user"))


def download_ml1m() -> Path:
    """Download and unpack the official ml-1m archive into the cache (MD5-checked)."""
    return fetch_zip("ml-1m", f"{GROUPLENS}/ml-1m.zip", ML1M_MD5, "ml-1m", ("ratings.dat", "users.dat", "movies.dat"))


def download_ml_latest_small() -> Path:
    """Download ml-latest-small; its checksum is read from the .md5 file GroupLens publishes beside it,
    because the "latest" archive is regenerated over time and a pinned digest would go stale."""
    import urllib.request

    url = f"{GROUPLENS}/ml-latest-small.zip"
    with urllib.request.urlopen(url + ".md5", timeout=60) as resp:
        md5 = resp.read().decode().split()[0]
    return fetch_zip("ml-latest-small", url, md5, "ml-latest-small", ("ratings.csv", "movies.csv"))


def _year(texts: pd.Series) -> Dense:
    """A 1-column Dense of the 4-digit year found in each string (mask False where none)."""
    years = texts.str.extract(r"(\d{4})", expand=False)
    values = pd.to_numeric(years, errors="coerce").to_numpy(np.float64)
    mask = ~np.isnan(values)
    return Dense(np.nan_to_num(values).astype(np.float32)[:, None], None if mask.all() else mask)


def _split_list(values: pd.Series, sep: str) -> list[list[str]]:
    return [[p.strip() for p in v.split(sep) if p.strip()] for v in values]


def load_ml100k(root: Path, min_rating: float | None = 4) -> Dataset:
    """Load MovieLens-100K: u.data (ratings with timestamps), u.item (title, date, 19 genres), u.user.

    Args:
        root: folder with u.data, u.item, u.user.
        min_rating: ratings >= this are positives; None keeps every rating.
    """
    root = Path(root)
    data = read_table(root / "u.data", ["user", "item", "rating", "timestamp"], sep="\t",
                      numeric=("user", "item", "rating", "timestamp"))
    data = threshold(check_duplicates(data, root / "u.data", header=False), min_rating)
    item_cols = ["item", "title", "release", "video_release", "url"] + ML100K_GENRES
    items = read_table(root / "u.item", item_cols, sep="|", encoding="latin-1", numeric=("item",) + tuple(ML100K_GENRES))
    users = read_table(root / "u.user", ["user", "age", "gender", "occupation", "zip"], sep="|",
                       encoding="latin-1", numeric=("user", "age"))
    iid, uid = items["item"].astype(str).tolist(), users["user"].astype(str).tolist()
    return from_frame(
        "ml-100k", data,
        item_features={
            "genres": (iid, MultiLabel(sp.csr_matrix(items[ML100K_GENRES].to_numpy(np.float32)), ML100K_GENRES)),
            "title": (iid, Text(items["title"].tolist())),
            "year": (iid, _year(items["release"])),
        },
        user_features={
            "age": (uid, Dense(users["age"].to_numpy(np.float32)[:, None])),
            "gender": (uid, MultiLabel.from_lists([[g] for g in users["gender"]])),
            "occupation": (uid, MultiLabel.from_lists([[o] for o in users["occupation"]])),
            "zip": (uid, Text(users["zip"].tolist())),
        },
        source=str(root),
    )


def load_ml1m(root: Path, min_rating: float | None = 4) -> Dataset:
    """Load MovieLens-1M, with the content extension when its files are present.

    Interactions come from ratings.dat (the official archive, thresholded by `min_rating`) or, when that is
    absent, from implicit_ratings_ge4.csv (already rating >= 4, no timestamps). Items get genres and title
    from movies.dat; plot, director, writers, actors, MPAA and year from movies_extrainfos.dat; a poster
    per movie from posters_ml1m.zip (read straight from the zip). Users get gender, age, occupation, zip.
    """
    root = Path(root)
    if (root / "ratings.dat").exists():
        data = read_table(root / "ratings.dat", ["user", "item", "rating", "timestamp"], sep="::",
                          numeric=("user", "item", "rating", "timestamp"))
        data = threshold(check_duplicates(data, root / "ratings.dat", header=False), min_rating)
    else:
        path = require_file(root / "implicit_ratings_ge4.csv")
        data = read_table(path, ["user", "item"], header=True, numeric=("user", "item"))
        data = check_duplicates(data, path, header=True)
    movies = read_table(root / "movies.dat", ["item", "title", "genres"], sep="::", encoding="latin-1", numeric=("item",))
    users = read_table(root / "users.dat", ["user", "gender", "age", "occupation", "zip"], sep="::",
                       numeric=("user", "age", "occupation"))
    mid, uid = movies["item"].astype(str).tolist(), users["user"].astype(str).tolist()
    item_features = {
        "genres": (mid, MultiLabel.from_lists(_split_list(movies["genres"], "|"))),
        "title": (mid, Text(movies["title"].str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True).tolist())),
        "year": (mid, _year(movies["title"].str.extract(r"\((\d{4})\)\s*$", expand=False).fillna(""))),
    }
    extra_path = root / "movies_extrainfos.dat"
    if extra_path.exists():
        cols = ["item", "title", "year", "mpaa", "released", "imdb_genres", "director", "writers", "actors", "plot", "poster_url"]
        extra = read_table(extra_path, cols, sep="::", numeric=("item",))
        eid = extra["item"].astype(str).tolist()
        item_features |= {
            "plot": (eid, Text(extra["plot"].tolist())),
            "director": (eid, MultiLabel.from_lists(_split_list(extra["director"], ","))),
            "writers": (eid, MultiLabel.from_lists([[re.sub(r"\s*\(.*?\)", "", w) for w in row]
                                                    for row in _split_list(extra["writers"], ",")])),
            "actors": (eid, MultiLabel.from_lists(_split_list(extra["actors"], ","))),
            "mpaa": (eid, MultiLabel.from_lists([[m] if m and m != "N/A" else [] for m in extra["mpaa"]])),
        }
    posters = root / "posters_ml1m.zip"
    if posters.exists():
        with zipfile.ZipFile(posters) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith(".jpg")]
        ids = [Path(n).stem for n in names]
        item_features["poster"] = (ids, Image(names, posters))
    return from_frame(
        "ml-1m", data, item_features=item_features,
        user_features={
            "gender": (uid, MultiLabel.from_lists([[g] for g in users["gender"]])),
            "age": (uid, MultiLabel.from_lists([[str(a)] for a in users["age"]])),  # ML-1M ages are buckets
            "occupation": (uid, MultiLabel.from_lists([[str(o)] for o in users["occupation"]])),
            "zip": (uid, Text(users["zip"].tolist())),
        },
        source=str(root),
    )


def load_ml_latest_small(root: Path, min_rating: float | None = 4) -> Dataset:
    """Load ml-latest-small: ratings (0.5-5 stars, timestamps) with genres, title and year as item content.

    The tags in tags.csv were put on movies by the same users who rated them, so an item-level tag list built
    from every user would carry the held-out interactions into the content (57% of tagged (user, item) pairs
    are positives). They are kept per interaction instead, as `interaction_features["tags"]` (a MultiLabel row
    per interaction: the tags that user put on that movie), and the `tags` feature preset builds item tags from
    the training interactions only, after the split. Tags on pairs that are not positive interactions belong
    to no split part and are dropped (logged).
    """
    root = Path(root)
    data = read_table(root / "ratings.csv", ["user", "item", "rating", "timestamp"], header=True,
                      numeric=("user", "item", "rating", "timestamp"))
    data = threshold(check_duplicates(data, root / "ratings.csv", header=True), min_rating)
    movies = read_table(root / "movies.csv", ["item", "title", "genres"], header=True, numeric=("item",))
    mid = movies["item"].astype(str).tolist()
    genres = [[g for g in row if g != "(no genres listed)"] for row in _split_list(movies["genres"], "|")]
    item_features = {
        "genres": (mid, MultiLabel.from_lists(genres)),
        "title": (mid, Text(movies["title"].str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True).tolist())),
        "year": (mid, _year(movies["title"].str.extract(r"\((\d{4})\)\s*$", expand=False).fillna(""))),
    }
    per_interaction = {}
    if (root / "tags.csv").exists():
        per_interaction["tags"] = _interaction_tags(root / "tags.csv", data)
    return from_frame("ml-latest-small", data, item_features=item_features, source=str(root),
                      interaction_features=per_interaction)


def _interaction_tags(path: Path, data: pd.DataFrame) -> MultiLabel:
    """MultiLabel [N, V]: row r holds the tags that the user of interaction r (a row of `data`) put on its item."""
    tags = read_table(path, ["user", "item", "tag", "timestamp"], header=True, numeric=("user", "item"))
    tags["tag"] = tags["tag"].str.strip().str.lower()
    tags = tags[tags["tag"] != ""]
    pairs = pd.DataFrame({"user": data["user"].astype(str), "item": data["item"].astype(str),
                          "row": np.arange(len(data))})
    placed = tags.assign(user=tags["user"].astype(str), item=tags["item"].astype(str)).merge(
        pairs, on=["user", "item"], how="inner")  # tag applications on an interaction of `data`
    dropped = len(tags) - len(placed)
    if dropped:
        log.info("%s: %d of %d tag applications are on (user, movie) pairs that are not positive interactions; "
                 "they belong to no split part and are dropped", path, dropped, len(tags))
    vocab = sorted(placed["tag"].unique())
    cols = pd.Categorical(placed["tag"], categories=vocab).codes.astype(np.int64)
    mat = sp.csr_matrix((np.ones(len(placed), np.float32), (placed["row"].to_numpy(), cols)),
                        shape=(len(data), len(vocab)))
    mat.sum_duplicates()
    mat.data[:] = 1.0  # one tag put on the same movie twice by one user is one label
    return MultiLabel(mat, vocab)


#: MeLU's cold-start states (Lee et al., KDD'19), as distributed beside ml-1m: {user: [movie ids]} + {user: [ratings]}.
MELU_FOLDER = "melu_cold_splits"
MELU_STATES = ("user_cold_state", "user_and_item_cold_state", "item_cold_state")


def melu_state_pieces(root: Path, dataset: Dataset, state: str = "user_cold_state",
                      min_rating: float = 4) -> list[tuple[str, np.ndarray, str, bool, None]]:
    """The pieces of the `published` split source "melu": MeLU's user-cold state over an ml-1m Dataset.

    MeLU's `<state>.json` holds each cold user's rated movies and `<state>_y.json` the ratings, aligned by
    position; its warm state was not distributed with the files we have. So:

    - cold users: the state's users; their positives (rating >= `min_rating`, the dataset's own threshold)
      that the dataset holds are held out, and none of their interactions is in train (a positive of theirs
      outside MeLU's state, e.g. a movie MeLU dropped for missing metadata, is in no phase);
    - valid / test: the cold users sorted by raw id, alternately test and valid (even positions test), so the
      split is fixed by the files alone (a published split has no seed);
    - train: every interaction of every other user (they are all warm; the warm scenario has no held-out rows).

    Args:
        root: the ml-1m folder holding melu_cold_splits/.
        dataset: the loaded ml-1m Dataset (its index maps the raw ids).
        state: "user_cold_state" (the user-cold one) or another MeLU state of the same format.
        min_rating: ratings >= this are positives (ml-1m's loader default: 4).

    Returns:
        [(file for messages, raw-id pairs str [N, 2], phase, cold?, None)] as `splits.published` reads them.

    Raises:
        DataError: missing files, invalid JSON, or the two files disagreeing on a user's list length.
    """
    import json

    if state not in MELU_STATES:
        raise DataError(f"unknown MeLU state {state!r} (use {', '.join(MELU_STATES)})", field="state")
    folder = Path(root) / MELU_FOLDER
    docs = []
    for name in (f"{state}.json", f"{state}_y.json"):
        path = require_file(folder / name)
        try:
            docs.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno) from exc
    items, ratings = docs
    path = folder / f"{state}.json"
    if set(items) != set(ratings):
        odd = sorted(set(items) ^ set(ratings))[0]
        raise DataError(f"user {odd} is in only one of {state}.json and {state}_y.json", path=path, field="user")
    users, movies, values = [], [], []
    for user in items:  # one JSON object per user: a loop over users only while parsing the file
        if len(items[user]) != len(ratings[user]):
            raise DataError(f"user {user} has {len(items[user])} movies but {len(ratings[user])} ratings",
                            path=path, field=user)
        users += [str(user)] * len(items[user])
        movies += [str(m) for m in items[user]]
        values += ratings[user]
    frame = pd.DataFrame({"user": users, "item": movies, "rating": np.asarray(values, np.float64)})
    frame = frame[frame["rating"] >= min_rating]
    known = pd.MultiIndex.from_arrays([dataset.user_ids[dataset.users], dataset.item_ids[dataset.items]])
    present = known.get_indexer(pd.MultiIndex.from_arrays([frame["user"], frame["item"]])) >= 0
    if (~present).any():
        log.warning("%s: %d of %d positives are not interactions of %s (absent movies); left out", path,
                    int((~present).sum()), len(frame), dataset.name)
    frame = frame[present]
    cold_ids = _sorted_ids(np.asarray(list(items), dtype=str))
    phase_of = {u: ("test" if k % 2 == 0 else "valid") for k, u in enumerate(cold_ids)}
    frame_phase = frame["user"].map(phase_of).to_numpy()
    train_rows = ~np.isin(dataset.user_ids[dataset.users], cold_ids)
    train = np.stack([dataset.user_ids[dataset.users[train_rows]], dataset.item_ids[dataset.items[train_rows]]], 1)
    pairs = frame[["user", "item"]].to_numpy(str)
    return [(str(folder / "(train: every other user)"), train, "train", False, None),
            (str(path) + " (valid users)", pairs[frame_phase == "valid"], "valid", True, None),
            (str(path) + " (test users)", pairs[frame_phase == "test"], "test", True, None)]
