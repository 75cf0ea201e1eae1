"""VenueServer: one 127.0.0.1 port serving Binance-compatible WebSocket market streams and REST.

WebSocket: `/ws/<stream>[/<stream>...]` (raw frames), `/ws` (subscribe later), `/stream?streams=a/b`
(combined frames `{"stream":..,"data":..}`); live SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS /
SET_PROPERTY / GET_PROPERTY. On a routed market (USD-M) the same under `/public` and `/market`, as Binance
since 2026-03-06: a stream is delivered only on its route (`recorder.markets.STREAM_ROUTES`), an unrouted
path gets only `/public` streams; others are acknowledged and never delivered, as Binance does. A stream
the venue cannot serve (partial depth, a depth speed a recorded day cannot give) is refused with an
error, never acknowledged. Limits as Binance: streams per connection, incoming messages per second,
connection attempts per 5 minutes per IP. REST (plain HTTP GET answered from websockets' `process_request` hook):
depth, exchangeInfo, ping, time under the market's prefix, with per-IP request weights, 429/418 as Binance.
Outside Binance's paths: `GET /_venue/book?symbol=S[&update_id=N]` (truth) and `GET /_venue/stats`.

The server paces the source against the wall clock (market time = speed x wall time), batches raw
book changes into `@depth@100ms` / `@depth` / `@depth@0ms` diffs, fans frames out to subscribers and
injects faults (per connection) as configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from recorder.markets import MARKET, PUBLIC, Market, SequenceRule, get_market

from .faults import FaultDecider, FaultSpec
from .source import (
    BookState,
    BookTicker,
    DepthChange,
    DepthDiff,
    Level,
    RawEvent,
    SymbolSpec,
    Trade,
    VenueSource,
)

log = logging.getLogger("replay.venue")

# depth stream suffix -> batching interval in ms of market time (0: every update immediately)
SPOT_DEPTH_INTERVALS = {"depth@100ms": 100, "depth": 1000}
FUTURES_DEPTH_INTERVALS = {"depth@100ms": 100, "depth@0ms": 0, "depth": 250, "depth@500ms": 500}

WS_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
SLOW_CLIENT_QUEUE = 100_000
AHEAD_SNAPSHOT_IDS = 10**12  # the ahead_snapshot fault: far beyond any diff of a session


class BookUnavailable(LookupError):
    """Raised by a source's `book()` while it has no valid book (e.g. an unsynced span of a recorded day):
    REST depth then answers 503 (Binance's -1001) until the book is valid again."""


@dataclass(slots=True)
class Disconnect:
    """A source event: drop every client connection at market time `ts` (an outage in a recorded day, or
    its end). `abort`: cut the connections without a close frame, as a network outage does; otherwise
    close them cleanly (1001 going away). Clients may reconnect at once."""

    ts: int
    reason: str = ""
    abort: bool = True


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def ws_error(code: int, msg: str, req_id: Any = None) -> str:
    """Binance's WebSocket error answer."""
    return _dumps({"error": {"code": code, "msg": msg}, "id": req_id})


# ---------------------------------------------------------------------------------------------------------
# payloads (field names and order as Binance sends them)
# ---------------------------------------------------------------------------------------------------------


class Payloads:
    def __init__(self, market: Market):
        self.market = market
        self.spot = market.name == "spot"
        self.coinm = market.name == "coinm"

    @staticmethod
    def levels(spec: SymbolSpec, levels: list[Level]) -> list[list[str]]:
        fp, fq = spec.fmt_price, spec.fmt_qty
        return [[fp(p), fq(q)] for p, q in levels]

    def depth_update(self, spec: SymbolSpec, d: DepthDiff) -> dict[str, Any]:
        b, a = self.levels(spec, d.bids), self.levels(spec, d.asks)
        if self.spot:
            return {"e": "depthUpdate", "E": d.E, "s": spec.symbol, "U": d.U, "u": d.u, "b": b, "a": a}
        out: dict[str, Any] = {"e": "depthUpdate", "E": d.E, "T": d.T, "s": spec.symbol}
        if self.coinm:
            out["ps"] = spec.pair
        out.update({"U": d.U, "u": d.u, "pu": d.pu, "b": b, "a": a})
        return out

    def book_ticker(self, spec: SymbolSpec, t: BookTicker) -> dict[str, Any]:
        b, B, a, A = (
            spec.fmt_price(t.bid),
            spec.fmt_qty(t.bid_qty),
            spec.fmt_price(t.ask),
            spec.fmt_qty(t.ask_qty),
        )
        if self.spot:
            return {"u": t.update_id, "s": spec.symbol, "b": b, "B": B, "a": a, "A": A}
        out: dict[str, Any] = {"e": "bookTicker", "u": t.update_id, "s": spec.symbol}
        if self.coinm:
            out["ps"] = spec.pair
        out.update({"b": b, "B": B, "a": a, "A": A, "T": t.ts, "E": t.ts + 1})
        return out

    def trade(self, spec: SymbolSpec, t: Trade) -> dict[str, Any]:
        p, q = spec.fmt_price(t.price), spec.fmt_qty(t.qty)
        if self.spot:
            return {
                "e": "trade",
                "E": t.ts + 1,
                "s": spec.symbol,
                "t": t.trade_id,
                "p": p,
                "q": q,
                "T": t.ts,
                "m": t.buyer_maker,
                "M": True,
            }
        return {
            "e": "trade",
            "E": t.ts + 1,
            "T": t.ts,
            "s": spec.symbol,
            "t": t.trade_id,
            "p": p,
            "q": q,
            "X": "MARKET",
            "m": t.buyer_maker,
        }

    def agg_trade(self, spec: SymbolSpec, t: Trade) -> dict[str, Any]:
        out: dict[str, Any] = {
            "e": "aggTrade",
            "E": t.ts + 1,
            "s": spec.symbol,
            "a": t.agg_id,
            "p": spec.fmt_price(t.price),
            "q": spec.fmt_qty(t.agg_qty),
            "f": t.first_trade_id,
            "l": t.last_trade_id,
            "T": t.ts,
            "m": t.buyer_maker,
        }
        if self.spot:
            out["M"] = True
        return out

    def depth_snapshot(self, spec: SymbolSpec, book: BookState, E: int) -> dict[str, Any]:
        b, a = self.levels(spec, book.bids), self.levels(spec, book.asks)
        if self.spot:
            return {"lastUpdateId": book.update_id, "bids": b, "asks": a}
        out: dict[str, Any] = {"lastUpdateId": book.update_id}
        if self.coinm:
            out["symbol"] = spec.symbol
            out["pair"] = spec.pair
        out.update({"E": E, "T": book.ts, "bids": b, "asks": a})
        return out


# ---------------------------------------------------------------------------------------------------------
# batching of raw changes into diffs
# ---------------------------------------------------------------------------------------------------------


class DiffBatcher:
    """Accumulates DepthChanges of one symbol for one depth stream; flush() forms the diff."""

    __slots__ = ("T", "U", "asks", "bids", "interval", "prev_u", "suffix", "symbol", "u")

    def __init__(self, symbol: str, suffix: str, interval: int, prev_u: int):
        self.symbol, self.suffix, self.interval = symbol, suffix, interval
        self.U: int | None = None
        self.u = 0
        self.T = 0
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.prev_u = prev_u

    def add(self, ch: DepthChange) -> None:
        self._merge(ch.update_id, ch.update_id, ch.ts, ch.bids, ch.asks)

    def add_diff(self, d: DepthDiff) -> None:
        """Merge a diff of a faster stream (a recorded `@depth@0ms`): the batch keeps the first diff's U
        and pu and the last one's u, so the batched stream continues by Binance's rules."""
        if self.U is None and d.pu is not None:
            self.prev_u = d.pu
        self._merge(d.U, d.u, d.T, d.bids, d.asks)

    def _merge(self, first_id: int, last_id: int, ts: int, bids: list[Level], asks: list[Level]) -> None:
        if self.U is None:
            self.U = first_id
        self.u, self.T = last_id, ts
        for p, q in bids:
            self.bids[p] = q
        for p, q in asks:
            self.asks[p] = q

    def flush(self, E: int) -> DepthDiff | None:
        if self.U is None:
            return None
        d = DepthDiff(
            self.symbol,
            self.suffix,
            E=E,
            T=self.T,
            U=self.U,
            u=self.u,
            pu=self.prev_u,
            bids=sorted(self.bids.items(), reverse=True),
            asks=sorted(self.asks.items()),
        )
        self.prev_u = self.u
        self.U = None
        self.bids, self.asks = {}, {}
        return d


# ---------------------------------------------------------------------------------------------------------
# clients
# ---------------------------------------------------------------------------------------------------------


class _Client:
    def __init__(self, server: VenueServer, ws: ServerConnection, cid: int, combined: bool, route: str = ""):
        self.server = server
        self.ws = ws
        self.cid = cid
        self.combined = combined
        self.route = route  # path prefix it connected on: '' (unrouted), `/public`, `/market`
        self.subs: dict[str, None] = {}  # ordered set
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.faults = FaultDecider(server.faults, f"ws:{cid}", server.fault_counts)
        self.held: str | None = None
        self.msg_times: deque[float] = deque()
        self.closed = False
        self.sent_frames = 0

    def frame(self, stream: str, raw: str) -> str:
        return f'{{"stream":"{stream}","data":{raw}}}' if self.combined else raw

    def put(self, text: str) -> None:
        if self.closed:
            return
        if self.queue.qsize() > SLOW_CLIENT_QUEUE:
            self.closed = True
            self.server.fault_counts["slow_client_close"] += 1
            asyncio.ensure_future(self.ws.close(1008, "Client is too slow"))
            return
        self.queue.put_nowait(text)

    def deliver(self, stream: str, raw: str, depth: bool) -> None:
        text = self.frame(stream, raw)
        if not depth or not self.server.faults.active:
            self.put(text)
            return
        f = self.faults
        if f.hit("drop"):
            return
        if f.hit("malformed"):
            self.put(f.malformed_frame())
        if f.hit("delay"):
            asyncio.get_running_loop().call_later(self.server.faults.delay_s, self.put, text)
            return
        if self.held is None and f.hit("reorder"):
            self.held = text
            asyncio.get_running_loop().call_later(1.0, self._release_held, text)
            return
        self.put(text)
        if f.hit("duplicate"):
            self.put(text)
        self._release_held(None)

    def _release_held(self, only: str | None) -> None:
        if self.held is not None and (only is None or self.held is only):
            text, self.held = self.held, None
            self.put(text)

    async def writer(self) -> None:
        ws = self.ws
        try:
            while True:
                text = await self.queue.get()
                if text is None:
                    return
                await ws.send(text)
                self.sent_frames += 1
        except ConnectionClosed:
            pass


@dataclass
class _IpState:
    window: int = -1
    used: int = 0
    backoff_until: float = 0.0
    violations: int = 0
    banned_until: float = 0.0
    bans: int = 0
    faults: FaultDecider | None = None
    connects: deque[float] = field(default_factory=deque)  # WebSocket connection attempts in the window


@dataclass
class VenueStats:
    connections: int = 0
    connections_total: int = 0
    rest_requests: int = 0
    frames: Counter[str] = field(default_factory=Counter)


# ---------------------------------------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------------------------------------


class VenueServer:
    """A synthetic (or replayed) Binance venue on one port.

    async with VenueServer("spot", ["BTCUSDT"], port=0, speed=10.0) as venue:
        venue.rest_url, venue.ws_url
    with VenueServer(...).run_in_thread() as venue: ...   # from synchronous code
    """

    def __init__(
        self,
        market: Market | str,
        symbols: list[str] | None = None,
        *,
        source: VenueSource | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float | None = 1.0,
        faults: FaultSpec | str | None = None,
        seed: int = 1,
        start_ms: int | None = None,
        events_per_second: float = 40.0,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        lifetime: float | None = None,
        weight_limit: int | None = None,
        weight_window_s: float = 60.0,
        ban_after: int = 2,
        shutdown_event: bool = False,
    ):
        self.market = get_market(market) if isinstance(market, str) else market
        if source is None:
            from .synthetic import SyntheticSource

            if not symbols:
                raise ValueError("symbols are required for the synthetic venue")
            source = SyntheticSource(
                self.market, symbols, seed=seed, start_ms=start_ms, events_per_second=events_per_second
            )
        self.source = source
        self.symbols = source.symbols()
        self.specs = {s: source.spec(s) for s in self.symbols}
        self.by_stream_symbol = {s.lower(): s for s in self.symbols}
        self.host, self.port = host, port
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (or None for max)")
        self.speed = speed
        self.faults = faults if isinstance(faults, FaultSpec) else FaultSpec.parse(faults)
        self.ping_interval = (
            ping_interval if ping_interval is not None else self.market.server_ping_interval_s
        )
        self.ping_timeout = ping_timeout if ping_timeout is not None else self.market.server_pong_timeout_s
        self.lifetime = (
            lifetime if lifetime is not None else self.faults.lifetime_s or self.market.connection_lifetime_s
        )
        self.weight_limit = weight_limit or self.market.weight_limit_per_minute
        self.weight_window_s = weight_window_s
        self.ban_after = ban_after
        self.shutdown_event = shutdown_event
        self.payloads = Payloads(self.market)
        self.intervals = (
            SPOT_DEPTH_INTERVALS
            if self.market.sequence_rule is SequenceRule.SPOT
            else FUTURES_DEPTH_INTERVALS
        )
        self.fault_counts: Counter[str] = Counter()
        self.stats = VenueStats()
        self.market_ms = source.start_ms
        self.last_published_u: dict[tuple[str, str], int] = {}
        self._subscribers: dict[str, set[_Client]] = {}
        self._clients: set[_Client] = set()
        self._ips: dict[str, _IpState] = {}
        self._next_cid = 0
        self._server: Any = None
        self._pump_task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batchers: dict[tuple[str, str], DiffBatcher] = {}
        self._next_boundary: dict[int, int] = {}
        for sym in self.symbols:
            try:
                uid = source.book(sym, 1).update_id
            except BookUnavailable:
                uid = 0  # only used to batch DepthChanges; a source of formed diffs never needs it
            for suffix, iv in self.intervals.items():
                self._batchers[(sym, suffix)] = DiffBatcher(sym, suffix, iv, uid)
        for iv in set(self.intervals.values()):
            if iv:
                self._next_boundary[iv] = (self.market_ms // iv + 1) * iv
        # depth streams served: all for a source of book changes (batched here); for a source of formed
        # diffs (a recorded day) its own stream and the slower ones, batched from its diffs
        native = getattr(source, "depth_suffix", None)
        self.depth_served = set(self.intervals)
        self._derived: dict[str, list[DiffBatcher]] = {}
        if native is not None:
            native_iv = self.intervals[native]
            self.depth_served = {sfx for sfx, iv in self.intervals.items() if sfx == native or iv > native_iv}
            for sym in self.symbols:
                self._derived[sym] = [self._batchers[(sym, sfx)] for sfx in self.depth_served if sfx != native]

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> VenueServer:
        self._loop = asyncio.get_running_loop()
        self._server = await serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            close_timeout=2,
            server_header=None,
            max_size=2**20,
            logger=logging.getLogger("replay.venue.ws"),
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        self._t0 = self._loop.time()
        self._pump_task = asyncio.create_task(self._pump(), name="venue-pump")
        log.info("venue %s listening on %s", self.market.name, self.rest_url)
        return self

    async def stop(self) -> None:
        if self._pump_task:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump_task
            self._pump_task = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def __aenter__(self) -> VenueServer:  # noqa: PYI034
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self, stop: asyncio.Event | None = None) -> None:
        if self._server is None:
            await self.start()
        try:
            if stop is None:
                await asyncio.Future()
            else:
                await stop.wait()
        finally:
            await self.stop()

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[VenueServer]:
        """Run the venue on its own event loop in a daemon thread for the duration of the with-block."""
        ready = threading.Event()
        error: list[BaseException] = []
        stop_holder: dict[str, Any] = {}

        def runner() -> None:
            async def main() -> None:
                stop = asyncio.Event()
                stop_holder["stop"] = stop
                stop_holder["loop"] = asyncio.get_running_loop()
                try:
                    await self.start()
                except BaseException as e:  # noqa: BLE001 - reported to the caller
                    error.append(e)
                    ready.set()
                    return
                ready.set()
                await self.serve_forever(stop)

            asyncio.run(main())

        thread = threading.Thread(target=runner, name="venue", daemon=True)
        thread.start()
        ready.wait(30)
        if error:
            raise error[0]
        try:
            yield self
        finally:
            loop = stop_holder.get("loop")
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(stop_holder["stop"].set)
            thread.join(10)

    # -- truth ------------------------------------------------------------------------------------
    def _in_loop(self, fn: Any, *args: Any) -> Any:
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:

                async def call() -> Any:
                    return fn(*args)

                return asyncio.run_coroutine_threadsafe(call(), loop).result(10)
        return fn(*args)

    def _fmt_book(self, symbol: str, book: BookState) -> tuple[int, list[list[str]], list[list[str]]]:
        spec = self.specs[symbol]
        return book.update_id, self.payloads.levels(spec, book.bids), self.payloads.levels(spec, book.asks)

    def true_book(self, symbol: str) -> tuple[int, list[list[str]], list[list[str]]]:
        """(update_id, bids, asks) of the true book now; levels as [price, qty] strings, best first."""
        symbol = symbol.upper()
        return self._in_loop(lambda: self._fmt_book(symbol, self.source.book(symbol)))

    def true_book_at(self, symbol: str, update_id: int) -> tuple[int, list[list[str]], list[list[str]]]:
        """The true book as of `update_id` (e.g. a published diff's u). KeyError if out of history."""
        symbol = symbol.upper()

        def get() -> Any:
            book = self.source.book_at(symbol, update_id)
            if book is None:
                raise KeyError(f"update id {update_id} of {symbol} is out of the venue's history")
            return self._fmt_book(symbol, book)

        return self._in_loop(get)

    def stats_dict(self) -> dict[str, Any]:
        return {
            "market": self.market.name,
            "symbols": self.symbols,
            "market_time": self.market_ms,
            "speed": self.speed,
            "faults_spec": str(self.faults),
            "faults": dict(self.fault_counts),
            "connections": self.stats.connections,
            "connections_total": self.stats.connections_total,
            "rest_requests": self.stats.rest_requests,
            "frames": dict(self.stats.frames),
            "clients": [
                {"id": c.cid, "streams": len(c.subs), "frames": c.sent_frames, "faults": dict(c.faults.local)}
                for c in sorted(self._clients, key=lambda c: c.cid)
            ],
        }

    # -- market pump ------------------------------------------------------------------------------
    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self.speed is None:
                    target = self.market_ms + 50
                else:
                    target = self.source.start_ms + int((loop.time() - self._t0) * 1000.0 * self.speed)
                if target > self.market_ms:
                    self._advance(target)
                await asyncio.sleep(0.001 if self.speed is None else 0.005)
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - a dead pump would silently freeze the venue
            log.exception("venue pump failed")
            raise

    def _advance(self, target: int) -> None:
        for ev in self.source.advance(target):
            ts = ev.ts
            self._flush_until(ts)
            self.market_ms = max(self.market_ms, ts)
            if isinstance(ev, DepthChange):
                for suffix, iv in self.intervals.items():
                    b = self._batchers[(ev.symbol, suffix)]
                    b.add(ev)
                    if iv == 0:
                        d = b.flush(ev.ts + 1)
                        if d is not None:
                            self._publish_diff(d)
            elif isinstance(ev, Trade):
                self._publish_trade(ev)
            elif isinstance(ev, BookTicker):
                self._publish_ticker(ev)
            elif isinstance(ev, DepthDiff):
                self._publish_diff(ev)
                for batcher in self._derived.get(ev.symbol, ()):
                    batcher.add_diff(ev)
            elif isinstance(ev, RawEvent):
                self._fanout(f"{ev.symbol.lower()}@{ev.suffix}", ev.payload, depth=ev.depth)
            elif isinstance(ev, Disconnect):
                self._disconnect_all(ev)
        self._flush_until(target)
        self.market_ms = max(self.market_ms, target)

    def _flush_until(self, ts: int) -> None:
        for iv, boundary in self._next_boundary.items():
            if boundary > ts:
                continue
            while boundary <= ts:
                for b in self._batchers.values():
                    if b.interval == iv and b.U is not None:
                        d = b.flush(boundary)
                        if d is not None:
                            self._publish_diff(d)
                boundary += iv
            self._next_boundary[iv] = boundary

    def _fanout(self, stream: str, payload: Any, depth: bool = False) -> None:
        subs = self._subscribers.get(stream)
        if not subs:
            return
        if self.faults.silence and self._silenced(stream):
            return
        raw = payload if isinstance(payload, str) else _dumps(payload)
        self.stats.frames[stream.split("@", 1)[1]] += 1
        for c in list(subs):
            c.deliver(stream, raw, depth)

    def _silenced(self, stream: str) -> bool:
        """The `silence` fault: this stream is not sent to anyone now."""
        channel, symbol, start, until = self.faults.silence
        symbol_part, _, suffix = stream.partition("@")
        if symbol_part != symbol.lower() or suffix.partition("@")[0] != channel:
            return False
        elapsed = self._loop.time() - self._t0
        if elapsed < start or until is not None and elapsed >= until:
            return False
        self.fault_counts["silence"] += 1
        return True

    def _publish_diff(self, d: DepthDiff) -> None:
        self.last_published_u[(d.symbol, d.suffix)] = d.u
        stream = f"{d.symbol.lower()}@{d.suffix}"
        if self._subscribers.get(stream):
            self._fanout(stream, self.payloads.depth_update(self.specs[d.symbol], d), depth=True)

    def _publish_trade(self, t: Trade) -> None:
        sl = t.symbol.lower()
        spec = self.specs[t.symbol]
        if self._subscribers.get(f"{sl}@trade"):
            self._fanout(f"{sl}@trade", self.payloads.trade(spec, t))
        if t.agg_last and self._subscribers.get(f"{sl}@aggTrade"):
            self._fanout(f"{sl}@aggTrade", self.payloads.agg_trade(spec, t))

    def _publish_ticker(self, t: BookTicker) -> None:
        stream = f"{t.symbol.lower()}@bookTicker"
        if self._subscribers.get(stream):
            self._fanout(stream, self.payloads.book_ticker(self.specs[t.symbol], t))

    # -- WebSocket --------------------------------------------------------------------------------
    def _subscribe(self, client: _Client, stream: str) -> None:
        if stream not in client.subs:
            client.subs[stream] = None
            if self.market.delivers_on(stream, client.route):  # else: acknowledged, never delivered
                self._subscribers.setdefault(stream, set()).add(client)

    def _unservable(self, streams: list[str]) -> str | None:
        """Why the venue refuses these streams (the first it cannot serve), None if it serves them all."""
        for stream in streams:
            name = stream.split("@", 1)[1] if "@" in stream and not stream.startswith("!") else ""
            if name in ("trade", "aggTrade", "bookTicker") or name in self.depth_served:
                continue
            served = ", ".join(["trade", "aggTrade", "bookTicker", *sorted(self.depth_served)])
            return f"Invalid request: stream `{stream}` is not served by this venue (it serves <symbol>@ {served})"
        return None

    def _unsubscribe(self, client: _Client, stream: str) -> None:
        if stream in client.subs:
            del client.subs[stream]
            subs = self._subscribers.get(stream)
            if subs:
                subs.discard(client)
                if not subs:
                    del self._subscribers[stream]

    def _url_streams(self, path: str) -> tuple[str, bool, list[str]] | None:
        """(route, combined, streams) for a WS path, None if not a stream path."""
        parts = urlsplit(path)
        p = parts.path
        route = ""
        if self.market.routed:
            for prefix in (PUBLIC, MARKET):
                if p.startswith(prefix + "/"):
                    route, p = prefix, p[len(prefix):]
                    break
        if p in ("/ws", "/ws/"):
            return route, False, []
        if p.startswith("/ws/"):
            return route, False, [s for s in unquote(p[4:]).split("/") if s]
        if p in ("/stream", "/stream/"):
            qs = parse_qs(parts.query)
            streams = qs.get("streams", [""])[0]
            return route, True, [s for s in streams.split("/") if s]
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        route, combined, streams = self._url_streams(ws.request.path) or ("", False, [])
        self._next_cid += 1
        client = _Client(self, ws, self._next_cid, combined, route)
        for s in streams:
            self._subscribe(client, s)
        self._clients.add(client)
        self.stats.connections += 1
        self.stats.connections_total += 1
        loop = asyncio.get_running_loop()
        writer = asyncio.create_task(client.writer())
        timers = [loop.call_later(self.lifetime, lambda: asyncio.ensure_future(self._expire(client)))]
        if self.faults.disconnect_s:
            timers.append(loop.call_later(self.faults.disconnect_s, self._disconnect, client))
        max_rate = self.market.max_incoming_messages_per_second
        try:
            async for message in ws:
                now = loop.time()
                client.msg_times.append(now)
                while client.msg_times and client.msg_times[0] <= now - 1.0:
                    client.msg_times.popleft()
                if len(client.msg_times) > max_rate:
                    self.fault_counts["rate_limit_close"] += 1
                    client.closed = True
                    await ws.close(1008, "Too many requests")
                    break
                answer = self._ws_request(client, message)
                if answer is not None:
                    client.put(answer)
        except ConnectionClosed:
            pass
        finally:
            for t in timers:
                t.cancel()
            client.closed = True
            for s in list(client.subs):
                self._unsubscribe(client, s)
            self._clients.discard(client)
            self.stats.connections -= 1
            client.queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 2)
            writer.cancel()

    async def _expire(self, client: _Client) -> None:
        self.fault_counts["lifetime"] += 1
        if self.shutdown_event and self.market.name == "spot":
            client.put(_dumps({"e": "serverShutdown", "E": self.market_ms}))
            await asyncio.sleep(0.05)
        client.closed = True
        with contextlib.suppress(Exception):
            await client.ws.close(1000, "")

    def _disconnect_all(self, ev: Disconnect) -> None:
        """Drop every connected client (a source's outage or end of data)."""
        self.fault_counts["source_disconnect"] += 1
        for client in list(self._clients):
            client.closed = True
            if ev.abort:
                transport = client.ws.transport
                if transport is not None:
                    transport.abort()
            else:
                asyncio.ensure_future(client.ws.close(1001, ev.reason[:100]))

    def _disconnect(self, client: _Client) -> None:
        client.faults.count("disconnect")
        client.closed = True
        transport = client.ws.transport
        if transport is not None:
            transport.abort()

    def _ws_request(self, client: _Client, message: str | bytes) -> str | None:
        try:
            req = orjson.loads(message)
        except orjson.JSONDecodeError as e:
            return ws_error(
                3, f"Invalid JSON: {str(e).split(':')[0].lower()} at line 1 column {getattr(e, 'pos', 0) + 1}"
            )
        if not isinstance(req, dict):
            return ws_error(2, "Invalid request: expected a JSON object")
        req_id = req.get("id")
        if req_id is not None and not (
            (isinstance(req_id, int) and not isinstance(req_id, bool) and 0 <= req_id < 2**63)
            or (isinstance(req_id, str) and 0 < len(req_id) <= 36 and req_id.isalnum())
        ):
            return ws_error(2, "Invalid request: request ID must be an unsigned integer", None)
        for key in req:
            if key not in ("method", "params", "id"):
                return ws_error(
                    2,
                    f"Invalid request: unknown field `{key}`, expected one of `method`, `params`, `id`",
                    req_id,
                )
        method = req.get("method")
        if method is None:
            return ws_error(2, "Invalid request: missing field `method`", req_id)
        if not isinstance(method, str) or method not in WS_METHODS:
            variants = ", ".join(f"`{m}`" for m in WS_METHODS)
            return ws_error(
                2, f"Invalid request: unknown variant `{method}`, expected one of {variants}", req_id
            )
        params = req.get("params", [])
        if params is None:
            params = []
        if not isinstance(params, list):
            return ws_error(2, "Invalid request: invalid type: expected a sequence of strings", req_id)
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not all(isinstance(p, str) for p in params):
                return ws_error(2, "Invalid request: property name must be a string", req_id)
            if method == "SUBSCRIBE":
                new = [p for p in dict.fromkeys(params) if p not in client.subs]
                if len(client.subs) + len(new) > self.market.max_streams_per_connection:
                    return ws_error(2, "Invalid request: too many parameters", req_id)
                refused = self._unservable(new)
                if refused is not None:
                    return ws_error(2, refused, req_id)
                for p in new:
                    self._subscribe(client, p)
            else:
                for p in params:
                    self._unsubscribe(client, p)
            return _dumps({"result": None, "id": req_id})
        if method == "LIST_SUBSCRIPTIONS":
            return _dumps({"result": list(client.subs), "id": req_id})
        if method == "SET_PROPERTY":
            if len(params) != 2 or params[0] != "combined":
                return ws_error(0, "Unknown property", req_id)
            if not isinstance(params[1], bool):
                return ws_error(1, "Invalid value type: expected Boolean", req_id)
            client.combined = params[1]
            return _dumps({"result": None, "id": req_id})
        # GET_PROPERTY
        if len(params) != 1 or params[0] != "combined":
            return ws_error(0, "Unknown property", req_id)
        return _dumps({"result": client.combined, "id": req_id})

    # -- HTTP / REST ------------------------------------------------------------------------------
    def _response(
        self,
        status: int,
        body: Any,
        headers: list[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> Response:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        h = Headers()
        h["Content-Type"] = content_type or "application/json;charset=UTF-8"
        h["Content-Length"] = str(len(data))
        h["Date"] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
        h["Connection"] = "close"
        for k, v in headers or ():
            h[k] = v
        return Response(status, http.HTTPStatus(status).phrase, h, data)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        upgrade = request.headers.get("Upgrade", "")
        if "websocket" in upgrade.lower():
            parsed = self._url_streams(request.path)
            if parsed is None:
                return self._response(404, b"", content_type="text/plain")
            if len(parsed[2]) > self.market.max_streams_per_connection:
                return self._response(400, {"code": -1, "msg": "Too many streams requested"})
            refused = self._unservable(parsed[2])
            if refused is not None:
                return self._response(400, {"code": 2, "msg": refused})
            return self._connection_attempt(connection)
        try:
            return await self._rest(connection, request)
        except Exception:
            log.exception("REST handler failed for %s", request.path)
            return self._response(
                500, {"code": -1000, "msg": "An unknown error occurred while processing the request."}
            )

    def _connection_attempt(self, connection: ServerConnection) -> Response | None:
        """Binance's connection-attempt limit per IP (300 per 5 minutes): over it, 429 and no connection."""
        st = self._ip_state((connection.remote_address or ("?",))[0])
        now = time.monotonic()
        window = self.market.connection_attempt_window_s
        while st.connects and st.connects[0] <= now - window:
            st.connects.popleft()
        if len(st.connects) >= self.market.max_connection_attempts:
            self.fault_counts["connect_429"] += 1
            retry = str(max(1, math.ceil(st.connects[0] + window - now)))
            return self._response(429, {"code": -1003, "msg": "Too many connection attempts"}, [("Retry-After", retry)])
        st.connects.append(now)
        return None

    def _ip_state(self, ip: str) -> _IpState:
        st = self._ips.get(ip)
        if st is None:
            st = self._ips[ip] = _IpState(faults=FaultDecider(self.faults, f"rest:{ip}", self.fault_counts))
        return st

    async def _rest(self, connection: ServerConnection, request: Request) -> Response:
        parts = urlsplit(request.path)
        path = parts.path
        qs = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path.startswith("/_venue/"):
            return self._venue_endpoint(path, qs)
        m = self.market
        routes = {
            m.ping_path: "ping",
            m.time_path: "time",
            m.exchange_info_path: "exchangeInfo",
            m.depth_path: "depth",
        }
        kind = routes.get(path)
        if kind is None:
            return self._response(404, b"", content_type="text/html")
        self.stats.rest_requests += 1
        ip = (connection.remote_address or ("?",))[0]
        st = self._ip_state(ip)
        now = time.time()
        if st.banned_until > now:
            return self._banned(st, now)
        if st.backoff_until > now:
            st.violations += 1
            if st.violations >= self.ban_after:
                st.banned_until = now + min(120.0 * 2**st.bans, 3 * 86400.0)
                st.bans += 1
                self.fault_counts["ip_ban"] += 1
                return self._banned(st, now)
            return self._too_many(st, ip, now, st.backoff_until)
        # weight
        window = int(now // self.weight_window_s)
        if window != st.window:
            st.window, st.used = window, 0
        if kind == "depth":
            try:
                weight = m.depth_weight(int(qs.get("limit", self._default_limit())))
            except ValueError:
                weight = m.depth_weights[0][1]
        elif kind == "exchangeInfo":
            weight = 20 if m.name == "spot" else 1
        else:
            weight = 1
        st.used += weight
        if st.used > self.weight_limit:
            st.backoff_until = (window + 1) * self.weight_window_s
            st.violations = 0
            self.fault_counts["weight_429"] += 1
            return self._too_many(st, ip, now, st.backoff_until)
        wh = [("X-MBX-USED-WEIGHT-1M", str(st.used))]
        # injected faults
        f = st.faults
        assert f is not None
        if self.faults.active:
            if f.hit("http418"):
                return self._response(
                    418,
                    {
                        "code": -1003,
                        "msg": f"Way too much request weight used; IP banned until "
                        f"{int((now + self.faults.http418_s) * 1000)}. Please use WebSocket Streams for live "
                        "updates to avoid bans.",
                    },
                    wh + [("Retry-After", str(max(1, round(self.faults.http418_s))))],
                )
            if f.hit("http429"):
                return self._response(
                    429,
                    {"code": -1003, "msg": self._too_many_msg(ip)},
                    wh + [("Retry-After", str(max(1, round(self.faults.http429_s))))],
                )
            if f.hit("http5xx"):
                return self._response(
                    503,
                    {
                        "code": -1001,
                        "msg": "Internal error; unable to process your request. Please try again.",
                    },
                    wh,
                )
            if f.hit("slow_rest"):
                await asyncio.sleep(self.faults.slow_rest_s)
        if kind == "ping":
            return self._response(200, {}, wh)
        if kind == "time":
            return self._response(200, {"serverTime": self.market_ms}, wh)
        if kind == "exchangeInfo":
            return self._exchange_info(qs, wh)
        return self._depth(qs, wh, f)

    def _default_limit(self) -> int:
        return 100 if self.market.name == "spot" else 500

    def _too_many_msg(self, ip: str) -> str:
        return (
            f"Too many requests; current limit of IP({ip}) is {self.weight_limit} requests per minute. "
            "Please use WebSocket Streams for live updates to avoid bans."
        )

    def _too_many(self, st: _IpState, ip: str, now: float, until: float) -> Response:
        retry = str(max(1, math.ceil(until - now)))
        return self._response(
            429,
            {"code": -1003, "msg": self._too_many_msg(ip)},
            [("X-MBX-USED-WEIGHT-1M", str(st.used)), ("Retry-After", retry)],
        )

    def _banned(self, st: _IpState, now: float) -> Response:
        retry = str(max(1, math.ceil(st.banned_until - now)))
        msg = (
            f"Way too much request weight used; IP banned until {int(st.banned_until * 1000)}. "
            "Please use WebSocket Streams for live updates to avoid bans."
        )
        return self._response(
            418, {"code": -1003, "msg": msg}, [("X-MBX-USED-WEIGHT-1M", str(st.used)), ("Retry-After", retry)]
        )

    def _bad(self, code: int, msg: str, wh: list[tuple[str, str]]) -> Response:
        return self._response(400, {"code": code, "msg": msg}, wh)

    def _exchange_info(self, qs: dict[str, str], wh: list[tuple[str, str]]) -> Response:
        symbols = self.symbols
        if "symbol" in qs:
            if qs["symbol"] not in self.specs:
                return self._bad(-1121, "Invalid symbol.", wh)
            symbols = [qs["symbol"]]
        elif "symbols" in qs:
            try:
                wanted = orjson.loads(qs["symbols"])
                assert isinstance(wanted, list)
            except (orjson.JSONDecodeError, AssertionError):
                return self._bad(
                    -1100,
                    "Illegal characters found in parameter 'symbols'; legal range is '^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$'.",
                    wh,
                )
            bad = [s for s in wanted if s not in self.specs]
            if bad:
                return self._bad(-1121, "Invalid symbol.", wh)
            symbols = wanted
        m = self.market
        limits = [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": self.weight_limit,
            }
        ]
        if m.name == "spot":
            limits += [
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ]
            body: dict[str, Any] = {
                "timezone": "UTC",
                "serverTime": self.market_ms,
                "rateLimits": limits,
                "exchangeFilters": [],
            }
        else:
            limits += [
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ]
            body = {"timezone": "UTC", "serverTime": self.market_ms}
            if m.name == "usdm":
                body["futuresType"] = "U_MARGINED"
            body.update({"rateLimits": limits, "exchangeFilters": []})
            if m.name == "usdm":
                body["assets"] = [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}]
        body["symbols"] = [self.source.exchange_info_symbol(s) for s in symbols]
        return self._response(200, body, wh)

    def _depth(self, qs: dict[str, str], wh: list[tuple[str, str]], f: FaultDecider) -> Response:
        symbol = qs.get("symbol")
        if not symbol:
            return self._bad(
                -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.", wh
            )
        raw_limit = qs.get("limit", str(self._default_limit()))
        if not raw_limit.isdigit() or len(raw_limit) > 20:
            return self._bad(
                -1100, "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.", wh
            )
        limit = int(raw_limit)
        try:
            self.market.check_limit(limit)
        except ValueError:
            return self._bad(-1130, "Data sent for parameter 'limit' is not valid.", wh)
        if symbol not in self.specs:
            return self._bad(-1121, "Invalid symbol.", wh)
        book: BookState | None = None
        if self.faults.stale_snapshot and f.hit("stale_snapshot"):
            uid = self.source.stale_update_id(symbol)
            if uid is not None:
                book = self.source.book_at(symbol, uid, limit)
        if book is None:
            try:
                book = self.source.book(symbol, limit)
            except BookUnavailable:
                return self._response(
                    503,
                    {
                        "code": -1001,
                        "msg": "Internal error; unable to process your request. Please try again.",
                    },
                    wh,
                )
        if self.faults.ahead_snapshot and f.hit("ahead_snapshot"):
            book = dataclasses.replace(book, update_id=book.update_id + AHEAD_SNAPSHOT_IDS)
        return self._response(200, self.payloads.depth_snapshot(self.specs[symbol], book, self.market_ms), wh)

    def _venue_endpoint(self, path: str, qs: dict[str, str]) -> Response:
        if path == "/_venue/stats":
            return self._response(200, self.stats_dict())
        if path == "/_venue/book":
            symbol = qs.get("symbol", "").upper()
            if symbol not in self.specs:
                return self._response(400, {"error": f"unknown symbol {symbol!r}", "symbols": self.symbols})
            if "update_id" in qs:
                try:
                    book = self.source.book_at(symbol, int(qs["update_id"]))
                except ValueError:
                    return self._response(400, {"error": "update_id must be an integer"})
                if book is None:
                    return self._response(404, {"error": "update id out of the venue's history"})
            else:
                try:
                    book = self.source.book(symbol)
                except BookUnavailable as e:
                    return self._response(503, {"error": str(e)})
            _, b, a = self._fmt_book(symbol, book)
            return self._response(
                200, {"symbol": symbol, "lastUpdateId": book.update_id, "T": book.ts, "bids": b, "asks": a}
            )
        return self._response(404, {"error": "unknown venue endpoint"})
