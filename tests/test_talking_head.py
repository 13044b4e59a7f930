"""Talking heads: the organisers' lists and example zip read as shipped, the phase following the download, folds by
source image across the three name families, and the audio and sync streams on media with and without sound."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr
from test_extraction import media_of

from features.audio import LogmelStats
from features.extract import extract
from features.reader import read_features
from features.spec import FeatureSpec
from synth.video import encode_mp4, render_source
from tracks import get_track
from tracks.talking_head import TRAIN_LIST, VAL_LIST, generator, source_image
from workbench.cli import main

REFERENCE = Path(__file__).parents[2] / "shared" / "reference" / "thqa"
TRACK = get_track("talking_head")


def reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} is not on this machine")
    return REFERENCE


def test_the_shipped_lists_read_with_the_phase_following_the_download(tmp_path):
    items = TRACK.read_items(reference())
    assert (items.split == "train").sum() == 8927 and (items.split == "test").sum() == 1606
    assert items.loc[items.split == "train", "score"].between(0, 5).all()
    train, test = (set(items.loc[items.split == s, "group"]) for s in ("train", "test"))
    assert not train & test  # no test source image in training, as the organisers say
    for name in (TRAIN_LIST, VAL_LIST):  # before the test list is out: the validation phase
        shutil.copy(REFERENCE / name, tmp_path / name)
    assert (TRACK.read_items(tmp_path).split == "test").sum() == 1714


def test_a_source_image_is_told_apart_across_the_name_families():
    assert source_image("4_dalle3_common_voice_en_35333821_audio2head.mp4") == "4"
    assert source_image("4_voice_en_35092633_ahead.mp4") == "4_voice"
    assert source_image("5372021_SEN_the_small_boy_put_the_worm_on_the_hook_video_lead_1.mp4") == "5372021_SEN"


def test_the_generator_is_read_from_every_name_family():
    assert generator("4_dalle3_common_voice_en_35333821_audio2head.mp4") == "audio2head"
    assert generator("4_voice_en_35092633_ahead.mp4") == "ahead"
    assert generator("5372021_SEN_the_small_boy_put_the_worm_on_the_hook_qp_level_9.mp4") == "SEN_qp_level"
    assert generator("5372021_SEN_the_boy_stream_level_-2.mp4") == "SEN_stream_level"


def test_the_organisers_example_zip_scores_against_their_validation_labels(capsys):
    zip_path, labels = reference() / "baseline_example.zip", REFERENCE / "thqa_ntire_val.csv"
    assert main(["score", "track=talking_head", f"preds={zip_path}", f"truth={labels}"]) == 0
    pred = TRACK.submission.read(zip_path, TRACK.targets)["score"]
    truth = pd.read_csv(labels).set_index("Video")["Score"]
    expected = (spearmanr(pred[truth.index], truth)[0] + pearsonr(pred[truth.index], truth)[0]) / 2
    parts = TRACK.official_score(pred.to_frame(), labels)
    assert parts["score"] == pytest.approx(expected, abs=1e-12) and parts["items"] == 1714
    assert f"{expected:.4f}" in capsys.readouterr().out


def with_sound(path: Path, seconds: float, frames: int = 16, fps: int = 8, silent: bool = False) -> None:
    """A 64x48 clip with `seconds` of a 300 Hz tone (shorter than the video when seconds < frames / fps)."""
    pixels = render_source(2, 64, 48, frames)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        t = np.arange(int(seconds * 16000)) / 16000
        wave = np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * 300 * t)
        for start in range(0, len(wave), 1024):
            frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1024].astype(np.float32), "fltp", "mono")
            frame.sample_rate, frame.pts = 16000, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
        for image in pixels:
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())


def test_audio_and_sync_streams_on_sound_silence_short_sound_and_none(tmp_path):
    paths = {name: tmp_path / f"{name}.mp4" for name in ("sound", "silent", "short", "none")}
    with_sound(paths["sound"], 2.0)
    with_sound(paths["silent"], 2.0, silent=True)
    with_sound(paths["short"], 0.5)  # the sound stops after the first key frame's window
    encode_mp4(render_source(2, 64, 48, 16), paths["none"], fps=8)  # no audio stream at all
    items = pd.DataFrame({"item_id": list(paths), "path": [str(p) for p in paths.values()]})
    audio = FeatureSpec("logmel_stats", frames=2, view="audio", audio_seconds=1.0)
    sync = FeatureSpec("av_sync", frames=2, view="sync", size=32, clip=4, audio_seconds=1.0)
    summary = extract(items, "test", [audio, sync], ["center"], tmp_path / "cache", workers=0, progress=False)
    assert summary.failures.empty and summary.extracted == 4  # no audio is not a failure
    ids = items["item_id"].tolist()
    media = [media_of(items)[i] for i in ids]
    sound, silent, short, none = read_features(summary.folders[0], ids, None, 2, media).x[:, 0]
    assert (sound[:, -1] == 1).all() and (silent[:, -1] == 1).all()  # has_audio
    assert (none == 0).all()  # no stream: zeros, has_audio 0, for every key frame
    assert short[0, -1] == 1 and (short[1] == 0).all()  # the second window is past the sound's end
    silent_index = LogmelStats.names.index("silent")
    assert silent[0, silent_index] == 1.0 and sound[0, silent_index] == 0.0
    sync_x = read_features(summary.folders[1], ids, None, 2, media).x
    assert np.isfinite(sync_x).all() and sync_x.shape[-1] == 11
