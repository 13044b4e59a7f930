"""The bootstrap over groups (common.bootstrap): its resamples, its weighted kernels against scipy on the expanded
sample, and every track's fast resampled score against scoring each expanded resample with `selection_score`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from common import bootstrap
from tracks import Track, get_track, list_tracks


def sample(items: int = 60, groups: int = 15, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions and labels on a coarse scale (ties, as MOS has), and each item's group."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 9, items).astype(np.float64)
    pred = np.round(truth + rng.normal(0, 2, items), 1)
    return pred, truth, rng.integers(0, groups, items)


def test_a_resample_draws_whole_groups_as_many_as_there_are() -> None:
    _, _, groups = sample()
    blocks = list(bootstrap.group_counts(groups, 150, seed=4))
    weights = np.concatenate(blocks)
    assert weights.shape == (150, len(groups)) and len(blocks) == -(-150 // bootstrap.CHUNK)
    for row in weights:
        per_group = pd.Series(row).groupby(groups).agg(["min", "max"])
        assert (per_group["min"] == per_group["max"]).all()  # a group is drawn whole or not at all
        assert per_group["min"].sum() == len(np.unique(groups))
    again = np.concatenate(list(bootstrap.group_counts(groups, 150, seed=4)))
    np.testing.assert_array_equal(weights, again)


def test_weighted_kernels_equal_scipy_on_the_expanded_sample() -> None:
    pred, truth, groups = sample()
    weights = next(bootstrap.group_counts(groups, 20, seed=1))
    srcc = bootstrap.weighted_srcc(pred, truth, weights)
    plcc = bootstrap.weighted_plcc(pred, truth, weights)
    for k, counts in enumerate(weights.astype(int)):
        p, t = np.repeat(pred, counts), np.repeat(truth, counts)
        assert srcc[k] == pytest.approx(stats.spearmanr(p, t).statistic, abs=1e-12)
        assert plcc[k] == pytest.approx(stats.pearsonr(p, t).statistic, abs=1e-12)


def test_a_constant_resample_has_no_correlation() -> None:
    pred, truth = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0])
    weights = np.array([[1.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    assert np.isnan(bootstrap.weighted_plcc(pred, truth, weights)[0])
    assert bootstrap.weighted_srcc(pred, truth, weights)[1] == pytest.approx(1.0)


def test_the_interval_brackets_the_middle_of_the_resamples_and_skips_undefined_ones() -> None:
    values = np.r_[np.arange(1001) / 1000, np.nan]
    assert bootstrap.interval(values) == pytest.approx((0.025, 0.975))
    assert np.isnan(bootstrap.interval([np.nan])[0])


def labelled_items(track: Track, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions and labelled items for `track`: every target, ties, several items a group, and (with several
    targets) some labels missing, as XGC's lists have them."""
    rng = np.random.default_rng(seed)
    ids = [f"item{k:03d}" for k in range(48)]
    items = pd.DataFrame({"item_id": ids, "group": rng.integers(0, 12, len(ids)).astype(str), "split": "train"})
    pred = pd.DataFrame(index=pd.Index(ids, name="item_id"))
    for target in track.targets:
        labels = rng.integers(1, 6, len(ids)).astype(np.float64)
        if len(track.targets) > 1:
            labels[rng.random(len(ids)) < 0.1] = np.nan
        items[target] = labels
        pred[target] = np.round(np.nan_to_num(labels, nan=3.0) + rng.normal(0, 1.5, len(ids)), 1)
    return pred, items


@pytest.mark.parametrize("name", list_tracks())
def test_every_tracks_resampled_score_equals_its_selection_score_of_each_expanded_resample(name: str) -> None:
    track = get_track(name)
    pred, items = labelled_items(track)
    weights = next(bootstrap.group_counts(items["group"], 12, seed=2))
    fast = track.resampled_scores(pred, items, weights)
    slow = Track.resampled_scores(track, pred, items, weights)
    assert set(slow) <= set(fast) | {"score"}
    for key, values in slow.items():
        np.testing.assert_allclose(fast[key], values, rtol=1e-9, atol=1e-12, err_msg=f"{name}: {key}")
    unweighted = track.resampled_scores(pred, items, np.ones((1, len(pred))))["score"][0]
    assert unweighted == pytest.approx(track.selection_score(pred, items)["score"], abs=1e-12)
