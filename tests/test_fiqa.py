"""The face IQA track: the headerless, extension-less training list (names in GFIQA's style), the folders, the
groups of faces cut from one photo, the synthetic layout with greyscale and RGBA images, and the score."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import pearsonr, spearmanr

from synth import synthesize, withhold_labels
from synth.dataset import TRUTH_DIR, WITHHELD_TRUTH, write_truth
from tracks import LayoutError, get_track
from tracks.unlabelled import unlabelled_items

FIXTURE = Path(__file__).parent / "fixtures" / "fiqa"


@pytest.fixture
def fiqa():
    return get_track("fiqa")


def save(path: Path, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 32, 3), 100, np.uint8)).convert(mode).save(path)


def layout(root: Path, train_files=(), val_files=("a.png", "b.jpg")) -> Path:
    shutil.copy(FIXTURE / "train.csv", root / "train.csv")
    for name in train_files:
        save(root / "train" / name)
    for name in val_files:
        save(root / "val" / name)
    return root


def test_reads_the_headerless_list_and_resolves_extensions(fiqa, tmp_path):
    # 6301417796_1 has no file: the winner's `.png` stands in, and extraction will report it missing.
    files = ["2574649421_1.png", "5202595380_0.jpg", "4177734028_0.png", "4177734028_1.png", "10359803275_0.jpg"]
    data = layout(tmp_path, files)
    items = fiqa.read_items(data)
    assert list(items.columns) == ["item_id", "path", "split", "group", "score"]
    train = items[items.split == "train"].set_index("item_id")
    assert list(train.index) == pd.read_csv(FIXTURE / "train.csv", header=None)[0].tolist()  # the list's own names
    assert train.loc["6301417796_1", "score"] == pytest.approx(0.2763112762896669)
    files = train["path"].map(lambda p: Path(p).name)
    assert files.to_dict() == {
        "6301417796_1": "6301417796_1.png",
        "2574649421_1.png": "2574649421_1.png",
        "5202595380_0": "5202595380_0.jpg",  # found by its stem
        "4177734028_0": "4177734028_0.png",
        "4177734028_1": "4177734028_1.png",
        "10359803275_0.jpg": "10359803275_0.jpg",
    }
    assert train.loc["4177734028_0", "group"] == train.loc["4177734028_1", "group"] == "4177734028"
    assert train["group"].nunique() == 5
    test = items[items.split == "test"]
    assert test["item_id"].tolist() == ["a.png", "b.jpg"] and test["score"].isna().all()
    assert test["path"].iloc[0] == str((data / "val" / "a.png").resolve())


@pytest.mark.parametrize(
    ("rows", "files", "message"),
    [
        ("image_name,score\na,0.5\n", ["a.png"], r"train.csv, line 1: score='score' is not a finite number"),
        ("a,0.5,extra\n", ["a.png"], "expected two columns and no header"),
        ("a,0.5\nb,0.2\na,0.3\n", ["a.png", "b.png"], r"'a' appears more than once \(lines \[1, 3\]\)"),
        ("a,0.5\nb,0.2\n", ["a.png", "b.png", "b.jpg"], r"train.csv, line 2: 'b' matches b.jpg, b.png"),
    ],
)
def test_layout_errors_name_the_line(fiqa, tmp_path, rows, files, message):
    (tmp_path / "train.csv").write_text(rows)
    for name in files:
        save(tmp_path / "train" / name)
    save(tmp_path / "val" / "x.png")
    with pytest.raises(LayoutError, match=message):
        fiqa.read_items(tmp_path)


def test_missing_folders_are_named(fiqa, tmp_path):
    layout(tmp_path, ["a.png"], val_files=())
    assert set(fiqa.read_items(tmp_path)["split"]) == {"train"}  # no test folder yet: no test items
    (tmp_path / "train").rename(tmp_path / "elsewhere")
    with pytest.raises(LayoutError, match=r"train: image folder not found"):
        fiqa.read_items(tmp_path)


def test_synthetic_layout(fiqa, tmp_path):
    synthesize(fiqa, tmp_path, items=40, seed=1, width=72, height=96)
    items = fiqa.read_items(tmp_path)
    lines = (tmp_path / "train.csv").read_text().splitlines()
    names = [line.split(",")[0] for line in lines]
    assert not lines[0].startswith("image_name")  # no header
    assert any("." not in n for n in names) and any(n.endswith(".jpg") for n in names)
    assert items["path"].map(lambda p: Path(p).is_file()).all()
    modes = {Image.open(p).mode for p in items["path"]}
    assert {"RGB", "L", "RGBA"} <= modes
    assert {Image.open(p).size for p in items["path"]} == {(72, 96)}
    train = items[items.split == "train"]
    assert train["score"].between(0, 1).all() and train["score"].std() > 0.1
    assert train["group"].nunique() < len(train)  # faces of one photo share a group
    test_groups = set(items.loc[items.split == "test", "group"])
    assert not test_groups & set(train["group"])  # whole photos go to one split
    truth = pd.read_csv(tmp_path / TRUTH_DIR / fiqa.truth_file)
    assert list(truth.columns) == ["image_name", "score"]
    assert sorted(truth["image_name"]) == sorted(items.loc[items.split == "test", "item_id"])


def test_withholding_labels_moves_whole_photos_out_of_the_list_and_keeps_their_truth(fiqa, tmp_path):
    synthesize(fiqa, tmp_path, items=40, seed=1, width=72, height=96)
    before = fiqa.read_items(tmp_path).query("split == 'train'")
    folder = withhold_labels(fiqa, tmp_path, 0.5, seed=3)
    after = fiqa.read_items(tmp_path).query("split == 'train'")
    unlabelled = unlabelled_items(fiqa, folder.name, tmp_path)
    photos = before["group"].nunique()
    assert after["group"].nunique() == photos - round(photos / 2)
    assert not set(unlabelled["group"]) & set(after["group"])  # a photo is labelled or withheld, never both
    assert len(after) + len(unlabelled) == len(before)
    withheld = pd.read_csv(tmp_path / TRUTH_DIR / WITHHELD_TRUTH).set_index("image_name")["score"]
    assert sorted(withheld.index) == sorted(p.name for p in folder.iterdir())
    originals = before.set_index(before["path"].map(lambda p: Path(p).name))["score"]
    np.testing.assert_allclose(withheld.to_numpy(), originals.loc[withheld.index].to_numpy(), atol=1e-9)
    with pytest.raises(ValueError, match="already holds media withheld before"):
        withhold_labels(fiqa, tmp_path, 0.5, seed=3)
    shutil.rmtree(folder)
    with pytest.raises(ValueError, match="some must keep labels"):
        withhold_labels(fiqa, tmp_path, 1.0, seed=3)


def test_official_score_is_the_mean_of_srcc_and_plcc(fiqa, tmp_path):
    truth = pd.Series([0.1, 0.5, 0.3, 0.9, 0.7], index=[f"{k}.png" for k in range(5)])
    write_truth(fiqa, tmp_path, truth)
    values = pd.Series([0.2, 0.4, 0.45, 0.8, 0.5], index=truth.index)
    pred = values.iloc[::-1].to_frame("score")  # any order: rows are matched by id
    parts = fiqa.official_score(pred, tmp_path / TRUTH_DIR)
    srcc, plcc = spearmanr(values, truth)[0], pearsonr(values, truth)[0]
    assert parts["score"] == pytest.approx((srcc + plcc) / 2)
    assert parts["rmse"] == pytest.approx(np.sqrt(np.mean((values - truth) ** 2)))
    fewer = fiqa.official_score(pred.iloc[:4], tmp_path / TRUTH_DIR)  # a phase's predictions beside a fuller truth
    assert fewer["items"] == 4 and fewer["note"].startswith("1 truth item(s) without a prediction")
    with pytest.raises(LayoutError, match="none of its 5 items has a prediction"):
        fiqa.official_score(pred.rename(index=lambda name: "x" + name), tmp_path / TRUTH_DIR)
