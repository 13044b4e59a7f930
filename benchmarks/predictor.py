"""Row 11: `predict --list` of an exported KVQ run on its test items against the workbench's own path for the same
items: their extraction into a fresh cache and the fold heads on the cached features."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd

from benchmarks.harness import BenchConfig, Progress, Row, Sizes, median, median_ratio, timed
from benchmarks.training import train_ours
from ensembles.blend import MeanBlend, blender_state
from ensembles.submit import Choice, RunPredictions, decide
from features.extract import extract
from features.fingerprint import item_fingerprints
from synth import synthesize
from tracks import Track, get_track
from workbench.config import ExtractConfig, TrainConfig, build
from workbench.data import load_training_data, read_streams
from workbench.heads import predict_views, stream_tensors
from workbench.predictor import Predictor, export_folder, fold_heads, member_of
from workbench.predictor import main as predict_list
from workbench.runs import Run

TRACK = "kvq"


def extract_items(items: pd.DataFrame, track: Track, cfg: TrainConfig, cache: Path) -> None:
    """The items' feature sets for the run, extracted as `just extract` extracts them (its batches and workers)."""
    specs = cfg.all_specs(track.decoder)
    views = list(track.tta_views)
    extract(items, track.name, specs, views, cache, batch_size=ExtractConfig.batch, workers=ExtractConfig.workers,
            progress=False)  # fmt: skip


def export_run(run: Run, cfg: TrainConfig, track: Track, items: pd.DataFrame, out: Path) -> Path:
    """The run's predictor as `just export calibration=none` packs one run (the run is its own blend); its folder."""
    predicted = RunPredictions(run.id, run.predictions("oof"), run.predictions("test"), run.folds())
    decision = decide(track, [predicted], items, Choice("auto", "none", ()))
    member = member_of(run, cfg, [], track, items)
    predictor = Predictor(track, [member], blender_state("mean", MeanBlend()), decision.calibration, decision.range_map)
    return export_folder(predictor, out / f"{track.name}-{run.id}").with_suffix("")


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    """The workbench's path: the run's views, workers and batches into a fresh cache, then every fold's head."""
    width, height = sizes.resolutions[0]
    base = root / "predictor"
    shutil.rmtree(base, ignore_errors=True)
    track = get_track(TRACK)
    progress("predictor: a KVQ run and its export")
    synthesize(track, base / "data", max(4 * sizes.extraction_items, 24), 0, width, height)
    train_cfg = replace(
        build(TrainConfig, {"track": TRACK}, track.defaults),
        data=str(base / "data"), cache=str(base / "cache"), runs_dir=str(base / "runs"), folds=2, epochs=2,
    )  # fmt: skip
    items = track.read_items(base / "data")
    extract_items(items, track, train_cfg, base / "cache")
    run = train_ours(train_cfg, load_training_data(train_cfg), range(train_cfg.folds))
    folder = export_run(run, train_cfg, track, items, base / "exports")
    test = items[items["split"] == "test"]
    listed = base / "items.csv"
    test[["item_id", "path"]].to_csv(listed, index=False)
    theirs, ours = [], []
    for repeat in range(sizes.repeats):
        progress(f"predictor, repeat {repeat + 1}/{sizes.repeats}")
        cache = base / f"cache-{repeat}"
        with timed() as workbench:
            extract_items(test[["item_id", "path"]], track, train_cfg, cache)
            fingerprinted = test.assign(fingerprint=item_fingerprints(test, cache))
            tensors = stream_tensors(read_streams(replace(train_cfg, cache=str(cache)), track, fingerprinted)[0])
            for head in fold_heads(run, train_cfg, len(track.targets)):
                predict_views(head, tensors)
        with timed() as exported:
            status = predict_list(["--list", str(listed), str(base / f"out-{repeat}.csv")], folder)
        if status:
            raise RuntimeError(f"{folder}/predict --list {listed} exited with {status}")
        theirs.append(workbench.wall / len(test))
        ours.append(exported.wall / len(test))
    ratio = median_ratio(ours, theirs)
    return [
        Row(
            "11",
            f"exported predictor, `predict --list` of {len(test)} KVQ test clips at {height}p (loading included)",
            f"{median(ours):.3f} s/clip",
            f"{median(theirs):.3f} s/clip (the workbench: extraction into a fresh cache, then the fold heads)",
            ratio,
            "<= 1.2",
            "the predictor runs the extraction's own dataset, workers, batches and encoder streams, with no cache to "
            "write or read; it loads its manifest and heads once per list",
        )
    ]
