"""From finished runs to what a challenge takes: the zip (`submit`), the runnable predictor (`export`), a teacher's
label set (`pseudo-label`) and the official score of a prediction file (`score`).

All but `score` start from `submitted`: the runs named (or the newest complete one), checked to be finished, of this
track, and trained on the bytes the items' files hold now. `score` reads a prediction file and the truth alone.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ensembles.blend import BLENDS, MeanBlend, blender_state
from ensembles.calibrate import check_kind
from ensembles.submit import Choice, Decision, RunPredictions, decide, runs_digest, submit_runs
from features import streams as stream_families
from features.cache import cache_dir, check_encoder
from features.fingerprint import REFERENCE, item_fingerprints
from features.reader import family_variants
from features.weights import LEDGER
from tracks import Track, get_track
from workbench.config import ConfigError, ExportConfig, PseudoLabelConfig, ScoreConfig, SubmitConfig, TrainConfig, build
from workbench.console import console, table
from workbench.data import items_of
from workbench.leaderboard import record_submission
from workbench.predictor import Predictor, export_folder, lmm_set, member_of
from workbench.predictor import usage as predict_usage
from workbench.profile import Pipeline, check_budget
from workbench.pseudo import label_rows, label_set_dir, write_label_set
from workbench.runs import TUNED_BACKBONE, TUNED_LMM, Run, newest_complete_run, open_run

TIMED = 3  # test items a runtime is measured on


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
    fingerprints = dict(zip(items["item_id"], item_fingerprints(items, cache)))
    for run in runs:
        stale = run.stale_items(fingerprints)
        if stale:
            raise ConfigError(
                f"run {run.id} was trained and predicted on features of {len(stale)} item(s) whose files have changed "
                f"(or gone) since, e.g. {', '.join(stale[:3])}: run `just extract` and `just train` again"
            )


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
    record_submission(cfg.runs_dir, named.track.name, submission.path, submission.runs, submission.local)
    return submission.path


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


def export(cfg: ExportConfig) -> Path:
    """Packs the runs a submit would submit into a folder and zip that score raw media (workbench.predictor);
    returns the folder."""
    named = submitted(cfg)
    decision = decide(named.track, named.predicted, named.items, named.choice)
    predictor = predictor_of(named, decision)
    runs = [member.run for member in predictor.members]
    check_cost(named, {member.run: member.views for member in predictor.members})
    for member in predictor.members:  # the heads read what these encoders make, not what an older version made
        specs = member.config.all_specs(named.track.decoder)
        for spec, encoder in zip(specs, member.encoders_for(specs)):
            check_encoder(cache_dir(member.config.cache, named.track.name, spec), encoder.identity())
    name = f"{named.track.name}-{runs[0]}" if len(runs) == 1 else f"{named.track.name}-{runs_digest(runs)}"
    with console.status(f"exporting {', '.join(runs)}"):
        archive = export_folder(predictor, Path(cfg.out) / name)
    folder = archive.with_suffix("")
    test = timed_items(named)
    seconds = Predictor.load(folder).seconds_per_item(test) if len(test) else float("nan")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    flagged = [f"{row['name']} ({row['flag']})" for row in json.loads((folder / LEDGER).read_text()) if row["flag"]]
    rows = [[folder, archive, f"{size / 1e6:.2f} MB", ", ".join(runs), decision.picked.chosen.name, seconds]]
    columns = ["folder", "zip", "size", "runs", "blend", f"s/{named.track.unit} (CPU, {len(test)} test items)"]
    rows[0].append("[red]" + "\n".join(flagged) + "[/]" if flagged else "none")
    columns.append(f"licences flagged ({LEDGER})")
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
    done = subprocess.run(command, capture_output=True, encoding="utf-8")
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}: {done.stderr.strip()}")
    return float(result.read_text())


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


def used_runs(named: Submitted, views: dict[str, list[str]]) -> list[tuple[Run, TrainConfig]]:
    """The runs a submission runs (those `views` names, with the views each averages) and their configurations."""
    return [(run, config) for run, config in zip(named.runs, named.configs, strict=True) if run.id in views]


def pipelines_of(named: Submitted, views: dict[str, list[str]]) -> list[Pipeline]:
    """The cost model of the test-time pipeline of each run `views` names (workbench.profile), its loaded streams as
    wide as its data makes them."""
    return [
        Pipeline.of(
            config,
            named.track,
            family_variants(views[run.id], len(config.all_specs(named.track.decoder))),
            named.items,
        )
        for run, config in used_runs(named, views)
    ]


def check_cost(named: Submitted, views: dict[str, list[str]]) -> None:
    """Where the track sets a budget, the cost of the runs `views` names against it: a blend runs every run's
    pipeline, so costs add up."""
    if named.track.budget:
        check_budget(named.track, *pipelines_of(named, views))


def timed_items(named: Submitted) -> pd.DataFrame:
    """The few real test items a runtime is measured on (none where the data has no test split)."""
    return named.items[named.items["split"] == "test"].head(TIMED)


def cost_and_readme(
    cfg: SubmitConfig, named: Submitted, decision: Decision, views: dict[str, list[str]], about: str
) -> tuple[dict[str, bytes], str]:
    """Checks the budget where the track sets one; the readme where the track's zip carries one, its runtime that of
    the exported predictor of the same runs on a few real test items (decode, views, encoders, heads, blend), for
    the runs the submission runs (those in `views`)."""
    track, extras, runtime = named.track, {}, "n/a"
    check_cost(named, views)
    test = timed_items(named)
    if track.submission.readme and len(test):
        seconds = predictor_of(named, decision).seconds_per_item(test)
        runtime = f"{seconds:.3f}s"
        description = about + " ".join(describe(run, config, views[run.id]) for run, config in used_runs(named, views))
        extras[track.submission.readme] = track.submission.readme_text(
            track.unit, seconds, True, cfg.extra_data, description
        )
    return extras, runtime


def describe(run: Run, config: TrainConfig, views: Sequence[str]) -> str:
    """The readme's free description, from what the run really did."""
    if config.finetune == TUNED_LMM:  # the head reads the tuned LMM alone (workbench.lora)
        spec = lmm_set(config, get_track(config.track).decoder)[0]
        return (
            f"{spec.backbone} (weights: {spec.weights}) with LoRA adapters on its language model's attention, tuned "
            f"end to end with a {config.head} head on its final hidden state at the first prompt's last token, "
            f"per fold (loss {config.loss}, {config.epochs} epoch(s)); test-time views {','.join(views)}; test "
            f"prediction the mean of the {config.folds} fold models; run {run.id} of the vqa-workbench."
        )
    return (
        f"{'Fine-tuned' if config.finetune in TUNED_BACKBONE else 'Frozen'} {config.backbone} (weights: "
        f"{config.weights}) features of "
        f"the {config.view} view(s), "
        + stream_families.describe(config)
        + f"test-time views {','.join(views)}; {config.head} head trained on {config.folds} folds "
        f"(loss {config.loss}), test prediction the mean of the fold models; run {run.id} of the vqa-workbench."
    )


def score_submission(cfg: ScoreConfig) -> dict[str, float | str]:
    track = get_track(cfg.track)
    pred = track.submission.read(Path(cfg.preds), track.targets)
    return track.official_score(pred, Path(cfg.truth))
