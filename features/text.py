"""Text features: a text column of the items table (a prompt, a title) as one vector per item.

The weight-free default, `hashed_ngrams`, learns offline: word 1-2-grams and character 3-5-grams inside word
boundaries are hashed (no vocabulary to fit or store), reduced by a truncated SVD fitted on the training items' text
only, and joined by the text's length in words and an empty-field flag. An empty or whitespace-only text is all
zeros with the flag set; any length is taken whole.

Pretrained encoders need no fitting: the text towers of CLIP and SigLIP (`open_clip:<architecture>`, features.clip),
whose embeddings share a space with their image towers, and sentence encoders through transformers (`hf:<model id
or folder>`, the mean of the last hidden state over the text's tokens), both from this machine only. Each cuts a
text past its token limit there, as it was trained, and gives an empty text zeros with the flag set.

Text features are computed from the items table when a run loads, so they always follow the text as it is now: the
hashed default costs milliseconds per thousand texts; a pretrained encoder's vectors are memoised under the digest
of each text (features.memo), so each distinct text is encoded once per encoder.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.registry import Registry
from features import clip
from features.hf import folder_digest, model_folder
from features.memo import memo_path, memoised, text_key

HASH_FEATURES = 2**18  # per analyser: collisions stay rare at the vocabularies of prompts and titles


@dataclass
class HashedNgrams:
    """Hashed word and character n-grams, an SVD to `dims` fitted on training text, length and empty flag."""

    dims: int = 64
    seed: int = 0
    _columns: np.ndarray | None = field(default=None, init=False, repr=False)  # the hashes the training text holds
    _components: np.ndarray | None = field(default=None, init=False, repr=False)  # [dims, columns]: the SVD's axes

    @property
    def width(self) -> int:
        return self.dims + 2

    def identity(self) -> dict[str, Any]:
        return {"name": "hashed_ngrams", "dims": self.dims, "hash": HASH_FEATURES, "seed": self.seed, "version": 2}

    @staticmethod
    def _hashed(texts: Sequence[str]):
        # Imported here: scikit-learn costs 0.8 s of every command's start, and a run without text never hashes.
        from sklearn.feature_extraction.text import HashingVectorizer
        from sklearn.pipeline import FeatureUnion

        union = FeatureUnion(
            [
                ("words", HashingVectorizer(n_features=HASH_FEATURES, ngram_range=(1, 2), alternate_sign=False)),
                ("chars", HashingVectorizer(n_features=HASH_FEATURES, analyzer="char_wb", ngram_range=(3, 5))),
            ]
        )
        return union.transform(list(texts))

    def fit(self, texts: Sequence[str]) -> HashedNgrams:
        """Fits the SVD on the training texts (the empty ones carry nothing and are left out), over the hashes they
        hold only: the other columns are zero, and the randomized SVD's dense passes over all 2^19 of them cost 100
        times as much (16 s against 0.15 s for 2,000 prompts)."""
        from sklearn.decomposition import TruncatedSVD

        filled = [t for t in texts if t.strip()]
        self._columns = self._components = None  # too little text to reduce: every text reads as empty
        if len(filled) > 1:
            hashed = self._hashed(filled).tocsc()
            self._columns = np.flatnonzero(np.diff(hashed.indptr))
            svd = TruncatedSVD(n_components=max(1, min(self.dims, len(filled) - 1)), random_state=self.seed)
            self._components = svd.fit(hashed[:, self._columns]).components_
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """[N, dims + 2] float32: the SVD coordinates (zero-padded to `dims`), log1p of the word count, empty flag."""
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        empty = np.array([not t.strip() for t in texts], dtype=bool)
        if self._components is not None and (~empty).any():
            hashed = self._hashed([t for t, e in zip(texts, empty) if not e]).tocsc()[:, self._columns]
            reduced = hashed @ self._components.T
            out[~empty, : reduced.shape[1]] = reduced
        out[:, self.dims] = np.log1p([len(t.split()) for t in texts])
        out[:, self.dims + 1] = empty
        return out

    def state(self) -> dict[str, np.ndarray]:
        """What the fit learned, as arrays (an exported predictor's text stream)."""
        if self._components is None:
            return {}
        return {"columns": self._columns, "components": self._components}

    def load_state(self, arrays: dict[str, np.ndarray]) -> HashedNgrams:
        self._columns, self._components = arrays.get("columns"), arrays.get("components")
        return self


@dataclass
class SentenceEncoder:
    """A transformers text model: the mean of its last hidden state over each text's tokens (the pooling sentence
    encoders are trained with), unit length, and the empty flag. weights: `hub` (the model's own) or `random` (its
    architecture, seeded: for tests and smoke runs). The network is built only for texts the memo lacks."""

    model: str
    weights: str = "hub"
    seed: int = 0
    batch: int = 32
    frozen = True
    _parts: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def _loaded(self, name: str) -> Any:
        """The model's `name`d part (folder, config, tokens, files, net), loaded on first use; the net only when asked
        for, since the identity and the token limit need the config alone."""
        if not self._parts:
            import transformers

            if self.weights not in ("hub", "random"):
                raise ValueError(f"text encoder hf:{self.model}: weights={self.weights!r}; expected hub or random")
            folder = model_folder(self.model)
            config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
            tokens = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
            files = folder_digest(folder)
            files = files if self.weights == "hub" else f"random(seed={self.seed}) {files}"
            self._parts.update(folder=folder, config=config, tokens=tokens, files=files)
        if name == "net" and name not in self._parts:
            import transformers

            folder, config = self._parts["folder"], self._parts["config"]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                if self.weights == "hub":
                    net = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
                else:
                    net = transformers.AutoModel.from_config(config)
            self._parts["net"] = net.eval()
        return self._parts[name]

    @property
    def net(self) -> Any:
        """The transformers model itself, built on first use (what `profile` counts the cost of)."""
        return self._loaded("net")

    @property
    def dims(self) -> int:
        return int(self._loaded("config").hidden_size)

    @property
    def width(self) -> int:
        return self.dims + 1

    @property
    def max_tokens(self) -> int:
        limit = getattr(self._loaded("config"), "max_position_embeddings", 512)
        return int(min(self._loaded("tokens").model_max_length, limit))

    def identity(self) -> dict[str, Any]:
        kind = type(self._loaded("config")).__name__
        return {"name": "sentence", "config": kind, "files": self._loaded("files"), "max_tokens": self.max_tokens}

    def fit(self, texts: Sequence[str]) -> SentenceEncoder:
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        tokens, net = self._loaded("tokens"), self.net

        def embed(batch: list[str]) -> torch.Tensor:
            encoded = tokens(batch, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
            hidden = net(**encoded).last_hidden_state
            weights = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)

        return embedded(texts, self.dims, self.batch, embed)


@dataclass
class ClipTextTower:
    """CLIP's or SigLIP's text tower (features.clip): the unit-length embedding of each text, in the space of the
    same model's image tower, and the empty flag. Text past the model's context (77 tokens for CLIP, 64 for SigLIP)
    is cut there by its tokenizer, as the model was trained."""

    arch: str
    weights: str = "random"
    seed: int = 0
    batch: int = 64
    frozen = True
    _model: Any = field(default=None, init=False, repr=False)
    _space: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def space(self) -> dict[str, Any]:
        """Without building the model: a run whose texts are all memoised never loads it."""
        if not self._space:
            self._space = clip.embedding_space(self.arch, clip.weights_file(self.arch, self.weights), self.seed)
        return self._space

    @property
    def dims(self) -> int:
        return clip.embedding_width(self.arch)

    @property
    def width(self) -> int:
        return self.dims + 1

    def identity(self) -> dict[str, Any]:
        return {"tower": "text", "space": self.space(), "version": 1}

    def fit(self, texts: Sequence[str]) -> ClipTextTower:
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            self._model, self._space = clip.load_model(self.arch, self.weights, self.seed)
        tokens = clip.tokenizer(self.arch)
        return embedded(texts, self.dims, self.batch, lambda batch: self._model.encode_text(tokens(batch)))


def embedded(texts: Sequence[str], dims: int, batch: int, embed: Callable[[list[str]], torch.Tensor]) -> np.ndarray:
    """[N, dims + 1]: `embed` (a batch of texts -> [B, dims]) over the texts that hold a word, in batches, unit
    length, under inference mode; an empty or blank text is zeros; the last feature is the empty flag."""
    out = np.zeros((len(texts), dims + 1), dtype=np.float32)
    filled = [i for i, t in enumerate(texts) if t.strip()]
    with torch.inference_mode():
        for start in range(0, len(filled), batch):
            rows = filled[start : start + batch]
            out[rows, :dims] = F.normalize(embed([texts[i] for i in rows]).float(), dim=-1).numpy()
    out[:, dims] = [not t.strip() for t in texts]
    return out


def _hashed_ngrams(weights: str, seed: int) -> HashedNgrams:
    if weights not in ("none", "random"):
        raise ValueError(f"hashed_ngrams has no weights (it learns from the training text): got {weights!r}")
    return HashedNgrams(seed=seed)


TextEncoder = HashedNgrams | SentenceEncoder | ClipTextTower
TEXT_ENCODERS: Registry[Callable[[str, int], TextEncoder]] = Registry("text encoder")
TEXT_ENCODERS.register("hashed_ngrams")(_hashed_ngrams)
TEXT_ENCODERS.register_prefix("hf:")(lambda model, weights, seed: SentenceEncoder(model, weights, seed))
TEXT_ENCODERS.register_prefix(clip.PREFIX)(lambda arch, weights, seed: ClipTextTower(arch, weights, seed))


@dataclass(frozen=True)
class EncodedText:
    vectors: np.ndarray  # [N, width] float32
    key: str  # names the encoder and the texts: a run on other text is another run
    identity: dict[str, Any]
    encoder: TextEncoder  # fitted: what an exported predictor encodes new texts with


def text_features(
    name: str,
    texts: Sequence[str],
    train: np.ndarray,
    seed: int = 0,
    weights: str = "random",
    memo_root: str | Path | None = None,
) -> EncodedText:
    """Every item's vector from the encoder `name`: one that learns is fitted on the texts where `train` is True; a
    pretrained one's vectors come from its memo under `memo_root` where they were made before."""
    encoder = TEXT_ENCODERS.get(name)(weights, seed)
    if getattr(encoder, "frozen", False):
        identity = encoder.identity()
        memo = memo_path(memo_root, "text", identity) if memo_root is not None else None
        vectors = memoised(
            memo, [text_key(t) for t in texts], encoder.width, lambda rows: encoder.transform([texts[i] for i in rows])
        )
        seen: object = None
    else:  # fitted on every training item's text, a prompt of many videos weighing as much as its videos (on the AIGV
        # demo, 0.6151 out of fold against 0.5668 fitting each distinct prompt once); each distinct text encoded once
        encoder.fit([t for t, keep in zip(texts, train) if keep])
        distinct = list(dict.fromkeys(texts))
        where = {t: k for k, t in enumerate(distinct)}
        vectors = encoder.transform(distinct)[[where[t] for t in texts]]
        identity, seen = encoder.identity(), train.tolist()
    digest = hashlib.sha256(json.dumps([identity, list(texts), seen]).encode()).hexdigest()[:10]
    return EncodedText(vectors, f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}__{digest}", identity, encoder)
