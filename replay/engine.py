"""Replay of a recorded day: every channel merged in arrival order, books rebuilt, paced in time.

Library first: `DayReplay(root, market, date, symbols, start_ns, end_ns).events()` yields `ReplayEvent`s
in arrival order (`recv_ts`, then `seq`). Depth diffs and snapshots go through the recorder's own
`LocalBook` on the recorder's own walk of a day (`recorder.daywalk.walk`, which validation and the exports
share); a symbol's book is only ever exposed while valid, every change of validity is an explicit event
(`book_invalid` / `book_valid`), so a consumer never sees a stale book, and each book message carries the
sync engine's `action` (an applied diff is `Action.APPLY`). `Pacer` turns data time into wall time at a
speed (`1x`, `50x`, `max`).

Files are streamed row group by row group (bounded memory whatever the day's size). A start inside the
day seeks: it begins at the latest checkpoint snapshot before the start (and the diffs just before it
that may bridge it), replays silently up to the start, and emits from there.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recorder.book import OrderBook
from recorder.daywalk import DEPTH, SNAPSHOT, walk  # noqa: F401 (SNAPSHOT: a ReplayEvent kind callers import here)
from recorder.markets import Market
from recorder.rebuild import book_streams, files_in_seq_order
from recorder.sync import Action, LocalBook
from schemas import DatasetError, available, check_file, decimal_units, list_files, parse_date
from schemas.layout import BERLIN

# ReplayEvent kinds (DEPTH and SNAPSHOT: the walk's book messages)
TRADE, AGG_TRADE, BOOK_TICKER, EVENT = "trade", "agg_trade", "book_ticker", "event"
BOOK_VALID, BOOK_INVALID = "book_valid", "book_invalid"
CHANNEL_TABLES = {TRADE: "trades", AGG_TRADE: "agg_trades", BOOK_TICKER: "book_ticker", EVENT: "events"}
DECIMAL_COLUMNS = {"price", "qty", "bid_price", "bid_qty", "ask_price", "ask_qty"}
BATCH_ROWS = 2_048  # rows decoded at a time: small enough that decoding never stalls a paced replay
SEEK_LOOKBACK_NS = 10 * 1_000_000_000  # diffs that may bridge a checkpoint arrive within this before it
SEEK_SETTLE_NS = 2 * 1_000_000_000  # a checkpoint is chosen this long before the start, to be synced by then


class ReplayError(ValueError):
    """Bad replay input (no such day/symbol, range outside the data, nothing to start from)."""


@dataclass(slots=True)
class ReplayEvent:
    """One thing that happened, in arrival order.

    `data`: DepthUpdate/DepthSnapshot (levels as (price, qty) ints in 1e-8 units) for depth/snapshot;
    a dict of the table row (decimals as ints in 1e-8 units) for trade/agg_trade/book_ticker/event;
    for book_valid/book_invalid a dict with the update id or the reason. `book` is the symbol's valid
    book after a depth/snapshot event (None while invalid); it is live: copy what you keep. `action` is
    what the sync engine did with a depth/snapshot message (`Action.APPLY`: the diff changed the book;
    `IGNORED`, `BUFFERED`, `WAIT`, `STALE`: it did not; `SYNCED`, `RESYNC`), None for other events.
    """

    recv_ts: int
    seq: int
    symbol: str | None
    kind: str
    data: object
    book: OrderBook | None = None
    exchange_ts: int | None = None  # E in ns where the message has one
    transact_ts: int | None = None  # T in ns where the message has one (futures depth, trades): matching time
    action: Action | None = None


def _rows(paths: list[Path], symbol: str | None, kind: str, start_ns: int | None) -> Iterator[tuple]:
    """(recv_ts or ts, seq, kind, symbol, row dict) for a one-row-per-message table, streamed."""
    for path in files_in_seq_order(paths):
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            ts_name = "ts" if "ts" in batch.schema.names else "recv_ts"
            ts = batch.column(ts_name).to_numpy()
            if start_ns is not None and len(ts) and ts[-1] < start_ns:
                continue
            columns = {}
            for name in batch.schema.names:
                column = batch.column(name)
                columns[name] = decimal_units(column) if name in DECIMAL_COLUMNS else column.to_pylist()
            names = list(columns)
            for values in zip(*columns.values()):
                row = dict(zip(names, values))
                yield row[ts_name], row["seq"], kind, symbol if symbol is not None else row.get("symbol"), row


def _files(root: Path, exchange: str, table: str, date: dt.date, symbols: list[str | None]) -> list[Path]:
    try:
        return list_files(root, exchange, table, date=date, symbols=symbols)
    except DatasetError:
        return []


@dataclass
class DayReplay:
    """One recorded day (or a time range of it) of some symbols of one market."""

    root: Path
    market: Market
    date: dt.date | str
    symbols: list[str] | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    channels: tuple[str, ...] = (TRADE, AGG_TRADE, BOOK_TICKER, EVENT)
    books: dict[str, LocalBook] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.date = parse_date(self.date)
        exchange = self.market.exchange
        days = available(self.root).get(exchange, {}).get("depth", {})
        if self.date not in days:
            have = ", ".join(d.isoformat() for d in sorted(days)) or "none"
            raise ReplayError(f"no {exchange} depth data for {self.date} under {self.root}; available dates: {have}")
        recorded = sorted(days[self.date])
        if self.symbols is None:
            self.symbols = recorded
        missing = [s for s in self.symbols if s not in recorded]
        if missing:
            raise ReplayError(f"no {', '.join(missing)} on {self.date}; available symbols: {', '.join(recorded)}")
        self._check_files()
        self.first_ns, self.last_ns = self._span()
        if self.start_ns is not None and self.start_ns > self.last_ns or \
                self.end_ns is not None and self.end_ns < self.first_ns:
            raise ReplayError(f"requested range is outside the data, which spans {_fmt(self.first_ns)} to "
                              f"{_fmt(self.last_ns)}")
        self.checkpoints = self._checkpoints() if self.start_ns is not None else {}

    def _check_files(self) -> None:
        """Every file this replay will open is readable Parquet: a corrupt one is named (DatasetError) up front."""
        tables = {"depth", "snapshots", *(CHANNEL_TABLES[kind] for kind in self.channels if kind != EVENT)}
        partitions: list[str | None] = [*self.symbols, None] if EVENT in self.channels else list(self.symbols)
        for table in sorted(tables):
            for path in _files(self.root, self.market.exchange, table, self.date, list(self.symbols)):
                check_file(path)
        for path in (_files(self.root, self.market.exchange, "events", self.date, partitions)
                     if EVENT in self.channels else []):
            check_file(path)

    def _span(self) -> tuple[int, int]:
        lo, hi = None, None
        for symbol in self.symbols:
            for path in list_files(self.root, self.market.exchange, "depth", date=self.date, symbols=[symbol]):
                meta = pq.read_metadata(path)
                index = meta.schema.names.index("recv_ts")
                for i in range(meta.num_row_groups):
                    stats = meta.row_group(i).column(index).statistics
                    if stats is not None and stats.has_min_max:
                        lo = stats.min if lo is None else min(lo, stats.min)
                        hi = stats.max if hi is None else max(hi, stats.max)
        return lo or 0, hi or 0

    def _checkpoints(self) -> dict[str, int]:
        """Per symbol, the recv_ts of the latest snapshot far enough before the start to be synced by it."""
        chosen = {}
        for symbol in self.symbols:
            paths = _files(self.root, self.market.exchange, "snapshots", self.date, [symbol])
            best = None
            for path in paths:
                table = pq.read_table(path, columns=["recv_ts"])
                ts = table.column("recv_ts").to_numpy()
                before = ts[ts <= self.start_ns - SEEK_SETTLE_NS]
                if len(before):
                    best = int(before.max()) if best is None else max(best, int(before.max()))
            if best is None:
                raise ReplayError(f"{symbol}: no snapshot before {_fmt(self.start_ns)} to start from; replay from "
                                  f"the beginning of the day or a later time")
            chosen[symbol] = best
        return chosen

    def events(self) -> Iterator[ReplayEvent]:
        """Every event in arrival order, books rebuilt; silent before `start_ns`, stops after `end_ns`."""
        exchange, date = self.market.exchange, self.date
        streams = []
        for symbol in self.symbols:
            from_ns = None
            if self.start_ns is not None:
                from_ns = self.checkpoints[symbol] - SEEK_LOOKBACK_NS
            depth = _files(self.root, exchange, "depth", date, [symbol])
            snapshots = _files(self.root, exchange, "snapshots", date, [symbol])
            streams += book_streams(depth, snapshots, symbol, BATCH_ROWS, from_ns)
            self.books[symbol] = LocalBook(self.market.sequence_rule, symbol, units=True)
            for kind in self.channels:
                if kind == EVENT:
                    continue
                paths = _files(self.root, exchange, CHANNEL_TABLES[kind], date, [symbol])
                streams.append(_rows(paths, symbol, kind, self.start_ns))
        if EVENT in self.channels:
            for symbol in [*self.symbols, None]:  # one sorted stream per partition, merged by the walk
                paths = _files(self.root, exchange, "events", date, [symbol])
                streams.append(_rows(paths, None, EVENT, self.start_ns))
        start, end = self.start_ns, self.end_ns
        books = self.books
        for recv_ts, seq, kind, symbol, data, action, became in walk(streams, books):
            if end is not None and recv_ts > end:
                return
            if start is not None and recv_ts < start:
                continue
            if action is None:
                exch = data.get("event_ts") if kind is not EVENT else None
                transact = data.get("trade_ts") or data.get("transact_ts") if kind is not EVENT else None
                yield ReplayEvent(recv_ts, seq, symbol, kind, data, None, exch, transact)
                continue
            local = books[symbol]
            if became is not None:
                detail = {"update_id": local.update_id} if became else {"reason": action.name.lower()}
                yield ReplayEvent(recv_ts, seq, symbol, BOOK_VALID if became else BOOK_INVALID, detail)
            exch = transact = None
            if kind is DEPTH:
                exch = data.event_ts * 1_000_000
                transact = data.transact_ts * 1_000_000 if data.transact_ts else None
            yield ReplayEvent(recv_ts, seq, symbol, kind, data, local.valid_book(), exch, transact, action)

    def first_event_ns(self) -> int:
        return self.start_ns if self.start_ns is not None else self.first_ns


def _fmt(ns: int) -> str:
    """Berlin wall time, as --from/--to are given."""
    moment = dt.datetime.fromtimestamp(ns / 1e9, BERLIN)
    return f"{moment.isoformat(sep=' ', timespec='milliseconds')[:23]} Berlin"


class Pacer:
    """Wall time follows data time × speed, anchored once (no drift over hours); None speed = max.

    Lateness (how far behind schedule an event was released) is recorded for every paced event.
    """

    def __init__(self, speed: float | None, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.speed = speed
        self.clock = clock
        self.sleep = sleep
        self._anchor: tuple[int, float] | None = None
        self._paused_at: float | None = None
        self.lateness: list[float] = []

    def due(self, data_ns: int) -> float:
        """Wall-clock seconds until `data_ns` is due (negative: late)."""
        if self.speed is None:
            return 0.0
        if self._anchor is None:
            self._anchor = (data_ns, self.clock())
        data0, wall0 = self._anchor
        return wall0 + (data_ns - data0) / 1e9 / self.speed - self.clock()

    def wait(self, data_ns: int) -> None:
        delay = self.due(data_ns)
        if self.speed is None:
            return
        if delay > 0:
            self.sleep(delay)
            delay = self.due(data_ns)
        self.lateness.append(max(0.0, -delay))

    def restart(self) -> None:
        """Anchor again at the next event: the next day starts on schedule, without waiting out the night."""
        self._anchor = None

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = self.clock()

    def resume(self) -> None:
        if self._paused_at is not None and self._anchor is not None:
            data0, wall0 = self._anchor
            self._anchor = (data0, wall0 + self.clock() - self._paused_at)
        self._paused_at = None

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def lateness_ms(self) -> dict[str, float]:
        if not self.lateness:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0, "events": 0}
        values = np.array(self.lateness) * 1000
        return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)),
                "max": float(values.max()), "events": len(values)}


def paced(events: Iterator[ReplayEvent], pacer: Pacer, exchange_time: bool = False) -> Iterator[ReplayEvent]:
    """Release events on schedule: by arrival time, or by exchange time (E) where the event has one."""
    last = None
    for event in events:
        ts = event.exchange_ts if exchange_time and event.exchange_ts is not None else event.recv_ts
        if last is not None and ts < last:
            ts = last  # exchange times are not monotonic across channels: never schedule backwards
        last = ts
        pacer.wait(ts)
        yield event


def batches(events: Iterator[ReplayEvent], size: int = 4096) -> Iterator[pa.Table]:
    """Columnar chunks of the merged stream: one row per event (recv_ts, seq, symbol, kind, best bid/ask
    when the book is valid, trade price/qty) for consumers that work on arrays."""
    while True:
        chunk = [e for _, e in zip(range(size), events)]
        if not chunk:
            return
        bid = [e.book.best_bid() if e.book is not None and e.book.bids else None for e in chunk]
        ask = [e.book.best_ask() if e.book is not None and e.book.asks else None for e in chunk]
        yield pa.table({
            "recv_ts": pa.array([e.recv_ts for e in chunk], pa.int64()),
            "seq": pa.array([e.seq for e in chunk], pa.int64()),
            "symbol": pa.array([e.symbol for e in chunk], pa.string()),
            "kind": pa.array([e.kind for e in chunk], pa.string()),
            "bid_price": pa.array([b[0] if b else None for b in bid], pa.int64()),
            "bid_qty": pa.array([b[1] if b else None for b in bid], pa.int64()),
            "ask_price": pa.array([a[0] if a else None for a in ask], pa.int64()),
            "ask_qty": pa.array([a[1] if a else None for a in ask], pa.int64()),
            "trade_price": pa.array([e.data["price"] if e.kind == TRADE else None for e in chunk], pa.int64()),
            "trade_qty": pa.array([e.data["qty"] if e.kind == TRADE else None for e in chunk], pa.int64()),
        })
