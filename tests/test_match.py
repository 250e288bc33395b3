"""Matching films of two catalogues by normalised title + year (data/match.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coldstart.data.dataset import from_frame
from coldstart.data.match import match_items, match_titles, normalise_title, split_year
from coldstart.data.modalities import Dense, Text
from coldstart.errors import DataError


@pytest.mark.parametrize("title, expected", [
    ("Usual Suspects, The (1995)", "the usual suspects"),
    ("Usual Suspects, The", "the usual suspects"),
    ("Seven (Se7en) (1995)", "seven"),
    ("Postino, Il (The Postman)", "il postino"),
    ("Misérables, Les", "les miserables"),
    ("Cry, the Beloved Country", "cry the beloved country"),  # a comma inside the title is no trailing article
    ("Romeo & Juliet", "romeo and juliet"),
    ("(1995)", ""),
])
def test_normalise_title(title, expected):
    assert normalise_title(title) == expected


def test_split_year():
    assert split_year("Toy Story (1995)") == ("Toy Story", 1995)
    assert split_year("Seven (Se7en)") == ("Seven (Se7en)", None)


def test_match_titles_on_hand_made_catalogues():
    # "source" writes titles without years (ml-1m style, year field), "target" with them (ml-100k style,
    # whose year field is a later video release date that must not win over the title's year).
    source = ["Toy Story", "Usual Suspects, The", "Misérables, Les", "Heat", "Heat", "Unknown Film"]
    source_years = np.array([1995, 1995, 1995, 1995, 1986, 2000], dtype=float)
    target = ["Heat (1995)", "Toy Story (1995)", "Miserables, Les (1995)", "Usual Suspects, The (1994)",
              "Toy Story (1995)", "No Year"]
    target_years = np.array([1996, 1996, 1996, 1995, 1996, np.nan])
    pairs = match_titles(source, target, source_years, target_years)
    got = set(zip(pairs["source"].tolist(), pairs["target"].tolist()))
    # Toy Story twice in the target (a duplicated catalogue row): both rows are the film; Heat 1995 not 1986;
    # the Usual Suspects differ in year (1995 vs 1994): no match; a film with no year matches nothing.
    assert got == {(0, 1), (0, 4), (2, 2), (3, 0)}
    assert pairs["source"].is_monotonic_increasing


def test_match_items_on_datasets():
    frame = pd.DataFrame({"user": ["u1", "u1", "u2"], "item": ["10", "11", "12"]})
    src = from_frame("src", frame, item_features={
        "title": (["10", "11", "12"], Text(["Heat", "Casino", "Fargo"])),
        "year": (["10", "11", "12"], Dense(np.array([[1995.0], [1995.0], [1996.0]], dtype=np.float32)))})
    tgt = from_frame("tgt", frame.assign(item=["7", "8", "9"]), item_features={
        "title": (["7", "8", "9"], Text(["Fargo (1996)", "Heat (1995)", "Clerks (1994)"]))})
    out = match_items(src, tgt)
    assert out[["source_id", "target_id"]].values.tolist() == [["10", "8"], ["12", "7"]]
    assert out["source_item"].tolist() == [0, 2] and out["target_item"].tolist() == [1, 0]
    with pytest.raises(DataError):
        match_items(from_frame("bare", frame), tgt)


@pytest.mark.data
def test_ml1m_to_ml100k_match_rate():
    from tests.conftest import data_root

    from coldstart import load_dataset

    ml1m = load_dataset("ml-1m", root=data_root("ml-1m"))
    ml100k = load_dataset("ml-100k", root=data_root("ml-100k"))
    pairs = match_items(ml1m, ml100k)
    rate = pairs["target_item"].nunique() / ml100k.n_items
    print(f"ml-100k films matched in ml-1m: {pairs['target_item'].nunique()} of {ml100k.n_items} ({rate:.1%})")
    assert rate > 0.9
