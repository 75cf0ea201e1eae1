"""`replay export`: a recorded day -> the file formats of peer tools (hftbacktest npz, Tardis CSV).

    replay export --date 2024-08-09 --to hftbacktest|tardis-csv [--data DIR] [--market usdm]
                  [--symbols BTCUSDT,...] [--out DIR]

Both exports walk the day as replay and validation do (`recorder.daywalk.walk`: the very sync engine that
ran live decides again, trades interleaved in arrival order) and write rows only while the symbol's book is
valid:

- when the engine becomes synced, the synced book (the snapshot with the diffs that bridge it applied) is
  written as a snapshot: exchange time = the last applied diff's exchange time (the book is the state as of
  that diff), local time = arrival of the message that completed the sync;
- while synced, every applied diff is written level by level (qty 0 removes the level), and every trade;
- from a gap/resync until the next sync nothing is written; the next sync writes a fresh snapshot that
  replaces the whole book (hftbacktest: DEPTH_CLEAR per side first; Tardis: `is_snapshot` rows, which per
  Tardis' docs discard the existing book).

hftbacktest (2.x event format, `np.savez_compressed(path, data=array)`), following its own Binance futures
converter (`hftbacktest.data.utils.binancefutures.convert`): depth exch_ts = `T` (transact time) on futures,
`E` on spot (which has no `T`); trades exch_ts = `T` (trade time); side of a trade = the taker's
(buyer_is_maker => SELL_EVENT); futures trades other than `X == MARKET` are skipped as it does. Each row
carries EXCH_EVENT and/or LOCAL_EVENT so that the exchange-side rows are in exch_ts order and the local-side
rows in local_ts order (what `hftbacktest.data.validation.validate_event_order` checks); rows that break the
exchange order are split into an EXCH-only and a LOCAL-only copy, as its `correct_event_order` does.
Prices and quantities become float64 there (hftbacktest's format); local_ts stays the recorded `recv_ts`.

Tardis (`incremental_book_L2` and `trades` CSV, gzip, named like Tardis' downloads): timestamps in µs,
`timestamp` = exchange time (`E` for depth as Tardis does for Binance, `T` for trades), `local_timestamp`
= arrival; prices and amounts printed exactly from the stored decimals. Same rows as the npz: valid spans
only, futures trades with `X == MARKET` only. Files carry the dataset's (Berlin) date in their names.
"""

from __future__ import annotations

import datetime as dt
import gzip
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow.parquet as pq
import typer

from recorder.daywalk import DEPTH, BookMessage, walk
from recorder.markets import Market, get_market
from recorder.protocol import DepthUpdate
from recorder.rebuild import MS, day_book_streams, files_in_seq_order
from recorder.sync import DEFAULT_MAX_BUFFER, Action, LocalBook
from replay.engine import TRADE
from schemas import DatasetError, check_file, decimal_units, list_files
from schemas.layout import parse_date

__all__ = [
    "BUY_EVENT",
    "DEPTH_CLEAR_EVENT",
    "DEPTH_EVENT",
    "DEPTH_SNAPSHOT_EVENT",
    "EVENT_DTYPE",
    "EXCH_EVENT",
    "FORMATS",
    "LOCAL_EVENT",
    "SELL_EVENT",
    "TARDIS_EXCHANGES",
    "TRADE_EVENT",
    "check_event_order",
    "export_command",
    "export_hftbacktest",
    "export_tardis",
    "iter_valid_events",
    "split_event_order",
]

# hftbacktest 2.x (py-hftbacktest/hftbacktest/types.py)
EXCH_EVENT = 1 << 31
LOCAL_EVENT = 1 << 30
BUY_EVENT = 1 << 29
SELL_EVENT = 1 << 28
DEPTH_EVENT = 1
TRADE_EVENT = 2
DEPTH_CLEAR_EVENT = 3
DEPTH_SNAPSHOT_EVENT = 4
EVENT_DTYPE = np.dtype(
    [("ev", "<u8"), ("exch_ts", "<i8"), ("local_ts", "<i8"), ("px", "<f8"), ("qty", "<f8"),
     ("order_id", "<u8"), ("ival", "<i8"), ("fval", "<f8")],
    align=True,
)

TARDIS_EXCHANGES = {"binance-spot": "binance", "binance-usdm": "binance-futures", "binance-coinm": "binance-delivery"}
FORMATS = ("hftbacktest", "tardis-csv")
EXIT_BAD_INPUT = 2
UNITS = 100_000_000  # 1e-8 units per 1
_SEEN_DIFFS = DEFAULT_MAX_BUFFER + 10_000  # diff times remembered while not synced (>= the engine's buffer)

Levels = list[tuple[int, int]]


# ---- the valid spans of a recorded day, as events ----------------------------------------------------------

@dataclass(slots=True)
class BookSnapshot:
    """The synced book (best first per side), written when the engine (re)syncs."""

    local_ts: int  # ns, arrival of the message that completed the sync
    exch_ts: int  # ns, hftbacktest's exchange time of the last applied diff (T on futures, E on spot)
    event_ts: int  # ns, that diff's E
    bids: Levels
    asks: Levels


@dataclass(slots=True)
class BookDiff:
    local_ts: int
    exch_ts: int  # T on futures, E on spot
    event_ts: int  # E
    bids: Levels
    asks: Levels


@dataclass(slots=True)
class TradeRow:
    local_ts: int
    trade_ts: int  # T
    trade_id: int
    price: int  # units
    qty: int  # units
    buyer_is_maker: bool


def _depth_times(diff: DepthUpdate) -> tuple[int, int]:
    event_ns = diff.event_ts * MS
    return (diff.transact_ts * MS if diff.transact_ts is not None else event_ns), event_ns


_TRADE_COLUMNS = ["seq", "recv_ts", "trade_ts", "trade_id", "price", "qty", "buyer_is_maker", "order_type"]


def _trade_streams(root: Path, exchange: str, date: dt.date, symbol: str) -> list[Iterator[BookMessage]]:
    """The symbol's trades as walk items `(recv_ts, seq, TRADE, symbol, TradeRow)`, one stream per file;
    futures trades that are not `X == MARKET` are skipped (as hftbacktest)."""
    try:
        paths = list_files(root, exchange, "trades", date=date, symbols=[symbol])
    except DatasetError:
        return []  # no trades recorded for this symbol/day: the book alone is exported

    def one(path: Path) -> Iterator[BookMessage]:
        for batch in pq.ParquetFile(path).iter_batches(columns=_TRADE_COLUMNS):
            seq, recv, tts, tid, maker, otype = (batch.column(c).to_pylist() for c in (
                "seq", "recv_ts", "trade_ts", "trade_id", "buyer_is_maker", "order_type"))
            price, qty = decimal_units(batch.column("price")), decimal_units(batch.column("qty"))
            for i in range(len(seq)):
                if otype[i] is not None and otype[i] != "MARKET":
                    continue
                yield recv[i], seq[i], TRADE, symbol, TradeRow(recv[i], tts[i], tid[i], price[i], qty[i],
                                                               bool(maker[i]))

    return [one(p) for p in files_in_seq_order(paths)]


def iter_valid_events(root: str | Path, market: Market | str, date: str | dt.date, symbol: str
                      ) -> Iterator[BookSnapshot | BookDiff | TradeRow]:
    """The symbol's day in arrival order (the walk's), restricted to the spans where its book is valid.

    Every valid span starts with a `BookSnapshot`; diffs the engine ignores (duplicates) are not yielded.
    Raises DatasetError (one line, listing what is available) when the day or symbol has no depth.
    """
    market = get_market(market) if isinstance(market, str) else market
    root, day = Path(root), parse_date(date)
    streams = day_book_streams(root, market.exchange, day, symbol) + _trade_streams(root, market.exchange, day, symbol)
    local = LocalBook(market.sequence_rule, symbol, units=True)
    valid = False
    seen: dict[int, tuple[int, int]] = {}  # final_update_id -> (exch_ts, event_ts) of diffs while not valid
    for recv_ts, _, kind, _, message, action, became in walk(streams, {symbol: local}):
        if action is None:  # a trade
            if valid:
                yield message
            continue
        if kind is DEPTH and not valid:
            seen[message.final_update_id] = _depth_times(message)
            if len(seen) > _SEEN_DIFFS:
                del seen[next(iter(seen))]
        if action is Action.APPLY:
            if message.bids or message.asks:
                exch_ts, event_ts = _depth_times(message)
                yield BookDiff(recv_ts, exch_ts, event_ts, message.bids, message.asks)
        elif action is Action.SYNCED:  # the snapshot with the diffs that bridge it applied
            times = seen.get(local.update_id)
            if times is None:  # cannot happen with the engine's rules; fall back to the snapshot's own time
                ets = getattr(message, "transact_ts", None) or message.event_ts
                times = (ets * MS, (message.event_ts or ets) * MS) if ets is not None else (recv_ts, recv_ts)
            seen.clear()
            bids, asks = local.book.export()
            yield BookSnapshot(recv_ts, times[0], times[1], bids, asks)
        if became is not None:
            valid = became


# ---- hftbacktest ---------------------------------------------------------------------------------------------

def split_event_order(exch_ts: np.ndarray, local_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order rows for hftbacktest: returns (row index, processor flags) of the output rows.

    Rows are taken in local_ts order (stable). A row whose exch_ts is not below any earlier row's keeps both
    EXCH_EVENT and LOCAL_EVENT; a row that would put the exchange side out of order becomes a LOCAL-only row
    where it is and an EXCH-only copy placed just before the first both-sided row with a later exch_ts.
    Hence exch_ts is non-decreasing over the EXCH rows and local_ts over the LOCAL rows, like hftbacktest's
    `correct_event_order`, in a vectorised pass.
    """
    n = len(exch_ts)
    order = np.argsort(local_ts, kind="stable")
    ex = exch_ts[order]
    if n == 0:
        return order, np.zeros(0, np.uint64)
    running = np.maximum.accumulate(ex)
    in_order = np.r_[True, ex[1:] >= running[:-1]]
    both_pos = np.flatnonzero(in_order)
    late = np.flatnonzero(~in_order)
    # first both-sided row with a strictly later exch_ts; it exists (an earlier row set the running max)
    insert_at = both_pos[np.searchsorted(ex[both_pos], ex[late], side="right")]
    pos = np.r_[np.arange(n), insert_at]
    kind = np.r_[np.ones(n, np.int8), np.zeros(len(late), np.int8)]  # copies go before the row at `pos`
    key = np.r_[np.zeros(n, np.int64), ex[late]]
    tie = np.r_[np.arange(n), late]
    out = np.lexsort((tie, key, kind, pos))
    rows = np.r_[order, order[late]][out]
    flags = np.where(in_order, EXCH_EVENT | LOCAL_EVENT, LOCAL_EVENT).astype(np.uint64)
    flags = np.r_[flags, np.full(len(late), EXCH_EVENT, np.uint64)][out]
    return rows, flags


def check_event_order(data: np.ndarray) -> list[str]:
    """hftbacktest's `validate_event_order` as a list of problems (empty: valid)."""
    problems = []
    ev = data["ev"]
    exch = data["exch_ts"][(ev & EXCH_EVENT) == EXCH_EVENT]
    local = data["local_ts"][(ev & LOCAL_EVENT) == LOCAL_EVENT]
    if (np.diff(exch) < 0).any():
        problems.append(f"exchange events are out of order ({int((np.diff(exch) < 0).sum())} reversals)")
    if (np.diff(local) < 0).any():
        problems.append(f"local events are out of order ({int((np.diff(local) < 0).sum())} reversals)")
    if ((ev & (EXCH_EVENT | LOCAL_EVENT)) == 0).any():
        problems.append("rows without EXCH_EVENT or LOCAL_EVENT")
    return problems


class _EventRows:
    """Column lists of hftbacktest rows (without processor flags), prices and quantities in units."""

    CHUNK = 1 << 20  # rows kept as Python ints before they move into numpy chunks (bounds memory)

    def __init__(self) -> None:
        self.ev: list[int] = []
        self.exch: list[int] = []
        self.local: list[int] = []
        self.px: list[int] = []
        self.qty: list[int] = []
        self.chunks: list[tuple[np.ndarray, ...]] = []
        self.low_bid: int | None = None  # lowest bid / highest ask written since the last clear
        self.high_ask: int | None = None

    def add(self, ev: int, exch: int, local: int, levels: Levels) -> None:
        n = len(levels)
        self.ev.extend([ev] * n)
        self.exch.extend([exch] * n)
        self.local.extend([local] * n)
        self.px.extend([p for p, _ in levels])
        self.qty.extend([q for _, q in levels])
        if len(self.ev) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.ev:
            self.chunks.append((np.asarray(self.ev, np.uint64), np.asarray(self.exch, np.int64),
                                np.asarray(self.local, np.int64), _units_to_float(self.px),
                                _units_to_float(self.qty)))
            for column in (self.ev, self.exch, self.local, self.px, self.qty):
                column.clear()

    def track(self, bids: Levels, asks: Levels) -> None:
        if bids:
            low = min(p for p, _ in bids)
            self.low_bid = low if self.low_bid is None else min(self.low_bid, low)
        if asks:
            high = max(p for p, _ in asks)
            self.high_ask = high if self.high_ask is None else max(self.high_ask, high)

    def snapshot(self, snap: BookSnapshot) -> None:
        # DEPTH_CLEAR px: hftbacktest clears bids from px up to the best bid and asks from the best ask up to px;
        # the widest price ever written on that side clears the whole previous book (a resync replaces it).
        self.track(snap.bids, snap.asks)
        for side_flag, levels, edge in ((BUY_EVENT, snap.bids, self.low_bid), (SELL_EVENT, snap.asks, self.high_ask)):
            self.add(DEPTH_CLEAR_EVENT | side_flag, snap.exch_ts, snap.local_ts, [(edge or 0, 0)])
            self.add(DEPTH_SNAPSHOT_EVENT | side_flag, snap.exch_ts, snap.local_ts, levels)
        self.low_bid = min((p for p, _ in snap.bids), default=None)
        self.high_ask = max((p for p, _ in snap.asks), default=None)

    def diff(self, diff: BookDiff) -> None:
        self.track(diff.bids, diff.asks)
        self.add(DEPTH_EVENT | BUY_EVENT, diff.exch_ts, diff.local_ts, diff.bids)
        self.add(DEPTH_EVENT | SELL_EVENT, diff.exch_ts, diff.local_ts, diff.asks)

    def trade(self, trade: TradeRow) -> None:
        side = SELL_EVENT if trade.buyer_is_maker else BUY_EVENT  # the taker's side
        self.add(TRADE_EVENT | side, trade.trade_ts, trade.local_ts, [(trade.price, trade.qty)])

    def array(self) -> np.ndarray:
        self.flush()
        if not self.chunks:
            return np.zeros(0, EVENT_DTYPE)
        ev, exch, local, px, qty = (np.concatenate(parts) for parts in zip(*self.chunks))
        self.chunks.clear()
        rows, flags = split_event_order(exch, local)
        out = np.zeros(len(rows), EVENT_DTYPE)
        out["ev"] = ev[rows] | flags
        out["exch_ts"] = exch[rows]
        out["local_ts"] = local[rows]
        out["px"] = px[rows]
        out["qty"] = qty[rows]
        return out


def _units_to_float(values: list[int]) -> np.ndarray:
    """Exact ints in 1e-8 units -> nearest float64 (int64 -> f8 is exact below 2**53 units, then one rounding)."""
    try:
        return np.asarray(values, np.int64).astype(np.float64) / UNITS
    except OverflowError:  # beyond int64 units: rare huge quantities
        return np.array([v / UNITS for v in values], np.float64)


def hftbacktest_events(root: str | Path, market: Market | str, date: str | dt.date, symbol: str) -> np.ndarray:
    """The day as an hftbacktest 2.x event array (structured, EVENT_DTYPE), event order already valid."""
    rows = _EventRows()
    for item in iter_valid_events(root, market, date, symbol):
        if type(item) is BookDiff:
            rows.diff(item)
        elif type(item) is TradeRow:
            rows.trade(item)
        else:
            rows.snapshot(item)
    data = rows.array()
    problems = check_event_order(data)
    if problems:  # pragma: no cover - split_event_order guarantees it
        raise AssertionError("; ".join(problems))
    return data


def export_hftbacktest(root: str | Path, market: Market | str, date: str | dt.date, symbol: str,
                       out_path: str | Path) -> Path:
    """Write the day as hftbacktest's npz (`data` = the event array); returns the path written.

    `out_path` may be a directory (file `<exchange>_<SYMBOL>_<YYYY-MM-DD>.npz` in it) or a file name.
    """
    market = get_market(market) if isinstance(market, str) else market
    out_path = Path(out_path)
    if out_path.is_dir() or not out_path.suffix:
        out_path = out_path / f"{market.exchange}_{symbol}_{parse_date(date).isoformat()}.npz"
    data = hftbacktest_events(root, market, date, symbol)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.stem}.tmp.npz")
    np.savez_compressed(tmp, data=data)
    tmp.replace(out_path)
    return out_path


# ---- Tardis CSV ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=1 << 16)
def _dec(units: int) -> str:
    """Exact decimal text of a 1e-8 units int, no trailing zeros: 6173763000000 -> '61737.63', 0 -> '0'."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), UNITS)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:08d}".rstrip("0")


BOOK_HEADER = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
TRADES_HEADER = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"


def tardis_names(market: Market | str, date: str | dt.date, symbol: str) -> tuple[str, str]:
    """File names of Tardis' downloads: `<exchange>_<data type>_<YYYY-MM-DD>_<SYMBOL>.csv.gz`."""
    market = get_market(market) if isinstance(market, str) else market
    exchange, day = TARDIS_EXCHANGES[market.exchange], parse_date(date).isoformat()
    return (f"{exchange}_incremental_book_L2_{day}_{symbol}.csv.gz", f"{exchange}_trades_{day}_{symbol}.csv.gz")


def export_tardis(root: str | Path, market: Market | str, date: str | dt.date, symbol: str,
                  out_dir: str | Path) -> list[Path]:
    """Write `incremental_book_L2` and `trades` CSV.gz files like Tardis' for the day; returns their paths."""
    market = get_market(market) if isinstance(market, str) else market
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    book_name, trades_name = tardis_names(market, date, symbol)
    paths = [out_dir / book_name, out_dir / trades_name]
    tmps = [p.with_name(f".{p.name}.tmp") for p in paths]
    prefix = f"{TARDIS_EXCHANGES[market.exchange]},{symbol},"
    events = iter_valid_events(root, market, date, symbol)  # opened first: a missing day fails before writing
    try:
        with gzip.open(tmps[0], "wt", compresslevel=6, newline="") as book, \
                gzip.open(tmps[1], "wt", compresslevel=6, newline="") as trades:
            book.write(BOOK_HEADER)
            trades.write(TRADES_HEADER)
            lines: list[str] = []
            tlines: list[str] = []
            for item in events:
                kind = type(item)
                if kind is TradeRow:
                    tlines.append(f"{prefix}{item.trade_ts // 1000},{item.local_ts // 1000},{item.trade_id},"
                                  f"{'sell' if item.buyer_is_maker else 'buy'},{_dec(item.price)},{_dec(item.qty)}\n")
                    continue
                head = f"{prefix}{item.event_ts // 1000},{item.local_ts // 1000},"
                head += "true," if kind is BookSnapshot else "false,"
                lines.extend(f"{head}bid,{_dec(p)},{_dec(q)}\n" for p, q in item.bids)
                lines.extend(f"{head}ask,{_dec(p)},{_dec(q)}\n" for p, q in item.asks)
                if len(lines) > 50_000:
                    book.write("".join(lines))
                    lines.clear()
                if len(tlines) > 50_000:
                    trades.write("".join(tlines))
                    tlines.clear()
            book.write("".join(lines))
            trades.write("".join(tlines))
        for tmp, path in zip(tmps, paths):
            tmp.replace(path)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return paths


# ---- command line --------------------------------------------------------------------------------------------

def _bad_input(message: str, debug: bool = False) -> typer.Exit:
    """One line on stderr (after the traceback with --debug), exit code 2."""
    if debug:
        import traceback

        traceback.print_exc()
    print(f"replay: error: {' '.join(str(message).split())}", file=sys.stderr)
    return typer.Exit(EXIT_BAD_INPUT)


def _files_or_none(root: Path, exchange: str, table: str, day: dt.date, symbol: str) -> list[Path]:
    try:
        return list_files(root, exchange, table, date=day, symbols=[symbol])
    except DatasetError:
        return []


def _symbols_of_day(root: Path, exchange: str, day: dt.date) -> list[str]:
    paths = list_files(root, exchange, "depth", date=day)  # DatasetError lists the dates there are
    return sorted({p.parent.name.removeprefix("symbol=") for p in paths})


def export_command(
    date: Annotated[str, typer.Option("--date", help="Berlin date: 20240809, 2024-08-09, today, yesterday.")],
    to: Annotated[str, typer.Option("--to", help="hftbacktest | tardis-csv")],
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset root (default: the config's `out` via $CONFIG_PATH, else ./data).")] = None,
    market: Annotated[str | None, typer.Option("--market", help="spot | usdm | coinm")] = None,
    symbols: Annotated[str | None, typer.Option("--symbols", help="Comma-separated (default: all of the day).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("export"),
    debug: Annotated[bool, typer.Option("--debug", help="Tracebacks on errors.")] = False,
) -> None:
    """Export a recorded day to hftbacktest (npz) or Tardis CSV files, valid book spans only."""
    from recorder.config import ConfigError, load_config
    from recorder.validate import resolve_date

    fmt = to.strip().lower()
    if fmt not in FORMATS:
        raise _bad_input(f"unknown --to {to!r}; use one of {', '.join(FORMATS)}", debug)
    try:
        day = resolve_date(date)
        cfg = load_config(None, {"market": market, "out": data})
        mk = cfg.market if isinstance(cfg.market, Market) else get_market(cfg.market)
        root = Path(cfg.out)
        wanted = ([s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols
                  else _symbols_of_day(root, mk.exchange, day))
        for symbol in wanted:  # check every symbol and file (a corrupt one is named) before writing anything
            list_files(root, mk.exchange, "depth", date=day, symbols=[symbol])
            for table in ("depth", "snapshots", "trades", "events"):
                for path in _files_or_none(root, mk.exchange, table, day, symbol):
                    check_file(path)
    except (ConfigError, ValueError, TypeError) as exc:
        raise _bad_input(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, debug) from None
    except DatasetError as exc:
        raise _bad_input(str(exc), debug) from None
    written: list[Path] = []
    try:
        for symbol in wanted:
            if fmt == "hftbacktest":
                written.append(export_hftbacktest(root, mk, day, symbol, out))
            else:
                written.extend(export_tardis(root, mk, day, symbol, out))
    except DatasetError as exc:
        raise _bad_input(str(exc), debug) from None
    except OSError as exc:
        raise _bad_input(f"cannot write {out}: {exc}", debug) from None
    for path in written:
        typer.echo(str(path))
