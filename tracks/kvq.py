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

import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from common import metrics
from common.atomic import atomic_path, write_text
from features.inputs import Video
from synth import video as synth_video
from tracks.base import (
    TRUTH_FILE,
    CsvFormat,
    LayoutError,
    Track,
    check_split_overlap,
    lookup,
    media_path,
    numeric_column,
    register_track,
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


def combine(parts: dict[str, float]) -> float:
    return float(sum(weight * parts[name] for name, weight in WEIGHTS.items()))


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
        items["path"] = [media_path(data, i, str(data / TRAIN_LIST)) for i in items["item_id"]]
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
        for name, same in (("acc_nonsource", False), ("acc_source", True)):
            i, j, rank = metrics.all_pairs(y, groups, same_group=same)
            if len(i) == 0:  # one source only, or every video its own source: rank every pair instead
                i, j, rank = metrics.all_pairs(y)
            parts[name] = metrics.pair_accuracy(p[i], p[j], rank)
        return {"score": combine(parts), **parts}

    def official_score(self, pred: pd.DataFrame, truth: Path) -> dict[str, float | str]:
        truth = Path(truth)
        table = read_label_list(truth / TRUTH_FILE, labelled=True)
        scores = pred["score"]
        p = lookup(scores, table["filename"], str(truth / TRUTH_FILE))
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

    def synthesize(self, out: Path, items: int = 120, seed: int = 0, width: int = 0, height: int = 0) -> None:
        synthesize_kvq(Path(out), items, seed, width or 320, height or 240)


# --- the synthetic dataset -------------------------------------------------------------------------------------------

VERSIONS_PER_SOURCE = 6
TEST_SOURCE_FRACTION = 0.25
RATER_NOISE = 0.12  # std of the MOS noise, on the 1-5 scale


def _make_source(job: tuple[Path, int, tuple[int, int], list[tuple[str, synth_video.Distortion]]]) -> None:
    out, source_seed, (width, height), versions = job
    clean = synth_video.render_source(source_seed, width, height)
    for k, (item_id, distortion) in enumerate(versions):
        frames = synth_video.distort(clean, distortion, seed=source_seed * 100 + k)
        synth_video.encode_mp4(frames, out / item_id, crf=distortion.crf)


def synthesize_kvq(out: Path, items: int, seed: int, width: int = 320, height: int = 240, workers: int = 2) -> None:
    """Sources of procedural content, each with a near-pristine and several processed versions; MOS from the
    distortion severity plus a per-source content effect and rater noise. Whole sources go to train or test."""
    if items < 2 * VERSIONS_PER_SOURCE:
        raise ValueError(f"items={items}: need at least {2 * VERSIONS_PER_SOURCE} (two sources)")
    rng = np.random.default_rng(seed)
    n_sources = math.ceil(items / VERSIONS_PER_SOURCE)
    n_test = max(1, round(n_sources * TEST_SOURCE_FRACTION))
    test_sources = set(rng.choice(n_sources, size=n_test, replace=False).tolist())
    rows, jobs, counters = [], [], {"train": 0, "test": 0}
    for source in range(n_sources):
        split = "test" if source in test_sources else "train"
        content = rng.uniform(-0.3, 0.3)  # some sources are simply nicer to look at
        versions = []
        for k in range(VERSIONS_PER_SOURCE):
            distortion = synth_video.Distortion() if k == 0 else synth_video.random_distortion(rng)
            counters[split] += 1
            item_id = f"{split}/{counters[split]:04d}.mp4"
            mos = 1.0 + 4.0 * synth_video.quality(distortion) + content + rng.normal(0.0, RATER_NOISE)
            rows.append(
                {
                    "filename": item_id,
                    "score": float(np.clip(mos, 1.0, 5.0)),
                    "source": f"s{source:03d}",
                    "split": split,
                }
            )
            versions.append((item_id, distortion))
        jobs.append((out, seed * 10_000 + source, (width, height), versions))
    for split in counters:
        (out / split).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_make_source, jobs))

    table = pd.DataFrame(rows)
    train, test = table[table.split == "train"], table[table.split == "test"]
    write_text(out / TRAIN_LIST, train[["filename", "score"]].to_csv(index=False, float_format="%.9f"))
    write_text(out / TEST_LIST, test[["filename"]].assign(score="").to_csv(index=False))
    write_text(out / SOURCE_MAP, table[["filename", "source"]].to_csv(index=False))
    write_text(out / "truth" / TRUTH_FILE, test[["filename", "score"]].to_csv(index=False, float_format="%.9f"))
    _write_pairs(out / "truth" / PAIR_FILE, test, rng)


def _write_pairs(path: Path, test: pd.DataFrame, rng: np.random.Generator, per_sheet: int = 200) -> None:
    """Pairs of test videos as the organisers' sheets: `source` pairs share a source, `nonsource` pairs do not."""
    y = test["score"].to_numpy()
    names = test["filename"].to_numpy()
    sheets = {}
    for sheet, same in (("nonsource", False), ("source", True)):
        i, j, rank = metrics.all_pairs(y, test["source"].to_numpy(), same_group=same)
        keep = rng.permutation(len(i))[:per_sheet]
        sheets[sheet] = pd.DataFrame({"video1": names[i[keep]], "video2": names[j[keep]], "rank": rank[keep]})
    with atomic_path(path) as tmp, pd.ExcelWriter(tmp, engine="openpyxl") as writer:
        for sheet, frame in sheets.items():
            frame.to_excel(writer, sheet_name=sheet, index=False)
