"""Leaderboard export: validate predictions against the test list, write the track's file into a zip, re-read it.

A zip is refused rather than written when an id is missing, duplicated or unknown, or a score is not finite or
outside the track's declared range: the organisers' scorers crash or silently mis-score on each of these.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from common.atomic import atomic_path
from common.tables import examples
from tracks.formats import SubmissionFormat

SHOWN = 3  # ids named per problem


class SubmissionError(ValueError):
    """Predictions that would make a wrong submission; the message lists every problem found."""


def validate(pred: pd.DataFrame, expected_ids: Sequence[str], ranges: Mapping[str, tuple[float, float]]) -> None:
    """Every problem at once: ids duplicated, missing or unknown; scores non-finite or outside their target's range
    (`ranges`: target -> (low, high), in the submission's order of targets)."""
    targets = list(ranges)
    ids = pred.index.astype(str)
    expected = pd.Index(expected_ids).astype(str)
    problems = [] if len(expected) else ["the test list is empty: no test items in the data folder (see `just check`)"]
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        problems.append(f"{len(duplicated)} duplicated id(s): {examples(duplicated, SHOWN, repr)}")
    missing = expected.difference(ids)
    if len(missing):
        problems.append(f"{len(missing)} test id(s) without a prediction: {examples(missing, SHOWN, repr)}")
    unknown = ids.difference(expected)
    if len(unknown):
        problems.append(f"{len(unknown)} id(s) not in the test list: {examples(unknown, SHOWN, repr)}")
    values = pred[list(targets)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        problems.append(f"{int(bad.sum())} non-finite score(s), e.g. for {examples(ids[bad], SHOWN, repr)}")
    for column, (target, (low, high)) in enumerate(ranges.items()):
        outside = np.isfinite(values[:, column]) & ((values[:, column] < low) | (values[:, column] > high))
        if outside.any():
            name = "" if len(ranges) == 1 else f" {target}"
            problems.append(
                f"{int(outside.sum())}{name} score(s) outside the track's range [{low}, {high}], "
                f"e.g. for {examples(ids[outside], SHOWN, repr)}"
            )
    if problems:
        raise SubmissionError("refusing to write the submission:\n  " + "\n  ".join(problems))


def write_zip(
    pred: pd.DataFrame,
    fmt: SubmissionFormat,
    expected_ids: Sequence[str],
    ranges: Mapping[str, tuple[float, float]],
    path: str | Path,
    extras: Mapping[str, bytes] | None = None,
) -> Path:
    """Writes the submission zip (files at the root, rows in test-list order) and checks it by reading it back;
    `ranges` (target -> (low, high)) names the targets in the submission's order."""
    targets = list(ranges)
    validate(pred, expected_ids, ranges)
    ordered = pred.loc[list(expected_ids)]
    files = {fmt.filename: fmt.encode(ordered, targets), **(extras or {})}
    path = Path(path)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        check_written(tmp, files, ordered, fmt, expected_ids, ranges)
    return path


def check_written(
    written: Path,
    files: Mapping[str, bytes],
    ordered: pd.DataFrame,
    fmt: SubmissionFormat,
    expected_ids: Sequence[str],
    ranges: Mapping[str, tuple[float, float]],
) -> None:
    """Reads the zip back as the organisers will, before it takes its final name."""
    targets = list(ranges)
    with zipfile.ZipFile(written) as archive:
        if sorted(archive.namelist()) != sorted(files):
            raise SubmissionError(f"the zip holds {archive.namelist()}, expected {sorted(files)}")
    reread = fmt.read(written, targets)
    validate(reread, expected_ids, ranges)
    if not np.array_equal(reread.loc[list(expected_ids)].to_numpy(), ordered[list(targets)].to_numpy()):
        raise SubmissionError("the scores read back from the zip differ from those written")
