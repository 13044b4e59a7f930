"""The metadata stream: container facts read without decoding, memoised under the file's content, and a track's
categories one-hot over the training split."""

from __future__ import annotations

import fractions
from types import SimpleNamespace

import av
import numpy as np
import pytest
from PIL import Image

from features.fingerprint import UNREADABLE, fingerprints
from features.metadata import CONTAINER_FACTS, container_facts, container_metadata, one_hot, training_categories
from synth.video import encode_mp4


def _ten_bit(path, width=64, height=48, frames=6, fps=12) -> None:
    """An HEVC clip in yuv420p10le, as HDR10 sources are."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx265", rate=fps, options={"x265-params": "log-level=none"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p10le"
        stream.time_base = fractions.Fraction(1, fps)
        for k in range(frames):
            image = np.full((height, width, 3), 40 * k % 255, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p10le")
            frame.pts = k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_container_facts_say_duration_rate_size_depth_and_sound(tmp_path, tiny_videos):
    silent = tiny_videos(1)["path"][0]  # 64x48, 16 frames at 8 fps, no audio
    facts = dict(zip(CONTAINER_FACTS, container_facts(silent)))
    assert facts["log_duration"] == pytest.approx(np.log1p(2.0), abs=0.05)
    assert facts["fps"] == 8 and facts["log2_width"] == pytest.approx(6.0) and facts["aspect"] == pytest.approx(4 / 3)
    assert facts["bit_depth"] == 8 and facts["has_audio"] == 0 and facts["log_kbps"] > 0
    _ten_bit(tmp_path / "hdr.mp4")
    assert dict(zip(CONTAINER_FACTS, container_facts(str(tmp_path / "hdr.mp4"))))["bit_depth"] == 10
    assert facts["jpeg_quality"] == 0  # no JPEG


def test_a_jpegs_quality_is_read_from_its_own_quantisation_table(tmp_path):
    pixels = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    for quality in (10, 35, 50, 75, 95):
        path = tmp_path / f"q{quality}.jpg"
        Image.fromarray(pixels).save(path, quality=quality)
        facts = dict(zip(CONTAINER_FACTS, container_facts(str(path))))
        assert facts["jpeg_quality"] == pytest.approx(quality, abs=1), quality  # libjpeg's rule rounds its table
    Image.fromarray(pixels).save(tmp_path / "lossless.png")
    assert dict(zip(CONTAINER_FACTS, container_facts(str(tmp_path / "lossless.png"))))["jpeg_quality"] == 0


def test_facts_are_memoised_by_content_and_an_unreadable_file_has_none(tmp_path):
    rng = np.random.default_rng(0)
    paths = [str(tmp_path / f"{k}.mp4") for k in range(2)]
    for path in paths:
        encode_mp4(rng.integers(0, 255, (8, 48, 64, 3), dtype=np.uint8), path)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    paths += [str(tmp_path / "broken.mp4"), str(tmp_path / "absent.mp4")]
    media = fingerprints(paths)
    assert media[3] == UNREADABLE
    first = container_metadata(paths, media, tmp_path / "cache")
    assert np.isfinite(first[:2]).all() and np.isnan(first[2:]).all()
    # The same content is served from the memo; a file rewritten at another size is read again.
    encode_mp4(rng.integers(0, 255, (16, 64, 96, 3), dtype=np.uint8), paths[1])
    again = container_metadata(paths, fingerprints(paths), tmp_path / "cache")
    np.testing.assert_array_equal(again[0], first[0])
    assert again[1, CONTAINER_FACTS.index("log2_width")] == pytest.approx(np.log2(96))


def test_a_category_unseen_in_training_claims_nothing():
    values = ["sadtalker", "wavlip", "sadtalker", "newgen"]
    names = training_categories(values, np.array([True, True, False, False]))
    hot = one_hot(values, names)
    assert names == ["sadtalker", "wavlip"]
    np.testing.assert_array_equal(hot, [[1, 0], [0, 1], [1, 0], [0, 0]])


def test_talking_heads_carry_their_generator_in_the_metadata_stream(tmp_path):
    from features import streams
    from synth import synthesize
    from tracks import get_track

    track = get_track("talking_head")
    synthesize(track, tmp_path / "data", items=16, seed=0, width=48, height=48)
    items = track.read_items(tmp_path / "data")
    items["fingerprint"] = fingerprints(items["path"].tolist())
    loading = streams.Loading(items, track.inputs, None, None, str(tmp_path / "cache"))
    ((key, features),) = streams.FAMILIES.get("meta").load(SimpleNamespace(meta="container"), loading)
    generators = sorted(set(items.loc[items["split"] == "train", "generator"]))
    assert features.x.shape == (len(items), 1, 1, len(CONTAINER_FACTS) + len(generators)) and features.mask.all()
    assert (features.x[:, 0, 0, CONTAINER_FACTS.index("has_audio")] == 1).all()  # every talking head speaks
    assert (features.x[:, 0, 0, len(CONTAINER_FACTS) :].sum(axis=1) <= 1).all() and key.startswith("meta-container")
