"""Views: how sampled frames become the square images a backbone sees.

A view is a named function from the frames of one item to a float tensor [T, 3, S, S] in [0, 1]. Views that share a
geometry (a flip of the centre crop) reuse it, so an item is resized once however many views are asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from workbench.registry import Registry

ViewFn = Callable[[torch.Tensor], torch.Tensor]
VIEWS: Registry[ViewFn] = Registry("view")
register_view = VIEWS.register


def check_views(names: Sequence[str]) -> tuple[str, ...]:
    for name in names:
        VIEWS.get(name)
    if len(set(names)) != len(names):
        raise ValueError(f"views {list(names)} name a view twice")
    return tuple(names)


def to_float(frames: np.ndarray) -> torch.Tensor:
    """[T, H, W, 3] uint8/uint16 -> [T, 3, H, W] float32 in [0, 1]."""
    scale = float(np.iinfo(frames.dtype).max)
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(scale)


def centre_square(frames: torch.Tensor, size: int) -> torch.Tensor:
    """The centre square of side min(H, W), resized (antialiased) to `size`: the same pixels as a short-side resize
    followed by a centre crop, at a fraction of the cost since only the kept square is resampled."""
    height, width = frames.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = frames[..., top : top + side, left : left + side]
    if side == size:
        return square.contiguous()
    return F.interpolate(square, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False).clamp_(0, 1)


@register_view("center")
def center(base: torch.Tensor) -> torch.Tensor:
    return base


@register_view("hflip")
def hflip(base: torch.Tensor) -> torch.Tensor:
    return base.flip(-1)


def make_views(frames: np.ndarray, names: Sequence[str], size: int) -> torch.Tensor:
    """All requested views of one item stacked: [V, T, 3, size, size]."""
    base = centre_square(to_float(frames), size)
    return torch.stack([VIEWS.get(name)(base) for name in names])
