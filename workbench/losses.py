"""Training losses for quality heads, and a weighted combination named by a spec string.

Every loss takes ``pred`` and ``target`` of shape ``[B]`` or ``[B, K]`` (K targets scored
side by side) and returns a scalar differentiable in ``pred``; the combination takes NaN targets
as unlabelled (see ``CombinedLoss.forward``). Batch-level losses (PLCC,
ranking, fidelity) are computed per column and averaged over columns; a column with nothing
to compare (a batch of one, or for ranking all targets tied) contributes 0 instead of nan, so
a ragged last batch cannot poison training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from common.registry import Registry

__all__ = ["LOSSES", "CombinedLoss", "fidelity", "get_loss", "l1", "mse", "plcc_loss", "rank_hinge"]

LossFn = Callable[[Tensor, Tensor], Tensor]
LOSSES: Registry[LossFn] = Registry("loss")


def _target_columns(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Both inputs as ``[B, K]``, so batch losses handle one and several targets alike."""
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {tuple(pred.shape)} but target has {tuple(target.shape)}")
    if pred.ndim not in (1, 2):
        raise ValueError(f"expected pred and target of shape [B] or [B, K], got {tuple(pred.shape)}")
    if pred.ndim == 1:
        return pred.unsqueeze(1), target.unsqueeze(1)
    return pred, target


def _pair_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` ([B, B, K]) over the pairs in ``mask`` per column, then over columns.

    A column without pairs contributes 0; multiplying rather than indexing keeps the result
    attached to the graph even then.
    """
    mask = mask.to(values.dtype)
    per_column = (values * mask).sum(dim=(0, 1)) / mask.sum(dim=(0, 1)).clamp_min(1.0)
    return per_column.mean()


def _differences(x: Tensor) -> Tensor:
    """``x[i] - x[j]`` for every pair of rows: ``[B, K] -> [B, B, K]``."""
    return x.unsqueeze(1) - x.unsqueeze(0)


@LOSSES.register("mse")
def mse(pred: Tensor, target: Tensor) -> Tensor:
    p, t = _target_columns(pred, target)
    return F.mse_loss(p, t)


@LOSSES.register("l1")
def l1(pred: Tensor, target: Tensor) -> Tensor:
    p, t = _target_columns(pred, target)
    return F.l1_loss(p, t)


def _zscore(x: Tensor) -> Tensor:
    """Per-column standardisation with the population std; the 1e-8 keeps a constant column at 0."""
    std, mean = torch.std_mean(x, dim=0, correction=0, keepdim=True)
    return (x - mean) / (std + 1e-8)


@LOSSES.register("plcc")
def plcc_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Differentiable PLCC surrogate in the FAST-VQA form.

    After z-scoring, ``mse(p, t) / 4`` equals ``(1 - rho) / 2``; the second term equals
    ``(1 - rho**2) / 4``, whose gradient grows with rho, so well-correlated batches keep
    being pushed. A batch of one z-scores to zeros and so gives 0.
    """
    p, t = _target_columns(pred, target)
    p, t = _zscore(p), _zscore(t)
    loss0 = ((p - t) ** 2).mean(dim=0) / 4
    rho = (p * t).mean(dim=0, keepdim=True)
    loss1 = ((rho * p - t) ** 2).mean(dim=0) / 4
    return ((loss0 + loss1) / 2).mean()


@LOSSES.register("rank")
def rank_hinge(pred: Tensor, target: Tensor, margin: float = 0.0) -> Tensor:
    """Mean of ``relu(margin - (pred_i - pred_j))`` over in-batch pairs with ``target_i > target_j``."""
    p, t = _target_columns(pred, target)
    return _pair_mean(F.relu(margin - _differences(p)), _differences(t) > 0)


@LOSSES.register("fidelity")
def fidelity(
    pred: Tensor,
    target: Tensor,
    soft: bool = False,
    scale: float = 1.0,
    eps: float = 1e-8,
) -> Tensor:
    """Fidelity loss between Thurstone case-V pair probabilities and the target order.

    ``p_hat = Phi((s_i - s_j) / sqrt(2))`` over pairs ``i < j``. The hard target is 1, 0.5 or 0
    as ``target_i`` is above, equal to or below ``target_j``; ``soft=True`` uses
    ``Phi((t_i - t_j) / sqrt(2) / scale)`` so near-ties count less. ``eps`` keeps the sqrt
    gradients finite where a probability reaches 0.
    """
    p, t = _target_columns(pred, target)
    p_hat = torch.special.ndtr(_differences(p) / math.sqrt(2))
    dt = _differences(t)
    if soft:
        prob = torch.special.ndtr(dt / (math.sqrt(2) * scale))
    else:
        prob = (torch.sign(dt) + 1) / 2
    loss = 1 - torch.sqrt(prob * p_hat + eps) - torch.sqrt((1 - prob) * (1 - p_hat) + eps)
    batch = p.shape[0]
    upper = torch.ones(batch, batch, dtype=torch.bool, device=p.device).triu(diagonal=1)
    return _pair_mean(loss, upper.unsqueeze(-1).expand_as(loss))


def get_loss(name: str) -> LossFn:
    return LOSSES.get(name)


class CombinedLoss(torch.nn.Module):
    """Weighted sum of registered losses, e.g. ``CombinedLoss.from_spec("mse:1,plcc:1,rank:0.3")``."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        super().__init__()
        if not weights:
            raise ValueError("CombinedLoss needs at least one loss")
        self.fns = {name: get_loss(name) for name in weights}
        self.weights = dict(weights)

    @classmethod
    def from_spec(cls, spec: str) -> CombinedLoss:
        """Parse ``name[:weight]`` terms separated by commas; an omitted weight is 1."""
        weights: dict[str, float] = {}
        for term in spec.split(","):
            name, _, weight = (part.strip() for part in term.partition(":"))
            if not name:
                raise ValueError(f"empty loss name in spec {spec!r}")
            if name in weights:
                raise ValueError(f"loss {name!r} appears twice in spec {spec!r}")
            try:
                weights[name] = float(weight) if weight else 1.0
            except ValueError:
                raise ValueError(f"weight {weight!r} for loss {name!r} in spec {spec!r} is not a number") from None
        return cls(weights)

    @property
    def spec(self) -> str:
        """The spec string that rebuilds this loss, for run records."""
        return ",".join(f"{name}:{weight:g}" for name, weight in self.weights.items())

    def parts(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Each loss unweighted, for logging alongside the total."""
        return {name: fn(pred, target) for name, fn in self.fns.items()}

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The weighted sum; a target missing for some items (NaN) is scored per column over the items labelled on
        it, the columns averaged, so an unlabelled cell neither counts nor turns the loss into NaN."""
        p, t = _target_columns(pred, target)
        known = torch.isfinite(t)
        if bool(known.all()):
            return self._weighted_total(pred, target)
        columns = [
            self._weighted_total(p[known[:, k], k], t[known[:, k], k]) for k in range(t.shape[1]) if known[:, k].any()
        ]
        return torch.stack(columns).mean() if columns else (p * 0.0).sum()

    def _weighted_total(self, pred: Tensor, target: Tensor) -> Tensor:
        parts = self.parts(pred, target)
        return torch.stack([self.weights[name] * value for name, value in parts.items()]).sum()

    def extra_repr(self) -> str:
        return self.spec
