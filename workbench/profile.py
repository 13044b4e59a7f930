"""What a track's test-time pipeline costs per image or video: parameters, MACs and FLOPs, and measured seconds.

FLOPs come from PyTorch's own counter (`torch.utils.flop_counter.FlopCounterMode`), which counts matrix products and
convolutions at 2 FLOPs per multiply-accumulate, so MACs = FLOPs / 2. Element-wise work (activations, normalisation,
the moments of the handcrafted statistics) is not counted, as in the counters challenges name (fvcore, thop).
The pipeline is what runs per item at test time: the backbone once per frame of every variant of every view family,
then the head; a backbone shared by several families counts its parameters once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from features.backbones import Backbone, create_backbone
from features.cache import FeatureSpec
from features.decode import DECODERS, FrameSampling
from features.extract import render_item
from features.views import view_family
from tracks import Track
from workbench.config import ProfileConfig, TrainConfig
from workbench.heads import FrameHead, create_head


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
class Stage:
    name: str
    input: str  # the shape one pass sees
    passes: int  # per item
    cost: Cost  # of one pass


@dataclass(frozen=True)
class Pipeline:
    """A backbone over the variants of one or several view families (feature sets differing in their view only),
    then a head over their features side by side."""

    specs: tuple[FeatureSpec, ...]
    variants: tuple[tuple[str, ...], ...]  # per family, the test-time variants
    head: str
    hidden: int
    targets: int

    @classmethod
    def of(cls, cfg: ProfileConfig | TrainConfig, track: Track, variants: Sequence[tuple[str, ...]]) -> Pipeline:
        """The pipeline of a feature and head configuration (a ProfileConfig, or a run's TrainConfig)."""
        specs = cfg.feature_specs(track.media)
        return cls(specs, tuple(tuple(v) for v in variants), cfg.head, cfg.hidden, len(track.targets))

    @cached_property
    def backbone(self) -> Backbone:
        return create_backbone(self.specs[0].backbone, weights=self.specs[0].weights)

    @cached_property
    def families(self) -> list:
        return [view_family(spec) for spec in self.specs]

    @property
    def frames(self) -> int:
        return self.specs[0].frames if self.specs[0].media == "video" else 1

    @property
    def views(self) -> int:
        """Test-time views per item after pairing the families' variants (see features.cache.concat_features)."""
        return max(len(v) for v in self.variants)

    def head_module(self) -> FrameHead:
        return create_head(self.head, dim=self.backbone.dim * len(self.specs), out=self.targets, hidden=self.hidden)

    def stages(self) -> list[Stage]:
        stages = []
        for spec, family, variants in zip(self.specs, self.families, self.variants, strict=True):
            side = family.side
            cost = count(self.backbone, torch.rand(1, 3, side, side))
            shape = f"3x{side}x{side}"
            runs_at = tuple(getattr(self.backbone, "input_size", (side, side)))
            if runs_at != (side, side):  # a fixed-size model resizes the view: its cost is that of its own size
                shape += f", run at {runs_at[0]}x{runs_at[1]}"
            stages.append(Stage(f"{spec.backbone} on {spec.view}", shape, len(variants) * self.frames, cost))
        head = self.head_module()
        dim = head.mean.numel()
        x, mask = torch.zeros(self.views, self.frames, dim), torch.ones(self.views, self.frames, dtype=torch.bool)
        stages.append(Stage(f"head {self.head}", f"{self.views}x{self.frames}x{dim}", 1, count(head, x, mask)))
        return stages

    def total(self, stages: Sequence[Stage]) -> Cost:
        """Per item: every pass's FLOPs; the shared backbone's parameters once, plus the head's."""
        params = sum(p.numel() for module in (self.backbone, self.head_module()) for p in module.parameters())
        return Cost(params=params, flops=sum(stage.passes * stage.cost.flops for stage in stages))

    def seconds_per_item(self, paths: Sequence[str]) -> float:
        """Measured wall time of decode, views, backbone and head per item on this machine's CPU; the first item runs
        twice, so one-off initialisation is not counted."""
        spec = self.specs[0]
        decoder = DECODERS.get(spec.media)
        sampling = FrameSampling(spec.frames, spec.fps, spec.phase)
        head = self.head_module().eval()

        def run(path: str) -> None:
            rendered = render_item(decoder, path, sampling, self.families, self.variants)
            with torch.no_grad():
                for views in rendered:
                    self.backbone(torch.cat([pixels for _, pixels, _ in views]))
                frames = max(len(pixels) for views in rendered for _, pixels, _ in views)
                x = torch.zeros(self.views, frames, head.mean.numel())  # pairing the variants is bookkeeping, not work
                head(x, torch.ones(self.views, frames, dtype=torch.bool))

        run(paths[0])
        started = time.perf_counter()
        for path in paths:
            run(path)
        return (time.perf_counter() - started) / len(paths)
