"""The report: a PNG that decodes, one 400-pixel panel per target plus the fold bars, and the printed table in
markdown; and a finished run gets one in its folder."""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ensembles.report import markdown, write_report


def test_report_png_and_markdown(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(40)]
    truth = pd.DataFrame(rng.uniform(1, 5, (40, 2)), index=ids, columns=["a", "b"])
    pred = truth + rng.normal(0, 0.3, truth.shape)
    rows = [["fold 0", 0.81, 20], ["fold 1", 0.7, 20], ["a | b", "two\nlines", ""]]
    write_report(tmp_path, "run x", pred, truth, {0: 0.81, 1: 0.7}, 0.75, [("scores", ["", "score", "items"], rows)])
    with Image.open(tmp_path / "report.png") as image:
        image.load()
        assert image.size == (3 * 400, 400)  # two targets and the bars
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # something was drawn
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# run x\n")
    assert "| fold 0 | 0.8100 | 20 |" in text
    assert "| a \\| b | two<br>lines |  |" in text  # a cell never breaks the table


def test_markdown_table_has_a_header_row_per_column():
    lines = markdown("t", ["x", "y"], [[1, 2.5]]).splitlines()
    assert lines == ["### t", "", "| x | y |", "| --- | --- |", "| 1 | 2.5000 |"]


def test_a_finished_run_has_its_report(two_kvq_runs):
    words, runs = two_kvq_runs
    runs_dir = words[1].split("=", 1)[1]
    for run in runs:
        folder = Path(runs_dir) / "kvq" / run
        with Image.open(folder / "report.png") as image:
            assert image.size == (2 * 400, 400)
        assert "| out of fold |" in (folder / "report.md").read_text()
