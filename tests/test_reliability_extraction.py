"""Extraction on media it did not make and under kills and concurrency: every item ends cached exactly once or in
the failures table with its reason, and the run goes on."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd
from test_extraction import (
    KEY_FRAMES,
    PART_GLOB,
    SLOW_SPEC,
    TRACK,
    assert_one_row_set_per_item_and_view,
    encode_with,
    extract_slowly,
    fast_twin,  # noqa: F401 - a fixture
    media_of,
    part_rows,
    read_items,
    run,
)

from features.cache import cache_dir, read_failures
from features.decode import FrameSampling, sample_video
from synth.video import render_source

HERE = Path(__file__).parent


def start_slow_extraction(items_csv: Path, root: Path, delay: float, report: Path | None = None) -> subprocess.Popen:
    """A separate process extracting with a backbone that sleeps `delay` per batch, optionally reporting its summary."""
    script = (
        f"import sys, json; sys.path.insert(0, {str(HERE)!r}); "
        f"from test_extraction import register_slow, extract_slowly; register_slow({delay}); "
        f"s = extract_slowly({str(items_csv)!r}, {str(root)!r})"
    )
    if report is not None:
        script += (
            f"; open({str(report)!r}, 'w').write(json.dumps({{'cached': s.already_cached, 'extracted': s.extracted}}))"
        )
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=HERE.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def test_repeated_kills_at_random_points_lose_and_duplicate_nothing(tiny_videos, tmp_path, fast_twin):  # noqa: F811
    items = tiny_videos(14)
    items_csv, root = tmp_path / "items.csv", tmp_path / "cache"
    items.to_csv(items_csv, index=False)
    folder = cache_dir(root, TRACK, SLOW_SPEC)
    chooser = random.Random(7)
    for _ in range(2):
        before = len(list(folder.glob(PART_GLOB)))
        wanted = before + chooser.randint(1, 3)
        child = start_slow_extraction(items_csv, root, delay=0.15)
        try:
            deadline = time.monotonic() + 300  # a guard against a hung child, not a timing check
            while len(list(folder.glob(PART_GLOB))) < wanted and child.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            time.sleep(chooser.uniform(0.0, 0.1))  # land anywhere: mid-batch, mid-write, between parts
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        rows = part_rows(folder)  # every part under its final name reads whole
        assert not rows.duplicated(["item_id", "view", "t"]).any()
    assert rows["item_id"].nunique() < len(items), "the kills must land before the end"

    summary = extract_slowly(str(items_csv), str(root))
    assert summary.already_cached + summary.extracted == len(items)
    rows = part_rows(folder)
    assert_one_row_set_per_item_and_view(rows, items["item_id"], ["center"])
    assert len(rows) == len(items) * KEY_FRAMES


def test_two_extractions_on_one_cache_at_once_never_duplicate(tiny_videos, tmp_path):
    items = tiny_videos(8)
    items_csv, root = tmp_path / "items.csv", tmp_path / "cache"
    items.to_csv(items_csv, index=False)
    reports = [tmp_path / "first.json", tmp_path / "second.json"]
    children = [start_slow_extraction(items_csv, root, 0.05, report) for report in reports]
    for child in children:
        assert child.wait(timeout=300) == 0
    outcomes = [json.loads(report.read_text()) for report in reports]
    # The lock serialises them: whichever came second found everything cached.
    assert sorted(o["extracted"] for o in outcomes) == [0, len(items)]
    assert sorted(o["cached"] for o in outcomes) == [0, len(items)]
    rows = part_rows(cache_dir(root, TRACK, SLOW_SPEC))
    assert_one_row_set_per_item_and_view(rows, items["item_id"], ["center"])


# --- odd but valid media, and media that are not what they claim -----------------------------------------------------


def write_audio_only(path: Path) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), dtype=np.float32)
        for _ in range(8):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_rotated(path: Path, frames: np.ndarray, degrees: int) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.set_display_rotation(degrees)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_odd_media_are_cached_and_broken_media_named(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    clip = render_source(3, 64, 48, 16)
    paths = {
        "one-frame": data / "one-frame.mp4",
        "tiny-8x6": data / "tiny.mp4",
        "odd-63x47": data / "odd.mp4",
        "portrait-rotated": data / "rotated.mp4",
        "audio-only": data / "audio.mp4",
    }
    encode_with(clip[:1], paths["one-frame"], "libx264", "yuv420p")
    encode_with(render_source(4, 8, 6, 16), paths["tiny-8x6"], "libx264", "yuv420p")
    encode_with(render_source(5, 63, 47, 16), paths["odd-63x47"], "libx264", "yuv444p")
    write_rotated(paths["portrait-rotated"], clip, 90)
    write_audio_only(paths["audio-only"])
    items = pd.DataFrame({"item_id": list(paths), "path": [str(p) for p in paths.values()]})

    summary = run(items, tmp_path / "cache", views=("center", "hflip"))
    assert summary.failures["item_id"].tolist() == ["audio-only"]
    failures = read_failures(summary.folder, media_of(items)).set_index("item_id")
    assert "no video stream" in failures.at["audio-only", "reason"]
    rows = part_rows(summary.folder)
    frames = rows.groupby("item_id")["t"].nunique()
    assert frames["one-frame"] == 1 and frames["tiny-8x6"] == KEY_FRAMES and frames["odd-63x47"] == KEY_FRAMES
    features = read_items(summary.folder, items, ["center", "hflip"], KEY_FRAMES)
    assert np.isfinite(features.x).all()


def test_rotation_metadata_is_honoured(tmp_path):
    clip = np.zeros((16, 32, 64, 3), dtype=np.uint8)
    clip[:, :, :32] = 255  # stored landscape, left half white
    path = tmp_path / "phone.mp4"
    write_rotated(path, clip, 90)
    decoded = sample_video(str(path), FrameSampling(frames=2))
    assert decoded.info["rotation"] == 90
    assert decoded.frames.shape[1:3] == (64, 32)  # shown portrait
    # a quarter turn counter-clockwise moves the stored left half to the bottom
    assert decoded.frames[0, -8:].mean() > 200 and decoded.frames[0, :8].mean() < 50


def test_the_command_line_reports_failures_in_its_table_and_exit_status(tmp_path, capsys):
    from workbench.cli import main
    from workbench.console import EXIT_FAILURES

    data = tmp_path / "data"
    assert main(["synth", f"out={data}", "items=12", "width=64", "height=48"]) == 0
    (data / "train" / "0002.mp4").write_text("not a video")
    words = ["extract", f"data={data}", f"cache={tmp_path / 'cache'}", "frames=2", "size=32", "views=center"]
    capsys.readouterr()
    assert main(words) == EXIT_FAILURES
    out = capsys.readouterr().out
    assert "train/0002.mp4" in out and "Invalid" in out  # the reason, as FFmpeg gives it
    assert main(words) == EXIT_FAILURES  # still failing on a rerun: still reported, nothing else recomputed
    assert "train/0002.mp4" in capsys.readouterr().out


def test_a_long_failures_table_says_how_many_it_leaves_out(capsys):
    from features.extract import ExtractionSummary
    from workbench.console import EXIT_FAILURES, FAILURES_SHOWN, report_extraction

    names = [f"train/{i:04d}.mp4" for i in range(FAILURES_SHOWN + 5)]
    failures = pd.DataFrame({"item_id": names, "reason": "no video stream"})
    summary = ExtractionSummary([Path("cache")], len(names), 0, 0, 0, failures, seconds=1.0)
    assert report_extraction(summary, ["center"]) == EXIT_FAILURES
    out = capsys.readouterr().out
    assert f"the first {FAILURES_SHOWN} of {len(names)}" in out
    assert names[FAILURES_SHOWN - 1] in out and names[FAILURES_SHOWN] not in out
