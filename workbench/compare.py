"""Runs side by side: each run's out-of-fold score with a bootstrap interval over groups (`just runs`), two runs on
the same items by a paired bootstrap (`just compare`), and a picture of the runs with their leaderboard points.

A finished run writes `oof.parquet` (each labelled item's group, fold, labels and views-averaged prediction) and
`summary.parquet` (one row: when, the score and its interval, the spread over folds, cost, training time, the
configuration as JSON). `just runs` scans the summary rows of every run with polars, lazily, filtering and sorting
before anything is decoded, so hundreds of runs list in about the time their summaries take to read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
from matplotlib.figure import Figure

from common import bootstrap
from common.atomic import atomic_path
from common.tables import Table
from tracks import Track, get_track
from workbench.config import CompareConfig, ConfigError, RunsConfig
from workbench.leaderboard import read_ledger
from workbench.runs import NOT_HASHED, Run, open_run

OOF_TABLE = "oof.parquet"
SUMMARY_ROW = "summary.parquet"
PLOT = "runs.png"  # in runs/<track>/: the runs listed, with their intervals and leaderboard points
LABEL = "label:"  # the prefix of a label column in OOF_TABLE, beside the prediction column of the same target
NOT_SHOWN = {*NOT_HASHED, "track", "feature_key", "data", "cache"}  # settings never worth a column
SORTS = {"score": ("score", True), "when": ("when", True), "cost": ("gflops", False), "time": ("seconds", False)}


def oof_table(pred: pd.DataFrame, labelled: pd.DataFrame, folds: pd.Series) -> pd.DataFrame:
    """The run's out-of-fold table: item, group, fold, then each target's prediction and label."""
    items = labelled.set_index("item_id").loc[pred.index]
    table = pd.DataFrame({"item_id": pred.index, "group": items["group"].astype(str).to_numpy()})
    table["fold"] = folds.loc[pred.index].to_numpy()
    for target in pred.columns:
        table[target] = pred[target].to_numpy(dtype=np.float64)
        table[LABEL + target] = items[target].to_numpy(dtype=np.float64)
    return table


def scored_parts(table: pd.DataFrame, targets: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An OOF table as a track scores it: predictions indexed by item, and the labelled items."""
    pred = table.set_index("item_id")[list(targets)]
    items = table[["item_id", "group"]].assign(**{t: table[LABEL + t].to_numpy() for t in targets})
    return pred, items


def score_intervals(
    track: Track, table: pd.DataFrame, resamples: int = bootstrap.RESAMPLES, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """The 95 % interval of the score (and of each target's, where there are several) over resampled groups."""
    pred, items = scored_parts(table, track.targets)
    drawn = bootstrap.resampled(lambda w: track.resampled_scores(pred, items, w), items["group"], resamples, seed)
    return {name: bootstrap.interval(values) for name, values in drawn.items()}


def write_summary_row(run: Run, track: Track, table: pd.DataFrame, summary: dict, facts: dict) -> dict:
    """The run's row for `just runs`: its interval (added to `summary`), fold spread and `facts` (cost, seconds)."""
    low, high = score_intervals(track, table)["score"]
    folds = [parts["score"] for parts in summary["folds"].values()]
    row = {
        "run": run.id,
        "when": time.time(),
        "score": float(summary["oof"]["score"]),
        "low": low,
        "high": high,
        "spread": float(np.std(folds)) if len(folds) > 1 else float("nan"),
        "folds": len(folds),
        "items": len(table),
        "gflops": float(facts.get("gflops", float("nan"))),
        "seconds": float(facts.get("seconds", float("nan"))),
        "control": bool(run.config.get("shuffle_labels", False)),
        "config": json.dumps(run.config, sort_keys=True, default=str),
    }
    with atomic_path(run.path / SUMMARY_ROW) as tmp:
        pl.DataFrame([row]).write_parquet(tmp)
    summary["interval"] = [low, high]
    return row


@dataclass(frozen=True)
class Listing:
    tables: list[Table]
    notes: list[str]
    plot: Path | None


def list_runs(cfg: RunsConfig) -> Listing:
    """The runs of a track, best first (or as `sort=` says), `top=` of them, filtered by `where=`."""
    root = Path(cfg.runs_dir) / cfg.track
    files = sorted(str(path) for path in root.glob(f"*/{SUMMARY_ROW}"))
    if not files:
        raise ConfigError(f"no summarised run under {root}: train a run first (`just train track={cfg.track}`)")
    if cfg.sort not in SORTS:
        raise ConfigError(f"sort={cfg.sort!r}: expected one of {', '.join(SORTS)}")
    column, descending = SORTS[cfg.sort]
    rows = pl.scan_parquet(files)
    for condition in cfg.where:
        rows = rows.filter(setting_matches(condition))
    shown = rows.sort(column, descending=descending, nulls_last=True).head(cfg.top).collect()
    if not len(shown):
        raise ConfigError(f"no run of {cfg.track} has {', '.join(cfg.where)} ({len(files)} runs under {root})")
    configs = [json.loads(text) for text in shown["config"]]
    settings = differing(configs)
    ledger = read_ledger(cfg.runs_dir, cfg.track)
    made = submissions_of(ledger)
    columns = ["run", "when", *settings, "score", "95% interval", "fold sd", "GFLOPs/item", "train s", "submissions"]
    body = [
        [
            row["run"] + (" (control)" if row["control"] else ""),
            time.strftime("%m-%d %H:%M", time.localtime(row["when"])),
            *(format_setting(config.get(key)) for key in settings),
            row["score"],
            f"{row['low']:.4f} to {row['high']:.4f}",
            row["spread"],
            row["gflops"],
            f"{row['seconds']:.1f}",
            "\n".join(made.get(row["run"], [])) or "-",
        ]
        for row, config in zip(shown.iter_rows(named=True), configs)
    ]
    title = f"runs of {cfg.track}: {len(shown)} of {len(files)}, by {cfg.sort}" + (
        f", where {' and '.join(cfg.where)}" if cfg.where else ""
    )
    notes = [] if settings else ["the runs shown share every setting"]
    plot = write_runs_plot(root / PLOT, shown, ledger, cfg.track)
    return Listing([(title, columns, body)], notes, plot)


def setting_matches(condition: str) -> pl.Expr:
    """`key=value` as a filter on the summary rows' configuration JSON, read by polars without decoding it here: the
    value as JSON spells it (true, 0.001, mlp), a list as its comma-joined items."""
    key, sep, value = condition.partition("=")
    if not sep or not key:
        raise ConfigError(f"where={condition!r}: expected where=<setting>=<value>, e.g. where=head=mlp")
    found = pl.col("config").str.json_path_match(f"$.{key}")
    return (found == value) | (found == json.dumps(value.split(","), separators=(",", ":")))


def format_setting(value: object) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def differing(configs: Sequence[dict]) -> list[str]:
    """The settings whose values differ among `configs`, in the configuration's own order."""
    keys = dict.fromkeys(key for config in configs for key in config if key not in NOT_SHOWN)
    return [key for key in keys if len({format_setting(config.get(key)) for config in configs}) > 1]


def submissions_of(ledger: dict[str, dict]) -> dict[str, list[str]]:
    """Per run, the submissions made from it, each with its latest leaderboard score where one is recorded."""
    made: dict[str, list[str]] = {}
    for name, entry in ledger.items():
        results = entry.get("results", [])
        line = name + (f": {results[-1]['score']:.4f} ({results[-1]['phase']})" if results else "")
        for run in entry.get("runs") or []:
            made.setdefault(run, []).append(line)
    return made


def write_runs_plot(path: Path, shown: pl.DataFrame, ledger: dict[str, dict], track: str) -> Path:
    """Each run's score with its interval, best at the top, and the leaderboard scores of submissions made from it."""
    runs = shown["run"].to_list()[::-1]
    figure = Figure(figsize=(8, 1.2 + 0.35 * len(runs)))
    axes = figure.subplots()
    y = np.arange(len(runs))
    score, low, high = (shown[c].to_numpy()[::-1] for c in ("score", "low", "high"))
    axes.errorbar(score, y, xerr=[score - low, high - score], fmt="o", capsize=3, label="out of fold, 95% interval")
    board = [
        (runs.index(run), result["score"])
        for entry in ledger.values()
        for run in entry.get("runs") or []
        if run in runs
        for result in entry.get("results", [])[-1:]
    ]
    if board:
        axes.scatter([s for _, s in board], [k for k, _ in board], marker="x", color="red", label="leaderboard")
    axes.set_yticks(y, runs, fontsize=7)
    axes.set_xlabel("score")
    axes.set_title(f"runs of {track}")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside, over no point
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path


def read_oof(run: Run) -> pd.DataFrame:
    path = run.path / OOF_TABLE
    if not path.is_file():
        raise ConfigError(f"run {run.id} has no {OOF_TABLE}: it was not summarised (train its remaining folds)")
    return pl.scan_parquet(path).collect().to_pandas()


def paired_tables(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str]) -> None:
    """Refuses two runs whose out-of-fold items or folds differ: their scores are not on the same draws."""
    only = sorted(set(a["item_id"]) ^ set(b["item_id"]))
    if only:
        raise ConfigError(
            f"runs {names[0]} and {names[1]} were scored on different items ({len(only)} in one only, e.g. {only[0]}):"
            " a paired comparison needs the same out-of-fold items"
        )
    folds = a.set_index("item_id")["fold"].ne(b.set_index("item_id").loc[a["item_id"], "fold"]).sum()
    if folds:
        raise ConfigError(
            f"runs {names[0]} and {names[1]} put {folds} item(s) in other folds (another folds= or seed=): "
            "their out-of-fold predictions come from different splits"
        )


def compare_runs(cfg: CompareConfig) -> Table:
    """A paired bootstrap over groups: the same resamples score both runs, so fold noise common to both cancels."""
    if len(cfg.runs) != 2:
        raise ConfigError(f"runs={','.join(cfg.runs)}: expected two runs, runs=<a>,<b>")
    track = get_track(cfg.track)
    runs = [open_run(cfg.runs_dir, cfg.track, name) for name in cfg.runs]
    a, b = (read_oof(run) for run in runs)
    paired_tables(a, b, tuple(cfg.runs))
    b = b.set_index("item_id").loc[a["item_id"]].reset_index()
    (pred_a, items), (pred_b, _) = scored_parts(a, track.targets), scored_parts(b, track.targets)

    def both(weights: np.ndarray) -> dict[str, np.ndarray]:
        first, second = track.resampled_scores(pred_a, items, weights), track.resampled_scores(pred_b, items, weights)
        return {name: second[name] - first[name] for name in first}

    diffs = bootstrap.resampled(both, items["group"], cfg.resamples, cfg.seed)
    whole = np.ones((1, len(items)))
    observed = [track.resampled_scores(pred, items, whole) for pred in (pred_a, pred_b)]
    rows = []
    for name, values in diffs.items():
        low, high = bootstrap.interval(values)
        score_a, score_b = observed[0][name][0], observed[1][name][0]
        wins = float(np.mean(values[np.isfinite(values)] > 0))
        rows.append([name, score_a, score_b, f"{score_b - score_a:+.4f}", f"{low:+.4f} to {high:+.4f}", wins])
    title = (
        f"{runs[1].id} against {runs[0].id} on {len(items)} out-of-fold items, {items['group'].nunique()} groups "
        f"({cfg.resamples} paired resamples of groups)"
    )
    columns = ["", f"a: {runs[0].id}", f"b: {runs[1].id}", "b - a", "95% interval", "b beats a"]
    return title, columns, rows
