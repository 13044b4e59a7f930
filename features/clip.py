"""CLIP and SigLIP through open_clip: one model's image tower encodes the key frames, its text tower the prompts, in
one embedding space, so the cosine between a prompt and each frame is a feature of its own (prompt alignment, what
AI-generated video scores reward and no image-only or text-only feature sees).

Names are `open_clip:<architecture>` (`open_clip:ViT-B-32`, `open_clip:ViT-B-16-SigLIP`; `open_clip.list_models()`
lists them), for the backbone and for the text encoder alike. Weights: `random` (seeded init, for tests and smoke
runs), `hub:<pretrained tag>` (that tag's file in the local Hugging Face cache, never the network; the tags are
`open_clip.list_pretrained_tags_by_model(architecture)`) or a local weights file. Both towers name the same `space`
in their identity (architecture and weights), and alignment is refused between towers of different spaces.

open_clip is imported where a model or tokenizer is built (as timm is, features.backbones): the configuration imports
this module, and open_clip's import (1.2 s, with transformers) would otherwise slow every command's start.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import try_to_load_from_cache
from torch import nn

from features.backbones import BACKBONES, Backbone, WeightsNotFound, at_input_size
from features.fingerprint import file_sha256
from features.hf import model_folder
from features.reader import Features

PREFIX = "open_clip:"
HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # what open_clip fetches, safest first


def _architecture(arch: str) -> None:
    import open_clip

    if arch not in open_clip.list_models():
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models()){hint}")


def _hub_file(arch: str, tag: str) -> Path:
    """The tag's weights in the local Hugging Face cache; a filesystem lookup, never a download."""
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        raise WeightsNotFound(
            f"open_clip {arch!r} has no pretrained tag {tag!r}; weights=hub:<tag> with one of {', '.join(tags) or '-'}"
        )
    repo = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "").strip("/")
    if not repo:
        raise WeightsNotFound(f"open_clip {arch}/{tag} is not on the Hugging Face hub; pass its weights file")
    for name in HUB_FILES:
        cached = try_to_load_from_cache(repo, name)
        if isinstance(cached, str):
            return Path(cached)
    raise WeightsNotFound(
        f"open_clip {arch}/{tag}: none of {', '.join(HUB_FILES)} of {repo!r} is in the Hugging Face cache, and "
        f"nothing is downloaded here: on a machine with internet run `hf download {repo} {HUB_FILES[0]}` (HF_HOME set "
        f"to the cache this machine reads), or pass weights=<the file>"
    )


def embedding_width(arch: str) -> int:
    import open_clip

    return int(open_clip.get_model_config(arch)["embed_dim"])


def tokenizer(arch: str) -> Any:
    """The architecture's tokenizer; one from the Hugging Face hub (SigLIP's) only from the local cache, where
    open_clip's own lookup would retry the network for a minute first."""
    import open_clip

    text = open_clip.get_model_config(arch)["text_cfg"]
    if not text.get("hf_tokenizer_name"):
        return open_clip.get_tokenizer(arch)
    from open_clip.tokenizer import HFTokenizer

    return HFTokenizer(
        str(model_folder(text["hf_tokenizer_name"])),
        context_length=text.get("context_length", 77),
        tokenizer_mode=text.get("tokenizer_mode"),
        **text.get("tokenizer_kwargs", {}),
    )


def weights_file(arch: str, weights: str) -> Path | None:
    """The file of `weights` (None for random ones): a cached hub tag's or a local file."""
    _architecture(arch)
    if weights == "random":
        return None
    path = _hub_file(arch, weights.removeprefix("hub:")) if weights.startswith("hub:") else Path(weights)
    if not path.is_file():
        raise WeightsNotFound(
            f"weights for open_clip {arch!r} not found: {weights!r} (expected random, hub:<tag> or a weights file)"
        )
    return path


def embedding_space(arch: str, path: Path | None, seed: int) -> dict[str, Any]:
    """What both towers' vectors depend on: the architecture and the weights' content."""
    return {"open_clip": arch, "weights": f"random(seed={seed})" if path is None else {"sha256": file_sha256(path)}}


def load_model(arch: str, weights: str, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """The open_clip model in eval mode, and its embedding space."""
    import open_clip

    path = weights_file(arch, weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(arch, pretrained=None if path is None else str(path))
    return model.eval(), embedding_space(arch, path, seed)


class ClipImageTower(Backbone):
    """The image tower: view images resized to its input size, normalised as it was trained, to the unit-length
    embedding."""

    def __init__(self, model: nn.Module, space: dict[str, Any]) -> None:
        super().__init__()
        self.visual = model.visual
        cfg = model.visual.preprocess_cfg
        self.dim = embedding_width(space["open_clip"])
        self.input_size = tuple(model.visual.image_size)
        self.interpolation = cfg.get("interpolation", "bicubic")
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.space = space

    def identity(self) -> dict[str, Any]:
        return {"tower": "image", "space": self.space, "input_size": list(self.input_size), "version": 1}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        images = at_input_size(images, self)
        return F.normalize(self.visual((images - self.mean) / self.std), dim=-1)


@BACKBONES.register_prefix(PREFIX)
def image_tower(arch: str, weights: str = "random", seed: int = 0) -> ClipImageTower:
    return ClipImageTower(*load_model(arch, weights, seed))


def prompt_alignment(frames: Features, texts: np.ndarray) -> Features:
    """[N, V, T, 1]: the cosine between each frame's image embedding and its item's text embedding ([N, D], zeros for
    an empty text, whose cosine is then 0), on the frames' views and mask."""
    if texts.shape[1] != frames.x.shape[-1]:
        raise ValueError(f"alignment: text embeddings of width {texts.shape[1]}, frame embeddings {frames.x.shape[-1]}")
    x = frames.x / np.maximum(np.linalg.norm(frames.x, axis=-1, keepdims=True), 1e-12)
    t = texts / np.maximum(np.linalg.norm(texts, axis=-1, keepdims=True), 1e-12)
    cosine = np.einsum("nvtd,nd->nvt", x, t)[..., None].astype(np.float32)
    return Features(cosine, frames.mask, frames.item_ids, frames.views)
