"""Training a run: every fold of its configuration by the recipe it names, then the run's summary and report.

The frozen recipe (workbench.frozen) trains a head on cached vectors; the fine-tuned one (workbench.finetune, for
`finetune=true`) tunes the key-frame backbone with it from the media, and the LoRA one (workbench.lora, for
`finetune=lmm`) adapters of the LMM stream's model. All sit on the fold machinery (workbench.fold) and write the
same fold outputs, so everything after training takes any run alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from common.tables import Table
from ensembles.calibrate import CALIBRATION, Calibration
from ensembles.report import write_report
from features.backbones import WeightsNotFound
from features.reader import family_variants
from workbench.compare import OOF_TABLE, oof_table, write_summary_row
from workbench.config import ConfigError, TrainConfig, build
from workbench.console import console, table
from workbench.data import TrainingData, load_training_data, open_or_create_run, view_mean
from workbench.finetune import finetune_fold
from workbench.frozen import frozen_fold
from workbench.loggers import write_curves
from workbench.lora import lora_fold
from workbench.profile import Pipeline
from workbench.runs import FOLD_TIME, SCORES, TUNED_BACKBONE, TUNED_LMM, Run

# `finetune=` -> the recipe that trains a fold: a head on cached vectors, or end to end from the media (the key-frame
# backbone, or LoRA adapters of the LMM stream's model: `lmm`).
RECIPES = {"": frozen_fold, "false": frozen_fold, **dict.fromkeys(TUNED_BACKBONE, finetune_fold), TUNED_LMM: lora_fold}


def train_fold(cfg: TrainConfig, data: TrainingData, run: Run, fold: int) -> dict[str, float]:
    """One fold by the run's recipe; returns its scores."""
    if cfg.finetune not in RECIPES:
        raise ConfigError(f"finetune={cfg.finetune!r}: expected one of {', '.join(repr(k) for k in RECIPES)}")
    started = time.monotonic()
    parts = RECIPES[cfg.finetune](cfg, data, run, fold)
    run.write_json(f"{run.fold_dir(fold).name}/{FOLD_TIME}", {"seconds": time.monotonic() - started})
    return parts


def train_run(cfg: TrainConfig, folds: Sequence[int]) -> tuple[Run, dict]:
    """Trains the run's `folds` that are not finished yet, printing each fold's score; returns the run and its
    summary (the run's summary and report once every fold is finished)."""
    data = load_training_data(cfg)
    if data.dropped:
        console.print(
            f"[yellow]{len(data.dropped)} item(s) have no cached features and are left out, e.g. {data.dropped[0]}[/]"
        )
    run = open_or_create_run(cfg, data)
    done = set(run.folds_done())
    todo = [k for k in folds if k not in done]
    if done & set(folds):
        console.print(f"run {run.id}: fold(s) {sorted(done & set(folds))} already finished, kept")
    for k in todo:
        started = time.monotonic()
        with console.status(f"training fold {k} of {run.id}"):
            parts = train_fold(cfg, data, run, k)
        console.print(
            f"  fold {k}: score {parts['score']:.4f} on {parts['items']} items in {time.monotonic() - started:.1f}s"
        )
    summary = run_summary(run, data) if run.is_complete() else {"folds": run.fold_scores(), "run": run.id}
    return run, summary


def run_summary(run: Run, data: TrainingData, costed: bool = True) -> dict:
    """Pooled out-of-fold score (views averaged) next to each fold's own score, with its interval over resampled
    groups; for a track that calibrates, the map fitted on those predictions (written to the run) and the score after
    it, which is in sample for the map's few parameters. The run's out-of-fold table and summary row (what `just runs`
    and `just compare` read), its report (scatter, fold bars, this table) and learning curves land in its folder.
    `costed=False` (a sweep's trials) leaves the pipeline's cost out of the summary row: it builds every encoder."""
    targets = data.track.targets
    predicted = run.predictions("oof")
    oof, labelled = view_mean(predicted, targets), data.labelled()
    summary = {"oof": data.track.selection_score(oof, labelled), "folds": run.fold_scores(), "run": run.id}
    table = oof_table(oof, labelled, run.folds())
    run.write_parquet(OOF_TABLE, table)
    facts = {"seconds": run.train_seconds()}
    if costed:
        facts["gflops"] = pipeline_gflops(run, data, sorted(predicted["view"].unique()))
    write_summary_row(run, data.track, table, summary, facts)
    truth = labelled.set_index("item_id")
    if data.track.calibrate != "none":
        calibration = Calibration.fit(data.track.calibrate, oof, truth, targets)
        run.write_json(CALIBRATION, calibration.to_json())
        oof = calibration.apply(oof)
        summary["oof_calibrated"] = data.track.selection_score(oof, labelled)
    run.write_json(SCORES, summary)
    fold_scores = {k: parts["score"] for k, parts in summary["folds"].items()}
    title = f"run {run.id}" + (
        f", {data.track.calibrate} calibrated (in sample)" if "oof_calibrated" in summary else ""
    )
    write_report(run.path, title, oof, truth, fold_scores, summary["oof"]["score"], [summary_table(run, summary)])
    write_curves(run.path)
    return summary


def pipeline_gflops(run: Run, data: TrainingData, views: Sequence[str]) -> float:
    """The test-time pipeline's GFLOPs per item over `views` (workbench.profile), as trained; nan where an encoder's
    weights are not on this machine (features extracted elsewhere): its cost is a fact of the listing, not a reason
    to lose the run's summary."""
    config = build(TrainConfig, {k: v for k, v in run.config.items() if k != "views"})
    variants = family_variants(views, len(config.all_specs(data.track.decoder)))
    pipeline = Pipeline.of(config, data.track, variants, data.items)
    try:
        return pipeline.total(pipeline.stages()).flops / 1e9
    except WeightsNotFound as missing:
        console.print(f"[yellow]cost per item unknown: {missing}[/]")
        return float("nan")


def summary_table(run: Run, summary: dict) -> Table:
    """Each fold's metrics, then the pooled out-of-fold ones (and after calibration, where the track calibrates)."""
    names = next(iter(summary["folds"].values()))
    metrics = ["score", *sorted(m for m in names if m not in ("score", "items"))]
    rows = [
        [f"fold {k}", *(parts[m] for m in metrics), parts["items"]] for k, parts in sorted(summary["folds"].items())
    ]
    items = sum(p["items"] for p in summary["folds"].values())
    for key, label in (("oof", "out of fold"), ("oof_calibrated", "out of fold, calibrated")):
        if key in summary:
            rows.append([label, *(summary[key][m] for m in metrics), items])
    title = f"run {run.id} ({run.path})"
    if "interval" in summary:
        title += ", out of fold {:.4f} to {:.4f} (95%, resampled groups)".format(*summary["interval"])
    return title, ["", *metrics, "items"], rows


def fold_table(run: Run, summary: dict):
    return table(*summary_table(run, summary))
