"""Challenge tracks. A track declares WHAT a challenge is: how to read the organiser's files into the items table, the
targets, the groups that keep a source's versions in one fold, the official score and the submission format.
It never decodes media or trains.

Adding a challenge means adding one module here that defines a `Track` subclass decorated with `@register_track`,
and listing it in `_TRACK_MODULES`.
"""

from __future__ import annotations

import difflib
import importlib

from tracks.base import ITEM_COLUMNS, LayoutError, SubmissionFormat, Track, register_track, registered_tracks

_TRACK_MODULES = ("tracks.kvq",)


def get_track(name: str) -> Track:
    """The track registered under `name`, with a close-match hint for typos."""
    for module in _TRACK_MODULES:
        importlib.import_module(module)
    tracks = registered_tracks()
    if name not in tracks:
        hint = difflib.get_close_matches(name, tracks, n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"unknown track {name!r}; known tracks: {', '.join(sorted(tracks))}.{suggestion}")
    return tracks[name]()


def list_tracks() -> list[str]:
    for module in _TRACK_MODULES:
        importlib.import_module(module)
    return sorted(registered_tracks())


__all__ = [
    "ITEM_COLUMNS",
    "LayoutError",
    "SubmissionFormat",
    "Track",
    "get_track",
    "list_tracks",
    "register_track",
]
