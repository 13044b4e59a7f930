"""Blending runs: fitted weights stay on the simplex and use complementary runs; the nested estimate does not leak;
runs on other folds are refused; the rank blend sees only ranks; the best single run is chosen fold by fold in its
nested estimate, and auto submits a blend only where that beats the run by more than noise; `submit runs=a,b`
writes the blend's zip, and with `blend=best` the better run's, saying why. Every fitted blend predicts each item on
its own and comes back from JSON predicting the same bits; the ridge stack predicts as scikit-learn's does."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import RidgeCV

from common import metrics
from ensembles.blend import (
    BLENDS,
    RIDGE_ALPHAS,
    BlendError,
    RidgeBlend,
    Stack,
    blend,
    blender_state,
    gain,
    pick,
    restore_blender,
)
from ensembles.combine import fold_ensemble
from ensembles.submit import Choice, RunPredictions, submit_runs
from tracks import get_track
from workbench.cli import main
from workbench.runs import Run

ITEMS, FOLDS = 120, 4


def _score(truth: pd.DataFrame):
    def score(pred: pd.DataFrame) -> float:
        p, t = pred["score"], truth.loc[pred.index, "score"]
        return (metrics.srcc(p, t) + metrics.plcc(p, t)) / 2

    return score


def _stack(runs: dict[str, np.ndarray], truth: np.ndarray, folds: dict[str, np.ndarray] | None = None) -> Stack:
    ids = pd.Index([f"i{k:03d}" for k in range(len(truth))])
    test_ids = pd.Index(["t0", "t1", "t2", "t3"])
    assignment = np.arange(len(truth)) % FOLDS
    return Stack.of(
        {name: pd.DataFrame({"score": pred}, index=ids) for name, pred in runs.items()},
        {name: pd.DataFrame({"score": pred[::-30]}, index=test_ids) for name, pred in runs.items()},  # as if new
        {name: pd.Series((folds or {}).get(name, assignment), index=ids) for name in runs},
        pd.DataFrame({"score": truth}, index=ids),
        ["score"],
    )


def _complementary() -> Stack:
    """Two runs with complementary errors: each is good on one half of the items and noisy on the other."""
    rng = np.random.default_rng(0)
    truth = rng.normal(size=ITEMS)
    first_half = np.arange(ITEMS) < ITEMS // 2
    noise = rng.normal(scale=1.5, size=(2, ITEMS))
    a = truth + np.where(first_half, noise[0], 0.2 * noise[0])  # good on the second half only
    b = truth + np.where(first_half, 0.2 * noise[1], noise[1])  # good on the first half only
    return _stack({"a": a, "b": b}, truth)


def test_weights_are_on_the_simplex_and_beat_each_run_with_complementary_errors():
    stack = _complementary()
    score = _score(stack.frame(stack.truth))
    weights = blend(stack, "weights", score)
    w = weights.blender.weights_
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    singles = [score(stack.frame(stack.oof[i])) for i in range(2)]
    assert weights.in_sample > max(singles) + 0.02
    np.testing.assert_allclose(weights.test, np.tensordot(w, stack.test, axes=1))


@pytest.mark.parametrize("name", ["weights", "ridge"])
def test_the_nested_estimate_does_not_leak_on_noise_runs(name):
    rng = np.random.default_rng(2)
    truth = rng.normal(size=ITEMS)
    stack = _stack({f"noise{k}": rng.normal(size=ITEMS) for k in range(3)}, truth)
    result = blend(stack, name, _score(stack.frame(stack.truth)))
    assert result.in_sample > 0.05  # the fit finds structure in noise ...
    assert result.nested < result.in_sample - 0.1  # ... which the held-out folds do not confirm


def test_runs_on_other_folds_are_refused_by_name():
    truth = np.linspace(0, 1, ITEMS)
    other = (np.arange(ITEMS) + 1) % FOLDS
    with pytest.raises(BlendError, match="runs a and b were trained on different folds"):
        _stack({"a": truth, "b": truth}, truth, folds={"b": other})


def test_the_rank_blend_ignores_a_monotone_transform_of_a_run():
    rng = np.random.default_rng(3)
    truth = rng.uniform(1, 5, ITEMS)
    a, b = truth + rng.normal(size=(2, ITEMS))
    score = _score(pd.DataFrame({"score": truth}, index=_stack({"a": a}, truth).ids))
    plain = blend(_stack({"a": a, "b": b}, truth), "rank", score)
    bent = blend(_stack({"a": np.exp(a), "b": b}, truth), "rank", score)
    np.testing.assert_array_equal(plain.oof, bent.oof)
    np.testing.assert_array_equal(plain.test, bent.test)
    assert truth.min() <= plain.oof.min() and plain.oof.max() <= truth.max()  # on the label scale


def _candidates(stack: Stack):
    score = _score(stack.frame(stack.truth))
    blends = [blend(stack, name, score) for name in BLENDS]
    return score, {b.name: b for b in blends}, blends


def test_the_best_run_is_chosen_on_the_other_folds_and_scored_on_the_held_out_one():
    rng = np.random.default_rng(5)
    truth = rng.normal(size=ITEMS)
    fold = np.arange(ITEMS) % FOLDS
    # a is the better run except on fold 0, where it is noise: the choice made without fold 0 differs from the others
    a = np.where(fold == 0, rng.normal(size=ITEMS), truth + 0.5 * rng.normal(size=ITEMS))
    b = truth + 0.8 * rng.normal(size=ITEMS)
    stack = _stack({"a": a, "b": b}, truth)
    score, blends, _ = _candidates(stack)
    best = blends["best"]
    chosen = []
    for k in range(FOLDS):
        rows = np.flatnonzero(fold != k)
        on_the_others = [score(stack.frame(stack.oof[r, rows], rows)) for r in range(2)]
        chosen.append(int(np.argmax(on_the_others)))
        np.testing.assert_array_equal(best.oof[fold == k], stack.oof[chosen[-1], fold == k])
    assert len(set(chosen)) == 2  # the estimate pays for the choice, fold by fold
    assert best.nested == pytest.approx(score(stack.frame(best.oof)))
    full = int(np.argmax([score(stack.frame(p)) for p in stack.oof]))
    assert best.in_sample == max(score(stack.frame(p)) for p in stack.oof)
    np.testing.assert_array_equal(best.test, stack.test[full])
    assert best.blender.describe(stack.runs) == f"{stack.runs[full]} alone"


@pytest.mark.parametrize(
    "seed, above",
    [(0, False), (7, True)],  # every blend below the run (the case), or one above it by less than noise
)
def test_auto_submits_the_better_run_alone_when_the_other_is_clearly_worse(seed, above):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=ITEMS)
    good = truth + 0.6 * rng.normal(size=ITEMS)
    poor = good + rng.normal(size=ITEMS)  # worse, and nothing in it that the good run lacks
    stack = _stack({"good": good, "poor": poor}, truth)
    _, blends, candidates = _candidates(stack)
    top = max((b for b in candidates if b.name != "best"), key=lambda b: b.nested)
    more, error = gain(top, blends["best"])
    assert (0 < more < error) if above else more < 0
    picked = pick(candidates)
    assert picked.chosen.name == "best"
    np.testing.assert_array_equal(picked.chosen.test, stack.test[0])  # the good run's test predictions, alone
    assert picked.chosen.nested > max(b.nested for b in candidates if b.name in ("mean", "rank"))
    assert f"the highest, {top.name}, by {more:+.4f} against {error:.4f}" in picked.why


def test_auto_blends_when_blending_clearly_helps():
    stack = _complementary()
    _, blends, candidates = _candidates(stack)
    picked = pick(candidates)
    assert picked.chosen.name != "best"
    more, error = gain(picked.chosen, blends["best"])
    assert more > max(error, 0.05)
    assert picked.chosen.nested == max(b.nested for b in candidates)
    assert picked.why.startswith(f"its nested estimate beats the best single run's {blends['best'].nested:.4f}")


@pytest.mark.parametrize("seed", range(4))
def test_identical_runs_are_submitted_as_the_run(seed):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=ITEMS)
    run = truth + rng.normal(size=ITEMS)
    stack = _stack({"a": run, "b": run.copy()}, truth)
    score, blends, candidates = _candidates(stack)
    for same in ("mean", "weights"):  # the run itself, so a tie, which goes to the run
        assert blends[same].nested == pytest.approx(blends["best"].nested, abs=1e-12)
    picked = pick(candidates)
    assert picked.chosen.name == "best"
    np.testing.assert_array_equal(picked.chosen.test, stack.test[0])
    assert picked.chosen.nested == score(stack.frame(run))


def test_one_run_is_its_own_best_run():
    rng = np.random.default_rng(6)
    truth = rng.normal(size=ITEMS)
    stack = _stack({"a": truth + rng.normal(size=ITEMS)}, truth)
    score = _score(stack.frame(stack.truth))
    only = blend(stack, "best", score)
    np.testing.assert_array_equal(only.oof, stack.oof[0])
    np.testing.assert_array_equal(only.test, stack.test[0])
    assert only.nested == only.in_sample == score(stack.frame(stack.oof[0]))
    assert pick([only]).chosen is only


def test_a_blend_named_is_submitted_whatever_auto_would_pick():
    rng = np.random.default_rng(4)
    truth = rng.normal(size=ITEMS)
    stack = _stack({"a": truth + rng.normal(size=ITEMS), "b": rng.normal(size=ITEMS)}, truth)
    _, blends, candidates = _candidates(stack)
    for name in BLENDS:
        picked = pick(candidates, name)
        assert picked.chosen is blends[name] and picked.why == f"named by blend={name}"


def test_submit_blends_two_runs_of_different_heads(two_kvq_runs, tmp_path):
    words, runs = two_kvq_runs
    out = tmp_path / "subs"
    assert main(["submit", *words, f"runs={','.join(runs)}", f"out={out}", "blend=mean"]) == 0
    (zip_path,) = out.glob("kvq-mean-*/kvq-mean-*.zip")
    assert {p.name for p in zip_path.parent.iterdir()} == {zip_path.name, "calibration.json", "report.png", "report.md"}
    report = (zip_path.parent / "report.md").read_text()  # the table the command printed
    for label in ("blend mean (picked)", "blend best", "blend rank", "blend weights", "blend ridge", *runs):
        assert label in report
    assert "nested estimate" in report and "named by blend=mean" in report
    kvq = get_track("kvq")
    submitted = kvq.submission.read(zip_path, kvq.targets)
    runs_dir = words[1].split("=", 1)[1]
    each = [fold_ensemble(Run(Path(runs_dir) / "kvq" / run).predictions("test"), kvq.targets) for run in runs]
    expected = (each[0] + each[1].loc[each[0].index]) / 2
    np.testing.assert_allclose(submitted.loc[expected.index, "score"], expected["score"])
    assert not np.allclose(submitted.loc[expected.index, "score"], each[0]["score"])


def test_submit_best_writes_the_better_run_alone_and_says_why(two_kvq_runs, tmp_path):
    words, runs = two_kvq_runs
    out = tmp_path / "subs"
    assert main(["submit", *words, f"runs={','.join(runs)}", f"out={out}", "blend=best"]) == 0
    (zip_path,) = out.glob("kvq-best-*/kvq-best-*.zip")
    report = (zip_path.parent / "report.md").read_text()
    assert "blend best (picked)" in report and "named by blend=best" in report
    kvq = get_track("kvq")
    runs_dir = Path(words[1].split("=", 1)[1])
    loaded = [Run(runs_dir / "kvq" / run) for run in runs]
    labelled = kvq.read_items(Path(words[0].split("=", 1)[1])).query("split == 'train'")
    oof = [fold_ensemble(run.predictions("oof"), kvq.targets) for run in loaded]
    better = int(np.argmax([kvq.selection_score(pred, labelled)["score"] for pred in oof]))
    assert f"{runs[better]} alone" in report
    submitted = kvq.submission.read(zip_path, kvq.targets)
    expected = fold_ensemble(loaded[better].predictions("test"), kvq.targets)
    np.testing.assert_allclose(submitted.loc[expected.index, "score"], expected["score"])
    # Its cost and readme are the submitted run's alone: the extras see only its views.
    seen = []
    predicted = [RunPredictions(r.id, r.predictions("oof"), r.predictions("test"), r.folds()) for r in loaded]
    items = kvq.read_items(Path(words[0].split("=", 1)[1]))
    submit_runs(
        kvq,
        predicted,
        items,
        Choice("best", "none", ()),
        tmp_path / "direct",
        lambda decision, v, a: (seen.append(v), ({}, ""))[1],
    )
    assert [list(views) for views in seen] == [[runs[better]]]


def _nine_runs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold predictions of nine runs on two targets with their labels, and test predictions partly outside
    the fitted ones: nine, as numpy's pairwise sums change order from eight terms."""
    rng = np.random.default_rng(8)
    truth = rng.normal(size=(ITEMS, 2))
    oof = truth + rng.normal(scale=rng.uniform(0.3, 2, size=(9, 1, 2)), size=(9, ITEMS, 2))
    return oof, truth, 2 * rng.normal(size=(9, 30, 2))


@pytest.fixture(scope="module", params=list(BLENDS))
def fitted(request):
    oof, truth, test = _nine_runs()

    def score(pred: np.ndarray) -> float:
        return float(np.mean([metrics.srcc(pred[:, t], truth[:, t]) for t in range(truth.shape[1])]))

    return request.param, BLENDS.get(request.param)().fit(oof, truth, score), test


def test_a_blend_predicts_each_item_on_its_own(fitted):
    _, blender, test = fitted
    whole = blender.predict(test)
    for rows in ([0], [29], [7, 3, 18], list(range(29, -1, -2))):
        np.testing.assert_array_equal(blender.predict(test[:, rows]), whole[rows])


def test_a_blend_restored_from_json_predicts_the_same_bits(fitted):
    name, blender, test = fitted
    restored = restore_blender(json.loads(json.dumps(blender_state(name, blender))))
    assert type(restored) is type(blender)
    np.testing.assert_array_equal(restored.predict(test), blender.predict(test))
    runs = [f"run{r}" for r in range(len(test))]
    assert restored.describe(runs) == blender.describe(runs)


def test_the_ridge_blend_predicts_as_scikit_learns_ridge_does():
    oof, truth, test = _nine_runs()
    ridge = RidgeBlend().fit(oof, truth, lambda pred: 0.0)
    for t in range(truth.shape[1]):
        model = RidgeCV(alphas=RIDGE_ALPHAS).fit(oof[:, :, t].T, truth[:, t])
        np.testing.assert_allclose(ridge.predict(test)[:, t], model.predict(test[:, :, t].T), rtol=0, atol=1e-12)
        assert ridge.alpha_[t] == model.alpha_


def test_a_blend_state_names_what_it_cannot_save_or_restore():
    class Fitted:
        pass

    unsaved = Fitted()
    unsaved.models_ = [RidgeCV()]
    with pytest.raises(TypeError, match="blend odd: fitted models_ is a list, not a float array or an int"):
        blender_state("odd", unsaved)
    with pytest.raises(ValueError, match="unknown blend 'odd'; known blends: best, mean"):
        restore_blender({"name": "odd", "fitted": {}})
