import functools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from workbench import losses
from workbench.losses import LOSSES, CombinedLoss

BATCH_LOSSES = {
    "plcc": losses.plcc_loss,
    "rank": losses.rank_hinge,
    "fidelity": losses.fidelity,
    "fidelity_soft": functools.partial(losses.fidelity, soft=True),
}
ALL_LOSSES = {"mse": losses.mse, "l1": losses.l1, **BATCH_LOSSES}


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("shape", [(32,), (32, 3)])
@pytest.mark.parametrize("name", ["mse", "l1"])
def test_pointwise_loss_drops_when_prediction_moves_toward_target(name, shape, gen):
    target = torch.randn(shape, generator=gen)
    noise = torch.randn(shape, generator=gen)
    fn = ALL_LOSSES[name]
    assert fn(target + noise / 2, target) < fn(target + noise, target)


@pytest.mark.parametrize("shape", [(32,), (32, 3)])
@pytest.mark.parametrize("name", list(BATCH_LOSSES))
def test_batch_loss_prefers_ordered_over_shuffled(name, shape, gen):
    target = torch.randn(shape, generator=gen)
    nearly_ordered = target + 0.05 * torch.randn(shape, generator=gen)
    shuffled = target[torch.randperm(shape[0], generator=gen)]
    fn = BATCH_LOSSES[name]
    assert fn(nearly_ordered, target) < fn(shuffled, target)


@pytest.mark.parametrize("batch", [1, 2, 16])
@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_gradients_finite_including_constant_prediction(name, batch, gen):
    target = torch.randn(batch, 2, generator=gen)
    for start in (torch.randn(batch, 2, generator=gen), torch.zeros(batch, 2)):
        pred = start.clone().requires_grad_()
        value = ALL_LOSSES[name](pred, target)
        value.backward()
        assert value.ndim == 0
        assert torch.isfinite(value)
        assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("name", list(BATCH_LOSSES))
def test_batch_of_one_contributes_zero(name):
    pred = torch.tensor([0.3], requires_grad=True)
    assert BATCH_LOSSES[name](pred, torch.tensor([1.0])).item() == 0.0


@pytest.mark.parametrize("name", list(BATCH_LOSSES))
def test_two_columns_average_the_per_column_losses(name, gen):
    pred, target = torch.randn(12, 2, generator=gen), torch.randn(12, 2, generator=gen)
    fn = BATCH_LOSSES[name]
    per_column = [fn(pred[:, k], target[:, k]) for k in range(2)]
    assert fn(pred, target).item() == pytest.approx(sum(per_column).item() / 2, rel=1e-5)


def test_plcc_loss_matches_closed_form_in_rho(gen):
    pred, target = torch.randn(40, generator=gen), torch.randn(40, generator=gen)
    rho = stats.pearsonr(pred.numpy(), target.numpy()).statistic
    expected = ((1 - rho) / 2 + (1 - rho**2) / 4) / 2
    assert losses.plcc_loss(pred, target).item() == pytest.approx(expected, abs=1e-5)


def test_rank_hinge_hand_case():
    target = torch.tensor([1.0, 0.0, 0.0])
    # Pairs with target_i > target_j: (0, 1) and (0, 2); (1, 2) is tied and ignored.
    pred = torch.tensor([0.0, 1.0, -0.2])
    assert losses.rank_hinge(pred, target).item() == pytest.approx((1.0 + 0.0) / 2)
    assert losses.rank_hinge(pred, target, margin=0.5).item() == pytest.approx((1.5 + 0.3) / 2)


def test_fidelity_hand_case():
    # Equal predictions give p_hat = 0.5 on every pair.
    pred = torch.zeros(2)
    distinct = losses.fidelity(pred, torch.tensor([1.0, 0.0]), eps=0.0)
    tied = losses.fidelity(pred, torch.tensor([1.0, 1.0]), eps=0.0)
    assert distinct.item() == pytest.approx(1 - math.sqrt(0.5))
    assert tied.item() == pytest.approx(0.0, abs=1e-7)


def test_fidelity_soft_target_discounts_near_ties():
    pred = torch.tensor([0.0, 0.0])
    near_tie = torch.tensor([0.01, 0.0])
    hard = losses.fidelity(pred, near_tie)
    soft = losses.fidelity(pred, near_tie, soft=True)
    assert soft < 1e-3 < hard


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"\(4,\).*\(4, 1\)"):
        losses.mse(torch.zeros(4), torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"\[B\] or \[B, K\]"):
        losses.rank_hinge(torch.zeros(2, 2, 2), torch.zeros(2, 2, 2))


def test_registry_names():
    assert set(LOSSES) == {"mse", "l1", "plcc", "rank", "fidelity"}


def test_combined_loss_spec_parsing():
    loss = CombinedLoss.from_spec(" mse:1, plcc ,rank:0.3")
    assert loss.weights == {"mse": 1.0, "plcc": 1.0, "rank": 0.3}
    assert loss.spec == "mse:1,plcc:1,rank:0.3"
    assert CombinedLoss.from_spec(loss.spec).weights == loss.weights
    assert CombinedLoss.from_spec("plcc").weights == {"plcc": 1.0}


def test_combined_loss_total_is_weighted_sum_of_parts(gen):
    loss = CombinedLoss.from_spec("mse:2,plcc:1,rank:0.3,fidelity:0.5")
    pred = torch.randn(16, generator=gen).requires_grad_()
    target = torch.randn(16, generator=gen)
    parts = loss.parts(pred, target)
    assert set(parts) == {"mse", "plcc", "rank", "fidelity"}
    assert parts["mse"].item() == pytest.approx(losses.mse(pred, target).item())
    expected = 2 * parts["mse"] + parts["plcc"] + 0.3 * parts["rank"] + 0.5 * parts["fidelity"]
    total = loss(pred, target)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mse,huber:2", "unknown loss 'huber'; known losses: fidelity, l1, mse, plcc, rank"),
        ("mse:x", "weight 'x' for loss 'mse'"),
        ("mse,mse:2", "appears twice"),
        ("mse,,plcc", "empty loss name"),
        ("", "empty loss name"),
    ],
)
def test_combined_loss_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        CombinedLoss.from_spec(spec)


def test_combined_loss_batch_of_one_is_finite():
    loss = CombinedLoss.from_spec("mse,l1,plcc,rank,fidelity")
    pred = torch.tensor([[0.4, -0.2]], requires_grad=True)
    total = loss(pred, torch.tensor([[1.0, 0.0]]))
    total.backward()
    assert torch.isfinite(total)
    assert torch.isfinite(pred.grad).all()
    assert total.item() == pytest.approx(np.mean([0.6**2, 0.2**2]) + np.mean([0.6, 0.2]), rel=1e-6)
