"""Challenge tracks. A track declares WHAT a challenge is: how to read the organiser's files into the items table,
the targets, the groups that keep a source's versions in one fold, the official score and the submission format.
It never decodes media or trains.

Adding a challenge means adding one module here that defines a `Track` subclass decorated with `@register_track`:
every module of this package but `base` is imported on first use, so no list needs keeping.
"""

from __future__ import annotations

import importlib
import pkgutil

from tracks.base import (
    ITEM_COLUMNS,
    TRACKS,
    CsvFormat,
    JsonListFormat,
    LayoutError,
    SubmissionFormat,
    Track,
    register_track,
)


def _load() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


def get_track(name: str) -> Track:
    _load()
    return TRACKS.get(name)()


def list_tracks() -> list[str]:
    _load()
    return TRACKS.names()


__all__ = [
    "ITEM_COLUMNS",
    "CsvFormat",
    "JsonListFormat",
    "LayoutError",
    "SubmissionFormat",
    "Track",
    "get_track",
    "list_tracks",
    "register_track",
]
