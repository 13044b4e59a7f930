"""Shared fixtures: tiny real media, generated on the spot (no files are shipped for them)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from synth.video import encode_mp4, render_source

TINY_WIDTH, TINY_HEIGHT, TINY_FRAMES, TINY_FPS = 64, 48, 16, 8  # 2 s clips: two key frames at 1 fps


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
