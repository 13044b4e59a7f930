"""The UHD-IQA track: the shipped metadata (real rows), the image folders, the synthetic layout, and the score with
its absolute errors."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import kendalltau, pearsonr, spearmanr

from synth import synthesize
from synth.dataset import TRUTH_DIR
from tracks import LayoutError, get_track
from tracks.uhd_iqa import METADATA, METADATA_COLUMNS

FIXTURE = Path(__file__).parent / "fixtures" / "uhd_iqa"


@pytest.fixture
def uhd():
    return get_track("uhd_iqa")


def layout(root: Path, metadata: str | None = None, validation=("9001.jpg", "9000.jpg")) -> Path:
    if metadata is None:
        shutil.copy(FIXTURE / METADATA, root / METADATA)
    else:
        (root / METADATA).write_text(metadata)
    folder = root / "challenge" / "validation"
    folder.mkdir(parents=True)
    for name in validation:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / name)
    return root


def test_reads_the_shipped_metadata(uhd, tmp_path):
    items = uhd.read_items(layout(tmp_path))
    assert list(items.columns) == ["item_id", "path", "split", "group", "quality_mos"]
    train = items[items.split == "train"]
    assert train["item_id"].tolist() == ["1.jpg", "2.jpg", "3.jpg", "5.jpg", "6.jpg", "7.jpg"]
    assert train["quality_mos"].tolist() == pytest.approx([0.76, 0.7585, 0.768, 0.7055, 0.7455, 0.78])
    assert train["path"].iloc[0] == str((tmp_path / "challenge" / "training" / "1.jpg").resolve())
    assert (items["group"] == items["item_id"]).all()  # every image its own group
    test = items[items.split == "test"]
    assert test["item_id"].tolist() == ["9000.jpg", "9001.jpg"] and test["quality_mos"].isna().all()


HEADER = ",".join(f'"{c}"' for c in METADATA_COLUMNS)


@pytest.mark.parametrize(
    ("metadata", "validation", "message"),
    [
        ('"image_name","mos"\n"1.jpg",0.5\n', ("9.jpg",), "missing column(s) quality_mos"),
        (HEADER + '\n"1.jpg",high,"training"' + ",0" * 8 + ',"u","x"\n', ("9.jpg",), "line 2: quality_mos='high'"),
        (HEADER + '\n"1.jpg",0.7\n"1.jpg",0.6\n', ("9.jpg",), "'1.jpg' appears more than once (lines [2, 3])"),
        (HEADER + '\n"1.jpg",0.7\n', ("1.jpg",), "in both the training and the test list, e.g. '1.jpg'"),
        (HEADER + '\n"../../../1.jpg",0.7\n', ("9.jpg",), "points outside the data folder"),
    ],
)
def test_layout_errors_name_the_file_and_row(uhd, tmp_path, metadata, validation, message):
    with pytest.raises(LayoutError, match=re.escape(message)):
        uhd.read_items(layout(tmp_path, metadata, validation))


def test_missing_files_are_named(uhd, tmp_path):
    with pytest.raises(LayoutError, match=f"{METADATA}: label file not found"):
        uhd.read_items(tmp_path)
    shutil.copy(FIXTURE / METADATA, tmp_path / METADATA)
    items = uhd.read_items(tmp_path)  # the test images not downloaded yet: the training data alone
    assert (items["split"] == "train").all() and len(items)


def test_synthetic_layout_matches_the_shipped_one(uhd, tmp_path):
    synthesize(uhd, tmp_path, items=12, seed=2, width=384)
    shipped = (FIXTURE / METADATA).read_text().splitlines()
    written = (tmp_path / METADATA).read_text().splitlines()
    assert written[0] == shipped[0]  # the same header, quoted the same way
    metadata = pd.read_csv(tmp_path / METADATA)
    assert len(metadata) == 9 and (metadata["set"] == "training").all()
    assert metadata["quality_mos"].between(0, 1).all() and metadata["quality_mos"].std() > 0.02
    assert (metadata["orig_width"] >= 384).all()
    items = uhd.read_items(tmp_path)
    sizes = {Image.open(p).size for p in items["path"]}
    assert {w for w, _ in sizes} == {384} and all(h < w for w, h in sizes)
    assert all(Image.open(p).format == "JPEG" for p in items["path"])
    train_files = items.loc[items.split == "train", "path"]
    assert metadata["image_bytes"].tolist() == [Path(p).stat().st_size for p in train_files]
    rows = list(csv.reader((tmp_path / TRUTH_DIR / uhd.truth_file).open()))
    assert rows[0] == ["image_name", "quality_mos"]
    assert sorted(r[0] for r in rows[1:]) == sorted(items.loc[items.split == "test", "item_id"])


def test_scores_report_correlations_and_absolute_errors(uhd):
    truth = np.array([0.61, 0.72, 0.70, 0.81, 0.66, 0.75])
    pred = np.array([0.60, 0.70, 0.74, 0.79, 0.62, 0.71])
    items = pd.DataFrame({"item_id": [f"{k}.jpg" for k in range(6)], "quality_mos": truth})
    parts = uhd.selection_score(pd.DataFrame({"quality_mos": pred}, index=items["item_id"]), items)
    srcc, plcc = spearmanr(pred, truth)[0], pearsonr(pred, truth)[0]
    assert parts["score"] == pytest.approx((srcc + plcc) / 2)
    assert parts["krcc"] == pytest.approx(kendalltau(pred, truth)[0])
    assert parts["rmse"] == pytest.approx(np.sqrt(np.mean((pred - truth) ** 2)))
    assert parts["mae"] == pytest.approx(np.mean(np.abs(pred - truth)))
