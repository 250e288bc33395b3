"""Paired significance tests between two models of a study.

Per user (the default in reports): the runs of one seed share one split, so the models were tested on the same
users. Each (seed, user) is a pair; the two-sided Wilcoxon signed-rank test asks whether the per-user differences
are centred on zero. It has power with a single seed, and needs no normality of per-user metrics (which are mostly
zeros and small fractions).

Per seed: the paired t-test over the seeds' means; with 5 seeds it detects only large effects, and needs >= 2.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats


def paired_users(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The metric of both models on the (seed, user) pairs both were evaluated on.

    Args:
        a, b: per-user rows of one phase and scenario with columns seed, user and `metric`.
        metric: e.g. "recall@10".
    """
    joined = a[["seed", "user", metric]].merge(b[["seed", "user", metric]], on=["seed", "user"], suffixes=("_a", "_b"))
    return joined[f"{metric}_a"].to_numpy(float), joined[f"{metric}_b"].to_numpy(float)


def wilcoxon_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of x - y; 1.0 when every pair is tied, NaN with no pairs."""
    if len(x) == 0:
        return math.nan
    if np.all(x == y):
        return 1.0
    return float(stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_t_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided paired t-test p-value (per-seed means); NaN with fewer than 2 pairs, 1.0 if all equal."""
    if len(x) < 2:
        return math.nan
    diff = np.asarray(x, float) - np.asarray(y, float)
    if np.all(diff == diff[0]):
        return 1.0 if diff[0] == 0 else 0.0  # zero variance: the difference is exact
    return float(stats.ttest_rel(x, y).pvalue)
