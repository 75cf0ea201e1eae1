"""Binance market definitions: endpoints, depth limits and weights, stream names, routes and limits.

One table of facts per market so the recorder, the venue and replay agree on them. Figures follow
Binance's public API documentation (spot, USD-M futures, COIN-M futures), as read on 2026-12-02:

* USD-M "Important WebSocket Change Notice -- Base URL Split & Migration" (announced 2026-03-06, legacy
  URLs retired 2026-04-23): market streams are served on routed paths of wss://fstream.binance.com --
  `/public` (high-frequency: `@depth*`, `@bookTicker`, and by the tier maps clients use, `@trade`),
  `/market` (regular: `@aggTrade`, `@markPrice`, `@kline_*`, `@forceOrder`, tickers), `/private` (user
  data). A connection on an unrouted path (`/ws`, `/stream`) gets only `/public` data; other streams are
  acknowledged and never delivered ("fails silently rather than erroring"). Each stream page now names its
  URL PATH (e.g. `@rpiDepth@500ms`: `/public`). Kept as data in `STREAM_ROUTES`. `@trade` is not
  documented for USD-M; it is on `/public` by the tier map of other clients (rustrade-data).
* Spot WebSocket Streams: 1024 streams per connection; 5 incoming messages per second per connection,
  ping and pong frames and JSON control messages (SUBSCRIBE ...) counted; 300 connection attempts per
  5 minutes per IP; a ping every 20 s, disconnected without a pong within 1 minute; 24 h lifetime,
  `serverShutdown` event before a maintenance close. No routes.
* USD-M WebSocket Market Streams: 1024 streams per connection, 10 incoming messages per second, ping
  every 3 minutes, pong within 10 minutes, 24 h lifetime. The connection-attempt limit is documented
  for spot only; the same 300 per 5 minutes is assumed.
* COIN-M WebSocket Market Streams: as USD-M but on wss://dstream.binance.com without routes; the page
  now says 1024 streams per connection (it said 200 before).
* Change logs (spot to 2026-07-01, derivatives to 2026-01-09, plus the routing notice): USD-M
  `@aggTrade` has a field `nq` since 2025-12-31 (quantity without RPI orders; not recorded yet); spot
  streams send `serverShutdown` before a maintenance close (handled: rollover); no change to stream names,
  depth limits, snapshot weights or ping timing of the streams recorded here.
* Depth snapshots: spot weight 5/25/50/250 for limit <=100/500/1000/5000; futures limits
  5,10,20,50,100,500,1000 with weight 2/5/10/20. Request weight per minute: spot 6000, futures 2400.
  Diff depth streams: spot `@depth@100ms`, `@depth` (1000 ms); futures `@depth@0ms`, `@depth@100ms`,
  `@depth` (250 ms), `@depth@500ms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class SequenceRule(str, Enum):
    """Which update-id rule keeps a local book in sync (Binance's "manage a local order book")."""

    SPOT = "spot"  # continuity by U == previous u + 1
    FUTURES = "futures"  # continuity by pu == previous u


@dataclass(frozen=True)
class Market:
    name: str  # spot | usdm | coinm
    exchange: str  # dataset exchange name: binance-spot | binance-usdm | binance-coinm
    rest_url: str
    ws_url: str
    api_prefix: str  # /api/v3, /fapi/v1, /dapi/v1
    depth_weights: tuple[tuple[int, int], ...]  # (max limit, weight) in increasing limit order
    allowed_limits: tuple[int, ...] | None  # None: any integer 1..max(depth_weights)
    depth_streams: tuple[str, ...]  # accepted depth stream suffixes, first is the recorder's default
    max_streams_per_connection: int
    max_incoming_messages_per_second: int
    weight_limit_per_minute: int
    sequence_rule: SequenceRule
    server_ping_interval_s: float  # how often Binance pings a client
    server_pong_timeout_s: float  # how long it waits for the pong before disconnecting
    connection_lifetime_s: float = 24 * 3600.0
    max_connection_attempts: int = 300  # per IP in `connection_attempt_window_s`
    connection_attempt_window_s: float = 300.0

    @property
    def depth_path(self) -> str:
        return f"{self.api_prefix}/depth"

    @property
    def exchange_info_path(self) -> str:
        return f"{self.api_prefix}/exchangeInfo"

    @property
    def ping_path(self) -> str:
        return f"{self.api_prefix}/ping"

    @property
    def time_path(self) -> str:
        return f"{self.api_prefix}/time"

    @property
    def max_depth_limit(self) -> int:
        return self.depth_weights[-1][0]

    def check_limit(self, limit: int) -> int:
        """Return `limit` if Binance accepts it for this market's depth endpoint, else raise ValueError."""
        if self.allowed_limits is not None:
            if limit not in self.allowed_limits:
                raise ValueError(f"limit {limit} not allowed on {self.name}; use one of {self.allowed_limits}")
        elif not 1 <= limit <= self.max_depth_limit:
            raise ValueError(f"limit {limit} out of range 1..{self.max_depth_limit} on {self.name}")
        return limit

    def depth_weight(self, limit: int) -> int:
        """Request weight of one depth snapshot with this limit."""
        self.check_limit(limit)
        for max_limit, weight in self.depth_weights:
            if limit <= max_limit:
                return weight
        raise AssertionError("unreachable: check_limit bounds the limit")

    @property
    def routed(self) -> bool:
        """True if this market serves its streams on routed paths (`/public`, `/market`)."""
        return self.name in STREAM_ROUTES

    def route_of(self, stream: str) -> str:
        """The path prefix a stream is served on (`/public`, `/market`), '' on a market without routes.

        Raises ValueError for a stream kind the route table does not know on a routed market."""
        routes = STREAM_ROUTES.get(self.name)
        if routes is None:
            return ""
        kind = stream_kind(stream)
        try:
            return routes[kind]
        except KeyError:
            raise ValueError(f"no route known for stream {stream!r} on {self.name}") from None

    def delivers_on(self, stream: str, route: str) -> bool:
        """True if a connection on path prefix `route` ('' = unrouted `/ws`, `/stream`) gets this stream."""
        routes = STREAM_ROUTES.get(self.name)
        if routes is None:
            return route == ""
        wanted = routes.get(stream_kind(stream))
        return wanted is not None and wanted == (route or UNROUTED_SERVES)

    def depth_stream(self, symbol: str, suffix: str | None = None) -> str:
        """Stream name such as `btcusdt@depth@100ms`."""
        suffix = suffix or self.depth_streams[0]
        if suffix not in self.depth_streams:
            raise ValueError(f"depth stream {suffix!r} not offered on {self.name}; use one of {self.depth_streams}")
        return f"{symbol.lower()}@{suffix}"


PUBLIC, MARKET = "/public", "/market"

# stream kind -> route path, per market with routes (USD-M, Base URL Split notice of 2026-03-06).
# The kind is the stream name after `<symbol>@` up to the next `@`, without digits or `_<interval>`:
# depth@100ms, depth5 -> depth; kline_1m -> kline; markPrice@1s -> markPrice.
STREAM_ROUTES: dict[str, dict[str, str]] = {
    "usdm": {
        "depth": PUBLIC,
        "rpiDepth": PUBLIC,
        "bookTicker": PUBLIC,
        "trade": PUBLIC,
        "aggTrade": MARKET,
        "markPrice": MARKET,
        "kline": MARKET,
        "continuousKline": MARKET,
        "forceOrder": MARKET,
        "ticker": MARKET,
        "miniTicker": MARKET,
        "compositeIndex": MARKET,
        "assetIndex": MARKET,
        "contractInfo": MARKET,
    },
}
UNROUTED_SERVES = PUBLIC  # what a routed market still delivers on an unrouted path (`/ws`, `/stream`)


def stream_kind(stream: str) -> str:
    """`btcusdt@depth@100ms` -> `depth`, `btcusdt@depth20` -> `depth`, `btcusdt@kline_1m` -> `kline`, `!ticker@arr` -> `ticker`."""
    if stream.startswith("!"):  # an all-market stream: !bookTicker, !forceOrder@arr
        name = stream[1:].split("@", 1)[0]
    else:
        name = stream.split("@", 2)[1] if "@" in stream else stream
    return name.split("_", 1)[0].rstrip("0123456789")


SPOT = Market(
    name="spot",
    exchange="binance-spot",
    rest_url="https://api.binance.com",
    ws_url="wss://stream.binance.com:9443",
    api_prefix="/api/v3",
    depth_weights=((100, 5), (500, 25), (1000, 50), (5000, 250)),
    allowed_limits=None,
    depth_streams=("depth@100ms", "depth"),
    max_streams_per_connection=1024,
    max_incoming_messages_per_second=5,
    weight_limit_per_minute=6000,
    sequence_rule=SequenceRule.SPOT,
    server_ping_interval_s=20.0,
    server_pong_timeout_s=60.0,
)

_FUTURES_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
_FUTURES_WEIGHTS = ((50, 2), (100, 5), (500, 10), (1000, 20))

USDM = Market(
    name="usdm",
    exchange="binance-usdm",
    rest_url="https://fapi.binance.com",
    ws_url="wss://fstream.binance.com",
    api_prefix="/fapi/v1",
    depth_weights=_FUTURES_WEIGHTS,
    allowed_limits=_FUTURES_LIMITS,
    depth_streams=("depth@100ms", "depth@0ms", "depth", "depth@500ms"),
    max_streams_per_connection=1024,
    max_incoming_messages_per_second=10,
    weight_limit_per_minute=2400,
    sequence_rule=SequenceRule.FUTURES,
    server_ping_interval_s=180.0,
    server_pong_timeout_s=600.0,
)

COINM = Market(
    name="coinm",
    exchange="binance-coinm",
    rest_url="https://dapi.binance.com",
    ws_url="wss://dstream.binance.com",
    api_prefix="/dapi/v1",
    depth_weights=_FUTURES_WEIGHTS,
    allowed_limits=_FUTURES_LIMITS,
    depth_streams=("depth@100ms", "depth@0ms", "depth", "depth@500ms"),
    max_streams_per_connection=1024,
    max_incoming_messages_per_second=10,
    weight_limit_per_minute=2400,
    sequence_rule=SequenceRule.FUTURES,
    server_ping_interval_s=180.0,
    server_pong_timeout_s=600.0,
)

MARKETS: dict[str, Market] = {m.name: m for m in (SPOT, USDM, COINM)}


def get_market(name: str) -> Market:
    """Look a market up by name (`spot`, `usdm`, `coinm`) with a one-line error otherwise."""
    try:
        return MARKETS[name]
    except KeyError:
        raise ValueError(f"unknown market {name!r}; use one of {', '.join(MARKETS)}") from None


def market_for_exchange(exchange: str) -> Market:
    for market in MARKETS.values():
        if market.exchange == exchange:
            return market
    raise ValueError(f"unknown exchange {exchange!r}; use one of {', '.join(m.exchange for m in MARKETS.values())}")


_QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "EUR", "TRY", "BTC", "ETH", "BNB", "USD")


def quote_currency(symbol: str) -> str:
    """The currency a symbol's prices are in, from its name: BTCUSDT -> USDT, BTCUSD_PERP -> USD; '' if unknown."""
    base = symbol.upper().split("_", 1)[0]
    return next((q for q in _QUOTE_ASSETS if base.endswith(q) and len(base) > len(q)), "")
