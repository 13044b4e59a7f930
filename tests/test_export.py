"""The validator and the zip: a wrong submission is refused, a written one reads back exactly; and the calibration
applied before export."""

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from ensembles.calibrate import Calibration
from ensembles.combine import fold_ensemble
from ensembles.export import SubmissionError, write_zip
from tracks import get_track
from workbench import metrics

KVQ = get_track("kvq")
IDS = [f"test/{i:04d}.mp4" for i in range(1, 6)]


def _pred(ids=IDS, values=None):
    values = np.linspace(1.5, 4.5, len(ids)) if values is None else values
    return pd.DataFrame({"score": values}, index=pd.Index(ids, name="item_id"))


def _write(pred, tmp_path):
    return write_zip(pred, KVQ.submission, KVQ.targets, IDS, KVQ.score_range, tmp_path / "sub.zip")


@pytest.mark.parametrize(
    "pred,message",
    [
        (_pred(IDS[:-1]), "1 test id(s) without a prediction: 'test/0005.mp4'"),
        (_pred(IDS + ["test/0001.mp4"]), "1 duplicated id(s): 'test/0001.mp4'"),
        (_pred(IDS + ["test/9999.mp4"]), "1 id(s) not in the test list: 'test/9999.mp4'"),
        (_pred(values=[1.0, np.nan, 2.0, np.inf, 3.0]), "2 non-finite score(s)"),
        (_pred(values=[1.0, 2.0, 3.0, 4.0, 60.0]), "outside the track's range"),
    ],
)
def test_validator_refuses(pred, message, tmp_path):
    with pytest.raises(SubmissionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _write(pred, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary


def test_zip_layout_and_exact_round_trip(tmp_path):
    pred = _pred(values=np.array([3.123456789012345, 1.0, 2.5, 4.999999999, 1 / 3]))
    pred = pred.iloc[::-1]  # any order in, the test list's order out
    path = _write(pred, tmp_path)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["prediction.csv"]
        lines = archive.read("prediction.csv").decode().splitlines()
    assert lines[0] == "filename,score"
    assert [line.split(",")[0] for line in lines[1:]] == IDS
    back = KVQ.submission.read(path, KVQ.targets)
    assert np.array_equal(back.loc[IDS, "score"].to_numpy(), pred.loc[IDS, "score"].to_numpy())


def test_fold_ensemble_means_views_then_folds():
    rows = []
    for fold, offset in ((0, 0.0), (1, 1.0)):
        rows += [{"fold": fold, "item_id": "a", "view": "center", "score": 1.0 + offset}]
        rows += [{"fold": fold, "item_id": "a", "view": "hflip", "score": 3.0 + offset}]
    long = pd.DataFrame(rows)
    assert fold_ensemble(long, ["score"]).loc["a", "score"] == pytest.approx(2.5)
    assert fold_ensemble(long, ["score"], ["center"]).loc["a", "score"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="not predicted"):
        fold_ensemble(long, ["score"], ["vflip"])


def test_a_zip_that_does_not_read_back_is_never_left_behind(tmp_path, monkeypatch):
    lossy = KVQ.submission.to_csv

    def drop_last_row(pred, targets):
        return b"\n".join(lossy(pred, targets).splitlines()[:-1]) + b"\n"

    monkeypatch.setattr(type(KVQ.submission), "to_csv", lambda self, pred, targets: drop_last_row(pred, targets))
    with pytest.raises(SubmissionError, match="without a prediction: 'test/0005.mp4'"):
        _write(_pred(), tmp_path)
    assert not list(tmp_path.iterdir())


# --- calibration -----------------------------------------------------------------------------------------------------


def _frames(pred, truth):
    ids = [f"i{k}" for k in range(len(pred))]
    return pd.DataFrame({"score": pred}, index=ids), pd.DataFrame({"score": truth}, index=ids)


def test_calibration_maps_onto_the_label_scale_and_keeps_ranks():
    x = np.linspace(-2.0, 2.0, 60)
    y = metrics.logistic4(x, 0.85, 0.55, 0.3, 0.7) + np.random.default_rng(0).normal(0, 0.005, len(x))
    pred, truth = _frames(x, y)
    calibration = Calibration.fit(pred.iloc[::-1], truth, ["score"])  # matched by id, not position
    assert len(calibration.params["score"]) == 4
    mapped = calibration.apply(pred)["score"]
    assert metrics.rmse(mapped, y) < 0.01 < metrics.rmse(x, y)
    assert (np.diff(mapped.to_numpy()) > 0).all()
    again = Calibration.from_json(json.loads(json.dumps(calibration.to_json())))
    np.testing.assert_array_equal(again.apply(pred)["score"], mapped)


def test_a_saturating_logistic_falls_back_to_a_line_and_a_falling_one_to_no_change(monkeypatch):
    x = np.array([0.0, 0.1, 0.2, 1.0, 1.1, 1.2])
    pred, truth = _frames(x, np.array([0.6, 0.62, 0.61, 0.8, 0.79, 0.81]))
    # A step at 0.5: every prediction below it maps to exactly 0.6 in float64, every one above to 0.8.
    monkeypatch.setattr(metrics, "fit_logistic4", lambda p, t: np.array([0.8, 0.6, 0.5, 1e-6]))
    params = Calibration.fit(pred, truth, ["score"]).params["score"]
    assert len(params) == 2 and params[0] > 0  # the least-squares line keeps every prediction distinct
    monkeypatch.undo()
    pred, truth = _frames(x, 1 - x)
    assert Calibration.fit(pred, truth, ["score"]).params["score"] == (1.0, 0.0)
