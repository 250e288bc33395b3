"""Amazon product data, 2014 edition (McAuley et al., SIGIR 2015; He and McAuley, VBPR, AAAI 2016): the format
CIERec's Amazon_CDs comes from.

A folder holds, for one category (e.g. CDs_and_Vinyl):

    ratings_<Category>.csv         user,item,rating,timestamp  (no header; item = the product's asin)
    meta_<Category>.json[.gz]      one Python dict literal per line (single quotes: read with ast.literal_eval,
                                   never eval): asin, title, price, imUrl, brand, categories [[...], ...],
                                   salesRank {...}, related {also_bought: [...], ...}, description
    image_features_<Category>.b    binary records of a 10-byte ASCII asin followed by 4096 float32 (the
                                   pretrained CNN features of VBPR), little-endian as the dumps were written
                                   by Python's array('f').fromfile on x86; no header, no separator

Item modalities: title, description (Text), categories (MultiLabel of every category name on any of the
product's category paths), brand (MultiLabel), price (Dense [I, 1], mask False where absent) and visual
(Dense [I, 4096], mask False for products without a record). `related` (co-purchase lists) and salesRank are
not loaded: they are derived from interactions that may include held-out ones.
"""

from __future__ import annotations

import ast
import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.data.dataset import Dataset, from_frame
from coldstart.data.modalities import Dense, MultiLabel, Text
from coldstart.data.readers import check_duplicates, read_table, require_file, threshold
from coldstart.errors import DataError

ASIN_BYTES = 10
FEATURE_DIM = 4096


def image_record_dtype(dim: int = FEATURE_DIM) -> np.dtype:
    """One record of an image_features_*.b file: 10-byte asin, `dim` little-endian float32."""
    return np.dtype([("asin", f"S{ASIN_BYTES}"), ("features", "<f4", (dim,))])


def read_image_features(path: Path, wanted: np.ndarray | None = None, dim: int = FEATURE_DIM
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Records of an image_features_*.b file, memory-mapped (the full dumps are gigabytes).

    Args:
        path: the .b file.
        wanted: asins (str) to keep, in this order; None keeps every record in file order.
        dim: floats per record.

    Returns:
        (asins str [n], float32 features [n, dim]); with `wanted`, row j belongs to wanted[j] and the asins
        returned are those found (a missing one has a zero row; see `mask` from `image_features_for`).

    Raises:
        DataError: a size that is not a whole number of records (naming the truncated record), or a repeated asin.
    """
    path = require_file(Path(path))
    dtype = image_record_dtype(dim)
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise DataError(f"{size} bytes is not a whole number of {dtype.itemsize}-byte records (10-byte asin + "
                        f"{dim} float32): record {size // dtype.itemsize + 1} is truncated", path=path)
    records = np.memmap(path, dtype=dtype, mode="r")
    asins = np.char.decode(np.char.strip(records["asin"]), "ascii", errors="replace").astype(str)
    unique, counts = np.unique(asins, return_counts=True)
    if (counts > 1).any():
        first = unique[counts > 1][0]
        raise DataError(f"asin {first} has {int(counts[counts > 1][0])} records (record "
                        f"{int(np.flatnonzero(asins == first)[1]) + 1})", path=path)
    if wanted is None:
        return asins, np.asarray(records["features"], dtype=np.float32)
    pos = pd.Index(asins).get_indexer(np.asarray(wanted, dtype=str))  # [W], -1 when absent
    found = pos >= 0
    out = np.zeros((len(wanted), dim), np.float32)
    out[found] = records["features"][pos[found]]
    return np.asarray(wanted, dtype=str)[found], out


def read_metadata(path: Path) -> pd.DataFrame:
    """The metadata lines as a frame (asin, title, description, brand, price, categories).

    Raises:
        DataError: naming the line that is not a Python dict literal or has no asin.
    """
    path = require_file(Path(path))
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = ast.literal_eval(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
                raise DataError(f"not a Python dict literal ({type(exc).__name__})", path=path, line=line_no) from exc
            if not isinstance(rec, dict):
                raise DataError(f"expected a dict, got {type(rec).__name__}", path=path, line=line_no)
            if not rec.get("asin"):
                raise DataError("missing field asin", path=path, line=line_no, field="asin")
            cats = rec.get("categories") or []
            if not isinstance(cats, list) or not all(isinstance(c, list) for c in cats):
                raise DataError("categories must be a list of lists", path=path, line=line_no, field="categories")
            price = rec.get("price")
            try:
                price = float(price) if price is not None else np.nan
            except (TypeError, ValueError):
                raise DataError(f"price must be a number, got {price!r}", path=path, line=line_no,
                                field="price") from None
            rows.append((str(rec["asin"]), str(rec.get("title") or ""), str(rec.get("description") or ""),
                         str(rec.get("brand") or ""), price, sorted({str(c) for path_ in cats for c in path_})))
    frame = pd.DataFrame(rows, columns=["asin", "title", "description", "brand", "price", "categories"])
    dup = frame["asin"].duplicated().to_numpy()
    if dup.any():
        raise DataError(f"asin {frame['asin'].iloc[int(np.argmax(dup))]} listed twice", path=path)
    return frame


def _one(root: Path, pattern: str, what: str) -> Path | None:
    found = sorted(root.glob(pattern))
    if len(found) > 1:
        raise DataError(f"{len(found)} {what} files ({', '.join(p.name for p in found)}); give category=", path=root)
    return found[0] if found else None


def load(root: Path, category: str | None = None, min_rating: float | None = None, on_duplicate: str = "drop",
         image_dim: int = FEATURE_DIM, name: str = "amazon2014") -> Dataset:
    """Load one category of the 2014 Amazon dumps (see the module docstring for the files).

    Args:
        root: the folder.
        category: the file-name part, e.g. "CDs_and_Vinyl" (default: the only ratings_*.csv in the folder).
        min_rating: ratings >= this are positives; None keeps every rating (the dumps' implicit reading).
        on_duplicate: a user rating the same item twice: "drop" keeps the first, "error" raises.
        image_dim: floats per image-feature record.
        name: the dataset's name.
    """
    root = Path(root)
    tag = category or "*"
    ratings = _one(root, f"ratings_{tag}.csv", "ratings")
    if ratings is None:
        raise DataError(f"missing required file ratings_{tag}.csv", path=root)
    category = ratings.stem.removeprefix("ratings_")
    frame = read_table(ratings, ["user", "item", "rating", "timestamp"], numeric=("rating", "timestamp"))
    frame = threshold(check_duplicates(frame, ratings, header=False, on_duplicate=on_duplicate), min_rating)
    if frame.empty:
        raise DataError("no interactions left (check min_rating)", path=ratings)
    item_features: dict = {}
    meta_path = _one(root, f"meta_{category}.json*", "metadata")
    if meta_path is not None:
        meta = read_metadata(meta_path)
        ids = meta["asin"].tolist()
        item_features["title"] = (ids, Text(meta["title"].tolist()))
        item_features["description"] = (ids, Text(meta["description"].tolist()))
        item_features["categories"] = (ids, MultiLabel.from_lists(meta["categories"].tolist()))
        item_features["brand"] = (ids, MultiLabel.from_lists([[b] if b else [] for b in meta["brand"]]))
        price = meta["price"].to_numpy(np.float32)
        have = ~np.isnan(price)
        item_features["price"] = (ids, Dense(np.where(have, price, 0.0)[:, None].astype(np.float32), have))
    image_path = _one(root, f"image_features_{category}.b", "image feature")
    if image_path is not None:
        wanted = np.unique(frame["item"].astype(str).to_numpy())
        found, values = read_image_features(image_path, wanted, image_dim)
        have = np.isin(wanted, found)
        item_features["visual"] = (wanted.tolist(), Dense(values, have))
    return from_frame(name, frame, item_features=item_features, source=str(ratings))


def load_cds(root: Path, min_rating: float | None = None, on_duplicate: str = "drop") -> Dataset:
    """CDs_and_Vinyl of the 2014 dumps (CIERec's Amazon_CDs before its own filtering), as "amazon-cds"."""
    return load(root, category="CDs_and_Vinyl", min_rating=min_rating, on_duplicate=on_duplicate, name="amazon-cds")
