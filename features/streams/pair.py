"""Pair: a `dists:<timm model>` encoder (features.pairs) on the same `size` crop of both members of a full-reference
pair (items with a reference)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.backbones import timm_hub_file
from features.pairs import PairCrops, create_pair_encoder
from features.spec import FeatureSpec
from features.streams import Pretrained, StreamFamily, Word, local_or_hub, register_family
from features.streams.key_frames import decoding


@register_family
class Pair(StreamFamily):
    name = "pair"
    order = 40
    encodes = "pair"
    words = (
        Word("pair", "", "a pair encoder on both members' crops: dists:<timm model> (empty: none)"),
        Word("pair_weights", "random", "random | hub | a local weights file, for the pair encoder's timm model"),
    )

    def specs(self, cfg: Any, decoder: str) -> tuple[FeatureSpec, ...]:
        return (FeatureSpec(backbone=cfg.pair, weights=cfg.pair_weights, view=PairCrops.name, size=cfg.size,
                            **decoding(cfg, decoder)),)  # fmt: skip

    def create_encoder(self, spec: FeatureSpec) -> Any:
        return create_pair_encoder(spec.backbone, weights=spec.weights)

    def pretrained(self, cfg: Any) -> list[Pretrained]:
        return [Pretrained("timm", cfg.pair.partition(":")[2], "pair", cfg.pair_weights)]

    def weight_sources(self, cfg: Any) -> list[tuple[str, Path]]:
        return local_or_hub(cfg, "pair_weights", lambda tag: timm_hub_file(cfg.pair.partition(":")[2]))

    def describe(self, cfg: Any) -> str:
        return f"{cfg.pair} structure and texture statistics between each frame and its reference, "
