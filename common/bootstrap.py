"""The bootstrap over groups, and the scores of many resamples at once.

A resample draws groups (a source and its processed versions) with replacement, never single items of a group: items
of one group are not independent, and resampling them apart would make an interval too narrow. A resample is stored
as each item's count in it, a row of weights, so a score of the resample is a weighted score of the original items
(a pair of copies of one item is a tie and counts as the expanded sample would count it), and a thousand resamples
are a few matrix products instead of a thousand calls. Each kernel equals its `common.metrics` counterpart on the
expanded sample (tests/test_bootstrap.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numpy.typing import ArrayLike, NDArray

RESAMPLES = 1000
LEVEL = 0.95
FLAT = 1e-12  # a variance this small against the mean square is a constant side: its correlation is undefined
CHUNK = 64  # resamples per block: a block of [CHUNK, items] float64 ranks stays small at 30,000 items


def group_counts(groups: ArrayLike, resamples: int, seed: int) -> Iterator[NDArray[np.float64]]:
    """Blocks of rows of item weights, [block, items]: each row one resample of the groups (as many draws as there
    are groups), each item weighted by how often its group was drawn. The same seed gives the same resamples, so
    two runs scored on the same items are compared on the same draws (a paired bootstrap)."""
    names, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, CHUNK):
        draws = rng.integers(0, len(names), size=(min(CHUNK, resamples - start), len(names)))
        counts = np.zeros((len(draws), len(names)))
        np.add.at(counts, (np.arange(len(draws))[:, None], draws), 1.0)
        yield counts[:, inverse]


def resampled(
    score: Callable[[NDArray[np.float64]], dict[str, NDArray[np.float64]]],
    groups: ArrayLike,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, NDArray[np.float64]]:
    """`score` (weights [block, items] -> named scores [block]) over every block of resamples, joined."""
    blocks = [score(weights) for weights in group_counts(groups, resamples, seed)]
    return {name: np.concatenate([block[name] for block in blocks]) for name in blocks[0]}


def interval(values: ArrayLike, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of resampled scores; a resample whose score is undefined (nan) is left out."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(v, [tail, 100 - tail])
    return float(low), float(high)


def weighted_plcc(pred: ArrayLike, true: ArrayLike, weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pearson's r of each row's weighted items ([rows] from [rows, items] weights and 1-D or [rows, items] values);
    nan where a side is constant."""
    p, t = _centred(pred), _centred(true)
    total = weights.sum(axis=1)

    def moment(*factors: NDArray[np.float64]) -> NDArray[np.float64]:
        if all(f.ndim == 1 for f in factors):
            return weights @ np.prod(factors, axis=0) / total
        spelled = ",".join("ij" if f.ndim == 2 else "j" for f in factors)
        return np.einsum(f"ij,{spelled}->i", weights, *factors, optimize=False) / total

    mean_p, mean_t = moment(p), moment(t)
    cov = moment(p, t) - mean_p * mean_t
    var_p, var_t = moment(p, p) - mean_p**2, moment(t, t) - mean_t**2
    constant = (var_p <= FLAT * moment(p, p)) | (var_t <= FLAT * moment(t, t))  # one value drawn, up to rounding
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(np.clip(var_p, 0, None) * np.clip(var_t, 0, None))
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def weighted_ranks(values: ArrayLike, weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each item's mid-rank within each row's weighted sample ([rows, items]): an item counted c times, tied with
    itself and with equal values, takes the mean of the ranks its block spans, as scipy ranks the expanded sample."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(x[order]) != 0])
    block = np.cumsum(np.r_[False, np.diff(x[order]) != 0])  # each sorted item's block of equal values
    sizes = np.add.reduceat(weights[:, order], starts, axis=1)
    midranks = np.cumsum(sizes, axis=1) - (sizes - 1) / 2
    ranks = np.empty_like(weights)
    ranks[:, order] = midranks[:, block]
    return ranks


def weighted_srcc(pred: ArrayLike, true: ArrayLike, weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Spearman's rho of each row's weighted items: Pearson's r of their weighted mid-ranks."""
    return weighted_plcc(weighted_ranks(pred, weights), weighted_ranks(true, weights), weights)


def weighted_pair_accuracy(
    pred: ArrayLike, pairs: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]], weights: NDArray
) -> NDArray[np.float64]:
    """The KVQ pair accuracy (common.metrics.pair_accuracy over `pairs` from all_pairs) of each row: a pair of
    items counted a and b times stands for a * b pairs of the expanded sample; nan where no pair is drawn."""
    p = np.asarray(pred, dtype=np.float64)
    i, j, rank = pairs
    right = (np.where(p[i] >= p[j], 1, 2) == rank).astype(np.float64)
    drawn = weights[:, i] * weights[:, j]
    total = drawn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, drawn @ right / total, np.nan)


def _centred(values: ArrayLike) -> NDArray[np.float64]:
    """Values less their plain mean, so the moments above lose no digits to a large offset."""
    a = np.asarray(values, dtype=np.float64)
    return a - a.mean(axis=-1, keepdims=True) if a.size else a
