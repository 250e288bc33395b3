"""Figures of studies (matplotlib, the `plots` extra), written atomically as PNG."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from coldstart.data.paths import temp_sibling
from coldstart.features.extras import require

SCENARIOS = ("warm", "cold", "all")


def _pyplot():
    matplotlib = require("matplotlib", "plots", "figures")
    matplotlib.use("Agg")  # files only: no display on servers and CI
    return require("matplotlib.pyplot", "plots", "figures")


def save_figure(fig, path: Path) -> Path:
    """Lay out, write through a temporary file in the same folder, rename (no half-written PNG), close."""
    fig.tight_layout()
    fd, tmp = temp_sibling(path, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        _pyplot().close(fig)
    return path


def plot_sweep(summary: pd.DataFrame, param: str, series: str | None, metrics: list[str], phase: str,
               path: Path, title: str = "") -> Path:
    """Rows = metrics, columns = scenarios; x = the swept value, one line per series value, std error bars.

    Args:
        summary: sweep_summary.csv as a frame (columns value, phase, scenario, metric, mean, std, [series]).
        param: the swept hyperparameter (x axis label).
        series: the column holding the series value, or None for one curve.
        metrics: metrics to plot, e.g. ["recall@10"].
        phase: "test" or "valid".
        path: the PNG to write.
        title: figure title.
    """
    plt = _pyplot()
    part = summary[(summary["phase"] == phase) & summary["metric"].isin(metrics)]
    scenarios = [s for s in SCENARIOS if s in set(part["scenario"])]
    fig, axes = plt.subplots(len(metrics), len(scenarios), figsize=(4 * len(scenarios), 3 * len(metrics)),
                             squeeze=False)
    groups = part.groupby(series, dropna=False) if series else [(None, part)]
    numeric = pd.api.types.is_numeric_dtype(part["value"])
    for s_value, group in groups:
        label = f"{series}={s_value}" if series else None
        for r, metric in enumerate(metrics):
            for c, scenario in enumerate(scenarios):
                line = group[(group["metric"] == metric) & (group["scenario"] == scenario)].sort_values("value")
                x = line["value"] if numeric else line["value"].astype(str)
                err = line["std"].where(line["std"].notna(), 0.0)
                axes[r][c].errorbar(x, line["mean"], yerr=err, marker="o", capsize=3, label=label)
    for r, metric in enumerate(metrics):
        for c, scenario in enumerate(scenarios):
            ax = axes[r][c]
            ax.set_title(f"{scenario} items" if r == 0 else "")
            ax.set_xlabel(param)
            ax.set_ylabel(f"{metric} ({phase})" if c == 0 else "")
            ax.grid(alpha=0.3)
            if numeric and _log_spaced(part["value"]):
                ax.set_xscale("log", base=2)
            if series and r == 0 and c == 0:
                ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def _log_spaced(values: pd.Series) -> bool:
    """Geometric-looking grids (e.g. 2, 8, 32, ... 512) read better on a log axis."""
    v = sorted(set(float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))))
    return len(v) >= 3 and v[0] > 0 and v[-1] / v[0] >= 32


def plot_tuning(trials: pd.DataFrame, params: list[str], objective: str, path: Path, title: str = "") -> Path:
    """The objective over one parameter (a curve) or two (a heatmap with the values written in the cells)."""
    plt = _pyplot()
    if len(params) == 1:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        line = trials.sort_values(params[0])
        ax.plot(line[params[0]].astype(str), line["objective"], marker="o")
        ax.set_xlabel(params[0])
        ax.set_ylabel(objective)
    else:
        grid = trials.pivot_table(index=params[0], columns=params[1], values="objective")
        fig, ax = plt.subplots(figsize=(1.2 * grid.shape[1] + 2.5, 0.8 * grid.shape[0] + 1.5))
        image = ax.imshow(grid.to_numpy(), cmap="viridis", aspect="auto")
        ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [str(i) for i in grid.index])
        ax.set_xlabel(params[1])
        ax.set_ylabel(params[0])
        for (r, c), value in pd.DataFrame(grid.to_numpy()).stack().items():
            ax.text(c, r, f"{value:.3f}", ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(image, ax=ax, label=objective)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
