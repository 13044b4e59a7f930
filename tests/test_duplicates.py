"""Duplicated media, planted: a copy under another id, re-encodes and resized copies of images and a video, unrelated
scenes. The copies are found (identical bytes by fingerprint, the others by key-frame hashes within NEAR bits, with a
margin on both sides), `just check` names the leakage across the lists and the training groups it joins, folds keep
a cluster together and are exactly as before where none spans two groups, and the memo serves a hash only for the
file it was made from."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import features.duplicates as duplicates
from features.duplicates import BITS, NEAR, media_hashes, near_duplicate_clusters, near_pairs, phashes
from synth.image import render_image
from synth.video import encode_mp4, render_source
from tracks import get_track
from tracks.uhd_iqa import METADATA, TEST_DIR, TRAIN_DIR
from workbench import check
from workbench.folds import grouped_folds, join_near_duplicates

MARGIN = 4  # bits between the threshold and what the copies and the strangers measure


def distance_matrix(hashes: duplicates.Hashes) -> np.ndarray:
    i, j, bits = near_pairs(hashes, near=BITS)  # every matched pair
    out = np.full((len(hashes.valid),) * 2, np.inf)
    out[i, j] = out[j, i] = bits
    return out


def jpeg(pixels: np.ndarray, path: Path, quality: int, scale: float = 1.0) -> Path:
    image = Image.fromarray(pixels)
    if scale != 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=quality)
    return path


def test_a_video_is_near_its_reencode_and_resized_copy_and_far_from_other_scenes(tmp_path):
    sources = {seed: render_source(seed, 320, 240, 32) for seed in range(3)}  # 4 s at 8 fps: 4 key frames
    for seed, frames in sources.items():
        encode_mp4(frames, tmp_path / f"{seed}.mp4", crf=18)
    encode_mp4(sources[0], tmp_path / "0-crf40.mp4", crf=40)
    small = np.stack([np.asarray(Image.fromarray(f).resize((240, 180), Image.Resampling.BILINEAR)) for f in sources[0]])
    encode_mp4(small, tmp_path / "0-small.mp4", crf=30)
    names = ["0", "1", "2", "0-crf40", "0-small"]
    hashes, _ = media_hashes([str(tmp_path / f"{name}.mp4") for name in names], "video")
    assert hashes.valid.all()  # four key frames each, none flat
    bits = distance_matrix(hashes)
    copies = [bits[0, 3], bits[0, 4], bits[3, 4]]
    strangers = [bits[a, b] for a in range(5) for b in range(a + 1, 5) if {names[a][0], names[b][0]} != {"0"}]
    assert max(copies) <= NEAR - MARGIN and min(strangers) >= NEAR + MARGIN, (copies, strangers)


def test_a_flat_frame_has_no_hash():
    thumbs = np.stack([np.zeros((48, 48)), np.full((48, 48), 128.0), np.random.default_rng(0).random((48, 48))])
    assert phashes(thumbs.astype(np.float32))[1].tolist() == [False, False, True]


@pytest.fixture
def planted(tmp_path):
    """A UHD-IQA layout (each image its own group): train a, b, c, e and d (a recompressed at 3/4 size); test x
    (b's very bytes), y (c recompressed at 4/5 size) and z (another scene)."""
    data = tmp_path / "data"
    scenes = {seed: render_image(seed, 320, 240) for seed in range(6)}
    train, test = data / TRAIN_DIR, data / TEST_DIR
    for name, seed in {"a": 0, "b": 1, "c": 2, "e": 3}.items():
        jpeg(scenes[seed], train / f"{name}.jpg", 95)
    jpeg(scenes[0], train / "d.jpg", 30, 0.75)
    test.mkdir(parents=True)
    shutil.copy(train / "b.jpg", test / "x.jpg")
    jpeg(scenes[2], test / "y.jpg", 40, 0.8)
    jpeg(scenes[4], test / "z.jpg", 95)
    table = pd.DataFrame({"image_name": [f"{n}.jpg" for n in "abcde"], "quality_mos": [0.1, 0.2, 0.3, 0.4, 0.5]})
    table.to_csv(data / METADATA, index=False)
    return data


def test_check_names_identical_files_leakage_and_the_groups_the_folds_join(planted):
    report = check.check(get_track("uhd_iqa"), planted)
    facts = dict(report.facts)
    assert facts["identical files"] == "2 items in 1 set(s): b.jpg = x.jpg"
    assert facts[f"near-duplicates (<= {NEAR} of {BITS} bits)"].startswith("3 pair(s) among 8 files hashed, 3 of")
    assert facts["training groups joined by near-duplicates"] == "1 set(s), each kept in one fold: a.jpg + d.jpg"
    [leak] = report.problems
    assert leak.startswith("2 near-duplicate pair(s) across the training and test lists, in different groups")
    assert "b.jpg ~ x.jpg (0 bits)" in leak and "c.jpg ~ y.jpg" in leak and "z.jpg" not in leak
    assert not check.check(get_track("uhd_iqa"), planted, media=False).problems  # nothing hashed


def test_folds_keep_a_cluster_together_and_are_unchanged_without_one(planted, tmp_path):
    items = get_track("uhd_iqa").read_items(planted).query("split == 'train'")
    clusters = near_duplicate_clusters(items["path"].tolist(), "image", tmp_path / "cache")
    groups = items["group"].to_numpy()
    joined = join_near_duplicates(groups, clusters)
    assert joined.tolist() == ["a.jpg", "b.jpg", "c.jpg", "a.jpg", "e.jpg"]
    folds = grouped_folds(joined, 2, "uhd_iqa", 0)
    assert folds[0] == folds[3] and len(set(folds)) == 2
    alone = items["item_id"] != "d.jpg"  # no cluster spans two groups: groups, and so folds, exactly as before
    unjoined = join_near_duplicates(groups[alone], clusters[alone.to_numpy()])
    assert unjoined.tolist() == groups[alone].tolist()
    assert np.array_equal(grouped_folds(unjoined, 2, "uhd_iqa", 0), grouped_folds(groups[alone], 2, "uhd_iqa", 0))


def test_joined_groups_never_straddle_folds():
    rng = np.random.default_rng(0)
    for _ in range(20):
        groups = rng.integers(0, 30, 200).astype(str)
        clusters = np.arange(200)
        clusters[rng.integers(0, 200, 15)] = rng.integers(0, 200, 15)  # a few clusters across groups, some chained
        folds = grouped_folds(join_near_duplicates(groups, clusters), 5, "kvq", 0)
        assert (pd.Series(folds).groupby(clusters).nunique() == 1).all()
        assert (pd.Series(folds).groupby(groups).nunique() == 1).all()


def test_a_hash_is_served_only_for_the_file_it_was_made_from(planted, tmp_path, monkeypatch):
    paths = sorted(str(p) for p in (planted / TRAIN_DIR).glob("*.jpg"))
    memo = tmp_path / "cache"
    first, digests = media_hashes(paths, "image", memo)
    decoded = []
    read = duplicates._thumbnails_of
    monkeypatch.setattr(duplicates, "_thumbnails_of", lambda path, decoder: decoded.append(path) or read(path, decoder))
    again, _ = media_hashes(paths, "image", memo)
    assert decoded == [] and np.array_equal(again.bits, first.bits) and np.array_equal(again.valid, first.valid)
    jpeg(render_image(5, 320, 240), Path(paths[0]), 95)  # other bytes under the same name
    changed, new_digests = media_hashes(paths, "image", memo)
    assert decoded == [paths[0]] and new_digests[1:] == digests[1:] and new_digests[0] != digests[0]
    assert np.array_equal(changed.bits[1:], first.bits[1:]) and (changed.bits[0] != first.bits[0]).any()


def test_a_memo_of_another_layout_is_hashed_over(tmp_path):
    memo = tmp_path / "cache"
    memo.mkdir()
    pq.write_table(pa.table({"digest": [1, 2]}), memo / duplicates.MEMO)  # an older layout, or not ours at all
    image = jpeg(render_image(0, 320, 240), tmp_path / "a.jpg", 95)
    hashes, _ = media_hashes([str(image)], "image", memo)
    assert hashes.valid.any() and pq.read_schema(memo / duplicates.MEMO).equals(duplicates.MEMO_SCHEMA)
