"""`just check` on the organisers' real label files, shipped without their media: exact row counts, every media file
named missing, exit status 3; and with `media=false` nothing is probed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracks import get_track
from workbench import check
from workbench.cli import EXIT_FAILURES, main

REFERENCE = Path(__file__).parents[2] / "shared" / "reference"
COUNTS = {"kvq": (2926, 854), "xgc_ugc": (4190, 1047)}  # the lists' rows: train, test


@pytest.mark.parametrize("name", COUNTS)
def test_the_real_label_files_are_counted_and_their_media_named_missing(name, capsys):
    if not (REFERENCE / name).is_dir():
        pytest.skip(f"{REFERENCE / name} is not on this machine")
    train, test = COUNTS[name]
    report = check.check(get_track(name), REFERENCE / name)
    facts = dict(report.facts)
    assert facts["items"] == f"{train + test}: {train} train, {test} test"
    assert report.problems == [f"{train + test} video file(s) missing: " + report.problems[0].split(": ", 1)[1]]
    assert report.assumptions and report.assumptions[0].lower().startswith(("assumed", "ours"))
    assert main(["check", f"track={name}", f"data={REFERENCE / name}"]) == EXIT_FAILURES
    assert "missing" in capsys.readouterr().out
    assert check.check(get_track(name), REFERENCE / name, media=False).problems == []


def test_xgc_ugc_reads_six_dimensions_and_the_test_placeholders_as_unlabelled():
    if not (REFERENCE / "xgc_ugc").is_dir():
        pytest.skip("no reference files on this machine")
    items = get_track("xgc_ugc").read_items(REFERENCE / "xgc_ugc")
    train = items[items.split == "train"]
    assert train.iloc[0][["item_id", "color", "overall"]].tolist() == ["1.mp4", 41.1789, 29.6429]
    assert items[items.split == "test"]["overall"].isna().all()
    assert (train["noise"] < 0).any()  # scores may fall below 0, and are read as they are


def test_a_layout_error_is_the_report(tmp_path):
    report = check.check(get_track("xgc_ugc"), tmp_path)
    assert report.problems == [f"{tmp_path / 'train.txt'}: label file not found"] and not report.facts
