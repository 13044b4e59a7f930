"""Feature streams: clips decoded with the key frames in one pass, a motion stream cached beside the key-frame sets,
a head pooling each stream over its own axis, and targets missing for some items masked rather than NaN."""

from __future__ import annotations

import dataclasses

import av
import numpy as np
import pandas as pd
import pytest
import torch
from test_extraction import media_of

from features import decode
from features.decode import DECODERS, FrameSampling, sample_video
from features.encoding import shared_sampling
from features.extract import extract
from features.motion import TemporalStats
from features.reader import read_features
from features.spec import FeatureSpec
from features.views import view_family
from synth.video import encode_mp4, render_source
from workbench.config import TrainConfig
from workbench.heads import create_head
from workbench.losses import CombinedLoss

FRAME_SPEC = FeatureSpec("quality_stats", size=32, frames=3)
MOTION_SPEC = FeatureSpec("temporal_stats", size=16, frames=3, view="clip", clip=4)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "a.mp4"
    encode_mp4(render_source(3, 64, 48, 20), path, fps=8)  # 2.5 s: key frames at 0, 1, 2 s
    return str(path)


def every_frame(path: str) -> np.ndarray:
    with av.open(path) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_clips_are_the_consecutive_frames_from_each_key_frame(clip_file):
    plain = sample_video(clip_file, FrameSampling(3, 1.0, 0.0))
    with_clips = sample_video(clip_file, FrameSampling(3, 1.0, 0.0, clip=4))
    frames = every_frame(clip_file)
    np.testing.assert_array_equal(with_clips.frames, plain.frames)  # the key frames are as they were
    assert with_clips.clips.shape == (3, 4, 48, 64, 3)
    for k, start in enumerate((0, 8, 16)):
        np.testing.assert_array_equal(with_clips.clips[k], frames[start : start + 4])
    # A clip the video ends inside is dropped, never padded (a padded clip would look frozen).
    assert sample_video(clip_file, FrameSampling(3, 1.0, 0.0, clip=6)).clips.shape[0] == 2
    scaled = sample_video(clip_file, FrameSampling(3, 1.0, 0.0, clip=4, clip_side=24))
    assert scaled.clips.shape == (3, 4, 24, 32, 3)


def test_the_last_key_frames_clip_is_read_on_past_the_last_target(tmp_path):
    path = tmp_path / "long.mp4"
    encode_mp4(render_source(1, 64, 48, 80), path, fps=8)  # 10 s, B-frames: packets remain after the last target
    sampled = sample_video(str(path), FrameSampling(8, 1.0, 0.0, clip=8))
    assert sampled.clips.shape == (8, 8, 48, 64, 3)
    np.testing.assert_array_equal(sampled.clips[7], every_frame(str(path))[56:64])


def test_the_clip_family_crops_every_frame_of_a_clip_alike(clip_file):
    clips = sample_video(clip_file, MOTION_SPEC.sampling()).clips
    center, mirrored = view_family(MOTION_SPEC).render(clips, ["center", "hflip"])
    assert center.shape == (3, 4, 3, 16, 16)
    torch.testing.assert_close(mirrored, center.flip(-1))


def test_a_motion_stream_is_extracted_from_the_same_decode(clip_file, tmp_path, monkeypatch):
    calls = []
    video = DECODERS.get("video")
    monkeypatch.setitem(
        DECODERS._entries, "video", dataclasses.replace(video, read=lambda *a: calls.append(a[1]) or video.read(*a))
    )
    items = pd.DataFrame({"item_id": ["a"], "path": [clip_file]})
    summary = extract(items, "test", [FRAME_SPEC, MOTION_SPEC], ["center", "hflip"], tmp_path, workers=0)
    assert calls == [shared_sampling([FRAME_SPEC, MOTION_SPEC])]  # one decode for both sets
    media = list(media_of(items).values())
    frames, motion = (read_features(folder, ["a"], None, 3, media) for folder in summary.folders)
    assert frames.x.shape[-1] != motion.x.shape[-1] and motion.mask.all()
    assert np.isfinite(motion.x).all() and np.ptp(motion.x[0, 0], axis=0).any()  # clips differ from each other
    assert "clip" not in FRAME_SPEC.identity()["sampling"] and MOTION_SPEC.identity()["sampling"]["clip"] == 4


def test_a_stream_config_reads_as_key_frames_then_motion():
    cfg = TrainConfig(track="xgc_ugc", frames=3, size=32, motion="temporal_stats", clip=4, clip_size=16)
    frames, (motion,) = cfg.streams("video")
    assert [s.view for s in frames] == ["resize"] and (motion.view, motion.clip, motion.size) == ("clip", 4, 16)
    assert cfg.all_specs("video") == (*frames, motion)
    assert dataclasses.replace(cfg, motion="").streams("video") == (frames,)
    with pytest.raises(ValueError, match="clip"):
        FeatureSpec("temporal_stats", view="clip", clip=1)
    with pytest.raises(ValueError, match="no time axis"):
        FeatureSpec("temporal_stats", decoder="image", view="clip", clip=4)


def test_a_linear_head_scores_the_mean_of_its_frames_and_pools_each_stream_alone():
    torch.manual_seed(0)
    x, mask = torch.randn(5, 4, 6), torch.rand(5, 4) > 0.3
    mask[:, 0] = True
    head = create_head("linear", 6, out=2, hidden=8)
    head.fit_standardization([(x, mask)], torch.randn(5, 2))
    per_frame = head.regressor((x - head.mean_0) / head.std_0) * head.target_std + head.target_mean
    expected = (per_frame * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(head(x, mask), expected)

    clips, clip_mask = torch.randn(5, 2, 3), torch.zeros(5, 2, dtype=torch.bool)  # no whole clip in any item
    two = create_head("linear", [6, 3], out=2, hidden=8)
    two.fit_standardization([(x, mask), (clips[:1], torch.ones(1, 2, dtype=torch.bool))], torch.randn(5, 2))
    pooled = two(x, mask, clips, clip_mask)
    assert pooled.shape == (5, 2) and torch.isfinite(pooled).all()
    with pytest.raises(ValueError, match="2 stream"):
        two(x, mask)


def test_missing_targets_are_masked_in_standardisation_and_losses():
    y = torch.tensor([[1.0, float("nan")], [3.0, 10.0], [5.0, 20.0]])
    head = create_head("linear", 2, out=2)
    head.fit_standardization([(torch.randn(3, 1, 2), torch.ones(3, 1, dtype=torch.bool))], y)
    torch.testing.assert_close(head.target_mean, torch.tensor([3.0, 15.0]))
    torch.testing.assert_close(head.target_std, torch.tensor([np.sqrt(8 / 3), 5.0]).float())
    loss, pred = CombinedLoss.from_spec("mse:1,plcc:1"), torch.tensor([[1.0, 0.0], [2.0, 11.0], [6.0, 19.0]])
    per_column = torch.stack([loss(pred[:, 0], y[:, 0]), loss(pred[1:, 1], y[1:, 1])]).mean()
    torch.testing.assert_close(loss(pred, y), per_column)
    assert torch.isfinite(loss(pred, torch.full_like(y, float("nan"))))


def test_xgc_ugc_scores_each_dimension_over_its_labelled_items():
    from tracks.xgc_ugc import DIMENSIONS, dimension_scores

    rng = np.random.default_rng(0)
    truth = pd.DataFrame(rng.normal(50, 10, (20, 6)), columns=list(DIMENSIONS))
    truth.iloc[:5, 0] = np.nan
    parts = dimension_scores(truth.fillna(0.0), truth)
    assert parts["score"] == pytest.approx(1.0) and parts["color_srcc"] == pytest.approx(1.0)


def test_probes_name_what_is_wrong_without_decoding(clip_file, tmp_path):
    (tmp_path / "text.mp4").write_text("not a video")
    decode.probe_video(clip_file)
    with pytest.raises(decode.MediaError, match="Invalid data"):
        decode.probe_video(str(tmp_path / "text.mp4"))
    with pytest.raises(decode.MediaError, match="cannot read image"):
        decode.probe_image(clip_file)


def test_a_run_reads_both_streams_and_a_sweep_tries_it_without_motion(tmp_path):
    from workbench import sweep
    from workbench.cli import main
    from workbench.config import build
    from workbench.data import load_training_data
    from workbench.runs import Run

    data = tmp_path / "data"
    where = ["track=xgc_ugc", f"data={data}", f"cache={tmp_path / 'cache'}", "size=32", "clip_size=16", "clip=4"]
    assert main(["synth", "track=xgc_ugc", f"out={data}", "items=12", "width=64", "height=48"]) == 0
    assert main(["extract", *where, "workers=0"]) == 0
    words = [*where, f"runs_dir={tmp_path / 'runs'}", "folds=2", "epochs=2"]
    assert main(["train", *words]) == 0

    cfg = build(TrainConfig, dict(w.split("=") for w in words), {"motion": "temporal_stats", "frames": 8})
    data_ = load_training_data(cfg)
    assert len(data_.features.parts) == 2 and data_.features.dims[1] == TemporalStats.dim  # temporal_stats' width
    (run,) = (tmp_path / "runs" / "xgc_ugc").iterdir()
    keys = Run(run).config["feature_key"].split("+")
    assert keys[0].startswith("quality_stats__resize32__") and keys[1].startswith("temporal_stats__clip16__")
    names = [feature_set.name for feature_set in sweep.cached_feature_sets(cfg)]
    assert names[:2] == ["+".join(keys), keys[0]]  # the default's streams, then its key frames alone
