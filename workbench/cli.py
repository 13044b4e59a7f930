"""The command line: `python -m workbench <command> key=value ...`, which the justfile recipes call.

Every command prints what it will do, shows progress on long work and ends with a short table.
Exit status: 0 on success, 2 on a usage or input error, 3 when extraction finished but some media failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.tables import cell, rich_table
from ensembles.blend import BLENDS, MeanBlend, blender_state
from ensembles.calibrate import check_kind
from ensembles.export import SubmissionError
from ensembles.submit import Choice, Decision, RunPredictions, decide, runs_digest, submit_runs
from features.cache import CacheError, family_variants
from features.extract import ExtractionSummary, extract, group_leader
from features.fingerprint import REFERENCE, item_fingerprints
from features.views import split_variants, view_family
from tracks import LayoutError, Track, get_track, list_tracks
from tracks.base import UNLABELLED, WITHHELD_DIR, WITHHELD_TRUTH
from workbench import check
from workbench.config import (
    BenchConfig,
    CheckConfig,
    ConfigError,
    ExportConfig,
    ExtractConfig,
    ProfileConfig,
    PseudoLabelConfig,
    ScoreConfig,
    SubmitConfig,
    SweepBestConfig,
    SweepConfig,
    SynthConfig,
    TrainConfig,
    as_dict,
    build,
    check_keys,
    known_keys,
    parse_words,
)
from workbench.predictor import Predictor, export_folder, member_of
from workbench.predictor import usage as predict_usage
from workbench.profile import Cost, Pipeline
from workbench.pseudo import label_rows, label_set_dir, write_label_set
from workbench.runs import Run, newest_complete_run, open_run
from workbench.train import (
    items_of,
    load_training_data,
    open_or_create_run,
    quiet_lightning,
    run_summary,
    summary_table,
    track_categories,
    train_fold,
)

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # unwrapped, so a path or id in a message stays whole
EXIT_USAGE, EXIT_FAILURES = 2, 3
FAILURES_SHOWN = 20  # rows of the failures table printed; the cache keeps them all


if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


def announce(command: str, config: object) -> None:
    words = " ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in as_dict(config).items())
    console.print(f"[bold cyan]{command}[/] {words}")


table = rich_table


# --- commands ---------------------------------------------------------------------------------------------------------


def cmd_synth(cfg: SynthConfig) -> int:
    track = get_track(cfg.track)
    started = time.monotonic()
    with console.status(f"writing {cfg.items} synthetic {track.name} items to {cfg.out_dir}"):
        track.synthesize(cfg.out_dir, cfg.items, cfg.seed, cfg.width, cfg.height)
        withheld = track.withhold_labels(cfg.out_dir, cfg.withhold, cfg.seed) if cfg.withhold else None
    items = track.read_items(cfg.out_dir)
    counts = items["split"].value_counts()
    console.print(
        table(
            f"synthetic {track.name} data",
            ["folder", "train", "test", "groups", "seconds"],
            [
                [
                    cfg.out_dir,
                    counts.get("train", 0),
                    counts.get("test", 0),
                    items["group"].nunique(),
                    time.monotonic() - started,
                ]
            ],
        )
    )
    if withheld:
        console.print(f"labels withheld from the media in {withheld}: declare them with unlabelled={withheld.name}")
    return 0


def cmd_extract(cfg: ExtractConfig) -> int:
    track = get_track(cfg.track)
    items = items_of(cfg, track)
    views = track.test_views(cfg.views)
    summary = extract(
        items,
        track.name,
        cfg.all_specs(track.media),
        views,
        cache_root=cfg.cache,
        batch_size=cfg.batch,
        workers=cfg.workers,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
    )
    if not group_leader():
        return 0  # rank 0 reports for the group; a rank Lightning started that exits non-zero gets the group killed
    return report_extraction(summary, views)


def report_extraction(summary: ExtractionSummary, views: Sequence[str]) -> int:
    rate = summary.extracted / summary.seconds if summary.seconds else 0.0
    console.print(
        table(
            "extraction",
            ["items", "views", "already cached", "extracted", "file changed", "failed", "items/s", "cache"],
            [
                [
                    summary.items,
                    ",".join(views),
                    summary.already_cached,
                    summary.extracted,
                    summary.changed,
                    len(summary.failures),
                    rate,
                    "\n".join(map(str, summary.folders)),
                ]
            ],
        )
    )
    if summary.facts is not None and "colour_from" in summary.facts:
        read = summary.facts[summary.facts["error"] == ""]
        counts = read.groupby(["colour_from", "transfer", "bit_depth"]).size().reset_index().to_numpy().tolist()
        title = "colour tags (untagged, unnamed: HDR10 at 10 bits, SDR at 8; per file in media-facts.parquet)"
        console.print(table(title, ["from", "transfer", "bits", "files"], counts))
    if len(summary.failures):
        shown = (
            f", the first {FAILURES_SHOWN} of {len(summary.failures)}" if len(summary.failures) > FAILURES_SHOWN else ""
        )
        console.print(
            table(
                f"failures{shown} (recorded in the cache's failures table; fix or remove these items, then rerun)",
                ["item", "reason"],
                summary.failures[["item_id", "reason"]].head(FAILURES_SHOWN).to_numpy().tolist(),
            )
        )
        return EXIT_FAILURES
    return 0


def _train(cfg: TrainConfig, folds: Sequence[int]) -> tuple[Run, dict]:
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


def fold_table(run: Run, summary: dict) -> Table:
    return table(*summary_table(run, summary))


def cmd_train_fold(cfg: TrainConfig) -> int:
    if cfg.fold < 0:
        raise ConfigError("train-fold needs fold=<k> (0-based); `just train` trains every fold")
    if cfg.fold >= cfg.folds:
        raise ConfigError(f"fold={cfg.fold} but folds={cfg.folds}")
    run, summary = _train(cfg, [cfg.fold])
    console.print(fold_table(run, summary))
    return 0


def cmd_train(cfg: TrainConfig) -> int:
    run, summary = _train(cfg, range(cfg.folds))
    console.print(fold_table(run, summary))
    return 0


def cmd_submit(cfg: SubmitConfig) -> int:
    console.print(f"[bold green]{submit(cfg)}[/]")
    return 0


def predictor_of(named: Submitted, decision: Decision) -> Predictor:
    """The runs the decision runs, as one runnable predictor (one run, the best alone or the only one, is its own
    mean)."""
    chosen = decision.picked.chosen
    members = [
        member_of(run, config, list(named.choice.tta), named.track, named.items)
        for run, config in zip(named.runs, named.configs)
        if run.id in {used.id for used in decision.used}
    ]
    state = blender_state("mean", MeanBlend()) if len(members) == 1 else blender_state(chosen.name, chosen.blender)
    return Predictor(named.track, members, state, decision.calibration, decision.range_map)


def cmd_export(cfg: ExportConfig) -> int:
    export(cfg)
    return 0


def export(cfg: ExportConfig) -> Path:
    """Packs the runs a submit would submit into a folder and zip that score raw media (workbench.predictor);
    returns the folder."""
    named = submitted(cfg)
    decision = decide(named.track, named.predicted, named.items, named.choice)
    predictor = predictor_of(named, decision)
    runs = [member.run for member in predictor.members]
    if named.track.budget:
        used = [(run, config) for run, config in zip(named.runs, named.configs, strict=True) if run.id in runs]
        views = {member.run: member.views for member in predictor.members}
        check_budget(named.track, *pipelines_of(named, *zip(*used), views))
    name = f"{named.track.name}-{runs[0]}" if len(runs) == 1 else f"{named.track.name}-{runs_digest(runs)}"
    with console.status(f"exporting {', '.join(runs)}"):
        archive = export_folder(predictor, Path(cfg.out) / name)
    folder = archive.with_suffix("")
    test = named.items[named.items["split"] == "test"].head(3)
    seconds = Predictor.load(folder).seconds_per_item(test) if len(test) else float("nan")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    rows = [[folder, archive, f"{size / 1e6:.2f} MB", ", ".join(runs), decision.picked.chosen.name, seconds]]
    columns = ["folder", "zip", "size", "runs", "blend", f"s/{named.track.unit} (CPU, {len(test)} test items)"]
    console.print(table(f"{named.track.name} predictor", columns, rows))
    console.print(f"run it: {folder}/{predict_usage(named.track)}")
    return folder


def run_exported(folder: Path, track: Track, item: pd.Series, out: Path) -> float:
    """Runs the exported `predict` program in a process of its own on one item, as a challenge that takes programs
    would (`predict DISTORTED REFERENCE RESULT_FILE` on the ICME tracks, the NR track given its dummy reference),
    and returns the one float it wrote."""
    reference = [str(item.get(REFERENCE, item["path"]))] if track.reference_argument else []
    result = out / f"{Path(item['path']).name}.result"
    command = [str(folder / "predict"), str(item["path"]), *reference, str(result)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}: {done.stderr.strip()}")
    return float(result.read_text())


def cmd_pseudo_label(cfg: PseudoLabelConfig) -> int:
    pseudo_label(cfg)
    return 0


def pseudo_label(cfg: PseudoLabelConfig) -> tuple[str, pd.DataFrame]:
    """The teacher runs' blend on the unlabelled media they predicted, as a label set a student trains on
    (`train pseudo=<name>[:weight]`; workbench.pseudo). Returns its name and labels."""
    named = submitted(cfg)
    sources = {config.unlabelled for config in named.configs}
    source = cfg.unlabelled or next(iter(sources))
    if sources != {source} or not source:
        raise ConfigError(
            f"pseudo-label labels the unlabelled media its teacher runs predicted: they were trained with "
            f"unlabelled={', '.join(sorted(sources)) or '(none)'}, not {cfg.unlabelled or '(none)'}; train the "
            "teachers with unlabelled=<folder or list> first"
        )
    name = cfg.name or f"pseudo-{runs_digest([run.id for run in named.runs])}"
    folder = label_set_dir(cfg.runs_dir, named.track.name, name)
    try:
        labels = write_label_set(folder, named.track, named.runs, named.items, named.choice, source)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    columns = ["target", "items", "lowest", "highest", "mean spread over the teacher's folds"]
    console.print(table(f"label set {name} ({folder})", columns, label_rows(labels, named.track)))
    console.print(f"train a student on it: just train track={named.track.name} unlabelled={source} pseudo={name}")
    return name, labels


def submitted_runs(cfg: SubmitConfig, track: Track) -> list[Run]:
    """The runs named by `runs=` (or the newest complete one), each finished and trained for this track."""
    if len(set(cfg.runs)) < len(cfg.runs):
        raise ConfigError(f"runs={','.join(cfg.runs)} names a run twice")
    runs = [open_run(cfg.runs_dir, track.name, name) for name in cfg.runs] or [
        newest_complete_run(cfg.runs_dir, track.name)
    ]
    for run in runs:
        if run.config["track"] != track.name:
            raise ConfigError(
                f"run {run.id} ({run.path}) was trained for track {run.config['track']}, not {track.name}"
            )
        if not run.is_complete():
            raise ConfigError(
                f"run {run.id} has folds {run.folds_done()} of {run.config['folds']} finished: train the rest first"
            )
    return runs


def check_media(runs: Sequence[Run], items: pd.DataFrame, cache: str) -> None:
    """Refuses runs whose predictions were made from other bytes than the items' files hold now."""
    media = dict(zip(items["item_id"], item_fingerprints(items, cache)))
    for run in runs:
        stale = run.stale_items(media)
        if stale:
            raise ConfigError(
                f"run {run.id} was trained and predicted on features of {len(stale)} item(s) whose files have changed "
                f"(or gone) since, e.g. {', '.join(stale[:3])}: run `just extract` and `just train` again"
            )


@dataclass(frozen=True)
class Submitted:
    """The runs a submit or export names, checked against the data as it is now, with what they predicted."""

    track: Track
    runs: list[Run]
    configs: list[TrainConfig]  # resolved, as each run was trained
    items: pd.DataFrame
    predicted: list[RunPredictions]
    choice: Choice


def submitted(cfg: SubmitConfig) -> Submitted:
    track = get_track(cfg.track)
    if cfg.score_range:
        try:
            low, high = map(float, cfg.score_range)
            track = track.with_range(low, high)
        except ValueError as error:
            raise ConfigError(f"score_range={','.join(cfg.score_range)}: expected low,high ({error})") from None
    kind = check_kind(cfg.calibration or track.calibrate)
    runs = submitted_runs(cfg, track)
    if cfg.blend != "auto" and (cfg.blend not in BLENDS or len(runs) == 1):
        raise ConfigError(f"blend={cfg.blend!r}: expected auto or, with two runs or more, one of {', '.join(BLENDS)}")
    configs = [build(TrainConfig, {k: v for k, v in run.config.items() if k != "views"}) for run in runs]
    items = items_of(configs[0], track)  # with the unlabelled media the runs predicted, if any
    check_media(runs, items, configs[0].cache)
    predicted = [RunPredictions(r.id, r.predictions("oof"), r.predictions("test"), r.folds()) for r in runs]
    return Submitted(track, runs, configs, items, predicted, Choice(cfg.blend, kind, cfg.tta))


def submit(cfg: SubmitConfig) -> Path:
    """Finds the runs and checks them against the data as it is now; ensembles.submit blends, calibrates and writes
    the zip with its report; the tables it returns are printed here. Returns the zip's path."""
    named = submitted(cfg)
    submission = submit_runs(
        named.track,
        named.predicted,
        named.items,
        named.choice,
        Path(cfg.out),
        lambda decision, views, about: cost_and_readme(cfg, named, decision, views, about),
    )
    for printed in submission.tables:
        console.print(table(*printed))
    return submission.path


def pipelines_of(
    named: Submitted, runs: Sequence[Run], configs: Sequence[TrainConfig], views: dict[str, list[str]]
) -> list[Pipeline]:
    """The cost model of each run's test-time pipeline (workbench.profile), its metadata as wide as its data's."""
    train = (named.items["split"] == "train").to_numpy()
    counts = {column: len(names) for column, names in track_categories(named.track, named.items, train).items()}
    return [
        Pipeline.of(
            config, named.track, family_variants(views[run.id], len(config.all_specs(named.track.media))), counts
        )
        for run, config in zip(runs, configs, strict=True)
    ]


def cost_and_readme(
    cfg: SubmitConfig, named: Submitted, decision: Decision, views: dict[str, list[str]], about: str
) -> tuple[dict[str, bytes], str]:
    """Checks the budget where the track sets one; the readme where the track's zip carries one, its runtime that of
    the exported predictor of the same runs on a few real test items (decode, views, encoders, heads, blend), for
    the runs the submission runs (those in `views`): a blend runs every run's pipeline, so costs add up."""
    track, extras, runtime = named.track, {}, "n/a"
    test = named.items[named.items["split"] == "test"]
    runs, configs = zip(*[(r, c) for r, c in zip(named.runs, named.configs, strict=True) if r.id in views])
    if track.budget or track.submission.readme:
        check_budget(track, *pipelines_of(named, runs, configs, views))
        if track.submission.readme and len(test):
            seconds = predictor_of(named, decision).seconds_per_item(test.head(3))
            runtime = f"{seconds:.3f}s"
            description = about + " ".join(describe(run, config, views[run.id]) for run, config in zip(runs, configs))
            extras[track.submission.readme] = track.submission.readme_text(
                track.unit, seconds, True, cfg.extra_data, description
            )
    return extras, runtime


def describe(run: Run, config: TrainConfig, views: Sequence[str]) -> str:
    """The readme's free description, from what the run really did."""
    return (
        f"Frozen {config.backbone} (weights: {config.weights}) features of the {config.view} view(s), "
        + (f"{config.motion} motion features of {config.clip}-frame clips, " if config.motion else "")
        + (f"{config.audio} features of {config.audio_seconds:g} s of audio per key frame, " if config.audio else "")
        + (f"{config.sync} audio-mouth sync features, " if config.sync else "")
        + (f"{config.text} features of the text, " if config.text else "")
        + ("the cosine of the text's embedding with each key frame's, " if config.align else "")
        + ("the files' container metadata and the track's categories, " if config.meta else "")
        + f"test-time views {','.join(views)}; {config.head} head trained on {config.folds} folds "
        f"(loss {config.loss}), test prediction the mean of the fold models; run {run.id} of the vqa-workbench."
    )


def cost_table(track: Track, pipeline: Pipeline) -> tuple[Table, Cost]:
    stages = pipeline.stages()
    total = pipeline.total(stages)

    def counts(params: float, macs: float, flops: float) -> list[str]:
        return [f"{params / 1e6:.4f}", f"{macs / 1e9:.4f}", f"{flops / 1e9:.4f}"]

    rows = [
        [s.name, s.input, s.passes, *counts(s.cost.params, s.passes * s.cost.macs, s.passes * s.cost.flops)]
        for s in stages
    ]
    rows.append([f"total per {track.unit}", "", "", *counts(total.params, total.macs, total.flops)])
    per = f"per {track.unit}"
    columns = ["stage", "input per pass", f"passes {per}", "M params", f"GMACs {per}", f"GFLOPs {per}"]
    return table(f"{track.name} pipeline cost (PyTorch FlopCounterMode; MACs = FLOPs / 2)", columns, rows), total


def budget_rows(track: Track, total: Cost) -> list[tuple[str, float, float]]:
    return track.budget.check(total.macs, total.flops, total.params) if track.budget else []


def check_budget(track: Track, *pipelines: Pipeline) -> None:
    """One line of cost at submit; a loud warning when the model is over the challenge's budget. A blend runs every
    run's pipeline, so their costs add up (a backbone shared by two runs counts twice: an upper bound)."""
    totals = [pipeline.total(pipeline.stages()) for pipeline in pipelines]
    total = Cost(params=sum(t.params for t in totals), flops=sum(t.flops for t in totals))
    limits = budget_rows(track, total)
    console.print(
        f"model cost per {track.unit}: {total.params / 1e6:.4f} M params, {total.macs / 1e9:.4f} GMACs, "
        f"{total.flops / 1e9:.4f} GFLOPs; budget: " + ", ".join(f"{limit:g} {unit}" for unit, _, limit in limits)
    )
    over = [f"{value:.4g} {unit} > {limit:g} {unit}" for unit, value, limit in limits if value > limit]
    if over:
        console.print(
            f"[bold white on red] OVER THE {track.name} BUDGET: {'; '.join(over)}. "
            f"The organisers will not accept this model: choose a smaller backbone, size or fewer views. [/]"
        )


def profiled(cfg: ProfileConfig, track: Track) -> Pipeline:
    """The pipeline a run of these words would submit, with every test-time view, for its cost."""
    families = [view_family(spec) for spec in cfg.all_specs(track.media)]
    return Pipeline.of(cfg, track, split_variants(families, track.test_views(cfg.views)))


def cmd_profile(cfg: ProfileConfig) -> int:
    track = get_track(cfg.track)
    costs, total = cost_table(track, profiled(cfg, track))
    console.print(costs)
    limits = budget_rows(track, total)
    if limits:
        rows = [
            [unit, value, limit, value / limit, "over" if value > limit else "within"] for unit, value, limit in limits
        ]
        columns = ["", "this pipeline", "budget", "ratio", ""]
        console.print(table(f"{track.name} budget per {track.unit}", columns, rows))
    else:
        console.print(f"{track.name} sets no budget on the model")
    return 0


def cmd_check(cfg: CheckConfig) -> int:
    track = get_track(cfg.track)
    with console.status(f"checking {cfg.data_dir} as {track.name}"):
        report = check.check(track, cfg.data_dir, cfg.media, cfg.threads)
    console.print(table(f"{track.name}: {cfg.data_dir}", ["", ""], report.facts))
    if report.assumptions:
        module = type(track).__module__.replace(".", "/")
        console.print(f"what {track.name} assumes ({module}.py):\n  " + "\n  ".join(report.assumptions))
    if report.problems:
        console.print(
            table("problems (later commands would fail on these)", ["problem"], [[p] for p in report.problems])
        )
        return EXIT_FAILURES
    console.print("[green]nothing wrong found[/]")
    return 0


def cmd_score(cfg: ScoreConfig) -> int:
    if not cfg.preds or not cfg.truth:
        raise ConfigError("score needs preds=<prediction csv or submission zip> and truth=<organiser truth folder>")
    parts = score_submission(cfg)
    console.print(table(f"official {cfg.track} score of {cfg.preds}", list(parts), [[cell(v) for v in parts.values()]]))
    return 0


def score_submission(cfg: ScoreConfig) -> dict[str, float | str]:
    track = get_track(cfg.track)
    pred = track.submission.read(Path(cfg.preds), track.targets)
    return track.official_score(pred, Path(cfg.truth))


def cmd_demo(values: dict[str, str]) -> int:
    """Synthesise (if absent), extract, train every fold, train the shuffled-label control, submit, score."""
    check_keys(values, DEMO_KEYS, "demo")
    track = get_track(values.get("track", "kvq"))
    if track.demo_views and "views" not in values:
        values = {**values, "views": ",".join(track.demo_views)}
    timings: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], object]) -> object:
        started = time.monotonic()
        result = fn()
        timings[name] = time.monotonic() - started
        return result

    synth = build(SynthConfig, values, track.defaults)
    if not (synth.data_dir / "truth").is_dir():
        announce("synth", synth)
        stage("synth", lambda: cmd_synth(synth))
    extract_cfg = build(ExtractConfig, values, track.defaults)
    announce("extract", extract_cfg)
    status = stage("extract", lambda: cmd_extract(extract_cfg))
    if not group_leader():
        return 0  # a rank that DDP started for the extraction re-ran this command; the rest is rank 0's
    train_cfg = build(TrainConfig, values, track.defaults)
    announce("train", train_cfg)
    run, summary = stage("train", lambda: _train(train_cfg, range(train_cfg.folds)))
    console.print(fold_table(run, summary))
    control_cfg = build(TrainConfig, {**values, "shuffle_labels": "true"}, track.defaults)
    announce("train (control, shuffled labels)", control_cfg)
    _, control = stage("control", lambda: _train(control_cfg, range(control_cfg.folds)))
    compared = {"run": summary, "control": control}
    if train_cfg.extra_streams():  # what the other streams add: the same run on key frames alone
        frames_cfg = train_cfg.key_frames_alone()
        announce("train (key frames alone)", frames_cfg)
        _, compared["key frames alone"] = stage("key frames", lambda: _train(frames_cfg, range(frames_cfg.folds)))
    submit_cfg = build(SubmitConfig, {**values, "runs": run.id}, track.defaults)
    announce("submit", submit_cfg)
    zip_path = stage("submit", lambda: submit(submit_cfg))
    score_cfg = build(
        ScoreConfig, {**values, "preds": str(zip_path), "truth": str(synth.data_dir / "truth")}, track.defaults
    )
    announce("score", score_cfg)
    official = stage("score", lambda: score_submission(score_cfg))
    program = []
    if track.reference_argument:  # the challenge runs a program: export it and run it on a test item as it would
        export_cfg = build(ExportConfig, {**values, "runs": run.id}, track.defaults)
        announce("export", export_cfg)
        folder = stage("export", lambda: export(export_cfg))
        item = submitted(export_cfg).items.query("split == 'test'").iloc[0]
        value = stage("predict", lambda: run_exported(folder, track, item, folder))
        program = [[f"exported predict on {item['item_id']}", value]]
    rows = [[f"fold {k}", parts["score"]] for k, parts in sorted(summary["folds"].items())]
    rows.append(["out of fold", summary["oof"]["score"]])
    if "oof_calibrated" in summary:
        rows.append(["out of fold, calibrated", summary["oof_calibrated"]["score"]])
    rows += [
        ["control (shuffled labels), out of fold", control["oof"]["score"]],
        ["local test (official scorer)", official.get("score", "n/a")],
        ["zip", str(zip_path)],
        *program,
    ]
    console.print(table(f"{track.name} demo", ["", "score"], rows))
    if len(track.targets) > 1 or len(compared) > 2:
        console.print(target_table(track, train_cfg, compared))
    console.print(table("time per stage", list(timings), [[f"{t:.1f}s" for t in timings.values()]]))
    return status if isinstance(status, int) else 0


STUDENT_ROLES = ("teacher", "student")


@dataclass(frozen=True)
class StudentDemoRun:
    """One run of the student demo: what it is, its scores out of fold and on the test truth, and its cost."""

    role: str
    words: str  # what sets it apart: the role's own words
    run: Run
    out_of_fold: float
    test: float
    cost: Cost


def cmd_demo_student(values: dict[str, str]) -> int:
    runs, judged, status = student_demo(values)
    track = get_track(values.get("track", "kvq"))
    rows = [
        [
            demo.role,
            demo.words,
            demo.run.id,
            demo.out_of_fold,
            demo.test,
            demo.cost.flops / 1e9,
            demo.cost.params / 1e6,
        ]
        for demo in runs
    ]
    columns = ["", "words", "run", "out of fold", "local test", f"GFLOPs per {track.unit}", "M params"]
    console.print(table(f"{track.name} student demo", columns, rows))
    console.print(f"the pseudo-labels against the withheld labels: {cell(judged['score'])} on {judged['items']} items")
    if limits := budget_rows(track, runs[-1].cost):
        console.print(table(f"{track.name} budget of the student", ["", "student", "budget"], limits))
    return status


def student_demo(values: dict[str, str]) -> tuple[list[StudentDemoRun], dict[str, float | str], int]:
    """The pseudo-label recipe on a track's synthetic data with most training labels withheld (Track.student_demo):
    a teacher, the student alone and the student distilled from the teacher's pseudo-labels, each out of fold and on
    the test truth with its cost; the pseudo-labels' official score against the labels withheld; and the exit status
    (EXIT_FAILURES where some media failed to extract, as `extract` says). Words
    `teacher.<key>=` and `student.<key>=` go to one of the two, the rest to both."""
    track = get_track(values.get("track", "kvq"))
    plan = track.student_demo
    if plan is None:
        having = [name for name in list_tracks() if get_track(name).student_demo]
        raise ConfigError(f"track {track.name} has no student demo (Track.student_demo); {', '.join(having)} has one")
    shared = {k: v for k, v in values.items() if "." not in k}
    check_keys(shared, DEMO_KEYS - {"pseudo"}, "demo-student")
    if unknown := sorted(k for k in values if "." in k and k.partition(".")[0] not in STUDENT_ROLES):
        raise ConfigError(f"demo-student: {unknown[0]}= names no role (words: <key>=, teacher.<key>=, student.<key>=)")
    own = {}
    for role in STUDENT_ROLES:
        own[role] = {k.partition(".")[2]: v for k, v in values.items() if k.startswith(f"{role}.")}
        check_keys(own[role], ROLE_KEYS, f"demo-student's {role}.<key>=")
    # Its own data and cache: its media share their names with the track's demo, so one cache would re-extract each.
    own_folders = {"data": f"data/demo/{track.name}-student", "cache": "cache/demo-student"}
    shared = {**own_folders, "items": plan.items, "withhold": plan.withheld, **shared}
    synth = build(SynthConfig, shared, track.defaults)
    if not (synth.data_dir / "truth").is_dir():
        announce("synth", synth)
        cmd_synth(synth)
    shared = {"unlabelled": WITHHELD_DIR, **shared}
    roles = {"teacher": {**plan.teacher, **own["teacher"]}, "student": {**plan.student, **own["student"]}}
    status = 0
    for role, role_words in roles.items():
        extract_cfg = build(ExtractConfig, {**shared, **role_words}, track.defaults)
        announce(f"extract ({role})", extract_cfg)
        status = max(status, cmd_extract(extract_cfg))
    truth = synth.data_dir / "truth"
    teacher = demo_student_run("teacher", shared, roles["teacher"], track, truth)
    pseudo_cfg = build(PseudoLabelConfig, {**shared, "runs": teacher.run.id}, track.defaults)
    announce("pseudo-label", pseudo_cfg)
    name, labels = pseudo_label(pseudo_cfg)
    alone = demo_student_run("student alone", shared, roles["student"], track, truth)
    distilled = demo_student_run("student distilled", shared, {**roles["student"], "pseudo": name}, track, truth)
    withheld = labels.set_index(labels["item_id"].str.removeprefix(f"{UNLABELLED}/"))[list(track.targets)]
    return [teacher, alone, distilled], track.official_score(withheld, truth / WITHHELD_TRUTH), status


def demo_student_run(
    role: str, shared: dict[str, object], own: dict[str, object], track: Track, truth: Path
) -> StudentDemoRun:
    """Trains one run of the student demo (its `own` words set it apart), submits it, scores its zip on the test
    truth and costs its pipeline."""
    words = {**shared, **own}
    train_cfg = build(TrainConfig, words, track.defaults)
    announce(f"train ({role})", train_cfg)
    run, summary = _train(train_cfg, range(train_cfg.folds))
    console.print(fold_table(run, summary))
    zip_path = submit(build(SubmitConfig, {**words, "runs": run.id}, track.defaults))
    scored = {**words, "preds": str(zip_path), "truth": str(truth)}
    official = score_submission(build(ScoreConfig, scored, track.defaults))
    pipeline = profiled(build(ProfileConfig, words, track.defaults), track)
    described = " ".join(f"{key}={value}" for key, value in own.items())
    cost = pipeline.total(pipeline.stages())
    return StudentDemoRun(role, described, run, summary["oof"]["score"], float(official["score"]), cost)


def target_table(track: Track, cfg: TrainConfig, summaries: dict[str, dict]) -> Table:
    """Each target's out-of-fold score in each of the demo's runs (the run, its control, the run on its key frames
    alone), as the track's selection score reports it per target, then the score itself."""
    named = {"run": " + ".join(["key frames", *cfg.extra_streams()])}
    columns = [named.get(name, name) for name in summaries]
    targets = track.targets if len(track.targets) > 1 else ()
    rows = [[target, *(summary["oof"].get(target, "n/a") for summary in summaries.values())] for target in targets]
    rows.append(["score", *(summary["oof"]["score"] for summary in summaries.values())])
    return table(f"{track.name} demo, out of fold per target", ["", *columns], rows)


def cmd_bench(cfg: BenchConfig) -> int:
    """The benchmark suite; prints BENCHMARKS.md-ready markdown and, with write=<file>, updates that file. Imported
    here, as the sweep is in its commands: every other command starts without loading Optuna or the bench's media."""
    from workbench import bench

    sizes = bench.SIZES["quick" if cfg.quick else "full"]
    with console.status("benchmarks") as status:
        report = bench.run_suite(cfg, sizes, progress=lambda message: status.update(f"benchmarks: {message}"))
    console.print(bench.markdown(report), markup=False, highlight=False, soft_wrap=True)
    if cfg.write:
        default = as_dict(BenchConfig())
        words = [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in as_dict(cfg).items() if v != default[k]]
        bench.write_report(Path(cfg.write), report, " ".join(["just bench", *words]))
        console.print(f"[bold green]{cfg.write}[/] updated")
    return 0


def cmd_sweep(cfg: SweepConfig) -> int:
    """Runs this worker's trials, then shows the study: its best trials beside the default configuration's."""
    import optuna
    from optuna.trial import TrialState

    from workbench import sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial is printed here, with the run

    def show(trial: FrozenTrial) -> None:
        # A pruned trial's value is its last report, the mean score of the folds it finished.
        score = "-" if trial.value is None else f"{trial.value:.4f}"
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        run = trial.user_attrs.get("run", "-")
        console.print(f"  trial {trial.number} {trial.state.name.lower()}: {score} in {seconds:.1f}s, run {run}")

    study = sweep.run_worker(cfg, show)
    trials = study.get_trials(deepcopy=False)
    finished = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: -t.value)
    default = sweep.default_trial(study)
    shown = finished[:10] + [t for t in [default] if t is not None and t not in finished[:10]]
    keys = ["head", "features", "lr", "epochs"]
    rows = [
        [t.number, t.state.name.lower(), dash(t.value), t.user_attrs.get("run", "-"), *(t.params.get(k) for k in keys)]
        for t in shown
    ]
    console.print(table(f"study {study.study_name}", ["trial", "state", "score", "run", *keys], rows))
    default_score = default.value if default is not None and default.state == TrialState.COMPLETE else None
    best = finished[0] if finished else None
    gain = best.value - default_score if best is not None and default_score is not None else None
    states = ("complete", "pruned", "fail", "running")
    counts = [sum(t.state.name.lower() == state for t in trials) for state in states]
    columns = ["default config", "best", "best trial", "gain", *states]
    row = [dash(default_score), dash(best and best.value), dash(best and best.number), dash(gain), *counts]
    console.print(table("best against the default (pooled out-of-fold score)", columns, [row]))
    return 0


def dash(value: object) -> object:
    return "-" if value is None else value


def cmd_sweep_best(cfg: SweepBestConfig) -> int:
    """Trains the best trial's configuration into a normal run; where the trial finished every fold, that is its run."""
    from workbench import sweep

    trial, config = sweep.best_trial(cfg)
    console.print(f"best trial {trial.number} of {sweep.study_name(cfg.track, cfg.study)}: score {trial.value:.4f}")
    run, summary = _train(config, range(config.folds))
    console.print(fold_table(run, summary))
    console.print(f"[bold green]{run.id}[/]: `just submit track={cfg.track} runs={run.id}`")
    return 0


@dataclass(frozen=True)
class Command:
    config: type | None
    run: Callable
    help: str


COMMANDS: dict[str, Command] = {
    "synth": Command(SynthConfig, cmd_synth, "write a synthetic dataset in the track's organiser layout"),
    "extract": Command(ExtractConfig, cmd_extract, "fill the feature cache"),
    "train-fold": Command(TrainConfig, cmd_train_fold, "train one fold of a run"),
    "train": Command(TrainConfig, cmd_train, "train every fold of a run"),
    "submit": Command(SubmitConfig, cmd_submit, "blend runs and write the leaderboard zip, with a report"),
    "export": Command(ExportConfig, cmd_export, "pack the runs a submit would submit as a runnable predictor"),
    "pseudo-label": Command(PseudoLabelConfig, cmd_pseudo_label, "label unlabelled media with teacher runs' blend"),
    "score": Command(ScoreConfig, cmd_score, "score predictions with the track's official scorer"),
    "check": Command(CheckConfig, cmd_check, "read an organiser's folder and report what later commands would meet"),
    "profile": Command(ProfileConfig, cmd_profile, "parameters and GMACs per item of the pipeline, against the budget"),
    "demo": Command(None, cmd_demo, "synth, extract, train, control, submit and score on demo data"),
    "demo-student": Command(
        None, cmd_demo_student, "teacher, student alone and distilled student on demo data with labels withheld"
    ),
    "bench": Command(BenchConfig, cmd_bench, "the benchmark suite: each figure against its bound or baseline"),
    "sweep": Command(SweepConfig, cmd_sweep, "an Optuna study over heads, losses, optimiser and feature sets"),
    "sweep-best": Command(SweepBestConfig, cmd_sweep_best, "train the best trial of a sweep into a run for submit"),
}
DEMO_KEYS = known_keys(SynthConfig, ExtractConfig, TrainConfig, SubmitConfig) - {
    "out",
    "run",
    "runs",
    "blend",
    "fold",
    "shuffle_labels",
}
# What the student demo's teacher.<key>= and student.<key>= words may set: the run's features and head.
ROLE_KEYS = known_keys(ExtractConfig, TrainConfig) - {
    *("track", "data", "cache", "unlabelled", "runs_dir", "run", "fold", "pseudo", "shuffle_labels"),
}


CONFIG_KEYS = known_keys(*(command.config for command in COMMANDS.values() if command.config))


def load_track(name: str) -> Track:
    """The track, its `defaults` checked against the keys the commands take: a typo there would be dropped
    silently by every command."""
    track = get_track(name)
    unknown = sorted(set(track.defaults) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"track {track.name}: its defaults name unknown key(s) {', '.join(unknown)}")
    return track


def usage() -> str:
    lines = ["usage: python -m workbench <command> key=value ...", ""]
    lines += [f"  {name:<11} {command.help}" for name, command in COMMANDS.items()]
    lines += ["", f"tracks: {', '.join(list_tracks())}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        console.print(usage())
        return 0 if argv else EXIT_USAGE
    name, words = argv[0], argv[1:]
    if name not in COMMANDS:
        errors.print(f"[red]unknown command {name!r}[/]\n{usage()}")
        return EXIT_USAGE
    command = COMMANDS[name]
    console.quiet = not group_leader()  # the ranks a DDP launcher starts re-run this command: rank 0 alone speaks
    quiet_lightning()
    try:
        values = parse_words(words)
        track = load_track(values.get("track", "kvq"))
        if command.config is None:  # the demos check their own words
            return command.run(values)
        check_keys(values, known_keys(command.config), name)
        config = build(command.config, values, track.defaults)
        announce(name, config)
        return command.run(config)
    except (ConfigError, LayoutError, CacheError, SubmissionError, FileNotFoundError, ValueError) as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_USAGE
