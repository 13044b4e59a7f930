"""A prediction file that is not what a track submits is refused in one line naming the file, what it holds and what
was expected: by every track's reader, and by `score` with exit 2 (the leaderboard reads through the same reader)."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tracks import CsvFormat, JsonListFormat, LayoutError, get_track, list_tracks
from workbench.cli import main

JUNK = b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8).tobytes()
MARK = 0.123456789  # a score written where a test puts a word instead


def predictions(track) -> pd.DataFrame:
    return pd.DataFrame({t: [MARK, 2.0] for t in track.targets}, index=["a.mp4", "b.mp4"])


def other_kind(submission):
    """The same fields in the other kind of file: a JSON list where a CSV is expected, and the other way round."""
    other = JsonListFormat if isinstance(submission, CsvFormat) else CsvFormat
    return other(submission.filename, submission.id_column, submission.score_columns)


def bad_files(track) -> dict[str, bytes]:
    submission, pred = track.submission, predictions(track)
    fewer = dataclasses.replace(submission, score_columns=submission.score_columns[:-1])
    return {
        "other kind": other_kind(submission).encode(pred, track.targets),
        "binary junk": JUNK,
        "json object": b'{"a.mp4": 1.0}',
        "json scalar": b"3.5",
        "empty": b"\n",
        "missing field": fewer.encode(pred.iloc[:, :-1], track.targets[:-1]),
        "word for a score": submission.encode(pred, track.targets).replace(str(MARK).encode(), b'"good"'),
    }


CASES = [(name, case) for name in list_tracks() for case in bad_files(get_track(name))]


def refused(track, path: Path) -> str:
    with pytest.raises(LayoutError) as caught:
        track.submission.read(path, track.targets)
    return str(caught.value)


@pytest.mark.parametrize(("name", "case"), CASES)
def test_every_kind_refuses_a_bad_file_in_one_line_naming_it(name, case, tmp_path):
    track = get_track(name)
    path = tmp_path / f"bad-{case.replace(' ', '-')}"
    path.write_bytes(bad_files(track)[case])
    message = refused(track, path)
    assert "\n" not in message
    assert message.startswith(f"{path}") and message.endswith(f"expected {track.submission.expected}")

    archive = tmp_path / "submission.zip"  # the same file inside a zip is named as its member
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr(track.submission.filename, path.read_bytes())
    assert refused(track, archive) == message.replace(str(path), f"{archive}:{track.submission.filename}", 1)


def test_the_messages_say_what_was_found(tmp_path):
    kvq, aigv, talking = get_track("kvq"), get_track("xgc_aigv"), get_track("talking_head")
    found = {
        (kvq, "binary junk"): "not UTF-8 text (byte 0 is 0x89)",
        (kvq, "other kind"): "a JSON list",
        (kvq, "missing field"): "no score field(s) (found filename)",
        (kvq, "word for a score"): "line 2: score='good' is not a finite number",
        (aigv, "other kind"): "not JSON",
        (aigv, "json object"): "a JSON object",
        (aigv, "json scalar"): "a JSON number",
        (aigv, "missing field"): "no predict_score field(s)",
        (talking, "missing field"): "1 field(s) per row",
        (talking, "word for a score"): "line 1: score='good'",  # no header: the first row is line 1
    }
    for (track, case), words in found.items():
        path = tmp_path / f"{track.name}-{case}"
        path.write_bytes(bad_files(track)[case])
        assert words in refused(track, path), (track.name, case)
    path = tmp_path / "list.json"
    path.write_bytes(b"[1, 2]")
    assert "a JSON list whose item 0 is a JSON number" in refused(aigv, path)
    assert "a folder" in refused(kvq, tmp_path)
    (tmp_path / "damaged.zip").write_bytes(b"PK\x05\x06" + b"x" * 18)
    assert "a damaged zip" in refused(kvq, tmp_path / "damaged.zip")


def test_score_ends_with_exit_2_and_one_line_naming_the_file(tmp_path, capsys):
    preds = tmp_path / "prediction.csv"
    preds.write_bytes(JUNK)
    assert main(["score", "track=kvq", f"preds={preds}", f"truth={tmp_path}"]) == 2
    done = capsys.readouterr()
    lines = done.err.strip().splitlines()
    assert len(lines) == 1 and str(preds) in lines[0] and "expected a CSV with header filename,score" in lines[0]
