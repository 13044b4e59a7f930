"""Test-time views: temporal offsets decode other key frames (once per offset), extraction writes every view a track
declares, a run records them, and a submission is the mean over its views (or over the subset `tta=` names)."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.cache import cached_views
from features.decode import DECODERS, Decoder, FrameSampling
from features.encoding import render_item
from features.extract import extract
from features.inputs import Image
from features.spec import FeatureSpec
from features.views import view_family
from synth.video import encode_mp4
from tracks import get_track
from tracks.base import Track, check_test_views
from workbench.cli import main

FPS, FRAMES = 8, 16  # a 2 s clip: key frames at 1 fps are frames 0 and 8, half a period later frames 4 and 12


def grey_level(index: int) -> int:
    return 10 + 13 * index


@pytest.fixture(scope="module")
def numbered_clip(tmp_path_factory) -> str:
    """A clip whose frame k is flat grey at grey_level(k): a sampled frame's pixels say which frame it was."""
    frames = np.stack([np.full((32, 48, 3), grey_level(k), np.uint8) for k in range(FRAMES)])
    path = tmp_path_factory.mktemp("numbered") / "numbered.mp4"
    encode_mp4(frames, path, fps=FPS)
    return str(path)


def counting(decoder: Decoder, calls: list[FrameSampling]) -> Decoder:
    def read(path: str, sampling: FrameSampling, threads: int = 0):
        calls.append(sampling)
        return decoder.read(path, sampling, threads)

    return dataclasses.replace(decoder, read=read)


def test_a_temporal_offset_decodes_the_frames_half_a_period_later(numbered_clip):
    calls: list[FrameSampling] = []
    decoder = counting(DECODERS.get("video"), calls)
    resize = view_family(FeatureSpec("quality_stats", frames=2, view="resize", size=16))
    sampling = FrameSampling(frames=2, fps=1.0)
    variants = [("center", "hflip@t0.5", "center@t0.5", "hflip")]
    ((center, shifted_flip, shifted, flip),) = render_item(decoder, numbered_clip, sampling, [resize], variants)
    assert [c.phase for c in calls] == [0.0, 0.5]  # one decode per distinct offset
    assert [view for view, _, _ in (center, shifted_flip, shifted, flip)] == list(variants[0])
    levels = {view: np.rint(pixels.mean(dim=(1, 2, 3)).numpy() * 255) for view, pixels, _ in (center, shifted)}
    np.testing.assert_allclose(levels["center"], [grey_level(0), grey_level(8)], atol=3)
    np.testing.assert_allclose(levels["center@t0.5"], [grey_level(4), grey_level(12)], atol=3)
    np.testing.assert_allclose(shifted[2], [0.5, 1.5], atol=1e-3)
    assert (shifted_flip[1] == shifted[1].flip(-1)).all() and (flip[1] == center[1].flip(-1)).all()

    calls.clear()
    render_item(decoder, numbered_clip, sampling, [resize], [("center", "tl", "hflip")])
    assert len(calls) == 1  # no shifted variant asked: no second decode
    assert FrameSampling(phase=0.75).shifted(0.5).phase == 0.25  # the shift wraps within the sampling period


def test_extraction_writes_every_declared_view_as_rows(tiny_videos, tmp_path):
    items = tiny_videos(2)
    views = get_track("kvq").tta_views
    assert any("@t" in v for v in views) and len(views) >= 4
    spec = FeatureSpec("quality_stats", frames=2, size=32)
    summary = extract(items, "kvq", spec, views, cache_root=tmp_path, batch_size=2, workers=0, progress=False)
    cached = cached_views(summary.folder)
    assert set(zip(cached["item_id"], cached["view"])) == {(i, v) for i in items["item_id"] for v in views}
    rows = pd.concat(pd.read_parquet(p, columns=["item_id", "view", "time"]) for p in summary.folder.glob("part-*"))
    times = rows.groupby("view")["time"].apply(sorted)
    np.testing.assert_allclose(times["center@t0.5"], np.add(times["center"], 0.5), atol=1e-3)


def test_images_refuse_temporal_views_and_tracks_check_their_declaration(tmp_path):
    image = FeatureSpec("quality_stats", decoder="image", frames=1, view="resize", size=32)
    items = pd.DataFrame({"item_id": ["a.png"], "path": [str(tmp_path / "a.png")]})
    with pytest.raises(ValueError, match="center@t0.5 shift key frames in time .* image media have no time axis"):
        extract(items, "fiqa", image, ["center", "center@t0.5"], cache_root=tmp_path, progress=False)

    class TimedImages(Track):
        name, inputs, tta_views = "timed_images", (Image(),), ("center", "hflip@t0.5")

    with pytest.raises(ValueError, match="track timed_images: tta_views center, hflip@t0.5: .*no time axis"):
        check_test_views(TimedImages)
    TimedImages.tta_views = ("center", "s0")
    with pytest.raises(ValueError, match="s0 belong to none of the view families resize"):
        check_test_views(TimedImages)
    TimedImages.tta_views, TimedImages.demo_views = ("center", "tl"), ("center@t0.5",)
    with pytest.raises(ValueError, match="track timed_images: demo_views center@t0.5: .*no time axis"):
        check_test_views(TimedImages)


def submitted(out: Path) -> pd.Series:
    (path,) = out.glob("kvq-*/kvq-*.zip")
    with zipfile.ZipFile(path) as archive, archive.open("prediction.csv") as handle:
        return pd.read_csv(handle).set_index("filename")["score"]


def test_a_submission_is_the_mean_over_its_views(tmp_path, capsys):
    data, runs = tmp_path / "data", tmp_path / "runs"
    common = [f"data={data}", f"cache={tmp_path / 'cache'}", "frames=2", "size=32"]
    assert main(["synth", f"out={data}", "items=24", "seed=1", "width=64", "height=96"]) == 0
    assert main(["extract", *common]) == 0  # the track's declared views
    assert main(["train", *common, f"runs_dir={runs}", "folds=2", "epochs=3"]) == 0
    (run,) = (runs / "kvq").iterdir()
    views = get_track("kvq").tta_views
    assert sorted(json.loads((run / "config.json").read_text())["views"]) == sorted(views)

    def submit(*words: str) -> pd.Series:
        out = tmp_path / "subs" / "-".join(words or ("all",))
        assert main(["submit", f"runs_dir={runs}", f"out={out}", *words]) == 0
        return submitted(out)

    every = submit()
    each = pd.DataFrame({view: submit(f"tta={view}") for view in views})
    assert each.nunique(axis=1).gt(1).all()  # the views disagree, so one view alone could not pass for the mean
    np.testing.assert_allclose(every.to_numpy(), each.mean(axis=1).to_numpy(), rtol=1e-12)
    subset = submit("tta=center,tl")
    np.testing.assert_allclose(subset.to_numpy(), each[["center", "tl"]].mean(axis=1).to_numpy(), rtol=1e-12)
    assert not np.allclose(subset.to_numpy(), every.to_numpy())

    capsys.readouterr()
    assert main(["submit", f"runs_dir={runs}", f"out={tmp_path / 'none'}", "tta=center,vflip"]) == 2
    assert "view(s) vflip not predicted (available: br, center, center@t0.5, hflip, tl)" in capsys.readouterr().err
