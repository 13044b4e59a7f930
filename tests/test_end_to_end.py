"""The KVQ flow from the organiser's layout to a scored zip, through the command line the justfile calls; and the
same flow for the image tracks, whose zips carry calibrated predictions and the readme.

The zip is scored twice: by `score` and by an independent transcription of the organisers' `metric_score.py`
(row access by position replaced with `.iloc`, which pandas 3 requires); they must agree to 1e-9.
"""

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from ensembles.calibrate import Calibration
from ensembles.combine import fold_ensemble
from tracks import get_track
from workbench.cli import main
from workbench.config import ScoreConfig
from workbench.runs import Run
from workbench.submission import score_submission

FEATURES = ["frames=3", "size=64"]
FAST = [*FEATURES, "epochs=8", "folds=3"]


def organisers_metric(prediction_csv: Path, truth_dir: Path) -> tuple[float, float, float, float, float]:
    predicted = pd.read_csv(prediction_csv)
    predicted_scores = dict(zip(predicted["filename"], predicted["score"]))
    truth = pd.read_csv(truth_dir / "truth.csv")
    sorted_pscores = [predicted_scores.get(name) for name in truth["filename"]]
    sorted_gscores = truth["score"].tolist()
    srocc = spearmanr(sorted_gscores, sorted_pscores)[0]
    plcc = pearsonr(sorted_gscores, sorted_pscores)[0]
    xlsx = pd.ExcelFile(truth_dir / "rank-pair-val.xlsx")
    labels = {"nonsource": ([], []), "source": ([], [])}
    for sheet in xlsx.sheet_names:
        for _, row in pd.read_excel(xlsx, sheet_name=sheet).iterrows():
            score1, score2 = predicted_scores.get(row.iloc[0]), predicted_scores.get(row.iloc[1])
            labels[sheet][0].append(row.iloc[2])
            labels[sheet][1].append(1 if score1 >= score2 else 2)
    acc = {sheet: sum(g == p for g, p in zip(*pairs)) / len(pairs[0]) for sheet, pairs in labels.items()}
    score = 0.45 * srocc + 0.45 * plcc + 0.05 * acc["nonsource"] + 0.05 * acc["source"]
    return score, srocc, plcc, acc["nonsource"], acc["source"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kvq")
    data = folder / "data"
    common = [f"data={data}", f"cache={folder / 'cache'}"]
    assert main(["synth", f"out={data}", "items=36", "seed=3", "width=96", "height=64"]) == 0
    assert main(["extract", *common, *FEATURES, "views=center,hflip"]) == 0
    return folder, [*common, f"runs_dir={folder / 'runs'}"]


def test_train_submit_and_score_like_the_organisers(workdir):
    folder, common = workdir
    assert main(["train", *common, *FAST]) == 0
    submissions = folder / "submissions"
    assert main(["submit", common[0], common[2], f"out={submissions}"]) == 0
    (zip_path,) = submissions.glob("kvq-*/kvq-*.zip")
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.namelist() == ["prediction.csv"]
        archive.extract("prediction.csv", folder)
    test_list = pd.read_csv(folder / "data" / "test_data.csv")
    assert pd.read_csv(folder / "prediction.csv")["filename"].tolist() == test_list["filename"].tolist()

    ours = score_submission(ScoreConfig(preds=str(zip_path), truth=str(folder / "data" / "truth")))
    theirs = organisers_metric(folder / "prediction.csv", folder / "data" / "truth")
    for key, value in zip(("score", "srcc", "plcc", "acc_nonsource", "acc_source"), theirs):
        assert ours[key] == pytest.approx(value, abs=1e-9)


def test_train_fold_by_fold_lands_in_one_run(workdir):
    folder, common = workdir
    words = [*common, *FAST, "head=mlp", "loss=mse:1,rank:0.3"]
    assert main(["train-fold", *words, "fold=0"]) == 0
    (run,) = [p for p in (folder / "runs" / "kvq").iterdir() if "mlp" in p.name]
    assert sorted(p.name for p in run.glob("fold-*")) == ["fold-0"]
    assert main(["train", *words]) == 0  # finishes the other folds of the same run
    assert {p.parent.name for p in run.glob("fold-*/score.json")} == {"fold-0", "fold-1", "fold-2"}
    oof = pd.read_parquet(run / "fold-1" / "oof.parquet")
    assert set(oof["view"]) == {"center", "hflip"} and {"item_id", "score"} <= set(oof.columns)


def test_bad_words_are_usage_errors(workdir, capsys):
    folder, common = workdir
    assert main(["train", *common, "epoch=3"]) == 2
    assert "Did you mean epochs=?" in capsys.readouterr().err
    assert main(["train-fold", *common, *FAST]) == 2
    assert main(["frobnicate"]) == 2


# --- the image tracks ------------------------------------------------------------------------------------------------

IMAGE_FLOWS = {
    "uhd_iqa": (["items=16", "width=320"], ["size=64", "grid=2", "patch=32", "views=center,s0,s1"]),
    "fiqa": (["items=30", "width=64", "height=80"], ["size=64", "views=center,hflip"]),
}
README_KEYS = ("runtime per image [s]", "CPU[1] / GPU[0]", "Extra Data [1] / No Extra Data [0]", "Other description")


@pytest.mark.parametrize("track", IMAGE_FLOWS)
def test_image_track_flow_writes_a_calibrated_zip_with_its_readme(tmp_path, track):
    synth_words, feature_words = IMAGE_FLOWS[track]
    data, runs = tmp_path / "data", tmp_path / "runs"
    common = [f"track={track}", f"data={data}", f"cache={tmp_path / 'cache'}"]
    assert main(["synth", f"track={track}", f"out={data}", "seed=4", *synth_words]) == 0
    assert main(["extract", *common, *feature_words, "workers=0"]) == 0
    assert main(["train", *common, *feature_words, f"runs_dir={runs}", "epochs=6", "folds=3"]) == 0
    assert main(["submit", f"track={track}", f"runs_dir={runs}", f"out={tmp_path / 'subs'}", "extra_data=1"]) == 0
    (zip_path,) = (tmp_path / "subs").glob(f"{track}-*/{track}-*.zip")
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == ["predictions.csv", "readme.txt"]
        readme = archive.read("readme.txt").decode().splitlines()
        archive.extract("predictions.csv", tmp_path)
    assert [line.split(" : ")[0] for line in readme] == list(README_KEYS)
    assert float(readme[0].split(" : ")[1]) > 0 and readme[1].endswith(": 1") and readme[2].endswith(": 1")
    assert "quality_stats" in readme[3]

    get = get_track(track)
    (run,) = [p for p in (runs / track).iterdir() if p.is_dir()]
    submitted = pd.read_csv(tmp_path / "predictions.csv").set_index("image_name")
    assert list(submitted.columns) == list(get.submission.score_columns)
    raw = fold_ensemble(Run(run).predictions("test"), get.targets)
    calibrated = Calibration.from_json(json.loads((zip_path.parent / "calibration.json").read_text())).apply(raw)
    np.testing.assert_allclose(submitted.loc[raw.index].to_numpy(), calibrated.to_numpy())
    assert not np.allclose(submitted.loc[raw.index].to_numpy(), raw.to_numpy())

    parts = score_submission(ScoreConfig(track=track, preds=str(zip_path), truth=str(data / "truth")))
    truth = pd.read_csv(data / "truth" / "truth.csv").set_index("image_name").iloc[:, 0]
    p = submitted.loc[truth.index].iloc[:, 0]
    assert parts["score"] == pytest.approx((spearmanr(p, truth)[0] + pearsonr(p, truth)[0]) / 2, abs=1e-9)
