"""KVQ (NTIRE 2024 short-form UGC video quality): synthetic short videos in the organisers' layout.

Sources of procedural content (synth.video), each with a near-pristine and several processed versions; MOS from the
distortion severity plus a per-source content effect and rater noise. Whole sources go to train or test; the test
truth comes with the organisers' rank-pair sheets.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from common import metrics
from common.atomic import atomic_path, write_text
from synth.dataset import SYNTHESIZERS, TRUTH_DIR
from synth.video import Distortion, distort, encode_mp4, quality, random_distortion, render_source
from tracks.kvq import KVQ, PAIR_FILE, PAIR_SHEETS, SOURCE_MAP, TEST_LIST, TRAIN_LIST

WIDTH, HEIGHT = 320, 240  # px, of the videos unless asked otherwise
VERSIONS_PER_SOURCE = 6
TEST_SOURCE_FRACTION = 0.25
RATER_NOISE = 0.12  # std of the MOS noise, on the 1-5 scale


def _make_source(job: tuple[Path, int, tuple[int, int], list[tuple[str, Distortion]]]) -> None:
    out, source_seed, (width, height), versions = job
    clean = render_source(source_seed, width, height)
    for k, (item_id, distortion) in enumerate(versions):
        frames = distort(clean, distortion, seed=source_seed * 100 + k)
        encode_mp4(frames, out / item_id, crf=distortion.crf)


@SYNTHESIZERS.register(KVQ.name)
def synthesize(out: Path, items: int, seed: int, width: int = 0, height: int = 0, workers: int = 2) -> None:
    """`items` videos of `width` x `height` (0: WIDTH x HEIGHT) in sources of VERSIONS_PER_SOURCE, the two lists,
    the sources map, and truth/ with the test scores and the rank-pair sheets."""
    if items < 2 * VERSIONS_PER_SOURCE:
        raise ValueError(f"items={items}: need at least {2 * VERSIONS_PER_SOURCE} (two sources)")
    out, width, height = Path(out), width or WIDTH, height or HEIGHT
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
            distortion = Distortion() if k == 0 else random_distortion(rng)
            counters[split] += 1
            item_id = f"{split}/{counters[split]:04d}.mp4"
            mos = 1.0 + 4.0 * quality(distortion) + content + rng.normal(0.0, RATER_NOISE)
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
    truth = test[["filename", "score"]].to_csv(index=False, float_format="%.9f")
    write_text(out / TRUTH_DIR / KVQ.truth_file, truth)
    _write_pairs(out / TRUTH_DIR / PAIR_FILE, test, rng)


def _write_pairs(path: Path, test: pd.DataFrame, rng: np.random.Generator, per_sheet: int = 200) -> None:
    """Pairs of test videos as the organisers' sheets: `source` pairs share a source, `nonsource` pairs do not."""
    y = test["score"].to_numpy()
    names = test["filename"].to_numpy()
    sheets = {}
    for sheet, same in zip(PAIR_SHEETS, (False, True), strict=True):
        i, j, rank = metrics.all_pairs(y, test["source"].to_numpy(), same_group=same)
        keep = rng.permutation(len(i))[:per_sheet]
        sheets[sheet] = pd.DataFrame({"video1": names[i[keep]], "video2": names[j[keep]], "rank": rank[keep]})
    with atomic_path(path) as tmp, pd.ExcelWriter(tmp, engine="openpyxl") as writer:
        for sheet, frame in sheets.items():
            frame.to_excel(writer, sheet_name=sheet, index=False)
