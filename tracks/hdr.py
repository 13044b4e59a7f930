"""HDR and SDR video quality: the IEEE ICME 2025 Grand Challenge (HDRSDR-VQA), full-reference and no-reference.

Official (the organisers' README and rules, the template repository Easoncyx/vqm_challenge):
  * x265 MP4s, SDR (BT.709, yuv420p) and HDR10 (BT.2020, PQ, yuv420p10le), named
    `{id}_{content}_{HDR10|SDR}_{W}x{H}_{kbps}k.mp4`; scores JOD-like, about 4.5 to 11 (a reference about 10);
  * score: SROCC ranks; PLCC and RMSE after the 4-parameter logistic are reported beside it;
  * submission: a program run as `predict pvs_video ref_video result_file` that writes one float (the no-reference
    track passes a dummy reference, accepted and ignored): `just export` makes it; the range is 0 to 10 by the rules
    (0 to 100 in the template's README), so predictions are mapped monotonically into it, never clipped.
Ours (assumed; the training list is not public):
  * `train.csv` with `video,score`, the test list `test.csv` with `video`; the videos under `videos/`;
  * a distorted video's reference is `{id}_{content}_{range}_3840x2160_50000k.mp4` beside it (REFERENCE_TAG), or
    the file a `reference` column of the list names; it must be of the same content and range;
  * folds grouped by content (`{id}_{content}`: its SDR and HDR10 versions together); the zip `just submit` writes
    holds `predictions.csv` (`video,score`), for local scoring of a validation list.
Every frame is decoded at native depth with its own colour tags (features.hdr), SDR and HDR10 alike, and shown to
the backbone as perceptually uniform ICtCp by default (`light=`): one axis for both ranges.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from common import bootstrap, metrics
from features.fingerprint import REFERENCE
from features.inputs import MediaInput, Reference
from tracks.base import CorrelationTrack, register_track
from tracks.formats import CsvFormat
from tracks.layout import LayoutError, check_split_overlap, media_paths, read_csv_list

TRAIN_LIST, TEST_LIST, VIDEO_DIR = "train.csv", "test.csv", "videos"
REFERENCE_TAG = "3840x2160_50000k"  # size and bitrate in the names of the organisers' reference encodes
NAME = re.compile(r"(?P<id>\d+)_(?P<content>[^_]+(?:_[^_]+)*?)_(?P<range>HDR10|SDR)_(?P<size>\d+x\d+)_(?P<kbps>\d+)k")


def name_fields(video: str, source: str) -> dict[str, str]:
    """id, content, range, size and kbps of a name, or LayoutError naming it and the pattern expected."""
    match = NAME.fullmatch(Path(video).stem)
    if match is None:
        pattern = "{id}_{content}_{HDR10|SDR}_{W}x{H}_{kbps}k.mp4"
        raise LayoutError(f"{source}: {video!r} is not named {pattern}")
    return match.groupdict()


def content(video: str, source: str = "the list") -> str:
    """The group of a video: its id and content, so a scene's SDR and HDR10 versions share a fold."""
    fields = name_fields(video, source)
    return f"{fields['id']}_{fields['content']}"


def reference_name(video: str, source: str = "the list") -> str:
    """The reference a distorted video's name implies: the same id, content and range at REFERENCE_TAG."""
    fields = name_fields(video, source)
    return f"{fields['id']}_{fields['content']}_{fields['range']}_{REFERENCE_TAG}.mp4"


def read_list(path: Path, labelled: bool) -> pd.DataFrame:
    """`video[,score][,reference]` as the (assumed) lists have it."""
    return read_csv_list(path, "video", "score", labelled, {REFERENCE: str})


def read_hdr_items(data: Path, with_reference: bool) -> pd.DataFrame:
    """The items table of both tracks; with `with_reference`, each item's reference checked to exist and to be of
    its own content and range."""
    data = Path(data)
    train, test = read_list(data / TRAIN_LIST, True), read_list(data / TEST_LIST, False)
    check_split_overlap(train["video"], test["video"], f"{data / TRAIN_LIST} and {data / TEST_LIST}")
    parts = [train.assign(split="train", source=TRAIN_LIST), test.assign(split="test", score=np.nan, source=TEST_LIST)]
    items = pd.concat(parts, ignore_index=True)
    items["path"] = media_paths(data / VIDEO_DIR, items["video"], [str(data / s) for s in items["source"]])
    items["group"] = [content(v, str(data / s)) for v, s in zip(items["video"], items["source"])]
    items = items.rename(columns={"video": "item_id"})
    columns = ["item_id", "path", "split", "group", "score"]
    if with_reference:
        items[REFERENCE] = [_reference(data, row) for row in items.itertuples()]
        columns.insert(4, REFERENCE)
    return items[columns]


def _reference(data: Path, row) -> str:
    source = str(data / row.source)
    given = getattr(row, REFERENCE, None)
    name = given.strip() if isinstance(given, str) and given.strip() else reference_name(row.item_id, source)
    expected, found = name_fields(row.item_id, source), name_fields(name, source)
    if (expected["id"], expected["content"], expected["range"]) != (found["id"], found["content"], found["range"]):
        raise LayoutError(
            f"{source}: {row.item_id}'s reference {name} is of another content or range "
            f"({found['id']}_{found['content']}_{found['range']}, expected "
            f"{expected['id']}_{expected['content']}_{expected['range']})"
        )
    (path,) = media_paths(data / VIDEO_DIR, [name], source)
    if not Path(path).is_file():
        raise LayoutError(f"{source}: {row.item_id}'s reference {path} not found")
    return path


class HdrTrack(CorrelationTrack):
    """What both ICME tracks share: the lists, the score, the program as the submission."""

    targets = ("score",)
    score_range = (0.0, 10.0)  # the rules' range (`submit score_range=0,100` for the template README's)
    label_range = (0.0, 15.0)  # JOD passes the reference's 10 (11.07 in the organisers' metadata)
    bounded = True
    reference_argument = True
    submission = CsvFormat("predictions.csv", "video", ("score",))
    tta_views = ("center", "hflip")
    smoke = {"items": 12, "width": 64, "height": 48}

    def parts(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """SROCC ranks; PLCC and RMSE after the 4-parameter logistic, as the organisers report them."""
        return {
            "score": metrics.srcc(pred, truth),
            "plcc_logistic": metrics.plcc_logistic(pred, truth),
            "rmse_logistic": metrics.rmse_logistic(pred, truth),
            "krcc": metrics.krcc(pred, truth),
        }

    def resampled_score(self, pred: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return bootstrap.weighted_srcc(pred, truth, weights)


@register_track
class HdrFR(HdrTrack):
    name = "hdr_fr"
    title = "ICME 2025 Grand Challenge: HDR and SDR video quality, full reference (HDRSDR-VQA)"
    inputs = (MediaInput("path", "hdr"), Reference("hdr"))
    # Weight-free statistics of each key frame as ICtCp beside FFmpeg's metrics of each key-frame pair. DISTS's
    # structure and texture over a CNN's stages (the FR winner's statistic, `pair=dists:<timm model>`) wants trained
    # stages (`pair_weights=hub`): from random ones its 2054 terms cost the demo 0.917 -> 0.494 out of fold.
    defaults = {"frames": 8, "size": 224, "light": "perceptual", "fr": "ffmpeg"}

    def read_items(self, data: Path) -> pd.DataFrame:
        return read_hdr_items(data, with_reference=True)


@register_track
class HdrNR(HdrTrack):
    name = "hdr_nr"
    title = "ICME 2025 Grand Challenge: HDR and SDR video quality, no reference (HDRSDR-VQA)"
    inputs = (MediaInput("path", "hdr"),)
    defaults = {"frames": 8, "size": 224, "light": "perceptual", "motion": "temporal_stats"}

    def read_items(self, data: Path) -> pd.DataFrame:
        return read_hdr_items(data, with_reference=False)
