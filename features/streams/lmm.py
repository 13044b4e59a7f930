"""LMM: a large multimodal model (features.lmm) asked about each item's key frames, its answers' level probabilities
and hidden states cached as one vector per item and view.

The frames come from the shared decode (one pass for every stream), each resized whole to a square of at most
`lmm_pixels` pixels, and go to the model as one video or image by image (`lmm_frames`). One prompt per aspect
(`lmm_prompts`: the overall quality by default; the six XGC dimensions; or a JSON file of questions and answer
stems), each with the item's text inputs named by `lmm_text` ahead of the question, so an AIGV prompt or a video's
title is read with the frames; rows are then bound to those texts as well as to the file (FeatureSpec.binds).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from features.decode import DECODERS
from features.hf import model_folder
from features.spec import FeatureSpec
from features.streams import Pretrained, StreamError, StreamFamily, Word, register_family
from features.streams.key_frames import decoding
from features.views import Aesthetic
from features.views import register_family as register_view

PATCH = 28  # the pixel grid LMM vision towers merge patches on (Qwen: 14-pixel patches merged 2 x 2)
# Aspect -> (question, answer stem); {media} is "image" or "video". The stems end where a level word comes next, as
# Q-Align primes its answer; an aspect the table lacks (a track's own target) is asked as the overall quality.
ASPECTS = {
    "quality": ("How would you rate the quality of this {media}?", "The quality of the {media} is"),
    "color": ("How would you rate the color of this {media}?", "The color of the {media} is"),
    "noise": ("How would you rate this {media} in terms of noise?", "In terms of noise, the {media} is"),
    "artifact": (
        "How would you rate this {media} in terms of compression artifacts?",
        "In terms of artifacts, the {media} is",
    ),
    "blur": ("How would you rate the sharpness of this {media}?", "The sharpness of the {media} is"),
    "temporal": (
        "How would you rate the smoothness and stability of the motion in this {media}?",
        "The motion of the {media} is",
    ),
    "aesthetic": ("How would you rate the aesthetics of this {media}?", "The aesthetics of the {media} are"),
    "engagement": ("How engaging would viewers find this {media}?", "The appeal of the {media} is"),
}
ASPECTS["overall"] = ASPECTS["quality"]
ASPECTS["colour"] = ASPECTS["color"]
FRAME_MODES = ("video", "each")
DTYPES = ("bfloat16", "float16", "float32")


def frame_side(pixels: int) -> int:
    """The side of the square frames given to the model: the largest multiple of PATCH whose square fits `pixels`."""
    return max(PATCH, math.isqrt(pixels) // PATCH * PATCH)


@register_view("lmm")
@dataclass(frozen=True)
class ItemFrames(Aesthetic):
    """An item's key frames together, each resized whole to size x size (an LMM sees the whole picture): [V, 1, T, 3,
    size, size], one row per variant. A video with fewer key frames than `frames` repeats its last one, so every
    item of a batch has the same count; an image stays one frame."""

    frames: int = 8
    encodes: ClassVar[str] = "lmm"
    whole_item: ClassVar[bool] = True

    def pass_shape(self, spec: Any) -> tuple[int, ...]:
        return (spec.frames if spec.time_axis else 1, 3, self.side, self.side)

    def render(self, frames: np.ndarray, geometries: Sequence[str]) -> torch.Tensor:
        views = super().render(frames, geometries)  # [V, T, 3, S, S]
        short = self.frames - views.shape[1]
        if views.shape[1] > 1 and short > 0:
            views = torch.cat([views, views[:, -1:].expand(-1, short, -1, -1, -1)], dim=1)
        return views[:, None]


def prompts_of(cfg: Any, media: str) -> list[list[str]]:
    """[question, stem] per prompt: the aspects `lmm_prompts` names, or the list its JSON file holds; each question
    led by the item texts `lmm_text` names."""
    source = cfg.lmm_prompts.strip()
    if source.endswith(".json"):
        try:
            listed = json.loads(Path(source).read_text())
        except (OSError, ValueError) as error:
            raise StreamError(f"lmm_prompts={source}: cannot read it as JSON ({error})") from None
        if not (isinstance(listed, list) and listed and all(_is_prompt(p) for p in listed)):
            raise StreamError(
                f'lmm_prompts={source}: expected a JSON list of {{"question": ..., "stem": ...}} objects, e.g. '
                f'[{{"question": "How clear is this video?", "stem": "The clarity of the video is"}}]'
            )
        pairs = [(p["question"], p["stem"]) for p in listed]
    else:
        aspects = [a.strip() for a in source.split(",")]
        if not all(aspects):
            raise StreamError(f"lmm_prompts={source!r}: expected aspects joined by ',' or a .json file of prompts")
        pairs = [tuple(part.replace("{media}", media) for part in ASPECTS.get(a, ASPECTS["quality"])) for a in aspects]
    lead = "".join(f"{column}: {{{column}}}\n" for column in text_columns(cfg))
    return [[lead + question, stem] for question, stem in pairs]


def _is_prompt(found: object) -> bool:
    return isinstance(found, dict) and all(isinstance(found.get(k), str) for k in ("question", "stem"))


def text_columns(cfg: Any) -> list[str]:
    return [column.strip() for column in cfg.lmm_text.split(",") if column.strip()]


def placeholders(prompts: Sequence[Sequence[str]]) -> list[str]:
    """The item text columns the prompts name as {column}, in order."""
    import string

    names = [name for text in prompts for _, name, _, _ in string.Formatter().parse(text[0]) if name]
    return list(dict.fromkeys(names))


def options_of(cfg: Any, media: str) -> dict[str, Any]:
    """The encoder's settings (features.lmm.LmmOptions) as JSON-able values, checked."""
    if cfg.lmm_frames not in FRAME_MODES:
        raise StreamError(f"lmm_frames={cfg.lmm_frames!r}: expected one of {', '.join(FRAME_MODES)}")
    if cfg.lmm_dtype not in DTYPES:
        raise StreamError(f"lmm_dtype={cfg.lmm_dtype!r}: expected one of {', '.join(DTYPES)}")
    levels = [level.strip() for level in cfg.lmm_levels.split(",")]
    if len(levels) < 2 or not all(levels) or len(set(levels)) != len(levels):
        raise StreamError(f"lmm_levels={cfg.lmm_levels!r}: expected two or more distinct words joined by ','")
    try:
        layers = [int(layer) for layer in cfg.lmm_layers.split(",") if layer.strip()]
    except ValueError:
        raise StreamError(f"lmm_layers={cfg.lmm_layers!r}: expected layer indices joined by ',' (12,-8)") from None
    if cfg.lmm_pixels < PATCH * PATCH:
        raise StreamError(f"lmm_pixels={cfg.lmm_pixels}: a frame needs at least {PATCH}x{PATCH} pixels")
    return {
        "prompts": prompts_of(cfg, media),
        "levels": levels,
        "layers": layers,
        "frames": cfg.lmm_frames,
        "pixels": frame_side(cfg.lmm_pixels) ** 2,
        "dtype": cfg.lmm_dtype,
        "remote_code": cfg.lmm_remote_code,
    }


def lmm_options(options: str) -> Any:
    """A feature set's `options` JSON as the encoder takes them (features.lmm.LmmOptions)."""
    from features.lmm import LmmOptions, Prompt

    found = json.loads(options)
    prompts = tuple(Prompt(question, stem) for question, stem in found.pop("prompts"))
    return LmmOptions(prompts=prompts, **{k: tuple(v) if isinstance(v, list) else v for k, v in found.items()})


@register_family
class Lmm(StreamFamily):
    name = "lmm"
    order = 55
    encodes = "lmm"
    words = (
        Word("lmm", "", "a large multimodal model on the key frames: a Hugging Face model id or folder (empty: none)"),
        Word("lmm_weights", "hub", "hub (the local Hugging Face cache or the folder) | random (its architecture)"),
        Word(
            "lmm_prompts",
            "quality",
            "aspects asked, joined by ',' (quality, color, noise, artifact, blur, "
            "temporal, aesthetic, engagement), or a .json list of {question, stem}",
        ),  # fmt: skip
        Word("lmm_text", "", "item text columns given ahead of each question (prompt; Title,Description)"),
        Word("lmm_levels", "excellent,good,fair,poor,bad", "the answer's level words, best first (scored n..1)"),
        Word("lmm_layers", "", "hidden-state layers kept beside the last, joined by ',' (e.g. 12 or -8)"),
        Word("lmm_frames", "video", "the key frames as one video, or each as an image in one prompt (each)"),
        Word("lmm_pixels", 448 * 448, "the most pixels per frame given to the model (a square, sides of 28)"),
        Word("lmm_dtype", "bfloat16", "the model's compute dtype: bfloat16 | float16 | float32"),
        Word("lmm_remote_code", False, "allow a model that runs its own code from its folder (trust_remote_code)"),
    )

    def check(self, cfg: Any) -> None:
        if cfg.lmm_weights not in ("hub", "random"):
            raise StreamError(f"lmm_weights={cfg.lmm_weights!r}: expected hub or random")

    def specs(self, cfg: Any, decoder: str) -> tuple[FeatureSpec, ...]:
        """One feature set, stored as float16 whatever the key frames store (its vectors are wide)."""
        shared = decoding(cfg, decoder)
        media = "video" if DECODERS.get(decoder).time_axis else "image"
        options = options_of(cfg, media)
        binds = tuple(placeholders(options["prompts"]))
        return (
            FeatureSpec(
                **{**shared, "dtype": "float16"},
                backbone=cfg.lmm,
                weights=cfg.lmm_weights,
                view=ItemFrames.name,
                size=frame_side(cfg.lmm_pixels),
                options=json.dumps(options, sort_keys=True),
                binds=binds,
            ),
        )

    def create_encoder(self, spec: FeatureSpec) -> Any:
        from features.lmm import load_lmm

        return load_lmm(spec.backbone, spec.weights, lmm_options(spec.options))

    def pretrained(self, cfg: Any) -> list[Pretrained]:
        return [Pretrained("transformers", cfg.lmm, "lmm", cfg.lmm_weights)]

    def weight_sources(self, cfg: Any) -> list[tuple[str, Path]]:
        """The model's folder, whose configuration and processor even its random weights are built from."""
        return [("lmm", model_folder(cfg.lmm))]

    def describe(self, cfg: Any) -> str:
        asked = "the JSON file's prompts" if cfg.lmm_prompts.endswith(".json") else cfg.lmm_prompts
        return f"{cfg.lmm} answers and hidden states ({asked}), "


def lmm_spec(cfg: Any, decoder: str) -> FeatureSpec | None:
    """The LMM stream's feature set under `cfg` (None where it names no model): what zero-shot scoring and LoRA
    fine-tuning read, so the spine asks for it without naming the family's words."""
    family = Lmm()
    if not family.named(cfg):
        return None
    family.check(cfg)
    return family.specs(cfg, decoder)[0]


def asked_aspects(cfg: Any) -> list[str]:
    """The aspect each prompt asks about, in order (none where the prompts come from a JSON file)."""
    return [] if cfg.lmm_prompts.strip().endswith(".json") else [a.strip() for a in cfg.lmm_prompts.split(",")]
