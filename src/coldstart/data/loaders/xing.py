"""XING: the ACM RecSys Challenge 2017 job-recommendation data, in the layout Heater (Zhu et al., SIGIR'20)
distributes it (`data/XING/` of https://github.com/Zziwei/Heater--Cold-Start-Recommendation; the same
preprocessing as DropoutNet's RecSys'17 release, which ColdRec also builds on).

Where to get it: the RecSys'17 raw logs are no longer public; the preprocessed files come with the Heater
repository (large files via its README's links) and with DropoutNet's release
(https://github.com/layer6ai-labs/DropoutNet, "recsys2017.pub"). Put the folder under $COLDSTART_DATA_DIR as
`xing/`. The CMCLRec paper (SIGIR'24) reports 106,881 users, 20,519 jobs, 4,306,183 interactions and 2,738-dim job
content for its subset.

Files read (0-based integer ids, as Heater's split.py writes them):

    train.csv                              header uid,iid: the training interactions
    vali_user.csv, test_user.csv           header uid,iid: interactions of the cold validation / test users
    vali_item.csv, test_item.csv,          (optional) cold-item and cold-user-and-item interactions; loaded
    vali_user_item.csv, test_user_item.csv only with `cold_items=True` (the user-cold protocol leaves them out)
    user_content.npz, item_content.npz     scipy.sparse.save_npz matrices, row r = user / item id r
    info.pkl                               not read (its counts are the row counts of the .npz files)

The published split `--protocol published --set split.source=xing` reads train.csv / vali_user.csv /
test_user.csv back as the user-cold split (splits.py: PUBLISHED).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from coldstart.data.dataset import Dataset, from_frame
from coldstart.data.modalities import Sparse
from coldstart.data.readers import read_table, require_file
from coldstart.errors import DataError

log = logging.getLogger("coldstart")

USER_COLD_FILES = ("train.csv", "vali_user.csv", "test_user.csv")
ITEM_COLD_FILES = ("vali_item.csv", "test_item.csv", "vali_user_item.csv", "test_user_item.csv")


def _pairs(path: Path) -> pd.DataFrame:
    frame = read_table(require_file(path), ["user", "item"], header=True, numeric=("user", "item"))
    bad = (frame["user"] < 0) | (frame["item"] < 0)
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise DataError("negative id (Heater's files are 0-based)", path=path, line=row + 2)
    return frame


def _content(path: Path) -> sp.csr_matrix:
    try:
        return sp.csr_matrix(sp.load_npz(require_file(path)), dtype=np.float32)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"not a scipy .npz sparse matrix ({type(exc).__name__})", path=path) from exc


def load(root: Path, cold_items: bool = False) -> Dataset:
    """Load Heater's XING folder.

    Args:
        root: the folder holding train.csv, vali_user.csv, test_user.csv and the two content .npz files.
        cold_items: also load the cold-item files (their items are absent from train).

    Raises:
        DataError: a missing or malformed file, or an id beyond the rows of its content matrix.
    """
    root = Path(root)
    names = USER_COLD_FILES + (tuple(n for n in ITEM_COLD_FILES if (root / n).exists()) if cold_items else ())
    frames = [_pairs(root / name) for name in names]
    data = pd.concat(frames, ignore_index=True)
    if data.duplicated(["user", "item"]).any():
        n = int(data.duplicated(["user", "item"]).sum())
        log.info("%s: %d repeated (user, job) pairs across the files are counted once", root, n)
        data = data.drop_duplicates(["user", "item"])
    features = {}
    for side, file in (("user", "user_content.npz"), ("item", "item_content.npz")):
        mat = _content(root / file)
        top = int(data[side].max())
        if top >= mat.shape[0]:
            raise DataError(f"{side} id {top} has no row ({mat.shape[0]} rows)", path=root / file, field=side)
        features[side] = {"content": ([str(r) for r in range(mat.shape[0])], Sparse(mat))}
    return from_frame("xing", data, item_features=features["item"], user_features=features["user"],
                      source=str(root))
