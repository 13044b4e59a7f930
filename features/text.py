"""Text features: a text column of the items table (a prompt, a title) as one vector per item.

The weight-free default, `hashed_ngrams`, learns offline: word 1-2-grams and character 3-5-grams inside word
boundaries are hashed (no vocabulary to fit or store), reduced by a truncated SVD fitted on the training items' text
only, and joined by the text's length in words and an empty-field flag. An empty or whitespace-only text is all
zeros with the flag set; any length is taken whole. Text features are computed from the items table when a run
loads, not cached: they cost milliseconds per thousand texts, and so always follow the text as it is now.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.pipeline import FeatureUnion

from common.registry import Registry

HASH_FEATURES = 2**18  # per analyser: collisions stay rare at the vocabularies of prompts and titles


@dataclass
class HashedNgrams:
    """Hashed word and character n-grams, an SVD to `dims` fitted on training text, length and empty flag."""

    dims: int = 64
    seed: int = 0
    _svd: TruncatedSVD | None = field(default=None, init=False, repr=False)

    @property
    def width(self) -> int:
        return self.dims + 2

    def identity(self) -> dict[str, Any]:
        return {"name": "hashed_ngrams", "dims": self.dims, "hash": HASH_FEATURES, "seed": self.seed, "version": 1}

    @staticmethod
    def _hashed(texts: Sequence[str]):
        union = FeatureUnion(
            [
                ("words", HashingVectorizer(n_features=HASH_FEATURES, ngram_range=(1, 2), alternate_sign=False)),
                ("chars", HashingVectorizer(n_features=HASH_FEATURES, analyzer="char_wb", ngram_range=(3, 5))),
            ]
        )
        return union.transform(list(texts))

    def fit(self, texts: Sequence[str]) -> HashedNgrams:
        """Fits the SVD on the training texts (the empty ones carry nothing and are left out)."""
        filled = [t for t in texts if t.strip()]
        components = max(1, min(self.dims, len(filled) - 1))
        self._svd = TruncatedSVD(n_components=components, random_state=self.seed)
        if len(filled) > 1:
            self._svd.fit(self._hashed(filled))
        else:
            self._svd = None  # too little text to reduce: every text reads as empty
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """[N, dims + 2] float32: the SVD coordinates (zero-padded to `dims`), log1p of the word count, empty flag."""
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        empty = np.array([not t.strip() for t in texts], dtype=bool)
        if self._svd is not None and (~empty).any():
            reduced = self._svd.transform(self._hashed([t for t, e in zip(texts, empty) if not e]))
            out[~empty, : reduced.shape[1]] = reduced
        out[:, self.dims] = np.log1p([len(t.split()) for t in texts])
        out[:, self.dims + 1] = empty
        return out


TextEncoderFactory = Callable[[int], HashedNgrams]
TEXT_ENCODERS: Registry[TextEncoderFactory] = Registry("text encoder")
TEXT_ENCODERS.register("hashed_ngrams")(lambda seed: HashedNgrams(seed=seed))


def text_features(name: str, texts: Sequence[str], train: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """Every item's vector from the encoder `name` fitted on the texts where `train` is True, and a key naming the
    encoder and the texts (a run on other text is another run)."""
    encoder = TEXT_ENCODERS.get(name)(seed).fit([t for t, keep in zip(texts, train) if keep])
    digest = hashlib.sha256(json.dumps([encoder.identity(), list(texts), train.tolist()]).encode()).hexdigest()[:10]
    return encoder.transform(texts), f"{name}__{digest}"
