"""Row buffers for the dataset tables, flushed as Parquet segments in whole-column steps.

The hot path appends one tuple per message (levels stay the lists orjson produced); `flush` turns each
buffer into Arrow columns at once: nested level lists are exploded into per-level rows with Arrow and
numpy, decimal strings are cast to decimal128 by Arrow, never by a Python loop over levels.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from recorder.protocol import AggTrade, BookTicker, DepthSnapshot, DepthUpdate, Instrument, Trade
from schemas import table_from_columns, write_partition

MS = 1_000_000  # ms -> ns
_LEVELS = pa.list_(pa.list_(pa.string()))
_SIDE_CODES = pa.array(["bid", "ask", None])


def explode_levels(bids: list, asks: list) -> tuple[np.ndarray, pa.Array, pa.Array, pa.Array, np.ndarray]:
    """Per-message [[price, qty], ...] lists -> one row per level: bids then asks of each message in order.

    A message with no level at all keeps one row with null side/price/qty so its update ids survive.
    Returns (message index per row, side, price strings, qty strings, level index within its side).
    """
    bid_lists = _array(bids, _LEVELS)
    ask_lists = _array(asks, _LEVELS)
    n_bids = pc.list_value_length(bid_lists).to_numpy(zero_copy_only=False).astype(np.int64)
    n_asks = pc.list_value_length(ask_lists).to_numpy(zero_copy_only=False).astype(np.int64)
    n_empty = ((n_bids + n_asks) == 0).astype(np.int64)
    n = len(bids)
    counts = np.stack([n_bids, n_asks, n_empty], axis=1).ravel()  # groups: bids, asks, placeholder
    group_side = np.tile(np.arange(3), n)
    side_code = np.repeat(group_side, counts)
    message = np.repeat(np.repeat(np.arange(n), 3), counts)
    total_bids, total_asks = int(n_bids.sum()), int(n_asks.sum())
    is_bid, is_ask = side_code == 0, side_code == 1
    take = np.where(
        is_bid,
        np.cumsum(is_bid) - 1,
        np.where(is_ask, total_bids + np.cumsum(is_ask) - 1, total_bids + total_asks),
    )
    flat = pa.concat_arrays([bid_lists.flatten(), ask_lists.flatten(), pa.nulls(1, pa.list_(pa.string()))])
    levels = flat.take(pa.array(take))
    group_start = np.repeat(np.cumsum(counts) - counts, counts)
    level_index = np.arange(len(side_code)) - group_start
    side = sides_of(side_code)
    return message, side, pc.list_element(levels, 0), pc.list_element(levels, 1), level_index


def sides_of(codes: np.ndarray) -> pa.Array:
    """The side column from codes per row: 0 bid, 1 ask, 2 null (the row of a message without levels)."""
    return _SIDE_CODES.take(pa.array(codes))


def _array(values, type_: pa.DataType) -> pa.Array:
    """A column given as Python values (row buffers) or already as Arrow (decoded from raw frames)."""
    return values if isinstance(values, pa.Array) else pa.array(values, type_)


def _ms_to_ns(values) -> pa.Array:
    return pc.multiply(_array(values, pa.int64()), pa.scalar(MS, pa.int64()))


def _repeat(values, message: np.ndarray, type_: pa.DataType) -> pa.Array:
    return _array(values, type_).take(pa.array(message))


def depth_table(rows: list[tuple]) -> pa.Table:
    return depth_columns(*zip(*rows))


def depth_columns(recv_ts, seq, event_ts, transact_ts, first, final, prev, bids, asks) -> pa.Table:
    """The depth table from its columns (Python sequences or Arrow arrays): one builder for both paths."""
    message, side, price, qty, _ = explode_levels(bids, asks)
    return depth_levels_table(message, side, price, qty, recv_ts, seq, event_ts, transact_ts, first, final, prev)


def depth_levels_table(message: np.ndarray, side: pa.Array, price, qty, recv_ts, seq, event_ts, transact_ts,
                       first, final, prev) -> pa.Table:
    """The depth table from levels already exploded (`message`: each row's message index) and the
    per-message columns; price and qty as decimal strings or int64 1e-8 units (`to_decimal_array`)."""
    rows = pa.array(message)
    return table_from_columns(
        "depth",
        {
            "recv_ts": _array(recv_ts, pa.int64()).take(rows),
            "seq": _array(seq, pa.int64()).take(rows),
            "event_ts": _ms_to_ns(event_ts).take(rows),
            "transact_ts": _ms_to_ns(transact_ts).take(rows),
            "first_update_id": _array(first, pa.int64()).take(rows),
            "final_update_id": _array(final, pa.int64()).take(rows),
            "prev_final_update_id": _array(prev, pa.int64()).take(rows),
            "side": side,
            "price": price,
            "qty": qty,
        },
    )


def snapshots_table(rows: list[tuple]) -> pa.Table:
    recv_ts, seq, last_update_id, event_ts, transact_ts, bids, asks, limit = zip(*rows)
    message, side, price, qty, level = explode_levels(bids, asks)
    level_array = pa.array(level.astype(np.int32), mask=pc.is_null(side).to_numpy(zero_copy_only=False))
    return table_from_columns(
        "snapshots",
        {
            "recv_ts": _repeat(recv_ts, message, pa.int64()),
            "seq": _repeat(seq, message, pa.int64()),
            "last_update_id": _repeat(last_update_id, message, pa.int64()),
            "event_ts": pc.multiply(pa.array(event_ts, pa.int64()), pa.scalar(MS, pa.int64())).take(pa.array(message)),
            "transact_ts": pc.multiply(pa.array(transact_ts, pa.int64()), pa.scalar(MS, pa.int64())).take(
                pa.array(message)),
            "side": side,
            "price": price,
            "qty": qty,
            "level": level_array,
            "requested_limit": _repeat(limit, message, pa.int32()),
        },
    )


def trades_table(rows: list[tuple]) -> pa.Table:
    return trades_columns(*zip(*rows))


def trades_columns(recv_ts, seq, event_ts, trade_ts, trade_id, price, qty, maker, best, order_type) -> pa.Table:
    """The trades table from its columns (Python sequences or Arrow arrays), as `depth_columns`."""
    return table_from_columns(
        "trades",
        {"recv_ts": recv_ts, "seq": seq, "event_ts": _ms_to_ns(event_ts), "trade_ts": _ms_to_ns(trade_ts),
         "trade_id": trade_id, "price": price, "qty": qty, "buyer_is_maker": maker, "best_match": best,
         "order_type": order_type},
    )


def agg_trades_table(rows: list[tuple]) -> pa.Table:
    return agg_trades_columns(*zip(*rows))


def agg_trades_columns(recv_ts, seq, event_ts, trade_ts, agg_id, price, qty, first, last, maker, best) -> pa.Table:
    return table_from_columns(
        "agg_trades",
        {"recv_ts": recv_ts, "seq": seq, "event_ts": _ms_to_ns(event_ts), "trade_ts": _ms_to_ns(trade_ts),
         "agg_trade_id": agg_id, "price": price, "qty": qty, "first_trade_id": first, "last_trade_id": last,
         "buyer_is_maker": maker, "best_match": best},
    )


def book_ticker_table(rows: list[tuple]) -> pa.Table:
    return book_ticker_columns(*zip(*rows))


def book_ticker_columns(recv_ts, seq, update_id, event_ts, transact_ts, bid_p, bid_q, ask_p, ask_q) -> pa.Table:
    return table_from_columns(
        "book_ticker",
        {"recv_ts": recv_ts, "seq": seq, "update_id": update_id, "event_ts": _ms_to_ns(event_ts),
         "transact_ts": _ms_to_ns(transact_ts), "bid_price": bid_p, "bid_qty": bid_q, "ask_price": ask_p,
         "ask_qty": ask_q},
    )


def events_table(rows: list[tuple]) -> pa.Table:
    ts, seq, symbol, kind, detail = zip(*rows)
    return table_from_columns("events", {"ts": ts, "seq": seq, "symbol": symbol, "kind": kind, "detail": detail})


def instruments_table(rows: list[tuple]) -> pa.Table:
    recv_ts, seq, instruments = zip(*rows)
    return table_from_columns(
        "instruments",
        {
            "symbol": [i.symbol for i in instruments],
            "tick_size": [i.tick_size for i in instruments],
            "step_size": [i.step_size for i in instruments],
            "min_qty": [i.min_qty for i in instruments],
            "min_notional": [i.min_notional for i in instruments],
            "price_precision": [i.price_precision for i in instruments],
            "quantity_precision": [i.quantity_precision for i in instruments],
            "filters": [i.filters_json for i in instruments],
            "recv_ts": recv_ts,
            "seq": seq,
        },
    )


TABLE_BUILDERS = {
    "depth": depth_table,
    "snapshots": snapshots_table,
    "trades": trades_table,
    "agg_trades": agg_trades_table,
    "book_ticker": book_ticker_table,
    "events": events_table,
    "instruments": instruments_table,
}


_WRITERS: ThreadPoolExecutor | None = None
WRITE_THREADS = min(4, os.cpu_count() or 1)
# A file of this much work or more (`TableBuffers.work`: about the bytes Binance sent for its rows) is built
# and written in a pool thread, beside the other large ones, largest first (the kernel, casts, zstd and
# fsync release the GIL); smaller ones are written in turn by the caller: for the thousands of small files
# of a whole-market segment, threads only add GIL contention (measured 2026-12-02: +50 % CPU, same wall
# time, 1,200 files of ~60 rows). Work, not rows: a depth diff carries ~50 levels, a trade one row.
PARALLEL_MIN_WORK = 750_000
ROW_WORK = 150  # a row buffered as a tuple counts as a frame of this many bytes
# A segment file of fewer rows is written without compression and dictionaries: their set-up per file costs
# more CPU than such a file's rows (measured 2026-12-02: 617 -> 313 µs for 30 trades), and a whole-market segment
# is thousands of them. Segments are temporary: compaction writes the day files with zstd as ever.
SMALL_FILE_ROWS = 1_000
SMALL_FILE_OPTIONS = {"compression": "none", "dictionary": False, "decimal_extras": False}
# Larger ones are LZ4-compressed and keep their integer statistics (seq and recv_ts prune reads), not the
# price and quantity statistics and dictionaries nothing reads from a segment (`schemas.write.write_parquet`).
# LZ4, not zstd: a segment is read once, by compaction, which writes the day files with zstd; LZ4 writes it
# with ~22 % less CPU for ~1.5x its bytes (measured 2026-12-03, a 196k-frame segment of 6 symbols: depth
# 74 -> 58 ms, bookTicker 17 -> 13 ms; 4.6 -> 7.0 MB), and the writer's CPU is what a busy recorder lacks.
SEGMENT_OPTIONS = {"compression": "lz4", "decimal_extras": False}


def _writers() -> ThreadPoolExecutor:
    """The threads that write a segment's large files side by side."""
    global _WRITERS
    if _WRITERS is None:
        _WRITERS = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="segment-writer")
    return _WRITERS


@dataclass
class TableBuffers:
    """Pending rows per (table, symbol) for one Berlin date: what the next segment will hold."""

    rows: dict[tuple[str, str | None], list[tuple]] = field(default_factory=lambda: defaultdict(list))
    count: int = 0

    def depth(self, seq: int, recv_ts: int, m: DepthUpdate, raw: bytes) -> None:
        self.rows[("depth", m.symbol)].append(
            (recv_ts, seq, m.event_ts, m.transact_ts, m.first_update_id, m.final_update_id,
             m.prev_final_update_id, m.bids, m.asks)
        )
        self.count += 1

    def snapshot(self, seq: int, recv_ts: int, symbol: str, s: DepthSnapshot, limit: int) -> None:
        self.rows[("snapshots", symbol)].append(
            (recv_ts, seq, s.last_update_id, s.event_ts, s.transact_ts, s.bids, s.asks, limit)
        )
        self.count += 1

    def trade(self, seq: int, recv_ts: int, m: Trade, raw: bytes) -> None:
        self.rows[("trades", m.symbol)].append(
            (recv_ts, seq, m.event_ts, m.trade_ts, m.trade_id, m.price, m.qty, m.buyer_is_maker, m.best_match,
             m.order_type)
        )
        self.count += 1

    def agg_trade(self, seq: int, recv_ts: int, m: AggTrade, raw: bytes) -> None:
        self.rows[("agg_trades", m.symbol)].append(
            (recv_ts, seq, m.event_ts, m.trade_ts, m.agg_trade_id, m.price, m.qty, m.first_trade_id,
             m.last_trade_id, m.buyer_is_maker, m.best_match)
        )
        self.count += 1

    def book_ticker(self, seq: int, recv_ts: int, m: BookTicker, raw: bytes) -> None:
        self.rows[("book_ticker", m.symbol)].append(
            (recv_ts, seq, m.update_id, m.event_ts, m.transact_ts, m.bid_price, m.bid_qty, m.ask_price, m.ask_qty)
        )
        self.count += 1

    def event(self, seq: int, ts: int, symbol: str | None, kind: str, detail: dict) -> None:
        self.rows[("events", symbol)].append((ts, seq, symbol, kind, orjson.dumps(detail).decode()))
        self.count += 1

    def instrument(self, seq: int, recv_ts: int, instrument: Instrument) -> None:
        self.rows[("instruments", instrument.symbol)].append((recv_ts, seq, instrument))
        self.count += 1

    def gather(self) -> None:
        """Make `rows` hold every pending row (`FrameBuffers` keeps frames aside until then; here they are)."""

    def write(self, root: Path, exchange: str, date: dt.date, file_stem: str) -> tuple[list[Path], list[Rejected]]:
        """Write every buffer as <table>/date=/symbol=/<file_stem>.parquet (atomically) and clear.

        A message whose values do not convert (a malformed level from a faulty server) cannot poison the
        segment: it is set aside and returned, so the caller can record it and resync that symbol.
        """
        def write_one(table: str, symbol: str | None, rows) -> tuple[Path | None, list[Rejected]]:
            rejected: list[Rejected] = []
            arrow_table = self.build(table, symbol, rows, rejected)
            if arrow_table is None:
                return None, rejected
            options = SMALL_FILE_OPTIONS if arrow_table.num_rows < SMALL_FILE_ROWS else SEGMENT_OPTIONS
            return write_partition(root, exchange, table, date, symbol, arrow_table, file_stem,
                                   conformed=True, **options), rejected

        jobs = [(table, symbol, rows) for (table, symbol), rows in
                sorted(self.rows.items(), key=lambda item: (item[0][0], item[0][1] or "")) if rows]
        work = [self.work(rows) for _, _, rows in jobs]
        large = sorted((i for i in range(len(jobs)) if work[i] >= PARALLEL_MIN_WORK), key=lambda i: -work[i])
        in_pool = {i: _writers().submit(write_one, *jobs[i]) for i in large} if len(large) > 1 else {}
        written_here = {i: write_one(*job) for i, job in enumerate(jobs) if i not in in_pool}  # meanwhile
        results = [in_pool[i].result() if i in in_pool else written_here[i] for i in range(len(jobs))]
        self.rows.clear()
        self.count = 0
        return [path for path, _ in results if path is not None], [bad for _, rejected in results for bad in rejected]

    def build(self, table: str, symbol: str | None, rows: list[tuple], rejected: list[Rejected]) -> pa.Table | None:
        return build_isolated(table, symbol, rows, rejected)

    def work(self, rows) -> int:
        """What building and writing `rows` costs, in bytes of frames: it orders and places the writes."""
        return len(rows) * ROW_WORK


def build_isolated(table: str, symbol: str | None, rows: list[tuple], rejected: list[Rejected]) -> pa.Table | None:
    """The table of `rows`; rows that do not convert are left out and appended to `rejected` (None if all)."""
    build = TABLE_BUILDERS[table]
    try:
        return build(rows)
    except (pa.ArrowException, TypeError, ValueError):
        good = []
        for row in rows:
            try:
                build([row])
                good.append(row)
            except (pa.ArrowException, TypeError, ValueError) as exc:
                rejected.append(Rejected(table, symbol, row[1], row[0], str(exc).splitlines()[0]))
        return build(good) if good else None


@dataclass(frozen=True)
class Rejected:
    """A message set aside at flush because its values do not convert exactly."""

    table: str
    symbol: str | None
    seq: int
    recv_ts: int
    reason: str
