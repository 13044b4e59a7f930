"""`just check` on the organisers' real label files, shipped without their media: exact row counts, every media file
named missing, exit status 3; and with `media=false` nothing is probed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracks import get_track
from workbench import check
from workbench.cli import main
from workbench.console import EXIT_FAILURES

REFERENCE = Path(__file__).parents[2] / "shared" / "reference"
# The lists' rows (train, test) and the media kind; UHD-IQA ships its test set as a folder of images, absent here.
COUNTS = {"kvq": (2926, 854, "video"), "xgc_ugc": (4190, 1047, "video"), "uhd_iqa": (4269, 0, "image")}


@pytest.mark.parametrize("name", COUNTS)
def test_the_real_label_files_are_counted_and_their_media_named_missing(name, capsys):
    if not (REFERENCE / name).is_dir():
        pytest.skip(f"{REFERENCE / name} is not on this machine")
    train, test, kind = COUNTS[name]
    report = check.check(get_track(name), REFERENCE / name)
    facts = dict(report.facts)
    assert facts["items"] == f"{train + test}: {train} train" + (f", {test} test" if test else "")
    missing = [p for p in report.problems if p.startswith(f"{train + test} {kind} file(s) missing: ")]
    assert len(missing) == 1 and report.problems == (["no test items"] if not test else []) + missing
    assert report.assumptions and report.assumptions[0].lower().startswith(("assumed", "ours"))
    assert main(["check", f"track={name}", f"data={REFERENCE / name}"]) == EXIT_FAILURES
    assert "missing" in capsys.readouterr().out
    assert check.check(get_track(name), REFERENCE / name, media=False).problems == report.problems[:-1]


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


def test_an_xgc_ugc_label_that_is_no_number_is_named_by_its_line_and_an_empty_one_is_unlabelled(tmp_path):
    rows = ["1.mp4\t40\t41\t42\t43\t44\t45", "2.mp4\t\t41\t42\t43\t44\t45"]
    (tmp_path / "train.txt").write_text("\n".join(rows))
    (tmp_path / "test.txt").write_text("3.mp4,-1,-1,-1\r\n")
    items = get_track("xgc_ugc").read_items(tmp_path)
    assert items["color"].isna().tolist() == [False, True, True] and items.loc[0, "overall"] == 45.0
    (tmp_path / "train.txt").write_text("\n".join([*rows, "4.mp4\t40\tgood\t42\t43\t44\t45"]))
    report = check.check(get_track("xgc_ugc"), tmp_path)
    assert report.problems == [f"{tmp_path / 'train.txt'}, line 3: noise='good' is not a finite number (1 such row(s))"]
