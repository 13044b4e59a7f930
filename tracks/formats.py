"""The kinds of leaderboard prediction file (CSV with or without a header, a JSON list): each writes its bytes and
reads them back as the organisers' scorer will, so every zip is checked before it takes its name."""

from __future__ import annotations

import abc
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tracks.layout import LayoutError, numeric_column, require_columns, require_unique


@dataclass(frozen=True)
class SubmissionFormat(abc.ABC):
    """A leaderboard's prediction file, one kind per layout (CSV with or without a header, a JSON list): the file's
    name at the zip root, the id field and one field per target, and the readme beside it where the challenge asks
    for one. Each kind writes its bytes and reads them back as the organisers' scorer will, so every zip is checked
    before it takes its name."""

    filename: str
    id_column: str
    score_columns: tuple[str, ...]
    readme: str | None = None

    @staticmethod
    def readme_text(media: str, runtime: float, cpu: bool, extra_data: bool, other: str) -> bytes:
        """The NTIRE convention: four `key : value` lines, runtime per item in seconds, CPU[1]/GPU[0], extra data
        [1]/[0], a free description."""
        lines = (
            f"runtime per {media} [s] : {runtime:.4f}",
            f"CPU[1] / GPU[0] : {int(cpu)}",
            f"Extra Data [1] / No Extra Data [0] : {int(extra_data)}",
            f"Other description : {other}",
        )
        return ("\n".join(lines) + "\n").encode()

    def encode(self, pred: pd.DataFrame, targets: Sequence[str]) -> bytes:
        """The file's bytes: rows in `pred`'s order, floats with full precision so a re-read gives the same numbers."""
        table = pd.DataFrame({self.id_column: pred.index.astype(str)})
        for column, target in zip(self.score_columns, targets, strict=True):
            table[column] = pred[target].to_numpy(dtype=np.float64)
        return self.write_table(table)

    @abc.abstractmethod
    def write_table(self, table: pd.DataFrame) -> bytes:
        """A table of the id field then the score fields, as this kind's bytes."""

    @abc.abstractmethod
    def read_table(self, raw: bytes, source: str) -> pd.DataFrame:
        """This kind's bytes as a table with the id field and the score fields (cells as read)."""

    def read(self, path: Path, targets: Sequence[str]) -> pd.DataFrame:
        """Reads a prediction file, or the file of this name at the root of a zip, into a frame indexed by id."""
        path = Path(path)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if self.filename not in archive.namelist():
                    raise LayoutError(
                        f"{path}: no {self.filename} at the zip root "
                        f"(found: {', '.join(archive.namelist()) or 'nothing'})"
                    )
                raw = archive.read(self.filename)
            source = f"{path}:{self.filename}"
        else:
            raw = path.read_bytes()
            source = str(path)
        table = require_columns(self.read_table(raw, source), (self.id_column, *self.score_columns), source)
        require_unique(table[self.id_column], source)
        values = {t: numeric_column(table, c, source) for c, t in zip(self.score_columns, targets, strict=True)}
        return pd.DataFrame(values, index=pd.Index(table[self.id_column], name="item_id"))


@dataclass(frozen=True)
class CsvFormat(SubmissionFormat):
    """Comma-separated rows, with a header naming the fields, or without one (then the fields are by position)."""

    header: bool = True

    def write_table(self, table: pd.DataFrame) -> bytes:
        return table.to_csv(index=False, header=self.header).encode()

    def read_table(self, raw: bytes, source: str) -> pd.DataFrame:
        if self.header:
            return pd.read_csv(io.BytesIO(raw), dtype={self.id_column: str})
        fields = [self.id_column, *self.score_columns]
        table = pd.read_csv(io.BytesIO(raw), header=None, dtype={0: str})
        if table.shape[1] != len(fields):
            raise LayoutError(
                f"{source}: {table.shape[1]} field(s) per row, expected {len(fields)} ({', '.join(fields)})"
            )
        return table.set_axis(fields, axis=1)


@dataclass(frozen=True)
class JsonListFormat(SubmissionFormat):
    """A JSON list of objects, one per item, keyed by the id field and the score fields."""

    def write_table(self, table: pd.DataFrame) -> bytes:
        return json.dumps(table.to_dict(orient="records"), ensure_ascii=False, indent=1).encode()

    def read_table(self, raw: bytes, source: str) -> pd.DataFrame:
        try:
            records = json.loads(raw)
        except ValueError as error:
            raise LayoutError(f"{source}: not JSON ({error})") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise LayoutError(f"{source}: expected a JSON list of objects")
        table = pd.DataFrame.from_records(records)
        if self.id_column in table:
            table[self.id_column] = table[self.id_column].astype(str)
        return table
