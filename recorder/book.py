"""The L2 order book: exact integer levels (1e-8 units), absolute quantities, zero removes.

One book type serves the recorder's live view, the validator and replay. It knows nothing about update
ids; `recorder.sync` decides what may be applied.
"""

from __future__ import annotations

from sortedcontainers import SortedDict

from recorder.numbers import format_units, units_cached

Level = tuple[int, int]  # (price, qty) in 1e-8 units


class BookError(ValueError):
    """A diff or snapshot with a level that is not an exact decimal; the book was left unchanged."""


def convert_levels(levels: list[list[str]]) -> list[Level]:
    """Convert Binance's [[price, qty], ...] strings to exact integers."""
    try:
        return [(units_cached(level[0]), units_cached(level[1])) for level in levels]
    except (ValueError, TypeError, IndexError) as exc:
        raise BookError(f"bad level in {levels[:3]!r}...: {exc}") from None


class OrderBook:
    """Bids and asks as sorted maps price -> qty. Best bid is the highest key, best ask the lowest."""

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def load(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        """Replace the whole book with a snapshot's levels (zero quantities are skipped)."""
        self.load_levels(convert_levels(bids), convert_levels(asks))

    def load_levels(self, bid_levels: list[Level], ask_levels: list[Level]) -> None:
        self.bids = SortedDict((p, q) for p, q in bid_levels if q)
        self.asks = SortedDict((p, q) for p, q in ask_levels if q)

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        """Apply a diff: set each level to its absolute qty, qty 0 removes (a missing level is fine).

        Converts and applies in one pass. A bad level raises BookError with the diff half applied: the
        caller must discard the book (`LocalBook` does: it resyncs), as it must after any lost diff.
        """
        units = units_cached
        try:
            for side, levels in ((self.bids, bids), (self.asks, asks)):
                for level in levels:
                    price = units(level[0])
                    qty = units(level[1])
                    if qty:
                        side[price] = qty
                    else:
                        side.pop(price, None)
        except (ValueError, TypeError, IndexError) as exc:
            raise BookError(f"bad level in {levels[:3]!r}...: {exc}") from None

    def apply_levels(self, bid_levels: list[Level], ask_levels: list[Level]) -> None:
        """Apply already converted (price, qty) integer levels."""
        for side, levels in ((self.bids, bid_levels), (self.asks, ask_levels)):
            for price, qty in levels:
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)

    def best_bid(self) -> Level | None:
        return self.bids.peekitem(-1) if self.bids else None

    def best_ask(self) -> Level | None:
        return self.asks.peekitem(0) if self.asks else None

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """The best n levels per side, best first."""
        bids = self.bids
        nb = len(bids)
        top_bids = [bids.peekitem(nb - 1 - i) for i in range(min(n, nb))]
        top_asks = [self.asks.peekitem(i) for i in range(min(n, len(self.asks)))]
        return top_bids, top_asks

    def export(self) -> tuple[list[Level], list[Level]]:
        """Every level, best first."""
        return list(reversed(self.bids.items())), list(self.asks.items())

    def is_crossed(self) -> bool:
        """Best bid above best ask: impossible on a correct book."""
        return bool(self.bids and self.asks) and self.bids.peekitem(-1)[0] > self.asks.peekitem(0)[0]

    def is_locked(self) -> bool:
        """Best bid equal to best ask: also impossible on Binance's continuous book."""
        return bool(self.bids and self.asks) and self.bids.peekitem(-1)[0] == self.asks.peekitem(0)[0]

    def depth(self) -> tuple[int, int]:
        return len(self.bids), len(self.asks)

    def format_top(self, n: int, price_decimals: int = 8, qty_decimals: int = 8) -> dict[str, list[list[str]]]:
        """Top n levels as Binance-style strings with fixed decimals."""
        bids, asks = self.top(n)
        return {
            "bids": [[format_units(p, price_decimals), format_units(q, qty_decimals)] for p, q in bids],
            "asks": [[format_units(p, price_decimals), format_units(q, qty_decimals)] for p, q in asks],
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OrderBook):
            return NotImplemented
        return self.bids == other.bids and self.asks == other.asks

    def __repr__(self) -> str:
        return f"OrderBook(best_bid={self.best_bid()}, best_ask={self.best_ask()}, depth={self.depth()})"
