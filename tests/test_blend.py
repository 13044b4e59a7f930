"""Blending runs: fitted weights stay on the simplex and use complementary runs; the nested estimate does not leak;
runs on other folds are refused; the rank blend sees only ranks; `submit runs=a,b` writes the blend's zip."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common import metrics
from ensembles.blend import BLENDS, BlendError, Stack, blend, pick
from ensembles.combine import fold_ensemble
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


def test_weights_are_on_the_simplex_and_beat_each_run_with_complementary_errors():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=ITEMS)
    first_half = np.arange(ITEMS) < ITEMS // 2
    noise = rng.normal(scale=1.5, size=(2, ITEMS))
    a = truth + np.where(first_half, noise[0], 0.2 * noise[0])  # good on the second half only
    b = truth + np.where(first_half, 0.2 * noise[1], noise[1])  # good on the first half only
    stack = _stack({"a": a, "b": b}, truth)
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


def test_auto_picks_the_best_nested_estimate():
    rng = np.random.default_rng(4)
    truth = rng.normal(size=ITEMS)
    stack = _stack({"a": truth + rng.normal(size=ITEMS), "b": rng.normal(size=ITEMS)}, truth)
    score = _score(stack.frame(stack.truth))
    blends = [blend(stack, name, score) for name in BLENDS]
    assert pick(blends).nested == max(b.nested for b in blends)
    assert pick(blends, "rank").name == "rank"


def test_submit_blends_two_runs_of_different_heads(two_kvq_runs, tmp_path):
    words, runs = two_kvq_runs
    out = tmp_path / "subs"
    assert main(["submit", *words, f"runs={','.join(runs)}", f"out={out}", "blend=mean"]) == 0
    (zip_path,) = out.glob("kvq-mean-*/kvq-mean-*.zip")
    assert {p.name for p in zip_path.parent.iterdir()} == {zip_path.name, "calibration.json", "report.png", "report.md"}
    report = (zip_path.parent / "report.md").read_text()  # the table the command printed
    for label in ("blend mean (picked)", "blend rank", "blend weights", "blend ridge", "nested estimate", *runs):
        assert label in report
    kvq = get_track("kvq")
    submitted = kvq.submission.read(zip_path, kvq.targets)
    runs_dir = words[1].split("=", 1)[1]
    each = [fold_ensemble(Run(Path(runs_dir) / "kvq" / run).predictions("test"), kvq.targets) for run in runs]
    expected = (each[0] + each[1].loc[each[0].index]) / 2
    np.testing.assert_allclose(submitted.loc[expected.index, "score"], expected["score"])
    assert not np.allclose(submitted.loc[expected.index, "score"], each[0]["score"])
