"""Shared fixtures: tiny real media and caches, generated on the spot (no files are shipped for them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from synth.video import encode_mp4, render_source

TINY_WIDTH, TINY_HEIGHT, TINY_FRAMES, TINY_FPS = 64, 48, 16, 8  # 2 s clips: two key frames at 1 fps


# The files that take longest (`--durations`), first: `just test` hands out whole files to its workers, and one of these
# started last would keep a worker busy long after the others had finished.
SLOWEST_FILES = (
    "test_sweep.py", "test_reliability_extraction.py", "test_ddp_extraction.py", "test_bench.py", "test_motion.py",
    "test_pseudo.py", "test_tracks.py", "test_predictor.py", "test_reliability_sweep.py", "test_blend.py",
    "test_media_binding.py", "test_cache_versions.py", "test_reliability_training.py", "test_lmm_stream.py",
    "test_lora.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first = {name: k for k, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable: each file's tests keep their order


def kill_when(words: list[str], finished: Path, pattern: str) -> None:
    """Runs `python -m workbench <words>` and SIGKILLs it once a file matching `pattern` exists under `finished` (the
    first finished fold, say): a real process killed at a point the test chooses."""
    child = subprocess.Popen(
        [sys.executable, "-m", "workbench", *words],
        cwd=Path(__file__).parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300  # a guard against a hung child, not a timing check
        while not list(finished.glob(pattern)):
            assert child.poll() is None, f"{words[0]} ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


@pytest.fixture
def kill_cli_when() -> Callable[[list[str], Path, str], None]:
    """`kill_cli_when(words, folder, pattern)`: see kill_when."""
    return kill_when


@pytest.fixture
def log_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands' console as a log has it (workbench.console.output_console), whatever COLUMNS the test runner
    sets (pytest-xdist's workers have 80): a test reading a table's cells reads them whole."""
    from workbench.console import LOG_WIDTH, console

    monkeypatch.setattr(console, "width", LOG_WIDTH)
    monkeypatch.setattr(console, "soft_wrap", True)


@pytest.fixture(scope="session")
def tiny_videos(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., pd.DataFrame]:
    """`tiny_videos(n)` writes n 64x48, 2 s H.264 clips (seeds 0..n-1) into a fresh data folder and returns the items
    table an extraction run takes (item_id, absolute path). A fresh folder per call, so a test may add broken
    files beside its clips; each clip is a few kB and encodes in milliseconds, so the factory is session-wide."""

    def make(n: int, prefix: str = "clip") -> pd.DataFrame:
        folder = tmp_path_factory.mktemp("videos")
        rows = []
        for seed in range(n):
            item_id = f"{prefix}{seed:03d}"
            path = folder / f"{item_id}.mp4"
            encode_mp4(render_source(seed, TINY_WIDTH, TINY_HEIGHT, TINY_FRAMES), path, fps=TINY_FPS)
            rows.append({"item_id": item_id, "path": str(path.resolve())})
        return pd.DataFrame(rows, columns=["item_id", "path"])

    return make


@pytest.fixture(scope="session")
def two_kvq_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    """Tiny KVQ data with two finished runs on the same folds, a linear and an MLP head: (the words `submit` needs to
    find them: data and runs folders; the two run ids)."""
    from workbench.cli import main

    folder = tmp_path_factory.mktemp("kvq-runs")
    data, runs = folder / "data", folder / "runs"
    common = [f"data={data}", f"cache={folder / 'cache'}", f"runs_dir={runs}"]
    features = ["frames=3", "size=64"]
    assert main(["synth", f"out={data}", "items=36", "seed=5", "width=96", "height=64"]) == 0
    assert main(["extract", *common[:2], *features, "views=center,hflip"]) == 0
    for head in ("linear", "mlp"):
        assert main(["train", *common, *features, f"head={head}", "epochs=8", "folds=3"]) == 0
    run_ids = sorted(p.name for p in (runs / "kvq").iterdir() if p.is_dir())
    return [common[0], common[2]], run_ids


@pytest.fixture(scope="session")
def cached_kvq(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A KVQ label layout (60 training videos from 20 sources, 6 test videos; the media are a few random bytes each,
    decoded by nobody) with two feature sets written straight into the cache, bound to those files: `size=32` holds a
    noisy copy of the score, `size=48` pure noise. Returns the words that select it (data=, cache=, frames=,
    size=32); heads train on it in a fraction of a second."""
    from features.cache import cache_dir, ensure_manifest, part_schema, write_part
    from features.fingerprint import file_digest
    from workbench.config import FeatureConfig

    folder = tmp_path_factory.mktemp("cached-kvq")
    data, cache = folder / "data", folder / "cache"
    data.mkdir()
    rng = np.random.default_rng(7)
    train = pd.DataFrame({"filename": [f"train/{i:04d}.mp4" for i in range(60)], "score": rng.uniform(1, 5, 60)})
    train.to_csv(data / "train_data.csv", index=False)
    test = pd.DataFrame({"filename": [f"test/{i:04d}.mp4" for i in range(6)], "score": np.nan})
    test.to_csv(data / "test_data.csv", index=False)
    ids = [*train["filename"], *test["filename"]]
    for item in ids:
        (data / item).parent.mkdir(exist_ok=True)
        (data / item).write_bytes(rng.bytes(64))
    media = [file_digest(data / item) for item in ids]
    pd.DataFrame({"filename": ids, "source": [f"s{i // 3}" for i in range(len(ids))]}).to_csv(
        data / "sources.csv", index=False
    )
    scores = np.concatenate([train["score"], rng.uniform(1, 5, len(test))])
    views, frames, dim = ("center", "hflip"), 2, 6
    rows = len(ids) * len(views) * frames
    for size, strength in ((32, 1.0), (48, 0.0)):
        (spec,) = FeatureConfig(track="kvq", frames=frames, size=size).all_specs("video")
        target = cache_dir(cache, "kvq", spec)
        ensure_manifest(target, spec, {"name": "synthetic"}, dim, {})
        score = np.repeat(scores, len(views) * frames)[:, None]
        feature = strength * score * np.linspace(1, -1, dim) + rng.normal(0, 0.5, (rows, dim))
        columns = {
            "item_id": np.repeat(ids, len(views) * frames),
            "fingerprint": np.repeat(media, len(views) * frames),
            "view": np.tile(np.repeat(views, frames), len(ids)),
            "t": np.tile(np.arange(frames), len(ids) * len(views)),
            "time": np.tile(np.arange(frames, dtype=np.float32), len(ids) * len(views)),
            "feature": feature,
        }
        write_part(target, columns, part_schema(dim, "float32"))
    return [f"data={data}", f"cache={cache}", f"frames={frames}", "size=32"]


SWEEP_STORAGES = ["sqlite", "journal", "postgresql"]
SWEEP_WORDS = ["folds=3", "epochs=4", "prune_after=1"]  # tiny trials; the pruner starts after one finished trial


def storage_word(kind: str, folder: Path) -> str:
    """The storage= a user would give: empty (the SQLite file under the runs folder), a journal file, a database."""
    if kind == "sqlite":
        return ""
    if kind == "journal":
        return f"journal:{folder / 'shared' / 'sweep.journal'}"
    url = os.environ.get("VQA_TEST_POSTGRES")
    if not url:
        pytest.skip("VQA_TEST_POSTGRES is unset: `.ci/postgres start` starts a throwaway server and prints it")
    return url


@dataclass
class Study:
    """A fresh study in one kind of storage: the words that name it (for sweep and sweep-best), the words of the
    sweep's default configuration, and a handle for the test to inspect it."""

    words: list[str]
    train_words: list[str]
    storage: str  # the storage= word
    runs_dir: str
    name: str
    handle: Any  # the opened storage

    def load(self) -> Any:  # -> optuna.Study
        import optuna

        return optuna.load_study(study_name=self.name, storage=self.handle)

    def sweep(self, trials: int, *words: str) -> list[str]:
        """The command line of a worker running `trials` trials; `words` change the default configuration."""
        changed = {word.partition("=")[0] for word in words}
        kept = [word for word in self.train_words if word.partition("=")[0] not in changed]
        return ["sweep", *self.words, *kept, *words, f"trials={trials}"]


@pytest.fixture(params=SWEEP_STORAGES)
def study(request: pytest.FixtureRequest, cached_kvq: list[str], tmp_path: Path) -> Study:
    from workbench import studies

    storage = storage_word(request.param, tmp_path)
    name = f"test-{uuid.uuid4().hex[:8]}"
    paths, features = cached_kvq[:2], cached_kvq[2:]
    words = [*paths, f"runs_dir={tmp_path / 'runs'}", f"storage={storage}", f"study={name}"]
    handle = studies.open_storage(storage, str(tmp_path / "runs"), "kvq", heartbeat=1)
    return Study(words, [*features, *SWEEP_WORDS], storage, str(tmp_path / "runs"), name, handle)
