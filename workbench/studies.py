"""Where a sweep's study lives, and how its workers' trials beat (workbench.sweep runs the trials).

`storage=`: empty is a SQLite file under the runs folder; a database URL (`postgresql://...`) or a journal file
(`journal:<path>` or a path ending `.log`) lets workers on several machines share the study; a second `just sweep`
with the same study name joins it. A worker killed mid-trial stops beating its heartbeat; the next trial any worker
starts marks it FAIL (Optuna's `fail_stale_trials`). Apart from the sweep, so that a process that only opens a study
(a worker claiming a trial, a report) does not import the training stack.
"""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from workbench.config import ConfigError


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal file with heartbeats. Optuna 5.0 has heartbeats on RDB storages only (optuna#6615 asks for the
    journal); here a trial's heartbeat is the modification time of a file of its own beside the journal, so beating
    never grows the journal. Ages are measured against a file touched just now, which puts both times on the file
    system's clock, so workers on machines whose clocks disagree judge a shared folder alike."""

    def __init__(self, path: Path, heartbeat_interval: int):
        super().__init__(JournalFileBackend(str(path)))
        self.beats = path.with_name(path.name + ".heartbeats")
        self.heartbeat_interval = heartbeat_interval

    def record_heartbeat(self, trial_id: int) -> None:
        self.beats.mkdir(parents=True, exist_ok=True)
        (self.beats / str(trial_id)).touch()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        self.beats.mkdir(parents=True, exist_ok=True)
        probe = self.beats / f".now-{uuid.uuid4().hex}"
        probe.touch()
        now = probe.stat().st_mtime
        probe.unlink()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = self.beats / str(trial._trial_id)
            if beat.is_file() and now - beat.stat().st_mtime > 2 * self.heartbeat_interval:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> None:
        return None  # a stale trial is marked FAIL and left so: the sampler proposes anew


def open_storage(storage: str, runs_dir: str, track: str, heartbeat: int) -> BaseStorage:
    """`storage=` as the user wrote it -> an Optuna storage whose trials beat every `heartbeat` seconds."""
    if heartbeat < 1:
        raise ConfigError(f"heartbeat={heartbeat}: expected whole seconds >= 1")
    if storage.startswith("journal:") or storage.endswith(".log"):
        path = Path(storage.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(path, heartbeat)
    if not storage:
        path = Path(runs_dir) / track / "sweeps.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{path}"
    if "://" not in storage:
        raise ConfigError(
            f"storage={storage!r}: expected a database URL (sqlite:///sweeps.db, postgresql://user@host/db), "
            "journal:<file> or a file ending .log"
        )
    sqlite = storage.startswith("sqlite")
    # A SQLite worker waits up to a minute for another's write rather than failing at once; the driver's own
    # transaction handling is off so that `immediate_sqlite_transactions` can begin them.
    engine = {"connect_args": {"timeout": 60, "isolation_level": None}} if sqlite else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
        rdb = RDBStorage(storage, engine_kwargs=engine, heartbeat_interval=heartbeat)
    if sqlite:
        immediate_sqlite_transactions(rdb)
    return rdb


def immediate_sqlite_transactions(storage: RDBStorage) -> None:
    """Every transaction on the SQLite file takes its write lock when it begins. Optuna claims a queued trial by
    reading it as WAITING and writing RUNNING under `SELECT ... FOR UPDATE`, which SQLite ignores: two workers could
    both read WAITING and both run the trial (two processes claiming 80 queued trials claimed 2 to 9 of them twice),
    and the second to finish fails with "Cannot tell a COMPLETE trial". A transaction begun IMMEDIATE
    holds the lock from its read to its commit, so the second worker reads RUNNING and moves on."""
    sqlalchemy.event.listen(storage.engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
