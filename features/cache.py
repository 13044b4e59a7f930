"""The feature cache: one folder per feature set, Parquet parts of per-frame rows, a manifest, a failures table.

Layout: `<root>/<track>/<key>/` (the key of the set's FeatureSpec, see features.spec) holding `manifest.json` (the
spec's identity in full, the encoder's, the vectors' dimension, library versions), `part-*.parquet` (rows
`item_id, fingerprint, view, t, time, feature`) and `failures-*.parquet` (rows `item_id, fingerprint, path, reason,
time`). One
extraction at a time holds a folder (`exclusive`); features.reader reads the rows back for training.

Every row carries `fingerprint`, that of the file it was made from (features.fingerprint), and is served only
while the item's file has that fingerprint. The cache is addressed by content: it holds rows per (item, fingerprint,
variant, frame), so a new version of an item (a re-download, a repaired file, a second dataset with the same ids)
is extracted beside the versions already held, and each is served again whenever its bytes are back. A failure, too,
applies only to the file it was recorded for. Nothing is dropped until the user prunes (features.inventory): a
reader records when it last read a part by touching its modification time (features.reader), and a prune removes
whole versions by what the data folders hold, by age or to fit a size.

Parts are only ever written whole (temporary name, then rename), so a killed run leaves at most a stale temporary file,
which no reader globs for. Removing rows (`drop_rows`) rewrites a part as its next generation (`part-x.g1.parquet`
replaces `part-x.parquet`) before the old one is unlinked; readers take only the newest generation of each part
(`live_parts`), so a kill between the two steps leaves nothing read twice, and a reader that finds a listed part gone
lists them again.

A vector is stored as one fixed-size binary value (its float32 or float16 bytes; the field's metadata names the
dtype and dimension), not as Arrow's fixed-size list: Parquet has no fixed-size list and writes one as a nested LIST
with a repetition and a definition level per number, which made reading a track's features about nine times slower
than `np.load` of the same array. The vector column is required (no definition levels), uncompressed, PLAIN, and one
page per row group, so its bytes on disk are the vectors themselves, in row order, for features.reader to copy
straight into its arrays.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from common.atomic import atomic_path, write_text
from features.spec import DTYPES, SCHEMA_VERSION, FeatureSpec

PART_GLOB = "part-*.parquet"
FAILURE_GLOB = "failures-*.parquet"
KEY_COLUMNS = ["item_id", "view", "t"]
DICTIONARY_COLUMNS = ["item_id", "fingerprint", "view"]
FINGERPRINTS_KEY = b"fingerprints"  # the footer's list of the fingerprints a part's rows hold (held_fingerprints)
DEFAULT_PAGE_BYTES = 1 << 20  # PyArrow's own page size
MAX_PAGE_BYTES = 1 << 30  # a page's size is a 32-bit integer in Parquet; a part larger than this reads through PyArrow


class CacheError(RuntimeError):
    """A feature cache that is missing, or that does not match the configuration asked for."""


def cache_dir(root: str | Path, track: str, spec: FeatureSpec) -> Path:
    """The folder of `spec`'s feature set."""
    return Path(root) / track / spec.key()


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """An exclusive lock on a cache folder for one extraction: a second process on the same key waits, then finds
    the first one's work cached instead of computing it again. The kernel releases it when a holder dies."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.getLogger(__name__).warning("%s: another extraction holds this cache; waiting for it", folder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- manifest ---------------------------------------------------------------------------------------------------------


def _differences(expected: dict, found: dict, prefix: str = "") -> list[str]:
    lines = []
    for key in sorted(set(expected) | set(found)):
        a, b = expected.get(key), found.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: asked {a!r}, cached {b!r}")
    return lines


def ensure_manifest(folder: Path, spec: FeatureSpec, backbone_identity: dict, dim: int, versions: dict) -> dict:
    """Creates the manifest, or checks an existing one against this configuration and backbone."""
    manifest = {
        "key": folder.name,
        "spec": spec.identity(),
        "backbone": backbone_identity,
        "dim": dim,
        "versions": versions,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = folder / "manifest.json"
    if path.is_file():
        found = json.loads(path.read_text())
        wanted = {k: manifest[k] for k in ("spec", "backbone", "dim")}
        diff = _differences(wanted, {k: found.get(k) for k in wanted})
        if diff:
            remedy = f"\n{ENCODER_CHANGED.format(folder=folder)}" if found.get("backbone") != backbone_identity else ""
            raise CacheError(f"{path} does not match this configuration:\n  " + "\n  ".join(diff) + remedy)
        return found
    folder.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


ENCODER_CHANGED = (
    "the encoder changed since these features were cached (another version of the workbench): delete {folder} and "
    "extract again, then train again the runs that read it"
)


def check_encoder(folder: Path, identity: dict) -> None:
    """Refuses the features in `folder` where another version of their encoder made them than the one `identity`
    describes (what this workbench builds): a head trained on them reads numbers this encoder does not make."""
    path = folder / "manifest.json"
    found = json.loads(path.read_text()).get("backbone") if path.is_file() else None
    diff = _differences(json.loads(json.dumps(identity)), found) if isinstance(found, dict) else []
    if diff:
        raise CacheError(f"{path}: " + "; ".join(diff) + f"\n{ENCODER_CHANGED.format(folder=folder)}")


RENAMED_KEYS = {"media": "decoder"}  # identity keys older schemas wrote under another name


def older_caches(folder: Path, spec: FeatureSpec) -> list[Path]:
    """Sibling folders holding the same feature set as written by an older schema: never read (schema 2's rows are
    not bound to their files; schema 3 named its columns otherwise); named so that a user knows to rebuild them and
    can free their space."""
    older = []
    for manifest in sorted(folder.parent.glob(f"{folder.name.rsplit('__', 1)[0]}__*/manifest.json")):
        found = json.loads(manifest.read_text()).get("spec", {})
        found = {RENAMED_KEYS.get(k, k): v for k, v in found.items()}
        same = {k: v for k, v in found.items() if k != "schema"} == {
            k: v for k, v in spec.identity().items() if k != "schema"
        }
        if same and found.get("schema", 0) < SCHEMA_VERSION:
            older.append(manifest.parent)
    return older


def read_manifest(folder: Path, spec: FeatureSpec) -> dict:
    """The manifest of a cache that must exist and match `spec`."""
    path = folder / "manifest.json"
    if not path.is_file():
        older = older_caches(folder, spec)
        if older:
            schema = json.loads((older[0] / "manifest.json").read_text())["spec"].get("schema")
            raise CacheError(
                f"no features cached in {folder}; {older[0]} holds them as an older version of the workbench wrote "
                f"them (schema {schema}, this one reads schema {SCHEMA_VERSION}): run `just extract` with the same "
                f"settings to rebuild them, and delete {older[0]} to free its space"
            )
        raise CacheError(
            f"no features cached in {folder} (no manifest.json): run `just extract` with the same settings first"
        )
    found = json.loads(path.read_text())
    diff = _differences(spec.identity(), found.get("spec", {}))
    if diff:
        raise CacheError(f"{path} does not match this configuration:\n  " + "\n  ".join(diff))
    return found


# --- parts ------------------------------------------------------------------------------------------------------------


def part_schema(dim: int, dtype: str) -> pa.Schema:
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    vector = pa.field(
        "feature",
        pa.binary(dim * np.dtype(dtype).itemsize),
        nullable=False,  # required: the page holds the vectors and nothing else (see features.reader)
        metadata={"dtype": dtype, "dim": str(dim)},
    )
    return pa.schema(
        [
            ("item_id", pa.string()),
            ("fingerprint", pa.string()),
            ("view", pa.string()),
            ("t", pa.int16()),
            ("time", pa.float32()),
            vector,
        ]
    )


def vector_layout(field: pa.Field) -> tuple[np.dtype, int]:
    """The numpy dtype and dimension of a feature column, from its metadata."""
    metadata = field.metadata or {}
    if not pa.types.is_fixed_size_binary(field.type) or b"dtype" not in metadata or b"dim" not in metadata:
        raise CacheError(
            f"column {field.name!r} is {field.type} without dtype and dim: not a schema-{SCHEMA_VERSION} feature column"
        )
    return np.dtype(metadata[b"dtype"].decode()), int(metadata[b"dim"])


def vectors(column: pa.Array, field: pa.Field) -> np.ndarray:
    """[rows, dim] view (no copy) of a fixed-size binary feature column without nulls."""
    dtype, dim = vector_layout(field)
    return np.frombuffer(
        column.buffers()[1], dtype=dtype, count=len(column) * dim, offset=column.offset * dim * dtype.itemsize
    ).reshape(-1, dim)


def write_part(folder: Path, columns: dict[str, np.ndarray], schema: pa.Schema, prefix: str = "part") -> Path:
    """One Parquet part, atomically; `columns['feature']` is a 2-D array [rows, dim]."""
    arrays = []
    for field in schema:
        if pa.types.is_fixed_size_binary(field.type):
            dtype, dim = vector_layout(field)
            values = np.ascontiguousarray(columns[field.name], dtype=dtype).reshape(-1, dim)
            arrays.append(pa.FixedSizeBinaryArray.from_buffers(field.type, len(values), [None, pa.py_buffer(values)]))
        else:
            arrays.append(pa.array(columns[field.name], type=field.type))
    final = folder / f"{prefix}-{uuid.uuid4().hex}.parquet"
    return _write_table(pa.Table.from_arrays(arrays, schema=schema), final)


def held_fingerprints(part: pq.ParquetFile) -> list[str] | None:
    """The fingerprints a part's rows hold, as its footer names them (None for a part written before footers did)."""
    named = (part.metadata.metadata or {}).get(FINGERPRINTS_KEY)
    return None if named is None else json.loads(named)


def _write_table(table: pa.Table, final: Path) -> Path:
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != FINGERPRINTS_KEY}
    table = table.replace_schema_metadata(metadata or None)
    # One page for the whole vector column, so its values lie in one run of bytes (see features.reader).
    page = min(max(table.nbytes + 1, DEFAULT_PAGE_BYTES), MAX_PAGE_BYTES)
    # Dictionaries and statistics pay off for the short columns only; on vectors they cost time and buy nothing.
    with (
        atomic_path(final) as tmp,
        pq.ParquetWriter(
            tmp,
            table.schema,
            compression="none",
            use_dictionary=[name for name in DICTIONARY_COLUMNS if name in table.column_names],
            write_statistics=[name for name in KEY_COLUMNS if name in table.column_names],
            data_page_size=page,
        ) as writer,
    ):
        writer.write_table(table)
        if "fingerprint" in table.column_names:  # in the footer, not the schema (which every read decodes): a
            # reader skips a part of other versions by it (features.reader)
            named = sorted(pc.unique(table["fingerprint"]).cast(pa.string()).to_pylist())
            writer.add_key_value_metadata({FINGERPRINTS_KEY: json.dumps(named)})
    return final


def _generation(part: Path) -> tuple[str, int]:
    """(the part's name without its generation, the generation): `part-x.g2.parquet` -> (`part-x`, 2)."""
    stem, _, generation = part.name.removesuffix(".parquet").partition(".g")
    return stem, int(generation or 0)


def live_parts(folder: Path, glob: str = PART_GLOB) -> list[Path]:
    """The parts to read: of each part rewritten by drop_rows, its newest generation alone."""
    newest: dict[str, tuple[int, Path]] = {}
    for part in folder.glob(glob):
        stem, generation = _generation(part)
        if stem not in newest or generation > newest[stem][0]:
            newest[stem] = (generation, part)
    return sorted(part for _, part in newest.values())


def remove_superseded(folder: Path) -> None:
    """Unlinks the parts and failure tables a newer generation replaces, left by a kill between writing the new one
    and unlinking the old (readers never read them). Only a holder of the folder's lock calls it."""
    for glob in (PART_GLOB, FAILURE_GLOB):
        for old in set(folder.glob(glob)) - set(live_parts(folder, glob)):
            old.unlink(missing_ok=True)


def drop_rows(folder: Path, doomed: Callable[[np.ndarray, np.ndarray], np.ndarray], glob: str = PART_GLOB) -> int:
    """Removes the rows for which `doomed(item_ids, fingerprints)` (two arrays of strings, one entry per row) is True
    from the live parts matching `glob` (the feature parts, or FAILURE_GLOB for the failure tables), and returns how
    many it removed. Only a holder of the folder's lock calls it (features.inventory.prune).

    A part losing rows is written whole as its next generation (`part-x.g1.parquet` replaces `part-x.parquet`, with
    the old one's times, so a rewrite does not look like a read), and only then is the old one unlinked; a part left
    with no rows is unlinked. So a kill at any point leaves every part whole and every other row present once."""
    removed = 0
    for part in live_parts(folder, glob):
        keys = pq.read_table(part, columns=["item_id", "fingerprint"])
        item_ids, fingerprints = (keys[name].to_numpy(zero_copy_only=False) for name in ("item_id", "fingerprint"))
        gone = np.asarray(doomed(item_ids, fingerprints), dtype=bool)
        if not gone.any():
            continue
        removed += int(gone.sum())
        if not gone.all():
            stem, generation = _generation(part)
            status = part.stat()
            successor = _write_table(
                pq.read_table(part).filter(pa.array(~gone)), part.with_name(f"{stem}.g{generation + 1}.parquet")
            )
            with contextlib.suppress(OSError):
                os.utime(successor, ns=(status.st_atime_ns, status.st_mtime_ns))
        part.unlink()
    return removed


def other_versions(folder: Path, fingerprints: dict[str, str]) -> set[str]:
    """The items of `fingerprints` (item id -> fingerprint now) of which the folder holds rows made from other bytes
    and none made from their files as they are now: a new version of each, if extracted, joins the old ones."""
    held = cached_views(folder)
    current = held["item_id"].map(fingerprints) == held["fingerprint"]
    asked = held["item_id"].isin(fingerprints.keys())
    return set(held.loc[asked & ~current, "item_id"]) - set(held.loc[current, "item_id"])


def _read_live(folder: Path, glob: str, columns: list[str] | None = None) -> pa.Table | None:
    """The live parts matching `glob` as one table; None where there are none."""
    files = live_parts(folder, glob)
    if not files:
        return None
    return ds.dataset(files, format="parquet").to_table(columns=columns)


def cached_views(folder: Path, fingerprints: dict[str, str] | None = None) -> pd.DataFrame:
    """The (item_id, view) pairs present in the cache; with `fingerprints` (item id -> fingerprint now), only those made
    from the items' current files."""
    table = _read_live(folder, PART_GLOB, ["item_id", "fingerprint", "view"])
    if table is None:
        return pd.DataFrame({name: pd.Series(dtype=str) for name in ("item_id", "fingerprint", "view")})
    pairs = table.to_pandas().drop_duplicates(ignore_index=True)
    if fingerprints is not None:
        pairs = pairs[pairs["item_id"].map(fingerprints) == pairs["fingerprint"]].reset_index(drop=True)
    return pairs


def write_failures(folder: Path, failures: list[dict], prefix: str = "failures") -> Path:
    columns = {key: [f[key] for f in failures] for key in ("item_id", "fingerprint", "path", "reason")}
    columns["time"] = [time.time()] * len(failures)
    schema = pa.schema(
        [
            ("item_id", pa.string()),
            ("fingerprint", pa.string()),
            ("path", pa.string()),
            ("reason", pa.string()),
            ("time", pa.float64()),
        ]
    )
    final = folder / f"{prefix}-{uuid.uuid4().hex}.parquet"
    with atomic_path(final) as tmp:
        pq.write_table(pa.Table.from_pydict(columns, schema=schema), tmp)
    return final


def read_failures(folder: Path, fingerprints: dict[str, str], views: Sequence[str] | None = None) -> pd.DataFrame:
    """The latest failure of every item in `fingerprints` (item id -> fingerprint now) recorded for its file as it is
    now and not cached in all of `views` (in any view when None): an item cached in one view whose file fails when a
    new view is asked for is still a failure; a file repaired since it failed is not."""
    table = _read_live(folder, FAILURE_GLOB)
    if table is None:
        return pd.DataFrame(columns=["item_id", "fingerprint", "path", "reason", "time"])
    failures = table.to_pandas()
    failures = failures[failures["item_id"].map(fingerprints) == failures["fingerprint"]]
    failures = failures.sort_values("time").drop_duplicates("item_id", keep="last")
    have = cached_views(folder, fingerprints)
    if views is None:
        cached = have["item_id"].unique()
    else:
        covered = have[have["view"].isin(views)].groupby("item_id")["view"].nunique()
        cached = covered.index[covered == len(set(views))]
    return failures[~failures["item_id"].isin(cached)].reset_index(drop=True)
