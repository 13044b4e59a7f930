"""Audio: an audio encoder (features.audio) on the `audio_seconds` of sound from each key frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.audio import create_audio_encoder
from features.hf import model_folder
from features.spec import FeatureSpec
from features.streams import Pretrained, StreamError, StreamFamily, Word, register_family
from features.streams.key_frames import decoding
from features.views import AudioWindows


def audio_window(cfg: Any) -> float:
    """The sound taken from each key frame, in seconds; refused unless positive."""
    if not cfg.audio_seconds > 0:
        raise StreamError(f"audio_seconds={cfg.audio_seconds}: an audio or sync stream needs a window > 0")
    return cfg.audio_seconds


def hf_folder(word: str, name: str) -> list[tuple[str, Path]]:
    """A transformers model named `hf:<model id or folder>`: its folder, which travels as the model's name."""
    return [(word, model_folder(name.removeprefix("hf:")))] if name.startswith("hf:") else []


def hf_pretrained(word: str, name: str, weights: str) -> list[Pretrained]:
    """The transformers model an `hf:<model id or folder>` name loads; none for another name."""
    return [Pretrained("transformers", name.removeprefix("hf:"), word, weights)] if name.startswith("hf:") else []


@register_family
class Audio(StreamFamily):
    name = "audio"
    order = 20
    encodes = "audio"
    words = (
        Word("audio", "", "an audio encoder on each key frame's sound: logmel_stats, hf:<model> (empty: none)"),
        Word("audio_weights", "random", "random | hub (hf:<model>: the cache's or folder's pretrained weights)"),
        Word("audio_seconds", 1.0, "the sound taken from each key frame, in seconds (audio and sync)"),
    )

    def check(self, cfg: Any) -> None:
        audio_window(cfg)

    def specs(self, cfg: Any, decoder: str) -> tuple[FeatureSpec, ...]:
        return (FeatureSpec(backbone=cfg.audio, weights=cfg.audio_weights, view=AudioWindows.name,
                            audio_seconds=audio_window(cfg), **decoding(cfg, decoder)),)  # fmt: skip

    def create_encoder(self, spec: FeatureSpec) -> Any:
        return create_audio_encoder(spec.backbone, weights=spec.weights)

    def pretrained(self, cfg: Any) -> list[Pretrained]:
        return hf_pretrained("audio", cfg.audio, cfg.audio_weights)

    def weight_sources(self, cfg: Any) -> list[tuple[str, Path]]:
        return hf_folder("audio", cfg.audio)

    def describe(self, cfg: Any) -> str:
        return f"{cfg.audio} features of {cfg.audio_seconds:g} s of audio per key frame, "
