"""Metadata: each file's container facts (duration, frame rate, size, aspect, bitrate, bit depth, sound; read without
decoding, memoised under the file's fingerprint) and the one-hot of the track's categories (Category inputs)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

from features.cost import Cost, LoadedStream
from features.inputs import Category
from features.metadata import CONTAINER_FACTS, CONTAINER_VERSION, container_metadata, one_hot, training_categories
from features.reader import Features
from features.streams import (
    Loading,
    StreamError,
    StreamFamily,
    Word,
    inputs_of,
    per_item,
    register_family,
    training_split,
)

METADATA = ("container",)


def categories_of(inputs: Any, items: pd.DataFrame) -> dict[str, list[str]]:
    """Per Category input, the categories of the training split."""
    train = training_split(items)
    return {c: training_categories(items[c].astype(str).tolist(), train) for c in inputs_of(inputs, Category)}


@register_family
class Metadata(StreamFamily):
    name = "meta"
    order = 80
    words = (Word("meta", "", "container: the files' container facts and the track's categories (empty: none)"),)

    def check(self, cfg: Any) -> None:
        if cfg.meta not in METADATA:
            raise StreamError(f"meta={cfg.meta!r}: expected one of {', '.join(METADATA)}")

    def load(self, cfg: Any, loading: Loading) -> list[tuple[str, Features]]:
        """One stream: the container facts (memoised under `loading.cache`, where there is one) and the one-hot of
        the categories the training split shows (or those a predictor restored)."""
        items = loading.items
        categories = loading.fitted.get(self.name)
        if categories is None:
            categories = loading.fitted[self.name] = categories_of(loading.inputs, items)
        fingerprints = items["fingerprint"].tolist() if "fingerprint" in items else items["path"].tolist()
        parts = [container_metadata(items["path"].tolist(), fingerprints, loading.cache)]
        parts += [one_hot(items[column].astype(str).tolist(), names) for column, names in categories.items()]
        named = [[column, names] for column, names in categories.items()]
        digest = hashlib.sha256(json.dumps([CONTAINER_FACTS, CONTAINER_VERSION, named]).encode()).hexdigest()[:10]
        return [(f"meta-container__{digest}", per_item(np.concatenate(parts, axis=1), loading.ids))]

    def fit(self, cfg: Any, inputs: Any, items: pd.DataFrame) -> dict[str, list[str]]:
        return categories_of(inputs, items)

    def costs(self, cfg: Any, inputs: Any, items: pd.DataFrame | None) -> list[LoadedStream]:
        categories = categories_of(inputs, items) if items is not None else {}
        width = len(CONTAINER_FACTS) + sum(len(names) for names in categories.values())
        return [LoadedStream("container metadata and categories", "the file's header", width, 1, Cost(0, 0))]

    def describe(self, cfg: Any) -> str:
        return "the files' container metadata and the track's categories, "
