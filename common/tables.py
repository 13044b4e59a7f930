"""One table, two renderings: the rich table a command prints and the markdown a report keeps, each cell formatted
one way (floats to four decimals), so what a user reads on the terminal and in report.md agree."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from rich.table import Table as RichTable

Table = tuple[str, Sequence[str], Sequence[Sequence[object]]]  # title, columns, rows


def cell(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def examples(values: Iterable[object], shown: int, show: Callable[[object], str] = str) -> str:
    """The first `shown` values and how many more there are: a message naming what is wrong stays one line however
    many are."""
    values = list(values)
    named = ", ".join(show(value) for value in values[:shown])
    return named + (f" and {len(values) - shown} more" if len(values) > shown else "")


def markdown(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(v).replace("\n", "<br>").replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def rich_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> RichTable:
    out = RichTable(title=title, title_justify="left")
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*(cell(value) for value in row))
    return out
