"""Agreement between predicted and subjective quality scores, as challenges rank submissions.

Everything takes 1-D array-likes of equal length and returns plain Python floats, so results
can go straight into JSON run records. Degenerate inputs (a constant column, fewer than two
items) give ``nan`` rather than raising: a fold that happens to be constant should show up as
a missing number in a table, not abort a sweep.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import expit

__all__ = [
    "all_pairs",
    "fit_logistic4",
    "fit_logistic5",
    "krcc",
    "logistic4",
    "logistic5",
    "mae",
    "pair_accuracy",
    "plcc",
    "plcc_logistic",
    "rmse",
    "rmse_logistic",
    "srcc",
    "summary",
]

_MAXFEV = 100_000


def _vectors(**arrays: ArrayLike) -> list[NDArray[np.float64]]:
    """Coerce named inputs to equal-length 1-D float arrays; the names make length errors readable."""
    out = {name: np.asarray(a, dtype=np.float64) for name, a in arrays.items()}
    for name, a in out.items():
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    lengths = {name: len(a) for name, a in out.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"length mismatch: {detail}")
    return list(out.values())


def _degenerate(*arrays: NDArray[np.float64]) -> bool:
    """True when a correlation is undefined: under two items or a constant input."""
    return any(len(a) < 2 or np.ptp(a) == 0 for a in arrays)


def srcc(pred: ArrayLike, true: ArrayLike) -> float:
    """Spearman rank correlation; nan when an input is constant."""
    p, t = _vectors(pred=pred, true=true)
    if _degenerate(p, t):
        return float("nan")
    return float(stats.spearmanr(p, t).statistic)


def krcc(pred: ArrayLike, true: ArrayLike) -> float:
    """Kendall tau-b, which corrects for the ties that coarse MOS scales produce."""
    p, t = _vectors(pred=pred, true=true)
    if _degenerate(p, t):
        return float("nan")
    return float(stats.kendalltau(p, t, variant="b").statistic)


def plcc(pred: ArrayLike, true: ArrayLike) -> float:
    """Pearson correlation of the raw predictions, without any monotone mapping."""
    p, t = _vectors(pred=pred, true=true)
    if _degenerate(p, t):
        return float("nan")
    return float(stats.pearsonr(p, t).statistic)


def rmse(pred: ArrayLike, true: ArrayLike) -> float:
    p, t = _vectors(pred=pred, true=true)
    return float(np.sqrt(np.mean((p - t) ** 2))) if len(p) else float("nan")


def mae(pred: ArrayLike, true: ArrayLike) -> float:
    p, t = _vectors(pred=pred, true=true)
    return float(np.mean(np.abs(p - t))) if len(p) else float("nan")


def logistic4(x: ArrayLike, b1: float, b2: float, b3: float, b4: float) -> NDArray[np.float64]:
    """``b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))``, written with expit so large |x| cannot overflow."""
    x = np.asarray(x, dtype=np.float64)
    return b2 + (b1 - b2) * expit((x - b3) / abs(b4))


def logistic5(x: ArrayLike, b1: float, b2: float, b3: float, b4: float, b5: float) -> NDArray[np.float64]:
    """``b1 * (0.5 - 1 / (1 + exp(b2 * (x - b3)))) + b4 * x + b5``: a sigmoid plus a linear trend."""
    x = np.asarray(x, dtype=np.float64)
    return b1 * (0.5 - expit(-b2 * (x - b3))) + b4 * x + b5


def _fit(
    model: Callable[..., NDArray[np.float64]],
    p0: list[float],
    pred: NDArray[np.float64],
    true: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Least-squares fit of ``model``; returns ``p0`` unchanged when the fit cannot be made.

    That covers non-convergence and having fewer items than parameters. Falling back to the
    starting point keeps a sweep alive, and the resulting poor PLCC makes the failure visible
    in the scores rather than as an exception.
    """
    if len(pred) < len(p0):
        return np.asarray(p0, dtype=np.float64)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # Covariance estimates are irrelevant here; only the parameters are used.
        warnings.simplefilter("ignore", OptimizeWarning)
        try:
            params, _ = curve_fit(model, pred, true, p0=p0, maxfev=_MAXFEV)
        except RuntimeError:
            return np.asarray(p0, dtype=np.float64)
    return np.asarray(params, dtype=np.float64)


def fit_logistic4(pred: ArrayLike, true: ArrayLike) -> NDArray[np.float64]:
    """Fit :func:`logistic4` mapping ``pred`` onto ``true``; p0 follows the VQA-challenge convention."""
    p, t = _vectors(pred=pred, true=true)
    p0 = [float(t.max()), float(t.min()), float(p.mean()), 0.5]
    return _fit(logistic4, p0, p, t)


def fit_logistic5(pred: ArrayLike, true: ArrayLike, p0: list[float] | None = None) -> NDArray[np.float64]:
    """Fit :func:`logistic5`; p0 by default starts with a flat sigmoid (b2=0), as the published evaluation scripts."""
    p, t = _vectors(pred=pred, true=true)
    p0 = [10.0, 0.0, float(p.mean()), 0.1, 0.1] if p0 is None else p0
    return _fit(logistic5, p0, p, t)


def _logistic_mapped(pred: ArrayLike, true: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """``(logistic4(pred), true)`` with fitted parameters; None when a constant input leaves the map undefined."""
    p, t = _vectors(pred=pred, true=true)
    if _degenerate(p, t):
        return None
    return logistic4(p, *fit_logistic4(p, t)), t


def plcc_logistic(pred: ArrayLike, true: ArrayLike) -> float:
    """PLCC after the 4-parameter logistic map, so a monotone non-linear scale is not penalised."""
    mapped = _logistic_mapped(pred, true)
    return float("nan") if mapped is None else plcc(*mapped)


def rmse_logistic(pred: ArrayLike, true: ArrayLike) -> float:
    """RMSE after the 4-parameter logistic map, i.e. in the units of ``true``."""
    mapped = _logistic_mapped(pred, true)
    return float("nan") if mapped is None else rmse(*mapped)


def pair_accuracy(score_a: ArrayLike, score_b: ArrayLike, rank: ArrayLike) -> float:
    """Fraction of pairs whose order is predicted right, by the KVQ rule.

    ``rank`` is 1 when video a is better and 2 otherwise; the prediction is 1 when
    ``score_a >= score_b``, so a tied prediction counts as "a is better".
    """
    a, b, r = _vectors(score_a=score_a, score_b=score_b, rank=rank)
    if not np.isin(r, (1, 2)).all():
        raise ValueError(f"rank must contain only 1 and 2, got values {np.unique(r).tolist()}")
    if len(r) == 0:
        return float("nan")
    predicted = np.where(a >= b, 1, 2)
    return float(np.mean(predicted == r))


def all_pairs(
    true: ArrayLike,
    groups: ArrayLike | None = None,
    same_group: bool | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Every unordered pair ``i < j`` with distinct true scores, labelled in the KVQ rank convention.

    Returns ``(i, j, rank)`` with rank 1 when ``true[i] > true[j]`` and 2 otherwise; tied
    pairs carry no order and are dropped. With ``groups``, ``same_group=True`` keeps only
    pairs within a group (e.g. same source video) and ``False`` only pairs across groups;
    ``None`` keeps both.
    """
    (t,) = _vectors(true=true)
    i, j = np.triu_indices(len(t), k=1)
    keep = t[i] != t[j]
    if groups is not None and np.shape(groups) != t.shape:
        raise ValueError(f"length mismatch: true has {len(t)}, groups has shape {np.shape(groups)}")
    if same_group is not None:
        if groups is None:
            raise ValueError("same_group was given but groups is None")
        g = np.asarray(groups)
        keep &= (g[i] == g[j]) == same_group
    i, j = i[keep].astype(np.int64), j[keep].astype(np.int64)
    rank = np.where(t[i] > t[j], 1, 2).astype(np.int64)
    return i, j, rank


def summary(pred: ArrayLike, true: ArrayLike) -> dict[str, float]:
    """The standard table row: correlations, logistic-mapped PLCC and raw errors."""
    p, t = _vectors(pred=pred, true=true)
    return {
        "srcc": srcc(p, t),
        "krcc": krcc(p, t),
        "plcc": plcc(p, t),
        "plcc_logistic": plcc_logistic(p, t),
        "rmse": rmse(p, t),
        "mae": mae(p, t),
    }
