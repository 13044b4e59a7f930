"""Tables read whole in a log: where the output is not a terminal (CI, a file, a pipe) they take their natural width,
so no path, header or title is cut at 80 columns; a terminal, or an explicit COLUMNS, keeps its width."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from common.tables import rich_table
from workbench.console import output_console

LONG = "/data/challenge/a_rather_long_folder_name/and_a_longer_one_beneath_it_still/train/0001_source_version.mp4"
TITLE = "failures, the first 20 of 45 (recorded in the cache's failures table; fix or remove these items, then rerun)"
COLUMNS = ["item with a long header", "reason why it failed", "most of one item"]


def rendered(**options) -> str:
    out = io.StringIO()
    output_console(file=out, **options).print(rich_table(TITLE, COLUMNS, [[LONG, "could not decode", 0.5]]))
    return out.getvalue()


def one_line_holds(text: str, *words: str) -> bool:
    return any(all(word in line for word in words) for line in text.splitlines())


def test_a_table_printed_to_a_log_is_laid_out_at_its_natural_width(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    text = rendered()
    assert one_line_holds(text, TITLE) and one_line_holds(text, LONG) and one_line_holds(text, *COLUMNS)


def test_a_terminal_or_columns_keeps_its_width(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert max(map(len, rendered(force_terminal=True, color_system=None, width=80).splitlines())) <= 80
    monkeypatch.setenv("COLUMNS", "80")
    assert max(map(len, rendered().splitlines())) <= 80


def test_a_commands_table_piped_to_a_file_reads_whole(tmp_path):
    cache = tmp_path / "a_rather_long_folder_name_for_a_cache" / "and_another_level_of_folders_beneath_it" / "cache"
    cache.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run(
        [sys.executable, "-m", "workbench", "cache", f"cache={cache}"],
        cwd=Path(__file__).parents[1],
        env=env,
        capture_output=True,  # a pipe, as CI and `> log` give
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    headers = ["track", "key", "settings", "items", "versions", "most of one item", "size", "last read"]
    assert one_line_holds(done.stdout, f"feature caches in {cache}") and one_line_holds(done.stdout, *headers)
