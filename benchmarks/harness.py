"""What every row shares: the sizes, the timing, the suite, its markdown and the `key=value` command line.

The machine is shared and noisy, so bare seconds prove little. Each row times ours and its reference interleaved,
`repeats` times, and reports the median of the per-repeat ratios: a neighbour's burst of load slows both sides of one
repeat, not one side of the comparison.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import operator
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import torch
from rich.console import Console
from rich.markup import escape

from workbench.config import ConfigError, as_dict, build, check_keys, known_keys, parse_words
from workbench.fold import quiet_lightning

Progress = Callable[[str], None]
# The row groups, in the order they run: each is the module of this package with that name, and its `rows` function.
# A module is imported when its group is chosen, so a run loads only what its rows need (Optuna for the sweep's).
GROUPS = (
    "extraction", "cache", "training", "memory", "sweep", "fingerprint", "motion", "audio", "text", "predictor", "hdr",
    "finetune", "lmm", "runs", "nss",
)  # fmt: skip
EXIT_USAGE = 2  # as the workbench's commands exit on a usage error
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # unwrapped, so a path in a message stays whole


@dataclass(frozen=True)
class BenchConfig:
    """The words of `just bench`."""

    quick: bool = False  # the same suite on less work, in about a minute
    backbone: str = "resnet18"  # the timm CNN (random weights) the extraction rows run
    rows: tuple[str, ...] = ()  # row groups (extraction, cache, training, memory, sweep, fingerprint, ..., finetune)
    root: str = "cache/bench"  # generated media (kept, so reruns skip generating them) and scratch space
    write: str = ""  # a BENCHMARKS.md whose generated block gets this run's table; empty only prints it


@dataclass(frozen=True)
class Sizes:
    """How much work each row does. `full` is what BENCHMARKS.md reports; `quick` runs the same code on less."""

    resolutions: tuple[tuple[int, int], ...] = ((1280, 720), (1920, 1080))
    clips: int = 3  # distinct clips per resolution
    extraction_items: int = 16  # items of the extraction rows, cycling over the clips
    seconds: int = 10
    fps: int = 25
    repeats: int = 3
    cache_items: int = 5000
    cache_frames: int = 8
    cache_dim: int = 1024
    train_items: int = 1200
    train_dim: int = 768
    folds: int = 10
    epochs: int = 20
    memory_items: tuple[int, int] = (50, 500)
    trials: int = 3
    trial_folds: int = 2
    long_seconds: int = 60
    texts: int = 2000  # distinct prompts of the text rows
    image: tuple[int, int] = (3840, 2160)  # the still image the fingerprint row hashes and decodes
    tune_items: int = 48  # FIQA images of the fine-tuning row
    lmm_items: int = 32  # AIGV videos of the LMM stream's row
    lmm_hidden: int = 512  # its random Qwen2-VL's text width and layers (the vision tower as wide)
    lmm_layers: int = 4
    lmm_frames: int = 4  # key frames per video given to the model, each lmm_side x lmm_side
    lmm_side: int = 224
    runs_listed: int = 500  # runs under the track folder `just runs` lists
    boot_items: int = 30_000  # out-of-fold items of the bootstrap row, in a fifth as many groups
    boot_resamples: int = 1000


SIZES = {
    "full": Sizes(),
    "quick": Sizes(
        clips=1, extraction_items=8, seconds=3, repeats=1, train_items=500, epochs=4, memory_items=(10, 50), trials=2,
        trial_folds=2, long_seconds=6, texts=200, lmm_items=8, runs_listed=100, boot_items=5000,
    ),
}  # fmt: skip


COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Row:
    """One line of the table: our figure, the reference it is held against, their ratio and the target."""

    number: str
    what: str
    ours: str
    reference: str
    ratio: float
    target: str  # a comparison and a bound, as the table prints it: ">= 0.8"
    note: str = ""

    @property
    def met(self) -> bool:
        """Read off the target as printed, so the table cannot say one thing and check another."""
        comparison, bound = self.target.split()
        return COMPARISONS[comparison](self.ratio, float(bound))


# --- timing -----------------------------------------------------------------------------------------------------------


@dataclass
class Timed:
    """Wall and CPU seconds (this process and its finished children) of one measured call."""

    wall: float
    cpu: float


@contextlib.contextmanager
def timed() -> Iterator[Timed]:
    result = Timed(0.0, 0.0)

    def cpu() -> float:
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return sum(u.ru_utime + u.ru_stime for u in usage)

    wall, start = time.perf_counter(), cpu()
    yield result
    result.wall, result.cpu = time.perf_counter() - wall, cpu() - start


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """The median of the per-repeat ratios, each of two sides timed in the same repeat: see the module's docstring."""
    return median([n / d for n, d in zip(numerators, denominators, strict=True)])


# --- the suite --------------------------------------------------------------------------------------------------------


@dataclass
class Report:
    rows: list[Row]
    seconds: float
    load: tuple[float, float]  # the machine's 1-minute load average at the start and at the end: how shared it was


def run_suite(cfg: BenchConfig, sizes: Sizes, progress: Progress = lambda message: None) -> Report:
    root = Path(cfg.root)
    root.mkdir(parents=True, exist_ok=True)
    started, load = time.monotonic(), os.getloadavg()[0]
    chosen = [importlib.import_module(f"{__package__}.{name}") for name in GROUPS if not cfg.rows or name in cfg.rows]
    rows = sorted(
        (row for group in chosen for row in group.rows(sizes, cfg, root, progress)), key=lambda row: int(row.number)
    )
    return Report(rows, time.monotonic() - started, (load, os.getloadavg()[0]))


def markdown(report: Report) -> str:
    columns = ("#", "what", "ours", "bound or baseline", "ratio", "target", "met")
    cells = [
        (r.number, r.what, r.ours, r.reference, f"{r.ratio:.2f}", r.target, "yes" if r.met else "**no**")
        for r in report.rows
    ]
    lines = ["| " + " | ".join(row) + " |" for row in [columns, ("---",) * len(columns), *cells]]
    notes = [f"- {r.number}, {r.what}: {r.note}" for r in report.rows if r.note]
    start, end = report.load
    context = f"{report.seconds:.0f} s in all; 1-minute load average {start:.1f} at the start, {end:.1f} at the end"
    return "\n".join([*lines, "", *notes, "", context])


def machine() -> str:
    """CPU model, cores, memory, torch threads and the library versions that the figures depend on."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next(iter(re.findall(r"model name\s*:\s*(.+)", cpuinfo)), platform.processor() or "unknown CPU")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    libraries = ("torch", "timm", "lightning", "av", "numpy", "pyarrow", "optuna")
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in libraries)
    ffmpeg = getattr(av, "ffmpeg_version_info", "?")
    return (
        f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, torch threads {torch.get_num_threads()}; "
        f"Python {platform.python_version()}, {versions}, FFmpeg {ffmpeg}"
    )


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def write_report(path: Path, report: Report, command: str) -> None:
    """Replaces the generated block of `path` (between the bench markers), keeping the notes written around it."""
    block = "\n".join([BEGIN, f"`{command}` on {time.strftime('%Y-%m-%d')}, {machine()}", "", markdown(report), END])
    text = path.read_text() if path.is_file() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise ConfigError(f"{path}: no {BEGIN} ... {END} block to replace")
    head, rest = text.split(BEGIN, 1)
    path.write_text(head + block + rest.split(END, 1)[1])


# --- the command line -------------------------------------------------------------------------------------------------


def parse_config(words: Sequence[str]) -> BenchConfig:
    """The configuration of `key=value` words, checked as the workbench's commands check theirs."""
    values = parse_words(words)
    check_keys(values, known_keys(BenchConfig), "bench")
    cfg = build(BenchConfig, values)
    unknown = [name for name in cfg.rows if name not in GROUPS]
    if unknown:
        raise ConfigError(f"rows={','.join(unknown)}: unknown; expected some of {', '.join(GROUPS)}")
    return cfg


def config_words(cfg: BenchConfig, changed_only: bool = False) -> list[str]:
    """The configuration as `key=value` words; with `changed_only`, those that differ from the defaults."""
    default = as_dict(BenchConfig())
    return [
        f"{key}={','.join(value) if isinstance(value, list) else value}"
        for key, value in as_dict(cfg).items()
        if not changed_only or value != default[key]
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m benchmarks [quick=true] [rows=...] [write=BENCHMARKS.md]`: prints the table as BENCHMARKS.md-ready
    markdown and, with write=<file>, updates that file. Exit status 2 on a usage error, as the workbench's."""
    try:
        cfg = parse_config(sys.argv[1:] if argv is None else argv)
        console.print(f"[bold cyan]bench[/] {' '.join(config_words(cfg))}")
        quiet_lightning()
        with console.status("benchmarks") as status:
            report = run_suite(
                cfg, SIZES["quick" if cfg.quick else "full"], lambda text: status.update(f"benchmarks: {text}")
            )
        console.print(markdown(report), markup=False, highlight=False, soft_wrap=True)
        if cfg.write:
            write_report(Path(cfg.write), report, " ".join(["just bench", *config_words(cfg, changed_only=True)]))
            console.print(f"[bold green]{cfg.write}[/] updated")
        return 0
    except ConfigError as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_USAGE
