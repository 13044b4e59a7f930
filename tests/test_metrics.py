import warnings

import numpy as np
import pytest
from scipy import stats

from common import metrics


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_correlations_match_scipy(rng):
    true = rng.normal(size=200)
    pred = true + rng.normal(size=200)
    coarse = np.round(pred)  # ties exercise tau-b's correction
    assert metrics.srcc(pred, true) == pytest.approx(stats.spearmanr(pred, true).statistic)
    assert metrics.plcc(pred, true) == pytest.approx(stats.pearsonr(pred, true).statistic)
    assert metrics.krcc(coarse, true) == pytest.approx(stats.kendalltau(coarse, true, variant="b").statistic)
    assert isinstance(metrics.srcc(pred, true), float)


@pytest.mark.parametrize("fn", [metrics.srcc, metrics.krcc, metrics.plcc, metrics.plcc_logistic, metrics.rmse_logistic])
def test_constant_input_gives_nan_without_warning(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(fn([2.0, 2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0]))
        assert np.isnan(fn([1.0], [1.0]))


def test_rmse_and_mae_hand_cases():
    assert metrics.rmse([1, 2, 3], [1, 2, 7]) == pytest.approx(np.sqrt(16 / 3))
    assert metrics.mae([1, 2, 3], [2, 0, 3]) == pytest.approx(1.0)
    assert metrics.rmse([0.5], [0.5]) == 0.0


def test_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match="pred has 3.*true has 2"):
        metrics.srcc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="score_b has 1"):
        metrics.pair_accuracy([1, 2], [1], [1, 2])


def test_logistic4_fit_recovers_parameters():
    x = np.linspace(-1.0, 2.0, 80)
    b1, b2, b3, b4 = 4.5, 1.2, 0.6, 0.3
    params = metrics.fit_logistic4(x, metrics.logistic4(x, b1, b2, b3, b4))
    # Only |b4| enters the curve, so the sign of the fitted b4 is arbitrary.
    assert np.allclose([*params[:3], abs(params[3])], [b1, b2, b3, b4], atol=1e-4)


def test_logistic5_fit_reproduces_curve():
    x = np.linspace(0.0, 1.0, 80)
    y = metrics.logistic5(x, 4.0, 8.0, 0.5, 0.5, 1.0)
    params = metrics.fit_logistic5(x, y)
    assert np.allclose(metrics.logistic5(x, *params), y, atol=1e-4)


def test_fit_falls_back_to_p0(monkeypatch):
    pred, true = np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0])
    # Fewer items than parameters: no fit is attempted.
    assert np.allclose(metrics.fit_logistic4(pred, true), [5.0, 1.0, 1.0, 0.5])

    def not_converging(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(metrics, "curve_fit", not_converging)
    pred, true = np.arange(6.0), np.arange(6.0) ** 2
    assert np.allclose(metrics.fit_logistic4(pred, true), [25.0, 0.0, 2.5, 0.5])
    assert np.allclose(metrics.fit_logistic5(pred, true), [10.0, 0.0, 2.5, 0.1, 0.1])


def test_plcc_logistic_beats_raw_plcc_on_monotone_nonlinear(rng):
    pred = rng.uniform(-3, 3, size=300)
    true = metrics.logistic4(pred, 5.0, 1.0, 0.5, 0.4) + rng.normal(scale=0.05, size=300)
    raw, mapped = metrics.plcc(pred, true), metrics.plcc_logistic(pred, true)
    assert mapped >= raw
    assert mapped > 0.99
    assert metrics.rmse_logistic(pred, true) < 0.1 < metrics.rmse(pred, true)


def test_pair_accuracy_counts_ties_as_rank_one():
    score_a = [3.0, 1.0, 2.0, 2.0]
    score_b = [1.0, 3.0, 2.0, 2.0]
    rank = [1, 2, 1, 2]  # the last tie is predicted as rank 1, hence wrong
    assert metrics.pair_accuracy(score_a, score_b, rank) == pytest.approx(0.75)


def test_pair_accuracy_edge_cases():
    assert np.isnan(metrics.pair_accuracy([], [], []))
    with pytest.raises(ValueError, match="only 1 and 2"):
        metrics.pair_accuracy([1.0], [2.0], [0])


def test_all_pairs_with_groups_lists_exact_pairs():
    true = [4.0, 2.0, 3.0, 2.0]
    groups = ["a", "a", "b", "b"]
    i, j, rank = metrics.all_pairs(true)
    # (1, 3) is a tie and is dropped.
    assert list(zip(i, j, rank)) == [(0, 1, 1), (0, 2, 1), (0, 3, 1), (1, 2, 2), (2, 3, 1)]
    i, j, rank = metrics.all_pairs(true, groups, same_group=True)
    assert list(zip(i, j, rank)) == [(0, 1, 1), (2, 3, 1)]
    i, j, rank = metrics.all_pairs(true, groups, same_group=False)
    assert list(zip(i, j, rank)) == [(0, 2, 1), (0, 3, 1), (1, 2, 2)]
    i, _, _ = metrics.all_pairs(true, groups)
    assert len(i) == 5


def test_all_pairs_rejects_bad_groups():
    with pytest.raises(ValueError, match="groups is None"):
        metrics.all_pairs([1.0, 2.0], same_group=True)
    with pytest.raises(ValueError, match="true has 2, groups has shape"):
        metrics.all_pairs([1.0, 2.0], ["a", "b", "c"], same_group=False)


def test_all_pairs_scales_and_agrees_with_pair_accuracy(rng):
    true = rng.permutation(3000).astype(float)
    i, j, rank = metrics.all_pairs(true)
    assert len(i) == 3000 * 2999 // 2
    assert np.all(i < j)
    # Scoring with the truth itself orders every pair correctly.
    assert metrics.pair_accuracy(true[i], true[j], rank) == 1.0
    assert metrics.pair_accuracy(-true[i], -true[j], rank) == 0.0


def test_summary_keys_and_values(rng):
    true = rng.normal(size=50)
    pred = 2 * true + 1
    row = metrics.summary(pred, true)
    assert list(row) == ["srcc", "krcc", "plcc", "plcc_logistic", "rmse", "mae"]
    assert row["srcc"] == pytest.approx(1.0)
    assert row["krcc"] == pytest.approx(1.0)
    assert row["plcc"] == pytest.approx(1.0)
    assert row["mae"] == pytest.approx(metrics.mae(pred, true))
    assert all(isinstance(v, float) for v in row.values())
