"""A sweep worker killed by SIGKILL mid-trial: its trial stops beating, the next worker to start a trial marks it FAIL
and the study goes on, over every storage (on the journal through our file heartbeats; Optuna 5.0 has none there)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from optuna.trial import TrialState

from workbench.cli import main

ROOT = Path(__file__).parents[1]
LONG = "epochs=24"  # long enough folds that the kill lands inside the trial, between two of its folds


def test_a_killed_worker_s_trial_is_failed_and_the_study_goes_on(study, tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-m", "workbench", *study.sweep(1, LONG)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs = tmp_path / "runs" / "kvq"
    try:
        deadline = time.monotonic() + 300  # a guard against a hung child, not a timing check
        while not list(runs.glob("*/fold-0/score.json")):
            assert child.poll() is None, "the worker ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (killed,) = study.load().trials
    assert killed.state == TrialState.RUNNING, "the kill must land mid-trial"
    time.sleep(3)  # the killed trial's last heartbeat is now older than the grace period (twice heartbeat=1)

    assert main(study.sweep(2, LONG)) == 0

    first, *others = study.load().trials
    assert first.number == killed.number and first.state == TrialState.FAIL
    assert len(others) == 2 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in others)
