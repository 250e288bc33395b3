"""KuaiRec (Gao et al., CIKM 2022): Kuaishou short-video logs with a fully observed small matrix.

Where to get it: https://kuairec.com (KuaiRec 2.0: a zip from Zenodo / the links on that page, `KuaiRec 2.0/data/`).
It is not downloaded automatically (no checksummed official archive URL we can pin). Put the `data` folder (or
the folder above it) under $COLDSTART_DATA_DIR as `kuairec/`. The CMCLRec paper (SIGIR'24) uses this dataset;
their counts (1,411 users, 3,327 items, 4,676,570 interactions) are those of small_matrix.csv before thresholding.

Files read (the published format; columns are matched by header name, so their order does not matter):

    small_matrix.csv          user_id, video_id, play_duration, video_duration, time, date, timestamp, watch_ratio
                              (big_matrix.csv instead with matrix="big")
    user_features.csv         user_id, user_active_degree, is_lowactive_period, is_live_streamer, is_video_author,
                              follow_user_num, follow_user_num_range, fans_user_num, fans_user_num_range,
                              friend_user_num, friend_user_num_range, register_days, register_days_range,
                              onehot_feat0 ... onehot_feat17
    item_categories.csv       video_id, feat (a list such as "[27, 9]")
    item_daily_features.csv   video_id, date, ... (one row per video and day; optional)

Positives: watch_ratio > `like_ratio` (default 2.0, the threshold KuaiRec's README suggests for a "like"
signal; the CMCLRec paper does not say which one it used). Timestamps: the `timestamp` column (seconds); rows
without one get the midnight of their `date` (UTC), and rows with neither get 0 (logged).

User features: every categorical column (active degree, the three flags, the four *_range buckets, the 18
encrypted one-hot features) becomes its own one-hot MultiLabel modality named like the column (a missing value
is no label); the four counts become one-column Dense modalities, log1p-scaled (then z-scored by the models).
Item features: `categories` (MultiLabel of item_categories' tags) and, from item_daily_features.csv, each video's
last recorded `video_type`, `upload_type` and `video_tag_id` (one-hot MultiLabels, named tag for the last) and
`video_duration` (Dense, log1p of milliseconds). The daily counts (show_cnt, play_cnt, ...) are popularity
statistics of the whole platform and are not loaded.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.data.dataset import Dataset, from_frame
from coldstart.data.modalities import Dense, MultiLabel
from coldstart.data.readers import read_header, read_table, require_file
from coldstart.errors import DataError

log = logging.getLogger("coldstart")

INTERACTION_COLUMNS = ("user_id", "video_id", "watch_ratio")
USER_COUNTS = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")
USER_CATEGORICAL = ("user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
                    "follow_user_num_range", "fans_user_num_range", "friend_user_num_range", "register_days_range",
                    *(f"onehot_feat{k}" for k in range(18)))
ITEM_DAILY_CATEGORICAL = {"video_type": "video_type", "upload_type": "upload_type", "video_tag_id": "tag"}


def data_folder(root: Path) -> Path:
    """The folder holding small_matrix.csv: `root` itself or `root/data` (the layout of the KuaiRec 2.0 zip)."""
    root = Path(root)
    for folder in (root, root / "data"):
        if (folder / "small_matrix.csv").exists() or (folder / "big_matrix.csv").exists():
            return folder
    raise DataError("missing required file small_matrix.csv (KuaiRec: https://kuairec.com)", path=root)


def _read(path: Path, required: tuple[str, ...], numeric: tuple[str, ...] = ()) -> pd.DataFrame:
    """A headed CSV with its own column order; DataError naming the file when a required column is absent."""
    header = read_header(require_file(path))
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"missing column {missing[0]!r} (header: {', '.join(header)})", path=path, line=1,
                        field=missing[0])
    return read_table(path, header, header=True, numeric=tuple(c for c in numeric if c in header))


def _categorical(values: pd.Series) -> MultiLabel:
    """One label per row (its value as text); empty / NaN rows get none."""
    text = values.astype(str).str.strip()
    text = text.where(~text.str.lower().isin(["", "nan", "none"]), "")
    return MultiLabel.from_lists([[v] if v else [] for v in text])


def _log_count(values: pd.Series, path: Path, name: str) -> Dense:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    present = np.isfinite(numbers)
    if (numbers[present] < 0).any():
        row = int(np.argmax(present & (numbers < 0)))
        line = int(values.index[row]) + 2  # the frame's index is the file's row (rows may have been reordered)
        raise DataError(f"negative count {numbers[row]}", path=path, line=line, field=name)
    out = np.log1p(np.where(present, numbers, 0.0)).astype(np.float32)[:, None]
    return Dense(out, None if present.all() else present)


def _tag_lists(values: pd.Series) -> list[list[str]]:
    """"[27, 9]" -> ["27", "9"] (the integers inside the brackets)."""
    return [re.findall(r"-?\d+", str(v)) for v in values]


def load(root: Path, like_ratio: float = 2.0, matrix: str = "small") -> Dataset:
    """Load KuaiRec from its CSV files.

    Args:
        root: the KuaiRec `data` folder, or the folder above it.
        like_ratio: an interaction is a positive when watch_ratio > like_ratio.
        matrix: "small" (small_matrix.csv, fully observed; the CMCLRec paper's) or "big" (big_matrix.csv).

    Raises:
        DataError: a missing file or column, or a malformed row (file and line named).
    """
    if matrix not in ("small", "big"):
        raise DataError(f"must be small or big, got {matrix!r}", field="matrix")
    folder = data_folder(root)
    path = folder / f"{matrix}_matrix.csv"
    frame = _read(path, INTERACTION_COLUMNS, numeric=("user_id", "video_id"))
    ratio = pd.to_numeric(frame["watch_ratio"], errors="coerce").to_numpy(np.float64)
    if np.isnan(ratio).any():
        row = int(np.argmax(np.isnan(ratio)))
        raise DataError(f"watch_ratio is not a number: {frame['watch_ratio'].iloc[row]!r}", path=path,
                        line=row + 2, field="watch_ratio")
    time = pd.to_numeric(frame["timestamp"], errors="coerce") if "timestamp" in frame else \
        pd.Series(np.nan, index=frame.index)
    if "date" in frame:
        day = pd.to_datetime(frame["date"].astype(str).str.replace(r"\.0$", "", regex=True), format="%Y%m%d",
                             errors="coerce", utc=True)
        time = time.fillna((day - pd.Timestamp(0, tz="UTC")).dt.total_seconds())
    if time.isna().any():
        log.warning("%s: %d interactions have no timestamp or date; they get timestamp 0", path, int(time.isna().sum()))
    data = pd.DataFrame({"user": frame["user_id"], "item": frame["video_id"],
                         "timestamp": time.fillna(0).to_numpy(np.float64).astype(np.int64)})
    data = data[ratio > like_ratio]
    if data.duplicated(["user", "item"]).any():  # big_matrix repeats (user, video) pairs: keep the first view
        data = data.sort_values("timestamp", kind="stable").drop_duplicates(["user", "item"])
    if data.empty:
        raise DataError(f"no interaction has watch_ratio > {like_ratio}", path=path, field="watch_ratio")

    user_features, item_features = {}, {}
    users_path = folder / "user_features.csv"
    if users_path.exists():
        users = _read(users_path, ("user_id",), numeric=("user_id",))
        uid = users["user_id"].astype(str).tolist()
        for col in USER_CATEGORICAL:
            if col in users:
                user_features[col] = (uid, _categorical(users[col]))
        for col in USER_COUNTS:
            if col in users:
                user_features[col] = (uid, _log_count(users[col], users_path, col))
    else:
        log.warning("%s is absent: KuaiRec without user features (user cold start needs them)", users_path)
    cats_path = folder / "item_categories.csv"
    if cats_path.exists():
        cats = _read(cats_path, ("video_id", "feat"), numeric=("video_id",))
        item_features["categories"] = (cats["video_id"].astype(str).tolist(),
                                       MultiLabel.from_lists(_tag_lists(cats["feat"])))
    daily_path = folder / "item_daily_features.csv"
    if daily_path.exists():
        daily = _read(daily_path, ("video_id", "date"), numeric=("video_id",))
        last = daily.assign(_order=pd.to_numeric(daily["date"], errors="coerce")) \
            .sort_values(["video_id", "_order"], kind="stable").drop_duplicates("video_id", keep="last")
        vid = last["video_id"].astype(str).tolist()
        for col, name in ITEM_DAILY_CATEGORICAL.items():
            if col in last:
                item_features[name] = (vid, _categorical(last[col]))
        if "video_duration" in last:
            item_features["video_duration"] = (vid, _log_count(last["video_duration"], daily_path, "video_duration"))
    return from_frame(f"kuairec-{matrix}" if matrix != "small" else "kuairec", data, item_features=item_features,
                      user_features=user_features, source=str(path))
