"""What a track's test-time pipeline costs per image or video: parameters, MACs and FLOPs, and measured seconds.

FLOPs come from PyTorch's own counter (`torch.utils.flop_counter.FlopCounterMode`), which counts matrix products and
convolutions at 2 FLOPs per multiply-accumulate, so MACs = FLOPs / 2. Element-wise work (activations, normalisation,
the moments of the handcrafted statistics) is not counted, as in the counters challenges name (fvcore, thop).
The pipeline is what runs per item at test time: each feature set's encoder once per frame (or clip) of every variant,
then the head over the streams; an encoder shared by several sets counts its parameters once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from features import clip
from features.backbones import FrozenEncoder
from features.cache import FeatureSpec
from features.extract import create_encoders
from features.metadata import CONTAINER_FACTS
from features.text import TEXT_ENCODERS, ClipTextTower, HashedNgrams
from features.views import view_family
from tracks import Track
from workbench.config import ProfileConfig, TrainConfig
from workbench.heads import StreamHead, create_head
from workbench.train import text_columns


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
class LoadedStream:
    """A stream made when a run loads, from the items table or the file's header: its width and frames, and what
    making it costs per item."""

    name: str
    input: str
    dim: int
    frames: int
    cost: Cost


class _TextTower(nn.Module):
    """A text encoder's network as one module on token ids, its parameters those of the text side alone."""

    def __init__(self, encode, parameters: Sequence[nn.Parameter]):
        super().__init__()
        self.encode, self.counted = encode, list(parameters)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encode(tokens)


def text_cost(encoder: object) -> tuple[Cost, str]:
    """One text at the encoder's token limit (its worst case). The hashed default's sparse products are not counted,
    as element-wise work is not (its SVD's axes are parameters, though, where it has been fitted)."""
    if isinstance(encoder, HashedNgrams):
        return Cost(params=int(encoder.state().get("components", np.empty(0)).size), flops=0), "hashed n-grams"
    if isinstance(encoder, ClipTextTower):
        model = clip.load_model(encoder.arch, encoder.weights, encoder.seed)[0]
        text = [p for name, p in model.named_parameters() if not name.startswith("visual.")]
        length = int(getattr(model, "context_length", 77))
        tower = _TextTower(model.encode_text, text)
    else:
        net, length = encoder._part("net"), encoder.max_tokens
        tower = _TextTower(lambda tokens: net(input_ids=tokens).last_hidden_state, list(net.parameters()))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        tower(torch.ones(1, length, dtype=torch.long))
    params = sum(p.numel() for p in tower.counted)
    return Cost(params=params, flops=int(counter.get_total_flops())), f"1x{length} tokens"


def loaded_streams(cfg: ProfileConfig | TrainConfig, track: Track, categories: Mapping[str, int]) -> tuple:
    """The streams a run makes when it loads (workbench.train.read_streams), in its order."""
    streams = []
    for column in text_columns(cfg, track):
        encoder = TEXT_ENCODERS.get(cfg.text)(cfg.text_weights, getattr(cfg, "seed", 0))  # profile has no seed
        cost, shape = text_cost(encoder)
        streams.append(LoadedStream(f"{cfg.text} on {column}", shape, encoder.width, 1, cost))
        if cfg.align:
            dim, frames = encoder.width - 1, cfg.frames
            align = Cost(params=0, flops=2 * dim * frames)
            streams.append(LoadedStream(f"alignment of {column}", f"{frames}x{dim}", 1, frames, align))
    if cfg.meta:
        width = len(CONTAINER_FACTS) + sum(categories.values())
        streams.append(LoadedStream("container metadata and categories", "the file's header", width, 1, Cost(0, 0)))
    return tuple(streams)


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
        categories: Mapping[str, int] | None = None,
    ) -> Pipeline:
        """The pipeline of a feature and head configuration (a ProfileConfig, or a run's TrainConfig); `categories`
        counts each Category input's training categories (the metadata stream's width; none where not given)."""
        streams = cfg.streams(track.media)
        loaded = loaded_streams(cfg, track, categories or {})
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
        """Key frames (or clips) per item: an image is one frame whatever the sampling says."""
        return spec.frames if spec.time_axis else 1

    @property
    def views(self) -> int:
        """Test-time views per item after pairing the sets' variants (see features.cache.concat_features)."""
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
        for count, dim in zip(frames, self.stream_dims(), strict=True):
            tensors += [torch.zeros(self.views, count, dim), torch.ones(self.views, count, dtype=torch.bool)]
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
