"""The small report beside a run or a submission: `report.png` (out-of-fold predictions against the labels, one
panel per target, and each fold's score as a bar) and `report.md` (the tables the command printed).

A glance at the scatter shows what one number hides: a compressed or bent scale (calibration's job), a fold that
learned nothing, outliers. Figures have a fixed size in pixels, so reports compare side by side.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from common import metrics
from common.atomic import atomic_path, write_text
from common.tables import Table, markdown

PANEL_INCHES, DPI = 4, 100  # each panel 400 x 400 pixels


def write_report(
    folder: str | Path,
    title: str,
    pred: pd.DataFrame,
    truth: pd.DataFrame,
    fold_scores: Mapping[int, float],
    pooled: float,
    tables: Sequence[Table],
) -> None:
    """`pred` (out of fold) and `truth` indexed by item id with one column per target; `fold_scores` the track's score
    of each fold's items, `pooled` that of all of them together."""
    folder = Path(folder)
    targets = list(pred.columns)
    truth = truth.loc[pred.index, targets]
    # A Figure of its own (not pyplot): drawn by the Agg canvas, no window, no global state to close.
    figure = Figure(figsize=(PANEL_INCHES * (len(targets) + 1), PANEL_INCHES), dpi=DPI)
    axes = figure.subplots(1, len(targets) + 1, squeeze=False)
    for axis, target in zip(axes[0], targets):
        x, y = truth[target].to_numpy(np.float64), pred[target].to_numpy(np.float64)
        low, high = min(x.min(), y.min()), max(x.max(), y.max())
        margin = 0.05 * (high - low or 1.0)
        axis.plot([low, high], [low, high], color="0.6", linewidth=1, label="identity")
        axis.scatter(x, y, s=10, alpha=0.6, edgecolors="none")
        limits = (low - margin, high + margin)
        axis.set(xlabel=f"true {target}", ylabel="predicted, out of fold", xlim=limits, ylim=limits, aspect="equal")
        axis.set_title(f"{target}: SRCC {metrics.srcc(y, x):.3f}, PLCC {metrics.plcc(y, x):.3f}", fontsize=10)
        axis.legend(loc="upper left", fontsize=8, frameon=False)
    bars = axes[0][-1]
    folds = sorted(fold_scores)
    bars.bar([str(k) for k in folds], [fold_scores[k] for k in folds], color="tab:blue")
    bars.axhline(pooled, color="tab:orange", linewidth=1.5, label=f"pooled {pooled:.3f}")
    values = [v for v in [*fold_scores.values(), pooled] if np.isfinite(v)]
    bars.set_ylim(min([0.0, *values]), max([1.0, *values]))
    bars.set(xlabel="fold", ylabel="score")
    bars.set_title("score per fold", fontsize=10)
    bars.legend(loc="upper right", fontsize=8)
    width = PANEL_INCHES * (len(targets) + 1)  # margins fixed in inches: tight_layout would draw the figure twice
    figure.suptitle(textwrap.fill(title, int(width * 14)), fontsize=10)  # about 14 characters an inch at 10 pt
    figure.subplots_adjust(left=0.7 / width, right=1 - 0.2 / width, bottom=0.55 / PANEL_INCHES, top=0.82, wspace=0.3)
    with atomic_path(folder / "report.png") as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    write_text(folder / "report.md", f"# {title}\n\n" + "\n".join(markdown(*t) for t in tables))
