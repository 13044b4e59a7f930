"""XGC UGC: NTIRE 2025 XGC track 1, user-generated video rated on six dimensions (FineVD-GC).

Read from the organisers' files (real copies in shared/reference/xgc_ugc):
  * `train.txt`: TAB-separated, no header, `name.mp4<TAB>color<TAB>noise<TAB>artifact<TAB>blur<TAB>temporal<TAB>
    overall`, scores about 0-100 centred near 50 (a few below 0), the last line without a newline;
  * `test.txt`: comma-separated, CRLF, `name.mp4,-1,-1,-1` (the -1 are placeholders, not labels).
Assumed (no organiser repo, scorer or submission file was found):
  * the videos lie in `videos/` beside the lists (`VIDEO_DIR`), or in the data folder itself;
  * score: the mean over the six dimensions of (SRCC + PLCC) / 2, each dimension reported;
  * submission: `prediction.csv` at the zip root, header `filename,color,noise,artifact,blur,temporal,overall`;
  * groups: a source per video from an optional `sources.csv` (`filename,source`); without it each video is its
    own group (the real data publishes no sources).
A label cell that is empty or NaN leaves that dimension unlabelled for the video: it is masked in training and
scoring rather than refused, since fine-grained ratings are often incomplete.
Motion matters here (the temporal dimension: stutter, freezes, drops), so the track's default configuration adds a
motion stream of weight-free temporal statistics on 8-frame clips.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from common import bootstrap
from features.inputs import Video
from tracks.base import Track, correlation_parts, register_track, target_arrays
from tracks.formats import CsvFormat
from tracks.layout import (
    LayoutError,
    check_split_overlap,
    find_media,
    lookup,
    numeric_column,
    require_unique,
    source_groups,
)

DIMENSIONS = ("color", "noise", "artifact", "blur", "temporal", "overall")
TRAIN_LIST, TEST_LIST, SOURCE_MAP = "train.txt", "test.txt", "sources.csv"
VIDEO_DIR = "videos"
TEST_PLACEHOLDERS = 3  # `name.mp4,-1,-1,-1`


def _rows(path: Path, delimiter: str, fields: int) -> list[list[str]]:
    """The list's rows, each of exactly `fields` cells; a short or long row is named by its line."""
    if not path.is_file():
        raise LayoutError(f"{path}: label file not found")
    text = path.read_text(encoding="utf-8-sig")
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row]
    for line, row in enumerate(rows, start=1):
        if len(row) != fields:
            raise LayoutError(
                f"{path}, line {line}: {len(row)} field(s), expected {fields} separated by {delimiter!r}: {row[:8]}"
            )
    return rows


def read_train_list(path: Path) -> pd.DataFrame:
    rows = _rows(path, "\t", 1 + len(DIMENSIONS))
    table = pd.DataFrame(rows, columns=["filename", *DIMENSIONS])
    require_unique(table["filename"], str(path), header=False)
    cells = table[list(DIMENSIONS)].apply(lambda column: column.str.strip().replace("", np.nan))
    for dimension in DIMENSIONS:  # an empty cell is an unlabelled dimension; anything else must be a number
        table[dimension] = numeric_column(cells, dimension, str(path), allow_empty=True, header=False)
    return table


def read_test_list(path: Path) -> pd.DataFrame:
    table = pd.DataFrame([row[0] for row in _rows(path, ",", 1 + TEST_PLACEHOLDERS)], columns=["filename"])
    require_unique(table["filename"], str(path), header=False)
    return table


@register_track
class XGCUGC(Track):
    name = "xgc_ugc"
    title = "NTIRE 2025 XGC track 1: user-generated video, six quality dimensions (FineVD-GC)"
    inputs = (Video(),)
    targets = DIMENSIONS
    score_range = (-50.0, 150.0)  # about 0 to 100, a few below 0; room for a head's overshoot
    submission = CsvFormat("prediction.csv", "filename", DIMENSIONS)
    defaults = {
        "frames": 8,
        "size": 224,
        "loss": "mse:1,plcc:1",
        "motion": "temporal_stats",
        "clip": 8,
        "lmm_prompts": ",".join(DIMENSIONS),
    }  # an LMM asked one question per dimension
    tta_views = ("center", "hflip")

    def read_items(self, data: Path) -> pd.DataFrame:
        data = Path(data)
        train = read_train_list(data / TRAIN_LIST)
        test = read_test_list(data / TEST_LIST)
        check_split_overlap(train["filename"], test["filename"], str(data))
        items = pd.concat([train.assign(split="train"), test.assign(split="test")], ignore_index=True)
        items = items.rename(columns={"filename": "item_id"})
        items["path"] = find_media(data, items["item_id"], (VIDEO_DIR,), str(data / TRAIN_LIST))
        items["group"] = source_groups(data / SOURCE_MAP, items["item_id"])
        return items[["item_id", "path", "split", "group", *DIMENSIONS]]

    def selection_score(self, pred: pd.DataFrame, items: pd.DataFrame) -> dict[str, float]:
        truth = items.set_index("item_id").loc[pred.index]
        return dimension_scores(pred, truth)

    def resampled_scores(self, pred: pd.DataFrame, items: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        """As dimension_scores: each dimension over the items labelled on it, `score` the dimensions' mean."""
        scores = {}
        for dimension in DIMENSIONS:
            p, y = target_arrays(pred, items, dimension)
            known = np.isfinite(y)
            p, y, w = p[known], y[known], weights[:, known]
            scores[dimension] = (bootstrap.weighted_srcc(p, y, w) + bootstrap.weighted_plcc(p, y, w)) / 2
        return {"score": np.mean([scores[d] for d in DIMENSIONS], axis=0), **scores}

    def official_score(self, pred: pd.DataFrame, truth: Path) -> dict[str, float | str]:
        path = Path(truth) / self.truth_file
        table = self.submission.read(path, self.targets)
        ordered = pd.DataFrame(
            {d: lookup(pred[d], table.index.to_series(), str(path)) for d in DIMENSIONS}, index=table.index
        )
        return dimension_scores(ordered, table)


def dimension_scores(pred: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Per dimension (SRCC + PLCC) / 2 and its parts over the items labelled on it; `score` their mean."""
    parts: dict[str, float] = {}
    for dimension in DIMENSIONS:
        y = truth[dimension].to_numpy(dtype=np.float64)
        known = np.isfinite(y)
        scored = correlation_parts(pred[dimension].to_numpy(dtype=np.float64)[known], y[known])
        parts[dimension] = scored["score"]
        parts.update({f"{dimension}_{name}": scored[name] for name in ("srcc", "plcc")})
    return {"score": float(np.mean([parts[d] for d in DIMENSIONS])), **parts}
