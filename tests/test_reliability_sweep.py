"""A sweep worker killed by SIGKILL mid-trial: its trial stops beating, the next worker to start a trial marks it FAIL
and the study goes on, over every storage (on the journal through our file heartbeats; Optuna 5.0 has none there)."""

from __future__ import annotations

import time

from optuna.trial import TrialState

from workbench.cli import main

LONG = "epochs=12"  # long enough folds that the kill lands inside the trial, between two of its folds
BEATING = "heartbeat=1"  # a trial silent for 2 s is stale (the other sweep tests keep the default, 30 s, so that a
# worker slowed by the CPU it shares is never taken for a dead one)


def test_a_killed_worker_s_trial_is_failed_and_the_study_goes_on(study, tmp_path, kill_cli_when):
    kill_cli_when(study.sweep(1, LONG, BEATING), tmp_path / "runs" / "kvq", "*/fold-0/score.json")
    (killed,) = study.load().trials
    assert killed.state == TrialState.RUNNING, "the kill must land mid-trial"
    time.sleep(3)  # the killed trial's last heartbeat is now older than the grace period, 2 s

    assert main(study.sweep(1, LONG, BEATING)) == 0

    first, *others = study.load().trials
    assert first.number == killed.number and first.state == TrialState.FAIL
    assert [t.state for t in others] == [TrialState.COMPLETE]
