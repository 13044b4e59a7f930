"""Row 5: peak resident memory of a large extraction against a small one, each in a process of its own."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.extraction import run_extraction
from benchmarks.harness import BenchConfig, Progress, Row, Sizes
from benchmarks.media import bench_clip, clip_items
from features.spec import FeatureSpec

MEMORY_CLIP = (320, 240, 2)  # small clips: the point is what accumulates per item, not the cost of one


def memory_child(arguments: str) -> None:
    """Runs one extraction and prints the peak resident memory of this process and of its largest worker (kB)."""
    job = json.loads(arguments)
    items = clip_items([Path(p) for p in job["paths"]], job["items"])
    spec = FeatureSpec(backbone=job["backbone"], frames=MEMORY_CLIP[2])
    run_extraction(items, spec, job["cache"])
    kinds = {"self": resource.RUSAGE_SELF, "children": resource.RUSAGE_CHILDREN}
    peaks = {who: resource.getrusage(kind).ru_maxrss for who, kind in kinds.items()}
    print(json.dumps(peaks))


def peak_rss(paths: Sequence[Path], items: int, backbone: str, cache: Path) -> dict[str, int]:
    job = json.dumps({"paths": [str(p) for p in paths], "items": items, "backbone": backbone, "cache": str(cache)})
    code = "import sys; from benchmarks.memory import memory_child; memory_child(sys.argv[1])"
    # The child imports this very checkout, wherever it runs from: benchmarks/ is not installed.
    path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "-c", code, job], capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"the memory benchmark's extraction of {items} items failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    width, height, seconds = MEMORY_CLIP
    progress("memory media")
    paths = [bench_clip(root / "media", width, height, seconds, sizes.fps, seed) for seed in range(10)]
    small, large = sizes.memory_items

    def measure(count: int) -> dict[str, int]:
        with tempfile.TemporaryDirectory(dir=root) as scratch:
            return peak_rss(paths, count, cfg.backbone, Path(scratch))

    progress(f"peak memory of extractions of {small} and {large} clips (a process each, side by side)")
    # Each figure is the peak of a process of its own, so the two run at once: much of each is the interpreter's start.
    with ThreadPoolExecutor(2) as pool:
        peaks = dict(zip((small, large), pool.map(measure, (small, large))))
    mb = {count: {who: kb / 1024 for who, kb in peak.items()} for count, peak in peaks.items()}
    total = {count: peak["self"] + peak["children"] for count, peak in mb.items()}
    ratio = total[large] / total[small]
    return [
        Row(
            "5",
            f"peak RSS of an extraction, {large} against {small} clips ({width}x{height}, {seconds} s)",
            f"{total[large]:.0f} MB",
            f"{total[small]:.0f} MB",
            ratio,
            "<= 1.1",
            "the main process's peak plus its largest decoding worker's: "
            + " against ".join(f"{mb[n]['self']:.0f} + {mb[n]['children']:.0f} MB" for n in (large, small)),
        )
    ]
