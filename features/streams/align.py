"""Alignment: beside each text stream, the cosine of the text's embedding with each key frame's (features.clip), how
well each frame shows what was asked for. The backbone and the text encoder must be the two towers of one model."""

from __future__ import annotations

from typing import Any

import pandas as pd

from features.clip import prompt_alignment
from features.cost import Cost, LoadedStream
from features.inputs import Text
from features.reader import Features
from features.streams import Loading, StreamError, StreamFamily, Word, inputs_of, register_family
from features.streams.text import text_encoder

ALIGNMENTS = ("cosine",)


@register_family
class Alignment(StreamFamily):
    name = "align"
    order = 70
    words = (Word("align", "", "cosine: each text's embedding against each key frame's (empty: none)"),)

    def check(self, cfg: Any) -> None:
        if cfg.align not in ALIGNMENTS:
            raise StreamError(f"align={cfg.align!r}: expected one of {', '.join(ALIGNMENTS)}")
        if not cfg.text:
            raise StreamError("align= relates a text encoder's embedding to the key frames': name one with text=")

    def load(self, cfg: Any, loading: Loading) -> list[tuple[str, Features]]:
        made = []
        for column, (vectors, key, identity) in loading.shared["text"].items():
            if loading.key_frames_manifest is not None:
                check_space(loading.key_frames_manifest, identity, cfg)
            # the text vector's last feature is its empty flag
            made.append((f"align-{column}-{key}", prompt_alignment(loading.key_frames, vectors[:, :-1])))
        return made

    def costs(self, cfg: Any, inputs: Any, items: pd.DataFrame | None) -> list[LoadedStream]:
        dim = text_encoder(cfg).width - 1
        cost = Cost(params=0, flops=2 * dim * cfg.frames)
        return [LoadedStream(f"alignment of {c}", f"{cfg.frames}x{dim}", 1, cfg.frames, cost)
                for c in inputs_of(inputs, Text)]  # fmt: skip

    def describe(self, cfg: Any) -> str:
        return "the cosine of the text's embedding with each key frame's, "


def check_space(manifest: dict, identity: dict, cfg: Any) -> None:
    """The cosine of a text's embedding with a key frame's means something only between one model's two towers."""
    space = manifest.get("backbone", {}).get("space")
    if space is None or space != identity.get("space"):
        raise StreamError(
            f"align={cfg.align} needs the backbone and the text encoder to be the two towers of one model in one "
            f"embedding space (e.g. backbone=open_clip:ViT-B-32 text=open_clip:ViT-B-32 with the same weights); "
            f"got backbone={cfg.backbone} weights={cfg.weights}, text={cfg.text} text_weights={cfg.text_weights}"
        )
