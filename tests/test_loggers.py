"""Each fold's learning curves through the logger `logger=` names, read back by that logger's own library: the CSV rows
with pandas, TensorBoard's events with its event reader, MLflow's runs with its client on the SQLite store. Heads
train on the tiny cached KVQ features (conftest.cached_kvq) in a fraction of a second."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from workbench.cli import main
from workbench.config import ConfigError, TrainConfig
from workbench.loggers import LOGGERS, LOGS
from workbench.runs import Run

EPOCHS = 3
WORDS = ["folds=2", f"epochs={EPOCHS}"]
CURVES = ("train_loss", "val_score", "lr")


def train(cached_kvq: list[str], runs: Path, *words: str, command: str = "train") -> Path:
    """Trains (or one fold: `command="train-fold"`) into `runs`; returns the run's folder, the only one there."""
    assert main([command, *cached_kvq, f"runs_dir={runs}", *WORDS, *words]) == 0
    (run,) = [path for path in (runs / "kvq").iterdir() if path.is_dir()]
    return run


def retrain_fold(cached_kvq: list[str], run: Path, fold: int, *words: str) -> None:
    """Trains a fold again, as after a kill: its score file (which marks it finished) removed first."""
    (run / f"fold-{fold}" / "score.json").unlink()
    train(cached_kvq, run.parents[1], *words, f"fold={fold}", command="train-fold")


def test_csv_is_the_default_with_a_row_per_epoch_and_the_curves_drawn(cached_kvq, tmp_path):
    run = train(cached_kvq, tmp_path / "runs")
    for fold in range(2):
        table = pd.read_csv(run / LOGS / f"fold-{fold}" / "metrics.csv")
        for metric in CURVES:
            per_epoch = table.dropna(subset=[metric]).groupby("epoch")[metric].last()
            assert per_epoch.index.tolist() == list(range(EPOCHS)), metric
        lr = table.dropna(subset=["lr"]).groupby("epoch")["lr"].last()
        assert lr.iloc[0] == pytest.approx(1e-3) and lr.is_monotonic_decreasing  # the cosine schedule
    with Image.open(run / "curves.png") as picture:
        assert picture.format == "PNG" and picture.width > picture.height

    retrain_fold(cached_kvq, run, 1)
    rows = pd.read_csv(run / LOGS / "fold-1" / "metrics.csv").dropna(subset=["val_score"])
    assert len(rows) == EPOCHS  # replaced, not appended to


def test_tensorboard_events_read_back(cached_kvq, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(cached_kvq, tmp_path / "runs", "logger=tensorboard")
    for fold in range(2):
        events = EventAccumulator(str(run / LOGS / f"fold-{fold}"))
        events.Reload()
        assert set(CURVES) <= set(events.Tags()["scalars"])
        assert all(len(events.Scalars(metric)) == EPOCHS for metric in CURVES)
    assert not (run / "curves.png").exists()  # drawn from CSV logs only


def test_mlflow_nests_a_child_per_fold_under_one_parent_per_run(cached_kvq, tmp_path):
    from mlflow import MlflowClient

    runs = tmp_path / "runs"
    run = train(cached_kvq, runs, "logger=mlflow", "fold=0", command="train-fold")
    train(cached_kvq, runs, "logger=mlflow", "fold=1", command="train-fold")  # a later fold: the parent reused
    retrain_fold(cached_kvq, run, 1, "logger=mlflow")  # its earlier child replaced

    client = MlflowClient(f"sqlite:///{runs.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kvq").experiment_id
    everything = client.search_runs([experiment])
    (parent,) = [r for r in everything if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_name == run.name
    assert parent.data.params["head"] == "linear" and parent.data.params["epochs"] == str(EPOCHS)
    children = sorted((r for r in everything if r is not parent), key=lambda r: r.info.run_name)
    assert [child.info.run_name for child in children] == ["fold-0", "fold-1"]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        for metric in CURVES:
            history = client.get_metric_history(child.info.run_id, metric)
            assert len(history) == EPOCHS and len({point.step for point in history}) == EPOCHS
    assert not (run / LOGS).exists()


def test_no_logger_writes_no_logs_and_no_logger_changes_the_run_id(cached_kvq, tmp_path):
    quiet = train(cached_kvq, tmp_path / "a", "logger=none")
    assert not (quiet / LOGS).exists() and not (quiet / "curves.png").exists()
    logged = train(cached_kvq, tmp_path / "b", "logger=csv", "tracking_uri=sqlite:///elsewhere.db")
    assert quiet.name == logged.name


def test_an_unknown_logger_is_refused_with_the_known_ones(cached_kvq, tmp_path, capsys):
    assert main(["train", *cached_kvq, f"runs_dir={tmp_path}", *WORDS, "logger=tensorbord"]) != 0
    assert "Did you mean 'tensorboard'?" in capsys.readouterr().err


def test_a_missing_extra_names_its_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[mlflow\]'"):
        LOGGERS.get("mlflow")(TrainConfig(logger="mlflow"), Run(tmp_path / "kvq" / "run"), "fold-0")
