"""`just bench quick=true` (`python -m benchmarks`) runs end to end and prints every row. No timing is asserted here
or anywhere: the machine is shared, and the suite's own ratios are what `just bench` is for."""

from __future__ import annotations

import benchmarks
from benchmarks import harness

# The quick suite's code paths on even less work, so the test suite stays fast.
SMOKE = harness.Sizes(
    resolutions=((128, 72), (192, 108)), clips=1, extraction_items=2, seconds=2, fps=8, repeats=1,
    cache_items=40, cache_frames=2, cache_dim=16, train_items=60, train_dim=8, folds=3, epochs=1,
    memory_items=(2, 4), trials=1, trial_folds=2, long_seconds=3, texts=16, image=(384, 216), tune_items=12,
    lmm_items=4, lmm_hidden=64, lmm_layers=1, lmm_frames=2, lmm_side=56, runs_listed=12, boot_items=300,
    boot_resamples=64,
)  # fmt: skip
EVERY_ROW = [
    "1", "1", "2", "2", "3", "3", "4", "5", "6", "6", "7", "7", "7", "8", "8", "9", "10", "10", "11", "12", "13", "14",
    "15", "15", "16", "17", "18", "18",
]  # fmt: skip


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith(("| #", "| ---"))]


def test_bench_quick_prints_every_row_and_updates_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(harness.SIZES, "quick", SMOKE)
    report = tmp_path / "BENCHMARKS.md"
    report.write_text(
        f"# Benchmarks\n\nwritten above\n\n{harness.BEGIN}\nan older run\n{harness.END}\n\nwritten below\n"
    )
    words = ["quick=true", "backbone=test_resnet", f"root={tmp_path / 'bench'}", f"write={report}"]

    assert harness.main(words) == 0

    rows = table_rows(capsys.readouterr().out)
    assert [row.split("|")[1].strip() for row in rows] == EVERY_ROW
    assert all(len(row.split("|")) == 9 for row in rows)  # what, ours, reference, ratio, target, met: all filled
    text = report.read_text()
    assert table_rows(text) == rows
    assert "written above" in text and "written below" in text and "an older run" not in text
    assert "just bench quick=True backbone=test_resnet" in text and "cores" in text


def test_unknown_row_groups_are_usage_errors(tmp_path, capsys):
    assert harness.main(["rows=cache,speed", f"root={tmp_path}"]) == 2
    assert "rows=speed" in capsys.readouterr().err


def test_the_package_docstring_names_every_row_group():
    assert all(f"`{name}`" in benchmarks.__doc__ for name in harness.GROUPS)
