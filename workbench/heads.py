"""Heads: small regressors on cached feature streams, each pooled over the frames present, then joined.

A registry of factories, as timm declares models: `create_head("linear", dims, out=...)`. Every head standardises
its input and its targets with statistics fitted on the training fold (buffers, so a checkpoint is self-contained):
features such as the handcrafted quality statistics differ in scale by orders of magnitude, and a regressor that
predicts z-scores trains at the same learning rate whether the MOS scale is 0-1 or 0-100.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.registry import Registry
from features.reader import Streams

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


class StreamHead(nn.Module):
    """Standardise each feature stream's frames, pool each stream over its own time axis (the mean of the frames its
    mask marks present), join the pooled vectors, regress, and map back onto the label scale.

    Each stream has its own width and time axis (key frames, clips, ...). With a linear regressor the output is
    exactly the mean of per-frame scores, as the KVQ and UHD-IQA winners' heads score frames; a stream with no frame
    present pools to its training mean (zero after standardisation), so a short video without a whole clip still
    scores."""

    def __init__(self, regressor: nn.Module, dims: Sequence[int], out: int):
        super().__init__()
        self.regressor = regressor
        self.dims = tuple(dims)
        for k, dim in enumerate(self.dims):
            self.register_buffer(f"mean_{k}", torch.zeros(dim))
            self.register_buffer(f"std_{k}", torch.ones(dim))
        self.register_buffer("target_mean", torch.zeros(out))
        self.register_buffer("target_std", torch.ones(out))

    def standardisation(self, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"mean_{stream}"), getattr(self, f"std_{stream}")

    @torch.no_grad()
    def fit_standardization(self, streams: Sequence[tuple[torch.Tensor, torch.Tensor]], y: torch.Tensor) -> None:
        """streams: per stream (x [N, T, D], mask [N, T]) of the training fold; y [N, out], NaN where an item has no
        label for a target (left out of that target's statistics)."""
        for k, (x, mask) in enumerate(streams):
            mean, std = self.standardisation(k)
            frames = x[mask]
            mean.copy_(frames.mean(0))
            spread = frames.std(0, unbiased=False)
            # A feature constant over the training fold carries nothing to learn, and dividing by its near-zero
            # spread would blow up any other value it takes at test time: it is left out (z = 0 always).
            std.copy_(torch.where(spread > 1e-6, spread, torch.inf))
        known = torch.isfinite(y)
        count = known.sum(0).clamp_min(1)
        target_mean = torch.where(known, y, 0.0).sum(0) / count
        spread = torch.where(known, y - target_mean, 0.0).square().sum(0) / count
        self.target_mean.copy_(target_mean)
        self.target_std.copy_(spread.sqrt().clamp_min(1e-6))

    def forward(self, *streams: torch.Tensor) -> torch.Tensor:
        """x_1 [B, T_1, D_1], mask_1 [B, T_1], x_2, mask_2, ... -> [B, out] on the label scale."""
        if len(streams) != 2 * len(self.dims):
            raise ValueError(f"expected (x, mask) for each of {len(self.dims)} stream(s), got {len(streams)} tensors")
        pooled = []
        for k in range(len(self.dims)):
            x, mask = streams[2 * k], streams[2 * k + 1]
            mean, std = self.standardisation(k)
            weights = mask.unsqueeze(-1).to(x.dtype)
            pooled.append((((x - mean) / std) * weights).sum(1) / weights.sum(1).clamp_min(1.0))
        return self.regressor(torch.cat(pooled, dim=-1)) * self.target_std + self.target_mean


def create_head(
    name: str, dims: int | Sequence[int], out: int = 1, hidden: int = 128, dropout: float = 0.0
) -> StreamHead:
    """A head over streams of these widths (one int: one stream)."""
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    return StreamHead(HEADS.get(name)(sum(dims), out, hidden, dropout), dims, out)


def stream_tensors(streams: Streams) -> list[torch.Tensor]:
    """x_1 [items, views, T_1, D_1], mask_1, x_2, mask_2, ...: what a head takes, per (item, view) once flattened."""
    return [torch.from_numpy(a) for part in streams.parts for a in (part.x, part.mask)]


@torch.no_grad()
def predict_views(head: StreamHead, tensors: list[torch.Tensor], batch: int = 4096) -> np.ndarray:
    """Stream tensors of [items, views, ...] (see stream_tensors) -> [items, views, targets]."""
    head.eval()
    items, views = tensors[0].shape[:2]
    flat = [tensor.flatten(0, 1).split(batch) for tensor in tensors]
    out = torch.cat([head(*chunk) for chunk in zip(*flat)])
    return out.reshape(items, views, -1).numpy()


def load_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """A Lightning checkpoint's weights, unpickled with `weights_only`: a checkpoint can never run code."""
    return torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]
