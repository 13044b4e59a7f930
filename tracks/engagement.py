"""Engagement: ICCV VQualA 2025 short-video engagement prediction (EVQA, SnapUGC).

Official (the organisers' files and baseline, copies in shared/reference/engagement):
  * `train_data.csv`, `val_data.csv`, `test_data.csv` with `Id,Title,Description` (`ECR` in train; a
    `Download_link` column may be there); videos `<Id>.mp4`, the Id a 32-hex hash; Title or Description is empty in
    most rows, emoji are already words, and the text is not all ASCII;
  * target: ECR, the engagement continuation rate, in [0, 1];
  * score: 0.6 * SROCC + 0.4 * PLCC;
  * submission: CSV `Id,ECR`, the Id without its extension, ECR inside [0, 1].
Assumed:
  * the file in the zip is `submission.csv` (the baseline's own name is not a rule);
  * an Id is read with or without `.mp4`; the videos lie in `videos/` beside the lists, then the data folder;
  * the phase follows the download: the test list once it is there, the validation list before;
  * every video is its own group (no sources are published);
  * ECR goes out strictly inside (0, 1) (`bounded`): an affine map fitted once on the submission's predictions and
    always applied (tracks.ranges.RangeMap), so the ranks and the linear correlation the score reads are unchanged
    where clipping would tie the extremes, and an exported predictor maps a new item the same way.
The title and the description are text inputs and the sound matters (the winner found audio helps), so the track's
defaults add both text streams and the audio stream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common import bootstrap, metrics
from features.inputs import Text, Video
from tracks.base import Track, predicted_truth, register_track, target_arrays
from tracks.formats import CsvFormat
from tracks.layout import (
    LayoutError,
    find_media,
    lookup,
    numeric_column,
    phased_items,
    require_columns,
    require_unique,
)

TRAIN_LIST, VAL_LIST, TEST_LIST = "train_data.csv", "val_data.csv", "test_data.csv"
VIDEO_DIR = "videos"
TEXTS = ("Title", "Description")
WEIGHTS = {"srcc": 0.6, "plcc": 0.4}


def read_list(path: Path, labelled: bool) -> pd.DataFrame:
    """An `Id,Title,Description[,ECR]` list, Ids without `.mp4`, empty text as empty strings."""
    if not path.is_file():
        raise LayoutError(f"{path}: label file not found")
    table = pd.read_csv(path, dtype={"Id": str, "Title": str, "Description": str}, keep_default_na=False)
    require_columns(table, ("Id", *TEXTS, *(("ECR",) if labelled else ())), str(path))
    table["Id"] = table["Id"].str.strip().str.removesuffix(".mp4")
    require_unique(table["Id"], str(path))
    table["ECR"] = numeric_column(table, "ECR", str(path)) if labelled else np.nan
    return table[["Id", *TEXTS, "ECR"]]


def engagement_score(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    parts = {"srcc": metrics.srcc(pred, truth), "plcc": metrics.plcc(pred, truth)}
    return {"score": sum(WEIGHTS[name] * parts[name] for name in WEIGHTS), **parts}


@register_track
class Engagement(Track):
    name = "engagement"
    title = "ICCV VQualA 2025 short-video engagement prediction (SnapUGC)"
    inputs = (Video(), Text("Title"), Text("Description"))
    targets = ("ECR",)
    score_range = (0.0, 1.0)
    bounded = True
    submission = CsvFormat("submission.csv", "Id", ("ECR",))
    defaults = {
        "frames": 4,
        "size": 224,
        "loss": "mse:1,plcc:1",
        "text": "hashed_ngrams",
        "audio": "logmel_stats",
        "lmm_text": "Title,Description",
        "lmm_prompts": "engagement,quality",
    }
    tta_views = ("center", "hflip")

    def read_items(self, data: Path) -> pd.DataFrame:
        data = Path(data)
        items, listed = phased_items(data, (TRAIN_LIST, VAL_LIST, TEST_LIST), read_list, "Id")
        items = items.rename(columns={"Id": "item_id"})
        items["path"] = find_media(data, [f"{item}.mp4" for item in items["item_id"]], (VIDEO_DIR,), str(listed))
        items["group"] = items["item_id"]
        return items[["item_id", "path", "split", "group", *TEXTS, "ECR"]]

    def selection_score(self, pred: pd.DataFrame, items: pd.DataFrame) -> dict[str, float]:
        truth = items.set_index("item_id").loc[pred.index, "ECR"]
        return engagement_score(pred["ECR"].to_numpy(dtype=np.float64), truth.to_numpy(dtype=np.float64))

    def resampled_scores(self, pred: pd.DataFrame, items: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        p, y = target_arrays(pred, items, "ECR")
        kernels = {"srcc": bootstrap.weighted_srcc, "plcc": bootstrap.weighted_plcc}
        return {"score": sum(WEIGHTS[name] * kernels[name](p, y, weights) for name in WEIGHTS)}

    def official_score(self, pred: pd.DataFrame, truth: Path) -> dict[str, float | str]:
        scored, extra = predicted_truth(self.read_truth(truth), pred, truth)
        predicted = lookup(pred["ECR"], scored.index.to_series(), str(truth))
        return {**engagement_score(predicted, scored["ECR"].to_numpy()), **extra}
