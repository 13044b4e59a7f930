"""One conformance suite over every registered track (discovered, never listed here): its declarations hold, its
synthetic data reads back as declared and checks clean, its scorer ranks a perfect prediction first, its submission
reads back as the organisers will read it, a tiny run goes from the organiser's layout to a scored zip, and a track
with a student demo withholds labels from its synthetic data as that demo needs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensembles.export import write_zip
from features.inputs import Category, MediaInput, Text
from synth import synthesize, withhold_labels
from synth.dataset import TRUTH_DIR, WITHHELD_TRUTH
from tracks import ITEM_COLUMNS, SHARED, get_track, list_tracks
from tracks.unlabelled import unlabelled_items
from workbench import check
from workbench.cli import CONFIG_KEYS, load_track, main
from workbench.predictor import Predictor

TRACKS = list_tracks()
TINY = ["size=32", "views=center", "view=resize", "workers=0"]  # any track's items through one cheap family


def test_every_track_module_is_discovered():
    modules = {p.stem for p in (Path(__file__).parents[1] / "tracks").glob("*.py")} - {"__init__", *SHARED}
    assert {type(get_track(name)).__module__.split(".")[-1] for name in TRACKS} == modules


@pytest.fixture(scope="module", params=TRACKS)
def synthetic(request, tmp_path_factory):
    track = load_track(request.param)  # its defaults name known keys, or this fails
    folder = tmp_path_factory.mktemp(track.name)
    synthesize(track, folder / "data", seed=1, **track.smoke)
    return track, folder


def truth(track, folder: Path) -> pd.DataFrame:
    """The organiser-side truth of the synthetic test items, read as the scorer reads predictions."""
    return track.read_truth(folder / "data" / TRUTH_DIR)


def test_declarations_agree(synthetic):
    track, _ = synthetic
    assert len(track.submission.score_columns) == len(track.targets) == len(track.ranges())
    assert all(low < high for low, high in track.ranges().values())
    assert track.inputs and all(Path(kind.column).name == kind.column for kind in track.inputs)


def test_synthetic_data_reads_back_as_declared(synthetic):
    track, folder = synthetic
    items = track.read_items(folder / "data")
    named = [kind.column for kind in track.inputs[1:] if isinstance(kind, (Text, Category, MediaInput))]
    assert list(items.columns) == [*ITEM_COLUMNS, *named, *track.targets]
    assert items["item_id"].is_unique and items["path"].map(lambda p: Path(p).is_file()).all()
    train, test = items[items.split == "train"], items[items.split == "test"]
    assert len(train) and len(test)
    labels = train[list(track.targets)].to_numpy(dtype=float)
    assert np.isfinite(labels).all() and test[list(track.targets)].isna().all().all()
    for column, (low, high) in zip(labels.T, track.label_ranges().values()):
        assert ((column >= low) & (column <= high)).all() and column.std() > 0
    shared = set(train["group"]) & set(test["group"])
    assert track.groups_cross_splits or not shared, "a source's versions must not cross splits"
    assert set(test["item_id"]) <= set(truth(track, folder).index)  # a truth may hold another phase's items too


def test_check_finds_nothing_wrong_and_names_a_missing_file(synthetic, tmp_path):
    track, folder = synthetic
    report = check.check(track, folder / "data")
    assert report.problems == [] and report.facts
    items = track.read_items(folder / "data")
    gone = Path(items["path"].iloc[0])
    kept = gone.read_bytes()
    gone.unlink()
    try:
        problems = check.check(track, folder / "data").problems
    finally:
        gone.write_bytes(kept)
    assert len(problems) == 1 and "1 " in problems[0] and items["item_id"].iloc[0] in problems[0]


def test_a_perfect_prediction_scores_highest(synthetic):
    track, folder = synthetic
    perfect = truth(track, folder)
    noisy = perfect + np.random.default_rng(0).normal(0, perfect.std().mean(), perfect.shape)
    best = track.official_score(perfect, folder / "data" / TRUTH_DIR)
    worse = track.official_score(noisy, folder / "data" / TRUTH_DIR)
    assert best["score"] == pytest.approx(1.0) and worse["score"] < best["score"]


def test_the_submission_reads_back_as_written(synthetic, tmp_path):
    track, folder = synthetic
    perfect = truth(track, folder)
    ids = track.read_items(folder / "data").query("split == 'test'")["item_id"].tolist()
    path = write_zip(perfect.loc[ids], track.submission, ids, track.ranges(), tmp_path / "sub.zip")
    back = track.submission.read(path, track.targets)
    pd.testing.assert_frame_equal(back.loc[ids], perfect.loc[ids], check_names=False)


def test_a_tiny_run_goes_from_the_layout_to_a_scored_zip_and_an_export_that_agrees(synthetic, tmp_path):
    track, folder = synthetic
    where = [f"track={track.name}", f"data={folder / 'data'}", f"cache={tmp_path / 'cache'}"]
    runs = [f"runs_dir={tmp_path / 'runs'}"]
    assert main(["extract", *where, *TINY]) == 0
    assert main(["train", *where, *runs, *TINY[:-1], "folds=2", "epochs=2"]) == 0
    assert main(["submit", *where[:2], *runs, f"out={tmp_path / 'subs'}"]) == 0
    (zip_path,) = (tmp_path / "subs").glob("*/*.zip")
    assert main(["score", *where[:1], f"preds={zip_path}", f"truth={folder / 'data' / TRUTH_DIR}"]) == 0

    # Exported, the same runs score the test items from their media as the zip did.
    assert main(["export", *where[:2], *runs, f"out={tmp_path / 'exports'}"]) == 0
    (exported,) = (p for p in (tmp_path / "exports").iterdir() if p.is_dir())
    items = track.read_items(folder / "data")
    scores = Predictor.load(exported).predict(items[items["split"] == "test"])
    submitted = track.submission.read(zip_path, track.targets)
    for target in track.targets:
        np.testing.assert_allclose(scores.loc[submitted.index, target], submitted[target], rtol=1e-4, atol=1e-5)


def test_profile_costs_every_stream_of_the_defaults(synthetic, capsys):
    """Each encoder family costed on an input of its own shape (ViewFamily.pass_shape): audio windows, sync series,
    frame pairs and their measurements as well as frames and clips."""
    track, _ = synthetic
    assert main(["profile", f"track={track.name}", "size=32"]) == 0
    assert "budget" in capsys.readouterr().out


def test_a_student_demo_withholds_whole_groups_and_keeps_their_labels(synthetic, tmp_path):
    track, folder = synthetic
    data = shutil.copytree(folder / "data", tmp_path / "data")
    if track.student_demo is None:
        with pytest.raises(ValueError, match="cannot withhold labels"):
            withhold_labels(track, data, 0.5, seed=0)
        return
    plan = track.student_demo
    assert set(plan.teacher) | set(plan.student) <= CONFIG_KEYS and 0 < plan.withheld < 1
    before = track.read_items(data).query("split == 'train'")
    withheld = unlabelled_items(track, withhold_labels(track, data, 0.5, seed=0).name, data)
    labelled = track.read_items(data).query("split == 'train'")
    assert len(labelled) + len(withheld) == len(before) and not set(labelled["group"]) & set(withheld["group"])
    kept = track.read_truth(data / TRUTH_DIR / WITHHELD_TRUTH)
    assert sorted(kept.index) == sorted(withheld["item_id"].str.removeprefix("unlabelled/"))
