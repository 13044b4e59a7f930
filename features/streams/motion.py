"""Motion: a motion encoder (features.motion) on clips of `clip` consecutive frames from each key frame, their short
side scaled to `clip_size` by FFmpeg as they are decoded, in the same pass as the key frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.motion import MOTION_ENCODERS, VIDEO_MODELS, create_motion_encoder, hub_checkpoint
from features.spec import FeatureSpec
from features.streams import Pretrained, StreamError, StreamFamily, Word, local_or_hub, register_family
from features.streams.key_frames import decoding
from features.views import Clips


def clip_words(cfg: Any) -> dict[str, int]:
    """The clip geometry a clip-taking view decodes (`clip`, `clip_size`); refused under two frames."""
    if cfg.clip < 2:
        raise StreamError(f"clip={cfg.clip}: clips take 2 frames or more")
    return {"clip": cfg.clip, "size": cfg.clip_size}


@register_family
class Motion(StreamFamily):
    name = "motion"
    order = 10
    encodes = "motion"
    words = (
        Word("motion", "", "a motion encoder on clips from each key frame: temporal_stats, r3d_18, ... (empty: none)"),
        Word("motion_weights", "random", "random | hub (the torch hub cache) | a local weights file"),
        Word("clip", 8, "consecutive frames per clip, from each key frame (motion and sync)"),
        Word("clip_size", 112, "the short side clips are decoded at (motion and sync)"),
    )

    def check(self, cfg: Any) -> None:
        clip_words(cfg)

    def specs(self, cfg: Any, decoder: str) -> tuple[FeatureSpec, ...]:
        return (FeatureSpec(backbone=cfg.motion, weights=cfg.motion_weights, view=Clips.name, **clip_words(cfg),
                            **decoding(cfg, decoder)),)  # fmt: skip

    def create_encoder(self, spec: FeatureSpec) -> Any:
        return create_motion_encoder(spec.backbone, weights=spec.weights)

    def pretrained(self, cfg: Any) -> list[Pretrained]:
        pretrained = cfg.motion in VIDEO_MODELS  # torchvision's, the ones with weights
        return [Pretrained("torchvision", cfg.motion, "motion", cfg.motion_weights)] if pretrained else []

    def weight_sources(self, cfg: Any) -> list[tuple[str, Path]]:
        known = cfg.motion in MOTION_ENCODERS
        return local_or_hub(cfg, "motion_weights", lambda tag: hub_checkpoint(cfg.motion) if known else None)

    def describe(self, cfg: Any) -> str:
        return f"{cfg.motion} motion features of {cfg.clip}-frame clips, "
