"""Synthetic datasets in each track's organiser layout: procedural media with known distortions, the organiser's
lists and organiser-side truth, so every track has a demo and the tests need no download.

A track's layout is made by a module here that registers its generator under the track's name (synth.dataset); every
module of this package is imported on first use, as tracks are, so no list needs keeping. The file names and
organiser facts a generator writes are its track's (tracks/<track>.py), stated there once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from common.registry import import_submodules
from synth.dataset import SYNTHESIZERS, WITHHOLDERS

if TYPE_CHECKING:
    from tracks.base import Track


def synthesize(track: Track, out: str | Path, items: int, seed: int, width: int = 0, height: int = 0) -> None:
    """Writes a small dataset of `items` in the track's organiser layout, with organiser-side truth under
    `out/truth`; media of `width` x `height` (0: the track's usual size), the same bytes for the same seed."""
    import_submodules(__name__)
    SYNTHESIZERS.get(track.name)(Path(out), items, seed, width, height)


def withhold_labels(track: Track, data: str | Path, share: float, seed: int) -> Path:
    """Takes `share` of a synthetic dataset's training groups out of its lists: their media move to `withheld/`
    (returned, for `unlabelled=`) and their labels to organiser-side truth (`truth/withheld.csv`), so that a
    pseudo-labelling recipe can run on the dataset and its labels be judged."""
    import_submodules(__name__)
    if track.name not in WITHHOLDERS:
        raise ValueError(f"track {track.name}: its synthetic data cannot withhold labels")
    return WITHHOLDERS.get(track.name)(track, Path(data), share, seed)
