"""What a venue source provides to the VenueServer, and the market events it yields.

A source owns the market: its symbols (with exchangeInfo entries), the true book at its current update id
(and, for a bounded history, at earlier ones), and a time-ordered stream of market events. The server owns
everything else: pacing against the wall clock, batching raw book changes into Binance diff frames, fan-out
to WebSocket subscribers, REST, rate limits and fault injection.

Two kinds of depth event are understood:

* `DepthChange`: one engine update (one update id) with the new absolute quantity of each changed level.
  The server batches these into `@depth@100ms` / `@depth` / `@depth@0ms` diffs itself (synthetic source).
* `DepthDiff`: an already formed diff for one stream speed (U/u/pu and level lists), e.g. read from a
  recorded day. The server forwards it unchanged to that stream's subscribers.

All prices and quantities are exact ints in 1e-8 units (`recorder.numbers`); formatting to Binance's fixed
decimal strings uses the symbol's `SymbolSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from recorder.markets import Market
from recorder.numbers import SCALE, format_units

Level = tuple[int, int]  # (price units, qty units); qty 0 removes the level


@dataclass(frozen=True)
class SymbolSpec:
    """A tradable symbol: its tick/step (1e-8 units) and how Binance prints its numbers."""

    symbol: str
    base: str
    quote: str
    tick: int
    step: int
    price_decimals: int  # decimals printed on the wire (spot: always 8)
    qty_decimals: int
    mid: int  # initial mid price, units (synthetic source)
    lot: int  # typical order size, units (synthetic source)
    pair: str | None = None  # COIN-M pair, e.g. BTCUSD
    contract_type: str | None = None  # futures: PERPETUAL

    def fmt_price(self, units: int) -> str:
        return format_units(units, self.price_decimals)

    def fmt_qty(self, units: int) -> str:
        return format_units(units, self.qty_decimals)

    @property
    def stream_symbol(self) -> str:
        return self.symbol.lower()


def spot_decimals() -> int:
    return SCALE


@dataclass(slots=True)
class DepthChange:
    """One update of the true book: update id and the new absolute quantity of each changed level."""

    symbol: str
    ts: int  # exchange (transaction) time, ms
    update_id: int
    bids: list[Level]
    asks: list[Level]


@dataclass(slots=True)
class DepthDiff:
    """An already formed diff of one depth stream (`suffix` such as `depth@100ms`)."""

    symbol: str
    suffix: str
    E: int
    T: int
    U: int
    u: int
    pu: int | None
    bids: list[Level]
    asks: list[Level]
    ts: int = 0  # market time at which to publish; defaults to E

    def __post_init__(self) -> None:
        if not self.ts:
            self.ts = self.E


@dataclass(slots=True)
class Trade:
    """One trade; the server emits it on `@trade` and (aggregated by `agg_id`) on `@aggTrade`."""

    symbol: str
    ts: int  # trade time, ms
    trade_id: int
    price: int
    qty: int
    buyer_maker: bool
    agg_id: int
    first_trade_id: int
    last_trade_id: int
    agg_qty: int  # total qty of the aggregate trade (same price, same taker)
    agg_last: bool  # this trade completes its aggregate trade: emit the aggTrade now


@dataclass(slots=True)
class BookTicker:
    symbol: str
    ts: int
    update_id: int
    bid: int
    bid_qty: int
    ask: int
    ask_qty: int


@dataclass(slots=True)
class RawEvent:
    """A ready payload for one stream (e.g. a recorded aggTrade), fanned out as is on `<symbol>@<suffix>`.

    `payload` is the data object (dict, serialized in its key order) or its JSON text.
    """

    symbol: str
    suffix: str
    ts: int
    payload: dict[str, Any] | str
    depth: bool = False  # subject to the depth-frame faults (drop, duplicate, ...)


MarketEvent = DepthChange | DepthDiff | Trade | BookTicker | RawEvent


@dataclass(slots=True)
class BookState:
    """A full book: update id, time of that update, levels sorted best first (bids desc, asks asc)."""

    update_id: int
    ts: int
    bids: list[Level] = field(default_factory=list)
    asks: list[Level] = field(default_factory=list)


@runtime_checkable
class VenueSource(Protocol):
    """What the VenueServer needs from a market source (synthetic generator or recorded day)."""

    market: Market

    @property
    def start_ms(self) -> int:
        """Market time (ms) at which the source starts."""
        ...

    def symbols(self) -> list[str]:
        """Symbols served, uppercase (BTCUSDT, BTCUSD_PERP)."""
        ...

    def spec(self, symbol: str) -> SymbolSpec: ...

    def exchange_info_symbol(self, symbol: str) -> dict[str, Any]:
        """This symbol's entry of exchangeInfo's "symbols" list, in Binance's field order."""
        ...

    def book(self, symbol: str, limit: int | None = None) -> BookState:
        """The true book at the current update id (top `limit` levels per side)."""
        ...

    def book_at(self, symbol: str, update_id: int, limit: int | None = None) -> BookState | None:
        """The true book as of `update_id` (state after the last update <= it), None if out of history."""
        ...

    def stale_update_id(self, symbol: str) -> int | None:
        """An update id well in the past (still within history), for the stale_snapshot fault."""
        ...

    def advance(self, until_ms: int) -> list[MarketEvent]:
        """Move the market to `until_ms` and return the events up to then, in time order."""
        ...
