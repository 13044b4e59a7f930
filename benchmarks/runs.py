"""Rows 16 and 17: the runs table and the bootstrap behind its intervals.

16: `just runs` (workbench.compare.list_runs: the lazy scan of every run's summary row, the filter, sort and top, the
settings that differ, the submissions ledger, the picture) over a track folder of many runs, against reading the same
summary rows alone, one file after another with pyarrow. The runs are made once under the bench root: each a
configuration and the summary row a finished run writes (its interval bootstrapped on a small out-of-fold table).

17: the interval of (SRCC + PLCC) / 2 over resampled groups, weighted kernels on blocks of resamples
(common.bootstrap via the track's resampled_scores), against the plain way: each resample expanded and scored by the
track's selection_score (scipy), timed on a few resamples and charged per resample.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from benchmarks.harness import BenchConfig, Progress, Row, Sizes, median, median_ratio, timed
from common import bootstrap
from tracks import Track, get_track
from workbench.compare import SUMMARY_ROW, list_runs, oof_table, write_summary_row
from workbench.config import RunsConfig
from workbench.runs import CONFIG, Run

TRACK = "uhd_iqa"  # a one-target track ranked by (SRCC + PLCC) / 2, as most are
RUN_ITEMS = 200  # out-of-fold items of each made run
PLAIN_RESAMPLES = 10  # resamples the plain way is timed on


def labelled(items: int, groups: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions and labelled items of `TRACK` with `groups` groups."""
    target = get_track(TRACK).targets[0]
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"item{k:06d}" for k in range(items)], name="item_id")
    truth = np.round(rng.normal(3, 1, items), 2)
    frame = pd.DataFrame({"item_id": ids, "group": rng.integers(0, groups, items).astype(str), target: truth})
    return pd.DataFrame({target: truth + rng.normal(0, 1, items)}, index=ids), frame


def made_runs(root: Path, count: int) -> Path:
    """`count` finished runs of TRACK under `root`/<track>: configurations differing in head, lr and seed."""
    folder = root / TRACK
    if len(list(folder.glob(f"*/{SUMMARY_ROW}"))) >= count:
        return root
    track = get_track(TRACK)
    for k in range(count):
        run = Run(folder / f"run-{k:04d}")
        config = {
            "track": TRACK,
            "backbone": "quality_stats",
            "head": ("linear", "mlp")[k % 2],
            "lr": 1e-3 * (1 + k % 5),
        }
        config |= {"seed": k % 7, "epochs": 30, "folds": 5, "views": ["center", "hflip"]}
        run.path.mkdir(parents=True, exist_ok=True)
        (run.path / CONFIG).write_text(json.dumps(config))
        pred, items = labelled(RUN_ITEMS, RUN_ITEMS // 4, seed=k)
        table = oof_table(pred, items, pd.Series(np.arange(RUN_ITEMS) % 5, index=pred.index))
        folds = {str(f): {"score": float(s)} for f, s in enumerate(np.random.default_rng(k).uniform(0.5, 0.9, 5))}
        summary = {"oof": track.selection_score(pred, items), "folds": folds}
        write_summary_row(run, track, table, summary, {"seconds": 10.0 + k % 13, "gflops": 0.27})
    return root


def read_summaries(root: Path) -> pd.DataFrame:
    """The baseline: every summary row read, one file after another, and nothing else done."""
    files = sorted((root / TRACK).glob(f"*/{SUMMARY_ROW}"))
    return pd.concat([pq.read_table(path).to_pandas() for path in files], ignore_index=True)


def plain_seconds(track: Track, pred: pd.DataFrame, items: pd.DataFrame, weights: np.ndarray) -> float:
    """Seconds per resample of the plain way (Track's own resampled_scores: expand, then selection_score)."""
    with timed() as plain:
        Track.resampled_scores(track, pred, items, weights)
    return plain.wall / len(weights)


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    progress(f"runs table: making {sizes.runs_listed} runs")
    where = made_runs(root / f"runs-{sizes.runs_listed}", sizes.runs_listed)
    listing = RunsConfig(track=TRACK, runs_dir=str(where))
    track = get_track(TRACK)
    pred, items = labelled(sizes.boot_items, sizes.boot_items // 5, seed=0)
    plain_weights = next(bootstrap.group_counts(items["group"], PLAIN_RESAMPLES, seed=1))
    ours, baseline, fast, plain = [], [], [], []
    for repeat in range(sizes.repeats):
        progress(f"runs table and bootstrap, repeat {repeat + 1}/{sizes.repeats}")
        with timed() as listed:
            list_runs(listing)
        with timed() as read:
            read_summaries(where)
        ours.append(listed.wall)
        baseline.append(read.wall)
        with timed() as drawn:
            bootstrap.resampled(lambda w: track.resampled_scores(pred, items, w), items["group"], sizes.boot_resamples)
        fast.append(drawn.wall)
        plain.append(plain_seconds(track, pred, items, plain_weights) * sizes.boot_resamples)
    return [
        Row(
            "16",
            f"`just runs` over {sizes.runs_listed} runs (top 20 by score, the settings that differ, the picture)",
            f"{median(ours):.2f} s",
            f"{median(baseline):.2f} s (reading the {sizes.runs_listed} summary rows alone, pyarrow, file by file)",
            median_ratio(baseline, ours),
            ">= 0.5",
            "ours scans every summary row lazily with polars and decodes the configuration of the rows shown only; "
            "the picture (matplotlib, PNG) is most of what it adds",
        ),
        Row(
            "17",
            f"bootstrap interval of {TRACK}'s (SRCC + PLCC) / 2: {sizes.boot_items} items in "
            f"{sizes.boot_items // 5} groups, {sizes.boot_resamples} resamples of groups",
            f"{median(fast):.2f} s",
            f"{median(plain):.1f} s (each resample expanded and scored by selection_score, scipy; timed on "
            f"{PLAIN_RESAMPLES} and charged per resample)",
            median_ratio(plain, fast),
            ">= 10",
            "weighted mid-ranks and moments over blocks of 64 resamples (common.bootstrap), equal to scipy on the "
            "expanded sample (tests/test_bootstrap.py)",
        ),
    ]
