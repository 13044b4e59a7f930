"""KVQ: NTIRE 2024 short-form UGC video quality (also the NTIRE 2025 efficient track 1, same data).

Official (organiser's `metric_score.py`):
  * labels: `train_data.csv`, header `filename,score`, ids carry folder and extension (`train/0001.mp4`); the test
    list has the same header and an empty score;
  * score: `0.45*SROCC + 0.45*PLCC + 0.05*acc_nonsource + 0.05*acc_source`, PLCC raw (no logistic fit); the
    accuracies come from `rank-pair-val.xlsx`, sheets `nonsource` and `source`, rows `video1, video2, rank` (rank 1
    when video1 is better, else 2), a prediction saying rank 1 when score1 >= score2;
  * submission: `prediction.csv` at the zip root, header `filename,score`, ids exactly as in the test list.
Ours (assumed): the source of each video comes from a `source` column of the label file or from an optional
`sources.csv` (`filename,source`) beside it; without either, each video is its own group. Out of fold, the rank
terms are estimated on every labelled pair (same source for `acc_source`, different sources for `acc_nonsource`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common import bootstrap, metrics
from features.inputs import Video
from tracks.base import Track, register_track, target_arrays
from tracks.formats import CsvFormat
from tracks.layout import (
    LayoutError,
    check_split_overlap,
    lookup,
    media_paths,
    numeric_column,
    require_columns,
    require_unique,
    source_groups,
)

TRAIN_LIST = "train_data.csv"
TEST_LIST = "test_data.csv"
SOURCE_MAP = "sources.csv"
PAIR_FILE = "rank-pair-val.xlsx"
PAIR_SHEETS = ("nonsource", "source")
WEIGHTS = {"srcc": 0.45, "plcc": 0.45, "acc_nonsource": 0.05, "acc_source": 0.05}


def combine(parts: dict) -> float | np.ndarray:
    """The weighted sum of the parts: numbers, or arrays of resampled parts."""
    total = sum(weight * parts[name] for name, weight in WEIGHTS.items())
    return total if isinstance(total, np.ndarray) else float(total)


def ranked_pairs(y: np.ndarray, groups: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The pairs each rank term is scored on: versions of different sources, and of the same source (with one source
    only, or every video its own source, every pair instead)."""
    pairs = {}
    for name, same in (("acc_nonsource", False), ("acc_source", True)):
        pairs[name] = metrics.all_pairs(y, groups, same_group=same)
        if len(pairs[name][0]) == 0:
            pairs[name] = metrics.all_pairs(y)
    return pairs


def read_label_list(path: Path, labelled: bool) -> pd.DataFrame:
    """A `filename,score` list; `labelled=False` for the test list, whose score cells are empty."""
    if not path.is_file():
        raise LayoutError(f"{path}: label file not found")
    table = pd.read_csv(path, dtype={"filename": str})
    require_columns(table, ("filename", "score"), str(path))
    require_unique(table["filename"], str(path))
    if labelled:
        table["score"] = numeric_column(table, "score", str(path))
    return table


def read_pairs(path: Path) -> dict[str, pd.DataFrame]:
    """The organiser's pair sheets as frames with columns video1, video2, rank, read by position as the scorer does."""
    sheets = pd.read_excel(path, sheet_name=None)
    pairs = {}
    for sheet in PAIR_SHEETS:
        if sheet not in sheets:
            raise LayoutError(f"{path}: no sheet {sheet!r} (found {', '.join(sheets)})")
        table = sheets[sheet]
        if table.shape[1] < 3:
            raise LayoutError(f"{path}, sheet {sheet}: expected columns video1, video2, rank")
        table = table.iloc[:, :3].set_axis(["video1", "video2", "rank"], axis=1)
        table["rank"] = numeric_column(table, "rank", f"{path}, sheet {sheet}")
        pairs[sheet] = table
    return pairs


@register_track
class KVQ(Track):
    name = "kvq"
    title = "NTIRE 2024 short-form UGC video quality (KVQ)"
    inputs = (Video(),)
    targets = ("score",)
    score_range = (-1.0, 7.0)  # MOS is about 1 to 5
    submission = CsvFormat("prediction.csv", "filename", ("score",))
    defaults = {"frames": 8, "size": 224, "loss": "mse:1,plcc:1"}  # the winners' 8 key frames; PLCC is scored raw
    # The key-frame square, its mirror, the two ends of the long side (top and bottom of a portrait short video: the
    # three crops of the organisers' baseline) and the key frames half a second later.
    tta_views = ("center", "hflip", "tl", "br", "center@t0.5")
    demo_views = ("center", "hflip")  # all five took the demo 1.8 times as long (39 s against 21 s, 2 cores)
    smoke = {"items": 36, "width": 64, "height": 48}  # two test sources, so both rank sheets have pairs

    def read_items(self, data: Path) -> pd.DataFrame:
        data = Path(data)
        train = read_label_list(data / TRAIN_LIST, labelled=True)
        test = read_label_list(data / TEST_LIST, labelled=False)
        check_split_overlap(train["filename"], test["filename"], str(data))
        items = pd.concat(
            [train.assign(split="train"), test.assign(split="test", score=np.nan)], ignore_index=True
        ).rename(columns={"filename": "item_id"})
        items["path"] = media_paths(data, items["item_id"], str(data / TRAIN_LIST))
        if "source" in items.columns and items["source"].notna().all():
            items["group"] = items["source"].astype(str)
        else:
            items["group"] = source_groups(data / SOURCE_MAP, items["item_id"])
        return items[["item_id", "path", "split", "group", "score"]]

    def selection_score(self, pred: pd.DataFrame, items: pd.DataFrame) -> dict[str, float]:
        labelled = items.set_index("item_id").loc[pred.index]
        p = pred["score"].to_numpy(dtype=np.float64)
        y = labelled["score"].to_numpy(dtype=np.float64)
        groups = labelled["group"].to_numpy()
        parts = {"srcc": metrics.srcc(p, y), "plcc": metrics.plcc(p, y)}
        for name, (i, j, rank) in ranked_pairs(y, groups).items():
            parts[name] = metrics.pair_accuracy(p[i], p[j], rank)
        return {"score": combine(parts), **parts}

    def resampled_scores(self, pred: pd.DataFrame, items: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        """As selection_score, each pair of items drawn a and b times standing for a * b pairs; a resample that
        draws no pair of a kind (no two versions of one source) ranks every pair instead, as the score does."""
        p, y = target_arrays(pred, items, "score")
        groups = items.set_index("item_id").loc[pred.index, "group"].to_numpy()
        parts = {"srcc": bootstrap.weighted_srcc(p, y, weights), "plcc": bootstrap.weighted_plcc(p, y, weights)}
        every = None
        for name, pairs in ranked_pairs(y, groups).items():
            accuracy = bootstrap.weighted_pair_accuracy(p, pairs, weights)
            if np.isnan(accuracy).any():
                every = bootstrap.weighted_pair_accuracy(p, metrics.all_pairs(y), weights) if every is None else every
                accuracy = np.where(np.isnan(accuracy), every, accuracy)
            parts[name] = accuracy
        return {"score": combine(parts)}

    def official_score(self, pred: pd.DataFrame, truth: Path) -> dict[str, float | str]:
        truth = Path(truth)
        table = read_label_list(truth / self.truth_file, labelled=True)
        scores = pred["score"]
        p = lookup(scores, table["filename"], str(truth / self.truth_file))
        parts: dict[str, float | str] = {
            "srcc": metrics.srcc(p, table["score"]),
            "plcc": metrics.plcc(p, table["score"]),
        }
        if not (truth / PAIR_FILE).is_file():
            parts["note"] = (
                f"no {PAIR_FILE} in {truth}: the rank terms (0.1 of the score) are missing, no official score"
            )
            return parts
        for sheet, pairs in read_pairs(truth / PAIR_FILE).items():
            source = f"{truth / PAIR_FILE}, sheet {sheet}"
            first = lookup(scores, pairs["video1"], source)
            second = lookup(scores, pairs["video2"], source)
            parts[f"acc_{sheet}"] = metrics.pair_accuracy(first, second, pairs["rank"].to_numpy())
        return {"score": combine(parts), **parts}
