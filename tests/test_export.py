"""The validator and the zip: a wrong submission is refused, a written one reads back exactly."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensembles.combine import fold_ensemble
from ensembles.export import SubmissionError, write_zip
from tracks import CsvFormat, JsonListFormat, LayoutError, get_track

KVQ = get_track("kvq")
IDS = [f"test/{i:04d}.mp4" for i in range(1, 6)]


def _pred(ids=IDS, values=None):
    values = np.linspace(1.5, 4.5, len(ids)) if values is None else values
    return pd.DataFrame({"score": values}, index=pd.Index(ids, name="item_id"))


def _write(pred, tmp_path):
    return write_zip(pred, KVQ.submission, IDS, KVQ.ranges(), tmp_path / "sub.zip")


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
    lossy = KVQ.submission.encode

    def drop_last_row(pred, targets):
        return b"\n".join(lossy(pred, targets).splitlines()[:-1]) + b"\n"

    monkeypatch.setattr(type(KVQ.submission), "encode", lambda self, pred, targets: drop_last_row(pred, targets))
    with pytest.raises(SubmissionError, match="without a prediction: 'test/0005.mp4'"):
        _write(_pred(), tmp_path)
    assert not list(tmp_path.iterdir())


def test_each_submission_kind_reads_back_what_it_writes_and_reads_the_organisers_files(tmp_path):
    pred = pd.DataFrame({"score": [0.1234567890123, 4.5, -0.25]}, index=["a.mp4", "b.mp4", "c,d.mp4"])
    kinds = {
        "header": CsvFormat("prediction.csv", "filename", ("score",)),
        "no header": CsvFormat("output.txt", "video", ("score",), header=False),
        "json list": JsonListFormat("output.json", "video", ("predict_score",)),
    }
    for name, kind in kinds.items():
        path = tmp_path / kind.filename
        path.write_bytes(kind.encode(pred, ["score"]))
        pd.testing.assert_frame_equal(kind.read(path, ["score"]), pred.rename_axis("item_id"), obj=name)
    assert (tmp_path / "output.txt").read_text().splitlines()[0] == "a.mp4,0.1234567890123"
    assert json.loads((tmp_path / "output.json").read_text())[1] == {"video": "b.mp4", "predict_score": 4.5}

    # The talking-head organisers' own example zip: output.txt, no header, `name.mp4,score` per line.
    example = Path(__file__).parents[2] / "shared" / "reference" / "thqa" / "baseline_example.zip"
    if not example.is_file():
        pytest.skip(f"{example} is not on this machine")
    read = kinds["no header"].read(example, ["score"])
    assert len(read) > 1000 and read.index[0].endswith(".mp4") and np.isfinite(read["score"]).all()
    with pytest.raises(LayoutError, match="2 field"):
        CsvFormat("output.txt", "video", ("a", "b"), header=False).read(example, ["a", "b"])
