"""Challenge tracks. A track declares WHAT a challenge is: how to read the organiser's files into the items table,
the targets, the groups that keep a source's versions in one fold, the official score and the submission format.
It never decodes media or trains.

Adding a challenge means adding one module here that defines a `Track` subclass decorated with `@register_track`,
and naming the module in `TRACK_MODULES`.
"""

from __future__ import annotations

import importlib

from tracks.base import ITEM_COLUMNS, TRACKS, LayoutError, SubmissionFormat, Track, register_track

TRACK_MODULES = ("tracks.kvq", "tracks.uhd_iqa", "tracks.fiqa")


def _load() -> None:
    for module in TRACK_MODULES:
        importlib.import_module(module)


def get_track(name: str) -> Track:
    _load()
    return TRACKS.get(name)()


def list_tracks() -> list[str]:
    _load()
    return TRACKS.names()


__all__ = ["ITEM_COLUMNS", "LayoutError", "SubmissionFormat", "Track", "get_track", "list_tracks", "register_track"]
