"""Connection plan: which WebSocket connections carry which streams, and how fast they may be opened.

Sans-I/O. `plan_connections` turns (market, symbols, channels, streams per connection) into connections,
one group per route (USD-M: `/public` for depth and bookTicker, `/market` for aggTrade; spot and COIN-M:
one unrouted group), each sharded within the stream limit with a symbol's streams of a route kept on one
connection. `ConnectLimiter` keeps connection attempts within Binance's per-IP limit;
`subscribe_requests` / `subscribe_interval_s` cover stream lists too long for one URL. Route table and
limits: `recorder.markets` (docs read 2026-12-02).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from recorder.markets import Market

# Above this many bytes of URL, streams are sent as SUBSCRIBE messages on `<route>/stream` instead: 1024
# streams make a ~25 KB URL, over common request-line limits (the websockets library's is 8 KiB).
MAX_URL_BYTES = 4096
# Streams per SUBSCRIBE message; Binance documents no limit, a few KB per message stays modest.
SUBSCRIBE_BATCH = 200


@dataclass(frozen=True)
class PlannedConnection:
    """One connection of the plan: its route path prefix ('' unrouted), symbols and stream names."""

    route: str
    symbols: tuple[str, ...]
    streams: tuple[str, ...]

    @property
    def carries_depth(self) -> bool:
        return any("@depth" in s for s in self.streams)

    def url(self, ws_url: str) -> str:
        """The combined-stream URL, or the bare `<route>/stream` if the list is too long for a URL."""
        base = f"{ws_url.rstrip('/')}{self.route}/stream"
        full = f"{base}?streams={'/'.join(self.streams)}"
        return base if len(full) > MAX_URL_BYTES else full

    def subscriptions(self, ws_url: str) -> list[str]:
        """The SUBSCRIBE messages to send after connecting to `url(ws_url)` (none if the URL names them)."""
        if "?streams=" in self.url(ws_url):
            return []
        return subscribe_requests(self.streams, SUBSCRIBE_BATCH)


def symbol_streams(symbol: str, channels: Sequence[str]) -> list[str]:
    """`BTCUSDT`, (`depth@100ms`, `aggTrade`) -> `btcusdt@depth@100ms`, `btcusdt@aggTrade`."""
    lower = symbol.lower()
    return [f"{lower}@{channel}" for channel in channels]


def plan_connections(market: Market, symbols: Sequence[str], channels: Sequence[str],
                     max_streams: int) -> list[PlannedConnection]:
    """Connections for these symbols and channels: per route, symbols packed within `max_streams`.

    Raises ValueError if a channel has no known route on a routed market (it would never be delivered)."""
    by_route: dict[str, list[str]] = {}
    for channel in channels:
        by_route.setdefault(market.route_of(f"x@{channel}"), []).append(channel)
    plan = []
    for route, route_channels in by_route.items():
        per_connection = max(1, max_streams // len(route_channels))
        for i in range(0, len(symbols), per_connection):
            group = tuple(symbols[i : i + per_connection])
            streams = tuple(s for symbol in group for s in symbol_streams(symbol, route_channels))
            plan.append(PlannedConnection(route, group, streams))
    return plan


def subscribe_requests(streams: Sequence[str], batch: int = SUBSCRIBE_BATCH, first_id: int = 1) -> list[str]:
    """SUBSCRIBE messages for `streams`, `batch` names each, ids counting up from `first_id`."""
    return [
        orjson.dumps({"method": "SUBSCRIBE", "params": list(streams[i : i + batch]), "id": first_id + n}).decode()
        for n, i in enumerate(range(0, len(streams), batch))
    ]


def subscribe_interval_s(market: Market) -> float:
    """Pause between two SUBSCRIBE messages on one connection: half the incoming-message limit.

    Binance counts pings, pongs and control messages against the limit (5/s spot, 10/s futures); the other
    half is left for the pongs the client sends and for jitter in the server's one-second window."""
    return 2.0 / market.max_incoming_messages_per_second


class ConnectLimiter:
    """Connection attempts of one process within Binance's per-IP limit (300 per 5 minutes, docs 2026-12-02).

    A sliding-window log: `reserve(now)` books the next attempt and returns how long to wait before making
    it, so that no `window_s` ever holds more than `headroom` x the limit (the rest is left to other
    processes on the same IP). Reservations are made in order, so concurrent reconnects queue up."""

    def __init__(self, limit: int, window_s: float, headroom: float = 0.8) -> None:
        self.capacity = max(1, int(limit * headroom))
        self.window_s = window_s
        self._attempts: deque[float] = deque()

    @classmethod
    def for_market(cls, market: Market, headroom: float = 0.8) -> ConnectLimiter:
        return cls(market.max_connection_attempts, market.connection_attempt_window_s, headroom)

    def reserve(self, now: float) -> float:
        attempts = self._attempts
        while attempts and attempts[0] <= now - self.window_s:
            attempts.popleft()
        at = now
        if len(attempts) >= self.capacity:
            at = max(now, attempts[-self.capacity] + self.window_s)
        attempts.append(at)
        return at - now
