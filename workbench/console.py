"""What every command prints through: the consoles, the command echo, the tables, the exit statuses."""

from __future__ import annotations

import os
from collections.abc import Sequence

from rich.console import Console

from common.tables import rich_table
from features.extract import ExtractionSummary
from workbench.config import as_dict

LOG_WIDTH = 10_000  # wider than any table, so a log lays each out at its natural width


def output_console(**options: object) -> Console:
    """The console a command prints through. A terminal folds tables and lines to its width; a log (CI, a file, a
    pipe) is read later and searched, so there, unless COLUMNS says otherwise, tables take their natural width and no
    line is wrapped: rich would otherwise cut paths and headers at 80 columns."""
    shown = Console(**options)
    if shown.is_terminal or "COLUMNS" in os.environ:
        return shown
    return Console(**{"width": LOG_WIDTH, "soft_wrap": True, **options})  # what the caller names wins


console = output_console()
errors = Console(stderr=True, soft_wrap=True)  # unwrapped, so a path or id in a message stays whole
EXIT_USAGE, EXIT_FAILURES = 2, 3
FAILURES_SHOWN = 20  # rows of the failures table printed; the cache keeps them all
table = rich_table


def announce(command: str, config: object) -> None:
    words = " ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in as_dict(config).items())
    console.print(f"[bold cyan]{command}[/] {words}")


def report_extraction(summary: ExtractionSummary, views: Sequence[str]) -> int:
    rate = summary.extracted / summary.seconds if summary.seconds else 0.0
    console.print(
        table(
            "extraction",
            ["items", "views", "already cached", "extracted", "new version", "failed", "items/s", "cache"],
            [
                [
                    summary.items,
                    ",".join(views),
                    summary.already_cached,
                    summary.extracted,
                    summary.changed,
                    len(summary.failures),
                    rate,
                    "\n".join(map(str, summary.folders)),
                ]
            ],
        )
    )
    if summary.facts is not None and "colour_from" in summary.facts:
        read = summary.facts[summary.facts["error"] == ""]
        counts = read.groupby(["colour_from", "transfer", "bit_depth"]).size().reset_index().to_numpy().tolist()
        title = "colour tags (untagged, unnamed: HDR10 at 10 bits, SDR at 8; per file in media-facts.parquet)"
        console.print(table(title, ["from", "transfer", "bits", "files"], counts))
    if len(summary.failures):
        shown = (
            f", the first {FAILURES_SHOWN} of {len(summary.failures)}" if len(summary.failures) > FAILURES_SHOWN else ""
        )
        console.print(
            table(
                f"failures{shown} (recorded in the cache's failures table; fix or remove these items, then rerun)",
                ["item", "reason"],
                summary.failures[["item_id", "reason"]].head(FAILURES_SHOWN).to_numpy().tolist(),
            )
        )
        return EXIT_FAILURES
    return 0


def dash(value: object) -> object:
    return "-" if value is None else value
