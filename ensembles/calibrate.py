"""Calibration onto the label scale: a 4- or 5-parameter logistic per target, fitted on out-of-fold predictions.

Where a leaderboard scores raw PLCC or absolute errors (RMSE, MAE on UHD-IQA's 0-1 MOS) a head's or a blend's raw
output is not enough: its predictions are compressed, bent or shifted against the labels. The map is kept strictly
increasing, so rank metrics are unchanged; fitting it out of fold means it never sees a prediction made on its own
training items. A track declares the kind it wants (`Track.calibrate`); `submit calibration=` overrides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common import metrics


def fit_logistic5(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The published start (a flat sigmoid) can stall on a near-line; the 4-parameter fit rewritten in the 5-parameter
    form (no linear term) is a second start, and the closer fit of the two is kept."""
    upper, lower, centre, width = metrics.fit_logistic4(pred, truth)
    as_five = [upper - lower, 1 / abs(width), centre, 0.0, (upper + lower) / 2]
    fits = [metrics.fit_logistic5(pred, truth), metrics.fit_logistic5(pred, truth, as_five)]
    return min(fits, key=lambda params: float(np.sum((metrics.logistic5(pred, *params) - truth) ** 2)))


# name -> (map, fit); `none` leaves predictions as they are.
LOGISTICS = {"logistic4": (metrics.logistic4, metrics.fit_logistic4), "logistic5": (metrics.logistic5, fit_logistic5)}
KINDS = ("none", *LOGISTICS)


CALIBRATION = "calibration.json"  # the fitted map, beside a run or a submission


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"calibration={kind!r}: expected one of {', '.join(KINDS)}")
    return kind


@dataclass(frozen=True)
class Calibration:
    """What was asked (`kind`) and, per target, the map actually used with its parameters: the logistic asked for, or
    `line` (slope, intercept) where the logistic would not keep the ranks (see `fit_map`)."""

    kind: str
    maps: dict[str, tuple[str, tuple[float, ...]]]

    @classmethod
    def fit(cls, kind: str, pred: pd.DataFrame, truth: pd.DataFrame, targets: Sequence[str]) -> Calibration:
        """`pred` and `truth` indexed by item id; items are matched by id, and each target's map is fitted on the
        items labelled on it (a NaN label is a missing one)."""
        if check_kind(kind) == "none":
            return cls(kind, {})
        truth = truth.loc[pred.index]
        maps = {}
        for target in targets:
            y = truth[target].to_numpy(np.float64)
            known = np.isfinite(y)
            maps[target] = fit_map(kind, pred[target].to_numpy(np.float64)[known], y[known])
        return cls(kind, maps)

    def apply(self, pred: pd.DataFrame) -> pd.DataFrame:
        mapped = pred.copy()
        for target, (form, params) in self.maps.items():
            x = pred[target].to_numpy(np.float64)
            mapped[target] = params[0] * x + params[1] if form == "line" else LOGISTICS[form][0](x, *params)
        return mapped

    def to_json(self) -> dict:
        return {"kind": self.kind, "maps": {t: {"form": f, "params": list(p)} for t, (f, p) in self.maps.items()}}

    @classmethod
    def from_json(cls, payload: dict) -> Calibration:
        return cls(payload["kind"], {t: (m["form"], tuple(m["params"])) for t, m in payload["maps"].items()})


def fit_map(kind: str, pred: np.ndarray, truth: np.ndarray) -> tuple[str, tuple[float, ...]]:
    """The logistic when it is strictly increasing over the predictions, so no two are tied and no order flips. Poor
    predictions (a short run, the shuffled-label control) can make it saturate into a step, which would submit one
    value for most items: then the least-squares line, or no change where even the line would not increase."""
    curve, fit = LOGISTICS[kind]
    params = fit(pred, truth)
    if np.all(np.diff(curve(np.unique(pred), *params)) > 0):
        return kind, tuple(float(p) for p in params)
    slope, intercept = np.polyfit(pred, truth, 1)
    return "line", (float(slope), float(intercept)) if slope > 0 else (1.0, 0.0)
