"""Cold-start split protocols. A Split is saved into the run directory, reloaded and fingerprinted.

Saved format (read by outside tools)::

    split/train.csv, split/valid.csv, split/test.csv   header user,item,scenario (raw ids; warm | cold)
    split/meta.json                                    protocol, seed, parameters, fingerprint, cold ids

`scenario` says whether a row belongs to the warm or the cold scenario: for item cold start (cold_item,
cold_item_only, published) whether its item is cold; for cold_user whether its user is cold.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from coldstart.data.dataset import Dataset, _sorted_ids
from coldstart.data.readers import read_table
from coldstart.errors import DataError

PHASES = ("train", "valid", "test")


@dataclass
class Part:
    """Interactions of one phase, by index. Attributes: users, items (int64 [N]) and cold (bool [N])."""

    users: np.ndarray
    items: np.ndarray
    cold: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def empty(cls) -> "Part":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))

    @classmethod
    def concat(cls, *parts: "Part") -> "Part":
        return cls(*(np.concatenate([getattr(p, a) for p in parts]) for a in ("users", "items", "cold")))

    def select(self, mask: np.ndarray) -> "Part":
        return Part(self.users[mask], self.items[mask], self.cold[mask])


@dataclass
class Split:
    """Train / valid / test interactions of one dataset under one protocol.

    Attributes:
        protocol: protocol name.
        cold_kind: "item" or "user": what the cold scenario is about.
        user_ids, item_ids: raw ids of the index (str arrays); the same index as the dataset's.
        train, valid, test: the Parts.
        cold_items, cold_users: indices of the cold entities (one of them is empty).
        seed: the seed used (None for a published split).
        params: the protocol parameters, for meta.json.
        dataset: the Dataset (content features) when known; not saved.
    """

    protocol: str
    cold_kind: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    train: Part
    valid: Part
    test: Part
    cold_items: np.ndarray
    cold_users: np.ndarray
    seed: int | None = None
    params: dict = field(default_factory=dict)
    dataset: Dataset | None = field(default=None, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def part(self, phase: str) -> Part:
        if phase not in PHASES:
            raise DataError(f"unknown phase {phase!r} (use {', '.join(PHASES)})", field="phase")
        return getattr(self, phase)

    def matrix(self, *phases: str) -> sp.csr_matrix:
        """Binary CSR [U, I] of the interactions of the given phases."""
        parts = Part.concat(*(self.part(p) for p in phases))
        data = np.ones(len(parts), dtype=np.float32)
        mat = sp.csr_matrix((data, (parts.users, parts.items)), shape=(self.n_users, self.n_items))
        mat.data[:] = 1.0  # duplicates across phases collapse to 1
        return mat

    def train_item_mask(self) -> np.ndarray:
        """bool [I]: items that occur in train (the warm items)."""
        mask = np.zeros(self.n_items, dtype=bool)
        mask[self.train.items] = True
        return mask

    def warm_item_mask(self) -> np.ndarray:
        """bool [I]: the warm scenario's items: those in train, or, under a protocol of COLD_IN_TRAIN (whose
        long-tail cold items may occur in train), every item outside `cold_items`."""
        if self.protocol in COLD_IN_TRAIN:
            mask = np.ones(self.n_items, dtype=bool)
            mask[self.cold_items] = False
            return mask
        return self.train_item_mask()

    def fingerprint(self) -> str:
        """SHA-256 over the protocol and the sorted `user,item,scenario` lines of every phase (raw ids)."""
        digest = hashlib.sha256(self.protocol.encode())
        for phase in PHASES:
            frame = self.frame(phase)
            lines = np.sort((frame["user"] + "," + frame["item"] + "," + frame["scenario"]).to_numpy(str))
            digest.update(f"\n[{phase}]\n".encode())
            digest.update("\n".join(lines).encode())
        return digest.hexdigest()

    def frame(self, phase: str) -> pd.DataFrame:
        """One phase as a DataFrame of raw ids with columns user, item, scenario."""
        part = self.part(phase)
        return pd.DataFrame({"user": self.user_ids[part.users], "item": self.item_ids[part.items],
                             "scenario": np.where(part.cold, "cold", "warm")})

    def meta(self) -> dict:
        cold = self.item_ids[self.cold_items] if self.cold_kind == "item" else self.user_ids[self.cold_users]
        return {
            "protocol": self.protocol,
            "dataset": None if self.dataset is None else self.dataset.name,
            "seed": self.seed,
            "cold_kind": self.cold_kind,
            **self.params,
            "fingerprint": self.fingerprint(),
            "counts": {p: {"warm": int((~self.part(p).cold).sum()), "cold": int(self.part(p).cold.sum())} for p in PHASES},
            f"cold_{self.cold_kind}s": [str(x) for x in cold],
        }

    def save(self, folder: str | Path) -> Path:
        """Write the split folder atomically (a temporary folder renamed into place)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the split is read by other tools and people
        for phase in PHASES:
            self.frame(phase).to_csv(tmp / f"{phase}.csv", index=False)
        (tmp / "meta.json").write_text(json.dumps(self.meta(), indent=1) + "\n")
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path, dataset: Dataset | None = None) -> "Split":
        """Read a split folder; verify its fingerprint.

        Args:
            folder: the split folder (train.csv, valid.csv, test.csv, meta.json).
            dataset: when given, raw ids are mapped through its index (and must all be known); otherwise
                the index is built from the ids in the files.

        Raises:
            DataError: missing or malformed files, unknown ids, or a fingerprint that does not match.
        """
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            raise DataError("missing required file meta.json (is this a split folder?)", path=folder)
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON ({exc.msg})", path=meta_path, line=exc.lineno) from exc
        frames = {}
        for phase in PHASES:
            path = folder / f"{phase}.csv"
            frame = read_table(path, ["user", "item", "scenario"], header=True)
            bad = ~frame["scenario"].isin(["warm", "cold"]).to_numpy()
            if bad.any():
                row = int(np.argmax(bad))
                raise DataError(f"scenario must be warm or cold, got {frame['scenario'].iloc[row]!r}",
                                path=path, line=row + 2, field="scenario")
            frames[phase] = frame
        if dataset is not None:
            user_ids, item_ids = dataset.user_ids, dataset.item_ids
        else:
            user_ids = _sorted_ids(np.unique(np.concatenate([f["user"].to_numpy(str) for f in frames.values()])))
            item_ids = _sorted_ids(np.unique(np.concatenate([f["item"].to_numpy(str) for f in frames.values()])))
        parts = {p: _part_from_frame(frames[p], user_ids, item_ids, folder / f"{p}.csv") for p in PHASES}
        cold_kind = meta.get("cold_kind", "item")
        cold_raw = np.asarray(meta.get(f"cold_{cold_kind}s", []), dtype=str)
        ids = item_ids if cold_kind == "item" else user_ids
        cold_idx = pd.Index(ids).get_indexer(cold_raw)
        if (cold_idx < 0).any():
            raise DataError(f"cold id {cold_raw[cold_idx < 0][0]} is unknown", path=meta_path, field=f"cold_{cold_kind}s")
        reserved = {"protocol", "dataset", "seed", "cold_kind", "fingerprint", "counts", "cold_items", "cold_users"}
        split = cls(
            protocol=meta["protocol"], cold_kind=cold_kind, user_ids=user_ids, item_ids=item_ids,
            train=parts["train"], valid=parts["valid"], test=parts["test"],
            cold_items=cold_idx if cold_kind == "item" else np.zeros(0, np.int64),
            cold_users=cold_idx if cold_kind == "user" else np.zeros(0, np.int64),
            seed=meta.get("seed"), params={k: v for k, v in meta.items() if k not in reserved}, dataset=dataset,
        )
        if "fingerprint" in meta and split.fingerprint() != meta["fingerprint"]:
            raise DataError("fingerprint mismatch: the split files changed since they were written", path=meta_path,
                            field="fingerprint")
        return split


def _part_from_frame(frame: pd.DataFrame, user_ids, item_ids, path: Path) -> Part:
    users = pd.Index(user_ids).get_indexer(frame["user"].astype(str))
    items = pd.Index(item_ids).get_indexer(frame["item"].astype(str))
    for name, idx in (("user", users), ("item", items)):
        if (idx < 0).any():
            row = int(np.argmax(idx < 0))
            raise DataError(f"unknown {name} id {frame[name].iloc[row]}", path=path, line=row + 2, field=name)
    return Part(users.astype(np.int64), items.astype(np.int64), (frame["scenario"] == "cold").to_numpy())


def _new_split(dataset: Dataset, protocol: str, cold_kind: str, train: Part, valid: Part, test: Part,
               cold: np.ndarray, seed: int | None, params: dict) -> Split:
    empty = np.zeros(0, np.int64)
    return Split(protocol, cold_kind, dataset.user_ids, dataset.item_ids, train, valid, test,
                 cold_items=np.sort(cold) if cold_kind == "item" else empty,
                 cold_users=np.sort(cold) if cold_kind == "user" else empty,
                 seed=seed, params=params, dataset=dataset)


def _ratio_cuts(n: int, ratios: tuple[float, ...]) -> np.ndarray:
    """Cut points dividing n things by `ratios` (which need not sum to 1)."""
    weights = np.asarray(ratios, dtype=np.float64)
    return np.round(np.cumsum(weights / weights.sum())[:-1] * n).astype(np.int64)


def cold_item(dataset: Dataset, seed: int = 0, cold_fraction: float = 0.2,
              warm_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """CLCRec section 3.1.1: `cold_fraction` of items become cold, divided 1:1 into cold-valid and cold-test
    (with all their interactions); the other items' interactions are divided 8:1:1 into train, warm-valid and
    warm-test, and a warm-valid / warm-test interaction whose user or item never occurs in train moves back."""
    _check_fraction(cold_fraction, "cold_fraction")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(dataset.n_items)
    n_cold = int(round(cold_fraction * dataset.n_items))
    cold_valid_items, cold_test_items = perm[: n_cold // 2], perm[n_cold // 2 : n_cold]
    item_role = np.zeros(dataset.n_items, dtype=np.int8)  # 0 warm, 1 cold-valid, 2 cold-test
    item_role[cold_valid_items], item_role[cold_test_items] = 1, 2
    role = item_role[dataset.items]
    warm_rows = rng.permutation(np.flatnonzero(role == 0))
    cut1, cut2 = _ratio_cuts(len(warm_rows), warm_ratios)
    train_rows, valid_rows, test_rows = warm_rows[:cut1], warm_rows[cut1:cut2], warm_rows[cut2:]
    in_train_user = np.zeros(dataset.n_users, bool)
    in_train_item = np.zeros(dataset.n_items, bool)
    in_train_user[dataset.users[train_rows]] = True
    in_train_item[dataset.items[train_rows]] = True

    def keep(rows: np.ndarray) -> np.ndarray:
        return in_train_user[dataset.users[rows]] & in_train_item[dataset.items[rows]]

    back = np.concatenate([valid_rows[~keep(valid_rows)], test_rows[~keep(test_rows)]])
    valid_rows, test_rows = valid_rows[keep(valid_rows)], test_rows[keep(test_rows)]
    train_rows = np.concatenate([train_rows, back])
    part = _rows_to_part(dataset)
    cold_rows = {k: np.flatnonzero(role == k) for k in (1, 2)}
    return _new_split(
        dataset, "cold_item", "item", part(train_rows, False),
        Part.concat(part(valid_rows, False), part(cold_rows[1], True)),
        Part.concat(part(test_rows, False), part(cold_rows[2], True)),
        perm[:n_cold], seed, {"cold_fraction": cold_fraction, "warm_ratios": list(warm_ratios), "moved_to_train": int(len(back))},
    )


def cold_item_only(dataset: Dataset, seed: int = 0, ratios: tuple[float, float, float] = (0.85, 0.075, 0.075),
                   min_user_positives: int = 0) -> Split:
    """GIR (KDD'24): items divided 85 : 7.5 : 7.5 into train / cold-valid / cold-test, with all their interactions.

    Args:
        min_user_positives: GIR section 6.1 keeps the users with at least this many positives (20 in the paper)
            before splitting; the others' interactions are dropped from every phase. Users and items keep their
            index (so cached item features still apply and a saved split reloads against the full dataset): a
            dropped user simply has no rows, and an item whose every positive came from dropped users takes no
            role (counted as `items_without_positives`; outside train, it stays a never-relevant candidate of
            the cold scenario). The ratios divide the items that keep at least one positive. 0 keeps everyone
            and draws exactly the split of earlier versions.
    """
    if min_user_positives < 0:
        raise DataError(f"must be >= 0, got {min_user_positives}", field="min_user_positives")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(dataset.n_items)
    keep_row = np.ones(dataset.n_interactions, dtype=bool)
    params: dict = {"ratios": list(ratios)}
    if min_user_positives > 0:
        kept_user = np.bincount(dataset.users, minlength=dataset.n_users) >= min_user_positives  # [U]
        keep_row = kept_user[dataset.users]  # [N]
        active = np.zeros(dataset.n_items, dtype=bool)
        active[dataset.items[keep_row]] = True
        if not active.any():
            raise DataError(f"no user has {min_user_positives} positives", field="min_user_positives")
        perm = perm[active[perm]]  # the same draw, restricted to items that keep a positive
        params.update(min_user_positives=int(min_user_positives), users_dropped=int((~kept_user).sum()),
                      items_without_positives=int((~active).sum()))
    cut1, cut2 = _ratio_cuts(len(perm), ratios)
    role = np.full(dataset.n_items, -1, dtype=np.int8)  # -1: no role (no positive left)
    role[perm[:cut1]], role[perm[cut1:cut2]], role[perm[cut2:]] = 0, 1, 2
    row_role = np.where(keep_row, role[dataset.items], -1)  # [N]
    part = _rows_to_part(dataset)
    return _new_split(dataset, "cold_item_only", "item", part(np.flatnonzero(row_role == 0), False),
                      part(np.flatnonzero(row_role == 1), True), part(np.flatnonzero(row_role == 2), True),
                      perm[cut1:], seed, params)


def cold_user(dataset: Dataset, seed: int = 0, test_fraction: float = 0.3, valid_fraction: float = 0.2,
              warm_share: float = 0.5, history_fraction: float = 0.8) -> Split:
    """CMCLRec (SIGIR'24): `test_fraction` of users are test users, half warm and half cold; the other users
    divide (1 - valid_fraction) : valid_fraction into train and valid users, valid users again half warm, half cold.

    A warm held-out user keeps the earliest `history_fraction` of their interactions (by timestamp; in a seeded
    random order when there are none) in train, at least one, and the rest is held out (at least one). A cold
    user's interactions are all held out: they are served from user features only.
    """
    _check_fraction(test_fraction, "test_fraction")
    _check_fraction(valid_fraction, "valid_fraction")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(dataset.n_users)
    n_test = int(round(test_fraction * dataset.n_users))
    rest = perm[n_test:]
    n_valid = int(round(valid_fraction * len(rest)))
    groups = {"test": perm[:n_test], "valid": rest[:n_valid]}
    user_role = np.zeros(dataset.n_users, dtype=np.int8)  # 0 train, 1 valid, 2 test
    user_cold = np.zeros(dataset.n_users, dtype=bool)
    for name, members in groups.items():
        user_role[members] = 2 if name == "test" else 1
        n_warm = int(round(warm_share * len(members)))
        user_cold[members[n_warm:]] = True
    # Rank each interaction within its user's history: by timestamp, ties and missing timestamps in random order.
    tiebreak = rng.random(dataset.n_interactions)
    time = dataset.timestamps if dataset.timestamps is not None else np.zeros(dataset.n_interactions)
    order = np.lexsort((tiebreak, time, dataset.users))
    counts = np.bincount(dataset.users, minlength=dataset.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(dataset.n_interactions, dtype=np.int64)
    rank[order] = np.arange(dataset.n_interactions) - starts[dataset.users[order]]
    n_keep = np.clip(np.ceil(history_fraction * counts), 1, np.maximum(counts - 1, 1)).astype(np.int64)
    role, cold = user_role[dataset.users], user_cold[dataset.users]
    held_out = (role > 0) & (cold | (rank >= n_keep[dataset.users]))
    part = _rows_to_part(dataset)
    rows = {code: np.flatnonzero(held_out & (role == code)) for code in (1, 2)}
    return _new_split(
        dataset, "cold_user", "user", part(np.flatnonzero(~held_out), False),
        part(rows[1], cold[rows[1]]), part(rows[2], cold[rows[2]]),
        np.flatnonzero(user_cold), seed,
        {"test_fraction": test_fraction, "valid_fraction": valid_fraction, "warm_share": warm_share,
         "history_fraction": history_fraction},
    )


def interaction_boundary(dataset: Dataset, seed: int = 0, boundary: int = 3,
                         ratios: tuple[float, float, float] = (0.6, 0.1, 0.3)) -> Split:
    """CIERec (section IV-A1): items with at most `boundary` interactions form the cold set, the rest the warm
    set, and every user's interactions are divided in time order by `ratios` into train / valid / test (the
    paper: the earliest 60%, the next 10%, the latest 30%).

    Unlike cold_item, a cold item here is a long-tail item that may occur in train (the paper's definition);
    a row's scenario is its item's set, and the evaluator's warm / cold candidates are the warm / cold sets
    (`Split.warm_item_mask`), not the items seen in train. Interactions without timestamps, and ties, are ordered
    at random by `seed`. Every user keeps at least one training interaction.
    """
    if boundary < 0:
        raise DataError(f"must be >= 0, got {boundary}", field="boundary")
    if len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0:
        raise DataError(f"expected three non-negative ratios with a positive train share, got {list(ratios)}",
                        field="ratios")
    rng = np.random.default_rng(seed)
    counts_item = np.bincount(dataset.items, minlength=dataset.n_items)  # [I]
    cold_item_mask = counts_item <= boundary
    # Rank each interaction within its user's history: by timestamp, ties in a seeded random order.
    tiebreak = rng.random(dataset.n_interactions)
    time = dataset.timestamps if dataset.timestamps is not None else np.zeros(dataset.n_interactions)
    order = np.lexsort((tiebreak, time, dataset.users))
    counts = np.bincount(dataset.users, minlength=dataset.n_users)  # [U]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(dataset.n_interactions, dtype=np.int64)
    rank[order] = np.arange(dataset.n_interactions) - starts[dataset.users[order]]
    share = np.cumsum(np.asarray(ratios, np.float64)) / float(sum(ratios))  # [3]
    cut1 = np.maximum(np.round(share[0] * counts), 1).astype(np.int64)  # [U] at least one training row
    cut2 = np.maximum(np.round(share[1] * counts).astype(np.int64), cut1)  # [U]
    row_rank, row_user = rank, dataset.users
    phase = np.where(row_rank < cut1[row_user], 0, np.where(row_rank < cut2[row_user], 1, 2))  # [N]
    cold_row = cold_item_mask[dataset.items]
    part = _rows_to_part(dataset)
    rows = [np.flatnonzero(phase == k) for k in range(3)]
    return _new_split(dataset, "interaction_boundary", "item", *(part(r, cold_row[r]) for r in rows),
                      np.flatnonzero(cold_item_mask), seed, {"boundary": int(boundary), "ratios": list(ratios)})


#: Protocols whose cold items may occur in train (the cold set is a property of the item, not of the split), so
#: the warm scenario's candidates are the items outside `cold_items`, not the items seen in train.
COLD_IN_TRAIN = ("interaction_boundary",)


# Published splits: file -> (phase, cold?) per source; ids 1-based in GAR.
PUBLISHED = {
    "heater": ("splits_heater", 0, {"train.csv": ("train", False), "vali.csv": ("valid", True), "test.csv": ("test", True)}),
    "gar": ("splits_gar", 1, {"warm_emb.csv": ("train", False), "warm_map.csv": ("train", False),
                              "warm_val.csv": ("valid", False), "warm_test.csv": ("test", False),
                              "cold_item_val.csv": ("valid", True), "cold_item_test.csv": ("test", True)}),
    # XING as Heater distributes it (loaders/xing.py): its user-cold files beside the data, 0-based ids
    "xing": (".", 0, {"train.csv": ("train", False), "vali_user.csv": ("valid", True), "test_user.csv": ("test", True)}),
    "aldi": ("splits_aldi", 0, {"warm_emb.csv": ("train", False), "warm_val.csv": ("valid", False),
                                "warm_test.csv": ("test", False), "cold_item_val.csv": ("valid", True),
                                "cold_item_test.csv": ("test", True)}),
}


COLD_SIDES = ("auto", "item", "user")


def published(dataset: Dataset, source: str = "heater", root: str | Path | None = None, seed: int | None = None,
              cold_side: str = "auto") -> Split:
    """Import a published split: CiteULike-a's Heater, GAR (1-based ids) or ALDI split, an official CLCRec folder,
    or MeLU's user-cold state of ml-1m (source "melu": `loaders/movielens.py: melu_state_pieces`).

    The files say which rows are cold (Heater's vali / test, GAR's and ALDI's cold_item_*, CLCRec's *_cold), not
    whether the cold entities are items or users: Heater's format holds item-cold (CiteULike-a) and user-cold
    (Last.fm) splits alike. `cold_side="auto"` reads it from the files: the cold rows' items all absent from train
    means item cold start, their users all absent from train means user cold start.

    Args:
        dataset: the dataset the split belongs to (its index maps the raw ids).
        source: "heater", "gar", "aldi", "clcrec", "melu" or "xing".
        root: the dataset folder holding splits_<source>/ (default: where the dataset was loaded from).
        seed: ignored (a published split has no seed); accepted so every protocol takes the same arguments.
        cold_side: "auto", "item" or "user".

    Raises:
        DataError: naming the file and line where the flags disagree with train: a cold entity that occurs in
            train, a warm held-out entity that does not, or cold rows whose side cannot be told.
    """
    if cold_side not in COLD_SIDES:
        raise DataError(f"must be one of {', '.join(COLD_SIDES)}, got {cold_side!r}", field="cold_side")
    root = Path(root) if root is not None else dataset.root
    if root is None:
        raise DataError("published split needs the dataset folder (root)", field="root")
    if source == "clcrec":
        from coldstart.data.loaders.clcrec_official import PHASE_FILES, read_parts

        raw, _ = read_parts(root)
        files = {"train": "train.npy", **{f"{ph}_{sc}": name for (ph, sc), name in PHASE_FILES.items()}}
        # (file for messages, pairs, phase, cold?, line of the first pair or None for a binary file)
        pieces = [(str(root / files[name]), pairs, name.split("_")[0], name.endswith("cold"), None)
                  for name, pairs in raw.items()]
    elif source == "melu":  # MeLU's user-cold state beside ml-1m (loaders/movielens.py says how it maps)
        from coldstart.data.loaders.movielens import melu_state_pieces

        pieces = melu_state_pieces(root, dataset)
    elif source in PUBLISHED:
        folder, base, spec = PUBLISHED[source]
        pieces = []
        for name, (phase, is_cold) in spec.items():
            path = root / folder / name
            frame = read_table(path, ["user", "item"], header=True, numeric=("user", "item"))
            pieces.append((str(path), frame[["user", "item"]].to_numpy(np.int64) - base, phase, is_cold, 2))
    else:
        raise DataError(f"unknown published split {source!r} (use heater, gar, aldi, clcrec, melu or xing)",
                        field="source")
    uindex, iindex = pd.Index(dataset.user_ids), pd.Index(dataset.item_ids)
    parts: list[tuple[str, Part, str, int | None]] = []
    for name, pairs, phase, is_cold, first_line in pieces:
        users = uindex.get_indexer(pairs[:, 0].astype(str))
        items = iindex.get_indexer(pairs[:, 1].astype(str))
        unknown = (users < 0) | (items < 0)
        if unknown.any():
            row = int(np.argmax(unknown))
            raise DataError(f"pair ({pairs[row, 0]}, {pairs[row, 1]}) is not in dataset {dataset.name}",
                            path=name, line=None if first_line is None else first_line + row)
        parts.append((name, Part(users.astype(np.int64), items.astype(np.int64), np.full(len(users), is_cold)),
                      phase, first_line))
    train = Part.concat(*(part for _, part, phase, _ in parts if phase == "train"))
    side = _published_side(parts, train, dataset, cold_side)
    _check_published_flags(parts, train, dataset, side)
    by_phase = {p: [part for _, part, phase, _ in parts if phase == p] for p in PHASES}
    split_parts = {p: Part.concat(*by_phase[p]) if by_phase[p] else Part.empty() for p in PHASES}
    held = Part.concat(split_parts["valid"], split_parts["test"])
    cold = np.unique((held.items if side == "item" else held.users)[held.cold])
    return _new_split(dataset, "published", side, split_parts["train"], split_parts["valid"], split_parts["test"],
                      cold, None, {"source": source, "cold_side": side})


def _in_train(train: Part, dataset: Dataset) -> dict[str, np.ndarray]:
    """{"item": bool [I], "user": bool [U]}: entities with a training interaction."""
    out = {"item": np.zeros(dataset.n_items, bool), "user": np.zeros(dataset.n_users, bool)}
    out["item"][train.items] = True
    out["user"][train.users] = True
    return out


def _published_side(parts, train: Part, dataset: Dataset, cold_side: str) -> str:
    """The cold side: given, or the one whose cold-row entities are all absent from train."""
    if cold_side != "auto":
        return cold_side
    seen = _in_train(train, dataset)
    cold_rows = [part.select(part.cold) for _, part, phase, _ in parts if phase != "train"]
    cold_rows = Part.concat(*cold_rows) if cold_rows else Part.empty()
    if len(cold_rows) == 0:
        return "item"  # no cold rows: nothing is cold either way; item is the protocol's usual meaning
    item_cold = not seen["item"][cold_rows.items].any()
    user_cold = not seen["user"][cold_rows.users].any()
    if item_cold and not user_cold:
        return "item"
    if user_cold and not item_cold:
        return "user"
    names = ", ".join(sorted({Path(n).name for n, part, phase, _ in parts if phase != "train" and part.cold.any()}))
    if item_cold:
        raise DataError(f"cannot tell the cold side: neither the users nor the items of the cold rows ({names}) "
                        "occur in train; set split.cold_side=item or user", field="cold_side")
    raise DataError(f"the cold rows ({names}) have items and users that occur in train: neither item nor user "
                    "cold start; these files are not a cold-start split", field="cold_side")


def _check_published_flags(parts, train: Part, dataset: Dataset, side: str) -> None:
    """DataError at the first held-out row whose flag disagrees with train: a cold entity of `side` that occurs
    in train, or a warm one that does not (it could never be scored as warm)."""
    seen = _in_train(train, dataset)[side]
    for name, part, phase, first_line in parts:
        if phase == "train":
            continue
        ids = part.items if side == "item" else part.users
        raw = dataset.item_ids if side == "item" else dataset.user_ids
        bad = seen[ids] == part.cold  # cold and seen, or warm and unseen
        if bad.any():
            row = int(np.argmax(bad))
            what = (f"{side} {raw[ids[row]]} is marked cold but occurs in train" if part.cold[row]
                    else f"{side} {raw[ids[row]]} is marked warm but does not occur in train")
            where = f", pair {row}" if first_line is None else ""  # .npy lists have no lines
            raise DataError(f"{what} ({side} cold start{where})", path=name,
                            line=None if first_line is None else first_line + row)


def _rows_to_part(dataset: Dataset) -> Callable[[np.ndarray, bool | np.ndarray], Part]:
    def part(rows: np.ndarray, cold) -> Part:
        flags = np.broadcast_to(np.asarray(cold, dtype=bool), rows.shape).copy()
        return Part(dataset.users[rows], dataset.items[rows], flags)

    return part


def _check_fraction(value: float, name: str) -> None:
    if not 0.0 < value < 1.0:
        raise DataError(f"must be strictly between 0 and 1, got {value}", field=name)


PROTOCOLS: dict[str, Callable[..., Split]] = {
    "cold_item": cold_item,
    "cold_item_only": cold_item_only,
    "cold_user": cold_user,
    "published": published,
    "interaction_boundary": interaction_boundary,
}


def make_split(dataset: Dataset, protocol: str, seed: int = 0, **params) -> Split:
    """Split `dataset` by a protocol of PROTOCOLS; deterministic for a given seed.

    Raises:
        DataError: unknown protocol or parameter.
    """
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r} (use {', '.join(PROTOCOLS)})", field="protocol")
    allowed = set(inspect.signature(PROTOCOLS[protocol]).parameters) - {"dataset", "seed"}
    unknown = set(params) - allowed
    if unknown:
        raise DataError(f"unknown parameter {sorted(unknown)[0]!r} for {protocol} (allowed: {', '.join(sorted(allowed))})",
                        field="protocol")
    return PROTOCOLS[protocol](dataset, seed=seed, **params)
