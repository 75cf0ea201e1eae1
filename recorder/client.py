"""Thin I/O shell around the sync engine: one WebSocket connection, REST snapshots, local books.

`BookClient` subscribes to the depth streams (and optional other channels) of some symbols over the
combined-stream connections of the market's connection plan (`recorder.routing`: one per route on USD-M),
fetches snapshots with httpx whenever a symbol's engine asks for one, and keeps a `LocalBook` per symbol.
All decisions are the engine's; this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import websockets

from recorder.markets import Market
from recorder.protocol import (
    DepthSnapshot,
    DepthUpdate,
    ErrorPayload,
    ParseError,
    ServerShutdown,
    parse_frame,
    parse_snapshot,
)
from recorder.routing import PlannedConnection, plan_connections, subscribe_interval_s
from recorder.sync import Action, LocalBook
from recorder.wsconnection import WebSocketConnection

log = logging.getLogger(__name__)


class RestError(Exception):
    """A REST request that failed for good (after retries) or was refused."""


@dataclass
class RestLimiter:
    """One request-weight budget per process, fed by Binance's `X-MBX-USED-WEIGHT-1M` header.

    Binance counts weight per IP per minute and bans an IP that keeps sending past the limit (429, then
    418). The server's figure lags: it arrives with a response, after other requests may have left. So a
    request reserves its weight before it is sent, and the estimate of this minute's use is the larger of
    what this process sent and what the server last reported plus the weight still in flight: many
    snapshot requests waiting for the next minute go out only as far as the budget allows, never all at
    once. Also remembers a back-off deadline from 429/418 `Retry-After`, during which no request is sent.
    """

    limit_per_minute: int
    headroom: float = 0.8  # keep 20 % of the budget free for other clients of the same IP
    used: int = 0  # the server's last figure
    used_at: float = 0.0
    blocked_until: float = 0.0
    sent: int = 0  # weight this process sent in the current minute
    sent_minute: float = 0.0
    in_flight: int = 0  # weight sent whose response has not been seen

    def observe(self, headers: httpx.Headers, now: float) -> None:
        used = headers.get("x-mbx-used-weight-1m")
        if used is not None and used.isdigit():
            self.used, self.used_at = int(used), now

    def estimate(self, now: float) -> int:
        """This minute's weight as far as we know: never below what we sent ourselves."""
        minute_start = now - (now % 60.0)
        if self.sent_minute < minute_start:
            self.sent, self.sent_minute = 0, minute_start
        reported = self.used if self.used_at >= minute_start else 0
        return max(reported + self.in_flight, self.sent)

    def reserve(self, weight: int, now: float) -> float:
        """0.0 and the weight counted as sent if a request of this weight fits now; else seconds to wait
        before asking again. Every reservation that returned 0.0 is ended by `done`."""
        if now < self.blocked_until:
            return self.blocked_until - now
        if self.estimate(now) + weight > self.limit_per_minute * self.headroom:
            return 60.0 - (now % 60.0) + 0.05
        self.sent += weight
        self.in_flight += weight
        return 0.0

    def done(self, weight: int) -> None:
        """The reserved request got its response (or failed): its weight is in the server's figure now."""
        self.in_flight = max(0, self.in_flight - weight)

    def back_off(self, seconds: float, now: float) -> None:
        self.blocked_until = max(self.blocked_until, now + seconds)


@dataclass
class SnapshotFetcher:
    """GET depth snapshots politely: weight budget, Retry-After on 429/418, retries on 5xx and timeouts."""

    market: Market
    rest_url: str
    limit: int = 1000
    timeout: float = 10.0
    max_attempts: int = 5
    limiter: RestLimiter | None = None
    http: httpx.AsyncClient | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.market.check_limit(self.limit)
        if self.limiter is None:
            self.limiter = RestLimiter(self.market.weight_limit_per_minute)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    async def fetch(self, symbol: str) -> tuple[DepthSnapshot, bytes, int]:
        """Return the snapshot, the raw response body and its local receive time (ns)."""
        own_client = self.http is None
        http = self.http or httpx.AsyncClient(timeout=self.timeout)
        try:
            return await self._fetch(http, symbol)
        finally:
            if own_client:
                await http.aclose()

    async def _fetch(self, http: httpx.AsyncClient, symbol: str) -> tuple[DepthSnapshot, bytes, int]:
        weight = self.market.depth_weight(self.limit)
        url = f"{self.rest_url.rstrip('/')}{self.market.depth_path}"
        params = {"symbol": symbol, "limit": self.limit}
        backoff = 0.5
        for attempt in range(1, self.max_attempts + 1):
            while (delay := self.limiter.reserve(weight, time.time())) > 0:
                self._count("waited_for_budget")
                await asyncio.sleep(delay)
            try:
                try:
                    response = await http.get(url, params=params, timeout=self.timeout)
                finally:
                    self.limiter.done(weight)
            except httpx.TimeoutException:
                self._count("timeout")
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff *= 2
                continue
            except httpx.TransportError as exc:
                self._count("transport_error")
                if attempt == self.max_attempts:
                    raise RestError(f"depth {symbol}: {exc}") from None
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff *= 2
                continue
            recv_ts = time.time_ns()
            self.limiter.observe(response.headers, time.time())
            status = response.status_code
            self._count(f"status_{status}")
            if status in (429, 418):
                self._count(f"http{status}")
                retry_after = float(response.headers.get("retry-after", "60") or 60)
                self.limiter.back_off(retry_after, time.time())
                continue
            if status >= 500:
                self._count("http5xx")
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff *= 2
                continue
            result = parse_snapshot(response.content, symbol)
            if isinstance(result, DepthSnapshot):
                return result, response.content, recv_ts
            if isinstance(result, ErrorPayload):
                raise RestError(f"depth {symbol}: HTTP {status} code {result.code}: {result.msg}")
            self._count("bad_snapshot")
            await asyncio.sleep(backoff)
        raise RestError(f"depth {symbol}: no usable snapshot after {self.max_attempts} attempts")


async def send_paced(ws: websockets.ClientConnection | WebSocketConnection, messages: list[str],
                     interval_s: float) -> None:
    """Send control messages (SUBSCRIBE) one every `interval_s`, within Binance's incoming-message limit."""
    for i, message in enumerate(messages):
        if i:
            await asyncio.sleep(interval_s)
        await ws.send(message)


FrameHandler = Callable[[int, object], None]


class BookClient:
    """Keeps local books of `symbols` in sync over the market's connections; reconnects with backoff and jitter."""

    def __init__(
        self,
        market: Market,
        symbols: list[str],
        rest_url: str | None = None,
        ws_url: str | None = None,
        depth_stream: str | None = None,
        extra_channels: tuple[str, ...] = (),
        limit: int = 1000,
        on_message: FrameHandler | None = None,
    ) -> None:
        self.market = market
        self.symbols = [s.upper() for s in symbols]
        self.ws_url = (ws_url or market.ws_url).rstrip("/")
        self.fetcher = SnapshotFetcher(market, rest_url or market.rest_url, limit)
        self.depth_suffix = depth_stream or market.depth_streams[0]
        market.depth_stream("x", self.depth_suffix)  # a one-line error for a suffix the market does not offer
        channels = [self.depth_suffix, *extra_channels]
        self.plan: list[PlannedConnection] = plan_connections(market, self.symbols, channels,
                                                              market.max_streams_per_connection)
        self.books = {s: LocalBook(market.sequence_rule, s) for s in self.symbols}
        self.on_message = on_message
        self.counters: dict[str, int] = {"frames": 0, "parse_errors": 0, "reconnects": 0, "resyncs": 0}
        self._snapshot_tasks: dict[str, asyncio.Task] = {}

    @property
    def urls(self) -> list[str]:
        return [planned.url(self.ws_url) for planned in self.plan]

    async def run(self, duration: float | None = None, stop: asyncio.Event | None = None) -> None:
        """Run until `duration` seconds have passed or `stop` is set."""
        stop = stop or asyncio.Event()
        worker = asyncio.create_task(self._run_connections())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({worker, stopper}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (worker, stopper):
                task.cancel()
            for task in (worker, stopper):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._reset_all("stop")

    async def _run_connections(self) -> None:
        async with httpx.AsyncClient(timeout=self.fetcher.timeout) as http:
            self.fetcher.http = http
            await asyncio.gather(*(self._run_connection(planned) for planned in self.plan))

    async def _run_connection(self, planned: PlannedConnection) -> None:
        """Keep one planned connection up; only the one carrying depth resets and resyncs the books."""
        backoff = 0.2
        books = [s for s in self.symbols if s in planned.symbols] if planned.carries_depth else []
        while True:
            try:
                await self._connection(planned, books)
                backoff = 0.2
            except (OSError, websockets.ConnectionClosed, websockets.InvalidHandshake) as exc:
                log.info("connection lost: %s", exc)
                self._reset(books, "disconnect")
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 30.0)
            self._reset(books, "reconnect")
            self.counters["reconnects"] += 1

    async def _connection(self, planned: PlannedConnection, books: list[str]) -> None:
        async with websockets.connect(planned.url(self.ws_url), max_size=None, ping_interval=None) as ws:
            await send_paced(ws, planned.subscriptions(self.ws_url), subscribe_interval_s(self.market))
            for symbol in books:
                self._request_snapshot(symbol)
            while True:
                if self.handle_frame(time.time_ns(), await ws.recv(decode=False)):
                    return  # server announced shutdown: reconnect

    def handle_frame(self, recv_ts: int, raw: bytes | str) -> bool:
        """Process one frame; True if the server announced it will close the connection."""
        self.counters["frames"] += 1
        message = parse_frame(raw)
        if isinstance(message, DepthUpdate):
            local_book = self.books.get(message.symbol)
            if local_book is not None:
                action = local_book.on_diff(message)
                if action is Action.RESYNC:
                    self.counters["resyncs"] += 1
                    self._request_snapshot(message.symbol)
        elif isinstance(message, ParseError):
            self.counters["parse_errors"] += 1
        elif isinstance(message, ServerShutdown):
            return True
        if self.on_message is not None:
            self.on_message(recv_ts, message)
        return False

    def _request_snapshot(self, symbol: str) -> None:
        task = self._snapshot_tasks.get(symbol)
        if task is None or task.done():
            self._snapshot_tasks[symbol] = asyncio.create_task(self._snapshot(symbol))

    async def _snapshot(self, symbol: str) -> None:
        local_book = self.books[symbol]
        while local_book.engine.needs_snapshot:
            try:
                snapshot, _, recv_ts = await self.fetcher.fetch(symbol)
            except RestError as exc:
                log.warning("%s", exc)
                await asyncio.sleep(1.0)
                continue
            if self.on_message is not None:
                self.on_message(recv_ts, snapshot)
            action = local_book.on_snapshot(snapshot)
            if action is Action.STALE:
                await asyncio.sleep(0.05)

    def _reset_all(self, reason: str) -> None:
        self._reset(self.symbols, reason)

    def _reset(self, symbols: list[str], reason: str) -> None:
        for symbol in symbols:
            task = self._snapshot_tasks.pop(symbol, None)
            if task is not None:
                task.cancel()
            self.books[symbol].reset(reason)
