"""The extraction run and the feature cache: one row set per (item, view), resumable after a kill, failures recorded
and retried, manifests checked, parts written whole; and the key-frame decoding underneath."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import av
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from features import cache, reader
from features.backbones import BACKBONES, QualityStats, create_backbone, register_backbone
from features.cache import (
    FAILURE_GLOB,
    PART_GLOB,
    CacheError,
    cache_dir,
    cached_views,
    check_encoder,
    ensure_manifest,
    part_schema,
    read_failures,
    read_manifest,
    vector_layout,
    write_part,
)
from features.decode import FrameSampling, MediaError, sample_video
from features.encoding import EncoderPool, decode_threads, single_threaded_ops
from features.extract import ExtractionSummary, cpu_threads, extract
from features.fingerprint import fingerprints
from features.reader import read_features
from features.spec import FeatureSpec
from features.views import view_family
from synth.video import encode_mp4, render_source

TRACK = "test"
SPEC = FeatureSpec(backbone="quality_stats", size=32)
KEY_FRAMES = 2  # a 2 s clip sampled at 1 fps
ROW_KEY = ["item_id", "view", "t"]


def run(items: pd.DataFrame, root: Path, views=("center",), spec: FeatureSpec = SPEC) -> ExtractionSummary:
    return extract(items, TRACK, spec, list(views), cache_root=root, batch_size=2, workers=0, progress=False)


def media_of(items: pd.DataFrame) -> dict[str, str]:
    """Each item's file fingerprint now, as readers of the cache pass it."""
    return dict(zip(items["item_id"], fingerprints(items["path"].tolist())))


def read_items(folder: Path, items: pd.DataFrame, views, frames: int = SPEC.frames):
    """The features of `items` as they are now on disk."""
    ids = items["item_id"].tolist()
    return read_features(folder, ids, views, frames, [media_of(items)[i] for i in ids])


def fake_media(ids) -> np.ndarray:
    """A stand-in fingerprint per item id, for parts written directly."""
    return np.char.add("m-", np.asarray(ids, dtype=str))


def part_rows(folder: Path) -> pd.DataFrame:
    """Every row of every part under its final name, each part read on its own so a torn one fails here."""
    frames = [pq.read_table(part).to_pandas().assign(part=part.name) for part in sorted(folder.glob(PART_GLOB))]
    return pd.concat(frames, ignore_index=True)


def assert_one_row_set_per_item_and_view(rows: pd.DataFrame, item_ids, views) -> None:
    assert not rows.duplicated(ROW_KEY).any(), rows[rows.duplicated(ROW_KEY, keep=False)]
    pairs = rows.groupby(["item_id", "view"])
    assert set(pairs.groups) == {(i, v) for i in item_ids for v in views}
    assert (pairs["t"].agg(sorted).map(tuple) == tuple(range(KEY_FRAMES))).all()
    assert (pairs["time"].agg(sorted).map(tuple) == (0.0, 1.0)).all()


# ---------------------------------------------------------------------------------------------------- extraction


def test_extraction_writes_one_row_set_per_item_and_view(tiny_videos, tmp_path):
    items = tiny_videos(3)
    views = ["center", "hflip"]
    summary = run(items, tmp_path, views)

    assert (summary.items, summary.already_cached, summary.extracted) == (3, 0, 3)
    assert summary.failures.empty
    assert summary.folder == cache_dir(tmp_path, TRACK, SPEC)
    assert_one_row_set_per_item_and_view(part_rows(summary.folder), items["item_id"], views)
    for part in summary.folder.glob(PART_GLOB):
        assert vector_layout(pq.read_schema(part).field("feature")) == (np.dtype("float32"), QualityStats.dim)

    features = read_items(summary.folder, items, views)
    assert features.x.shape == (3, 2, SPEC.frames, QualityStats.dim)
    assert features.mask[..., :KEY_FRAMES].all() and not features.mask[..., KEY_FRAMES:].any()
    assert np.isfinite(features.x).all() and not features.x[~features.mask].any()
    # Rows land on their item, view and time: the last item's flipped frames, recomputed directly.
    clip = sample_video(items["path"].iloc[2], FrameSampling(SPEC.frames, SPEC.fps, SPEC.phase))
    backbone = create_backbone(SPEC.backbone, weights=SPEC.weights)
    expected = backbone(view_family(SPEC).render(clip.frames, ["hflip"])[0]).numpy()
    np.testing.assert_allclose(features.x[2, 1, :KEY_FRAMES], expected, rtol=1e-4, atol=1e-5)

    manifest = json.loads((summary.folder / "manifest.json").read_text())
    assert manifest["spec"] == SPEC.identity()
    assert manifest["backbone"] == backbone.identity()
    assert manifest["dim"] == QualityStats.dim
    assert read_manifest(summary.folder, SPEC) == manifest


def test_rerun_extracts_only_what_the_cache_lacks(tiny_videos, tmp_path):
    items = tiny_videos(3)
    first = run(items, tmp_path, ["center"])
    parts_before = {part.name for part in first.folder.glob(PART_GLOB)}

    again = run(items, tmp_path, ["center"])
    assert (again.already_cached, again.extracted) == (3, 0)
    assert {part.name for part in first.folder.glob(PART_GLOB)} == parts_before

    wider = run(items, tmp_path, ["center", "hflip"])
    assert (wider.already_cached, wider.extracted) == (0, 3)
    rows = part_rows(first.folder)
    assert set(rows.loc[~rows["part"].isin(parts_before), "view"]) == {"hflip"}
    assert_one_row_set_per_item_and_view(rows, items["item_id"], ["center", "hflip"])

    assert run(items, tmp_path, ["hflip", "center"]).already_cached == 3


# ------------------------------------------------------------------------------------------------ kill and resume

SLOW = "slow_quality_stats"
SLOW_SPEC = FeatureSpec(backbone=SLOW, size=32)


class SlowStats(QualityStats):
    """quality_stats slowed down so that a run can be killed between two parts. The delay changes no vector, so it
    is not in the identity: a fast twin resumes the same cache."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def identity(self) -> dict:
        return {"name": SLOW, "version": 1}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return super().encode(images)


def register_slow(delay: float) -> None:
    register_backbone(SLOW)(lambda weights, seed: SlowStats(delay))


def extract_slowly(items_csv: str, root: str) -> ExtractionSummary:
    """One item per batch and per part, so every finished item is on disk before the next one starts."""
    items = pd.read_csv(items_csv, dtype=str)
    return extract(items, TRACK, SLOW_SPEC, ["center"], root, batch_size=1, workers=0, part_items=1, progress=False)


@pytest.fixture
def fast_twin():
    register_slow(delay=0.0)
    yield
    del BACKBONES._entries[SLOW]


def test_killed_run_resumes_without_losing_or_duplicating_items(tiny_videos, tmp_path, fast_twin):
    items = tiny_videos(12)
    items_csv, root = tmp_path / "items.csv", tmp_path / "cache"
    items.to_csv(items_csv, index=False)
    folder = cache_dir(root, TRACK, SLOW_SPEC)
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"from test_extraction import register_slow, extract_slowly; "
        f"register_slow(0.2); extract_slowly({str(items_csv)!r}, {str(root)!r})"
    )
    log = tmp_path / "child.log"
    with open(log, "wb") as output:
        child = subprocess.Popen(
            [sys.executable, "-c", script], cwd=Path(__file__).parents[1], stdout=output, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 300  # a guard against a hung child, not a timing check
            while len(list(folder.glob(PART_GLOB))) < 2:
                assert child.poll() is None, f"the extraction ended before it was killed:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no parts written:\n{log.read_text()[-3000:]}"
                time.sleep(0.01)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert child.returncode == -signal.SIGKILL

    survivors = part_rows(folder)
    assert 2 <= survivors["part"].nunique() < len(items), "the kill must land mid-run"
    finished = set(survivors["item_id"])
    # A torn temporary, as a kill during a write leaves it: readers must not glob it, the rerun removes it.
    torn = folder / ".part-torn.parquet.0badf00d.tmp"
    torn.write_bytes((folder / survivors["part"].iloc[0]).read_bytes()[:100])
    assert set(cached_views(folder)["item_id"]) == finished

    summary = extract_slowly(str(items_csv), str(root))
    assert summary.already_cached == len(finished)
    assert summary.extracted == len(items) - len(finished)
    assert summary.failures.empty
    assert not torn.exists()
    rows = part_rows(folder)
    assert_one_row_set_per_item_and_view(rows, items["item_id"], ["center"])
    assert len(rows) == len(items) * KEY_FRAMES
    features = read_items(folder, items, ["center"], SLOW_SPEC.frames)
    assert features.mask[..., :KEY_FRAMES].all() and not features.mask[..., KEY_FRAMES:].any()


# ------------------------------------------------------------------------------------------------------- failures


def test_unreadable_media_are_recorded_skipped_and_retried(tiny_videos, tmp_path):
    clips = tiny_videos(3)
    data = Path(clips["path"].iloc[0]).parent
    bad = {name: data / f"{name}.mp4" for name in ("text", "empty", "missing", "truncated")}
    bad["text"].write_text("this is not a video\n")
    bad["empty"].write_bytes(b"")
    whole = Path(clips["path"].iloc[2]).read_bytes()
    bad["truncated"].write_bytes(whole[: len(whole) // 2])
    good = clips.iloc[:2]
    items = pd.concat([good, pd.DataFrame({"item_id": list(bad), "path": [str(p) for p in bad.values()]})])
    try:  # a truncated mp4 may keep enough to give frames: then it is cached, not failed
        sample_video(str(bad["truncated"]), FrameSampling(SPEC.frames, SPEC.fps, SPEC.phase))
        failing = {"text", "empty", "missing"}
    except MediaError:
        failing = {"text", "empty", "missing", "truncated"}

    summary = run(items, tmp_path)
    assert summary.failures["item_id"].tolist() == [i for i in items["item_id"] if i in failing]  # label order
    assert summary.extracted == len(items) - len(failing)
    assert set(cached_views(summary.folder)["item_id"]) == set(items["item_id"]) - failing
    failures = read_failures(summary.folder, media_of(items)).set_index("item_id")
    assert set(failures.index) == failing
    assert (failures["path"] == failures.index.map(lambda name: str(bad[name]))).all()
    assert "Invalid data" in failures.at["text", "reason"]
    assert failures.at["empty", "reason"] == "empty file (0 bytes)"
    assert "No such file" in failures.at["missing", "reason"]
    if "truncated" in failing:
        assert any(word in failures.at["truncated", "reason"] for word in ("cannot open", "decod"))

    encode_mp4(render_source(7, 64, 48, 16), bad["missing"], fps=8)  # the missing file turns up
    again = run(items, tmp_path)
    assert again.already_cached == len(items) - len(failing)  # failures are not cached: they are retried
    assert again.extracted == 1
    assert set(again.failures["item_id"]) == failing - {"missing"}
    assert set(read_failures(again.folder, media_of(items))["item_id"]) == failing - {"missing"}
    attempts = pd.concat([pq.read_table(f).to_pandas() for f in again.folder.glob(FAILURE_GLOB)])
    assert attempts["item_id"].value_counts().to_dict() == {name: 2 if name != "missing" else 1 for name in failing}


def test_an_item_whose_file_went_missing_is_a_failure_until_the_same_bytes_are_back(tiny_videos, tmp_path):
    items = tiny_videos(2)
    run(items, tmp_path, ["center"])
    gone = Path(items["path"].iloc[1])
    content = gone.read_bytes()
    gone.unlink()

    wider = run(items, tmp_path, ["center", "hflip"])
    assert list(wider.failures["item_id"]) == ["clip001"]
    assert "No such file" in wider.failures["reason"].iloc[0]
    assert wider.extracted == 1
    assert list(read_failures(wider.folder, media_of(items), ["center", "hflip"])["item_id"]) == ["clip001"]
    # Its rows are neither served nor deleted while the file is away: it fails in the views it has too.
    narrow = run(items, tmp_path, ["center"])
    assert (narrow.already_cached, list(narrow.failures["item_id"])) == (1, ["clip001"])
    assert set(part_rows(narrow.folder)["item_id"]) == {"clip000", "clip001"}
    gone.write_bytes(content)  # the same bytes, back: served again, nothing extracted
    back = run(items, tmp_path, ["center"])
    assert (back.already_cached, back.extracted, len(back.failures)) == (2, 0, 0)


# ------------------------------------------------------------------------------------------------------ manifests


def test_a_cache_made_with_another_configuration_is_refused(tiny_videos, tmp_path):
    items = tiny_videos(1)
    folder = run(items, tmp_path).folder
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["backbone"]["version"] = 999
    manifest_path.write_text(json.dumps(manifest))

    asked = QualityStats.version
    refused = rf"(?s)manifest\.json does not match.*backbone\.version: asked {asked}, cached 999"
    with pytest.raises(CacheError, match=refused):
        run(items, tmp_path)
    with pytest.raises(CacheError, match=r"frames: asked 4, cached 8"):
        read_manifest(folder, replace(SPEC, frames=4))
    with pytest.raises(CacheError, match="no manifest.json"):
        read_manifest(tmp_path / "elsewhere", SPEC)


# ------------------------------------------------------------------------------------------------- atomic parts


def test_a_failed_part_write_leaves_neither_part_nor_temporary(tiny_videos, tmp_path, monkeypatch):
    attempts: list[Path] = []

    def torn_write(where, *args, **kwargs):
        Path(where).write_bytes(b"PAR1" + bytes(64))  # the first bytes of a part, then the disk fills up
        attempts.append(Path(where))
        raise OSError("No space left on device")

    monkeypatch.setattr(cache.pq, "ParquetWriter", torn_write)
    folder = tmp_path / "direct"
    columns = {
        "item_id": np.array(["a"]),
        "fingerprint": fake_media(["a"]),
        "view": np.array(["center"]),
        "t": np.array([0]),
        "time": np.array([0.0]),
        "feature": np.zeros((1, 4), np.float32),
    }
    with pytest.raises(OSError, match="No space"):
        write_part(folder, columns, part_schema(4, "float32"))
    assert attempts[0].name.startswith(".part-") and attempts[0].suffix == ".tmp"
    assert list(folder.iterdir()) == []

    items = tiny_videos(2)
    with pytest.raises(OSError, match="No space"):
        run(items, tmp_path)
    folder = cache_dir(tmp_path, TRACK, SPEC)
    assert sorted(path.name for path in folder.iterdir()) == [".lock", "manifest.json"]
    monkeypatch.undo()
    assert run(items, tmp_path).extracted == 2


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_parts_read_back_exactly_into_the_dense_array(tmp_path, dtype):
    """Rows shuffled over three parts, some frames missing, items asked for in another order and one never cached."""
    rng = np.random.default_rng(0)
    items, views, frames, dim = np.array([f"v{i}" for i in range(7)]), np.array(["center", "hflip"]), 3, 5
    x = rng.standard_normal((7, 2, frames, dim)).astype(dtype).astype(np.float32)  # exact in the stored dtype
    present = rng.random((7, 2, frames)) < 0.7
    rows = rng.permutation(np.argwhere(present))
    for i, v, t in (block.T for block in np.array_split(rows, 3)):
        columns = {"item_id": items[i], "view": views[v], "t": t, "time": t.astype(np.float32), "feature": x[i, v, t]}
        write_part(tmp_path, {**columns, "fingerprint": fake_media(items[i])}, part_schema(dim, dtype))

    asked = ["v5", "v0", "never", "v3"]
    got = read_features(tmp_path, asked, ["hflip"], 2, fake_media(asked))
    known = [0, 1, 3]
    mask = np.zeros((4, 1, 2), dtype=bool)
    mask[known] = present[[5, 0, 3]][:, [1], :2]
    expected = np.zeros((4, 1, 2, dim), dtype=np.float32)
    expected[known] = x[[5, 0, 3]][:, [1], :2]
    expected[~mask] = 0.0
    assert got.x.dtype == np.float32 and got.views == ["hflip"]
    np.testing.assert_array_equal(got.mask, mask)
    np.testing.assert_array_equal(got.x, expected)
    every = read_features(tmp_path, items.tolist(), None, frames, fake_media(items))
    assert every.views == ["center", "hflip"]
    np.testing.assert_array_equal(every.x, np.where(present[..., None], x, 0.0))

    dense = tmp_path / "dense"  # every frame, in the order asked: each part is one block of consecutive rows
    for block in np.array_split(np.arange(7), 2):
        i, v, t = (index.ravel() for index in np.meshgrid(block, [0, 1], np.arange(frames), indexing="ij"))
        columns = {"item_id": items[i], "view": views[v], "t": t, "time": t.astype(np.float32), "feature": x[i, v, t]}
        write_part(dense, {**columns, "fingerprint": fake_media(items[i])}, part_schema(dim, dtype))
    got = read_features(dense, items.tolist(), views.tolist(), frames, fake_media(items))
    assert got.mask.all()
    np.testing.assert_array_equal(got.x, x)


def dense_parts(folder: Path, x: np.ndarray, write) -> None:
    """x [items, 1, frames, dim] as parts of two items each, rows in the order the dense array holds them."""
    items, _, frames, dim = x.shape
    for start in range(0, items, 2):
        block = np.arange(start, min(start + 2, items))
        ids = np.repeat([f"v{i}" for i in block], frames)
        columns = {
            "item_id": ids,
            "fingerprint": fake_media(ids),
            "view": np.full(len(block) * frames, "center"),
            "t": np.tile(np.arange(frames), len(block)),
            "time": np.tile(np.arange(frames, dtype=np.float32), len(block)),
            "feature": x[block, 0].reshape(-1, dim),
        }
        write(folder, columns)


def test_vectors_are_copied_straight_from_the_file_and_other_layouts_decode_alike(tmp_path, monkeypatch):
    """write_part's layout (one required, PLAIN, uncompressed page) is read without PyArrow's decoder; a part with
    nullable vectors (the schema before), or with its vectors over many pages, declines that path and reads the same."""
    x = np.random.default_rng(3).standard_normal((5, 1, 3, 64)).astype(np.float32)
    ids = [f"v{i}" for i in range(5)]
    schema = part_schema(64, "float32")
    feature = schema.get_field_index("feature")
    nullable = schema.set(feature, schema.field("feature").with_nullable(True))

    def pyarrow_default(folder, columns, schema, **options):
        vectors = pa.FixedSizeBinaryArray.from_buffers(
            schema.field("feature").type,
            len(columns["feature"]),
            [None, pa.py_buffer(np.ascontiguousarray(columns["feature"]))],
        )
        arrays = [*(pa.array(columns[name], type=schema.field(name).type) for name in schema.names[:feature]), vectors]
        folder.mkdir(exist_ok=True)
        pq.write_table(
            pa.Table.from_arrays(arrays, schema=schema), folder / f"part-{columns['item_id'][0]}.parquet", **options
        )

    layouts = {
        "ours": lambda folder, columns: write_part(folder, columns, schema),
        "nullable": lambda folder, columns: pyarrow_default(folder, columns, nullable, compression="none"),
        "small pages": lambda folder, columns: pyarrow_default(folder, columns, schema, compression="none",
                                                               data_page_size=256),
        "compressed": lambda folder, columns: pyarrow_default(folder, columns, schema, compression="zstd"),
    }  # fmt: skip
    straight = []
    read_into = reader._read_into
    monkeypatch.setattr(reader, "_read_into", lambda *args: straight.append(read_into(*args)) or straight[-1])
    for name, write in layouts.items():
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        dense_parts(folder, x, write)
        straight.clear()
        np.testing.assert_array_equal(read_features(folder, ids, ["center"], 3, fake_media(ids)).x, x, err_msg=name)
        assert straight == [name == "ours"] * 3, name  # three parts, each in the order of the array
        straight.clear()
        got = read_features(folder, ids[::-1], None, 3, fake_media(ids[::-1]))
        np.testing.assert_array_equal(got.x, x[::-1], err_msg=name)
        assert straight == [name == "ours"] * 3, name  # rows out of order, too, are copied from the file


def test_a_view_not_cached_is_named_with_those_that_are(tmp_path):
    x = np.zeros((2, 1, 1, 4), dtype=np.float32)
    dense_parts(tmp_path, x, lambda folder, columns: write_part(folder, columns, part_schema(4, "float32")))
    with pytest.raises(CacheError, match=r"view\(s\) hflip not cached \(cached: center\)"):
        read_features(tmp_path, ["v0", "v1"], ["center", "hflip"], 1, fake_media(["v0", "v1"]))


def test_torch_ops_keep_to_one_thread_during_extraction_and_threads_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before, cores = torch.get_num_threads(), len(os.sched_getaffinity(0))
    with single_threaded_ops():
        assert (torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]) == (1, "1")
    assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ
    assert cpu_threads(pl.Trainer(accelerator="cpu", devices=1, logger=False)) == cores


@pytest.mark.parametrize("backbone", ["quality_stats", "test_resnet"])
def test_threads_give_the_vectors_of_one_pass(backbone):
    """Frames shared among threads (7 frames over 3 threads: shares of 3, 3 and 1) come back in order, as one
    forward pass over them all gives them."""
    pixels = torch.rand(7, 3, 32, 32)
    pool = EncoderPool([create_backbone(backbone, weights="random")], threads=3)
    alone = pool.encode(pixels, 0)
    with pool.running():
        shared = pool.encode(pixels, 0)
    assert shared.shape == alone.shape == (7, pool.encoders[0].dim)
    np.testing.assert_allclose(shared, alone, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------- decoding

GREY_BASE, GREY_STEP = 8, 14


def grey_ramp(frames: int) -> np.ndarray:
    """Frame k is flat grey at GREY_BASE + k * GREY_STEP, so a decoded frame's level tells which frame it is."""
    levels = GREY_BASE + GREY_STEP * np.arange(frames)
    return np.broadcast_to(levels[:, None, None, None], (frames, 48, 64, 3)).astype(np.uint8)


def frame_indices(clip) -> list[int]:
    return (
        np.rint((clip.frames.reshape(len(clip.frames), -1).mean(axis=1) - GREY_BASE) / GREY_STEP).astype(int).tolist()
    )


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        (FrameSampling(frames=8, fps=1.0, phase=0.0), [0, 8]),
        (FrameSampling(frames=8, fps=1.0, phase=0.5), [4, 12]),
        (FrameSampling(frames=8, fps=3.0, phase=0.0), [0, 3, 6, 8, 11, 14]),  # first frame at or after k/3 s
        (FrameSampling(frames=3, fps=2.0, phase=0.0), [0, 4, 8]),  # at most `frames`
    ],
)
def test_sampling_keeps_the_first_frame_at_or_after_each_target(tmp_path, sampling, expected):
    path = tmp_path / "ramp.mp4"
    encode_mp4(grey_ramp(16), path, fps=8)
    clip = sample_video(str(path), sampling)
    assert frame_indices(clip) == expected
    np.testing.assert_allclose(clip.times, np.array(expected) / 8)
    assert clip.frames.dtype == np.uint8 and clip.frames.shape[1:] == (48, 64, 3)


def test_a_short_video_gives_fewer_frames(tmp_path):
    path = tmp_path / "short.mp4"
    encode_mp4(grey_ramp(12), path, fps=8)  # 1.5 s
    assert frame_indices(sample_video(str(path), FrameSampling(frames=8))) == [0, 8]
    assert frame_indices(sample_video(str(path), FrameSampling(frames=8, phase=0.5))) == [4]


def test_skipping_frames_or_threads_leaves_the_key_frames_bit_identical(tmp_path):
    path = tmp_path / "moving.mp4"
    encode_mp4(render_source(5, 64, 48, 40), path, fps=8, crf=30)
    sampling = FrameSampling(frames=8, fps=2.0, phase=0.25)
    with av.open(str(path)) as container:  # the plain way: every frame decoded
        decoded = [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    with av.open(str(path)) as container:
        container.streams.video[0].codec_context.skip_frame = "NONREF"
        assert sum(1 for _ in container.decode(video=0)) < len(decoded)  # x264's B-frames: there is something to skip
    times = np.array([t for t, _ in decoded])
    expected = [int(np.argmax(times + 1e-6 >= target)) for target in sampling.targets()]
    for threads in (0, 1, 3):  # FFmpeg's own count, and the one thread each of several DataLoader workers
        clip = sample_video(str(path), sampling, threads)
        np.testing.assert_array_equal(clip.frames, np.stack([decoded[i][1] for i in expected]))
        np.testing.assert_allclose(clip.times, times[expected])
    assert [decode_threads(workers) for workers in (0, 1, 2, 8)] == [0, 0, 1, 1]


def encode_with(frames: np.ndarray, path: Path, codec: str, pix_fmt: str, fps: int = 8) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=pix_fmt)))
        container.mux(stream.encode())


def encode_or_skip(frames: np.ndarray, path: Path, codecs: tuple[str, ...], pix_fmt: str) -> None:
    errors = []
    for codec in codecs:
        try:
            return encode_with(frames, path, codec, pix_fmt)
        except (av.FFmpegError, ValueError) as error:
            errors.append(f"{codec}: {error}")
    pytest.skip(f"this FFmpeg build cannot encode {pix_fmt} ({'; '.join(errors)})")


def test_ten_bit_video_decodes_to_sixteen_bit_frames(tmp_path):
    source = render_source(3, 64, 48, 16)
    path = tmp_path / "ten_bit.mp4"
    encode_or_skip(source, path, ("libx264", "libx265"), "yuv420p10le")
    clip = sample_video(str(path), FrameSampling(frames=8))
    assert clip.info["pix_fmt"] == "yuv420p10le"
    assert clip.frames.dtype == np.uint16 and clip.frames.shape == (2, 48, 64, 3)
    assert clip.frames.max() > 255  # the full 16-bit range, not 8-bit values in a wider type
    assert np.abs(clip.frames[0] / 65535 - source[0] / 255).mean() < 0.05


@pytest.mark.parametrize(("codec", "pix_fmt", "suffix"), [("rawvideo", "nv12", ".nut"), ("ffv1", "yuv410p", ".mkv")])
def test_eight_bit_formats_with_digits_in_their_name_decode_to_eight_bits(tmp_path, codec, pix_fmt, suffix):
    path = tmp_path / f"eight_bit{suffix}"
    encode_or_skip(render_source(4, 64, 48, 16), path, (codec,), pix_fmt)
    clip = sample_video(str(path), FrameSampling(frames=8))
    assert clip.info["pix_fmt"] == pix_fmt
    assert clip.frames.dtype == np.uint8


def test_features_another_version_of_their_encoder_made_are_refused_with_the_remedy(tmp_path):
    folder = tmp_path / "kvq" / "quality_stats__resize224__0"
    ensure_manifest(folder, SPEC, {"name": "quality_stats", "version": 1, "size": (224, 224)}, 36, {})
    check_encoder(folder, {"name": "quality_stats", "version": 1, "size": (224, 224)})  # a tuple read back as a list
    with pytest.raises(CacheError, match=r"(?s)version: asked 2, cached 1.*delete .*quality_stats__resize224__0"):
        check_encoder(folder, {"name": "quality_stats", "version": 2, "size": (224, 224)})
    with pytest.raises(CacheError, match="extract again"):
        ensure_manifest(folder, SPEC, {"name": "quality_stats", "version": 2, "size": (224, 224)}, 123, {})
    check_encoder(tmp_path / "absent", {"name": "quality_stats", "version": 2})  # nothing cached: nothing to refuse
