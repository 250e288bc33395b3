"""Paired significance tests between two models of a study.

Per user (the default in reports): runs with the same seed share one split, so the models were tested on the
same users. A user evaluated under several seeds is still one unit: their metric is first averaged over the
seeds in which both models evaluated them, then the two-sided Wilcoxon signed-rank test asks whether the per-user
differences are centred on zero. Pairing (seed, user) instead would count a user once per seed
(pseudo-replication) and shrink p with every seed added. The question answered: do the two methods differ for
users of this population, averaging over training seeds? With one seed it compares two trained instances.

Per seed: the paired t-test over the seeds' means: does the difference hold across training seeds? It needs
>= 2 seeds and detects only large effects with 3-5.

Differences smaller than `REL_TOL` times the largest value compared count as zero: per-user means and metrics
computed in another order differ in the last bits, and a test must not read rounding as an effect.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

REL_TOL = 1e-9


def paired_users(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-user metric of both models, each averaged over the seeds in which both evaluated the user.

    Args:
        a, b: per-user rows of one phase and scenario with columns seed, user and `metric`.
        metric: e.g. "recall@10".

    Returns:
        (x, y) float [n_users], aligned by user (sorted by user id).
    """
    joined = a[["seed", "user", metric]].merge(b[["seed", "user", metric]], on=["seed", "user"], suffixes=("_a", "_b"))
    per_user = joined.groupby("user", sort=True)[[f"{metric}_a", f"{metric}_b"]].mean()  # [n_users, 2]
    return per_user[f"{metric}_a"].to_numpy(float), per_user[f"{metric}_b"].to_numpy(float)


def _differences(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """x - y, and the tolerance under which a difference is rounding (REL_TOL x the largest |value|)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    scale = max(float(np.max(np.abs(x))), float(np.max(np.abs(y))), np.finfo(float).tiny)
    return x - y, REL_TOL * scale


def wilcoxon_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of x - y; 1.0 when every pair is tied, NaN with no pairs.

    Zero differences (up to rounding) are dropped (zero_method="wilcox").
    """
    if len(x) == 0:
        return math.nan
    diff, tol = _differences(x, y)
    diff[np.abs(diff) <= tol] = 0.0
    if not diff.any():
        return 1.0
    return float(stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_t_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided paired t-test p-value (per-seed means).

    NaN with fewer than 2 pairs. When the differences are all equal up to rounding (zero variance, t undefined):
    1.0 if they are ~0, else 0.0 (the same nonzero difference in every seed).
    """
    if len(x) < 2:
        return math.nan
    diff, tol = _differences(x, y)
    if np.ptp(diff) <= tol:
        return 1.0 if abs(diff.mean()) <= tol else 0.0
    return float(stats.ttest_1samp(diff, 0.0).pvalue)
