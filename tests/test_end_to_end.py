"""The KVQ flow from the organiser's layout to a scored zip, through the command line the justfile calls.

The zip is scored twice: by `score` and by an independent transcription of the organisers' `metric_score.py`
(row access by position replaced with `.iloc`, which pandas 3 requires); they must agree to 1e-9.
"""

import zipfile
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from workbench.cli import main, score_submission
from workbench.config import ScoreConfig

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
    return folder, [*common, f"runs={folder / 'runs'}"]


def test_train_submit_and_score_like_the_organisers(workdir):
    folder, common = workdir
    assert main(["train", *common, *FAST]) == 0
    submissions = folder / "submissions"
    assert main(["submit", common[0], common[2], f"out={submissions}"]) == 0
    (zip_path,) = submissions.glob("kvq-*.zip")
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
