"""Calibration onto the label scale: a 4-parameter logistic per target, fitted on out-of-fold predictions.

Where a challenge scores absolute errors (RMSE, MAE on UHD-IQA's 0-1 MOS) a head's raw output is not enough: the
fold models' predictions are compressed or shifted against the labels. The logistic is monotone, so rank metrics
are unchanged; fitting it out of fold means it never sees a prediction made on its own training items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from workbench import metrics


@dataclass(frozen=True)
class Calibration:
    """Per target, the parameters (b1, b2, b3, b4) of `metrics.logistic4`."""

    params: dict[str, tuple[float, ...]]

    @classmethod
    def fit(cls, pred: pd.DataFrame, truth: pd.DataFrame, targets: Sequence[str]) -> Calibration:
        """`pred` and `truth` indexed by item id; items are matched by id."""
        truth = truth.loc[pred.index]
        return cls({t: tuple(float(v) for v in metrics.fit_logistic4(pred[t], truth[t])) for t in targets})

    def apply(self, pred: pd.DataFrame) -> pd.DataFrame:
        mapped = pred.copy()
        for target, params in self.params.items():
            mapped[target] = metrics.logistic4(pred[target].to_numpy(), *params)
        return mapped

    def to_json(self) -> dict:
        return {"kind": "logistic4", "params": {t: list(p) for t, p in self.params.items()}}

    @classmethod
    def from_json(cls, payload: dict) -> Calibration:
        if payload.get("kind") != "logistic4":
            raise ValueError(f"unknown calibration kind {payload.get('kind')!r}; expected 'logistic4'")
        return cls({t: tuple(p) for t, p in payload["params"].items()})
