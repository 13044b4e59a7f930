"""`just check`: what a track makes of an organiser's folder, before anything is extracted.

It reads the label files as every command will (so a layout error shows here first), then reports items per split,
groups, each target's range and missing labels, media missing or unreadable (a fast probe that opens each file's
container or image header, decoding nothing), media duplicated (identical files under several ids; near-duplicates
by a perceptual hash of a few key frames, features.duplicates: across the training and test lists in different
groups they are leakage, a problem; training groups they join share a fold), and what the track assumes where the
organisers published nothing.
A folder holding the label files alone is fine: the report says which media are missing, so a download can be
checked before the media are fetched. Every finding that would make a later command fail, or its scores mislead,
is a problem.
"""

from __future__ import annotations

import inspect
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common.tables import examples
from features import streams as stream_families
from features.backbones import WeightsNotFound
from features.decode import DECODERS, MediaError
from features.duplicates import BITS, NEAR, clusters, media_hashes, near_pairs
from features.fingerprint import UNREADABLE
from features.inputs import Category, Text
from tracks import LayoutError, Track
from workbench.folds import join_near_duplicates

SHOWN = 5  # examples named per finding


@dataclass
class Report:
    """The facts of a folder (rows of label, value) and the problems that would make a later command fail."""

    facts: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)


def probe(path: str, decoder: str) -> str | None:
    """Why the file cannot serve as media of this type, or None."""
    if not os.path.isfile(path):
        return "missing"
    try:
        DECODERS.get(decoder).probe(path)
    except MediaError as error:
        return error.reason
    return None


def assumptions(track: Track) -> list[str]:
    """The lines of the track module's docstring that say what it assumes (its 'Assumed' or 'Ours' paragraph)."""
    lines = (inspect.getmodule(type(track)).__doc__ or "").splitlines()
    start = next((k for k, line in enumerate(lines) if line.lower().startswith(("assumed", "ours"))), None)
    if start is None:
        return []
    end = next((k for k in range(start + 1, len(lines)) if not lines[k].strip()), len(lines))
    return [" ".join(line.split()) for line in lines[start:end]]


def check(track: Track, data: Path, media: bool = True, threads: int = 8, cache: str | Path | None = None) -> Report:
    """The report on `data` as `track` reads it; `media=False` skips probing and hashing the files. With `cache`,
    the files' fingerprints and key-frame hashes are memoised there, as training reads them."""
    report = Report(assumptions=assumptions(track))
    try:
        items = track.read_items(data)
    except LayoutError as error:  # nothing else can be read: the error is the report
        report.problems.append(str(error))
        return report
    splits = items["split"].value_counts()
    report.facts.append(("items", f"{len(items)}: " + ", ".join(f"{n} {s}" for s, n in splits.items())))
    for split in ("train", "test"):
        if not splits.get(split, 0):
            report.problems.append(f"no {split} items")
    train = items[items["split"] == "train"]
    shared = sorted(set(train["group"]) & set(items.loc[items["split"] == "test", "group"]))
    groups = f"{items['group'].nunique()} ({train['group'].nunique()} in train)"
    report.facts.append(("groups", groups + (f"; {len(shared)} in both splits" if shared else "")))
    for target, (low, high) in track.label_ranges().items():
        values = train[target].to_numpy(dtype=np.float64)
        known = values[np.isfinite(values)]
        missing = len(values) - len(known)
        spread = f"{known.min():.4g} to {known.max():.4g}, mean {known.mean():.4g}" if len(known) else "no labels"
        report.facts.append((f"{target}", spread + (f"; {missing} unlabelled" if missing else "")))
        outside = int(((known < low) | (known > high)).sum())
        if outside:
            report.problems.append(f"{outside} {target} label(s) outside the track's range [{low}, {high}]")
        if not len(known):
            report.problems.append(f"no {target} label in the training list")
    for kind in track.inputs:
        if isinstance(kind, Text):
            empty = int(items[kind.column].fillna("").astype(str).str.strip().eq("").sum())
            report.facts.append((f"{kind.column} (text)", f"{empty} of {len(items)} empty"))
        elif isinstance(kind, Category):
            values = items[kind.column].astype(str)
            seen = set(values[items["split"] == "train"])
            unseen = int((~values[items["split"] != "train"].isin(seen)).sum())
            report.facts.append((f"{kind.column} (category)", f"{len(seen)} in training; {unseen} other items unseen"))
        elif media:
            _probe_column(report, items, kind.column, kind.decoder, threads)
    if media:
        _duplicates(report, items, track.inputs[0].column, track.decoder, threads, cache)
    return report


def _probe_column(report: Report, items: pd.DataFrame, column: str, decoder: str, threads: int) -> None:
    with ThreadPoolExecutor(threads) as pool:
        reasons = list(pool.map(lambda path: probe(path, decoder), items[column]))
    failed = pd.DataFrame({"item_id": items["item_id"], "reason": reasons}).dropna()
    missing = failed[failed["reason"] == "missing"]["item_id"].tolist()
    broken = failed[failed["reason"] != "missing"]
    folders = sorted({str(Path(p).parent) for p in items[column]})
    where = folders[0] if len(folders) == 1 else f"{len(folders)} folders"
    report.facts.append((f"{column} ({decoder})", f"{len(items) - len(failed)} of {len(items)} readable, in {where}"))
    if missing:
        report.problems.append(f"{len(missing)} {decoder} file(s) missing: {examples(missing, SHOWN)}")
    if len(broken):
        named = [f"{item} ({reason})" for item, reason in zip(broken["item_id"], broken["reason"])]
        report.problems.append(f"{len(broken)} {decoder} file(s) unreadable: {examples(named, SHOWN)}")


def _duplicates(
    report: Report, items: pd.DataFrame, column: str, decoder: str, threads: int, cache: str | Path | None
) -> None:
    """Identical files under several ids, near-duplicates across the training and test lists in different groups
    (leakage: a problem), and training groups holding near-duplicates of one another (the folds join them)."""
    hashes, digests = media_hashes(items[column].tolist(), decoder, cache, threads)
    ids, split = items["item_id"].to_numpy(), items["split"].to_numpy()
    group = items["group"].astype(str).to_numpy()
    readable = pd.Series(digests)[lambda d: d != UNREADABLE]
    same = [ids[rows] for rows in readable.groupby(readable).indices.values() if len(rows) > 1]
    identical = f"{sum(map(len, same))} items in {len(same)} set(s): " + examples([" = ".join(s) for s in same], SHOWN)
    report.facts.append(("identical files", identical if same else "none"))
    i, j, bits = near_pairs(hashes)
    named = np.array([f"{ids[a]} ~ {ids[b]} ({d:g} bits)" for a, b, d in zip(i, j, bits)], dtype=object)
    hashed = int(hashes.valid.any(axis=1).sum())
    strangers = group[i] != group[j]
    near = f"{len(i)} pair(s) among {hashed} files hashed, {strangers.sum()} of them across groups"
    near += f": {examples(named[strangers], SHOWN)}" if strangers.any() else ""
    report.facts.append((f"near-duplicates (<= {NEAR} of {BITS} bits)", near))
    listed = np.isin(split, ("train", "test"))
    leaked = named[strangers & (split[i] != split[j]) & listed[i] & listed[j]]
    if len(leaked):
        report.problems.append(
            f"{len(leaked)} near-duplicate pair(s) across the training and test lists, in different groups "
            f"(leakage): {examples(leaked, SHOWN)}"
        )
    train = split == "train"
    inside = train[i] & train[j]
    rank = np.cumsum(train) - 1  # each item's row among the training items
    joined = join_near_duplicates(group[train], clusters(int(train.sum()), rank[i[inside]], rank[j[inside]]))
    together = [" + ".join(sorted(s)) for s in pd.Series(group[train]).groupby(joined).unique() if len(s) > 1]
    kept = f"{len(together)} set(s), each kept in one fold: " + examples(together, SHOWN)
    report.facts.append(("training groups joined by near-duplicates", kept if together else "none"))


def missing_weights(cfg: object) -> list[str]:
    """Per stream the configuration names, why its weights cannot be loaded on this machine (none where they can):
    a model absent from the Hugging Face cache, a weights file that is not there."""
    try:
        named = stream_families.named(cfg)
    except stream_families.StreamError as error:
        return [str(error)]
    problems = []
    for family in named:
        try:
            family.weight_sources(cfg)
        except (WeightsNotFound, stream_families.StreamError) as error:
            problems.append(f"{family.name} stream: {error}")
    return problems
