"""Face IQA: ICCV VQualA 2025 face image quality assessment (FIQA).

Team-read (the winner's loader, Efficient-FIQA): the training list `train.csv` has NO header, rows `image_name,score`
with scores about 0-1; a name may lack its extension (the winner appended `.png`); images of any size (short side
224-1024), greyscale and RGBA among them, under `train/`; the validation images under `val/`.
Official: score (SRCC + PLCC) / 2; the submitted model must stay within 0.5 GFLOPs and 5 M parameters, checked by
`just profile track=fiqa` and, loudly, by `just submit track=fiqa`. The test phase ran submitted models on the
organisers' server; the FLOPs are counted at the size the model really runs, since the organisers' is not public,
and as PyTorch counts them (2 per multiply-accumulate): counters such as fvcore call one multiply-accumulate a FLOP,
so a model near the limit should be read against the GMACs column too.
Assumed (ours; keep configurable):
  * a listed name without an image extension is the one file of that stem in `train/` (the winner's `.png` when there
    is none, so extraction reports it missing); two files of that stem are an error;
  * the images to score are every image in `val/`, named by their file name;
  * faces cut from one photo (GFIQA's names `<photo>_<k>`) share a group, so they stay in one fold;
  * submission: `predictions.csv`, header `image_name,score`, plus the four-line NTIRE `readme.txt`; predictions are
    calibrated onto the label scale (neutral if the organisers fit their own logistic before PLCC);
  * organiser-side truth of synthetic data: `truth/truth.csv` in the submission format.
Student demo (`just demo-student track=fiqa`): the winner's recipe on 600 synthetic faces, 80% of the training photos'
labels withheld; the teacher sees native-resolution crops beside the resize (where the distortions live), the student
the resize at 128 pixels.
Default view: the Efficient-FIQA student's input, a short-side resize and centre crop to 352.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from features.inputs import Image
from tracks.base import Budget, CorrelationTrack, StudentDemo, register_track
from tracks.formats import CsvFormat
from tracks.layout import (
    IMAGE_SUFFIXES,
    LayoutError,
    check_split_overlap,
    folder_items,
    list_images,
    media_paths,
    numeric_column,
    require_unique,
)

TRAIN_LIST = "train.csv"
TRAIN_DIR = "train"
TEST_DIR = "val"
ASSUMED_SUFFIX = ".png"  # the winner's loader appends it to names without an extension


def stem(name: str) -> str:
    """The name without its image extension (names may carry dots that are not one)."""
    path = Path(name)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else name


def photo_group(name: str) -> str:
    """`6301417796_1.png` -> `6301417796`: the faces cut from one photo."""
    return re.sub(r"_\d+$", "", stem(name))


def resolve_files(folder: Path, names: pd.Series, source: str) -> list[str]:
    """The file name of each listed name: as written when it has an image extension, else the one file of that stem."""
    by_stem: dict[str, list[str]] = {}
    for path in list_images(folder):
        by_stem.setdefault(path.stem, []).append(path.name)
    files = []
    for line, name in enumerate(names, start=1):
        if Path(name).suffix.lower() in IMAGE_SUFFIXES:
            files.append(name)
            continue
        found = by_stem.get(name, [])
        if len(found) > 1:
            raise LayoutError(
                f"{source}, line {line}: {name!r} matches {', '.join(found)} in {folder}; list it with its extension"
            )
        files.append(found[0] if found else name + ASSUMED_SUFFIX)
    return files


@register_track
class FIQA(CorrelationTrack):
    name = "fiqa"
    title = "ICCV VQualA 2025 face image quality (FIQA)"
    inputs = (Image(),)
    targets = ("score",)
    score_range = (-0.5, 1.5)  # scores are about 0-1
    submission = CsvFormat("predictions.csv", "image_name", ("score",), readme="readme.txt")
    calibrate = "logistic4"
    budget = Budget(flops=0.5e9, params=5e6)
    # Faces come centred: the mirror is a free second view, while the corner windows of a portrait cut the face.
    tta_views = ("center", "hflip")
    smoke = {"items": 30, "width": 64, "height": 80}
    # The head trains for more steps than the spine's default: a few hundred items give few steps per epoch.
    defaults = {"frames": 1, "view": "resize", "size": 352, "items": 200, "epochs": 60, "lr": 3e-3, "batch": 16}
    # select=last: each fold keeps its last epoch, so the teacher's fold-k labels owe nothing to fold k's and every
    # out-of-fold score is honest (README, "Teachers, pseudo-labels and students").
    student_demo = StudentDemo(
        teacher={"view": "resize+native", "select": "last"}, student={"size": 128, "select": "last"}
    )

    def group_of(self, name: str) -> str:
        return photo_group(name)

    def read_items(self, data: Path) -> pd.DataFrame:
        data = Path(data)
        path = data / TRAIN_LIST
        if not path.is_file():
            raise LayoutError(f"{path}: label file not found")
        table = pd.read_csv(path, header=None, dtype={0: str})
        if table.shape[1] != 2:
            raise LayoutError(
                f"{path}: expected two columns and no header (image name, score), found {table.shape[1]} columns"
            )
        table.columns = ["image_name", "score"]
        names = table["image_name"].str.strip()
        require_unique(names, str(path), header=False)
        files = resolve_files(data / TRAIN_DIR, names, str(path))
        train = pd.DataFrame(
            {
                "item_id": names,
                "path": media_paths(data, [f"{TRAIN_DIR}/{file}" for file in files], str(path)),
                "split": "train",
                "score": numeric_column(table, "score", str(path), header=False),
            }
        )
        test = folder_items(data / TEST_DIR)
        check_split_overlap(train["item_id"], test["item_id"], str(data))
        items = pd.concat([train, test], ignore_index=True)  # the test items' scores are NaN
        items["group"] = items["item_id"].map(photo_group)
        return items[["item_id", "path", "split", "group", "score"]]
