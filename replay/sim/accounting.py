"""The simulator's books: exact inventory and cash, fees, average-cost realized PnL and the PnL attribution.

Inventory is an integer in 1e-8 base units and cash an exact integer in 1e-16 quote units (price × qty of
two 1e-8 integers), so the books never drift; fees and the attribution are floats. Attribution: total PnL =
spread capture (each fill's edge against the mid at the fill) + inventory mark-to-market (inventory × every
mid change) + fees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recorder.numbers import UNIT


@dataclass(slots=True)
class Fill:
    exchange_ts: int
    known_ts: int  # local time the strategy learns of it
    side: int
    price: int
    qty: int
    mid: float
    fee: float
    liquidity: str  # maker | taker
    inventory: int  # after the fill, 1e-8 units


def mark_to_market(cash: int, inventory: int, mid: float | None, fees: float) -> float:
    """Total PnL in the quote currency: cash + inventory at the mid − fees (no mid yet: inventory at 0)."""
    return cash / (UNIT * UNIT) + inventory / UNIT * (mid or 0.0) - fees


@dataclass
class Accounts:
    """One symbol's position and PnL, fed every fill and every mid change."""

    maker_fee: float  # fraction of notional; negative = rebate
    taker_fee: float
    inventory: int = 0  # 1e-8 base units, true (not as known to the strategy)
    cash: int = 0  # 1e-16 quote units
    fees: float = 0.0
    spread_capture: float = 0.0
    inventory_pnl: float = 0.0
    realized: float = 0.0
    avg_cost: float = 0.0
    fills: list[Fill] = field(default_factory=list)

    def open(self, inventory: int, mark: int) -> None:
        """Start from a position carried over (both in 1e-8 units), held as if bought at `mark`: PnL counts
        from there."""
        self.inventory = inventory
        self.cash = -inventory * mark  # exact: 1e-8 × 1e-8 units
        self.avg_cost = mark / UNIT

    def mid_moved(self, change: float) -> None:
        """The inventory held through a mid change of `change` (price units)."""
        self.inventory_pnl += self.inventory / UNIT * change

    def fill(self, side: int, price: int, qty: int, liquidity: str, mid: float, exchange_ts: int,
             known_ts: int) -> Fill:
        """Book a fill at `price` (1e-8 units) and keep its record."""
        notional = price * qty / (UNIT * UNIT)
        fee = notional * (self.maker_fee if liquidity == "maker" else self.taker_fee)
        self._book(side, price, qty, fee, mid)
        fill = Fill(exchange_ts, known_ts, side, price, qty, mid, fee, liquidity, self.inventory)
        self.fills.append(fill)
        return fill

    def _book(self, side: int, price: int, qty: int, fee: float, mid: float) -> None:
        signed = side * qty
        px = price / UNIT
        q = self.inventory
        if q == 0 or (q > 0) == (signed > 0):  # opening or adding
            total = abs(q) + qty
            self.avg_cost = (self.avg_cost * abs(q) + px * qty) / total
        else:
            closed = min(abs(q), qty)
            self.realized += (px - self.avg_cost) * closed / UNIT * (1 if q > 0 else -1)
            if qty > abs(q):
                self.avg_cost = px
        self.inventory += signed
        self.cash -= signed * price
        self.fees += fee
        self.spread_capture += side * (mid - px) * qty / UNIT

    def pnl(self, mid: float | None) -> float:
        return mark_to_market(self.cash, self.inventory, mid, self.fees)
