"""The demos: the whole flow on a track's synthetic data (`just demo`), and the pseudo-label recipe of a teacher and
a budgeted student on synthetic data with most labels withheld (`just demo-student`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from common.tables import cell
from features.cost import Cost
from features.extract import group_leader
from synth.dataset import TRUTH_DIR, WITHHELD_DIR, WITHHELD_TRUTH
from tracks import Track, get_track, list_tracks
from tracks.unlabelled import UNLABELLED
from workbench.commands import cmd_extract, cmd_synth
from workbench.config import (
    ConfigError,
    ExportConfig,
    ExtractConfig,
    ProfileConfig,
    PseudoLabelConfig,
    ScoreConfig,
    SubmitConfig,
    SynthConfig,
    TrackConfig,
    TrainConfig,
    build,
    check_keys,
    known_keys,
)
from workbench.console import announce, console, table
from workbench.profile import budget_rows, profiled
from workbench.runs import Run
from workbench.submission import export, pseudo_label, run_exported, score_submission, submit, submitted
from workbench.train import fold_table, train_run


def demo_track(values: dict[str, str]) -> Track:
    """The track `track=` names, the commands' default one where none is named."""
    return get_track(values.get("track", TrackConfig.track))


def cmd_demo(values: dict[str, str]) -> int:
    """Synthesise (if absent), extract, train every fold, train the shuffled-label control, submit, score."""
    check_keys(values, DEMO_KEYS, "demo")
    track = demo_track(values)
    if track.demo_views and "views" not in values:
        values = {**values, "views": ",".join(track.demo_views)}
    timings: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], object]) -> object:
        started = time.monotonic()
        result = fn()
        timings[name] = time.monotonic() - started
        return result

    synth = build(SynthConfig, values, track.defaults)
    if not (synth.data_dir / TRUTH_DIR).is_dir():
        announce("synth", synth)
        stage("synth", lambda: cmd_synth(synth))
    extract_cfg = build(ExtractConfig, values, track.defaults)
    announce("extract", extract_cfg)
    status = stage("extract", lambda: cmd_extract(extract_cfg))
    if not group_leader():
        return 0  # a rank that DDP started for the extraction re-ran this command; the rest is rank 0's
    train_cfg = build(TrainConfig, values, track.defaults)
    announce("train", train_cfg)
    run, summary = stage("train", lambda: train_run(train_cfg, range(train_cfg.folds)))
    console.print(fold_table(run, summary))
    control_cfg = build(TrainConfig, {**values, "shuffle_labels": "true"}, track.defaults)
    announce("train (control, shuffled labels)", control_cfg)
    _, control = stage("control", lambda: train_run(control_cfg, range(control_cfg.folds)))
    compared = {"run": summary, "control": control}
    if train_cfg.extra_streams():  # what the other streams add: the same run on key frames alone
        frames_cfg = train_cfg.key_frames_alone()
        announce("train (key frames alone)", frames_cfg)
        _, compared["key frames alone"] = stage("key frames", lambda: train_run(frames_cfg, range(frames_cfg.folds)))
    submit_cfg = build(SubmitConfig, {**values, "runs": run.id}, track.defaults)
    announce("submit", submit_cfg)
    zip_path = stage("submit", lambda: submit(submit_cfg))
    score_cfg = build(
        ScoreConfig, {**values, "preds": str(zip_path), "truth": str(synth.data_dir / TRUTH_DIR)}, track.defaults
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
    track = demo_track(values)
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
    track = demo_track(values)
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
    if not (synth.data_dir / TRUTH_DIR).is_dir():
        announce("synth", synth)
        cmd_synth(synth)
    shared = {"unlabelled": WITHHELD_DIR, **shared}
    roles = {"teacher": {**plan.teacher, **own["teacher"]}, "student": {**plan.student, **own["student"]}}
    status = 0
    for role, role_words in roles.items():
        extract_cfg = build(ExtractConfig, {**shared, **role_words}, track.defaults)
        announce(f"extract ({role})", extract_cfg)
        status = max(status, cmd_extract(extract_cfg))
    truth = synth.data_dir / TRUTH_DIR
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
    run, summary = train_run(train_cfg, range(train_cfg.folds))
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
