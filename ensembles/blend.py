"""Blending runs that share folds: the best single run, equal mean, rank mean, simplex weights fitted to the track's
score, a ridge stack.

Every run of a track trained on the same folds has one out-of-fold prediction per labelled item, so a blend can be
fitted on them and scored. A fitted blend scored on the predictions it was fitted to is optimistic (the in-sample
score); the nested estimate refits it once per fold on the other folds' items, predicts the held-out fold, and scores
the pooled predictions, so the weights are never scored on the predictions they were fitted to. Choosing the best run
is a fit too (the best of several out-of-fold scores is optimistic), so the best single run is a blender of its own,
estimated the same way, and `pick` submits a blend only where its nested estimate beats that run's by more than noise.

Arrays are [runs, items, targets] for the runs' predictions and [items, targets] for labels and blends. A fitted
blender is its class and its fitted attributes (named with a trailing `_`, each a float array or an int), so the
exported predictor saves it as JSON (`blender_state`) and restores it (`restore_blender`); its `predict` maps each
item on its own, the same bits whether the item is predicted alone or with the whole test list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from scipy.special import softmax

from common.registry import Registry

Score = Callable[[pd.DataFrame], float]  # the track's score of predictions indexed by labelled item id
ArrayScore = Callable[[np.ndarray], float]  # the same score of [items, targets] on the items a blend is fitted to


class BlendError(ValueError):
    """Runs that cannot be blended; the message names them."""


def check_same_folds(folds: Mapping[str, pd.Series]) -> None:
    """Each run's fold of every labelled item (indexed by item id) must be the same, or the out-of-fold predictions
    of one run were made by models that saw the other's held-out items."""
    (first, reference), *others = folds.items()
    for name, assignment in others:
        joined = pd.concat([reference.rename("a"), assignment.rename("b")], axis=1)
        differ = joined[joined["a"].ne(joined["b"])]
        if len(differ):
            item = differ.index[0]
            a, b = ("none" if pd.isna(fold) else int(fold) for fold in differ.iloc[0])
            raise BlendError(
                f"runs {first} and {name} were trained on different folds: {len(differ)} item(s) differ, e.g. "
                f"{item!r} (fold {a} against {b}); blend runs trained on the same data with the same folds= and seed="
            )


def _stacked(frames: Mapping[str, pd.DataFrame], ids: pd.Index, targets: Sequence[str], kind: str) -> np.ndarray:
    out = []
    for name, frame in frames.items():
        aligned = frame.reindex(ids)[list(targets)]
        missing = ids[aligned.isna().any(axis=1).to_numpy()]
        if len(missing):
            raise BlendError(f"run {name} has no {kind} prediction for {len(missing)} item(s), e.g. {missing[0]!r}")
        out.append(aligned.to_numpy(np.float64))
    return np.stack(out)


@dataclass(frozen=True)
class Stack:
    """Several runs' predictions on the same items: out of fold with the items' labels and folds, and test."""

    runs: tuple[str, ...]
    targets: tuple[str, ...]
    ids: pd.Index  # labelled items
    oof: np.ndarray
    truth: np.ndarray
    folds: np.ndarray
    test_ids: pd.Index
    test: np.ndarray

    @classmethod
    def of(
        cls,
        oof: Mapping[str, pd.DataFrame],
        test: Mapping[str, pd.DataFrame],
        folds: Mapping[str, pd.Series],
        truth: pd.DataFrame,
        targets: Sequence[str],
    ) -> Stack:
        """Frames indexed by item id, one per run under the run's name; `truth` holds every labelled item."""
        check_same_folds(folds)
        assignment = next(iter(folds.values()))
        ids = assignment.index
        test_ids = next(iter(test.values())).index
        return cls(
            tuple(oof),
            tuple(targets),
            ids,
            _stacked(oof, ids, targets, "out-of-fold"),
            truth.loc[ids, list(targets)].to_numpy(np.float64),
            assignment.to_numpy(),
            test_ids,
            _stacked(test, test_ids, targets, "test"),
        )

    def frame(self, pred: np.ndarray, rows: np.ndarray | None = None) -> pd.DataFrame:
        """[items, targets] of the labelled items (all, or those at `rows`) as a frame indexed by item id."""
        return pd.DataFrame(pred, index=self.ids if rows is None else self.ids[rows], columns=list(self.targets))

    def fold_scores(self, pred: np.ndarray, score: Score) -> dict[int, float]:
        return {int(k): score(self.frame(pred[self.folds == k], self.folds == k)) for k in np.unique(self.folds)}


def _over_runs(weights: np.ndarray, preds: Sequence[np.ndarray]) -> np.ndarray:
    """The sum over runs of `weights[r] * preds[r]` (weights [runs] or [runs, targets]), added elementwise in the runs'
    order: a BLAS product or numpy's pairwise reduction may sum in an order that depends on the batch's shape, which
    would make an item's blend differ in its last bits alone and in the whole test list."""
    return sum(w * p for w, p in zip(weights, preds))


class Blender(Protocol):
    def fit(self, oof: np.ndarray, truth: np.ndarray, score: ArrayScore) -> Blender: ...

    def predict(self, preds: np.ndarray) -> np.ndarray: ...

    def describe(self, runs: Sequence[str]) -> str: ...


# The order of registration is the order of simplicity, the single run first: the first of equals is the simplest.
BLENDS: Registry[type[Blender]] = Registry("blend")


def _finite(value: float) -> float:
    """A score that could not be computed (constant predictions) ranks below every score that could."""
    return value if np.isfinite(value) else -np.inf


@BLENDS.register("best")
class BestRun:
    """The one run with the best score on the items fitted on, alone (the first of equals): what a user could submit
    without blending, so the candidate every blend has to beat. Its nested estimate chooses the run on the other folds
    and scores that choice on the held-out fold, so it pays for the choice as a fitted blend pays for its weights."""

    def fit(self, oof: np.ndarray, truth: np.ndarray, score: ArrayScore) -> BestRun:
        self.run_ = int(np.argmax([_finite(score(pred)) for pred in oof]))
        return self

    def predict(self, preds: np.ndarray) -> np.ndarray:
        return preds[self.run_]

    def describe(self, runs: Sequence[str]) -> str:
        return f"{runs[self.run_]} alone"


@BLENDS.register("mean")
class MeanBlend:
    """Equal weights: nothing fitted, so its in-sample score is already honest."""

    def fit(self, oof: np.ndarray, truth: np.ndarray, score: ArrayScore) -> MeanBlend:
        return self

    def predict(self, preds: np.ndarray) -> np.ndarray:
        return _over_runs(np.ones(len(preds)), preds) / len(preds)

    def describe(self, runs: Sequence[str]) -> str:
        return "equal weights"


def _positions(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Where each of `values` [items, targets] falls among the sorted `reference` [n, targets], per target: its mid
    rank over n, in [0, 1] (the i-th of n distinct reference values itself sits at (i - 0.5) / n)."""
    return np.column_stack(
        [
            (np.searchsorted(ref, v, "left") + np.searchsorted(ref, v, "right")) / (2 * len(ref))
            for ref, v in zip(reference.T, values.T)
        ]
    )


@BLENDS.register("rank")
class RankBlend:
    """Each run's prediction replaced by its rank among that run's predictions on the items fitted on, the ranks
    averaged, and that consensus placed among the consensus of the fitted items and mapped onto the quantiles of their
    labels. The order is blind to any run's scale (or any monotone distortion of it); the values follow the label
    distribution, so the export range holds and absolute metrics stay meaningful. Every step is a fixed map learned
    on the fitted items, so a held-out fold or the test list is placed item by item, never ranked within itself."""

    def fit(self, oof: np.ndarray, truth: np.ndarray, score: ArrayScore) -> RankBlend:
        self.runs_ = np.sort(oof, axis=1)
        self.consensus_ = np.sort(self._consensus(oof), axis=0)
        self.labels_ = np.sort(truth, axis=0)
        return self

    def _consensus(self, preds: np.ndarray) -> np.ndarray:
        return _over_runs(np.ones(len(preds)), [_positions(ref, p) for ref, p in zip(self.runs_, preds)]) / len(preds)

    def predict(self, preds: np.ndarray) -> np.ndarray:
        quantile = _positions(self.consensus_, self._consensus(preds))
        return np.column_stack([np.quantile(labels, q) for labels, q in zip(self.labels_.T, quantile.T)])

    def describe(self, runs: Sequence[str]) -> str:
        return "mean rank on the label quantiles"


@BLENDS.register("weights")
class WeightsBlend:
    """Non-negative weights summing to one that maximise the track's score on the items fitted on. The score (rank
    correlations, pair accuracies) is piecewise constant in the weights, so there is no gradient to follow:
    Nelder-Mead over softmax logits (any logits give simplex weights) from the equal mix and from near the best single
    run, with a simplex wide enough to see past flat steps; the best of those ends, the equal mix and each single run
    is kept. Deterministic: fixed starts, no random draws."""

    def fit(self, oof: np.ndarray, truth: np.ndarray, score: ArrayScore) -> WeightsBlend:
        from scipy.optimize import minimize  # fitting only: an exported predictor applies the weights

        runs = len(oof)

        def value(weights: np.ndarray) -> float:
            return _finite(score(_over_runs(weights, oof)))

        def weights(free: np.ndarray) -> np.ndarray:  # the first run's logit is pinned at 0
            return softmax(np.concatenate([[0.0], free]))

        candidates = [np.full(runs, 1 / runs), *np.eye(runs)]
        values = [value(w) for w in candidates]
        best_run = 4.0 * np.eye(runs)[int(np.argmax(values[1:]))]
        for start in (np.zeros(runs - 1), best_run[1:] - best_run[0]):
            simplex = np.vstack([start, start + np.eye(runs - 1)])
            options = {"initial_simplex": simplex, "xatol": 1e-2, "fatol": 1e-6, "maxfev": 60 * runs}
            found = weights(
                minimize(lambda free: -value(weights(free)), start, method="Nelder-Mead", options=options).x
            )
            candidates.append(found)
            values.append(value(found))
        self.weights_ = candidates[int(np.argmax(values))]
        return self

    def predict(self, preds: np.ndarray) -> np.ndarray:
        return _over_runs(self.weights_, preds)

    def describe(self, runs: Sequence[str]) -> str:
        return ", ".join(f"{w:.3f} {run}" for w, run in zip(self.weights_, runs))


RIDGE_ALPHAS = np.logspace(-3, 3, 13)


@BLENDS.register("ridge")
class RidgeBlend:
    """Per target, a ridge regression of the labels on the runs' predictions with an intercept, its penalty chosen by
    efficient leave-one-out over a log grid: a linear stack that may rescale and shift, and weigh a run negatively.
    Only the fitted line is kept (coefficients [runs, targets], intercepts and penalties [targets])."""

    def fit(self, oof: np.ndarray, truth: np.ndarray, score: ArrayScore) -> RidgeBlend:
        from sklearn.linear_model import RidgeCV  # fitting only: an exported predictor applies the line

        models = [RidgeCV(alphas=RIDGE_ALPHAS).fit(oof[:, :, t].T, truth[:, t]) for t in range(truth.shape[1])]
        self.coef_ = np.column_stack([m.coef_ for m in models])
        self.intercept_ = np.array([m.intercept_ for m in models])
        self.alpha_ = np.array([m.alpha_ for m in models])
        return self

    def predict(self, preds: np.ndarray) -> np.ndarray:
        return _over_runs(self.coef_, preds) + self.intercept_

    def describe(self, runs: Sequence[str]) -> str:
        return "; ".join(
            " ".join(f"{c:+.3f} {run}" for c, run in zip(coef, runs)) + f" {intercept:+.3f} (alpha {alpha:.3g})"
            for coef, intercept, alpha in zip(self.coef_.T, self.intercept_, self.alpha_)
        )


def blender_state(name: str, blender: Blender) -> dict:
    """A fitted blender as JSON: its name in BLENDS and its fitted attributes, arrays as nested lists."""
    fitted = {}
    for key, value in vars(blender).items():
        if not key.endswith("_"):
            continue
        if isinstance(value, np.ndarray) and value.dtype == np.float64:
            fitted[key] = value.tolist()
        elif isinstance(value, int):
            fitted[key] = value
        else:
            raise TypeError(f"blend {name}: fitted {key} is a {type(value).__name__}, not a float array or an int")
    return {"name": name, "fitted": fitted}


def restore_blender(state: dict) -> Blender:
    """The blender `blender_state` saved, predicting exactly as it did."""
    blender = BLENDS.get(state["name"])()
    for key, value in state["fitted"].items():
        setattr(blender, key, value if isinstance(value, int) else np.asarray(value, dtype=np.float64))
    return blender


@dataclass(frozen=True)
class Blended:
    """One blend of a stack: fitted on every labelled item (which makes the test predictions and the in-sample
    score), and its nested out-of-fold predictions with their score, and that score with each fold left out."""

    name: str
    blender: Blender
    in_sample: float
    nested: float
    oof: np.ndarray  # each fold predicted by the blend fitted on the other folds
    test: np.ndarray
    leave_fold_out: np.ndarray  # [folds]: the nested predictions' score without each fold's items


def blend(stack: Stack, name: str, score: Score) -> Blended:
    if name not in BLENDS:
        raise ValueError(f"blend={name!r}: expected one of auto, {', '.join(BLENDS)}")

    def fitted(rows: np.ndarray) -> Blender:
        blender = BLENDS.get(name)()
        return blender.fit(stack.oof[:, rows], stack.truth[rows], lambda pred: score(stack.frame(pred, rows)))

    full = fitted(np.arange(len(stack.ids)))
    nested = np.empty_like(stack.truth)
    folds = np.unique(stack.folds)
    for k in folds:
        held = stack.folds == k
        nested[held] = fitted(np.flatnonzero(~held)).predict(stack.oof[:, held])
    without = np.array([score(stack.frame(nested[stack.folds != k], stack.folds != k)) for k in folds])
    in_sample = score(stack.frame(full.predict(stack.oof)))
    return Blended(name, full, in_sample, score(stack.frame(nested)), nested, full.predict(stack.test), without)


def gain(a: Blended, b: Blended) -> tuple[float, float]:
    """`a.nested - b.nested` and one standard error of it: the delete-one-fold jackknife of that pooled difference
    (the fits are kept; only the items scored change). Both are scored on the same items, so what they share (a hard
    fold) cancels, and what is left is how much the difference rests on which items happened to be labelled."""
    d = a.leave_fold_out - b.leave_fold_out
    return a.nested - b.nested, float(np.sqrt((len(d) - 1) / len(d) * np.sum((d - d.mean()) ** 2)))


TIE = 1e-9  # nested estimates closer than this are equal: the same predictions summed in another order


@dataclass(frozen=True)
class Pick:
    """The blend to submit, and why, in words for the table."""

    chosen: Blended
    why: str


def pick(blends: Sequence[Blended], name: str = "auto") -> Pick:
    """The blend named or, with `auto`, the best single run unless a blend's nested estimate beats the run's by more
    than one standard error of the difference; of the blends that do, the highest nested estimate (the first of
    equals, in the order of BLENDS). Fitted to a few folds' items, a blend finds gains that are not there (identical
    runs, a run with nothing to add), and the single run is the simpler submission: this is the one-standard-error
    rule of model selection, with the run as the simplest model. Without a `best` candidate: the highest estimate."""
    if name != "auto":
        return Pick(next(b for b in blends if b.name == name), f"named by blend={name}")
    best = next((b for b in blends if b.name == "best"), None)
    others = {b.name: (b, *gain(b, best)) for b in blends if best is not None and b is not best}
    if not others:
        return Pick(max(blends, key=lambda b: _finite(b.nested)), "the highest nested estimate")
    beating = [b for b, more, error in others.values() if _finite(more) > max(error, TIE)]
    if beating:
        chosen = max(beating, key=lambda b: _finite(b.nested))
        _, more, error = others[chosen.name]
        return Pick(
            chosen,
            f"its nested estimate beats the best single run's {best.nested:.4f} by {more:+.4f}, more than one "
            f"standard error ({error:.4f})" + (", the most of the blends that do" if len(beating) > 1 else ""),
        )
    closest, more, error = max(others.values(), key=lambda entry: _finite(entry[0].nested))
    return Pick(
        best,
        f"no blend's nested estimate beats the best single run's {best.nested:.4f} by more than one standard error "
        f"of the difference (the highest, {closest.name}, by {more:+.4f} against {error:.4f})",
    )
