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
