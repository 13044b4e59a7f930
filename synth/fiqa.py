"""FIQA (ICCV VQualA 2025 face image quality): synthetic faces in the organisers' layout, and the labels the student
demo withholds from them.

Photos of procedural content (synth.image), each giving one to three faces: crops of short side 224-512 (or width x
height), each with its own distortion, stored as PNG (listed without extension; some greyscale, some RGBA) or JPEG
(listed with it). Scores from the distortion's quality plus a per-photo content effect and rater noise. Whole photos
go to the training list or to val/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common.atomic import write_text
from synth.dataset import SYNTHESIZERS, WITHHELD_DIR, WITHHELD_TRUTH, WITHHOLDERS, write_truth
from synth.image import Source, Version, make_sources, quality, random_distortion
from tracks.fiqa import FIQA, TEST_DIR, TRAIN_DIR, TRAIN_LIST, photo_group

TEST_PHOTO_FRACTION = 0.2
RATER_NOISE = 0.03  # std of the score noise, on the 0-1 scale
MODES = {"RGB": 0.8, "L": 0.1, "RGBA": 0.1}  # of the PNG faces


@SYNTHESIZERS.register(FIQA.name)
def synthesize(out: Path, items: int, seed: int, width: int = 0, height: int = 0) -> None:
    """`items` faces of `width` x `height` (0: each its own size), the headerless training list, val/ and truth/."""
    if items < 10:
        raise ValueError(f"items={items}: need at least 10 faces")
    out = Path(out)
    rng = np.random.default_rng(seed)
    rows, sources, made, photo = [], [], 0, 0
    while made < items:
        faces = min(int(rng.integers(1, 4)), items - made)
        sizes = [(width, height) if width and height else _face_size(rng) for _ in range(faces)]
        photo_w, photo_h = 2 * max(w for w, _ in sizes), 2 * max(h for _, h in sizes)
        split = "test" if rng.random() < TEST_PHOTO_FRACTION else "train"
        content = rng.uniform(-0.05, 0.05)
        versions = []
        for k, (w, h) in enumerate(sizes):
            distortion = random_distortion(rng)
            score = 0.1 + 0.8 * quality(distortion) + content + rng.normal(0.0, RATER_NOISE)
            png = rng.random() < 0.7
            name = f"{1_000_000 + photo}_{k}"
            file = name + (".png" if png else ".jpg")
            listed = name if png and split == "train" else file
            mode = str(rng.choice(list(MODES), p=list(MODES.values()))) if png else "RGB"
            box = (int(rng.integers(0, photo_w - w + 1)), int(rng.integers(0, photo_h - h + 1)), w, h)
            path = out / (TEST_DIR if split == "test" else TRAIN_DIR) / file
            versions.append(Version(path, distortion, box, mode))
            rows.append({"image_name": listed, "score": float(np.clip(score, 0.0, 1.0)), "split": split})
        sources.append(Source(seed * 100_000 + photo, photo_w, photo_h, tuple(versions)))
        made += faces
        photo += 1
    (out / TEST_DIR).mkdir(parents=True, exist_ok=True)
    make_sources(sources)
    table = pd.DataFrame(rows)
    train, test = table[table.split == "train"], table[table.split == "test"]
    write_text(out / TRAIN_LIST, train[["image_name", "score"]].to_csv(index=False, header=False, float_format="%.9f"))
    write_truth(FIQA(), out, test.set_index("image_name")["score"])


def _face_size(rng: np.random.Generator) -> tuple[int, int]:
    """A face crop with short side 224-512 and a portrait-to-square aspect."""
    short = int(rng.integers(224, 513))
    return short, int(short * rng.uniform(1.0, 1.35))


@WITHHOLDERS.register(FIQA.name)
def withhold_labels(track: FIQA, data: Path, share: float, seed: int) -> Path:
    """Whole photos out of the training list (synth.withhold_labels): the list is rewritten before any file moves."""
    folder = data / WITHHELD_DIR
    if folder.is_dir() and any(folder.iterdir()):
        raise ValueError(f"{folder} already holds media withheld before: synthesize into an empty folder")
    train = track.read_items(data).query("split == 'train'")
    photos = sorted(train["group"].unique())
    count = round(share * len(photos))
    if not 0 < count < len(photos):
        raise ValueError(
            f"withhold={share}: of {len(photos)} training photos it would withhold {count}; some must keep labels"
        )
    withheld = set(np.random.default_rng(seed).choice(photos, count, replace=False))
    moved = train[train["group"].isin(withheld)]
    files = [Path(path) for path in moved["path"]]
    write_truth(track, data, pd.Series(moved["score"].to_numpy(), [f.name for f in files]), WITHHELD_TRUTH)
    listed = pd.read_csv(data / TRAIN_LIST, header=None, dtype={0: str})
    kept = listed[~listed[0].str.strip().map(photo_group).isin(withheld)]
    write_text(data / TRAIN_LIST, kept.to_csv(index=False, header=False, float_format="%.9f"))
    folder.mkdir(exist_ok=True)
    for file in files:  # after the list: a kill in between leaves unlisted files in train/, never a missing one
        file.rename(folder / file.name)
    return folder
