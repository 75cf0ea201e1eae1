"""The simulated exchange for one symbol: order arrival, post-only rejects, cancels, and the fill models.

It runs on the exchange clock (`now`, ns): an order is live from its `live_at`, a cancel takes effect at its
`cancel_at`, and until then the order can still fill. It keeps the displayed book the matching engine sees;
what a fill or a reject means for the quoter (accounting, latency, lockouts) is the caller's, told through
`on_fill(order, qty, reason, liquidity)` and `on_reject(order)` after the exchange has taken the order off
(a fill that leaves nothing of it, or a reject).

Fill models (for maker orders; the quoter only posts, post-only orders that would cross are rejected):
- `queue`: the order joins behind the displayed size at its price; trades at that price advance it, size
  decreases not explained by trades advance it by hftbacktest's power-probability rule
  (f(x) = x^n, share f(back)/(f(back)+f(front))); it fills once the queue ahead is used up.
- `cross`: only a trade printing through the price fills it.
- `poisson`: each live order fills with probability A·e^(−kδ)·dt over dt, δ its distance from the mid.
In every model a trade through the price, or the opposite touch moving onto or through it, fills it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recorder.numbers import UNIT
from replay.sim.params import SimParams

BUY, SELL = 1, -1
SIDE_NAME = {BUY: "bid", SELL: "ask"}


@dataclass(slots=True)
class SimOrder:
    oid: int
    side: int
    price: int  # 1e-8 units
    qty: int  # remaining, 1e-8 units
    live_at: int  # exchange ns
    size: int = 0  # as sent
    cancel_at: int | None = None  # exchange ns
    active: bool = False
    queue_ahead: float = 0.0  # displayed quantity ahead of us at our price (1e-8 units)
    level_qty: int = 0  # displayed quantity at our price when last seen
    traded_at_level: float = 0.0  # trade quantity at our price since the last depth change
    checked_at: int = 0  # exchange ns of the last poisson draw


class SimExchange:
    """Orders at the exchange or on their way (at most a few), matched against the displayed book and trades."""

    def __init__(self, params: SimParams, lot: int, on_fill: Callable[[SimOrder, int, str, str], None],
                 on_reject: Callable[[SimOrder], None]) -> None:
        self.fill_model, self.queue_power = params.fill_model, params.queue_power
        self.partial_fills = params.partial_fills
        self.lot = lot
        self.on_fill, self.on_reject = on_fill, on_reject
        self.rng = np.random.default_rng(params.seed)
        self.orders: list[SimOrder] = []
        self.next_oid = 1
        self.now = 0  # exchange ns
        self.book = None  # the displayed book (recorder LocalBook) and its touch, once one is seen
        self.best: tuple[int, int] | None = None

    def show(self, book) -> tuple[int, int]:  # type: ignore[no-untyped-def]
        """A new displayed book (both sides non-empty); its best bid and ask. Resting orders meet it in
        `match_book`."""
        self.book = book
        self.best = (book.best_bid()[0], book.best_ask()[0])
        return self.best

    # -- order entry -----------------------------------------------------------------------------
    def send(self, side: int, price: int, qty: int, live_at: int) -> SimOrder:
        """A post-only order that reaches the exchange at `live_at`."""
        order = SimOrder(self.next_oid, side, price, qty, live_at, size=qty)
        self.next_oid += 1
        self.orders.append(order)
        return order

    def remove(self, order: SimOrder) -> None:
        if order in self.orders:
            self.orders.remove(order)

    def advance(self, exchange_ts: int, mid: float | None, A: float, k: float) -> None:
        """Exchange time moves on: poisson draws (at `mid` with intensity A, k), cancels take effect, orders
        arriving become live or are rejected."""
        self.now = max(self.now, exchange_ts)
        if not self.orders:
            return
        now = self.now
        if self.fill_model == "poisson" and mid is not None:
            self._poisson(now, mid, A, k)
        for order in list(self.orders):
            if order.cancel_at is not None and order.cancel_at <= now:
                self.remove(order)
                continue
            if not order.active and order.live_at <= now and self.best is not None:
                self._activate(order)

    def _activate(self, order: SimOrder) -> None:
        bid, ask = self.best
        if (order.side == BUY and order.price >= ask) or (order.side == SELL and order.price <= bid):
            self.remove(order)
            self.on_reject(order)
            return
        order.active = True
        levels = self.book.bids if order.side == BUY else self.book.asks
        order.level_qty = levels.get(order.price, 0)
        order.queue_ahead = float(order.level_qty)
        order.checked_at = self.now

    # -- fill models -----------------------------------------------------------------------------
    def match_book(self) -> None:
        """The displayed book changed: a touch at or through a quote fills it; the queue model moves the queue."""
        book = self.book
        bid, ask = self.best
        queue = self.fill_model == "queue"
        for order in list(self.orders):
            if not order.active:
                continue
            if (order.side == BUY and ask <= order.price) or (order.side == SELL and bid >= order.price):
                self._fill(order, order.qty, "book crossed the quote")
                continue
            if queue:
                levels = book.bids if order.side == BUY else book.asks
                new = levels.get(order.price, 0)
                if new != order.level_qty:
                    self._queue_depth(order, order.level_qty, new)
                    order.level_qty = new

    def _queue_depth(self, order: SimOrder, prev: int, new: int) -> None:
        """hftbacktest's probabilistic queue rule for a size change at our price not explained by trades."""
        change = prev - new - order.traded_at_level
        order.traded_at_level = 0.0
        if change < 0:  # size added behind us
            order.queue_ahead = min(order.queue_ahead, new)
            return
        front = order.queue_ahead
        back = prev - front
        n = self.queue_power
        fb, ff = max(back, 0.0) ** n, max(front, 0.0) ** n
        prob = fb / (fb + ff) if fb + ff > 0 else 1.0
        estimate = front - (1 - prob) * change + min(back - prob * change, 0.0)
        order.queue_ahead = min(estimate, float(new))

    def match_trade(self, price: int, qty: int, buyer_is_maker: bool) -> None:
        for order in list(self.orders):
            if not order.active:
                continue
            hits = (order.side == BUY) == buyer_is_maker  # sell market orders hit bids
            if not hits:
                continue
            through = price < order.price if order.side == BUY else price > order.price
            if through:
                self._fill(order, order.qty, "trade printed through the quote")
            elif price == order.price and self.fill_model == "queue":
                order.queue_ahead -= qty
                order.traded_at_level += qty
                if order.queue_ahead < 0:
                    filled = order.qty
                    if self.partial_fills:
                        filled = min(order.qty, int(-order.queue_ahead) // self.lot * self.lot)
                    if filled > 0:
                        order.queue_ahead = 0.0
                        self._fill(order, filled, "queue ahead traded away at our price")

    def _poisson(self, now: int, mid: float, A: float, k: float) -> None:
        """Each live order: filled with probability A·e^(−kδ)·dt over the exchange time since its last check."""
        for order in list(self.orders):
            if not order.active:
                continue
            dt = (now - order.checked_at) / 1e9
            order.checked_at = now
            if dt <= 0:
                continue
            delta = abs(order.price / UNIT - mid)
            rate = A * math.exp(-k * delta)
            if rate > 0 and self.rng.random() < min(1.0, rate * dt):  # no rate (nan) before the first fit
                self._fill(order, order.qty, f"poisson fill at depth {delta:.6g}")

    def take(self, side: int, qty: int, reason: str) -> None:
        """A market order of `qty` against the displayed book, walking its levels (taker fills)."""
        bids, asks = self.book.export()
        levels = bids if side == SELL else asks
        left = qty
        for price, shown in levels:
            if left <= 0:
                break
            take = min(left, shown)
            self._fill(SimOrder(0, side, price, take, self.now, active=True), take, reason, "taker")
            left -= take

    def _fill(self, order: SimOrder, qty: int, reason: str, liquidity: str = "maker") -> None:
        order.qty -= qty
        if order.qty <= 0:
            self.remove(order)
        self.on_fill(order, qty, reason, liquidity)
