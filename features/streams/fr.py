"""Full-reference metrics: FFmpeg's own filters (features.fr) on each key-frame pair at native depth."""

from __future__ import annotations

from typing import Any

from features.pairs import FrameMetrics, create_fr_encoder
from features.spec import FeatureSpec
from features.streams import StreamFamily, Word, register_family
from features.streams.key_frames import decoding


@register_family
class FullReference(StreamFamily):
    name = "fr"
    order = 50
    encodes = "fr"
    words = (Word("fr", "", "full-reference metrics of each key-frame pair: ffmpeg (empty: none)"),)

    def specs(self, cfg: Any, decoder: str) -> tuple[FeatureSpec, ...]:
        return (FeatureSpec(backbone=cfg.fr, view=FrameMetrics.name, **decoding(cfg, decoder)),)

    def create_encoder(self, spec: FeatureSpec) -> Any:
        return create_fr_encoder(spec.backbone, weights=spec.weights)

    def describe(self, cfg: Any) -> str:
        return f"{cfg.fr} full-reference metrics of each key-frame pair, "
