"""The ICME HDR/SDR tracks (tracks.hdr) and the pairs they compare (features.pairs): references from names or a
column, every bad input refused with the file named, pairs decoded on the same moments whatever their rates, 10-bit
detail reaching the features, a changed reference never served, and the exported programs run as the challenge
runs them. The conformance suite (test_tracks.py) runs both tracks from synthetic data to a zip and an export."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from features.decode import DECODERS, FrameSampling, MediaError
from features.extract import extract
from features.fingerprint import REFERENCE, item_fingerprints
from features.pairs import create_pair_encoder, read_pair
from features.reader import read_features
from features.spec import FeatureSpec
from synth import hdr as synth_hdr
from tracks import LayoutError, get_track
from tracks.hdr import REFERENCE_TAG
from workbench.cli import main
from workbench.predictor import main as predict

HDR10, SDR = synth_hdr.SIGNALS["HDR10"], synth_hdr.SIGNALS["SDR"]
UNTAGGED_10_BIT = synth_hdr.Signal("yuv420p10le", 10, "bt2020nc", "", (2, 2, 2, 0))
PQ_AT_8_BITS = synth_hdr.Signal("yuv420p", 8, "bt2020nc", HDR10.x265_tags, HDR10.codes)
SAMPLING = FrameSampling(frames=3)
HDR = DECODERS.get("hdr")
FR = FeatureSpec("ffmpeg", decoder="hdr", view="fr", frames=3, light="perceptual")  # the light is for KEY_FRAMES
KEY_FRAMES = FeatureSpec("quality_stats", decoder="hdr", frames=3, size=32, light="perceptual")


def planes(width: int = 64, height: int = 48, seed: int = 0, signal=HDR10) -> tuple[np.ndarray, ...]:
    """The Y'CbCr planes of a synthetic scene (3 s at 8 fps) coded as `signal` codes its range."""
    nits = synth_hdr.render_scene(synth_hdr.Scene.draw(np.random.default_rng(seed)), width, height)
    coding = synth_hdr.hdr10_signal if signal.bit_depth > 8 else synth_hdr.sdr_signal
    return synth_hdr.rgb_to_yuv(coding(nits), signal.matrix, signal.bit_depth)


def video(path: Path, yuv, signal=HDR10, fps: int = synth_hdr.FPS) -> str:
    synth_hdr.encode_planes(path, *yuv, signal, qp=None, fps=fps)  # lossless: what is decoded is what was written
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hdr") / "data"
    synth_hdr.synthesize(folder, items=12, seed=3, width=64, height=48)
    return folder


# --- lists and references ---------------------------------------------------------------------------------------------


def test_references_come_from_the_names_or_a_column(data, tmp_path):
    items = get_track("hdr_fr").read_items(data)
    for item, reference in zip(items["item_id"], items[REFERENCE]):
        assert Path(reference).name == "_".join(item.split("_")[:3]) + f"_{REFERENCE_TAG}.mp4"
        assert Path(reference).is_file()
    assert REFERENCE not in get_track("hdr_nr").read_items(data)  # no reference: the NR track never reads one

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    test = pd.read_csv(copy / "test.csv")
    first = Path(items.set_index("item_id").loc[test["video"].iloc[0], REFERENCE]).name
    test[REFERENCE] = [first] + [""] * (len(test) - 1)  # a column naming it, blank where the name decides
    test.to_csv(copy / "test.csv", index=False)
    from_column = get_track("hdr_fr").read_items(copy)
    assert [Path(r).name for r in from_column[REFERENCE]] == [Path(r).name for r in items[REFERENCE]]


def test_a_missing_reference_or_one_of_another_content_is_refused_naming_the_item(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    test = pd.read_csv(copy / "test.csv")
    item = test["video"].iloc[0]
    other = next(v for v in pd.read_csv(copy / "train.csv")["video"] if v.split("_")[1] != item.split("_")[1])
    test[REFERENCE] = [get_track("hdr_fr").read_items(data).set_index("item_id").loc[other, REFERENCE]] + [""] * (
        len(test) - 1
    )
    test[REFERENCE] = test[REFERENCE].map(lambda p: Path(p).name if p else "")
    test.to_csv(copy / "test.csv", index=False)
    with pytest.raises(LayoutError, match=f"{item}'s reference .* another content"):
        get_track("hdr_fr").read_items(copy)

    test.drop(columns=REFERENCE).to_csv(copy / "test.csv", index=False)
    reference = copy / "videos" / get_track("hdr_fr").read_items(copy).set_index("item_id").loc[item, REFERENCE]
    Path(reference).unlink()
    with pytest.raises(LayoutError, match=f"{item}'s reference .* not found"):
        get_track("hdr_fr").read_items(copy)


def test_a_video_in_both_lists_is_refused_naming_it(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    train, test = pd.read_csv(copy / "train.csv"), pd.read_csv(copy / "test.csv")
    pd.concat([test, train[["video"]].head(1)]).to_csv(copy / "test.csv", index=False)
    with pytest.raises(LayoutError, match=f"in both the training and the test list, e.g. '{train['video'].iloc[0]}'"):
        get_track("hdr_nr").read_items(copy)


# --- pairs ------------------------------------------------------------------------------------------------------------


def test_pairs_at_different_rates_meet_at_the_same_moments(tmp_path):
    yuv = planes(seed=1)
    distorted = video(tmp_path / "a.mp4", yuv)
    doubled = tuple(np.repeat(plane, 2, axis=0) for plane in yuv)  # 16 fps: every frame shown twice, same moments
    reference = video(tmp_path / "b.mp4", doubled, fps=2 * synth_hdr.FPS)
    pair = read_pair(HDR, distorted, reference, SAMPLING)
    np.testing.assert_allclose(pair.reference.times, pair.times, atol=1e-3)
    for mine, theirs in zip(pair.planes, pair.reference.planes, strict=True):
        np.testing.assert_array_equal(mine.y, theirs.y)  # the same picture, not frame k of each


def test_pair_members_of_different_lengths_or_sizes_are_refused_naming_both(tmp_path):
    yuv = planes(seed=2)
    full = video(tmp_path / "full.mp4", yuv)
    cut = video(tmp_path / "cut.mp4", tuple(plane[:16] for plane in yuv))
    with pytest.raises(MediaError, match="24 frames at 8 fps .*cut.mp4's 16 at 8 fps"):
        read_pair(HDR, full, cut, SAMPLING)
    small = video(tmp_path / "small.mp4", planes(width=32, height=24, seed=2))
    with pytest.raises(MediaError, match="64x48, larger than its reference .*small.mp4 .32x24."):
        read_pair(HDR, full, small, SAMPLING)
    sdr = video(tmp_path / "sdr.mp4", planes(seed=2, signal=SDR), SDR)
    with pytest.raises(MediaError, match="transfer pq but its reference .*sdr.mp4's is bt709"):
        read_pair(HDR, full, sdr, SAMPLING)


def _extract(items: pd.DataFrame, specs, cache: Path):
    return extract(items, "hdr_fr", specs, ["center"], cache_root=cache, workers=0, progress=False)


def _vectors(folder: Path, items: pd.DataFrame) -> np.ndarray:
    """[N, T, D] of the items' `center` rows, bound to their pairs as they are now."""
    return read_features(folder, items["item_id"].tolist(), ["center"], 3, item_fingerprints(items)).x[:, 0]


def test_an_untagged_10_bit_stream_is_read_as_hdr10_and_the_extraction_says_so(tmp_path):
    untagged = video(tmp_path / "clip.mp4", planes(seed=4), UNTAGGED_10_BIT)
    named = video(tmp_path / "5_Clip_SDR_64x48_800k.mp4", planes(seed=4), UNTAGGED_10_BIT)
    items = pd.DataFrame({"item_id": ["plain", "named"], "path": [untagged, named]})
    facts = _extract(items, KEY_FRAMES, tmp_path / "cache").facts.set_index("path")
    assert facts.loc[untagged, ["transfer", "primaries", "bit_depth", "colour_from"]].tolist() == [
        "pq", "bt2020", 10, "default"
    ]  # fmt: skip
    assert facts.loc[named, ["transfer", "colour_from"]].tolist() == ["bt709", "file name"]
    recorded = pd.read_parquet(next((tmp_path / "cache" / "hdr_fr").glob("*/media-facts.parquet")))
    assert set(recorded["colour_from"]) == {"default", "file name"}


def test_an_8_bit_stream_tagged_pq_is_a_failure_naming_it_and_the_run_goes_on(tmp_path):
    fake = video(tmp_path / "fake.mp4", planes(seed=5, signal=SDR), PQ_AT_8_BITS)
    fine = video(tmp_path / "fine.mp4", planes(seed=5))
    items = pd.DataFrame({"item_id": ["fake", "fine"], "path": [fake, fine]})
    summary = _extract(items, KEY_FRAMES, tmp_path / "cache")
    assert summary.failures["item_id"].tolist() == ["fake"] and summary.extracted == 1
    assert "8-bit stream with an HDR transfer" in summary.failures["reason"].iloc[0]
    assert summary.facts.set_index("path").loc[fake, "error"].startswith("8-bit stream with an HDR transfer")


def test_a_changed_reference_is_never_served_the_old_pairs_rows(tmp_path):
    yuv = planes(seed=6)
    distorted = video(tmp_path / "d.mp4", tuple(p.copy() for p in yuv))
    reference = tmp_path / "r.mp4"
    video(reference, yuv)
    items = pd.DataFrame({"item_id": ["d"], "path": [distorted], REFERENCE: [str(reference)]})
    cache = tmp_path / "cache"
    first = _extract(items, FR, cache)
    before = _vectors(first.folder, items)
    video(reference, tuple(np.clip(p.astype(int) + 8, 0, 1023).astype(np.uint16) for p in yuv))  # a brighter one
    again = _extract(items, FR, cache)
    assert (again.extracted, again.changed) == (1, 1)
    after = _vectors(again.folder, items)
    assert not np.allclose(before, after)
    identical = before[0, 0]  # identical members: SSIM 1, PSNR at its cap
    assert identical[0] == pytest.approx(1.0) and identical[1] == pytest.approx(100.0)


def test_10_bit_detail_reaches_the_features(tmp_path):
    """An HDR10 clip and its own 8-bit rounding (the same Y' with its two lowest bits rounded off) give different
    key-frame features and different full-reference metrics against the same reference."""
    y, u, v = planes(seed=7)
    rounded = ((y.astype(np.int32) + 2) >> 2 << 2).clip(0, 1020).astype(np.uint16)
    assert 0 < np.abs(rounded.astype(int) - y).max() <= 2
    reference = video(tmp_path / "ref.mp4", (y, u, v))
    items = pd.DataFrame(
        {
            "item_id": ["fine", "rounded"],
            "path": [video(tmp_path / "fine.mp4", (y, u, v)), video(tmp_path / "rounded.mp4", (rounded, u, v))],
            REFERENCE: [reference, reference],
        }
    )
    summary = _extract(items, [KEY_FRAMES, FR], tmp_path / "cache")
    key_frames, metrics = (_vectors(folder, items) for folder in summary.folders)
    assert np.abs(key_frames[0] - key_frames[1]).max() > 1e-4
    assert metrics[0, 0, 1] == pytest.approx(100.0)  # the fine clip is its reference: PSNR at the cap
    assert 50 < metrics[1, 0, 1] < 100  # the rounding, seen at 16 bits: finite PSNR


# --- the programs the challenge runs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("track", ["hdr_fr", "hdr_nr"])
def test_the_exported_program_takes_a_pair_as_the_challenge_passes_it(track, data, tmp_path):
    where = [f"track={track}", f"data={data}", f"cache={tmp_path / 'cache'}", f"runs_dir={tmp_path / 'runs'}"]
    tiny = ["size=32", "views=center", "pair="]  # the pair stream's resnet18 is the conformance suite's to run
    assert main(["extract", *where[:3], *tiny, "workers=0"]) == 0
    assert main(["train", *where, *tiny, "folds=2", "epochs=2"]) == 0
    assert main(["export", *where[:2], where[3], f"out={tmp_path / 'exports'}"]) == 0
    (folder,) = (p for p in (tmp_path / "exports").iterdir() if p.is_dir())
    items = get_track("hdr_fr").read_items(data).query("split == 'test'")
    distorted, reference = items["path"].iloc[0], items[REFERENCE].iloc[0]
    given = reference if track == "hdr_fr" else str(tmp_path / "dummy")  # NR: a dummy path, accepted and ignored
    assert predict([distorted, given, str(tmp_path / "result")], folder) == 0
    assert 0 < float((tmp_path / "result").read_text()) < 10
    if track == "hdr_fr":
        assert predict([distorted, str(tmp_path / "gone.mp4"), str(tmp_path / "result")], folder) == 1


def test_the_answers_range_is_the_rules_by_default_and_the_templates_on_request():
    pred = pd.DataFrame({"score": [4.8, 7.5, 10.8]})  # JOD passes 10: the rules' 0 to 10 takes it in, in order
    rules = get_track("hdr_fr").range_map(pred).apply(pred)["score"]
    assert (rules > 0).all() and (rules < 10).all() and rules.is_monotonic_increasing
    template = get_track("hdr_fr").with_range(0, 100)
    np.testing.assert_allclose(template.range_map(pred).apply(pred)["score"], pred["score"], atol=1e-3)
    with pytest.raises(ValueError, match="not bounded"):
        get_track("kvq").with_range(0, 100)


def test_dists_terms_are_one_for_identical_members_and_fall_with_distortion():
    encoder = create_pair_encoder("dists:test_resnet")
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    noisy = (image + 0.3 * torch.randn(image.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    same, distorted = encoder(torch.stack([image, image], dim=1)), encoder(torch.stack([noisy, image], dim=1))
    assert same.shape == (1, encoder.dim) == distorted.shape and encoder.dim == 2 * sum(encoder.channels)
    torch.testing.assert_close(same, torch.ones_like(same))
    assert (distorted <= 1 + 1e-6).all() and distorted.mean() < same.mean() - 0.01
    with pytest.raises(ValueError, match="dists:<timm model>"):
        create_pair_encoder("resnet18")
