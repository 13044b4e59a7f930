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

import numpy as np
import pandas as pd

from common.atomic import write_text
from features.inputs import Image
from synth import image as synth_image
from tracks.base import (
    IMAGE_SUFFIXES,
    WITHHELD_DIR,
    WITHHELD_TRUTH,
    Budget,
    CorrelationTrack,
    CsvFormat,
    LayoutError,
    StudentDemo,
    check_split_overlap,
    folder_items,
    list_images,
    media_path,
    numeric_column,
    register_track,
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
                "path": [media_path(data, f"{TRAIN_DIR}/{file}", str(path)) for file in files],
                "split": "train",
                "score": numeric_column(table, "score", str(path), header=False),
            }
        )
        test = folder_items(data / TEST_DIR)
        check_split_overlap(train["item_id"], test["item_id"], str(data))
        items = pd.concat([train, test], ignore_index=True)  # the test items' scores are NaN
        items["group"] = items["item_id"].map(photo_group)
        return items[["item_id", "path", "split", "group", "score"]]

    def synthesize(self, out: Path, items: int = 200, seed: int = 0, width: int = 0, height: int = 0) -> None:
        synthesize_fiqa(self, Path(out), items, seed, width, height)

    def withhold_labels(self, data: Path, share: float, seed: int) -> Path:
        data, folder = Path(data), Path(data) / WITHHELD_DIR
        if folder.is_dir() and any(folder.iterdir()):
            raise ValueError(f"{folder} already holds media withheld before: synthesize into an empty folder")
        train = self.read_items(data).query("split == 'train'")
        photos = sorted(train["group"].unique())
        count = round(share * len(photos))
        if not 0 < count < len(photos):
            raise ValueError(
                f"withhold={share}: of {len(photos)} training photos it would withhold {count}; some must keep labels"
            )
        withheld = set(np.random.default_rng(seed).choice(photos, count, replace=False))
        moved = train[train["group"].isin(withheld)]
        files = [Path(path) for path in moved["path"]]
        self.write_truth(data, pd.Series(moved["score"].to_numpy(), [f.name for f in files]), WITHHELD_TRUTH)
        listed = pd.read_csv(data / TRAIN_LIST, header=None, dtype={0: str})
        kept = listed[~listed[0].str.strip().map(photo_group).isin(withheld)]
        write_text(data / TRAIN_LIST, kept.to_csv(index=False, header=False, float_format="%.9f"))
        folder.mkdir(exist_ok=True)
        for file in files:  # after the list: a kill in between leaves unlisted files in train/, never a missing one
            file.rename(folder / file.name)
        return folder


# --- the synthetic dataset -------------------------------------------------------------------------------------------

TEST_PHOTO_FRACTION = 0.2
RATER_NOISE = 0.03  # std of the score noise, on the 0-1 scale
MODES = {"RGB": 0.8, "L": 0.1, "RGBA": 0.1}  # of the PNG faces


def synthesize_fiqa(track: FIQA, out: Path, items: int, seed: int, width: int = 0, height: int = 0) -> None:
    """Photos of procedural content, each giving one to three faces: crops of short side 224-512 (or width x height),
    each with its own distortion, stored as PNG (listed without extension; some greyscale, some RGBA) or JPEG
    (listed with it). Scores from the distortion's quality plus a per-photo content effect and rater noise. Whole
    photos go to the training list or to val/."""
    if items < 10:
        raise ValueError(f"items={items}: need at least 10 faces")
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
            distortion = synth_image.random_distortion(rng)
            score = 0.1 + 0.8 * synth_image.quality(distortion) + content + rng.normal(0.0, RATER_NOISE)
            png = rng.random() < 0.7
            name = f"{1_000_000 + photo}_{k}"
            file = name + (".png" if png else ".jpg")
            listed = name if png and split == "train" else file
            mode = str(rng.choice(list(MODES), p=list(MODES.values()))) if png else "RGB"
            box = (int(rng.integers(0, photo_w - w + 1)), int(rng.integers(0, photo_h - h + 1)), w, h)
            path = out / (TEST_DIR if split == "test" else TRAIN_DIR) / file
            versions.append(synth_image.Version(path, distortion, box, mode))
            rows.append({"image_name": listed, "score": float(np.clip(score, 0.0, 1.0)), "split": split})
        sources.append(synth_image.Source(seed * 100_000 + photo, photo_w, photo_h, tuple(versions)))
        made += faces
        photo += 1
    (out / TEST_DIR).mkdir(parents=True, exist_ok=True)
    synth_image.make_sources(sources)
    table = pd.DataFrame(rows)
    train, test = table[table.split == "train"], table[table.split == "test"]
    write_text(out / TRAIN_LIST, train[["image_name", "score"]].to_csv(index=False, header=False, float_format="%.9f"))
    track.write_truth(out, test.set_index("image_name")["score"])


def _face_size(rng: np.random.Generator) -> tuple[int, int]:
    """A face crop with short side 224-512 and a portrait-to-square aspect."""
    short = int(rng.integers(224, 513))
    return short, int(short * rng.uniform(1.0, 1.35))
