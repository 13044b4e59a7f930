"""The key frames: the backbone on each view family of the frames sampled at `fps` (always on, the first stream)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features import clip
from features.backbones import BACKBONES, create_backbone, timm_hub_file
from features.spec import SHARED_DECODE, FeatureSpec
from features.streams import Pretrained, StreamError, StreamFamily, Word, local_or_hub, register_family
from features.views import DEFAULT_FAMILY


@register_family
class KeyFrames(StreamFamily):
    name = "key_frames"
    order = 0
    encodes = "image"
    words = (
        Word(
            "backbone",
            "quality_stats",
            "the image backbone: quality_stats (weight-free), a timm model, open_clip:<arch>",
        ),
        Word("weights", "random", "random | hub (the Hugging Face cache) | a local weights file"),
        Word("view", DEFAULT_FAMILY, "the view family, or families joined by '+' (aesthetic+fragments+native)"),
        Word("size", 224, "the side of the crop families (resize, aesthetic, native, salient)"),
        Word("grid", 7, "fragments: grid x grid patches"),
        Word("patch", 32, "fragments: the side of each patch, in native pixels"),
        Word("fragment_seed", 0, "fragments: draw s<k> takes the offsets of seed (fragment_seed, k)"),
    )

    def named(self, cfg: Any) -> bool:
        return True

    def specs(self, cfg: Any, decoder: str) -> tuple[FeatureSpec, ...]:
        """One feature set per view family of the backbone."""
        families = [family.strip() for family in cfg.view.split("+")]
        if "" in families or len(set(families)) != len(families):
            raise StreamError(
                f"view={cfg.view!r}: expected distinct view families joined by '+', e.g. aesthetic+fragments"
            )
        geometry = {word.name: getattr(cfg, word.name) for word in self.words if word.name != "view"}
        return tuple(FeatureSpec(**geometry, **decoding(cfg, decoder), view=family) for family in families)

    def create_encoder(self, spec: FeatureSpec) -> Any:
        return create_backbone(spec.backbone, weights=spec.weights)

    def pretrained(self, cfg: Any) -> list[Pretrained]:
        if cfg.backbone.startswith(clip.PREFIX):
            return [Pretrained("open_clip", cfg.backbone.removeprefix(clip.PREFIX), "backbone", cfg.weights)]
        return [] if cfg.backbone in BACKBONES else [Pretrained("timm", cfg.backbone, "backbone", cfg.weights)]

    def weight_sources(self, cfg: Any) -> list[tuple[str, Path]]:
        if cfg.backbone.startswith(clip.PREFIX):
            return local_or_hub(
                cfg, "weights", lambda tag: clip.weights_file(cfg.backbone.removeprefix(clip.PREFIX), tag)
            )
        return local_or_hub(cfg, "weights", lambda tag: timm_hub_file(cfg.backbone))


def decoding(cfg: Any, decoder: str) -> dict[str, Any]:
    """What every cached stream of one extraction shares (SHARED_DECODE): the decoder, the key-frame sampling, the
    light and the dtype."""
    return {name: decoder if name == "decoder" else getattr(cfg, name) for name in SHARED_DECODE}
