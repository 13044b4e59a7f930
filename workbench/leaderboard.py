"""A track's submissions and what the leaderboard said of them: `runs/<track>/submissions.json`.

`just submit` records each zip it writes with its runs and the local out-of-fold score it was chosen on; `just lb`
adds a leaderboard result to one. The file is rewritten whole under a lock and renamed into place, so a second
writer waits and a kill during a write leaves the previous version: nothing recorded is lost. From three submissions
with a result in one phase on, the local scores are set against the leaderboard's: their rank correlation says
whether the local estimate can be trusted to choose what to submit.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from common import metrics
from common.atomic import atomic_path, locked, write_text
from common.tables import Table

LEDGER = "submissions.json"
PHASES = ("val", "test")
PLOT = "leaderboard.png"  # in runs/<track>/: local against leaderboard, one point per submission
AGREEMENT_FROM = 3  # submissions with a result before a rank correlation means anything
REPORT_BEGIN, REPORT_END = "<!-- leaderboard:begin -->", "<!-- leaderboard:end -->"


def ledger_path(runs_dir: str | Path, track: str) -> Path:
    return Path(runs_dir) / track / LEDGER


def read_ledger(runs_dir: str | Path, track: str) -> dict[str, dict]:
    """Submission name -> {zip, runs, local, when, results: [{score, phase, note, when}]}; empty before any."""
    path = ledger_path(runs_dir, track)
    return json.loads(path.read_text()) if path.is_file() else {}


def change_entry(runs_dir: str | Path, track: str, name: str, change: Callable[[dict], dict]) -> dict:
    """Applies `change` to the submission's entry (empty if new) under the ledger's lock; returns the new entry. A
    temporary a killed writer left is removed first: holding the lock, no other writer has one in flight."""
    path = ledger_path(runs_dir, track)
    with locked(path.with_name(f".{LEDGER}.lock")):
        for stale in path.parent.glob(f".{LEDGER}.*.tmp"):
            stale.unlink(missing_ok=True)
        ledger = read_ledger(runs_dir, track)
        ledger[name] = change(dict(ledger.get(name, {})))
        write_text(path, json.dumps(ledger, indent=2, sort_keys=True))
    return ledger[name]


def record_submission(runs_dir: str | Path, track: str, zip_path: Path, runs: list[str], local: float) -> dict:
    """What submit wrote: the zip, the runs it blends and its local (out-of-fold) score; earlier results stay."""
    fields = {"zip": str(zip_path), "runs": runs, "local": local, "when": time.time()}
    return change_entry(runs_dir, track, zip_path.stem, lambda entry: {"results": [], **entry, **fields})


def record_result(runs_dir: str | Path, track: str, name: str, score: float, phase: str, note: str) -> dict:
    if phase not in PHASES:
        raise ValueError(f"phase={phase!r}: expected one of {', '.join(PHASES)}")
    if not math.isfinite(score):
        raise ValueError(f"score={score}: expected the leaderboard's number")
    result = {"score": score, "phase": phase, "note": note, "when": time.time()}
    return change_entry(runs_dir, track, name, lambda entry: {**entry, "results": [*entry.get("results", []), result]})


@dataclass(frozen=True)
class Agreement:
    """Local against leaderboard over the submissions with a result in one phase (the latest result of each)."""

    phase: str
    names: list[str]
    local: np.ndarray
    board: np.ndarray

    @property
    def srcc(self) -> float:
        return metrics.srcc(self.local, self.board) if len(self.names) >= AGREEMENT_FROM else float("nan")


def agreement(ledger: dict[str, dict], phase: str) -> Agreement:
    pairs = [
        (name, entry["local"], results[-1]["score"])
        for name, entry in sorted(ledger.items())
        if entry.get("local") is not None and (results := [r for r in entry.get("results", []) if r["phase"] == phase])
    ]
    names, local, board = zip(*pairs) if pairs else ((), (), ())
    return Agreement(phase, list(names), np.asarray(local, dtype=float), np.asarray(board, dtype=float))


def ledger_table(ledger: dict[str, dict], track: str) -> Table:
    rows = [
        [
            name,
            "\n".join(entry.get("runs") or ["-"]),
            *("-" if value is None else value for value in [entry.get("local"), *(latest(entry, p) for p in PHASES)]),
            "; ".join(r["note"] for r in entry.get("results", []) if r["note"]) or "-",
        ]
        for name, entry in sorted(ledger.items(), key=lambda kv: kv[1].get("when", 0.0))
    ]
    return f"submissions of {track}: local out-of-fold against the leaderboard", [
        "submission", "runs", "local", "leaderboard (val)", "leaderboard (test)", "notes",
    ], rows  # fmt: skip


def latest(entry: dict, phase: str) -> float | None:
    results = [r["score"] for r in entry.get("results", []) if r["phase"] == phase]
    return results[-1] if results else None


def write_agreement_plot(path: Path, found: Agreement, track: str) -> Path:
    figure = Figure(figsize=(5, 4.5))
    axes = figure.subplots()
    axes.scatter(found.local, found.board)
    for name, x, y in zip(found.names, found.local, found.board):
        axes.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel("local (out of fold)")
    axes.set_ylabel(f"leaderboard ({found.phase})")
    axes.set_title(f"{track}: {len(found.names)} submissions, SRCC {found.srcc:.3f}")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path


def update_report(report: Path, entry: dict) -> None:
    """The submission's report gains (or renews) its leaderboard block: local against each result."""
    if not report.is_file():
        return
    lines = [REPORT_BEGIN, "", "| leaderboard | phase | local | note |", "| --- | --- | --- | --- |"]
    local = entry.get("local")
    for result in entry.get("results", []):
        shown = "-" if local is None else f"{local:.4f}"
        lines.append(f"| {result['score']:.4f} | {result['phase']} | {shown} | {result['note'] or '-'} |")
    block = "\n".join([*lines, "", REPORT_END])
    text = report.read_text()
    if REPORT_BEGIN in text:
        text = text[: text.index(REPORT_BEGIN)] + block + text[text.index(REPORT_END) + len(REPORT_END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_text(report, text)
