"""A cache keeps every version of an item it has seen: two datasets with the same ids never evict each other, each is
served its own rows as if it were alone, and versions go only when the user prunes them (features.inventory)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_extraction import (
    KEY_FRAMES,
    PART_GLOB,
    SLOW_SPEC,
    TRACK,
    extract_slowly,
    fast_twin,  # noqa: F401 - a fixture
    part_rows,
)
from test_reliability_extraction import start_slow_extraction

from features import reader
from features.cache import cache_dir, live_parts
from features.fingerprint import fingerprints
from features.inventory import list_caches, prune
from features.reader import StaleFeatures, read_features
from synth import synthesize
from tracks import get_track
from workbench.cli import main
from workbench.config import FeatureConfig

FEATURES = ["frames=2", "size=32", "views=center"]
TRAIN = [*FEATURES, "epochs=2", "folds=3"]
ITEMS = 24  # four sources of six versions: three to train on, in three folds


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    """Two KVQ-layout datasets of other content with the same ids, extracted in turn into one cache, each trained on
    once while it was alone in its own cache: {a, b: the data; cache; oof-a, oof-b: those runs' predictions}."""
    folder = tmp_path_factory.mktemp("versions")
    paths = {"cache": folder / "cache"}
    for name, seed in (("a", 1), ("b", 2)):
        synthesize(get_track("kvq"), folder / name, ITEMS, seed=seed, width=64, height=48)
        paths[name] = folder / name
    assert main(["extract", f"data={paths['a']}", f"cache={paths['cache']}", *FEATURES]) == 0
    paths["oof-a"] = train(paths["a"], paths["cache"], folder / "runs-alone-a")  # the cache holds a alone
    fresh = folder / "fresh-b"
    assert main(["extract", f"data={paths['b']}", f"cache={fresh}", *FEATURES]) == 0
    paths["oof-b"] = train(paths["b"], fresh, folder / "runs-alone-b")
    assert main(["extract", f"data={paths['b']}", f"cache={paths['cache']}", *FEATURES]) == 0
    return paths


def train(data: Path, cache: Path, runs: Path) -> pd.DataFrame:
    assert main(["train", f"data={data}", f"cache={cache}", f"runs_dir={runs}", *TRAIN]) == 0
    (run_dir,) = [p for p in (runs / "kvq").iterdir() if p.is_dir()]
    frames = [pd.read_parquet(f) for f in sorted(run_dir.glob("fold-*/oof.parquet"))]
    return pd.concat(frames).sort_values(["item_id", "view"]).reset_index(drop=True)


def folder_of(cache: Path) -> Path:
    (spec,) = FeatureConfig(track="kvq", frames=2, size=32).all_specs("video")
    return cache_dir(cache, "kvq", spec)


def versions_of(data: Path) -> set[tuple[str, str]]:
    items = get_track("kvq").read_items(data)
    return set(zip(items["item_id"], fingerprints(items["path"].tolist()), strict=True))


def read(folder: Path, data: Path, ids: list[str] | None = None) -> reader.Features:
    items = get_track("kvq").read_items(data)
    items = items if ids is None else items.set_index("item_id").loc[ids].reset_index()
    return read_features(folder, items["item_id"].tolist(), ["center"], 2, fingerprints(items["path"].tolist()))


def held(folder: Path) -> set[tuple[str, str]]:
    rows = pd.concat(pq.read_table(part, columns=["item_id", "fingerprint"]).to_pandas() for part in live_parts(folder))
    return set(rows.itertuples(index=False, name=None))


def extracted(data: Path, cache: Path, capsys) -> list[str]:
    """The extraction table's cells: items, views, already cached, extracted, new version, ..."""
    capsys.readouterr()
    assert main(["extract", f"data={data}", f"cache={cache}", *FEATURES]) == 0
    lines = capsys.readouterr().out.splitlines()
    cells = lines[next(k for k, line in enumerate(lines) if line.startswith("┡")) + 1].strip("│").split("│")
    return [cell.strip() for cell in cells[:5]]


@pytest.fixture
def cache(shared, tmp_path) -> Path:
    """A copy of the shared cache (modification times kept) for a test to prune."""
    return Path(shutil.copytree(shared["cache"], tmp_path / "cache"))


def test_two_datasets_with_the_same_ids_are_each_served_as_if_alone(shared, tmp_path, capsys):
    a, b, folder = shared["a"], shared["b"], folder_of(shared["cache"])
    assert held(folder) == versions_of(a) | versions_of(b) and len(versions_of(a) & versions_of(b)) == 0
    pd.testing.assert_frame_equal(train(a, shared["cache"], tmp_path / "runs-a"), shared["oof-a"])
    pd.testing.assert_frame_equal(train(b, shared["cache"], tmp_path / "runs-b"), shared["oof-b"])
    for data in (a, b):  # extracting either again extracts nothing
        assert extracted(data, shared["cache"], capsys)[2:4] == [str(ITEMS), "0"]


def test_reading_beside_another_version_serves_the_same_arrays(shared, tmp_path):
    fresh = folder_of(shared["a"].parent / "fresh-b")
    beside, alone = read(folder_of(shared["cache"]), shared["b"]), read(fresh, shared["b"])
    np.testing.assert_array_equal(beside.x, alone.x)
    np.testing.assert_array_equal(beside.mask, alone.mask)
    assert beside.mask[..., :KEY_FRAMES].all()


def test_an_item_cached_only_as_other_versions_is_stale(shared, capsys):
    folder = folder_of(shared["cache"])
    items = get_track("kvq").read_items(shared["a"])
    ids = items["item_id"].tolist()
    with pytest.raises(StaleFeatures, match=rf"{ITEMS} item\(s\) changed on disk.*train/0001.mp4.*`just extract`"):
        read_features(folder, ids, ["center"], 2, ["a third file"] * len(ids))
    mixed = fingerprints(items["path"].tolist())[:-1] + ["a third file"]
    with pytest.raises(StaleFeatures, match=r"1 item\(s\)") as error:
        read_features(folder, ids, ["center"], 2, mixed)
    assert error.value.stale == [ids[-1]]


def test_a_kill_during_the_second_extraction_loses_neither_version(tmp_path, fast_twin):  # noqa: F811
    root = tmp_path / "cache"
    folder = cache_dir(root, TRACK, SLOW_SPEC)
    datasets = {}
    for name, seed in (("a", 3), ("b", 4)):
        synthesize(get_track("kvq"), tmp_path / name, 12, seed=seed, width=64, height=48)
        items = get_track("kvq").read_items(tmp_path / name)[["item_id", "path"]]
        items.to_csv(tmp_path / f"{name}.csv", index=False)
        datasets[name] = items
    extract_slowly(str(tmp_path / "a.csv"), str(root))
    first = {part: part.read_bytes() for part in live_parts(folder)}

    child = start_slow_extraction(tmp_path / "b.csv", root, delay=0.3)
    try:
        deadline = time.monotonic() + 300  # a guard against a hung child, not a timing check
        while len(live_parts(folder)) == len(first):  # until its first part appears
            assert child.poll() is None, "the second extraction ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    assert {part: part.read_bytes() for part in first} == first
    b = datasets["b"]
    assert 0 < len(held(folder) & set(zip(b["item_id"], fingerprints(b["path"].tolist())))) < len(b)
    summary = extract_slowly(str(tmp_path / "b.csv"), str(root))
    assert summary.already_cached + summary.extracted == len(b) and summary.already_cached > 0
    assert not part_rows(folder).duplicated(["item_id", "fingerprint", "view", "t"]).any()  # nothing written twice
    for items in datasets.values():
        ids = items["item_id"].tolist()
        x = read_features(folder, ids, ["center"], SLOW_SPEC.frames, fingerprints(items["path"].tolist()))
        assert x.mask[..., :KEY_FRAMES].all()


def test_cache_lists_each_folder_with_its_versions(shared, capsys):
    (found,) = list_caches(shared["cache"])
    assert (found.track, found.items, len(found.versions), found.most_versions) == ("kvq", ITEMS, 2 * ITEMS, 2)
    assert "quality_stats" in found.settings and "2 frames" in found.settings and found.last_read is not None
    capsys.readouterr()
    assert main(["cache", f"cache={shared['cache']}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cells = lines[next(k for k, line in enumerate(lines) if line.startswith("┡")) + 1].strip("│").split("│")
    assert [cell.strip() for cell in (cells[0], *cells[3:6])] == ["kvq", str(ITEMS), str(2 * ITEMS), "2"]


def test_prune_keep_removes_exactly_what_the_folder_does_not_hold(shared, cache, tmp_path, capsys):
    a, b, folder = shared["a"], shared["b"], folder_of(cache)
    assert main(["cache", "prune", f"keep={a},{tmp_path}", f"cache={cache}"]) == 0
    assert f"keeping the {ITEMS} versions" in capsys.readouterr().out
    assert held(folder) == versions_of(a)
    assert extracted(a, cache, capsys)[2:4] == [str(ITEMS), "0"]
    pd.testing.assert_frame_equal(train(a, cache, tmp_path / "runs"), shared["oof-a"])
    assert main(["train", f"data={b}", f"cache={cache}", f"runs_dir={tmp_path / 'runs-b'}", *TRAIN]) == 2


def test_prune_keep_keeps_the_unlabelled_media_named_beside_the_folder(shared, cache, tmp_path):
    a, folder = Path(shutil.copytree(shared["a"], tmp_path / "a")), folder_of(cache)  # the same files elsewhere
    (a / "extra").mkdir()
    for video in sorted((shared["b"] / "test").glob("*.mp4"))[:2]:
        shutil.copy(video, a / "extra" / video.name)
    assert main(["extract", f"data={a}", f"cache={cache}", "unlabelled=extra", *FEATURES]) == 0
    extra = {(i, f) for i, f in held(folder) if i.startswith("unlabelled/")}
    assert len(extra) == 2
    assert main(["cache", "prune", f"keep={a}", "unlabelled=extra", f"cache={cache}"]) == 0
    assert held(folder) == versions_of(a) | extra
    assert main(["cache", "prune", f"keep={a}", f"cache={cache}"]) == 0  # not named: not kept
    assert held(folder) == versions_of(a)


def age(parts, days: float) -> None:
    for part in parts:
        then = time.time() - days * 86400
        os.utime(part, (then, then))


def parts_of(folder: Path, versions: set[tuple[str, str]]) -> list[Path]:
    keys = {part: pq.read_table(part, columns=["item_id", "fingerprint"]).to_pandas() for part in live_parts(folder)}
    return [part for part, rows in keys.items() if set(rows.itertuples(index=False, name=None)) <= versions]


def test_prune_older_and_size_remove_the_least_recently_read(shared, cache, capsys):
    a, b, folder = shared["a"], shared["b"], folder_of(cache)
    age(live_parts(folder), days=10)
    read(folder, b)  # a read marks b's parts with the time
    assert main(["cache", "prune", "older=5", f"cache={cache}"]) == 0
    assert held(folder) == versions_of(b)
    assert main(["cache", "prune", "older=5", f"cache={cache}"]) == 0  # nothing more to remove
    assert held(folder) == versions_of(b)

    again = Path(shutil.copytree(shared["cache"], cache.parent / "again"))
    folder = folder_of(again)
    age(parts_of(folder, versions_of(a)), days=3)
    age(parts_of(folder, versions_of(b)), days=2)
    (before,) = list_caches(again)
    a_bytes = before.versions[before.versions["fingerprint"].isin({f for _, f in versions_of(a)})]["bytes"].sum()
    assert main(["cache", "prune", f"size={(before.bytes - a_bytes + 1) / 1e9}", f"cache={again}"]) == 0
    assert held(folder) == versions_of(b)
    (after,) = list_caches(again)
    assert after.bytes <= before.bytes - a_bytes + 1


def test_prune_with_no_rule_is_a_usage_error(cache, capsys):
    assert main(["cache", "prune", f"cache={cache}"]) == 2
    assert "keep=" in capsys.readouterr().err
    assert held(folder_of(cache))  # nothing removed


def test_a_prune_killed_between_a_generation_and_its_unlink_leaves_every_kept_row_once(shared, cache, monkeypatch):
    a, folder = shared["a"], folder_of(cache)
    expected = read(folder, a)
    gone = sorted(versions_of(a))[:3]  # three of a's versions go: a's parts are rewritten, not unlinked
    unlink = Path.unlink

    def killed(path: Path, missing_ok: bool = False) -> None:
        if path.name.startswith("part-"):
            raise OSError("killed")
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", killed)
    with pytest.raises(OSError, match="killed"):
        prune(cache, "kvq", keep={"kvq": (versions_of(a) | versions_of(shared["b"])) - set(gone)})
    monkeypatch.undo()
    assert len(list(folder.glob(PART_GLOB))) == len(live_parts(folder)) + 1  # the old generation beside the new one
    kept = [item for item, _ in sorted(versions_of(a) - set(gone))]
    got = read(folder, a, kept)
    np.testing.assert_array_equal(got.x, expected.x[[expected.item_ids.index(item) for item in kept]])
    rows = pd.concat(pq.read_table(part).to_pandas() for part in live_parts(folder))
    assert not rows.duplicated(["item_id", "fingerprint", "view", "t"]).any()
    assert held(folder) == (versions_of(a) | versions_of(shared["b"])) - set(gone)


def test_a_reader_lists_the_parts_again_when_a_prune_replaced_one(shared, monkeypatch):
    folder = folder_of(shared["cache"])
    expected = read(folder, shared["a"])
    listings = iter([[folder / "part-gone.parquet", *live_parts(folder)]])
    monkeypatch.setattr(reader, "live_parts", lambda folder: next(listings, None) or live_parts(folder))
    np.testing.assert_array_equal(read(folder, shared["a"]).x, expected.x)
