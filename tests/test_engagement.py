"""Engagement: the organisers' CSVs as shipped (empty and non-ASCII text, a Download_link column, Ids with or without
`.mp4`), the 0.6 SROCC + 0.4 PLCC score, and ECR kept inside [0, 1] by an affine map that ties nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from tracks import get_track
from tracks.engagement import TEST_LIST, TRAIN_LIST, engagement_score

REFERENCE = Path(__file__).parents[2] / "shared" / "reference" / "engagement"
TRACK = get_track("engagement")


def test_the_shipped_validation_list_and_baseline_read_as_the_organisers_wrote_them(tmp_path):
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} is not on this machine")
    ids = ["0" * 32, "1" * 32, "2" * 32]  # a training list the organisers have not shipped here
    pd.DataFrame({"Id": ids, "Title": "", "Description": "", "ECR": [0.1, 0.5, 0.9]}).to_csv(
        tmp_path / TRAIN_LIST, index=False
    )
    (tmp_path / "val_data.csv").write_bytes((REFERENCE / "val_data.csv").read_bytes())
    items = TRACK.read_items(tmp_path)
    test = items[items.split == "test"]
    assert len(test) == 6000 and items["item_id"].str.fullmatch("[0-9a-f]{32}").all()
    assert (test["Title"] == "").mean() == pytest.approx(0.62, abs=0.01)  # empty text reads as empty, not NaN
    assert test["path"].str.endswith(".mp4").all()
    baseline = TRACK.submission.read(REFERENCE / "submission_baseline.csv", TRACK.targets)
    assert len(baseline) == 10 and baseline["ECR"].between(0, 1).all()


def test_an_id_is_read_with_or_without_its_extension(tmp_path):
    pd.DataFrame(
        {"Id": ["a" * 32 + ".mp4", "b" * 32], "Title": ["niño café", ""], "Description": "", "ECR": 0.5}
    ).to_csv(tmp_path / TRAIN_LIST, index=False)
    pd.DataFrame({"Id": ["c" * 32 + ".mp4"], "Title": [""], "Description": ["straße"]}).to_csv(
        tmp_path / TEST_LIST, index=False
    )
    items = TRACK.read_items(tmp_path)
    assert items["item_id"].tolist() == ["a" * 32, "b" * 32, "c" * 32]
    assert items["Title"].tolist() == ["niño café", "", ""] and items["Description"].tolist() == ["", "", "straße"]


def test_the_score_weighs_srocc_and_plcc_as_the_organisers_do():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, 50)
    pred = truth + rng.normal(0, 0.2, 50)
    expected = 0.6 * spearmanr(pred, truth)[0] + 0.4 * pearsonr(pred, truth)[0]
    assert engagement_score(pred, truth)["score"] == pytest.approx(expected)


def test_ecr_is_mapped_into_its_range_without_ties_and_left_alone_inside_it():
    inside = pd.DataFrame({"ECR": [0.2, 0.5, 0.9]})
    pd.testing.assert_frame_equal(TRACK.into_range(inside), inside)
    outside = pd.DataFrame({"ECR": [-0.3, 0.1, 0.5, 0.9, 1.4]})
    mapped = TRACK.into_range(outside)["ECR"]
    assert mapped.between(0, 1).all() and mapped.is_unique and mapped.is_monotonic_increasing
    assert mapped.iloc[0] == 0.0 and mapped.iloc[-1] == 1.0
    assert pearsonr(mapped, outside["ECR"])[0] == pytest.approx(1.0)
    assert get_track("kvq").into_range(outside) is outside  # an unbounded track's predictions are its own
