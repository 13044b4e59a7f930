"""Calibration: the logistic maps bring a monotone but bent prediction onto the label scale (PLCC up, RMSE down, ranks
kept), fall back where they would tie or flip predictions, and are what `submit calibration=` puts in the zip."""

import json

import numpy as np
import pandas as pd
import pytest

from common import metrics
from ensembles.calibrate import Calibration, fit_logistic5
from tracks import get_track
from workbench.cli import main


def _frames(pred, truth):
    ids = [f"i{k}" for k in range(len(pred))]
    return pd.DataFrame({"score": pred}, index=ids), pd.DataFrame({"score": truth}, index=ids)


@pytest.mark.parametrize("kind", ["logistic4", "logistic5"])
def test_a_logistic_straightens_a_monotone_bent_prediction(kind):
    rng = np.random.default_rng(1)
    truth = rng.uniform(1.0, 5.0, 300)
    pred = np.exp(truth) / 30 + rng.normal(0, 0.05, len(truth))  # same order (almost), a convex scale
    pred_frame, truth_frame = _frames(pred, truth)
    calibration = Calibration.fit(kind, pred_frame.iloc[::-1], truth_frame, ["score"])  # matched by id
    assert calibration.maps["score"][0] == kind
    mapped = calibration.apply(pred_frame)["score"].to_numpy()
    assert metrics.plcc(mapped, truth) > metrics.plcc(pred, truth) + 0.03
    assert metrics.rmse(mapped, truth) < 0.5 * metrics.rmse(pred, truth)
    np.testing.assert_array_equal(np.argsort(mapped, kind="stable"), np.argsort(pred, kind="stable"))
    assert metrics.srcc(mapped, truth) == pytest.approx(metrics.srcc(pred, truth), abs=1e-12)
    again = Calibration.from_json(json.loads(json.dumps(calibration.to_json())))
    np.testing.assert_array_equal(again.apply(pred_frame)["score"].to_numpy(), mapped)


def test_logistic5_fits_at_least_as_close_as_its_published_start_and_as_logistic4():
    rng = np.random.default_rng(0)
    truth = rng.uniform(1.0, 5.0, 300)
    pred = np.exp(truth) / 30 + rng.normal(0, 0.05, len(truth))

    def error(curve, params):
        return float(np.sum((curve(pred, *params) - truth) ** 2))

    ours = error(metrics.logistic5, fit_logistic5(pred, truth))
    assert ours < 0.7 * error(metrics.logistic5, metrics.fit_logistic5(pred, truth))  # the flat start stalls here
    assert ours <= error(metrics.logistic4, metrics.fit_logistic4(pred, truth)) + 1e-6


def test_none_changes_nothing_and_an_unknown_kind_is_refused():
    pred, truth = _frames(np.linspace(0, 1, 10), np.linspace(2, 4, 10) ** 2)
    pd.testing.assert_frame_equal(Calibration.fit("none", pred, truth, ["score"]).apply(pred), pred)
    with pytest.raises(ValueError, match="logistic4"):
        Calibration.fit("logistic3", pred, truth, ["score"])


def test_a_saturating_logistic_falls_back_to_a_line_and_a_falling_one_to_no_change(monkeypatch):
    x = np.array([0.0, 0.1, 0.2, 1.0, 1.1, 1.2])
    pred, truth = _frames(x, np.array([0.6, 0.62, 0.61, 0.8, 0.79, 0.81]))
    # A step at 0.5: every prediction below it maps to exactly 0.6 in float64, every one above to 0.8.
    monkeypatch.setattr(metrics, "fit_logistic4", lambda p, t: np.array([0.8, 0.6, 0.5, 1e-6]))
    monkeypatch.setattr("ensembles.calibrate.LOGISTICS", {"logistic4": (metrics.logistic4, metrics.fit_logistic4)})
    form, params = Calibration.fit("logistic4", pred, truth, ["score"]).maps["score"]
    assert form == "line" and params[0] > 0  # the least-squares line keeps every prediction distinct
    monkeypatch.undo()
    pred, truth = _frames(x, 1 - x)
    assert Calibration.fit("logistic4", pred, truth, ["score"]).maps["score"] == ("line", (1.0, 0.0))


def test_calibration_at_export_changes_the_zip_but_not_its_order(two_kvq_runs, tmp_path):
    common, (run, _) = two_kvq_runs
    kvq = get_track("kvq")
    submitted = {}
    for kind in ("none", "logistic5"):
        out = tmp_path / kind
        assert main(["submit", *common, f"runs={run}", f"out={out}", f"calibration={kind}"]) == 0
        (zip_path,) = out.glob("kvq-*/kvq-*.zip")
        submitted[kind] = kvq.submission.read(zip_path, kvq.targets)["score"]
        assert json.loads((zip_path.parent / "calibration.json").read_text())["kind"] == kind
    raw, calibrated = submitted["none"], submitted["logistic5"].loc[submitted["none"].index]
    assert not np.allclose(raw, calibrated)
    assert metrics.srcc(raw, calibrated) == pytest.approx(1.0)
