"""A recorded day as a venue source: the VenueServer serves a dataset exactly as Binance sent it.

    source = RecordedSource("data", "spot", "2024-05-01", ["BTCUSDT"], start_ns=None)
    async with VenueServer(source.market, source=source, speed=50.0) as venue: ...

Built on `replay.engine.DayReplay` (arrival order, books rebuilt by the recorder's own `LocalBook`):

* Market time is arrival time (`recv_ts`, in ms): the server paces the day by it (speed x wall time),
  so messages go out in the order and at the spacing they arrived. Every field keeps its recorded value:
  depth diffs their U/u/pu/E/T and levels, trades/aggTrades/bookTickers their ids and E/T (spot
  bookTicker without e/E, as Binance). Numbers are printed as Binance prints them: spot with 8 decimals,
  futures with the instrument's pricePrecision/quantityPrecision (`instruments` table), else with the
  decimals the recorded values need.
* Depth diffs go out on one stream only: the recorded one (`depth@100ms`, `depth@0ms`, ... inferred
  from the spacing of E, or given as `depth_suffix`). Other depth suffixes stay silent.
* REST depth is the rebuilt book at the current replay position, its `lastUpdateId` the `u` of the last
  diff already published, so the following diffs continue it by Binance's rule (spot U = id + 1,
  futures pu = id). exchangeInfo comes from the recorded `instruments` table.
* An unsynced span of the recording (the replayed book turns invalid: a gap, a disconnect of the
  recorder, ...) becomes an outage: every client connection is cut (`Disconnect`), and REST depth answers
  503 / -1001 until the book is valid again. Diffs keep flowing to whoever reconnects.
* The server starts at the first moment every symbol's book is valid (at or after `start_ns`); what
  comes before it is replayed silently. A symbol that never gets a valid book is a `ReplayError`.
* End of data: every connection is closed (1001), `finished` turns True; the server stays up, answering
  REST with the last book and accepting connections that get nothing more (`replay serve` exits).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from recorder.book import OrderBook
from recorder.markets import Market, SequenceRule, get_market
from recorder.numbers import SCALE, decimals_needed, format_units
from recorder.rebuild import first_rows, sampled_decimals
from replay.engine import (
    AGG_TRADE,
    BOOK_INVALID,
    BOOK_TICKER,
    DEPTH,
    SNAPSHOT,
    TRADE,
    DayReplay,
    ReplayError,
    ReplayEvent,
)
from schemas import DatasetError, decimal_units, read_table

from .server import BookUnavailable, Disconnect
from .source import BookState, DepthDiff, MarketEvent, RawEvent, SymbolSpec

NS_PER_MS = 1_000_000
QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "DAI", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL", "USD")


class RecordedSpec(SymbolSpec):
    """A SymbolSpec whose numbers never lose precision: a value finer than the instrument's precision
    (a precision change within the day) is printed with the decimals it needs."""

    def fmt_price(self, units: int) -> str:
        try:
            return format_units(units, self.price_decimals)
        except ValueError:
            return format_units(units, decimals_needed(units))

    def fmt_qty(self, units: int) -> str:
        try:
            return format_units(units, self.qty_decimals)
        except ValueError:
            return format_units(units, decimals_needed(units))


@dataclass(slots=True)
class _Pending:
    """One replay event turned into what the server publishes, plus the change of the published book."""

    ts: int  # market (arrival) time, ms
    events: list[MarketEvent]
    symbol: str | None = None
    op: str | None = None  # "set" (a copy of the book), "apply" (the diff's levels), "invalid"
    book: OrderBook | None = None
    bids: list | None = None
    asks: list | None = None
    update_id: int | None = None
    book_ts: int = 0


def infer_depth_suffix(market: Market, gaps_ms: list[int]) -> str:
    """The depth stream a recording was made from, by the spacing of its diffs' E (10th percentile)."""
    gaps = sorted(g for g in gaps_ms if g > 0)
    if not gaps:
        return market.depth_streams[0]
    p10 = gaps[len(gaps) // 10]
    if market.sequence_rule is SequenceRule.SPOT:
        return "depth@100ms" if p10 < 550 else "depth"
    if p10 < 60:
        return "depth@0ms"
    if p10 < 175:
        return "depth@100ms"
    if p10 < 375:
        return "depth"
    return "depth@500ms"


class RecordedSource:
    """A recorded day of some symbols of one market as a `VenueSource` (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        market: Market | str,
        date: dt.date | str,
        symbols: list[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        depth_suffix: str | None = None,
    ):
        self.market = get_market(market) if isinstance(market, str) else market
        self.root = Path(root)
        self.day = DayReplay(
            self.root, self.market, date, symbols, start_ns, end_ns, channels=(TRADE, AGG_TRADE, BOOK_TICKER)
        )
        self.date: dt.date = self.day.date  # type: ignore[assignment]
        self._symbols: list[str] = list(self.day.symbols or [])
        self.spot = self.market.sequence_rule is SequenceRule.SPOT
        self.coinm = self.market.name == "coinm"
        self._instruments = self._read_instruments()
        self._specs = {s: self._make_spec(s) for s in self._symbols}
        if depth_suffix is not None and depth_suffix not in self.market.depth_streams:
            raise ReplayError(
                f"depth stream {depth_suffix!r} not offered on {self.market.name}; "
                f"use one of {', '.join(self.market.depth_streams)}"
            )
        self.depth_suffix = depth_suffix or self._infer_suffix()
        # the published state (what clients have been sent), per symbol
        self._books: dict[str, OrderBook | None] = {s: None for s in self._symbols}
        self._uids: dict[str, int] = {}
        self._book_ts: dict[str, int] = {}
        # the state at the last pulled event (the iterator is one event ahead of what was published)
        self._pull_valid: dict[str, bool] = {s: False for s in self._symbols}
        self._pull_uid: dict[str, int | None] = {s: None for s in self._symbols}
        self._events: Iterator[ReplayEvent] = self.day.events()
        self._pending: _Pending | None = None
        self.finished = False
        self.published = 0  # replay events released (diffs, trades, tickers, ...)
        self.last_event_ms = 0  # arrival time of the last event released
        self.outages = 0
        self.now_ms = self._prime()
        self._start_ms = self.now_ms

    # -- setup ------------------------------------------------------------------------------------
    def _read_instruments(self) -> dict[str, dict[str, Any]]:
        try:
            table = read_table(self.root, self.market.exchange, "instruments", date=self.date, symbols=self._symbols)
        except DatasetError:
            return {}
        if table.num_rows == 0:
            return {}
        table = table.sort_by("seq")
        cols = {n: table.column(n).to_pylist() for n in ("symbol", "price_precision", "quantity_precision",
                                                         "filters")}
        for n in ("tick_size", "step_size", "min_qty", "min_notional"):
            cols[n] = decimal_units(table.column(n))
        out: dict[str, dict[str, Any]] = {}
        for i in range(table.num_rows):  # the latest row of each symbol wins
            out[cols["symbol"][i]] = {k: v[i] for k, v in cols.items()}
        return out

    def _make_spec(self, symbol: str) -> RecordedSpec:
        inst = self._instruments.get(symbol)
        pd = qd = None
        if inst is not None and not self.spot:
            pd, qd = inst["price_precision"], inst["quantity_precision"]
        if inst is None or (not self.spot and (pd is None or qd is None)):
            spd, sqd = sampled_decimals(self.root, self.market.exchange, self.date, symbol)
            pd = spd if pd is None else pd
            qd = sqd if qd is None else qd
        if inst is not None:
            tick, step = inst["tick_size"], inst["step_size"]
        else:
            tick, step = 10 ** (SCALE - pd), 10 ** (SCALE - qd)
        if self.spot:
            pd = qd = SCALE
        pair = symbol.split("_")[0] if self.coinm else None
        base, quote = _split_symbol(pair or symbol, self.coinm)
        return RecordedSpec(
            symbol=symbol, base=base, quote=quote, tick=tick, step=step, price_decimals=pd, qty_decimals=qd,
            mid=0, lot=0, pair=pair, contract_type=None if self.spot else _contract_type(symbol),
        )

    def _infer_suffix(self) -> str:
        gaps: list[int] = []
        for symbol in self._symbols:
            for group in first_rows(self.root, self.market.exchange, "depth", self.date, symbol,
                                    ["seq", "event_ts"], rows=200_000):
                seq, ets = group.column("seq").to_pylist(), group.column("event_ts").to_pylist()
                last_seq, last_e = None, None
                for s, e in zip(seq, ets):
                    if s == last_seq:
                        continue
                    if last_e is not None:
                        gaps.append((e - last_e) // NS_PER_MS)
                    last_seq, last_e = s, e
        return infer_depth_suffix(self.market, gaps)

    def _prime(self) -> int:
        """Replay silently until every symbol's book is valid; that moment is where the venue starts."""
        last_ts = None
        while not all(b is not None for b in self._books.values()):
            item = self._pull()
            if item is None:
                missing = [s for s, b in self._books.items() if b is None]
                raise ReplayError(
                    f"{', '.join(missing)}: no valid book in the data"
                    + (" after the start" if self.day.start_ns is not None else "")
                    + " (no snapshot that bridges the recorded diffs); nothing to serve"
                )
            self._apply_op(item)
            last_ts = item.ts
        assert last_ts is not None
        return last_ts

    # -- the stream -------------------------------------------------------------------------------
    def _pull(self) -> _Pending | None:
        """The next replay event, converted; books are recorded as they are right now (after it)."""
        for ev in self._events:
            item = self._convert(ev)
            if item is not None:
                return item
        return None

    def _convert(self, ev: ReplayEvent) -> _Pending | None:
        ts = ev.recv_ts // NS_PER_MS
        kind, symbol, data = ev.kind, ev.symbol, ev.data
        if kind == DEPTH or kind == SNAPSHOT:
            item = _Pending(ts, [], symbol)
            if kind == DEPTH:
                item.events.append(DepthDiff(
                    symbol, self.depth_suffix, E=data.event_ts,
                    T=data.transact_ts if data.transact_ts is not None else data.event_ts,
                    U=data.first_update_id, u=data.final_update_id, pu=data.prev_final_update_id,
                    bids=data.bids, asks=data.asks, ts=ts,
                ))
                book_ts = data.transact_ts or data.event_ts
            else:
                book_ts = data.transact_ts or data.event_ts or ts
            local = self.day.books[symbol]
            valid = ev.book is not None
            uid = local.update_id
            if not valid:
                item.op = "invalid"
            elif not self._pull_valid[symbol]:
                copy = OrderBook()
                copy.bids = ev.book.bids.copy()
                copy.asks = ev.book.asks.copy()
                item.op, item.book, item.update_id, item.book_ts = "set", copy, uid, book_ts
            elif uid != self._pull_uid[symbol]:
                item.op, item.bids, item.asks, item.update_id, item.book_ts = "apply", data.bids, data.asks, uid, \
                    book_ts
            self._pull_valid[symbol], self._pull_uid[symbol] = valid, uid
            return item
        if kind == BOOK_INVALID:
            self._pull_valid[symbol] = False
            reason = data.get("reason", "") if isinstance(data, dict) else ""
            return _Pending(ts, [Disconnect(ts, f"{symbol}: book invalid ({reason})")], symbol, "invalid")
        if kind == TRADE:
            return _Pending(ts, [RawEvent(symbol, "trade", ts, self._trade(symbol, data))])
        if kind == AGG_TRADE:
            return _Pending(ts, [RawEvent(symbol, "aggTrade", ts, self._agg_trade(symbol, data))])
        if kind == BOOK_TICKER:
            return _Pending(ts, [RawEvent(symbol, "bookTicker", ts, self._book_ticker(symbol, data))])
        return None  # book_valid: the depth/snapshot event that follows carries the book

    def _apply_op(self, item: _Pending) -> None:
        symbol = item.symbol
        if item.op is None or symbol is None:
            return
        if item.op == "invalid":
            self._books[symbol] = None
        elif item.op == "set":
            self._books[symbol] = item.book
            self._uids[symbol], self._book_ts[symbol] = item.update_id, item.book_ts  # type: ignore[assignment]
        else:
            book = self._books[symbol]
            assert book is not None
            book.apply_levels(item.bids, item.asks)  # type: ignore[arg-type]
            self._uids[symbol], self._book_ts[symbol] = item.update_id, item.book_ts  # type: ignore[assignment]

    def advance(self, until_ms: int) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        if self.finished:
            return out
        while True:
            item = self._pending or self._pull()
            if item is None:
                self._pending = None
                self.finished = True
                end = max(self.now_ms, until_ms)
                out.append(Disconnect(end, "end of data", abort=False))
                break
            if item.ts > until_ms:
                self._pending = item
                break
            self._pending = None
            self._apply_op(item)
            if item.events and isinstance(item.events[0], Disconnect):
                self.outages += 1
            out.extend(item.events)
            self.published += 1
            self.last_event_ms = item.ts
            self.now_ms = max(self.now_ms, item.ts)
        self.now_ms = max(self.now_ms, until_ms)
        return out

    # -- payloads (recorded fields, Binance's field order) ------------------------------------------
    def _trade(self, symbol: str, r: dict[str, Any]) -> dict[str, Any]:
        spec = self._specs[symbol]
        p, q = spec.fmt_price(r["price"]), spec.fmt_qty(r["qty"])
        E, T = r["event_ts"] // NS_PER_MS, r["trade_ts"] // NS_PER_MS
        if self.spot:
            return {"e": "trade", "E": E, "s": symbol, "t": r["trade_id"], "p": p, "q": q, "T": T,
                    "m": r["buyer_is_maker"], "M": r["best_match"] if r.get("best_match") is not None else True}
        return {"e": "trade", "E": E, "T": T, "s": symbol, "t": r["trade_id"], "p": p, "q": q,
                "X": r.get("order_type") or "MARKET", "m": r["buyer_is_maker"]}

    def _agg_trade(self, symbol: str, r: dict[str, Any]) -> dict[str, Any]:
        spec = self._specs[symbol]
        out: dict[str, Any] = {
            "e": "aggTrade", "E": r["event_ts"] // NS_PER_MS, "s": symbol, "a": r["agg_trade_id"],
            "p": spec.fmt_price(r["price"]), "q": spec.fmt_qty(r["qty"]), "f": r["first_trade_id"],
            "l": r["last_trade_id"], "T": r["trade_ts"] // NS_PER_MS, "m": r["buyer_is_maker"],
        }
        if self.spot:
            out["M"] = r["best_match"] if r.get("best_match") is not None else True
        return out

    def _book_ticker(self, symbol: str, r: dict[str, Any]) -> dict[str, Any]:
        spec = self._specs[symbol]
        b, B = spec.fmt_price(r["bid_price"]), spec.fmt_qty(r["bid_qty"])
        a, A = spec.fmt_price(r["ask_price"]), spec.fmt_qty(r["ask_qty"])
        if self.spot or r.get("event_ts") is None:
            return {"u": r["update_id"], "s": symbol, "b": b, "B": B, "a": a, "A": A}
        out: dict[str, Any] = {"e": "bookTicker", "u": r["update_id"], "s": symbol}
        if self.coinm:
            out["ps"] = spec.pair
        E = r["event_ts"] // NS_PER_MS
        T = r["transact_ts"] // NS_PER_MS if r.get("transact_ts") is not None else E
        out.update({"b": b, "B": B, "a": a, "A": A, "T": T, "E": E})
        return out

    # -- VenueSource --------------------------------------------------------------------------------
    @property
    def start_ms(self) -> int:
        return self._start_ms

    @property
    def first_ns(self) -> int:
        return self.day.first_ns

    @property
    def last_ns(self) -> int:
        return self.day.last_ns

    def symbols(self) -> list[str]:
        return list(self._symbols)

    def spec(self, symbol: str) -> SymbolSpec:
        return self._specs[symbol]

    def book(self, symbol: str, limit: int | None = None) -> BookState:
        book = self._books[symbol]
        if book is None:
            raise BookUnavailable(f"{symbol}: no valid book at this point of the recording (unsynced span)")
        if limit is None:
            bids, asks = book.export()
        else:
            bids, asks = book.top(limit)
        return BookState(self._uids[symbol], self._book_ts[symbol], bids, asks)

    def book_at(self, symbol: str, update_id: int, limit: int | None = None) -> BookState | None:
        """Only the current book is kept (a recorded day has its own history: rebuild it from the data)."""
        if self._books.get(symbol) is not None and self._uids.get(symbol) == update_id:
            return self.book(symbol, limit)
        return None

    def stale_update_id(self, symbol: str) -> int | None:
        return None  # no history kept: the stale_snapshot fault does nothing on a recorded day

    def exchange_info_symbol(self, symbol: str) -> dict[str, Any]:
        spec = self._specs[symbol]
        inst = self._instruments.get(symbol)
        filters: list[dict[str, Any]] | None = None
        if inst is not None and inst.get("filters"):
            try:
                filters = orjson.loads(inst["filters"])
            except orjson.JSONDecodeError:
                filters = None
        if not filters or not any(f.get("filterType") == "PRICE_FILTER" for f in filters) or not any(
            f.get("filterType") == "LOT_SIZE" for f in filters
        ):
            filters = self._default_filters(spec, inst)
        if self.spot:
            return {
                "symbol": symbol, "status": "TRADING", "baseAsset": spec.base, "baseAssetPrecision": 8,
                "quoteAsset": spec.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                               "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
                "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True, "cancelReplaceAllowed": True,
                "isSpotTradingAllowed": True, "isMarginTradingAllowed": False, "filters": filters,
                "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            }
        status_key = "contractStatus" if self.coinm else "status"
        entry: dict[str, Any] = {
            "symbol": symbol, "pair": spec.pair or symbol, "contractType": spec.contract_type,
            "deliveryDate": 4133404800000, "onboardDate": 1569398400000, status_key: "TRADING",
            "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000", "baseAsset": spec.base,
            "quoteAsset": spec.quote, "marginAsset": spec.base if self.coinm else spec.quote,
            "pricePrecision": spec.price_decimals, "quantityPrecision": spec.qty_decimals,
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
            "triggerProtect": "0.0500", "filters": filters,
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                           "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }
        if self.coinm:
            entry["contractSize"] = 100 if spec.base == "BTC" else 10
        return entry

    def _default_filters(self, spec: SymbolSpec, inst: dict[str, Any] | None) -> list[dict[str, Any]]:
        if self.spot:
            def fmt(u: int) -> str:
                return format_units(u, SCALE)
        else:
            def fmt(u: int) -> str:
                return format_units(u, decimals_needed(u))
        min_qty = inst["min_qty"] if inst is not None and inst.get("min_qty") else spec.step
        filters: list[dict[str, Any]] = [
            {"filterType": "PRICE_FILTER", "minPrice": fmt(spec.tick), "maxPrice": fmt(10_000_000 * 10**SCALE),
             "tickSize": fmt(spec.tick)},
            {"filterType": "LOT_SIZE", "minQty": fmt(min_qty), "maxQty": fmt(9_000_000 * 10**SCALE),
             "stepSize": fmt(spec.step)},
        ]
        notional = inst.get("min_notional") if inst is not None else None
        if notional:
            filters.append({"filterType": "NOTIONAL", "minNotional": fmt(notional)} if self.spot
                           else {"filterType": "MIN_NOTIONAL", "notional": fmt(notional)})
        return filters


def _split_symbol(symbol: str, coinm: bool) -> tuple[str, str]:
    for quote in QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol, "USDT"


def _contract_type(symbol: str) -> str:
    if "_" not in symbol or symbol.endswith("_PERP"):
        return "PERPETUAL"
    return "CURRENT_QUARTER"


__all__ = ["RecordedSource", "RecordedSpec", "infer_depth_suffix"]
