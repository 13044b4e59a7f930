"""Extraction over two DDP processes (gloo on CPU), run as users run it: `python -m workbench extract devices=2
strategy=ddp`. Lightning's launcher starts rank 1 by re-executing the command line, so the run has to be a subprocess
of the test (in-process, rank 1 would re-run pytest). The cache two ranks leave must equal what one process leaves,
item for item, view for view and frame for frame, with no row written twice."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning.pytorch
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_extraction import media_of

from features.cache import FAILURE_GLOB, PART_GLOB, read_failures
from features.extract import cpu_threads, extract
from features.reader import read_features
from synth import synthesize
from tracks import get_track
from workbench.config import ExtractConfig, build

TRACK = get_track("kvq")
ITEMS = 12  # the fewest the kvq synthesiser writes
WORDS = {"size": "32", "views": "center,hflip", "batch": "2", "workers": "0"}  # batch 2 leaves ragged last batches
CONFIG = build(ExtractConfig, WORDS, TRACK.defaults)
(SPEC,) = CONFIG.all_specs(TRACK.decoder)
ROW_KEY = ["item_id", "view", "t"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kvq")
    synthesize(TRACK, folder, ITEMS, seed=0, width=64, height=48)
    return folder


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """The cache one process fills with every item, in batches of another size than the DDP runs use."""
    return single_process(TRACK.read_items(data), tmp_path_factory.mktemp("reference"), batch_size=3)


def single_process(items: pd.DataFrame, root: Path, batch_size: int = 2) -> Path:
    summary = extract(items, TRACK.name, SPEC, CONFIG.views, root, batch_size=batch_size, workers=0, progress=False)
    return summary.folder


def extract_on_two_ranks(data: Path, root: Path) -> tuple[int, list[str]]:
    """Exit status and the cells of the extraction table's row (items, views, already cached, extracted, failed...)
    of the command run over two CPU processes; asserts that only rank 0 printed the table."""
    words = [f"{key}={value}" for key, value in {**WORDS, "data": data, "cache": root}.items()]
    command = [sys.executable, "-m", "workbench", "extract", *words, "devices=2", "strategy=ddp", "accelerator=cpu"]
    done = subprocess.run(
        command,
        cwd=Path(__file__).parents[1],
        env={**os.environ, "COLUMNS": "400"},  # each table row on one line
        capture_output=True,
        text=True,
        timeout=600,  # a guard against a hung group, not a timing check
    )
    titles = [line for line in done.stdout.splitlines() if line.startswith("extraction")]
    assert len(titles) == 1, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    lines = done.stdout.splitlines()
    row = lines[next(k for k, line in enumerate(lines) if line.startswith("┡")) + 1]
    return done.returncode, [cell.strip() for cell in row.strip("│").split("│")]


def row_keys(folder: Path, parts: set[str] | None = None) -> pd.DataFrame:
    """The keys of every row of the parts named (all when None), each part read on its own."""
    files = [f for f in sorted(folder.glob(PART_GLOB)) if parts is None or f.name in parts]
    return pd.concat(
        [pq.read_table(f, columns=[*ROW_KEY, "fingerprint"]).to_pandas() for f in files], ignore_index=True
    )


def assert_same_cache(folder: Path, reference: Path, data: Path, item_ids: list[str]) -> None:
    """The same rows and vectors as the one-process reference, every row bound to its file in `data`, which holds
    the same bytes as the reference's data folder at another path."""
    keys = row_keys(folder)
    assert not keys.duplicated().any(), keys[keys.duplicated(keep=False)]
    assert (keys["fingerprint"] == keys["item_id"].map(media_of(TRACK.read_items(data)))).all()  # every rank agrees
    assert set(zip(keys["item_id"], keys["view"])) == {(i, v) for i in item_ids for v in CONFIG.views}
    now = media_of(TRACK.read_items(data))
    media = [now[item] for item in item_ids]
    got, want = (read_features(f, item_ids, list(CONFIG.views), SPEC.frames, media) for f in (folder, reference))
    np.testing.assert_array_equal(got.mask, want.mask)
    assert got.mask.any(axis=-1).all()
    np.testing.assert_allclose(got.x, want.x, rtol=1e-5, atol=1e-6)


def prefixes(names: set[str]) -> set[str]:
    return {name.rsplit("-", 1)[0] for name in names}


def test_two_ranks_share_the_missing_items_and_write_each_once(data, reference, tmp_path):
    """Five items missing on two ranks: rank 0 takes three (a ragged last batch), rank 1 two, one of them unreadable;
    rank 1's recorded failure must not end the group, and rank 0 reports the group's counts."""
    shutil.copytree(data, tmp_path / "data")
    items = TRACK.read_items(tmp_path / "data")
    folder = single_process(items.iloc[:7], tmp_path / "cache")
    before = {f.name for f in folder.glob(PART_GLOB)}
    broken = items.iloc[10]  # the fourth missing item: rank 1's second
    Path(broken["path"]).write_bytes(b"not a video")

    status, row = extract_on_two_ranks(tmp_path / "data", tmp_path / "cache")

    assert status == 3, row  # finished, some media failed
    assert row[:6] == ["12", "center,hflip", "7", "4", "0", "1"]
    written = {f.name for f in folder.glob(PART_GLOB)} - before
    assert prefixes(written) == {"part-r0", "part-r1"}
    assert prefixes({f.name for f in folder.glob(FAILURE_GLOB)}) == {"failures-r1"}
    assert read_failures(folder, media_of(items))["item_id"].tolist() == [broken["item_id"]]
    new_keys = row_keys(folder, written)
    assert set(new_keys["item_id"]) == set(items["item_id"].iloc[7:]) - {broken["item_id"]}
    assert_same_cache(folder, reference, tmp_path / "data", [i for i in items["item_id"] if i != broken["item_id"]])


def test_a_lone_missing_item_leaves_rank_1_idle_then_a_rerun_finds_all(data, reference, tmp_path, monkeypatch):
    """Lightning's predict sampler refuses a rank without an item: the lone missing item goes to rank 0 and rank 1
    gets an idle job that writes nothing."""
    items = TRACK.read_items(data)
    folder = single_process(items.iloc[:11], tmp_path)
    before = {f.name for f in folder.glob(PART_GLOB)}

    status, row = extract_on_two_ranks(data, tmp_path)

    assert (status, row[:6]) == (0, ["12", "center,hflip", "11", "1", "0", "0"])
    written = {f.name for f in folder.glob(PART_GLOB)} - before
    assert prefixes(written) == {"part-r0"}
    assert set(row_keys(folder, written)["item_id"]) == {items["item_id"].iloc[11]}
    assert_same_cache(folder, reference, data, items["item_id"].tolist())

    # In-process is safe here only because nothing is left to extract: a Trainer would re-run pytest as rank 1.
    monkeypatch.setattr(lightning.pytorch, "Trainer", refuse_trainer)
    rerun = extract(items, TRACK.name, SPEC, CONFIG.views, tmp_path, devices=2, strategy="ddp", accelerator="cpu")
    assert (rerun.already_cached, rerun.extracted) == (ITEMS, 0)
    assert {f.name for f in folder.glob(PART_GLOB)} == before | written


def refuse_trainer(*args, **kwargs):
    raise AssertionError("a Trainer was built with every item cached")


def test_each_rank_keeps_to_its_share_of_the_cores():
    """Ranks on the CPU split the cores: as many ranks as cores run one backbone stream each, with torch ops on one
    thread (single_threaded_ops, which also sets OMP_NUM_THREADS for the ranks Lightning's launcher starts)."""
    cores = len(os.sched_getaffinity(0))
    trainer = lightning.pytorch.Trainer(accelerator="cpu", devices=cores, strategy="ddp", logger=False)
    assert cpu_threads(trainer) == 1
