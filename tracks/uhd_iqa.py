"""UHD-IQA: ECCV AIM 2024 ultra-high-definition image quality (4K JPEGs, 3840 px wide).

Official (organisers' files, paper): `uhd-iqa-training-metadata.csv` with the columns of METADATA_COLUMNS, one row per
training image, MOS `quality_mos` on a 0-1 scale (about 0.59-0.84); images under `challenge/training/<image_name>`
(the winner's loader). Budget: 50 GMACs per image. The ranking combines SRCC, PLCC, KRCC, RMSE, MAE and GMACs by a
formula that is not public.
Assumed (ours; keep configurable):
  * selection and local official score (SRCC + PLCC) / 2, with KRCC, RMSE and MAE reported beside it; predictions are
    calibrated onto the MOS scale (a logistic fitted out of fold), since RMSE and MAE are absolute;
  * the images to score are every image in `challenge/validation/`;
  * submission: `predictions.csv` with header `image_name,quality_mos`, plus the four-line NTIRE `readme.txt`
    (runtime per image, CPU[1]/GPU[0], extra data, description); the organisers' format is not public;
  * every image is its own group: the organisers' split and the winner's were random over images;
  * organiser-side truth of synthetic data: `truth/truth.csv` in the submission format.
Default views, after the winner (UIQA): an aesthetic view of the whole image, fragments of 15 x 15 native 32-px
patches (480 px), a native 480 centre crop, and a salient 480 crop chosen by spectral-residual saliency where the
winner's released code used a plain centre crop.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.inputs import Image
from tracks.base import Budget, CorrelationTrack, register_track
from tracks.formats import CsvFormat
from tracks.layout import (
    LayoutError,
    check_split_overlap,
    folder_items,
    media_paths,
    numeric_column,
    require_columns,
    require_unique,
)

METADATA = "uhd-iqa-training-metadata.csv"
TRAIN_DIR = Path("challenge/training")
TEST_DIR = Path("challenge/validation")
METADATA_COLUMNS = (
    "image_name", "quality_mos", "set", "orig_width", "orig_height", "views", "likes", "favorites", "downloads",
    "comments", "image_bytes", "user_name", "page_url",
)  # fmt: skip


@register_track
class UHDIQA(CorrelationTrack):
    name = "uhd_iqa"
    title = "ECCV AIM 2024 UHD-IQA (4K image quality)"
    inputs = (Image(),)
    targets = ("quality_mos",)
    score_range = (-0.5, 1.5)  # MOS is on 0-1
    submission = CsvFormat("predictions.csv", "image_name", ("quality_mos",), readme="readme.txt")
    calibrate = "logistic4"
    budget = Budget(macs=50e9)
    smoke = {"items": 12, "width": 384, "height": 0}
    # Each family takes its own: aesthetic and salient the image and its mirror, native also the windows at two
    # opposite corners (detail away from the centre), fragments four seeded draws; paired by index, four views.
    tta_views = ("center", "hflip", "tl", "br", "s0", "s1", "s2", "s3")
    defaults = {
        "frames": 1,
        "view": "aesthetic+fragments+native+salient",
        "size": 480,
        "grid": 15,
        "patch": 32,
        "items": 60,
        "epochs": 60,  # more steps than the spine's default: a few hundred training rows give few per epoch
        "lr": 3e-3,
        "batch": 16,
    }

    def read_items(self, data: Path) -> pd.DataFrame:
        data = Path(data)
        path = data / METADATA
        if not path.is_file():
            raise LayoutError(f"{path}: label file not found")
        table = pd.read_csv(path, dtype={"image_name": str})
        require_columns(table, ("image_name", "quality_mos"), str(path))
        require_unique(table["image_name"], str(path))
        mos = numeric_column(table, "quality_mos", str(path))
        train = pd.DataFrame({"item_id": table["image_name"], "split": "train", "quality_mos": mos})
        train["path"] = media_paths(data, [str(TRAIN_DIR / name) for name in train["item_id"]], str(path))
        test = folder_items(data / TEST_DIR)
        check_split_overlap(train["item_id"], test["item_id"], str(data))
        items = pd.concat([train, test], ignore_index=True)  # the test items' scores are NaN
        items["group"] = items["item_id"]
        return items[["item_id", "path", "split", "group", "quality_mos"]]
