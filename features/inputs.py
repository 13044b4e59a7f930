"""Typed inputs: what a track's items are made of, declared by the track, asked by every layer that handles them.

A track lists its inputs (`Track.inputs`); the first media input is what the frame and clip encoders see. Every
place that once compared a media string asks the input instead: whether it has a time axis, which decoder reads
it, which column of the items table holds its files (and so which files an item's cache rows are bound to).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from features.decode import DECODERS
from features.fingerprint import REFERENCE
from features.hdr import LIGHTS  # noqa: F401 - registers the hdr decoder an input may name


@dataclass(frozen=True)
class MediaInput:
    """A column of the items table holding media files, decoded into frames by `decoder` (see features.decode)."""

    column: str = "path"
    decoder: str = "video"
    # The reference of a full-reference pair: the first media input's pristine version, decoded on its frames
    # (features.pairs) and bound with it in the item's fingerprint (features.fingerprint.item_fingerprints).
    reference: bool = False

    def __post_init__(self):
        DECODERS.get(self.decoder)

    @property
    def time_axis(self) -> bool:
        return DECODERS.get(self.decoder).time_axis


def Video(column: str = "path") -> MediaInput:  # noqa: N802 - reads as a declaration
    return MediaInput(column, "video")


def Reference(decoder: str = "video") -> MediaInput:  # noqa: N802 - reads as a declaration
    """The items' `reference` column (features.fingerprint.REFERENCE), read by the first input's decoder."""
    return MediaInput(REFERENCE, decoder, reference=True)


def Image(column: str = "path") -> MediaInput:  # noqa: N802 - reads as a declaration
    return MediaInput(column, "image")


@dataclass(frozen=True)
class Text:
    """A column of the items table holding text (a prompt, a title): encoded from the table itself, so its features
    always follow the text as the label files hold it now (see features.text)."""

    column: str
    time_axis: bool = False


@dataclass(frozen=True)
class Category:
    """A category a track parses from each item's file name (THQA's generator), held in a column of the items table:
    one-hot over the categories of the training split, in the metadata stream (see features.metadata). `parse` is
    what makes the column, so an exported predictor reads it from a new file's name as the track reads its lists."""

    column: str
    parse: Callable[[str], str]
    time_axis: bool = False
