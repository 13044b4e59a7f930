"""Sync: a sync encoder (features.sync) relating the mouth region of each key frame's clip to the loudness of its
sound; it takes the motion stream's clip geometry and the audio stream's window."""

from __future__ import annotations

from typing import Any

from features.spec import FeatureSpec
from features.streams import StreamFamily, Word, register_family
from features.streams.audio import audio_window
from features.streams.key_frames import decoding
from features.streams.motion import clip_words
from features.sync import create_sync_encoder
from features.views import SyncSeries


@register_family
class Sync(StreamFamily):
    name = "sync"
    order = 30
    encodes = "sync"
    words = (Word("sync", "", "a sync encoder relating the mouth to the sound: av_sync (empty: none)"),)

    def check(self, cfg: Any) -> None:
        clip_words(cfg)
        audio_window(cfg)

    def specs(self, cfg: Any, decoder: str) -> tuple[FeatureSpec, ...]:
        return (FeatureSpec(backbone=cfg.sync, view=SyncSeries.name, audio_seconds=audio_window(cfg),
                            **clip_words(cfg), **decoding(cfg, decoder)),)  # fmt: skip

    def create_encoder(self, spec: FeatureSpec) -> Any:
        return create_sync_encoder(spec.backbone, weights=spec.weights)

    def describe(self, cfg: Any) -> str:
        return f"{cfg.sync} audio-mouth sync features, "
