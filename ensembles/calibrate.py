"""Calibration onto the label scale: a 4-parameter logistic per target, fitted on out-of-fold predictions.

Where a challenge scores absolute errors (RMSE, MAE on UHD-IQA's 0-1 MOS) a head's raw output is not enough: the
fold models' predictions are compressed or shifted against the labels. The map is kept strictly increasing, so rank
metrics are unchanged; fitting it out of fold means it never sees a prediction made on its own training items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench import metrics


@dataclass(frozen=True)
class Calibration:
    """Per target, the parameters of the map: (b1, b2, b3, b4) of `metrics.logistic4`, or (slope, intercept) of a line
    where the logistic would not keep the ranks (see `fit_map`)."""

    params: dict[str, tuple[float, ...]]

    @classmethod
    def fit(cls, pred: pd.DataFrame, truth: pd.DataFrame, targets: Sequence[str]) -> Calibration:
        """`pred` and `truth` indexed by item id; items are matched by id."""
        truth = truth.loc[pred.index]
        return cls({t: fit_map(pred[t].to_numpy(np.float64), truth[t].to_numpy(np.float64)) for t in targets})

    def apply(self, pred: pd.DataFrame) -> pd.DataFrame:
        mapped = pred.copy()
        for target, params in self.params.items():
            x = pred[target].to_numpy(np.float64)
            mapped[target] = metrics.logistic4(x, *params) if len(params) == 4 else params[0] * x + params[1]
        return mapped

    def to_json(self) -> dict:
        return {"params": {t: list(p) for t, p in self.params.items()}}

    @classmethod
    def from_json(cls, payload: dict) -> Calibration:
        return cls({t: tuple(p) for t, p in payload["params"].items()})


def fit_map(pred: np.ndarray, truth: np.ndarray) -> tuple[float, ...]:
    """The logistic when it is strictly increasing over the predictions, so no two are tied and no order flips. Poor
    predictions (a short run, the shuffled-label control) can make it saturate into a step, which would submit one
    value for most items: then the least-squares line, or no change where even the line would not increase."""
    params = metrics.fit_logistic4(pred, truth)
    if params[0] > params[1] and np.all(np.diff(metrics.logistic4(np.unique(pred), *params)) > 0):
        return tuple(float(p) for p in params)
    slope, intercept = np.polyfit(pred, truth, 1)
    return (float(slope), float(intercept)) if slope > 0 else (1.0, 0.0)
