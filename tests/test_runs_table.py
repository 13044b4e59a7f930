"""`just runs`, `just compare` and `just lb` on runs trained from a tiny cache (conftest.cached_kvq: `size=32` holds
the score, `size=48` noise): intervals over groups, settings that differ, paired comparisons and their refusals,
leaderboard results beside local scores, and a ledger a kill cannot damage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from workbench.cli import main
from workbench.compare import OOF_TABLE, SUMMARY_ROW, list_runs
from workbench.config import RunsConfig
from workbench.leaderboard import AGREEMENT_FROM, PLOT, read_ledger, record_result

TRAIN = ["folds=3", "epochs=3"]


@pytest.fixture(scope="module")
def trained(cached_kvq: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Four runs: the default, its shuffled-label control, an MLP head, and the noise features; submissions of the
    first three."""
    folder = tmp_path_factory.mktemp("runs-table")
    words = [*cached_kvq, f"runs_dir={folder / 'runs'}"]
    variants = {"default": [], "control": ["shuffle_labels=true"], "mlp": ["head=mlp"], "noise": ["size=48"]}
    ids = {}
    for name, own in variants.items():
        chosen = [w for w in words if not (own and w.split("=")[0] == own[0].split("=")[0])]
        assert main(["train", *chosen, *TRAIN, *own]) == 0
        newest = max((folder / "runs" / "kvq").glob(f"*/{SUMMARY_ROW}"), key=lambda p: p.stat().st_mtime)
        ids[name] = newest.parent.name
    out = folder / "submissions"
    for name in ("default", "mlp", "noise"):
        assert main(["submit", cached_kvq[0], words[-1], f"runs={ids[name]}", f"out={out}"]) == 0
    return {"words": words, "ids": ids, "runs": folder / "runs", "out": out}


def runs_words(trained: dict) -> list[str]:
    return ["track=kvq", f"runs_dir={trained['runs']}"]


def test_the_table_shows_intervals_over_groups_and_the_control_lies_clearly_below(trained, capsys, log_console) -> None:
    ids = trained["ids"]
    assert main(["runs", *runs_words(trained)]) == 0
    out = capsys.readouterr().out
    assert all(run in out for run in ids.values()) and "95% interval" in out and "(control)" in out
    listing = list_runs(RunsConfig(track="kvq", runs_dir=str(trained["runs"])))
    title, columns, rows = listing.tables[0]
    assert set(columns[2:5]) == {"size", "head", "shuffle_labels"}  # the settings that differ, and only those
    assert "epochs" not in columns and "lr" not in columns
    by_run = {row[0].split(" ")[0]: row for row in rows}
    scores = [row[columns.index("score")] for row in rows]
    assert scores == sorted(scores, reverse=True)
    intervals = {
        run: tuple(map(float, row[columns.index("95% interval")].split(" to "))) for run, row in by_run.items()
    }
    for run, (low, high) in intervals.items():
        assert low <= by_run[run][columns.index("score")] <= high
    assert intervals[ids["control"]][1] < intervals[ids["default"]][0]
    summary = json.loads((trained["runs"] / "kvq" / ids["default"] / "scores.json").read_text())
    assert summary["interval"] == pytest.approx(intervals[ids["default"]], abs=5e-5)
    assert by_run[ids["default"]][columns.index("submissions")] == f"kvq-{ids['default']}"
    assert listing.plot.is_file() and listing.plot.read_bytes()[:4] == b"\x89PNG"


def test_where_and_sort_pick_the_rows(trained) -> None:
    mlp = list_runs(RunsConfig(track="kvq", runs_dir=str(trained["runs"]), where=("head=mlp",)))
    assert [row[0] for row in mlp.tables[0][2]] == [trained["ids"]["mlp"]]
    assert mlp.notes == ["the runs shown share every setting"]
    newest = list_runs(RunsConfig(track="kvq", runs_dir=str(trained["runs"]), sort="when", top=1))
    assert newest.tables[0][2][0][0] == trained["ids"]["noise"]
    assert main(["runs", *runs_words(trained), "where=head"]) == 2
    assert main(["runs", *runs_words(trained), "where=head=transformer"]) == 2


def test_compare_is_paired_on_the_same_items(trained, capsys, log_console) -> None:
    ids = trained["ids"]
    assert main(["compare", *runs_words(trained), f"runs={ids['noise']},{ids['default']}", "resamples=300"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("│ score"))
    cells = [cell.strip() for cell in row.strip("│").split("│")]
    a, b, difference, interval, wins = float(cells[1]), float(cells[2]), float(cells[3]), cells[4], float(cells[5])
    low, high = (float(x) for x in interval.split(" to "))
    assert difference == pytest.approx(b - a, abs=1e-4) and low <= difference <= high and low > 0 and wins == 1.0


def test_compare_refuses_runs_on_other_folds_or_other_items(trained, tmp_path, capsys) -> None:
    ids, words = trained["ids"], trained["words"]
    assert main(["train", *words, "folds=3", "epochs=2", "seed=1"]) == 0
    other = max((trained["runs"] / "kvq").glob(f"*/{SUMMARY_ROW}"), key=lambda p: p.stat().st_mtime).parent
    assert main(["compare", *runs_words(trained), f"runs={ids['default']},{other.name}"]) == 2
    assert "other folds" in capsys.readouterr().err
    table = other / OOF_TABLE
    pd.read_parquet(table).iloc[1:].to_parquet(table)
    assert main(["compare", *runs_words(trained), f"runs={ids['default']},{other.name}"]) == 2
    assert "different items" in capsys.readouterr().err


def test_leaderboard_results_sit_beside_local_scores_and_from_three_give_a_correlation(trained, capsys) -> None:
    ids, out = trained["ids"], trained["out"]
    common = [*runs_words(trained), f"out={out}"]
    names = [f"kvq-{ids[k]}" for k in ("default", "mlp", "noise")]
    local = {name: entry["local"] for name, entry in read_ledger(trained["runs"], "kvq").items()}
    board = {name: round(local[name] - 0.05, 4) for name in names}  # the leaderboard a little lower, in the same order
    for k, name in enumerate(names):
        assert (
            main(["lb", *common, f"submission={name}", f"score={board[name]}", f"note={'first try' * (k == 0)}"]) == 0
        )
        printed = capsys.readouterr().out
        assert ("SRCC" in printed) == (k + 1 >= AGREEMENT_FROM)
    assert f"SRCC {1.0:.4f}" in printed and str(trained["runs"] / "kvq" / PLOT) in printed
    ledger = read_ledger(trained["runs"], "kvq")
    assert [ledger[n]["results"][-1]["score"] for n in names] == [board[n] for n in names]
    assert ledger[names[0]]["runs"] == [ids["default"]] and np.isfinite(ledger[names[0]]["local"])
    report = (out / names[0] / "report.md").read_text()
    assert f"| {board[names[0]]:.4f} | test | {local[names[0]]:.4f} | first try |" in report
    assert (trained["runs"] / "kvq" / PLOT).read_bytes()[:4] == b"\x89PNG"


def test_lb_refuses_what_it_cannot_record(trained, tmp_path, capsys) -> None:
    common = [*runs_words(trained), f"out={trained['out']}"]
    name = f"kvq-{trained['ids']['default']}"
    assert main(["lb", *common, "submission=nothing-like-it", "score=0.5"]) == 2
    assert "no submission 'nothing-like-it'" in capsys.readouterr().err
    assert main(["lb", *common, f"submission={name}", "score=0.5", "phase=final"]) == 2
    assert main(["lb", *common, f"submission={name}", "score=high"]) == 2
    junk = tmp_path / "junk.zip"
    junk.write_bytes(os.urandom(300))
    assert main(["lb", *common, f"submission={junk}", "score=0.5"]) == 2
    err = capsys.readouterr().err
    assert str(junk) in err and len(err.strip().splitlines()) <= 3


WRITER = """
import sys
from workbench.leaderboard import record_result
runs, count = sys.argv[1], int(sys.argv[2])
for k in range(count):
    record_result(runs, "kvq", "kvq-killed", float(k), "val", "")
    print(k, flush=True)
"""


def test_a_kill_during_ledger_writes_loses_nothing_recorded(tmp_path) -> None:
    record_result(tmp_path, "kvq", "kvq-kept", 0.5, "test", "before")
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "100000"], stdout=subprocess.PIPE, text=True)
    for _ in range(30):  # some writes finished, then a kill wherever the child is
        child.stdout.readline()
    time.sleep(np.random.default_rng().uniform(0, 0.05))
    child.send_signal(signal.SIGKILL)
    child.wait()
    ledger = read_ledger(tmp_path, "kvq")
    written = [r["score"] for r in ledger["kvq-killed"]["results"]]
    assert len(written) >= 30 and written == [float(k) for k in range(len(written))]
    assert ledger["kvq-kept"]["results"][0]["note"] == "before"
    record_result(tmp_path, "kvq", "kvq-kept", 0.6, "test", "after")  # the next write clears what the kill left
    assert not [p for p in (tmp_path / "kvq").iterdir() if p.name.endswith(".tmp")]
    assert [r["note"] for r in read_ledger(tmp_path, "kvq")["kvq-kept"]["results"]] == ["before", "after"]
