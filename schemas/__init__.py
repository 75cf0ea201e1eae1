"""Dataset contract v1: the on-disk layout, Arrow schemas, writer and readers shared by recorder and replay.

The bottom layer: it imports neither `recorder` nor `replay`. The contract itself is in schemas/README.md.

Layout  <root>/<exchange>/<table>/date=YYYY-MM-DD/symbol=<SYMBOL>/<file>.parquet  (date: Berlin day)

Write   table_from_columns(table_name, columns) -> pa.Table
        write_partition(root, exchange, table_name, date, symbol, table, file_stem) -> Path
        write_parquet(table, path, *, table_name, exchange, compression="zstd", row_group_size=...) -> Path
Read    scan(root, exchange, table, *, date=None, symbols=None) -> pl.LazyFrame
        read_table(root, exchange, table, *, date=None, symbols=None, columns=None) -> pa.Table
        iter_batches(paths, columns=None, batch_size=65536) -> Iterator[pa.RecordBatch]
        check_file(path, *, table=None, exchange=None) -> FileInfo
        check_partition(root, exchange, table, *, date=None, symbols=None) -> list[FileInfo]
        list_files(...) -> list[Path];  available(root) -> {exchange: {table: {date: symbols}}}
Paths   partition_dir(root, exchange, table, date, symbol) -> Path;  berlin_date(ts_ns) -> date
        berlin_day_bounds(date) -> (start_ns, end_ns);  parse_date("20240501" | "2024-05-01") -> date
Errors  DatasetError: one-line message naming the file or directory a reader could not use.
"""

from schemas.errors import DatasetError
from schemas.layout import (
    BERLIN,
    CONNECTION_WIDE_SYMBOL,
    EXCHANGES,
    berlin_date,
    berlin_day_bounds,
    parse_date,
    partition_dir,
)
from schemas.read import (
    FileInfo,
    available,
    check_file,
    check_partition,
    decimal_units,
    decimal_units64,
    iter_batches,
    list_files,
    read_table,
    scan,
)
from schemas.tables import DECIMAL, EVENT_KINDS, SCHEMA_VERSION, SIDES, TABLES, schema_of
from schemas.write import (
    AtomicParquetWriter,
    conform,
    table_from_columns,
    to_decimal_array,
    write_parquet,
    write_partition,
)

__all__ = [
    "BERLIN",
    "CONNECTION_WIDE_SYMBOL",
    "DECIMAL",
    "EVENT_KINDS",
    "EXCHANGES",
    "SCHEMA_VERSION",
    "SIDES",
    "TABLES",
    "AtomicParquetWriter",
    "DatasetError",
    "FileInfo",
    "available",
    "berlin_date",
    "berlin_day_bounds",
    "check_file",
    "check_partition",
    "conform",
    "decimal_units",
    "decimal_units64",
    "iter_batches",
    "list_files",
    "parse_date",
    "partition_dir",
    "read_table",
    "scan",
    "schema_of",
    "table_from_columns",
    "to_decimal_array",
    "write_parquet",
    "write_partition",
]
