"""The 2014 Amazon dumps' loader (issue 14), on fixtures written here in the exact formats: ratings CSV without
a header, metadata as Python dict literals (single quotes, eval-able, not JSON), and image_features_*.b records
of a 10-byte asin followed by 4096 little-endian float32."""

from __future__ import annotations

import array
import gzip
import sys

import numpy as np
import pytest

from coldstart.data.loaders import load_dataset
from coldstart.data.loaders.amazon2014 import read_image_features
from coldstart.data.modalities import Dense, MultiLabel, Text
from coldstart.errors import DataError

META = [
    {"asin": "B000000AAA", "title": "Kind of Blue", "price": 9.99, "imUrl": "http://x/a.jpg", "brand": "Columbia",
     "categories": [["CDs & Vinyl", "Jazz"], ["CDs & Vinyl", "Jazz", "Cool Jazz"]],
     "related": {"also_bought": ["B000000BBB"]}, "salesRank": {"Music": 10}},
    {"asin": "B000000BBB", "title": "Blue Train", "categories": [["CDs & Vinyl", "Jazz", "Hard Bop"]],
     "description": "It's John's \"Blue\" record"},  # no price, no brand; quotes of both kinds
    {"asin": "B000000CCC", "categories": [["CDs & Vinyl", "Rock"]], "price": 5.0},
]
RATINGS = [("A1", "B000000AAA", 5.0, 1), ("A1", "B000000BBB", 3.0, 2), ("A2", "B000000AAA", 4.0, 3),
           ("A2", "B000000CCC", 1.0, 4), ("A3", "B000000BBB", 5.0, 5)]


def write_image_features(path, records):
    """The dumps' writer, as VBPR's readers expect: asin bytes, then array('f') of 4096 floats (little-endian)."""
    with open(path, "wb") as fh:
        for asin, values in records:
            fh.write(asin.encode("ascii"))
            floats = array.array("f", values)
            if sys.byteorder != "little":
                floats.byteswap()
            floats.tofile(fh)


@pytest.fixture
def cds(tmp_path):
    root = tmp_path / "cds"
    root.mkdir()
    (root / "ratings_CDs_and_Vinyl.csv").write_text("".join(f"{u},{i},{r},{t}\n" for u, i, r, t in RATINGS))
    with gzip.open(root / "meta_CDs_and_Vinyl.json.gz", "wt") as fh:
        for rec in META:
            fh.write(repr(rec) + "\n")  # Python literals, as in the dumps
    rng = np.random.default_rng(0)
    features = {"B000000AAA": rng.normal(size=4096), "B000000CCC": rng.normal(size=4096),
                "B0000ZZZZZ": rng.normal(size=4096)}  # a product nobody rated
    write_image_features(root / "image_features_CDs_and_Vinyl.b", features.items())
    return root, features


def test_loads_the_three_files(cds):
    root, features = cds
    ds = load_dataset("amazon-cds", root=root)
    assert ds.name == "amazon-cds" and ds.n_interactions == 5 and ds.n_items == 3 and ds.timestamps is not None
    items = list(ds.item_ids)
    visual = ds.item_features["visual"]
    assert isinstance(visual, Dense) and visual.dim == 4096
    a, b, c = (items.index(x) for x in ("B000000AAA", "B000000BBB", "B000000CCC"))
    assert np.allclose(visual.values[a], features["B000000AAA"].astype(np.float32))
    assert np.allclose(visual.values[c], features["B000000CCC"].astype(np.float32))
    assert list(visual.mask[[a, b, c]]) == [True, False, True] and not visual.values[b].any()
    cats = ds.item_features["categories"]
    assert isinstance(cats, MultiLabel)
    assert sorted(cats.labels(a)) == ["CDs & Vinyl", "Cool Jazz", "Jazz"]
    assert ds.item_features["brand"].labels(a) == ["Columbia"] and ds.item_features["brand"].labels(b) == []
    price = ds.item_features["price"]
    assert price.values[a, 0] == pytest.approx(9.99) and not price.mask[b]
    title = ds.item_features["title"]
    assert isinstance(title, Text) and title.texts[b] == "Blue Train"
    assert ds.item_features["description"].texts[b] == "It's John's \"Blue\" record"


def test_min_rating_and_generic_name(cds):
    root, _ = cds
    ds = load_dataset("amazon2014", root=root, min_rating=4)
    assert ds.n_interactions == 3 and ds.name == "amazon2014"


def test_image_feature_records_are_little_endian_float32(cds):
    root, features = cds
    asins, values = read_image_features(root / "image_features_CDs_and_Vinyl.b")
    assert list(asins) == list(features)
    assert np.array_equal(values, np.stack([v.astype("<f4") for v in features.values()]))


def test_truncated_image_file_names_the_record(cds):
    root, _ = cds
    path = root / "image_features_CDs_and_Vinyl.b"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="record 3 is truncated"):
        load_dataset("amazon-cds", root=root)


def test_bad_metadata_line_is_named(cds):
    root, _ = cds
    with gzip.open(root / "meta_CDs_and_Vinyl.json.gz", "wt") as fh:
        fh.write(repr(META[0]) + "\n{'asin': 'B1', 'title': \n")
    with pytest.raises(DataError, match=r"meta_CDs_and_Vinyl.json.gz.*2") as err:
        load_dataset("amazon-cds", root=root)
    assert "dict literal" in str(err.value)


def test_code_in_metadata_is_not_run(cds, tmp_path):
    root, _ = cds
    marker = tmp_path / "ran"
    with gzip.open(root / "meta_CDs_and_Vinyl.json.gz", "wt") as fh:
        fh.write(f"__import__('pathlib').Path({str(marker)!r}).touch()\n")
    with pytest.raises(DataError):
        load_dataset("amazon-cds", root=root)
    assert not marker.exists()
