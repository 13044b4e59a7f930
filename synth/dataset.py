"""What every synthetic dataset shares: each track's generator and label withholder, registered under the track's
name by the module that makes its layout, and the organiser-side truth beside the organiser's files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from common.atomic import write_bytes
from common.registry import Registry

if TYPE_CHECKING:  # importing synth.video stays light (tracks.base loads torch); the generators import their tracks
    import pandas as pd

    from tracks.base import Track

TRUTH_DIR = "truth"  # the organiser-side truth of a synthetic dataset, under its data folder (Track.truth_file)
WITHHELD_TRUTH = "withheld.csv"  # beside it, the labels a synthetic dataset withheld (synth.withhold_labels)
WITHHELD_DIR = "withheld"  # and the folder of the media they were withheld from, for `unlabelled=withheld`

# (out, items, seed, width, height): a dataset of `items` in the track's layout under `out`, media of width x height
# (0: the generator's usual size).
SYNTHESIZERS: Registry[Callable[[Path, int, int, int, int], object]] = Registry("synthetic dataset")
# (track, data, share, seed) -> the folder of the withheld media: see synth.withhold_labels.
WITHHOLDERS: Registry[Callable[[Track, Path, float, int], Path]] = Registry("label withholder")


def write_truth(track: Track, out: Path, scores: pd.Series, name: str = "") -> None:
    """The truth of a one-target dataset's items (`scores` indexed by id) in the track's submission format: its test
    items' where official_score reads it (the track's truth_file), or the items it withheld (WITHHELD_TRUTH)."""
    (target,) = track.targets
    frame = scores.to_frame(target)
    write_bytes(Path(out) / TRUTH_DIR / (name or track.truth_file), track.submission.encode(frame, track.targets))
