"""Issue 11's data items: bad files give one DataError line naming the file, published user-cold splits, the
official CLCRec item offset, ml-latest-small tags from training pairs only, split folder modes."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from coldstart.data.dataset import from_frame
from coldstart.data.loaders import load_dataset
from coldstart.data.splits import Part, Split, make_split, published
from coldstart.errors import DataError
from coldstart.features import with_features
from coldstart.features.cache import FeatureCache
from coldstart.features.presets import _train_tags


def error_of(fn) -> str:
    with pytest.raises(DataError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    return message


def byo(root, interactions: str | bytes = "user,item\nu1,a\nu2,b\n", items: dict | None = None):
    """A bring-your-own-data folder: interactions.csv (text or bytes) and item feature files."""
    root.mkdir(exist_ok=True)
    path = root / "interactions.csv"
    path.write_bytes(interactions if isinstance(interactions, bytes) else interactions.encode())
    for name, content in (items or {}).items():
        (root / "items").mkdir(exist_ok=True)
        target = root / "items" / name
        if isinstance(content, np.ndarray):
            np.save(target, content, allow_pickle=content.dtype == object)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return root


# ---- item 14: files ----------------------------------------------------------------------------------------

def test_a_folder_where_interactions_csv_should_be(tmp_path):
    root = tmp_path / "d"
    (root / "interactions.csv").mkdir(parents=True)
    assert error_of(lambda: load_dataset(str(root))) == f"{root / 'interactions.csv'}: expected a file, found a folder"


def test_a_latin1_byte_in_a_utf8_csv_names_its_line(tmp_path):
    root = byo(tmp_path / "d", "user,item\nu1,a\nu2,caf\xe9\n".encode("latin-1"))
    msg = error_of(lambda: load_dataset(str(root)))
    assert msg.startswith(f"{root / 'interactions.csv'}:3: byte 0xe9 is not valid utf-8 text")
    feats = byo(tmp_path / "e", items={"text.csv": "item,text\na,caf\xe9\n".encode("latin-1")})
    assert error_of(lambda: load_dataset(str(feats))).startswith(f"{feats / 'items' / 'text.csv'}:2: byte 0xe9")


def test_a_utf8_bom_is_accepted(tmp_path):
    root = byo(tmp_path / "d", b"\xef\xbb\xbfuser,item\nu1,a\nu2,b\n",
               items={"text.csv": b"\xef\xbb\xbfitem,text\na,red\nb,blue\n"})
    ds = load_dataset(str(root))
    assert list(ds.user_ids) == ["u1", "u2"] and ds.item_features["text"].texts == ["red", "blue"]


def test_a_file_named_parquet_that_is_not_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    root = tmp_path / "d"
    root.mkdir()
    (root / "interactions.parquet").write_text("user,item\nu1,a\n")
    assert error_of(lambda: load_dataset(str(root))).startswith(f"{root / 'interactions.parquet'}: not a readable "
                                                                 "Parquet file")
    feats = byo(tmp_path / "e", items={"vec.parquet": "not parquet"})
    assert error_of(lambda: load_dataset(str(feats))).startswith(f"{feats / 'items' / 'vec.parquet'}: not a readable")


@pytest.mark.parametrize("content, problem", [
    (np.array([{"a": 1}, None], dtype=object), "holds Python objects (dtype object), not numbers; save a numeric array"),
    (b"\x93NUMPY\x01\x00garbage", "damaged or truncated .npy file"),
    (b"1.0,2.0\n", "not a NumPy .npy file (no .npy header)"),
])
def test_object_dtype_or_corrupt_npy(tmp_path, content, problem):
    root = byo(tmp_path / "d", items={"vec.npy": content, "vec.ids.txt": "a\nb\n"})
    assert error_of(lambda: load_dataset(str(root))).startswith(f"{root / 'items' / 'vec.npy'}: {problem}")


def test_a_truncated_npy_names_the_file(tmp_path):
    root = byo(tmp_path / "d", items={"vec.npy": np.ones((2, 50)), "vec.ids.txt": "a\nb\n"})
    path = root / "items" / "vec.npy"
    path.write_bytes(path.read_bytes()[:300])
    assert error_of(lambda: load_dataset(str(root))).startswith(f"{path}: damaged or truncated .npy file")


def test_ids_are_strings_never_missing_values(tmp_path):
    root = byo(tmp_path / "d", "user,item\nNA,null\nu2,NA\n",
               items={"text.csv": "item,text\nNA,x\nnull,y\n", "vec.npy": np.ones((2, 1)), "vec.ids.txt": "NA\nnull\n"})
    ds = load_dataset(str(root))
    assert set(ds.user_ids) == {"NA", "u2"} and set(ds.item_ids) == {"NA", "null"}
    idx = ds.item_index()
    assert ds.item_features["text"].texts[idx["NA"]] == "x" and ds.item_features["text"].texts[idx["null"]] == "y"


def test_an_empty_id_is_an_error(tmp_path):
    root = byo(tmp_path / "d", "user,item\nu1,a\nu2,\n")
    assert error_of(lambda: load_dataset(str(root))) == f"{root / 'interactions.csv'}:3, field 'item': empty id"
    feats = byo(tmp_path / "e", items={"text.csv": "item,text\na,x\n,y\n"})
    assert error_of(lambda: load_dataset(str(feats))) == f"{feats / 'items' / 'text.csv'}:3, field 'item': empty id"
    ids = byo(tmp_path / "f", items={"vec.npy": np.ones((2, 1)), "vec.ids.txt": "a\n\nb\n"})
    assert error_of(lambda: load_dataset(str(ids))) == f"{ids / 'items' / 'vec.ids.txt'}:2, field 'id': empty id"


def test_a_nan_user_id_in_parquet_names_the_file_and_row(tmp_path):
    pytest.importorskip("pyarrow")
    root = tmp_path / "d"
    root.mkdir()
    pd.DataFrame({"user": [1.0, np.nan, 3.0], "item": ["a", "b", "c"]}).to_parquet(root / "interactions.parquet")
    msg = error_of(lambda: load_dataset(str(root)))
    assert msg == f"{root / 'interactions.parquet'}, field 'user': missing id in row 1"
    pd.DataFrame({"user": [1.0, 2.0], "item": ["a", "b"]}).to_parquet(root / "interactions.parquet")
    assert list(load_dataset(str(root)).user_ids) == ["1", "2"]  # integral floats are the integer ids


def test_duplicate_feature_ids_name_the_file_and_line(tmp_path):
    root = byo(tmp_path / "d", items={"text.csv": "item,text\na,x\nb,y\na,z\n"})
    assert error_of(lambda: load_dataset(str(root))) == f"{root / 'items' / 'text.csv'}:4: id a given twice"
    npy = byo(tmp_path / "e", items={"vec.npy": np.ones((3, 1)), "vec.ids.txt": "a\nb\nb\n"})
    assert error_of(lambda: load_dataset(str(npy))) == f"{npy / 'items' / 'vec.ids.txt'}:3: id b given twice"


def test_nan_in_a_numeric_feature_file_is_an_error_naming_file_line_and_column(tmp_path, caplog):
    root = byo(tmp_path / "d", items={"num.csv": "item,year,price\na,1990,3\nb,NaN,5\n"})
    msg = error_of(lambda: load_dataset(str(root)))
    assert msg.startswith(f"{root / 'items' / 'num.csv'}:3, field 'year': missing or non-finite value")
    with caplog.at_level("WARNING", logger="coldstart"):
        ds = load_dataset(str(root), missing_features="mean")
    assert ds.item_features["num"].values[:, 0].tolist() == [1990.0, 1990.0]
    assert "set to the column mean" in caplog.text
    npz = byo(tmp_path / "e", items={})
    (npz / "items").mkdir()
    np.savez(npz / "items" / "vec.npz", ids=np.array(["a", "b"]), values=np.array([[1.0], [np.inf]]))
    assert error_of(lambda: load_dataset(str(npz))) == f"{npz / 'items' / 'vec.npz'}: NaN or inf in row 1 (id b)"


def test_bring_your_own_ratings_are_kept_whole_unless_min_rating_is_set(tmp_path):
    root = byo(tmp_path / "d", "user,item,rating\nu1,a,1\nu1,b,5\nu2,a,4\nu2,c,2\n")
    assert load_dataset(str(root)).n_interactions == 4
    assert load_dataset(str(root), min_rating=4).n_interactions == 2


# ---- item 19: split folder modes and interaction-level content names -----------------------------------------

def test_split_folder_and_files_get_the_normal_mode(synthetic_split, tmp_path):
    umask = os.umask(0o022)
    try:
        folder = synthetic_split.save(tmp_path / "split")
    finally:
        os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o755
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
        "train.csv": 0o644, "valid.csv": 0o644, "test.csv": 0o644, "meta.json": 0o644}


def test_content_names_list_interaction_level_content(tmp_path):
    frame = pd.DataFrame({"user": ["u1", "u2"], "item": ["a", "b"], "review": ["good", "bad"]})
    ds = from_frame("toy", frame, text_columns=("review",))
    assert ds.content_names() == {"item": [], "user": [], "interaction": ["review"]}


# ---- item 8: published splits know their cold side ----------------------------------------------------------

def _published_dataset(pairs):
    return from_frame("toy", pd.DataFrame(pairs, columns=["user", "item"]))


def _write_heater(root, train, vali, test):
    folder = root / "splits_heater"
    folder.mkdir(parents=True)
    for name, rows in (("train.csv", train), ("vali.csv", vali), ("test.csv", test)):
        (folder / name).write_text("uid,iid\n" + "".join(f"{u},{i}\n" for u, i in rows))
    return root


TRAIN = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (3, 0)]


def test_a_user_cold_published_split_is_read_as_user_cold(tmp_path):
    vali, test = [(4, 0), (4, 2)], [(5, 1), (5, 3)]  # users 4 and 5 never occur in train; every item does
    ds = _published_dataset(TRAIN + vali + test)
    root = _write_heater(tmp_path, TRAIN, vali, test)
    split = published(ds, "heater", root=root)
    assert split.cold_kind == "user" and split.params["cold_side"] == "user"
    assert set(split.user_ids[split.cold_users]) == {"4", "5"} and len(split.cold_items) == 0
    assert split.test.cold.all() and split.valid.cold.all() and not split.train.cold.any()
    again = Split.load(split.save(tmp_path / "split"), ds)
    assert again.cold_kind == "user" and set(again.user_ids[again.cold_users]) == {"4", "5"}
    msg = error_of(lambda: published(ds, "heater", root=root, cold_side="item"))
    assert msg == f"{root / 'splits_heater' / 'vali.csv'}:2: item 0 is marked cold but occurs in train (item cold start)"


def test_an_item_cold_published_split_is_still_item_cold(tmp_path):
    vali, test = [(0, 4), (1, 4)], [(2, 5), (3, 5)]
    ds = _published_dataset(TRAIN + vali + test)
    split = make_split(ds, "published", source="heater", root=_write_heater(tmp_path, TRAIN, vali, test))
    assert split.cold_kind == "item" and set(split.item_ids[split.cold_items]) == {"4", "5"}


def test_published_flags_that_disagree_with_train_are_errors(tmp_path):
    vali, test = [(0, 4), (1, 0)], [(2, 5)]  # item 0 of vali.csv:3 is "cold" but occurs in train; users too
    ds = _published_dataset(TRAIN + vali + test)
    root = _write_heater(tmp_path / "a", TRAIN, vali, test)
    assert "neither item nor user cold start" in error_of(lambda: published(ds, "heater", root=root))
    msg = error_of(lambda: published(ds, "heater", root=root, cold_side="item"))
    assert msg == f"{root / 'splits_heater' / 'vali.csv'}:3: item 0 is marked cold but occurs in train (item cold start)"
    # GAR's format (1-based ids): a "warm" test item that never occurs in train
    gar = tmp_path / "b" / "splits_gar"
    gar.mkdir(parents=True)
    files = {"warm_emb.csv": TRAIN[:4], "warm_map.csv": TRAIN[4:], "warm_val.csv": [(0, 2)],
             "warm_test.csv": [(1, 3), (2, 4)], "cold_item_val.csv": [(0, 5)], "cold_item_test.csv": [(3, 6)]}
    for name, rows in files.items():
        (gar / name).write_text("user,item\n" + "".join(f"{u + 1},{i + 1}\n" for u, i in rows))
    ds = _published_dataset(TRAIN + [(0, 2), (1, 3), (2, 4), (0, 5), (3, 6)])
    msg = error_of(lambda: published(ds, "gar", root=tmp_path / "b"))
    assert msg == f"{gar / 'warm_test.csv'}:3: item 4 is marked warm but does not occur in train (item cold start)"
    assert "cold_side" in error_of(lambda: published(ds, "gar", root=tmp_path / "b", cold_side="both"))


# ---- item 9: the official CLCRec folder's item offset comes from its declared item ids -----------------------

def _clcrec_folder(root, n_users: int, with_sets: bool = True):
    """Users 0..n_users-1 (the last one without interactions), items n_users..n_users+4 as in the reference code."""
    o = n_users
    np.save(root / "train.npy", np.array([[0, o], [1, o + 1], [2, o], [0, o + 1], [1, o + 2]]))
    for name, rows in {"val_warm": [[2, o + 1]], "val_cold": [[0, o + 3]], "test_warm": [[0, o + 2]],
                       "test_cold": [[1, o + 4], [2, o + 4]]}.items():
        arr = np.empty(len(rows), dtype=object)
        arr[:] = rows
        np.save(root / f"{name}.npy", arr, allow_pickle=True)
    if with_sets:
        np.save(root / "warm_set.npy", np.array([o, o + 1, o + 2]))
        np.save(root / "cold_set.npy", np.array([o + 3, o + 4]))
    np.save(root / "feat_t.npy", np.arange(10, dtype=np.float32).reshape(5, 2))
    return root


def test_official_clcrec_offset_ignores_users_without_interactions(tmp_path):
    root = _clcrec_folder(tmp_path, n_users=4)  # user 3 has no interaction: the largest user seen is 2
    ds = load_dataset(str(root))
    assert list(ds.item_ids) == ["0", "1", "2", "3", "4"] and ds.n_users == 3
    assert ds.item_features["textual"].values[ds.item_index()["3"]].tolist() == [6.0, 7.0]
    split = make_split(ds, "published", source="clcrec")
    assert set(split.item_ids[split.cold_items]) == {"3", "4"} and split.cold_kind == "item"


def test_official_clcrec_folder_without_declared_items_is_an_error(tmp_path):
    root = _clcrec_folder(tmp_path, n_users=4, with_sets=False)
    assert "missing warm_set.npy and cold_set.npy" in error_of(lambda: load_dataset(str(root)))
    np.save(root / "warm_set.npy", np.array([4, 5, 6]))
    np.save(root / "cold_set.npy", np.array([8, 9]))  # 7 missing: not one range
    assert "not one contiguous range" in error_of(lambda: load_dataset(str(root)))


# ---- item 3: ml-latest-small tags reach item content from training pairs only --------------------------------

def _ml_latest_small_folder(root):
    """ratings: user 1 likes movies 10, 20; user 2 likes 10, 30; user 3 likes 30 and dislikes 20."""
    root.mkdir()
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,5,1\n1,20,4,2\n2,10,4,3\n2,30,5,4\n"
                                      "3,30,4,5\n3,20,2,6\n")
    (root / "movies.csv").write_text("movieId,title,genres\n10,A (1990),Drama\n20,B (1991),Comedy\n"
                                     "30,C (1992),Drama|Comedy\n")
    (root / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,10,Classic,1\n2,10,classic ,2\n1,20,funny,3\n"
                                   "2,30,heldout-only,4\n3,30,dark,5\n3,20,disliked,6\n")
    return root


def test_ml_latest_small_tags_are_per_interaction_and_the_preset_reads_training_pairs_only(tmp_path):
    ds = load_dataset("ml-latest-small", root=_ml_latest_small_folder(tmp_path / "ml"))
    assert "tags" not in ds.item_features and ds.content_names()["interaction"] == ["tags"]
    tags = ds.interaction_features["tags"]
    assert tags.n_rows == ds.n_interactions == 5
    assert "disliked" not in tags.vocabulary  # on a pair that is no positive interaction: in no split part
    uidx, iidx = ds.user_index(), ds.item_index()
    held_out = (ds.users == uidx["2"]) & (ds.items == iidx["30"])  # the only pair tagged "heldout-only"
    train = Part(ds.users[~held_out], ds.items[~held_out], np.zeros(int((~held_out).sum()), bool))
    built, _ = with_features(ds, ["tags"], train=train, cache=FeatureCache(None))
    mod = built.item_features["tags"]
    assert list(built.item_features) == ["tags"]
    dense = mod.values.toarray()
    # item 30 keeps "dark" (user 3, train) but not "heldout-only"; item 10 has "classic" once; 20 "funny"
    assert dense.sum(axis=1).tolist() == [1.0, 1.0, 1.0]
    labels = _train_tags(ds, train)
    assert [labels.labels(iidx[i]) for i in ("10", "20", "30")] == [["classic"], ["funny"], ["dark"]]
    assert "heldout-only" not in labels.vocabulary
    with pytest.raises(DataError, match="built from training interactions"):
        with_features(ds, ["tags"], train=None, cache=FeatureCache(None))


def test_recbole_files_accept_a_bom_and_reject_an_empty_token_id(tmp_path):
    (tmp_path / "toy.inter").write_bytes(b"\xef\xbb\xbfuser_id:token\titem_id:token\nNA\t10\n2\t11\n")
    ds = load_dataset(str(tmp_path))
    assert set(ds.user_ids) == {"NA", "2"}
    (tmp_path / "toy.inter").write_text("user_id:token\titem_id:token\n1\t10\n2\t\n")
    assert error_of(lambda: load_dataset(str(tmp_path))) == f"{tmp_path / 'toy.inter'}:3, field 'item': empty id"
