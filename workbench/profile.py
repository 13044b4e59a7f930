"""What a track's test-time pipeline costs per image or video (parameters, MACs and FLOPs, counted as features.cost
counts them), and the check of that cost against the challenge's budget.

The pipeline is what runs per item at test time: each feature set's encoder once per frame (or clip) of every variant,
then the head over the streams; an encoder shared by several sets counts its parameters once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import pandas as pd
import torch
from rich.table import Table

from features import streams as stream_families
from features.backbones import FrozenEncoder
from features.cost import Cost, LoadedStream, count
from features.encoding import create_encoders
from features.spec import FeatureSpec
from features.views import split_variants, view_family
from tracks import Track
from workbench.config import ProfileConfig, TrainConfig
from workbench.console import console, table
from workbench.heads import StreamHead, create_head


@dataclass(frozen=True)
class Stage:
    name: str
    input: str  # the shape one pass sees
    passes: int  # per item
    cost: Cost  # of one pass


@dataclass(frozen=True)
class Pipeline:
    """Every feature set's encoder over its test-time variants, then the head over the streams: the view families of
    the key-frame stream share one backbone, a motion stream runs its own encoder on clips (one per key frame)."""

    streams: tuple[tuple[FeatureSpec, ...], ...]
    variants: tuple[tuple[str, ...], ...]  # per feature set (the streams' sets in order), the test-time variants
    head: str
    hidden: int
    targets: int
    loaded: tuple[LoadedStream, ...] = ()  # the text, alignment and metadata streams, after the cached ones

    @classmethod
    def of(
        cls,
        cfg: ProfileConfig | TrainConfig,
        track: Track,
        variants: Sequence[tuple[str, ...]],
        items: pd.DataFrame | None = None,
    ) -> Pipeline:
        """The pipeline of a feature and head configuration (a ProfileConfig, or a run's TrainConfig); `items`, the
        run's, give the loaded streams the widths its training split makes (the categories of the metadata stream;
        none where not given)."""
        streams = cfg.streams(track.decoder)
        loaded = stream_families.loaded_costs(cfg, track.inputs, items)
        return cls(streams, tuple(tuple(v) for v in variants), cfg.head, cfg.hidden, len(track.targets), loaded)

    @property
    def specs(self) -> tuple[FeatureSpec, ...]:
        return tuple(spec for stream in self.streams for spec in stream)

    @cached_property
    def encoders(self) -> list[FrozenEncoder]:
        return create_encoders(self.specs)

    @cached_property
    def families(self) -> list:
        return [view_family(spec) for spec in self.specs]

    @staticmethod
    def frames(spec: FeatureSpec) -> int:
        """Encoder passes (and rows) per item and variant (FeatureSpec.rows)."""
        return spec.rows

    @property
    def views(self) -> int:
        """Test-time views per item after pairing the sets' variants (see features.reader.concat_features)."""
        return max(len(v) for v in self.variants)

    def stream_dims(self) -> list[int]:
        dims, encoders = [], iter(self.encoders)
        for stream in self.streams:
            dims.append(sum(next(encoders).dim for _ in stream))
        return dims + [stream.dim for stream in self.loaded]

    def head_module(self) -> StreamHead:
        return create_head(self.head, self.stream_dims(), out=self.targets, hidden=self.hidden)

    def head_inputs(self, frames: Sequence[int]) -> list[torch.Tensor]:
        """Zeros shaped as the head's streams for one item's views (pairing the variants is bookkeeping, not work)."""
        tensors = []
        for length, dim in zip(frames, self.stream_dims(), strict=True):
            tensors += [torch.zeros(self.views, length, dim), torch.ones(self.views, length, dtype=torch.bool)]
        return tensors

    def stages(self) -> list[Stage]:
        stages = []
        for spec, family, encoder, variants in zip(
            self.specs, self.families, self.encoders, self.variants, strict=True
        ):
            side = family.side
            image = family.pass_shape(spec)
            cost = count(encoder, torch.rand(1, *image))
            shape = "x".join(map(str, image))
            runs_at = tuple(getattr(encoder, "input_size", (side, side)))
            if runs_at != (side, side):  # a fixed-size model resizes the view: its cost is that of its own size
                shape += f", run at {runs_at[0]}x{runs_at[1]}"
            passes = len(variants) * self.frames(spec)
            stages.append(Stage(f"{spec.backbone} on {spec.view}", shape, passes, cost))
        stages += [Stage(stream.name, stream.input, 1, stream.cost) for stream in self.loaded]
        head = self.head_module()
        frames = [self.frames(stream[0]) for stream in self.streams] + [stream.frames for stream in self.loaded]
        shapes = ", ".join(f"{self.views}x{f}x{d}" for f, d in zip(frames, self.stream_dims(), strict=True))
        stages.append(Stage(f"head {self.head}", shapes, 1, count(head, *self.head_inputs(frames))))
        return stages

    def total(self, stages: Sequence[Stage]) -> Cost:
        """Per item: every pass's FLOPs; each distinct encoder's parameters once, plus the head's."""
        modules = [*{id(e): e for e in self.encoders}.values(), self.head_module()]
        params = sum(p.numel() for module in modules for p in module.parameters())
        params += sum(stream.cost.params for stream in self.loaded)
        return Cost(params=params, flops=sum(stage.passes * stage.cost.flops for stage in stages))


def profiled(cfg: ProfileConfig, track: Track) -> Pipeline:
    """The pipeline a run of these words would submit, with every test-time view, for its cost."""
    families = [view_family(spec) for spec in cfg.all_specs(track.decoder)]
    return Pipeline.of(cfg, track, split_variants(families, track.test_views(cfg.views)))


def cost_table(track: Track, pipeline: Pipeline) -> tuple[Table, Cost]:
    stages = pipeline.stages()
    total = pipeline.total(stages)

    def counts(params: float, macs: float, flops: float) -> list[str]:
        return [f"{params / 1e6:.4f}", f"{macs / 1e9:.4f}", f"{flops / 1e9:.4f}"]

    rows = [
        [s.name, s.input, s.passes, *counts(s.cost.params, s.passes * s.cost.macs, s.passes * s.cost.flops)]
        for s in stages
    ]
    rows.append([f"total per {track.unit}", "", "", *counts(total.params, total.macs, total.flops)])
    per = f"per {track.unit}"
    columns = ["stage", "input per pass", f"passes {per}", "M params", f"GMACs {per}", f"GFLOPs {per}"]
    return table(f"{track.name} pipeline cost (PyTorch FlopCounterMode; MACs = FLOPs / 2)", columns, rows), total


def budget_rows(track: Track, total: Cost) -> list[tuple[str, float, float]]:
    return track.budget.check(total.macs, total.flops, total.params) if track.budget else []


def check_budget(track: Track, *pipelines: Pipeline) -> None:
    """One line of cost at submit; a loud warning when the model is over the challenge's budget. A blend runs every
    run's pipeline, so their costs add up (a backbone shared by two runs counts twice: an upper bound)."""
    totals = [pipeline.total(pipeline.stages()) for pipeline in pipelines]
    total = Cost(params=sum(t.params for t in totals), flops=sum(t.flops for t in totals))
    limits = budget_rows(track, total)
    console.print(
        f"model cost per {track.unit}: {total.params / 1e6:.4f} M params, {total.macs / 1e9:.4f} GMACs, "
        f"{total.flops / 1e9:.4f} GFLOPs; budget: " + ", ".join(f"{limit:g} {unit}" for unit, _, limit in limits)
    )
    over = [f"{value:.4g} {unit} > {limit:g} {unit}" for unit, value, limit in limits if value > limit]
    if over:
        console.print(
            f"[bold white on red] OVER THE {track.name} BUDGET: {'; '.join(over)}. "
            f"The organisers will not accept this model: choose a smaller backbone, size or fewer views. [/]"
        )
