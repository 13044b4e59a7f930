"""Each fold's learning curves (training loss, the track's validation score, the learning rate, per epoch) through
Lightning's own loggers, named by `logger=`: `csv` (the default: plain files, no server, no port), `tensorboard`,
`mlflow`, or `none`; and `curves.png`, a run's curves drawn from its CSV logs.

A logger names where curves go, not what is trained: its words are not hashed into the run id (workbench.runs). File
logs lie in the run's folder, `logs/fold-<k>/`, cleared when the fold is trained again, so a rerun replaces its
curves instead of appending to them. MLflow keeps its own store: `runs_dir/mlflow.db` (SQLite) unless `tracking_uri=`
names another, with one experiment per track, one parent run per workbench run (named by the run id, its resolved
configuration as parameters) and a nested child run per fold. TensorBoard and MLflow are optional extras, imported
only when chosen.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pandas as pd
from lightning.pytorch.loggers import CSVLogger, Logger
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from common.atomic import atomic_path
from common.registry import Registry
from ensembles.report import DPI, PANEL_INCHES
from workbench.config import ConfigError, TrainConfig
from workbench.runs import Run

LOGS = "logs"  # in the run's folder: one folder per fold fit
CURVES = "curves.png"
METRICS = "metrics.csv"  # CSVLogger's file in each fold fit's folder
RUN_TAG, FOLD_TAG = "workbench_run", "workbench_fold"  # how a later fold finds its MLflow parent, and a rerun its child

# (configuration, run, fold fit's name) -> the Trainer's logger; False is Lightning's word for none.
LoggerFactory = Callable[[TrainConfig, Run, str], Logger | Literal[False]]
LOGGERS: Registry[LoggerFactory] = Registry("logger")


def fold_logger(cfg: TrainConfig, run: Run, fold: int, name: str) -> Logger | Literal[False]:
    """The logger of one fit of a fold, its checkpoint saved as `name` (workbench.fold.fold_models): `fold-<k>`, or
    under pseudo-labels also `fold-<k>-oof`, the fold's second fit, for its out-of-fold model."""
    return LOGGERS.get(cfg.logger)(cfg, run, f"fold-{fold}{name.removeprefix('best')}")


def fresh_folder(run: Run, version: str) -> Path:
    """The fit's log folder, emptied: a fold trained again (it was not finished) replaces its curves."""
    folder = run.path / LOGS / version
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def needs(module: str, extra: str) -> None:
    """Imports the library of a logger that was chosen, or says which extra installs it."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(f"logger={extra} needs {module}: pip install -e '.[{extra}]'") from error


@LOGGERS.register("none")
def no_logger(cfg: TrainConfig, run: Run, version: str) -> Literal[False]:
    return False


@LOGGERS.register("csv")
def csv_logger(cfg: TrainConfig, run: Run, version: str) -> Logger:
    """`logs/fold-<k>/metrics.csv`, a row per logged epoch: what `curves.png` is drawn from, and pandas reads."""
    folder = fresh_folder(run, version)
    return CSVLogger(save_dir=folder.parent, name="", version=version)


@LOGGERS.register("tensorboard")
def tensorboard_logger(cfg: TrainConfig, run: Run, version: str) -> Logger:
    """TensorBoard's event files in `logs/fold-<k>/`: `tensorboard --logdir runs/<track>/<run>/logs`."""
    needs("tensorboard", "tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    folder = fresh_folder(run, version)
    return TensorBoardLogger(save_dir=folder.parent, name="", version=version, default_hp_metric=False)


@LOGGERS.register("mlflow")
def mlflow_logger(cfg: TrainConfig, run: Run, version: str) -> Logger:
    """A child run per fold fit under the workbench run's parent; an earlier child of the same fit (its fold was not
    finished) is deleted, so a rerun replaces its curves."""
    needs("mlflow", "mlflow")
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient

    runs_root, track = run.path.parents[1].resolve(), run.path.parent.name
    uri = cfg.tracking_uri or f"sqlite:///{runs_root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(track)
    if experiment is None:  # artifacts beside the default store; a tracking server given by URI keeps its own
        artifacts = None if cfg.tracking_uri else (runs_root / "mlartifacts").as_uri()
        experiment_id = client.create_experiment(track, artifact_location=artifacts)
    else:
        experiment_id = experiment.experiment_id
    parent = mlflow_parent(client, experiment_id, run)
    earlier = f"tags.`mlflow.parentRunId` = '{parent}' AND tags.{FOLD_TAG} = '{version}'"
    for child in client.search_runs([experiment_id], earlier):
        client.delete_run(child.info.run_id)
    tags = {"mlflow.parentRunId": parent, FOLD_TAG: version}
    return MLFlowLogger(experiment_name=track, run_name=version, tracking_uri=uri, tags=tags)


def mlflow_parent(client, experiment_id: str, run: Run) -> str:
    """The id of the workbench run's parent MLflow run, made on its first fold with the resolved configuration as
    parameters and marked finished at once: it holds no curves of its own, its fold children do."""
    from mlflow.entities import Param

    found = client.search_runs([experiment_id], f"tags.{RUN_TAG} = '{run.id}'", max_results=1)
    if found:
        return found[0].info.run_id
    parent = client.create_run(experiment_id, run_name=run.id, tags={RUN_TAG: run.id}).info.run_id
    params = [Param(key, str(value)) for key, value in sorted(run.config.items())]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters a batch
        client.log_batch(parent, params=params[start : start + 100])
    client.set_terminated(parent)
    return parent


def write_curves(run_path: str | Path) -> Path | None:
    """`curves.png` in the run's folder: each fold fit's training loss and validation score over its epochs, from
    its CSV logs; None (nothing written) where the run has none (`logger=` other than csv)."""
    run_path = Path(run_path)
    logs = sorted(run_path.glob(f"{LOGS}/fold-*/{METRICS}"), key=lambda p: fold_order(p.parent.name))
    if not logs:
        return None
    figure = Figure(figsize=(PANEL_INCHES * 2, PANEL_INCHES), dpi=DPI)
    loss_axis, score_axis = figure.subplots(1, 2)
    for path in logs:
        table = pd.read_csv(path)
        for axis, metric in ((loss_axis, "train_loss"), (score_axis, "val_score")):
            if metric in table:
                curve = table.dropna(subset=[metric]).groupby("epoch")[metric].last()
                axis.plot(curve.index, curve.to_numpy(), marker=".", label=path.parent.name)
    loss_axis.set(xlabel="epoch", ylabel="training loss", title="training loss")
    score_axis.set(xlabel="epoch", ylabel="validation score", title="validation score (the track's)")
    for axis in (loss_axis, score_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(fontsize=8)
    figure.suptitle(f"run {run_path.name}", fontsize=10)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.82, wspace=0.25)  # fixed: tight_layout draws twice
    with atomic_path(run_path / CURVES) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return run_path / CURVES


def fold_order(version: str) -> tuple[int, str]:
    """`fold-<k>[-oof]` in fold order (fold-10 after fold-9)."""
    number, _, rest = version.removeprefix("fold-").partition("-")
    return (int(number) if number.isdigit() else -1, rest)
