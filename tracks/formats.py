"""The kinds of leaderboard prediction file (CSV with or without a header, a JSON list): each writes its bytes and
reads them back as the organisers' scorer will, so every zip is checked before it takes its name."""

from __future__ import annotations

import abc
import io
import json
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tracks.layout import LayoutError, numeric_column, require_unique


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

    @property
    @abc.abstractmethod
    def expected(self) -> str:
        """What a file of this kind holds, in words, for the message refusing another (`a CSV with header a,b`)."""

    @property
    def headed(self) -> bool:
        """Whether the file's first line names the fields, so that a message counts a row's line past it."""
        return True

    def refusal(self, source: str, found: str) -> LayoutError:
        """The one line refusing a file that is not of this kind: the file, what it holds, what was expected."""
        return LayoutError(f"{source}: {found}; expected {self.expected}")

    def read(self, path: Path, targets: Sequence[str]) -> pd.DataFrame:
        """Reads a prediction file, or the file of this name at the root of a zip, into a frame indexed by id: what
        `score` and the leaderboard read. Anything else (binary data, another kind of file, a missing field, a
        score that is not a number) is a LayoutError of one line naming the file, which the command line ends with
        exit 2, rather than a parser's message that names no file."""
        raw, source = self.raw(Path(path))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise self.refusal(source, f"not UTF-8 text (byte {error.start} is 0x{raw[error.start]:02x})") from None
        if "\0" in text:
            raise self.refusal(source, f"binary data (a NUL character at byte {raw.index(0)})")
        if not text.strip():
            raise self.refusal(source, "an empty file")
        table = self.read_table(raw, source)
        fields = (self.id_column, *self.score_columns)
        missing = [field for field in fields if field not in table.columns]
        if missing:
            found = ", ".join(map(str, table.columns)) or "none"
            raise self.refusal(source, f"no {', '.join(missing)} field(s) (found {found})")
        try:
            require_unique(table[self.id_column], source, header=self.headed)
            values = {
                target: numeric_column(table, column, source, header=self.headed)
                for column, target in zip(self.score_columns, targets, strict=True)
            }
        except LayoutError as error:
            raise LayoutError(f"{error}; expected {self.expected}") from None
        return pd.DataFrame(values, index=pd.Index(table[self.id_column], name="item_id"))

    def raw(self, path: Path) -> tuple[bytes, str]:
        """The file's bytes, or those of the file of this name at the root of a zip, and the source to name."""
        if path.is_dir():
            raise LayoutError(f"{path}: a folder; expected {self.filename} ({self.expected}) or a zip holding it")
        if not zipfile.is_zipfile(path):
            return path.read_bytes(), str(path)
        try:
            with zipfile.ZipFile(path) as archive:
                if self.filename not in archive.namelist():
                    raise LayoutError(
                        f"{path}: no {self.filename} at the zip root "
                        f"(found: {', '.join(archive.namelist()) or 'nothing'})"
                    )
                return archive.read(self.filename), f"{path}:{self.filename}"
        except (zipfile.BadZipFile, EOFError, zlib.error) as error:
            raise LayoutError(f"{path}: a damaged zip ({error}); expected {self.filename} at its root") from None


@dataclass(frozen=True)
class CsvFormat(SubmissionFormat):
    """Comma-separated rows, with a header naming the fields, or without one (then the fields are by position)."""

    header: bool = True

    def write_table(self, table: pd.DataFrame) -> bytes:
        return table.to_csv(index=False, header=self.header).encode()

    @property
    def expected(self) -> str:
        fields = ",".join((self.id_column, *self.score_columns))
        return f"a CSV with header {fields}" if self.header else f"a CSV without a header, rows {fields}"

    @property
    def headed(self) -> bool:
        return self.header

    def read_table(self, raw: bytes, source: str) -> pd.DataFrame:
        if raw.lstrip()[:1] in (b"[", b"{") and (kind := json_kind(raw)):
            raise self.refusal(source, kind)
        try:
            ids = {self.id_column: str} if self.header else {0: str}
            table = pd.read_csv(io.BytesIO(raw), header=0 if self.header else None, dtype=ids)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise self.refusal(source, f"not a readable CSV ({one_line(error)})") from None
        if self.header:
            return table
        fields = [self.id_column, *self.score_columns]
        if table.shape[1] != len(fields):
            raise self.refusal(source, f"{table.shape[1]} field(s) per row")
        return table.set_axis(fields, axis=1)


@dataclass(frozen=True)
class JsonListFormat(SubmissionFormat):
    """A JSON list of objects, one per item, keyed by the id field and the score fields."""

    def write_table(self, table: pd.DataFrame) -> bytes:
        return json.dumps(table.to_dict(orient="records"), ensure_ascii=False, indent=1).encode()

    @property
    def expected(self) -> str:
        return f"a JSON list of objects with keys {','.join((self.id_column, *self.score_columns))}"

    def read_table(self, raw: bytes, source: str) -> pd.DataFrame:
        try:
            records = json.loads(raw)
        except ValueError as error:
            raise self.refusal(source, f"not JSON ({one_line(error)})") from None
        if not isinstance(records, list):
            raise self.refusal(source, f"a JSON {json_type(records)}")
        for k, record in enumerate(records):
            if not isinstance(record, dict):
                raise self.refusal(source, f"a JSON list whose item {k} is a JSON {json_type(record)}")
        table = pd.DataFrame.from_records(records)
        if self.id_column in table:
            table[self.id_column] = table[self.id_column].astype(str)
        return table


def json_type(value: object) -> str:
    """A JSON value's type as the JSON standard names it."""
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def json_kind(raw: bytes) -> str | None:
    """`a JSON list` (or object) where `raw` parses as JSON, else None: a JSON file given where a CSV is expected
    would otherwise read as a CSV whose header is its first line."""
    try:
        return f"a JSON {json_type(json.loads(raw))}"
    except ValueError:
        return None


def one_line(error: Exception) -> str:
    """A parser's message on one line (pandas ends its own with a newline)."""
    return " ".join(str(error).split())
