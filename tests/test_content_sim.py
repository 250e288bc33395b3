"""content_sim against its formula, computed naively per (user, item) from the raw content."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstart.errors import DataError
from coldstart.models import MODELS
from coldstart.nn.content import build_content, select_modalities


def test_scores_equal_the_mean_cosine_to_the_users_training_items(synthetic_split):
    model = MODELS["content_sim"]().fit(synthetic_split)
    ds = synthetic_split.dataset
    dense, sparse = build_content(select_modalities(ds.item_features), ds.item_features, synthetic_split.n_items)
    content = np.concatenate([dense, sparse.toarray()], axis=1).astype(np.float64)
    warm = sorted(set(synthetic_split.train.items.tolist()))
    has = np.abs(content).sum(1) > 0
    centre = content[[i for i in warm if has[i]]].mean(0)
    train = synthetic_split.matrix("train")
    users = [0, 7, 42]
    got = model.score(torch.tensor(users)).numpy()
    for row, u in enumerate(users):
        mine = train.indices[train.indptr[u]:train.indptr[u + 1]]
        for i in range(0, synthetic_split.n_items, 13):
            cosines = []
            for j in mine:
                a, b = content[i] - centre, content[j] - centre
                a = a if has[i] else np.zeros_like(a)
                norm = np.linalg.norm(a) * np.linalg.norm(b)
                cosines.append(a @ b / norm if norm > 0 else 0.0)
            assert got[row, i] == pytest.approx(np.mean(cosines), abs=1e-5)


def test_too_wide_content_is_refused(synthetic_split):
    with pytest.raises(DataError, match="max_dims"):
        MODELS["content_sim"](max_dims=2).fit(synthetic_split)
