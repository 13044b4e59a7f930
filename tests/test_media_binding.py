"""A cached vector is served only for the very file it was made from: other bytes under the same id are extracted
again (beside the old version, which stays until a prune), the same bytes at another path are served from the cache,
and nothing downstream trains or submits on rows of a file that has changed since."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_extraction import (
    KEY_FRAMES,
    SPEC,
    TRACK,
    assert_one_row_set_per_item_and_view,
    fast_twin,  # noqa: F401 - a fixture
    media_of,
    part_rows,
    read_items,
    run,
)

from features.cache import CacheError, live_parts, read_failures, read_manifest
from features.fingerprint import MEMO, UNREADABLE, file_digest, fingerprints
from features.inventory import prune
from features.reader import StaleFeatures
from synth import synthesize
from synth.video import encode_mp4, render_source
from workbench.cli import main

TINY = (64, 48, 16)  # as the tiny_videos fixture makes them


def reencode(path: str | Path, seed: int, crf: int = 23) -> None:
    """Other content under the same name, as a re-download or a repaired file brings."""
    encode_mp4(render_source(seed, *TINY), path, fps=8, crf=crf)


# ------------------------------------------------------------------------------------------------- fingerprints


def test_fingerprints_follow_content_not_path_or_time(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * 1000)
    shutil.copy(a, b)  # a copy: another inode and modification time, the same bytes
    first = fingerprints([str(a), str(b), str(tmp_path / "missing")], tmp_path)
    assert first[0] == first[1] == file_digest(a) and first[2] == UNREADABLE

    # One byte changed in place, same size, modification time set back: the change time still moved.
    status = os.stat(a)
    time.sleep(0.01)
    a.write_bytes(b"x" * 999 + b"y")
    os.utime(a, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert fingerprints([str(a)], tmp_path) == [file_digest(a)] != [first[0]]


def test_the_memo_serves_unchanged_files_without_reading_them(tmp_path, monkeypatch):
    files = [tmp_path / f"{k}.bin" for k in range(3)]
    for k, path in enumerate(files):
        path.write_bytes(bytes([k]) * 100)
    expected = fingerprints([str(p) for p in files], tmp_path)
    assert (tmp_path / MEMO).is_file()
    from features import fingerprint

    monkeypatch.setattr(fingerprint, "file_digest", lambda path: pytest.fail(f"{path} was read again"))
    assert fingerprints([str(p) for p in files], tmp_path) == expected
    memo = pq.read_table(tmp_path / MEMO).to_pandas()
    assert sorted(memo["path"]) == sorted(str(p.resolve()) for p in files)


def test_a_read_only_memo_costs_a_rehash_and_nothing_else(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    memo_dir = tmp_path / "memo"
    memo_dir.mkdir()
    (memo_dir / MEMO).mkdir()  # cannot be replaced by a file
    assert fingerprints([str(path)], memo_dir) == [file_digest(path)]


# --------------------------------------------------------------------------------------------------- extraction


def test_a_file_replaced_under_the_same_name_is_extracted_again(tiny_videos, tmp_path):
    items = tiny_videos(3)
    first = run(items, tmp_path / "cache", ["center", "hflip"])
    reencode(items["path"].iloc[1], seed=40)

    again = run(items, tmp_path / "cache", ["center", "hflip"])
    assert (again.already_cached, again.extracted, again.changed) == (2, 1, 1)
    rows = part_rows(first.folder)
    current = rows["fingerprint"] == rows["item_id"].map(media_of(items))
    assert_one_row_set_per_item_and_view(rows[current], items["item_id"], ["center", "hflip"])
    assert set(rows.loc[~current, "item_id"]) == {"clip001"}  # the old version stays beside the new one
    fresh = run(items, tmp_path / "fresh", ["center", "hflip"])
    np.testing.assert_array_equal(
        read_items(again.folder, items, ["center", "hflip"]).x, read_items(fresh.folder, items, ["center", "hflip"]).x
    )


def test_a_copied_data_folder_is_served_from_the_cache(tiny_videos, tmp_path):
    items = tiny_videos(3)
    run(items, tmp_path / "cache")
    copy = tmp_path / "elsewhere"
    shutil.copytree(Path(items["path"].iloc[0]).parent, copy)
    moved = items.assign(path=[str(copy / Path(p).name) for p in items["path"]])

    again = run(moved, tmp_path / "cache")
    assert (again.already_cached, again.extracted, again.changed) == (3, 0, 0)
    assert read_items(again.folder, moved, ["center"]).mask[..., :KEY_FRAMES].all()


def test_a_repaired_file_that_had_failed_is_extracted_and_its_failure_forgotten(tiny_videos, tmp_path):
    items = tiny_videos(2)
    broken = Path(items["path"].iloc[1])
    good = broken.read_bytes()
    broken.write_bytes(b"not a video")
    failed = run(items, tmp_path)
    assert list(failed.failures["item_id"]) == ["clip001"]

    broken.write_bytes(good)
    assert read_failures(failed.folder, media_of(items)).empty  # the failure was of the file as it was
    repaired = run(items, tmp_path)
    assert (repaired.extracted, repaired.changed, len(repaired.failures)) == (1, 0, 0)


def test_a_part_left_beside_its_rewrite_by_a_kill_is_never_read(tiny_videos, tmp_path):
    items = tiny_videos(4)
    folder = run(items, tmp_path).folder
    (original,) = live_parts(folder)
    kept = original.read_bytes()
    reencode(items["path"].iloc[0], seed=60)
    run(items, tmp_path)
    prune(tmp_path, TRACK, keep={TRACK: set(media_of(items).items())})  # the old version of clip000 goes
    assert not original.exists()
    original.write_bytes(kept)  # as if the kill came between writing the next generation and unlinking this one

    assert original not in live_parts(folder)
    assert read_items(folder, items, ["center"]).mask[..., :KEY_FRAMES].all()  # nothing stale, nothing twice
    run(items, tmp_path)
    assert not original.exists()


# ---------------------------------------------------------------------------------------- train, sweep, submit


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory) -> tuple[Path, Path]:
    """Two KVQ-layout datasets of other content with the same ids (train/0000.mp4, ...)."""
    from tracks import get_track

    folder = tmp_path_factory.mktemp("two-kvq")
    for name, seed in (("a", 1), ("b", 2)):
        synthesize(get_track("kvq"), folder / name, 24, seed=seed, width=96, height=64)
    return folder / "a", folder / "b"


FEATURES = ["frames=3", "size=64", "views=center"]
TRAIN = [*FEATURES, "epochs=4", "folds=3"]


def oof(runs: Path) -> pd.DataFrame:
    (run_dir,) = [p for p in (runs / "kvq").iterdir() if p.is_dir()]
    frames = [pd.read_parquet(f) for f in sorted(run_dir.glob("fold-*/oof.parquet"))]
    return pd.concat(frames).sort_values(["item_id", "view"]).reset_index(drop=True)


def test_a_second_dataset_with_the_same_ids_is_extracted_in_full(two_datasets, tmp_path, capsys):
    a, b = two_datasets
    shared, fresh = tmp_path / "shared", tmp_path / "fresh"
    assert main(["extract", f"data={a}", f"cache={shared}", *FEATURES]) == 0
    capsys.readouterr()
    assert main(["extract", f"data={b}", f"cache={shared}", *FEATURES]) == 0
    lines = capsys.readouterr().out.splitlines()
    cells = lines[next(k for k, line in enumerate(lines) if line.startswith("┡")) + 1].strip("│").split("│")
    items = len(pd.read_csv(b / "train_data.csv")) + len(pd.read_csv(b / "test_data.csv"))
    assert [c.strip() for c in cells[:5]] == [str(items), "center", "0", str(items), str(items)]

    assert main(["extract", f"data={b}", f"cache={fresh}", *FEATURES]) == 0
    for cache, runs in ((shared, tmp_path / "runs-shared"), (fresh, tmp_path / "runs-fresh")):
        assert main(["train", f"data={b}", f"cache={cache}", f"runs_dir={runs}", *TRAIN]) == 0
    pd.testing.assert_frame_equal(oof(tmp_path / "runs-shared"), oof(tmp_path / "runs-fresh"))


def test_train_and_submit_refuse_features_of_files_changed_since(two_datasets, tmp_path, capsys):
    a, _ = two_datasets
    data, cache, runs = tmp_path / "data", tmp_path / "cache", tmp_path / "runs"
    shutil.copytree(a, data)
    common = [f"data={data}", f"cache={cache}"]
    assert main(["extract", *common, *FEATURES]) == 0
    assert main(["train", *common, f"runs_dir={runs}", *TRAIN]) == 0
    reencode(data / "train" / "0003.mp4", seed=70)
    reencode(data / "test" / "0001.mp4", seed=71)
    capsys.readouterr()

    assert main(["train", *common, f"runs_dir={runs}", *TRAIN]) == 2
    error = capsys.readouterr().err
    assert "2 item(s) changed on disk" in error and "train/0003.mp4" in error and "just extract" in error
    assert len([p for p in (runs / "kvq").iterdir() if p.is_dir()]) == 1

    assert main(["submit", *common[:1], f"runs_dir={runs}", f"out={tmp_path / 'subs'}"]) == 2
    error = capsys.readouterr().err
    assert "whose files have changed" in error and "test/0001.mp4" in error
    assert not (tmp_path / "subs").exists()

    assert main(["extract", *common, *FEATURES]) == 0  # refreshed: both re-extracted, then training goes on
    assert main(["train", *common, f"runs_dir={runs}", *TRAIN]) == 0
    assert len([p for p in (runs / "kvq").iterdir() if p.is_dir()]) == 2  # other bytes: another run


def test_a_cache_written_before_fingerprints_is_refused_with_how_to_rebuild(tiny_videos, tmp_path):
    items = tiny_videos(1)
    folder = run(items, tmp_path).folder
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["spec"]["schema"] = 2
    older = folder.with_name(folder.name.rsplit("__", 1)[0] + "__0123456789")
    folder.rename(older)
    (older / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(CacheError, match=r"(?s)older version.*schema 2.*just extract.*delete"):
        read_manifest(folder, SPEC)
    manifest["spec"] |= {"schema": 3, "media": manifest["spec"].pop("decoder")}  # schema 3's column and key names
    (older / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match=r"(?s)older version.*schema 3.*just extract.*delete"):
        read_manifest(folder, SPEC)
    again = run(items, tmp_path).folder  # rebuilt; then its file changes: its rows are refused by name
    reencode(items["path"].iloc[0], seed=80)
    with pytest.raises(StaleFeatures, match="1 item.*clip000"):
        read_items(again, items, ["center"])
