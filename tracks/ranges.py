"""A bounded track's predictions mapped strictly inside its ranges, by a map fitted once on a submission."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

# A bounded target's margin, as a fraction of its range's width: the span of the submission's predictions goes onto
# the range shrunk by it at each end. Small, so a prediction already inside moves by at most a millionth of the width
# (the ranks and PLCC the scorers read do not move at all); large against the spacing of doubles, so some 1e10 of them
# lie between the shrunk range and a unit-scale bound for the tail. The tail's scale is the margin itself (slope 1 at
# the joints): a larger margin would lengthen the stretch past the span where later items stay distinct (some 24
# margins, then the last double inside) only by moving every prediction as much.
RANGE_MARGIN = 1e-6


@dataclass(frozen=True)
class TargetRange:
    """One target's map into the open (low, high): one positive affine map takes the span [lowest, highest] (the
    submission's predictions and the range together) onto [low + margin, high - margin]; beyond the span, where only
    items predicted later can be, an exponential tail, continuous with slope 1 at the joints, approaches the bound."""

    low: float
    high: float
    lowest: float
    highest: float
    margin: float

    def apply(self, values: np.ndarray) -> np.ndarray:
        floor, ceiling = self.low + self.margin, self.high - self.margin
        z = floor + (values - self.lowest) * ((ceiling - floor) / (self.highest - self.lowest))
        # (high - m) + m (1 - exp(-t)) written as high - m exp(-t): never below the joint in floating point either.
        above = self.high - self.margin * np.exp(-np.maximum(z - ceiling, 0) / self.margin)
        below = self.low + self.margin * np.exp(np.minimum(z - floor, 0) / self.margin)
        mapped = np.where(z > ceiling, above, np.where(z < floor, below, z))
        # Far out the tail rounds onto the bound itself: the last double inside is as close as it may come.
        return np.clip(mapped, np.nextafter(self.low, self.high), np.nextafter(self.high, self.low))


@dataclass(frozen=True)
class RangeMap:
    """A bounded track's predictions strictly inside its ranges, each row on its own: a frozen map per target, fitted
    once on the submission's predictions (Track.range_map), so the exported predictor scoring one item gives the
    submission's number. Over the submission's span it is affine, so the submission's ranks and linear correlation are
    exactly the raw predictions' (clipping would tie the extremes); it is applied even where every prediction is
    inside (moving none by more than the margin), so one definition serves both. No targets: the identity."""

    targets: dict[str, TargetRange]

    def apply(self, pred: pd.DataFrame) -> pd.DataFrame:
        mapped = pred.copy()
        for target, bounds in self.targets.items():
            mapped[target] = bounds.apply(pred[target].to_numpy(dtype=np.float64))
        return mapped

    def to_json(self) -> dict:
        return {"targets": {target: asdict(bounds) for target, bounds in self.targets.items()}}

    @classmethod
    def from_json(cls, payload: dict) -> RangeMap:
        return cls({target: TargetRange(**fields) for target, fields in payload["targets"].items()})
