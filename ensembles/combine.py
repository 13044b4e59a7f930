"""Averaging predictions: over test-time views first, then over the fold models.

Predictions travel in long format, one row per (fold, item_id, view) with one column per target; the result is a
frame indexed by item_id with one column per target.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def select_views(pred: pd.DataFrame, views: Sequence[str]) -> pd.DataFrame:
    """Rows of the chosen views; every chosen view must be present."""
    if not views:
        return pred
    missing = sorted(set(views) - set(pred["view"].unique()))
    if missing:
        raise ValueError(
            f"view(s) {', '.join(missing)} not predicted (available: {', '.join(sorted(pred['view'].unique()))})"
        )
    return pred[pred["view"].isin(list(views))]


def mean_over_views(pred: pd.DataFrame, targets: Sequence[str], views: Sequence[str] = ()) -> pd.DataFrame:
    keys = [c for c in ("fold", "item_id") if c in pred.columns]
    return select_views(pred, views).groupby(keys, sort=False)[list(targets)].mean().reset_index()


def fold_ensemble(pred: pd.DataFrame, targets: Sequence[str], views: Sequence[str] = ()) -> pd.DataFrame:
    """The k-fold test prediction: each fold model's view mean, then the plain mean over folds."""
    per_fold = mean_over_views(pred, targets, views)
    return per_fold.groupby("item_id", sort=False)[list(targets)].mean()
