"""What an encoder costs per pass: parameters and FLOPs from PyTorch's own counter.

`torch.utils.flop_counter.FlopCounterMode` counts matrix products and convolutions at 2 FLOPs per multiply-accumulate,
so MACs = FLOPs / 2. Element-wise work (activations, normalisation, the moments of the handcrafted statistics) is not
counted, as in the counters challenges name (fvcore, thop).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int

    @property
    def macs(self) -> float:
        return self.flops / 2


def count(module: nn.Module, *inputs: torch.Tensor) -> Cost:
    """Parameters and FLOPs of one call of `module` on `inputs`."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs)
    return Cost(params=sum(p.numel() for p in module.parameters()), flops=int(counter.get_total_flops()))


@dataclass(frozen=True)
class LoadedStream:
    """A stream made when a run loads, from the items table or the file's header: its width and frames, and what
    making it costs per item."""

    name: str
    input: str
    dim: int
    frames: int
    cost: Cost
