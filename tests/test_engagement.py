"""Engagement: the organisers' CSVs as shipped (empty and non-ASCII text, a Download_link column, Ids with or without
`.mp4`), the 0.6 SROCC + 0.4 PLCC score, and ECR kept strictly inside (0, 1) by a map fitted once on the submission
that ties nothing, keeps its ranks and PLCC, and maps any later item on its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import pearsonr, rankdata, spearmanr

from tracks import get_track
from tracks.engagement import TEST_LIST, TRAIN_LIST, engagement_score
from tracks.ranges import RANGE_MARGIN, RangeMap

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


def _ecr(values) -> pd.DataFrame:
    return pd.DataFrame({"ECR": np.asarray(values, dtype=np.float64)})


def _strictly_inside(values: pd.Series) -> bool:
    return bool(((values > 0) & (values < 1)).all())


def test_ecr_already_inside_its_range_moves_by_at_most_the_margin():
    inside = _ecr([0.0, 0.2, 0.5, 0.9, 1.0])
    mapped = TRACK.range_map(inside).apply(inside)["ECR"]
    assert _strictly_inside(mapped) and mapped.is_unique and mapped.is_monotonic_increasing
    assert np.abs(mapped - inside["ECR"]).max() <= RANGE_MARGIN * (1 + 1e-9)


# Predictions on a grid, so that distinct ones stay distinct after any positive affine map in floating point.
grid = st.integers(-3_000, 4_000).map(lambda k: k / 1_000)


@settings(max_examples=60, deadline=None)
@given(
    submitted=st.lists(grid, min_size=3, max_size=40, unique=True),
    later=st.lists(st.floats(-1e12, 1e12, allow_nan=False), min_size=1, max_size=10),
)
def test_ecr_is_mapped_inside_its_range_keeping_order_ranks_and_plcc(submitted, later):
    pred = _ecr(submitted)
    ranged = TRACK.range_map(pred)
    mapped = ranged.apply(pred)["ECR"]
    assert _strictly_inside(mapped)
    order = np.argsort(submitted)
    assert (np.diff(mapped.to_numpy()[order]) > 0).all()  # no ties
    np.testing.assert_array_equal(rankdata(mapped), rankdata(submitted))
    assert pearsonr(mapped, submitted)[0] == pytest.approx(1.0, abs=1e-12)  # one affine map over the span
    new = ranged.apply(_ecr(np.sort(later)))["ECR"]  # items predicted later, anywhere
    assert _strictly_inside(new) and (np.diff(new.to_numpy()) >= 0).all()


def test_the_submission_keeps_its_plcc_against_the_labels_exactly():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, 200)
    pred = _ecr(truth + rng.normal(0, 0.3, 200))  # well outside [0, 1] at both ends
    mapped = TRACK.range_map(pred).apply(pred)["ECR"]
    assert _strictly_inside(mapped)
    assert pearsonr(mapped, truth)[0] == pytest.approx(pearsonr(pred["ECR"], truth)[0], abs=1e-12)
    assert spearmanr(mapped, truth)[0] == spearmanr(pred["ECR"], truth)[0]


def test_a_new_item_beyond_the_span_stays_inside_and_in_order():
    ranged = TRACK.range_map(_ecr([-0.3, 0.1, 0.5, 0.9, 1.4]))
    top, bottom = ranged.apply(_ecr([1.4, -0.3]))["ECR"]
    steps = 1e-6 * np.arange(1, 6)  # just past the span, where the tail is steep enough to keep them apart
    above = ranged.apply(_ecr(1.4 + steps))["ECR"]
    below = ranged.apply(_ecr(-0.3 - steps))["ECR"]
    assert top < above.iloc[0] and (np.diff(above) > 0).all()
    assert bottom > below.iloc[0] and (np.diff(below) < 0).all()
    far_up, far_down = (ranged.apply(_ecr([x]))["ECR"].iloc[0] for x in (1e300, -1e300))
    assert above.iloc[-1] <= far_up < 1 and 0 < far_down <= below.iloc[-1]


def test_one_row_is_mapped_as_it_is_in_the_whole_frame_and_the_map_survives_json():
    ranged = TRACK.range_map(_ecr([-0.3, 0.1, 0.5, 0.9, 1.4]))
    frame = _ecr([-5.0, -0.3, 0.0, 0.25, 1.0, 1.4, 1.40001, 7.0])
    whole = ranged.apply(frame)
    for row in range(len(frame)):
        pd.testing.assert_frame_equal(ranged.apply(frame.iloc[[row]]), whole.iloc[[row]], check_exact=True)
    back = RangeMap.from_json(json.loads(json.dumps(ranged.to_json())))
    assert back == ranged
    pd.testing.assert_frame_equal(back.apply(frame), whole, check_exact=True)


def test_an_unbounded_tracks_map_is_the_identity():
    outside = _ecr([-0.3, 0.1, 0.5, 0.9, 1.4]).rename(columns={"ECR": "score"})
    ranged = get_track("kvq").range_map(outside)
    assert ranged == RangeMap({})
    pd.testing.assert_frame_equal(ranged.apply(outside), outside, check_exact=True)


def test_the_range_map_is_not_fitted_on_non_finite_predictions():
    with pytest.raises(ValueError, match="range map of ECR needs finite predictions"):
        TRACK.range_map(_ecr([0.5, np.nan]))
