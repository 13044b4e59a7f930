"""Text: a text encoder (features.text) on each of the track's text inputs (a prompt, a title), one stream each,
made from the items table when a run loads, so it always follows the label files as they are now."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from common.atomic import atomic_path
from features import clip
from features.cost import Cost, LoadedStream, count
from features.inputs import Text
from features.reader import Features
from features.streams import (
    Loading,
    Pretrained,
    StreamFamily,
    Word,
    inputs_of,
    local_or_hub,
    per_item,
    register_family,
    training_split,
)
from features.streams.audio import hf_folder, hf_pretrained
from features.text import TEXT_ENCODERS, ClipTextTower, HashedNgrams, TextEncoder, text_features


def texts_of(items: pd.DataFrame, column: str) -> list[str]:
    return items[column].fillna("").astype(str).tolist()


def text_encoder(cfg: Any) -> TextEncoder:
    """The encoder `text=` names with its weights, unfitted (`profile`'s words have no seed: 0 there)."""
    return TEXT_ENCODERS.get(cfg.text)(cfg.text_weights, getattr(cfg, "seed", 0))


@register_family
class TextStream(StreamFamily):
    name = "text"
    order = 60
    words = (
        Word(
            "text", "", "a text encoder on each text input: hashed_ngrams, open_clip:<arch>, hf:<model> (empty: none)"
        ),
        Word(
            "text_weights", "random", "random | hub (hf:<model>) | hub:<tag> (open_clip:<arch>) | a local weights file"
        ),
    )

    def load(self, cfg: Any, loading: Loading) -> list[tuple[str, Features]]:
        """Per text column, its vectors; the encoders fitted on the training split (`fitted`), and the vectors with
        their key and identity shared with the alignment."""
        fitted = loading.fitted.get(self.name)
        learn = fitted is None
        encoders, encoded, made = {}, {}, []
        for column in inputs_of(loading.inputs, Text):
            texts = texts_of(loading.items, column)
            if learn:
                found = text_features(cfg.text, texts, loading.train, cfg.seed, cfg.text_weights, loading.cache)
                vectors, key, encoders[column] = found.vectors, f"text-{column}-{found.key}", found.encoder
                encoded[column] = (vectors, found.key, found.identity)
            else:
                vectors, key = fitted[column].transform(texts), f"text-{column}"
                encoded[column] = (vectors, "", None)
            made.append((key, per_item(vectors, loading.ids)))
        if learn:
            loading.fitted[self.name] = encoders
        loading.shared[self.name] = encoded
        return made

    def fit(self, cfg: Any, inputs: Any, items: pd.DataFrame) -> dict[str, Any]:
        """Each text column's encoder, fitted on the training split's texts as `load` fits it."""
        train = training_split(items)
        columns = inputs_of(inputs, Text)
        return {
            c: text_features(cfg.text, texts_of(items, c), train, cfg.seed, cfg.text_weights).encoder for c in columns
        }

    def costs(self, cfg: Any, inputs: Any, items: pd.DataFrame | None) -> list[LoadedStream]:
        costs = []
        for column in inputs_of(inputs, Text):
            encoder = text_encoder(cfg)
            cost, shape = text_cost(encoder)
            costs.append(LoadedStream(f"{cfg.text} on {column}", shape, encoder.width, 1, cost))
        return costs

    def pretrained(self, cfg: Any) -> list[Pretrained]:
        if cfg.text.startswith(clip.PREFIX):
            return [Pretrained("open_clip", cfg.text.removeprefix(clip.PREFIX), "text", cfg.text_weights)]
        return hf_pretrained("text", cfg.text, cfg.text_weights)

    def weight_sources(self, cfg: Any) -> list[tuple[str, Path]]:
        if cfg.text.startswith("hf:"):
            return hf_folder("text", cfg.text)
        if cfg.text.startswith(clip.PREFIX):
            arch = cfg.text.removeprefix(clip.PREFIX)
            return local_or_hub(cfg, "text_weights", lambda tag: clip.weights_file(arch, tag))
        return []

    def describe(self, cfg: Any) -> str:
        return f"{cfg.text} features of the text, "

    def save_state(self, state: dict[str, Any], folder: Path, prefix: str) -> dict[str, str]:
        """Each column's fitted encoder's arrays (the hashed default's hashes and SVD axes; none for a pretrained
        encoder, rebuilt from its words) in `prefix/<column>.npz`."""
        saved = {}
        for column, encoder in state.items():
            relative = f"{prefix}/{column}.npz"
            with atomic_path(folder / relative) as tmp, open(tmp, "wb") as handle:  # a handle: no `.npz` appended
                np.savez(handle, **(encoder.state() if isinstance(encoder, HashedNgrams) else {}))
            saved[column] = relative
        return saved

    def restore_state(self, cfg: Any, saved: dict[str, str], folder: Path) -> dict[str, Any]:
        encoders = {}
        for column, relative in saved.items():
            encoder = text_encoder(cfg)
            if isinstance(encoder, HashedNgrams):
                with np.load(folder / relative) as arrays:
                    encoder.load_state({k: arrays[k] for k in arrays.files})
            encoders[column] = encoder
        return encoders


class _TextTower(nn.Module):
    """A text encoder's network as one module on token ids, its parameters those of the text side alone."""

    def __init__(self, encode, parameters):
        super().__init__()
        self.encode, self.counted = encode, nn.ParameterList(parameters)

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
        net, length = encoder.net, encoder.max_tokens
        tower = _TextTower(lambda tokens: net(input_ids=tokens).last_hidden_state, net.parameters())
    return count(tower, torch.ones(1, length, dtype=torch.long)), f"1x{length} tokens"
