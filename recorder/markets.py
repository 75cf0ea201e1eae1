"""Binance market definitions: endpoints, depth limits and weights, stream names and limits.

One table of facts per market so the recorder, the venue and replay agree on them. Figures follow
Binance's public API documentation (spot, USD-M futures, COIN-M futures).
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

    def depth_stream(self, symbol: str, suffix: str | None = None) -> str:
        """Stream name such as `btcusdt@depth@100ms`."""
        suffix = suffix or self.depth_streams[0]
        if suffix not in self.depth_streams:
            raise ValueError(f"depth stream {suffix!r} not offered on {self.name}; use one of {self.depth_streams}")
        return f"{symbol.lower()}@{suffix}"


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
    max_streams_per_connection=200,
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
