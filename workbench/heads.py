"""Heads: small regressors on cached per-frame features, scoring each frame and averaging over the frames present.

A registry of factories, as timm declares models: `create_head("linear", dim=..., out=...)`. Every head standardises
its input and its targets with statistics fitted on the training fold (buffers, so a checkpoint is self-contained):
features such as the handcrafted quality statistics differ in scale by orders of magnitude, and a regressor that
predicts z-scores trains at the same learning rate whether the MOS scale is 0-1 or 0-100.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from workbench.registry import Registry

HeadFactory = Callable[[int, int, int, float], nn.Module]
HEADS: Registry[HeadFactory] = Registry("head")
register_head = HEADS.register


@register_head("linear")
def linear(dim: int, out: int, hidden: int, dropout: float) -> nn.Module:
    """The KVQ/UHD-IQA winners' head: Linear(D,128) -> Linear(128,1) with no activation, a low-rank linear map."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.Dropout(dropout), nn.Linear(hidden, out))


@register_head("mlp")
def mlp(dim: int, out: int, hidden: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out))


class FrameHead(nn.Module):
    """Standardise, score every frame, average the scores over the frames the mask marks as present, and map the
    average back onto the label scale."""

    def __init__(self, regressor: nn.Module, dim: int, out: int):
        super().__init__()
        self.regressor = regressor
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("target_mean", torch.zeros(out))
        self.register_buffer("target_std", torch.ones(out))

    @torch.no_grad()
    def fit_standardization(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> None:
        """x [N, T, D], mask [N, T], y [N, out] of the training fold."""
        frames = x[mask]
        self.mean.copy_(frames.mean(0))
        self.std.copy_(frames.std(0, unbiased=False).clamp_min(1e-6))
        self.target_mean.copy_(y.mean(0))
        self.target_std.copy_(y.std(0, unbiased=False).clamp_min(1e-6))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, D], mask [B, T] -> [B, out] on the label scale."""
        scores = self.regressor((x - self.mean) / self.std)
        weights = mask.unsqueeze(-1).to(scores.dtype)
        pooled = (scores * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return pooled * self.target_std + self.target_mean


def create_head(name: str, dim: int, out: int = 1, hidden: int = 128, dropout: float = 0.0) -> FrameHead:
    return FrameHead(HEADS.get(name)(dim, out, hidden, dropout), dim, out)
