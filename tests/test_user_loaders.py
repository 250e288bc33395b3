"""Loaders for user cold start (issue 13): KuaiRec and XING on tiny fixtures in their published formats, and
MeLU's user-cold state of ml-1m as a `published` split."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from coldstart.data.loaders import load_dataset
from coldstart.data.modalities import Dense, MultiLabel, Sparse
from coldstart.data.splits import make_split
from coldstart.errors import DataError
from tests.conftest import data_root

# --- KuaiRec -------------------------------------------------------------------------------------------------


def write_kuairec(folder):
    """KuaiRec 2.0's data/ folder: small_matrix, user_features, item_categories, item_daily_features (their headers)."""
    folder.mkdir(parents=True)
    rows = []
    for u in range(4):
        for v in range(5):
            ratio = 2.5 if (u + v) % 2 == 0 else 0.4
            ts = "" if (u, v) == (3, 4) else f"{1593878903.438 + 60 * (u * 5 + v):.3f}"
            rows.append(f"{u},{v + 10},13838,10867,2020-07-05 00:08:23.438,2020070{5 + v % 3},{ts},{ratio}")
    (folder / "small_matrix.csv").write_text(
        "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio\n" + "\n".join(rows) + "\n")
    onehots = ",".join(f"onehot_feat{k}" for k in range(18))
    users = ["user_id,user_active_degree,is_lowactive_period,is_live_streamer,is_video_author,follow_user_num,"
             "follow_user_num_range,fans_user_num,fans_user_num_range,friend_user_num,friend_user_num_range,"
             f"register_days,register_days_range,{onehots}"]
    for u in range(4):
        feats = ",".join(str((u + k) % 3) if k != 5 or u else "" for k in range(18))
        degree = ["high_active", "full_active", "middle_active", "UNKNOWN"][u]
        users.append(f'{u},{degree},0,{u % 2},0,{5 * u},"(0,10]",{u * u},"[0,10)",{u},"[0,5)",{100 + u},31-60,{feats}')
    (folder / "user_features.csv").write_text("\n".join(users) + "\n")
    (folder / "item_categories.csv").write_text(
        'video_id,feat\n10,[8]\n11,"[27, 9]"\n12,[9]\n13,"[1, 2, 3]"\n14,[8]\n')
    daily = ["video_id,date,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,video_width,"
             "video_height,music_id,video_tag_id,video_tag_name,show_user_num,show_cnt,play_cnt"]
    for v in range(10, 15):
        for day, tag in ((20200705, 1), (20200706, v % 2 + 2)):
            daily.append(f"{v},{day},{v * 7},NORMAL,2020-07-01,ShortImport,public,{v * 1000}.0,720,1280,"
                         f"{v},{tag},tag{tag},5,9,3")
    (folder / "item_daily_features.csv").write_text("\n".join(daily) + "\n")
    return folder


def test_kuairec_loads_positives_timestamps_and_features(tmp_path):
    root = write_kuairec(tmp_path / "KuaiRec 2.0" / "data").parent
    data = load_dataset("kuairec", root=root)  # the folder above data/ works too
    frame = data.interactions_frame()
    assert len(frame) == 10 and data.n_users == 4 and data.n_items == 5  # watch_ratio > 2 on (u + v) even
    assert set(zip(frame["user"], frame["item"])) == {(str(u), str(v + 10)) for u in range(4) for v in range(5)
                                                         if (u + v) % 2 == 0}
    row = frame[(frame["user"] == "0") & (frame["item"] == "10")].iloc[0]
    assert row["timestamp"] == 1593878903
    assert isinstance(data.user_features["user_active_degree"], MultiLabel)
    assert data.user_features["user_active_degree"].vocabulary == ["UNKNOWN", "full_active", "high_active",
                                                                   "middle_active"]
    assert isinstance(data.user_features["fans_user_num"], Dense)
    np.testing.assert_allclose(data.user_features["fans_user_num"].values[:, 0], np.log1p([0, 1, 4, 9]), rtol=1e-6)
    assert data.user_features["onehot_feat5"].values[0].nnz == 0  # a missing value is no label
    assert data.user_features["follow_user_num_range"].vocabulary == ["(0,10]"]  # quoted commas stay one field
    assert len(data.user_features) == 30  # 26 categorical columns + 4 counts
    cats = data.item_features["categories"]
    assert sorted(cats.vocabulary[j] for j in cats.values[1].indices) == ["27", "9"]
    tag = data.item_features["tag"]  # the last day's tag
    assert [tag.vocabulary[tag.values[i].indices[0]] for i in range(5)] == ["2", "3", "2", "3", "2"]
    split = make_split(data, "cold_user", seed=0, test_fraction=0.5)
    assert split.cold_kind == "user"


def test_kuairec_bad_input_names_file_line_and_field(tmp_path):
    folder = write_kuairec(tmp_path / "k")
    text = (folder / "small_matrix.csv").read_text().splitlines()
    text[3] = text[3].rsplit(",", 1)[0] + ",abc"
    (folder / "small_matrix.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"small_matrix.csv:4, field .watch_ratio."):
        load_dataset("kuairec", root=folder)
    (folder / "small_matrix.csv").write_text("user_id,video_id,time\n1,2,3\n")
    with pytest.raises(DataError, match="missing column 'watch_ratio'"):
        load_dataset("kuairec", root=folder)
    with pytest.raises(DataError, match="small_matrix.csv"):
        load_dataset("kuairec", root=tmp_path / "nowhere")


# --- XING ------------------------------------------------------------------------------------------------------


def write_xing(folder, n_users=12, n_items=9):
    """Heater's data/XING: train / vali_user / test_user CSVs (uid,iid, 0-based) and the two content .npz files."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pairs = {u: sorted(rng.choice(n_items, 3, replace=False).tolist()) for u in range(n_users)}
    files = {"train.csv": range(0, 8), "vali_user.csv": range(8, 10), "test_user.csv": range(10, 12)}
    for name, users in files.items():
        lines = ["uid,iid"] + [f"{u},{i}" for u in users for i in pairs[u]]
        (folder / name).write_text("\n".join(lines) + "\n")
    (folder / "test_item.csv").write_text("uid,iid\n0,8\n")  # cold-item rows: left out by default
    sp.save_npz(folder / "user_content.npz", sp.random(n_users + 3, 20, density=0.3, format="csr", random_state=1))
    sp.save_npz(folder / "item_content.npz", sp.random(n_items, 30, density=0.3, format="csr", random_state=2))
    return folder, pairs


def test_xing_loads_heaters_files_and_its_user_cold_split(tmp_path):
    folder, pairs = write_xing(tmp_path / "XING")
    data = load_dataset("xing", root=folder)
    assert data.n_users == 12 and data.n_interactions == 36
    assert isinstance(data.user_features["content"], Sparse) and data.user_features["content"].values.shape == (12, 20)
    want = sp.load_npz(folder / "user_content.npz").toarray()[[int(u) for u in data.user_ids]]
    np.testing.assert_allclose(data.user_features["content"].values.toarray(), want, rtol=1e-6)
    split = make_split(data, "published", source="xing")
    assert split.cold_kind == "user" and sorted(split.user_ids[split.cold_users].astype(int)) == [8, 9, 10, 11]
    assert len(split.train) == 24 and split.valid.cold.all() and len(split.test) == 6
    with_items = load_dataset("xing", root=folder, cold_items=True)
    assert with_items.n_interactions == 37


def test_xing_rejects_ids_without_a_content_row(tmp_path):
    folder, _ = write_xing(tmp_path / "XING")
    sp.save_npz(folder / "item_content.npz", sp.random(5, 30, density=0.3, format="csr", random_state=2))
    with pytest.raises(DataError, match="item id 8 has no row"):
        load_dataset("xing", root=folder)
    (folder / "user_content.npz").write_text("not a zip")
    with pytest.raises(DataError, match="user_content.npz"):
        load_dataset("xing", root=folder)


# --- MeLU's user-cold state of ml-1m -----------------------------------------------------------------------------


def write_ml1m_with_melu(folder):
    """ml-1m without ratings.dat (implicit_ratings_ge4.csv, as the shared copy) plus melu_cold_splits/."""
    folder.mkdir(parents=True)
    positives = [(u, m) for u in range(1, 9) for m in range(1, 7) if (u + m) % 3 != 0]
    pd.DataFrame(positives, columns=["user_id", "movie_id"]).to_csv(folder / "implicit_ratings_ge4.csv", index=False)
    (folder / "movies.dat").write_text("".join(f"{m}::Movie {m} (199{m})::Drama|Comedy\n" for m in range(1, 7)),
                                       encoding="latin-1")
    (folder / "users.dat").write_text("".join(f"{u}::{'MF'[u % 2]}::{[1, 18, 25][u % 3]}::{u % 4}::0000{u}\n"
                                              for u in range(1, 9)))
    melu = folder / "melu_cold_splits"
    melu.mkdir()
    # users 6, 7, 8 are cold; MeLU lists rated movies with their 1-5 ratings (only >= 4 are positives here)
    state = {"7": ["1", "2", "4", "3"], "6": ["1", "5", "2"], "8": ["1", "2", "4"]}
    ratings = {"7": [5, 4, 2, 1], "6": [4, 5, 3], "8": [4, 4, 5]}
    (melu / "user_cold_state.json").write_text(json.dumps(state))
    (melu / "user_cold_state_y.json").write_text(json.dumps(ratings))
    return folder


def test_melu_user_cold_state_is_a_published_user_cold_split(tmp_path):
    folder = write_ml1m_with_melu(tmp_path / "ml-1m")
    data = load_dataset("ml-1m", root=folder)
    split = make_split(data, "published", source="melu")
    assert split.cold_kind == "user" and split.params["source"] == "melu"
    cold = sorted(split.user_ids[split.cold_users].tolist())
    assert cold == ["6", "7", "8"]
    train_users = set(split.user_ids[split.train.users].tolist())
    assert not train_users & {"6", "7", "8"} and train_users == {str(u) for u in range(1, 6)}
    held = {(split.user_ids[u], split.item_ids[i]) for p in (split.valid, split.test) for u, i in zip(p.users, p.items)}
    # rating >= 4 (6: 1, 5; 7: 1, 2; 8: 1, 2, 4) and a positive of the dataset ((u + m) % 3 != 0): 7-2, 8-1 and
    # 8-4 are not, so they are left out (logged)
    assert held == {("6", "1"), ("6", "5"), ("7", "1"), ("8", "2")}
    # sorted cold ids 6, 7, 8: test, valid, test
    assert set(split.user_ids[split.test.users].tolist()) == {"6", "8"}
    assert set(split.user_ids[split.valid.users].tolist()) == {"7"}


def test_melu_files_that_disagree_are_an_error(tmp_path):
    folder = write_ml1m_with_melu(tmp_path / "ml-1m")
    (folder / "melu_cold_splits" / "user_cold_state_y.json").write_text(json.dumps({"7": [5], "6": [4, 5, 3],
                                                                                     "8": [4, 4, 5]}))
    data = load_dataset("ml-1m", root=folder)
    with pytest.raises(DataError, match="user 7 has 4 movies but 1 ratings"):
        make_split(data, "published", source="melu")


@pytest.mark.data
def test_melu_split_on_the_real_ml1m():
    data = load_dataset("ml-1m", root=data_root("ml-1m"))
    split = make_split(data, "published", source="melu")
    assert split.cold_kind == "user" and 1200 <= len(split.cold_users) <= 1208
    assert not np.isin(split.cold_users, split.train.users).any()
