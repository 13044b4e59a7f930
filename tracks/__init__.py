"""Challenge tracks. A track declares WHAT a challenge is: how to read the organiser's files into the items table,
the targets, the groups that keep a source's versions in one fold, the official score and the submission format.
It never decodes media or trains, and never makes data: synthetic datasets are synth's.

Adding a challenge means adding one module here that defines a `Track` subclass decorated with `@register_track`:
every module of this package but the SHARED ones is imported on first use, so no list of tracks needs keeping.
"""

from __future__ import annotations

from common.registry import import_submodules
from tracks.base import ITEM_COLUMNS, TRACKS, Track, register_track
from tracks.formats import CsvFormat, JsonListFormat, SubmissionFormat
from tracks.layout import LayoutError

SHARED = ("base", "formats", "layout", "ranges", "unlabelled")  # what the track modules share; no track in them


def get_track(name: str) -> Track:
    import_submodules(__name__, skip=SHARED)
    return TRACKS.get(name)()


def list_tracks() -> list[str]:
    import_submodules(__name__, skip=SHARED)
    return TRACKS.names()


__all__ = [
    "ITEM_COLUMNS",
    "SHARED",
    "CsvFormat",
    "JsonListFormat",
    "LayoutError",
    "SubmissionFormat",
    "Track",
    "get_track",
    "list_tracks",
    "register_track",
]
