"""Grouped folds: deterministic in (track, k, seed), independent of row order, never splitting a group."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.folds import grouped_folds


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=5, max_size=40),
    k=st.integers(2, 5),
    seed=st.integers(0, 3),
)
def test_groups_never_split_and_folds_are_balanced(sizes, k, seed):
    groups = np.repeat([f"src{i}" for i in range(len(sizes))], sizes)
    folds = grouped_folds(groups, k, "kvq", seed)
    per_group = pd.Series(folds).groupby(groups).nunique()
    assert (per_group == 1).all()
    assert set(folds) == set(range(k))
    counts = np.bincount(folds, minlength=k)
    assert counts.max() - counts.min() <= max(sizes)  # greedy largest-first placement


def test_deterministic_and_order_free():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 7).astype(str)
    folds = grouped_folds(groups, 5, "kvq", 0)
    assert np.array_equal(folds, grouped_folds(groups, 5, "kvq", 0))
    order = rng.permutation(len(groups))
    shuffled = grouped_folds(groups[order], 5, "kvq", 0)
    assert np.array_equal(shuffled, folds[order])
    assert not np.array_equal(folds, grouped_folds(groups, 5, "kvq", 1))
    assert not np.array_equal(folds, grouped_folds(groups, 5, "uhd_iqa", 0))


def test_too_many_folds_is_an_error():
    with pytest.raises(ValueError, match="folds=5"):
        grouped_folds(["a", "a", "b"], 5, "kvq", 0)
