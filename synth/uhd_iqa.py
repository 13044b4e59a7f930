"""UHD-IQA (ECCV AIM 2024): synthetic 4K JPEGs and their metadata in the organisers' layout.

Every image its own procedural content (synth.image; no two share a source, as in the real set) with a random
distortion; MOS from the distortion's quality plus a content effect and rater noise, on the real set's 0.55-0.85
range.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from common.atomic import write_text
from synth.dataset import SYNTHESIZERS, write_truth
from synth.image import ImageDistortion, Source, Version, make_sources, quality, random_distortion
from tracks.uhd_iqa import METADATA, METADATA_COLUMNS, TEST_DIR, TRAIN_DIR, UHDIQA

WIDTH = 3840  # px, of the distributed images unless asked otherwise
TEST_FRACTION = 0.25
ASPECTS = (16 / 9, 3 / 2, 4 / 3)  # of the distributed images, all 3840 wide
RATER_NOISE = 0.012  # std of the MOS noise, on the 0-1 scale


@SYNTHESIZERS.register(UHDIQA.name)
def synthesize(out: Path, items: int, seed: int, width: int = 0, height: int = 0) -> None:
    """`items` images `width` wide (0: WIDTH) and `height` high (0: one of ASPECTS each), the training metadata,
    the validation folder and truth/."""
    if items < 8:
        raise ValueError(f"items={items}: need at least 8 images")
    out, width = Path(out), width or WIDTH
    rng = np.random.default_rng(seed)
    n_test = max(2, round(items * TEST_FRACTION))
    rows, sources = [], []
    for index in range(items):
        split = "test" if index >= items - n_test else "train"
        image_height = height or round(width / ASPECTS[rng.integers(len(ASPECTS))])
        distortion = ImageDistortion() if rng.random() < 0.15 else random_distortion(rng)
        mos = 0.55 + 0.3 * quality(distortion) + rng.uniform(-0.03, 0.03) + rng.normal(0.0, RATER_NOISE)
        name = f"{index + 1}.jpg"
        path = out / (TEST_DIR if split == "test" else TRAIN_DIR) / name
        mos = float(np.clip(mos, 0.0, 1.0))
        rows.append({"image_name": name, "quality_mos": mos, "split": split, "path": path, "height": image_height})
        sources.append(Source(seed * 100_000 + index, width, image_height, (Version(path, distortion),)))
    make_sources(sources)

    table = pd.DataFrame(rows)
    train, test = table[table.split == "train"], table[table.split == "test"]
    upscale = rng.uniform(1.0, 1.6, size=len(train))  # the Pixabay originals were larger than the 3840 px shipped
    metadata = pd.DataFrame(
        {
            "image_name": train["image_name"],
            "quality_mos": train["quality_mos"].round(4),
            "set": "training",
            "orig_width": np.round(width * upscale).astype(int),
            "orig_height": np.round(train["height"].to_numpy() * upscale).astype(int),
            "views": rng.integers(1_000, 200_000, size=len(train)),
            "likes": rng.integers(0, 600, size=len(train)),
            "favorites": rng.integers(0, 500, size=len(train)),
            "downloads": rng.integers(500, 60_000, size=len(train)),
            "comments": rng.integers(0, 100, size=len(train)),
            "image_bytes": [p.stat().st_size for p in train["path"]],
            "user_name": [f"synthetic-user-{k}" for k in rng.integers(0, 12, size=len(train))],
            "page_url": [f"https://example.invalid/photos/synthetic-{name}" for name in train["image_name"]],
        }
    )
    write_text(out / METADATA, metadata[list(METADATA_COLUMNS)].to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC))
    write_truth(UHDIQA(), out, test.set_index("image_name")["quality_mos"])
