"""Amazon Musical Instruments 5-core reviews (McAuley et al.): ratings with review text per interaction.

The review text stays attached to its interaction (`interaction_features["review"]`): an item's text
document must be built from training interactions only, after splitting, or it leaks held-out reviews.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd

from coldstart.data.dataset import Dataset, from_frame
from coldstart.data.readers import check_duplicates, require_file, threshold
from coldstart.errors import DataError

FILE = "Musical_Instruments_5.json.gz"
FIELDS = ("reviewerID", "asin", "overall", "unixReviewTime")


def load(root: Path, min_rating: float | None = 4, on_duplicate: str = "drop") -> Dataset:
    """Load the review JSON lines (gzip or plain) as implicit feedback with per-interaction review text.

    Args:
        root: folder holding Musical_Instruments_5.json.gz (or the .json file).
        min_rating: ratings >= this are positives; None keeps every review.
        on_duplicate: a user reviewing the same item twice: "drop" keeps the first, "error" raises.
    """
    root = Path(root)
    path = root / FILE if (root / FILE).exists() else root / FILE.removesuffix(".gz")
    require_file(path)
    rows = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON ({exc.msg})", path=path, line=line_no) from exc
            missing = [f for f in FIELDS if f not in rec]
            if missing:
                raise DataError(f"missing field {missing[0]}", path=path, line=line_no, field=missing[0])
            text = " ".join(t for t in (rec.get("summary", ""), rec.get("reviewText", "")) if t)
            rows.append((rec["reviewerID"], rec["asin"], float(rec["overall"]), int(rec["unixReviewTime"]), text))
    if not rows:
        raise DataError("no reviews", path=path)
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp", "review"])
    frame = threshold(check_duplicates(frame, path, header=False, on_duplicate=on_duplicate), min_rating)
    return from_frame("amazon-musical-instruments", frame, source=str(path), text_columns=("review",))
