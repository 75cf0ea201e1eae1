"""Arrow schemas of dataset contract v1: one schema per table, the single source of truth for writers
and readers. See schemas/README.md for the meaning and Binance origin of every column.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1.1"  # MAJOR.MINOR; readers accept any minor of their major (minor = added columns)
SCHEMA_MAJOR = int(SCHEMA_VERSION.split(".")[0])

# Parquet key-value metadata written on every file.
META_SCHEMA_VERSION = "avellaneda_mm.schema_version"
META_TABLE = "avellaneda_mm.table"
META_EXCHANGE = "avellaneda_mm.exchange"

# Prices and quantities: the unscaled integer equals the recorder's in-memory int (units of 1e-8).
DECIMAL = pa.decimal128(38, 8)
SIDES = ("bid", "ask")

EVENT_KINDS = (
    "connect",
    "disconnect",
    "subscribe",
    "snapshot_requested",
    "snapshot",
    "snapshot_stale",
    "synced",
    "gap",
    "resync",
    "ignored_stale",
    "buffer_overflow",
    "window_start",
    "window_end",
    "error",
    "parse_error",
    "server_shutdown",
    "journal_recovered",
    "need_snapshot",
    "snapshot_waiting",
    "rollover",
    "stream_silent",  # 1.1
    "stream_resumed",  # 1.1
    "snapshot_discarded",  # 1.1
)


def _field(name: str, type_: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


def _arrival() -> list[pa.Field]:
    return [_field("recv_ts", pa.int64()), _field("seq", pa.int64())]


DEPTH = pa.schema(
    [
        *_arrival(),
        _field("event_ts", pa.int64()),
        _field("transact_ts", pa.int64(), nullable=True),
        _field("first_update_id", pa.int64()),
        _field("final_update_id", pa.int64()),
        _field("prev_final_update_id", pa.int64(), nullable=True),
        # side/price/qty are all null on the single row standing for a diff with empty b and a.
        _field("side", pa.string(), nullable=True),
        _field("price", DECIMAL, nullable=True),
        _field("qty", DECIMAL, nullable=True),
    ]
)

SNAPSHOTS = pa.schema(
    [
        *_arrival(),
        _field("last_update_id", pa.int64()),
        _field("event_ts", pa.int64(), nullable=True),
        _field("transact_ts", pa.int64(), nullable=True),
        # side/price/qty/level are all null on the single row standing for a snapshot with no levels.
        _field("side", pa.string(), nullable=True),
        _field("price", DECIMAL, nullable=True),
        _field("qty", DECIMAL, nullable=True),
        _field("level", pa.int32(), nullable=True),
        _field("requested_limit", pa.int32()),
    ]
)

TRADES = pa.schema(
    [
        *_arrival(),
        _field("event_ts", pa.int64()),
        _field("trade_ts", pa.int64()),
        _field("trade_id", pa.int64()),
        _field("price", DECIMAL),
        _field("qty", DECIMAL),
        _field("buyer_is_maker", pa.bool_()),
        _field("best_match", pa.bool_(), nullable=True),
        _field("order_type", pa.string(), nullable=True),
    ]
)

AGG_TRADES = pa.schema(
    [
        *_arrival(),
        _field("event_ts", pa.int64()),
        _field("trade_ts", pa.int64()),
        _field("agg_trade_id", pa.int64()),
        _field("price", DECIMAL),
        _field("qty", DECIMAL),
        _field("first_trade_id", pa.int64()),
        _field("last_trade_id", pa.int64()),
        _field("buyer_is_maker", pa.bool_()),
        _field("best_match", pa.bool_(), nullable=True),
    ]
)

BOOK_TICKER = pa.schema(
    [
        *_arrival(),
        _field("update_id", pa.int64()),
        _field("event_ts", pa.int64(), nullable=True),
        _field("transact_ts", pa.int64(), nullable=True),
        _field("bid_price", DECIMAL),
        _field("bid_qty", DECIMAL),
        _field("ask_price", DECIMAL),
        _field("ask_qty", DECIMAL),
    ]
)

EVENTS = pa.schema(
    [
        _field("ts", pa.int64()),
        _field("seq", pa.int64()),
        _field("symbol", pa.string(), nullable=True),  # null: connection-wide, partitioned as symbol=_all
        _field("kind", pa.string()),
        _field("detail", pa.string()),  # JSON object text
    ]
)

INSTRUMENTS = pa.schema(
    [
        _field("symbol", pa.string()),
        _field("tick_size", DECIMAL),
        _field("step_size", DECIMAL),
        _field("min_qty", DECIMAL, nullable=True),
        _field("min_notional", DECIMAL, nullable=True),
        _field("price_precision", pa.int32(), nullable=True),
        _field("quantity_precision", pa.int32(), nullable=True),
        _field("filters", pa.string()),  # raw JSON of exchangeInfo's filters array
        *_arrival(),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "depth": DEPTH,
    "snapshots": SNAPSHOTS,
    "trades": TRADES,
    "agg_trades": AGG_TRADES,
    "book_ticker": BOOK_TICKER,
    "events": EVENTS,
    "instruments": INSTRUMENTS,
}

# Tables whose level columns are null together (the placeholder row of an empty diff or snapshot).
LEVEL_COLUMNS: dict[str, tuple[str, ...]] = {
    "depth": ("side", "price", "qty"),
    "snapshots": ("side", "price", "qty", "level"),
}


def schema_of(table_name: str) -> pa.Schema:
    """The v1 schema of `table_name`; ValueError naming the known tables otherwise."""
    try:
        return TABLES[table_name]
    except KeyError:
        raise ValueError(f"unknown table {table_name!r}; known: {', '.join(TABLES)}") from None
