"""The commands (`python -m workbench <command>`, the justfile's recipes): each takes its configuration, does the work
through the library, prints what it did and returns the exit status (workbench.cli parses and dispatches)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common.atomic import write_text
from common.tables import cell
from features import weights
from features.extract import extract, group_leader
from synth import synthesize, withhold_labels
from tracks import get_track
from workbench import check
from workbench.caches import cache_table, freed_table, prune_caches
from workbench.compare import compare_runs, list_runs
from workbench.config import (
    CacheConfig,
    CheckConfig,
    CompareConfig,
    ConfigError,
    ExportConfig,
    ExtractConfig,
    LeaderboardConfig,
    ProfileConfig,
    PruneConfig,
    PseudoLabelConfig,
    RunsConfig,
    ScoreConfig,
    SubmitConfig,
    SweepBestConfig,
    SweepConfig,
    SynthConfig,
    TrainConfig,
    WeightsConfig,
    ZeroShotConfig,
)
from workbench.console import EXIT_FAILURES, console, dash, report_extraction, table
from workbench.data import items_of
from workbench.leaderboard import (
    AGREEMENT_FROM,
    agreement,
    ledger_table,
    read_ledger,
    record_result,
    update_report,
    write_agreement_plot,
)
from workbench.leaderboard import PLOT as AGREEMENT_PLOT
from workbench.profile import budget_rows, cost_table, profiled
from workbench.submission import export, pseudo_label, score_submission, submit
from workbench.train import fold_table, train_run
from workbench.zeroshot import zero_shot

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


def cmd_synth(cfg: SynthConfig) -> int:
    track = get_track(cfg.track)
    started = time.monotonic()
    with console.status(f"writing {cfg.items} synthetic {track.name} items to {cfg.out_dir}"):
        synthesize(track, cfg.out_dir, cfg.items, cfg.seed, cfg.width, cfg.height)
        withheld = withhold_labels(track, cfg.out_dir, cfg.withhold, cfg.seed) if cfg.withhold else None
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
        cfg.all_specs(track.decoder),
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


def cmd_train_fold(cfg: TrainConfig) -> int:
    if cfg.fold < 0:
        raise ConfigError("train-fold needs fold=<k> (0-based); `just train` trains every fold")
    if cfg.fold >= cfg.folds:
        raise ConfigError(f"fold={cfg.fold} but folds={cfg.folds}")
    run, summary = train_run(cfg, [cfg.fold])
    console.print(fold_table(run, summary))
    return 0


def cmd_train(cfg: TrainConfig) -> int:
    run, summary = train_run(cfg, range(cfg.folds))
    console.print(fold_table(run, summary))
    return 0


def cmd_submit(cfg: SubmitConfig) -> int:
    console.print(f"[bold green]{submit(cfg)}[/]")
    return 0


def cmd_export(cfg: ExportConfig) -> int:
    export(cfg)
    return 0


def cmd_pseudo_label(cfg: PseudoLabelConfig) -> int:
    pseudo_label(cfg)
    return 0


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


def cmd_zero_shot(cfg: ZeroShotConfig) -> int:
    found = zero_shot(cfg)
    rows = [[row["target"], row["prompt"], f"{row['srcc']:.4f}"] for row in found.rows]
    console.print(
        table(f"{found.model} zero-shot on {cfg.track} ({found.items} items)", ["target", "asked", "SRCC"], rows)
    )
    parts = [[name, f"{value:.4f}"] for name, value in found.score.items()]
    console.print(table("out of fold (each fold mapped by a line fitted on the others)", ["", ""], parts))
    return 0


def cmd_check(cfg: CheckConfig) -> int:
    track = get_track(cfg.track)
    with console.status(f"checking {cfg.data_dir} as {track.name}"):
        report = check.check(track, cfg.data_dir, cfg.media, cfg.threads, cfg.cache)
    report.problems += check.missing_weights(cfg)
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


def cmd_weights(cfg: WeightsConfig) -> int:
    parts = weights.components(cfg)
    found = weights.fetch_missing(parts) if cfg.fetch else [(p, "present" if p.present else "missing") for p in parts]
    parts = [part for part, _ in found]
    checks = {True: ", verified", False: ", DIGEST DIFFERS from its source's", None: ""}
    rows = [
        [p.kind, p.name, p.word, p.expected, state + checks[p.verified], dash(p.size and f"{p.size / 1e6:.3g} MB"),
         dash(p.sha256 and p.sha256[:16]), p.licence, p.flag]
        for p, state in found
    ]  # fmt: skip
    columns = ["kind", "model", "word", "expected at", "state", "size", "sha256", "licence", "flag"]
    if parts:
        console.print(table(f"pretrained components of {cfg.track}'s configuration", columns, rows))
    else:
        console.print(f"{cfg.track}'s configuration needs no pretrained weights")
    if cfg.bundle:
        environment = weights.bundle(parts, Path(cfg.bundle))
        write_text(Path(cfg.bundle) / weights.LEDGER, json.dumps(weights.ledger(parts), indent=2))
        carried = " ".join(f"{name}={value}" for name, value in environment.items())
        console.print(f"bundled into {cfg.bundle}; on the offline machine: {carried} just extract ...")
    return EXIT_FAILURES if any(not p.present or p.verified is False for p in parts) else 0


def cmd_score(cfg: ScoreConfig) -> int:
    if not cfg.preds or not cfg.truth:
        raise ConfigError("score needs preds=<prediction csv or submission zip> and truth=<organiser truth folder>")
    parts = score_submission(cfg)
    console.print(table(f"official {cfg.track} score of {cfg.preds}", list(parts), [[cell(v) for v in parts.values()]]))
    return 0


def cmd_runs(cfg: RunsConfig) -> int:
    listing = list_runs(cfg)
    for printed in listing.tables:
        console.print(table(*printed))
    for note in listing.notes:
        console.print(note)
    console.print(f"picture: {listing.plot}")
    return 0


def cmd_compare(cfg: CompareConfig) -> int:
    console.print(table(*compare_runs(cfg)))
    return 0


def cmd_lb(cfg: LeaderboardConfig) -> int:
    """Records a leaderboard result of a submission whose zip is what the track submits, then shows local against
    leaderboard (and, from AGREEMENT_FROM submissions on, their rank correlation and its picture)."""
    track = get_track(cfg.track)
    name, archive = submission_zip(cfg)
    track.submission.read(archive, track.targets)  # a file the track would not take is refused, named
    try:
        entry = record_result(cfg.runs_dir, track.name, name, cfg.score, cfg.phase, cfg.note)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    update_report(archive.parent / "report.md", entry)
    ledger = read_ledger(cfg.runs_dir, track.name)
    console.print(table(*ledger_table(ledger, track.name)))
    found = agreement(ledger, cfg.phase)
    if len(found.names) < AGREEMENT_FROM:
        console.print(
            f"{len(found.names)} submission(s) with a {cfg.phase} result and a local score: the rank "
            f"correlation of local against leaderboard comes from {AGREEMENT_FROM} on"
        )
        return 0
    plot = write_agreement_plot(Path(cfg.runs_dir) / track.name / AGREEMENT_PLOT, found, track.name)
    console.print(
        f"local against leaderboard ({cfg.phase}), {len(found.names)} submissions: SRCC {found.srcc:.4f}; "
        f"picture: {plot}"
    )
    return 0


def submission_zip(cfg: LeaderboardConfig) -> tuple[str, Path]:
    """The submission's name and zip: a path to the zip, or a name the ledger or the submissions folder knows."""
    if not cfg.submission:
        raise ConfigError("lb needs submission=<name or zip> and score=<the leaderboard's number>")
    given = Path(cfg.submission)
    if given.is_file():
        return given.stem, given
    known = read_ledger(cfg.runs_dir, cfg.track)
    archive = Path(known[cfg.submission]["zip"]) if cfg.submission in known else None
    archive = archive or Path(cfg.out) / cfg.submission / f"{cfg.submission}.zip"
    if not archive.is_file():
        names = ", ".join(sorted(known)) or "none recorded"
        raise ConfigError(f"no submission {cfg.submission!r}: no file {archive} (submissions of {cfg.track}: {names})")
    return cfg.submission, archive


def cmd_cache(cfg: CacheConfig) -> int:
    listing, notes = cache_table(cfg)
    console.print(listing)
    for note in notes:
        console.print(note)
    return 0


def cmd_cache_prune(cfg: PruneConfig) -> int:
    freed, notes = prune_caches(cfg)
    for note in notes:
        console.print(note)
    console.print(freed_table(freed, cfg))
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


def cmd_sweep_best(cfg: SweepBestConfig) -> int:
    """Trains the best trial's configuration into a normal run; where the trial finished every fold, that is its run."""
    from workbench import sweep

    trial, config = sweep.best_trial(cfg)
    console.print(f"best trial {trial.number} of {sweep.study_name(cfg.track, cfg.study)}: score {trial.value:.4f}")
    run, summary = train_run(config, range(config.folds))
    console.print(fold_table(run, summary))
    console.print(f"[bold green]{run.id}[/]: `just submit track={cfg.track} runs={run.id}`")
    return 0
