"""Loaders on the real data (skipped when absent) and on small files in every generic format."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from coldstart.data.loaders import load_dataset
from coldstart.data.modalities import Dense, Image, MultiLabel, Sparse, Text
from coldstart.data.paths import fetch_zip
from coldstart.data.splits import make_split
from coldstart.errors import DataError
from tests.conftest import data_root


def test_ml100k_complete_and_thresholded():
    root = data_root("ml-100k")
    every = load_dataset("ml-100k", root=root, min_rating=None)
    assert (every.n_users, every.n_items, every.n_interactions) == (943, 1682, 100_000)
    implicit = load_dataset("ml-100k", root=root)
    assert implicit.n_interactions == 34_174 + 21_201  # ratings 4 and 5
    assert (implicit.ratings >= 4).all()
    genres = implicit.item_features["genres"]
    toy_story = implicit.item_index()["1"]
    assert genres.labels(toy_story) == ["Animation", "Children's", "Comedy"]
    assert implicit.item_features["title"].texts[toy_story] == "Toy Story (1995)"
    assert set(implicit.user_features) == {"age", "gender", "occupation", "zip"}


def test_ml1m_with_content_extension():
    ds = load_dataset("ml-1m", root=data_root("ml-1m"))
    assert ds.n_interactions == 575_281 and ds.timestamps is None
    idx = ds.item_index()["1"]
    assert ds.item_features["director"].labels(idx) == ["John Lasseter"]
    assert "Woody" in ds.item_features["plot"].texts[idx]
    poster = ds.item_features["poster"]
    assert isinstance(poster, Image) and poster.read_bytes(idx)[:2] == b"\xff\xd8"  # a JPEG, read from the zip
    assert poster.mask.sum() <= 3872


def test_ml_latest_small_and_citeulike_and_amazon():
    ml = load_dataset("ml-latest-small", root=data_root("ml-latest-small"), min_rating=None)
    assert (ml.n_users, ml.n_interactions) == (610, 100_836)
    assert "tags" not in ml.item_features  # per interaction, so that item tags can come from train only
    assert ml.interaction_features["tags"].n_rows == ml.n_interactions
    assert ml.interaction_features["tags"].values.nnz == 3476  # tag applications on a rated pair, repeats merged
    cite = load_dataset("citeulike-a", root=data_root("citeulike-a"))
    assert (cite.n_users, cite.n_items, cite.n_interactions) == (5551, 16980, 204_986)
    assert cite.item_features["citations"].values.shape == (16980, 16980)
    amazon = load_dataset("amazon-musical-instruments", root=data_root("amazon-musical-instruments"), min_rating=None)
    assert (amazon.n_users, amazon.n_items) == (1429, 900)
    assert amazon.interaction_features["review"].n_rows == amazon.n_interactions


def test_synthetic_is_deterministic():
    a = load_dataset("synthetic", seed=5)
    b = load_dataset("synthetic", seed=5)
    assert np.array_equal(a.items, b.items) and np.array_equal(a.item_features["content"].values,
                                                               b.item_features["content"].values)


def test_tabular_folder(tmp_path):
    (tmp_path / "items").mkdir()
    (tmp_path / "users").mkdir()
    (tmp_path / "interactions.csv").write_text("user,item,timestamp\nu1,a,3\nu1,b,4\nu2,a,5\nu3,c,6\n")
    (tmp_path / "items" / "text.csv").write_text("item,description\na,red shoes\nb,blue hat\n")
    np.save(tmp_path / "items" / "vec.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    (tmp_path / "items" / "vec.ids.txt").write_text("c\nb\na\n")
    np.savez(tmp_path / "users" / "age.npz", ids=np.array(["u1", "u2", "u3"]), values=np.array([20.0, 30.0, 40.0]))
    ds = load_dataset(str(tmp_path))
    assert ds.n_interactions == 4 and ds.timestamps is not None
    idx = ds.item_index()
    assert ds.item_features["text"].texts[idx["c"]] == ""  # no row: empty text
    assert ds.item_features["vec"].values[idx["a"]].tolist() == [4.0, 5.0]
    assert ds.user_features["age"].values[:, 0].tolist() == [20.0, 30.0, 40.0]


def test_recbole_atomic_files(tmp_path):
    (tmp_path / "toy.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                        "1\t10\t5\t100\n1\t11\t2\t101\n2\t10\t4\t102\n")
    (tmp_path / "toy.item").write_text("item_id:token\tgenre:token_seq\tyear:float\n10\tAction Drama\t1999\n11\tComedy\t2001\n")
    ds = load_dataset(str(tmp_path), min_rating=4)
    assert ds.n_interactions == 2
    assert ds.item_features["genre"].labels(0) == ["Action", "Drama"]
    assert ds.item_features["year"].values[0, 0] == 1999.0


def test_official_clcrec_folder(tmp_path):
    n_users = 4  # items are offset by num_user in the reference code
    np.save(tmp_path / "train.npy", np.array([[0, 4], [1, 5], [2, 4], [3, 6], [0, 5]]))
    for name, rows in {"val_warm": [[0, 6]], "val_cold": [[1, 7]], "test_warm": [[2, 5]], "test_cold": [[3, 8], [0, 8]]}.items():
        arr = np.empty(len(rows), dtype=object)
        arr[:] = rows
        np.save(tmp_path / f"{name}.npy", arr, allow_pickle=True)
    np.save(tmp_path / "feat_v.npy", np.eye(5, dtype=np.float32))
    np.save(tmp_path / "warm_set.npy", np.array([4, 5, 6]))  # the folder declares its item ids here
    np.save(tmp_path / "cold_set.npy", np.array([7, 8]))
    ds = load_dataset(str(tmp_path))
    assert list(ds.item_ids) == ["0", "1", "2", "3", "4"] and ds.n_users == n_users
    assert ds.item_features["visual"].values.shape == (5, 5)
    split = make_split(ds, "published", source="clcrec")
    assert len(split.train) == 5 and split.test.cold.sum() == 2
    assert set(split.item_ids[split.cold_items]) == {"3", "4"}


def test_download_checks_md5_and_unpacks(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("toy/u.data", "1\t1\t5\t1\n")
    archive = tmp_path / "toy.zip"
    archive.write_bytes(buf.getvalue())
    md5 = hashlib.md5(buf.getvalue()).hexdigest()
    folder = fetch_zip("toy", archive.as_uri(), md5, "toy", ("u.data",))
    assert (folder / "u.data").read_text().startswith("1\t1")
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_zip("toy2", archive.as_uri(), "0" * 32, "toy", ("u.data",))
    assert not (tmp_path / "cache" / "coldstart" / "toy2.zip").exists()  # nothing half-written


def test_modalities_take_and_validate():
    ml = MultiLabel.from_lists([["a", "b"], [], ["b"]])
    assert ml.take(np.array([2, 0])).labels(1) == ["a", "b"]
    assert Dense(np.ones((3, 2), np.float32)).take(np.array([1])).n_rows == 1
    assert Sparse(sp.eye(3, format="csr")).dim == 3
    assert Text(["x", "y"]).take(np.array([1])).texts == ["y"]
    with pytest.raises(DataError, match="field 'f'.*NaN"):
        Dense(np.array([[np.nan]], np.float32)).validate("f")
    assert torch.is_tensor(torch.from_numpy(ml.values.toarray()))
