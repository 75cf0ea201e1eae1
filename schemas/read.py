"""Reading the dataset: file discovery with one-line errors, contract checks, polars/Arrow readers."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.errors import DatasetError
from schemas.layout import CONNECTION_WIDE_SYMBOL, EXCHANGES, parse_date, partition_symbol, table_dir
from schemas.tables import META_EXCHANGE, META_SCHEMA_VERSION, META_TABLE, SCHEMA_MAJOR, TABLES
from schemas.write import superseded_files

Available = dict[str, dict[str, dict[dt.date, tuple[str, ...]]]]
HIVE_SCHEMA = {"date": pl.Date, "symbol": pl.String}
DEFAULT_BATCH_SIZE = 65_536


@dataclass(frozen=True)
class FileInfo:
    """What a dataset file's footer says about it."""

    path: Path
    table: str
    exchange: str
    schema_version: str
    num_rows: int


def _partitions(directory: Path, key: str) -> dict[str, Path]:
    """{value: dir} of the `key=value` subdirectories of `directory` that exist."""
    if not directory.is_dir():
        return {}
    prefix = f"{key}="
    return {
        child.name[len(prefix) :]: child
        for child in sorted(directory.iterdir())
        if child.is_dir() and child.name.startswith(prefix)
    }


def _parquet_files(directory: Path) -> list[Path]:
    """The partition's data files: hidden names are never data, nor files a compacted file superseded."""
    names = os.listdir(directory)
    superseded = superseded_files(directory, names)
    return sorted(directory / name for name in names
                  if name.endswith(".parquet") and not name.startswith(".") and name not in superseded)


def available(root: str | Path) -> Available:
    """{exchange: {table: {date: (symbols...)}}} for every partition holding at least one Parquet file."""
    root = Path(root)
    found: Available = {}
    for exchange in EXCHANGES:
        for table in TABLES:
            days: dict[dt.date, tuple[str, ...]] = {}
            for day, day_dir in _partitions(root / exchange / table, "date").items():
                symbols = tuple(s for s, d in _partitions(day_dir, "symbol").items() if _parquet_files(d))
                if symbols:
                    try:
                        days[parse_date(day)] = symbols
                    except ValueError:
                        continue  # not a partition of this layout
            if days:
                found.setdefault(exchange, {})[table] = days
    return found


def _summary(items: Iterable[object], limit: int = 12) -> str:
    names = [str(item) for item in items]
    if not names:
        return "none"
    if len(names) > limit:
        return ", ".join(names[:limit]) + f", ... ({len(names) - limit} more)"
    return ", ".join(names)


def list_files(
    root: str | Path,
    exchange: str,
    table: str,
    *,
    date: str | dt.date | None = None,
    symbols: Sequence[str] | None = None,
) -> list[Path]:
    """Parquet files of one table, optionally one date and some symbols (None = connection-wide events).

    Raises DatasetError naming the missing directory and what is available instead.
    """
    directory = table_dir(root, exchange, table)
    days = {parse_date(day): path for day, path in _partitions(directory, "date").items()}
    if not days:
        have = available(root).get(exchange, {})
        raise DatasetError(directory, f"no {table} data for {exchange}; available tables: {_summary(have)}")
    if date is not None:
        day = parse_date(date)
        if day not in days:
            raise DatasetError(
                directory / f"date={day.isoformat()}",
                f"no {table} data for date {day}; available: {_summary(sorted(days))}",
            )
        days = {day: days[day]}
    wanted = None if symbols is None else [partition_symbol(table, symbol) for symbol in symbols]
    files: list[Path] = []
    seen: set[str] = set()
    for day_dir in days.values():
        for symbol, symbol_dir in _partitions(day_dir, "symbol").items():
            if wanted is None or symbol in wanted:
                found = _parquet_files(symbol_dir)
                files.extend(found)
                if found:
                    seen.add(symbol)
    for symbol in wanted or ():
        if symbol not in seen:
            have = sorted({s for d in days.values() for s in _partitions(d, "symbol")})
            where = f"date {parse_date(date)}" if date is not None else "any date"
            raise DatasetError(
                directory, f"no {table} data for symbol {symbol} on {where}; available: {_summary(have)}"
            )
    if not files:
        raise DatasetError(directory, f"no Parquet files for {table}")
    return files


def check_file(path: str | Path, *, table: str | None = None, exchange: str | None = None) -> FileInfo:
    """Verify `path` is a contract file this reader understands (same major version, all v1 columns).

    Raises DatasetError (one line, naming the file) if it is not Parquet, lacks the contract metadata,
    has an unknown major version, or belongs to another table/exchange than expected.
    """
    path = Path(path)
    try:
        metadata = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(path, f"not a readable Parquet file ({exc})") from exc
    tags = {key.decode(): value.decode() for key, value in (metadata.metadata or {}).items()}
    version = tags.get(META_SCHEMA_VERSION)
    if version is None:
        raise DatasetError(path, f"no {META_SCHEMA_VERSION} metadata; not written by schemas.write_parquet")
    major, _, minor = version.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise DatasetError(path, f"malformed schema version {version!r}")
    if int(major) != SCHEMA_MAJOR:
        raise DatasetError(
            path, f"schema version {version} is not supported (this reader reads {SCHEMA_MAJOR}.x)"
        )
    file_table, file_exchange = tags.get(META_TABLE), tags.get(META_EXCHANGE)
    if file_table not in TABLES:
        raise DatasetError(path, f"unknown table {file_table!r} in metadata")
    if table is not None and file_table != table:
        raise DatasetError(path, f"holds table {file_table!r}, expected {table!r}")
    if exchange is not None and file_exchange != exchange:
        raise DatasetError(path, f"holds exchange {file_exchange!r}, expected {exchange!r}")
    schema = metadata.schema.to_arrow_schema()
    for field in TABLES[file_table]:
        if field.name not in schema.names:
            raise DatasetError(path, f"column {field.name!r} missing")
        if schema.field(field.name).type != field.type:
            raise DatasetError(
                path, f"column {field.name!r} is {schema.field(field.name).type}, expected {field.type}"
            )
    return FileInfo(path, file_table, file_exchange, version, metadata.num_rows)


def check_partition(
    root: str | Path,
    exchange: str,
    table: str,
    *,
    date: str | dt.date | None = None,
    symbols: Sequence[str] | None = None,
) -> list[FileInfo]:
    """check_file on every file `list_files` selects; raises DatasetError at the first bad one."""
    return [
        check_file(path, table=table, exchange=exchange)
        for path in list_files(root, exchange, table, date=date, symbols=symbols)
    ]


def scan(
    root: str | Path,
    exchange: str,
    table: str,
    *,
    date: str | dt.date | None = None,
    symbols: Sequence[str] | None = None,
) -> pl.LazyFrame:
    """Lazy polars scan of the selected files (checked first), with hive columns date (Date) and symbol.

    Files of a newer minor version may carry extra columns; the scan keeps the columns of the first file
    and fills missing ones with null. Connection-wide events get symbol null, not the partition's `_all`.
    """
    infos = check_partition(root, exchange, table, date=date, symbols=symbols)
    frame = pl.scan_parquet(
        [str(info.path) for info in infos],
        hive_partitioning=True,
        hive_schema=HIVE_SCHEMA,
        missing_columns="insert",
        extra_columns="ignore",
    )
    if table == "events":
        symbol = pl.col("symbol")
        frame = frame.with_columns(
            pl.when(symbol == CONNECTION_WIDE_SYMBOL).then(None).otherwise(symbol).alias("symbol")
        )
    return frame


def read_table(
    root: str | Path,
    exchange: str,
    table: str,
    *,
    date: str | dt.date | None = None,
    symbols: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Eager Arrow read for small selections: file columns plus `date` (date32) and, where the file has
    none, `symbol` from the partition path. Files are read in path order; sort by seq for arrival order.
    """
    stored = TABLES[table].names
    file_columns = (
        None if columns is None else [c for c in columns if c != "date" and (c != "symbol" or c in stored)]
    )
    parts = []
    for info in check_partition(root, exchange, table, date=date, symbols=symbols):
        part = pq.read_table(info.path, columns=file_columns)
        symbol_dir, day_dir = info.path.parent, info.path.parent.parent
        day = parse_date(day_dir.name.removeprefix("date="))
        part = part.append_column("date", pa.array([day] * part.num_rows, pa.date32()))
        if "symbol" not in part.column_names:
            symbol = symbol_dir.name.removeprefix("symbol=")
            part = part.append_column("symbol", pa.array([symbol] * part.num_rows, pa.string()))
        parts.append(part.replace_schema_metadata(None))
    result = pa.concat_tables(parts, promote_options="default")
    return result if columns is None else result.select(list(columns))


def iter_batches(
    paths: str | Path | Sequence[str | Path],
    columns: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[pa.RecordBatch]:
    """Stream record batches file after file with memory bounded by one row group, each file checked first.

    Yields file columns only (no hive date/symbol): the caller knows which partition it opened.
    """
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        check_file(path)
        with pq.ParquetFile(path) as parquet:
            yield from parquet.iter_batches(batch_size=batch_size, columns=columns)


def decimal_units64(column: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """decimal128(38, 8) column -> int64 numpy in 1e-8 units, nulls as 0; None when a value is beyond int64
    (then `decimal_units` gives them exactly). The low word of the two's-complement storage, no copy per value."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        words = np.frombuffer(chunk.buffers()[1], dtype="<u8", count=2 * (chunk.offset + len(chunk)))
        words = words[2 * chunk.offset :].reshape(-1, 2)
        low, high = words[:, 0].view(np.int64), words[:, 1].view(np.int64)
        fits = (high == 0) & (low >= 0) | (high == -1) & (low < 0)
        if chunk.null_count:
            valid = chunk.is_valid().to_numpy(zero_copy_only=False)
            low, fits = np.where(valid, low, 0), fits | ~valid
        if not fits.all():
            return None
        parts.append(low.copy())
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def decimal_units(column: pa.Array | pa.ChunkedArray) -> list[int | None]:
    """decimal128(38, 8) column -> Python ints in 1e-8 units (the unscaled integers), exactly, vectorised.

    Arrow prints decimals like zero as '0E-8', so text is no way back; the 16-byte two's-complement
    storage is read directly instead.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out: list[int | None] = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        words = np.frombuffer(chunk.buffers()[1], dtype="<u8", count=2 * (chunk.offset + len(chunk)))
        words = words[2 * chunk.offset :].reshape(-1, 2)
        low, high = words[:, 0], words[:, 1].view(np.int64)
        fits = (high == 0) & (low < 2**63) | (high == -1) & (low >= 2**63)
        values = low.view(np.int64).tolist()
        if not fits.all():
            for i in np.flatnonzero(~fits).tolist():
                values[i] = (int(high[i]) << 64) | int(low[i])
        if chunk.null_count:
            valid = chunk.is_valid().to_numpy(zero_copy_only=False)
            values = [v if ok else None for v, ok in zip(values, valid.tolist())]
        out.extend(values)
    return out
