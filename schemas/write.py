"""Building tables that match the contract and writing them so a reader never sees a partial file."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.layout import CONNECTION_WIDE_SYMBOL, check_exchange, partition_dir
from schemas.tables import (
    DECIMAL,
    EVENT_KINDS,
    LEVEL_COLUMNS,
    META_EXCHANGE,
    META_SCHEMA_VERSION,
    META_TABLE,
    SCHEMA_VERSION,
    SIDES,
    schema_of,
)

DEFAULT_ROW_GROUP_SIZE = 256 * 1024  # bounds what a streaming reader holds in memory at once
_UNSCALED = pa.decimal128(38, 0)

ColumnValues = Sequence | pa.Array | pa.ChunkedArray


def _units_to_decimal(units: pa.Array) -> pa.Array:
    """Integers in 1e-8 units -> decimal128(38, 8) with the same unscaled integer (exact, zero rounding).

    A decimal128 is its unscaled integer in 16 little-endian bytes: an int64 and its sign word. Widening
    them with numpy is half the time of Arrow's cast (measured 2026-12-03: 1.9 ms vs 4.0 ms for 300k
    values), which a depth segment does for millions of levels; `_units_to_decimal_by_cast` is the
    reference the tests hold it to."""
    if units.type != pa.int64() or units.offset:
        return _units_to_decimal_by_cast(units)
    validity, data = units.buffers()
    narrow = np.frombuffer(data, np.int64, len(units))
    wide = np.empty((len(units), 2), np.int64)
    wide[:, 0] = narrow
    np.right_shift(narrow, 63, out=wide[:, 1])
    return pa.Array.from_buffers(DECIMAL, len(units), [validity, pa.py_buffer(wide)], units.null_count)


def _units_to_decimal_by_cast(units: pa.Array) -> pa.Array:
    return units.cast(_UNSCALED).view(DECIMAL)


def _decimal_from_arrow(array: pa.Array) -> pa.Array:
    kind = array.type
    if pa.types.is_integer(kind):
        return _units_to_decimal(array)
    if pa.types.is_floating(kind):
        raise TypeError("floats are inexact; give prices/quantities as ints in 1e-8 units or decimal strings")
    if pa.types.is_decimal(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pc.cast(array, DECIMAL)  # safe cast: raises rather than drop digits beyond 1e-8
    if pa.types.is_null(kind):
        return pa.nulls(len(array), DECIMAL)
    raise TypeError(f"cannot make a decimal column from {kind}")


def to_decimal_array(values: ColumnValues) -> pa.Array | pa.ChunkedArray:
    """Price/quantity column -> decimal128(38, 8), exactly, in one vectorised step.

    Integers (Python ints, numpy or Arrow ints) are 1e-8 units, as the recorder keeps them; strings are
    decimal text as Binance sends it ('61737.63000000'); Decimals and Arrow decimals are values. None is
    null. Floats raise TypeError. Digits beyond 1e-8 raise pa.ArrowInvalid.
    """
    if isinstance(values, pa.ChunkedArray):
        return pa.chunked_array([_decimal_from_arrow(chunk) for chunk in values.chunks], type=DECIMAL)
    if isinstance(values, pa.Array):
        return _decimal_from_arrow(values)
    if not isinstance(values, (list, tuple)):
        return _decimal_from_arrow(pa.array(values))  # numpy and other array-likes
    sample = next((value for value in values if value is not None), None)
    if sample is None:
        return pa.nulls(len(values), DECIMAL)
    if isinstance(sample, bool):
        raise TypeError("booleans are not prices or quantities")
    if isinstance(sample, int):
        try:
            units = pa.array(values, pa.int64())
        except OverflowError:  # beyond 9.2e10 whole units: exact but slower route through decimal128(38, 0)
            return pa.array(values, _UNSCALED).view(DECIMAL)
        return _units_to_decimal(units)
    if isinstance(sample, str):
        return pc.cast(pa.array(values, pa.string()), DECIMAL)
    if isinstance(sample, decimal.Decimal):
        return pa.array(values, DECIMAL)
    raise TypeError(
        f"cannot make a decimal column from {type(sample).__name__}; use ints in 1e-8 units or strings"
    )


def _conform_column(field: pa.Field, column: pa.ChunkedArray) -> pa.ChunkedArray:
    if field.type == DECIMAL:
        column = to_decimal_array(column)
    elif pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type).cast(field.type)
    elif pa.types.is_floating(column.type) and not pa.types.is_floating(field.type):
        raise TypeError(f"column {field.name!r} is {column.type}; expected {field.type}")
    else:
        column = column.cast(field.type)  # safe cast: overflow and lossy conversions raise
    if not field.nullable and column.null_count:
        raise ValueError(f"column {field.name!r} has {column.null_count} nulls but is not nullable")
    return column


def _check_values(table_name: str, table: pa.Table) -> None:
    if "side" in table.column_names:
        side = table.column("side")
        bad = pc.sum(pc.invert(pc.is_in(side.drop_null(), pa.array(SIDES)))).as_py()
        if bad:
            raise ValueError(f"column 'side' has {bad} values other than {SIDES}")
    if table_name == "events":
        kinds = pc.unique(table.column("kind")).to_pylist()
        unknown = sorted(set(kinds) - set(EVENT_KINDS))
        if unknown:
            raise ValueError(f"unknown event kinds {unknown}; add them to EVENT_KINDS with a minor version")
    columns = LEVEL_COLUMNS.get(table_name)
    if columns:
        nulls = [pc.is_null(table.column(name)) for name in columns]
        for name, mask in zip(columns[1:], nulls[1:]):
            if not pc.all(pc.equal(mask, nulls[0])).as_py():
                raise ValueError(f"{columns} must be null together (empty-update row); {name!r} differs")


def conform(table: pa.Table, table_name: str) -> pa.Table:
    """Cast `table` to the schema of `table_name`: columns in schema order, exact types, nulls only where
    allowed. Missing nullable columns become null; unknown or missing required columns raise ValueError.
    """
    schema = schema_of(table_name)
    extra = sorted(set(table.column_names) - set(schema.names))
    if extra:
        raise ValueError(f"columns {extra} are not in table {table_name!r}")
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(_conform_column(field, table.column(field.name)))
        elif field.nullable:
            columns.append(pa.chunked_array([pa.nulls(table.num_rows, field.type)]))
        else:
            raise ValueError(f"table {table_name!r} needs column {field.name!r}")
    conformed = pa.Table.from_arrays(columns, schema=schema)
    _check_values(table_name, conformed)
    return conformed


def table_from_columns(table_name: str, columns: Mapping[str, ColumnValues]) -> pa.Table:
    """Python lists (or Arrow/numpy arrays) per column -> a conforming table, one vectorised step per column.

    Price/quantity columns take ints in 1e-8 units or decimal strings (see `to_decimal_array`).
    """
    schema = schema_of(table_name)
    arrays = {}
    for name, values in columns.items():
        field = schema.field(name) if name in schema.names else None
        if field is not None and field.type == DECIMAL:
            arrays[name] = to_decimal_array(values)
        elif isinstance(values, (pa.Array, pa.ChunkedArray)) or field is None:
            arrays[name] = values
        else:
            arrays[name] = pa.array(values, field.type)
    return conform(pa.table(arrays), table_name)


def encoding_options(schema: pa.Schema) -> dict:
    """Delta encoding for integer columns (timestamps, seq, update ids grow steadily: a few bits a row
    after zstd), dictionary encoding for the rest (sides, repeated prices). Same schema, smaller files.

    In a table of levels (a `side` column: depth, snapshots) a message's ids and times repeat on each of
    its levels; zstd squeezes those runs from plain values better and faster than from their deltas
    (measured 2026-12-03, a depth segment of 300k levels: 38 vs 46 ms, 1.67 vs 1.69 MB)."""
    ints = [f.name for f in schema if pa.types.is_integer(f.type)]
    encoding = "PLAIN" if "side" in schema.names else "DELTA_BINARY_PACKED"
    return {"use_dictionary": [f.name for f in schema if f.name not in ints],
            "column_encoding": dict.fromkeys(ints, encoding)}


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs_durable(directory: Path) -> None:
    """mkdir -p, fsyncing each new directory's parent so the directory entry survives a crash too."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for new_dir in reversed(missing):
        new_dir.mkdir(exist_ok=True)
        _fsync_dir(new_dir.parent)


def write_parquet(
    table: pa.Table,
    path: str | Path,
    *,
    table_name: str,
    exchange: str,
    compression: str = "zstd",
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    conformed: bool = False,
    dictionary: bool = True,
    decimal_extras: bool = True,
) -> Path:
    """Conform `table` to `table_name`'s schema, tag it with the contract metadata and write it atomically.

    `conformed`: the table comes from `table_from_columns` or `conform` already (its values were checked
    there), so only its schema is compared, not every column cast and checked again. `dictionary=False`
    writes no dictionary pages (for small files, whose dictionaries cost more than they save).
    `decimal_extras=False` writes price and quantity columns without statistics and dictionary: min/max
    over 16-byte decimals is ~40 % of a depth file's write time (measured 2026-12-03, pyarrow 26), for
    files that are rewritten anyway (recorder segments) and whose readers prune by integers only.

    Writes a hidden temp file in the target directory, fsyncs it, renames it over `path` and fsyncs the
    directory: readers see either no file or the complete file, even across a crash. Returns `path`.
    """
    path = Path(path)
    if path.suffix != ".parquet" or path.name.startswith("."):
        raise ValueError(f"{path}: dataset files are named <stem>.parquet (no leading dot)")
    metadata = {
        META_SCHEMA_VERSION: SCHEMA_VERSION,
        META_TABLE: table_name,
        META_EXCHANGE: check_exchange(exchange),
    }
    if not (conformed and table.schema.equals(schema_of(table_name))):
        table = conform(table, table_name)
    tagged = table.replace_schema_metadata(metadata)
    options = encoding_options(tagged.schema)
    if not decimal_extras:
        decimals = {f.name for f in tagged.schema if f.type == DECIMAL}
        options["use_dictionary"] = [name for name in options["use_dictionary"] if name not in decimals]
        options["write_statistics"] = [f.name for f in tagged.schema if f.name not in decimals]
    if not dictionary:
        options["use_dictionary"] = False
    # Encoded into Arrow's own buffer, then written in one call: a Python file as the sink takes the GIL for
    # each of the writer's ~100 writes per file, and a thread writing segments beside a busy receiving
    # thread waits up to a switch interval (5 ms) for each (measured 2026-12-03: 18 segment files, 0.12 s
    # alone; beside a thread running Python, 5.2 s through the file, 0.75 s through the buffer).
    encoded = pa.BufferOutputStream()
    pq.write_table(tagged, encoded, compression=compression, row_group_size=row_group_size, **options)
    data = encoded.getvalue()
    return _write_atomically(path, lambda sink: sink.write(data))


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """`write` into a hidden temp file beside `path`, fsync it, rename it over `path`, fsync the directory."""
    _make_dirs_durable(path.parent)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # not *.parquet: globs never match it
    try:
        with open(temp, "wb") as sink:
            write(sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_file_atomic(path: str | Path, data: bytes) -> Path:
    """A small file (a report, a marker) written as `write_parquet` writes: a hidden temp file, fsynced and
    renamed over `path`, so a crash or a full disk leaves the old file or the new one, never a torn one."""
    return _write_atomically(Path(path), lambda sink: sink.write(data))


def _check_symbol_column(table_name: str, table: pa.Table, symbol: str | None) -> None:
    """A symbol stored in the file must agree with its partition, since hive readers show the partition."""
    if "symbol" not in table.column_names or table.num_rows == 0:
        return
    column = table.column("symbol")
    if symbol is None or symbol == CONNECTION_WIDE_SYMBOL:
        if column.null_count != table.num_rows:
            raise ValueError(f"{table_name}: rows in symbol={CONNECTION_WIDE_SYMBOL} must have a null symbol")
        return
    values = set(pc.unique(column).to_pylist())
    if values != {symbol}:
        raise ValueError(
            f"{table_name}: symbol column {sorted(values, key=str)} does not match partition {symbol!r}"
        )


def write_partition(
    root: str | Path,
    exchange: str,
    table_name: str,
    date: str | dt.date,
    symbol: str | None,
    table: pa.Table,
    file_stem: str,
    **options,
) -> Path:
    """Write `table` as <root>/<exchange>/<table>/date=<date>/symbol=<symbol>/<file_stem>.parquet.

    symbol None stands for connection-wide events (symbol=_all). `options` go to `write_parquet`.
    """
    if not file_stem or "/" in file_stem or file_stem.startswith("."):
        raise ValueError(f"invalid file stem {file_stem!r}")
    directory = partition_dir(root, exchange, table_name, date, symbol)
    _check_symbol_column(table_name, table, symbol)
    return write_parquet(
        table, directory / f"{file_stem}.parquet", table_name=table_name, exchange=exchange, **options
    )


REPLACES_SUFFIX = ".replaces.json"


def replaces_manifest(path: Path) -> Path:
    """The hidden manifest `.<name>.replaces.json` naming the files that `path` supersedes."""
    return path.with_name(f".{path.name}{REPLACES_SUFFIX}")


def _read_manifest(manifest: Path) -> tuple[str, list[str]] | None:
    """(temp file name, superseded file names), or None for a manifest torn by a crash while written."""
    try:
        info = json.loads(manifest.read_bytes())
        return info["temp"], list(info["replaces"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def superseded_files(directory: Path, names: list[str]) -> set[str]:
    """Names in `directory` that a committed replacement supersedes: a crash stopped it after the new file
    was renamed into place (its temp is gone) and before the old files were deleted. Readers skip them."""
    superseded: set[str] = set()
    for name in names:
        if name.startswith(".") and name.endswith(REPLACES_SUFFIX):
            manifest = _read_manifest(directory / name)
            if manifest is not None and manifest[0] not in names:
                superseded.update(manifest[1])
    return superseded


def finish_replacement(manifest: Path) -> None:
    """Complete or undo a replacement a crash interrupted, so a partition never holds a row twice.

    Committed (the new file was renamed into place): delete the superseded files, then the manifest.
    Not committed: delete the manifest, then the temp file, in that order, since a manifest whose temp
    file is gone reads as committed.
    """
    directory = manifest.parent
    info = _read_manifest(manifest)
    if info is None or (directory / info[0]).exists():
        manifest.unlink(missing_ok=True)
        _fsync_dir(directory)
        if info is not None:
            (directory / info[0]).unlink(missing_ok=True)
        return
    for name in info[1]:
        (directory / name).unlink(missing_ok=True)
    _fsync_dir(directory)
    manifest.unlink(missing_ok=True)
    _fsync_dir(directory)


class AtomicParquetWriter:
    """Stream record batches into one Parquet file that appears atomically (temp, fsync, rename) on close.

    For files too large to build as one table (compaction of a whole day): row groups are written as
    they fill, so memory stays bounded by one row group.

    `replaces` names files of the same directory the new file supersedes (the segments a day file
    absorbs); they are deleted once it is in place. A hidden manifest written before the rename makes
    this one step for readers and for a crash at any point: see `finish_replacement`.
    """

    def __init__(self, path: str | Path, *, table_name: str, exchange: str, compression: str = "zstd",
                 row_group_size: int = DEFAULT_ROW_GROUP_SIZE, replaces: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.replaces = [name for name in replaces if name != self.path.name]
        self.table_name = table_name
        self.row_group_size = row_group_size
        metadata = {
            META_SCHEMA_VERSION: SCHEMA_VERSION,
            META_TABLE: table_name,
            META_EXCHANGE: check_exchange(exchange),
        }
        self.schema = schema_of(table_name).with_metadata(metadata)
        _make_dirs_durable(self.path.parent)
        self._temp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        self._sink = open(self._temp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._writer = pq.ParquetWriter(self._sink, self.schema, compression=compression,
                                        **encoding_options(self.schema))
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        table = conform(table, self.table_name).replace_schema_metadata(self.schema.metadata)
        for batch in table.to_batches():
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
            while self._pending_rows >= self.row_group_size:
                self._write_group(self.row_group_size)

    def _write_group(self, rows: int) -> None:
        combined = pa.Table.from_batches(self._pending, schema=self.schema)
        self._writer.write_table(combined.slice(0, rows), row_group_size=rows)
        rest = combined.slice(rows)
        self._pending = rest.to_batches()
        self._pending_rows = rest.num_rows
        self.rows += rows

    def close(self) -> Path:
        if self._pending_rows:
            self._write_group(self._pending_rows)
        self._writer.close()
        self._sink.flush()
        os.fsync(self._sink.fileno())
        self._sink.close()
        manifest = replaces_manifest(self.path)
        if self.replaces:
            with open(manifest, "wb") as f:
                f.write(json.dumps({"temp": self._temp.name, "replaces": self.replaces}).encode())
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(self.path.parent)
        os.replace(self._temp, self.path)  # the commit point, also of the replacement
        _fsync_dir(self.path.parent)
        if self.replaces:
            finish_replacement(manifest)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        self._sink.close()
        if not self._temp.exists():
            return  # renamed into place: committed, the manifest is finished by the next writer or reader
        replaces_manifest(self.path).unlink(missing_ok=True)
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
