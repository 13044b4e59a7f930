"""Stream families: each kind of feature stream declares itself in one module of this package.

A run reads feature streams side by side (the key frames' view families, motion clips, audio windows, text, ...),
and each kind of stream is a family that says, in its own module: its configuration words with their defaults and
help (`motion=`, `motion_weights=`, `clip=`, `clip_size=`), whether it is extracted from the shared decode into the
cache (its feature sets, `specs`) or made when a run loads, from the items table (`load`), how it is described in a
readme, which weights files it loads (for an export to carry), and, for a loaded family, what it costs per item.

The configuration (`workbench.config.FeatureConfig`) takes its fields from `words()` (and its help from
`word_help`), and the spine (training, the predictor, `profile`, the sweep, the readme) asks the families through
what is here: `cached_streams`, `other_streams`, `others_off`, `Loading` and `load`, `fit`, `save_states` and
`restore_states`, `loaded_costs`, `describe`, `weight_sources`; none of it names the words of a family beside the
key frames. Adding a kind of stream is one module here that defines a `StreamFamily` subclass decorated with
`@register_family`: every module of this package is imported on first use, and `order` places its stream among the
others (the key frames first, then the cached streams, then those made at load).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd

from common.registry import Registry, import_submodules
from features.cost import LoadedStream
from features.reader import Features
from features.spec import FeatureSpec

FAMILIES: Registry[StreamFamily] = Registry("stream family")


class StreamError(ValueError):
    """Words that make no valid stream; the message names the word and what was expected."""


@dataclass(frozen=True)
class Word:
    """A configuration word a family takes: its name as users type it, its default (whose type is the word's) and
    what it means."""

    name: str
    default: object
    help: str


class Pretrained(NamedTuple):
    """A pretrained model a stream loads: the library that loads it (a kind features.weights knows: timm, open_clip,
    transformers, torchvision), the model's name, the word naming it and the value of its weights word."""

    kind: str
    model: str
    word: str
    weights: str


class StreamFamily:
    """A kind of feature stream. `words[0]` names its encoder (empty: the stream is off), except for the key frames,
    which are always on. An extracted family (one that `encodes` a kind of view) implements `specs` and
    `create_encoder`, one made at load implements `load` and `costs`. The hooks are asked only of families `cfg`
    turns on."""

    name: ClassVar[str]
    order: ClassVar[int]  # where its stream sits among a run's streams
    words: ClassVar[tuple[Word, ...]]
    encodes: ClassVar[str] = ""  # extracted: the ViewFamily.encodes value its encoders serve (features.views)

    @property
    def extracted(self) -> bool:
        """Whether its stream is extracted from the shared decode into the cache (else it is made at load)."""
        return bool(self.encodes)

    def named(self, cfg: Any) -> bool:
        """Whether `cfg` turns this stream on."""
        return bool(getattr(cfg, self.words[0].name))

    def check(self, cfg: Any) -> None:
        """Refuses words that cannot make this stream (StreamError)."""

    def specs(self, cfg: Any, decoder: str) -> tuple[FeatureSpec, ...]:
        """The cached feature sets of this stream, joined on the feature axis (extracted families)."""
        return ()

    def create_encoder(self, spec: FeatureSpec) -> Any:
        """The frozen encoder of a feature set of this stream (extracted families): its `backbone` with its `weights`,
        and the encoder's own `options` where the family has any."""
        raise NotImplementedError(f"the {self.name} stream is made at load, it has no extraction encoder")

    def weight_sources(self, cfg: Any) -> list[tuple[str, Path]]:
        """(the word naming them, the file or folder) of every weights file this stream loads on this machine: what
        an export copies so that its predictor needs nothing else. A word `hf:<folder>` names a model by its folder."""
        return []

    def pretrained(self, cfg: Any) -> list[Pretrained]:
        """The pretrained models this stream loads under `cfg`, what `just weights` lists, fetches and accounts for
        (features.weights); none for a weight-free encoder."""
        return []

    def describe(self, cfg: Any) -> str:
        """A clause of the readme's description of a run that uses this stream ("" when it is off)."""
        return ""

    # --- families made at load -----------------------------------------------------------------------------------

    def load(self, cfg: Any, loading: Loading) -> list[tuple[str, Features]]:
        """The streams made from the items table, each with its key (what the run id covers), one vector per item
        or per key frame. Learns on the training split, or uses what `loading.fitted` holds (an exported predictor)."""
        return []

    def costs(self, cfg: Any, inputs: Sequence[Any], items: pd.DataFrame | None) -> list[LoadedStream]:
        """What making each loaded stream costs per item, in the order `load` makes them (`items`: the run's, for the
        widths that depend on its training split; None in `profile`, before any data)."""
        return []

    def fit(self, cfg: Any, inputs: Sequence[Any], items: pd.DataFrame) -> Any:
        """What `load` learns from the items' training split (None: nothing), for an export to carry."""
        return None

    def save_state(self, state: Any, folder: Path, prefix: str) -> Any:
        """What `load` learned, as JSON, its arrays written under `folder/prefix` (an exported predictor)."""
        return state

    def restore_state(self, cfg: Any, saved: Any, folder: Path) -> Any:
        return saved


@dataclass
class Loading:
    """What the families made at load see: the items (item_id, path, the text and category columns; in a run also
    each file's fingerprint and the split, which a predictor's items lack: there what was learned comes in `fitted`
    and nothing is memoised), the track's declared inputs (features.inputs), the key-frame stream's first feature set
    and its manifest (None in a predictor: checked when the run trained), the memo root (None: nothing memoised) and,
    per family, what it learned from the training split, filled as the families load (or restored by a predictor)."""

    items: pd.DataFrame
    inputs: Sequence[Any]
    key_frames: Features
    key_frames_manifest: dict | None
    cache: str | None
    fitted: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)  # what one family makes for another (text for alignment)

    @property
    def train(self) -> np.ndarray:
        return training_split(self.items)

    @property
    def ids(self) -> list[str]:
        return self.items["item_id"].astype(str).tolist()


def training_split(items: pd.DataFrame) -> np.ndarray:
    """Which items are of the training split: what a family made at load learns from."""
    return (items["split"] == "train").to_numpy()


def register_family(cls: type[StreamFamily]) -> type[StreamFamily]:
    FAMILIES.register(cls.name)(cls())
    return cls


def families() -> list[StreamFamily]:
    """Every family, in stream order."""
    import_submodules(__name__)
    return sorted((FAMILIES.get(name) for name in FAMILIES.names()), key=lambda family: family.order)


def words() -> list[Word]:
    """Every family's words, in stream order: the configuration's fields."""
    found: dict[str, Word] = {}
    for family in families():
        for word in family.words:
            if word.name in found:
                raise ValueError(f"stream word {word.name!r} is declared twice")
            found[word.name] = word
    return list(found.values())


def word_help(name: str) -> str:
    """What a family's word means ("" for a word no family declares)."""
    return next((word.help for word in words() if word.name == name), "")


def named(cfg: Any) -> list[StreamFamily]:
    """The families `cfg` turns on, in stream order, their words checked."""
    on = [family for family in families() if family.named(cfg)]
    for family in on:
        family.check(cfg)
    return on


def cached_streams(cfg: Any, decoder: str) -> tuple[tuple[FeatureSpec, ...], ...]:
    """The cached streams `cfg` reads, each a tuple of feature sets joined on the feature axis: the key frames'
    view families first, then every other extracted family it names."""
    return tuple(family.specs(cfg, decoder) for family in named(cfg) if family.extracted)


def others_off() -> dict[str, str]:
    """The words that turn off every stream but the key frames (for `dataclasses.replace`)."""
    return {family.words[0].name: "" for family in families() if family.order > 0}


def other_streams(cfg: Any) -> list[str]:
    """The encoders `cfg` names for the streams beside the key frames, in stream order."""
    return [getattr(cfg, family.words[0].name) for family in named(cfg) if family.order > 0]


def encoder_family(encodes: str) -> StreamFamily:
    """The extracted family whose encoders take what a view family renders (ViewFamily.encodes)."""
    for family in families():
        if family.extracted and family.encodes == encodes:
            return family
    raise ValueError(f"no stream family encodes {encodes!r} views")


def load(cfg: Any, loading: Loading) -> tuple[list[Features], list[str]]:
    """The streams made at load, in stream order, and their keys."""
    made = [made for family in named(cfg) if not family.extracted for made in family.load(cfg, loading)]
    return [features for _, features in made], [key for key, _ in made]


def fit(cfg: Any, inputs: Sequence[Any], items: pd.DataFrame) -> dict[str, Any]:
    """Per family made at load that `cfg` names, what it learns from the items' training split."""
    return {family.name: family.fit(cfg, inputs, items) for family in named(cfg) if not family.extracted}


def save_states(fitted: dict[str, Any], folder: Path, prefix: str) -> dict[str, Any]:
    """What each family made at load learned (`fit`), as JSON, its arrays written under `folder/prefix/<family>`
    (an exported predictor)."""
    return {name: FAMILIES.get(name).save_state(state, folder, f"{prefix}/{name}") for name, state in fitted.items()}


def restore_states(cfg: Any, saved: dict[str, Any], folder: Path) -> dict[str, Any]:
    """What `save_states` wrote, as each family's `load` takes it in `Loading.fitted`."""
    return {name: FAMILIES.get(name).restore_state(cfg, state, folder) for name, state in saved.items()}


def loaded_costs(cfg: Any, inputs: Sequence[Any], items: pd.DataFrame | None = None) -> tuple[LoadedStream, ...]:
    return tuple(cost for family in named(cfg) if not family.extracted for cost in family.costs(cfg, inputs, items))


def describe(cfg: Any) -> str:
    """The clauses of the streams beside the key frames, for a readme."""
    return "".join(family.describe(cfg) for family in named(cfg) if family.order > 0)


def weight_sources(cfg: Any) -> list[tuple[str, Path]]:
    return [source for family in named(cfg) for source in family.weight_sources(cfg)]


def local_or_hub(cfg: Any, word: str, hub: Callable[[str], Path | None]) -> list[tuple[str, Path]]:
    """The weights file a weights word loads: none (random), a local file, or `hub(word's value)`, the file a hub
    word (`hub`, `hub:<tag>`) stands for in this machine's cache."""
    weights = getattr(cfg, word)
    if weights in ("random", "none"):
        return []
    if Path(weights).exists():
        return [(word, Path(weights))]
    if weights.startswith("hub") and (found := hub(weights)) is not None:
        return [(word, found)]
    raise StreamError(f"{word}={weights!r}: cannot tell which file these weights are to export them")


def per_item(vectors: np.ndarray, ids: list[str]) -> Features:
    """One vector per item as a stream of one frame and one view; a row of NaN is an item without it."""
    present = ~np.isnan(vectors).any(axis=1)
    return Features(np.nan_to_num(vectors)[:, None, None, :], present[:, None, None], ids, ["center"])


def inputs_of(inputs: Sequence[Any], kind: type) -> list[str]:
    """The columns of the track's inputs of `kind` (features.inputs: Text, Category)."""
    return [declared.column for declared in inputs if isinstance(declared, kind)]
