"""The practical layer between a strategy's raw quote and the exchange, the same for every strategy.

Spread limits (min_spread, the fee-aware floor, max_spread), tick rounding outwards, the post-only clamp,
inventory soft/hard limits, lockouts after fills and rejects, and the tolerance band that keeps a live
order instead of requoting. Each decision that a constraint kept quotes away is counted in `held` (the
summary's "why few fills"); every order placed or cancelled is logged with its reasons.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from recorder.numbers import UNIT
from replay.sim.exchange import BUY, SELL, SIDE_NAME, SimExchange, SimOrder
from replay.sim.params import SimParams
from replay.sim.strategies import MarketState, Quote


class OrderRules:
    """What the quoter wants live per side (`quoted`), and the rules that turn a raw quote into orders."""

    def __init__(self, params: SimParams, tick: int, lot: int, size: int, maker_fee: float, exchange: SimExchange,
                 counts: dict[str, int], log: Callable[[dict], None]) -> None:
        self.p = params
        self.tick, self.lot, self.size = tick, lot, size
        self.maker_fee = maker_fee
        self.exchange = exchange
        self.counts = counts  # the run's counters: orders, cancels and kept are counted here
        self.log = log
        self.quoted: dict[int, SimOrder | None] = {BUY: None, SELL: None}  # the current intent per side
        self.lockout_until = {BUY: 0, SELL: 0}  # local ns
        # decisions at which each constraint kept quotes away (fee_floor, min_spread, max_spread, hard_limit,
        # soft_limit, lockout, regime_pause, warming_up, kill_switch): the summary's "why few fills"
        self.held: dict[str, int] = {}

    def hold(self, constraint: str) -> None:
        self.held[constraint] = self.held.get(constraint, 0) + 1

    def requote(self, quote: Quote, state: MarketState, q: float, now: int, arrival: int) -> None:
        """Apply the rules to the strategy's quote and work both sides; orders sent now reach the exchange at
        `arrival` (exchange ns)."""
        for side, price, size, reasons in self._limits(quote, state, q):
            self._work_side(side, price, size, now, arrival, reasons)

    def _limits(self, quote: Quote, state: MarketState, q: float) -> list[tuple]:
        """Spread limits, tick rounding, no-cross, inventory limits, lockouts: (side, price, size, reasons)."""
        p = self.p
        bid, ask = quote.bid, quote.ask
        why = {BUY: [quote.reason] if quote.reason else [], SELL: [quote.reason] if quote.reason else []}
        if bid is not None and ask is not None:
            center, spread = (bid + ask) / 2, ask - bid
            floor = p.min_spread
            if p.fee_aware and self.maker_fee > 0:
                floor = max(floor, 2 * self.maker_fee * state.mid)
            if spread < floor:
                self.hold("fee_floor" if floor > p.min_spread else "min_spread")
                spread = floor
                why[BUY].append(f"widened to min spread {floor:.6g}")
                why[SELL].append(f"widened to min spread {floor:.6g}")
            if p.max_spread is not None and spread > p.max_spread:
                self.hold("max_spread")
                spread = p.max_spread
                why[BUY].append(f"narrowed to max spread {p.max_spread:g}")
                why[SELL].append(f"narrowed to max spread {p.max_spread:g}")
            bid, ask = center - spread / 2, center + spread / 2
        best_bid, best_ask = self.exchange.best
        out = []
        for side, price in ((BUY, bid), (SELL, ask)):
            reasons = why[side]
            if price is None:
                out.append((side, None, 0, [*reasons, "strategy does not quote this side"]))
                continue
            ticks = price * UNIT / self.tick
            units = (math.floor(ticks + 1e-9) if side == BUY else math.ceil(ticks - 1e-9)) * self.tick
            if side == BUY and units >= best_ask:
                units = best_ask - self.tick
                reasons.append("kept one tick below the best ask (post-only)")
            if side == SELL and units <= best_bid:
                units = best_bid + self.tick
                reasons.append("kept one tick above the best bid (post-only)")
            size = self.size
            growing = q * side >= 0  # this side's fill would grow |q|
            if growing and abs(q) >= p.hard_limit:
                self.hold("hard_limit")
                out.append((side, None, 0, [*reasons, f"|q| {abs(q):g} at hard limit {p.hard_limit:g}: one-sided"]))
                continue
            if growing and abs(q) > p.soft_limit:
                scale = (p.hard_limit - abs(q)) / (p.hard_limit - p.soft_limit) if p.hard_limit > p.soft_limit else 0
                size = int(self.size * scale) // self.lot * self.lot
                reasons.append(f"|q| {abs(q):g} above soft limit {p.soft_limit:g}: size x{scale:.2f}")
                if size <= 0:
                    self.hold("soft_limit")
                    out.append((side, None, 0, reasons))
                    continue
            if state.ts < self.lockout_until[side]:
                self.hold("lockout")
                out.append((side, None, 0, [*reasons, "lockout after a fill or reject"]))
                continue
            if units <= 0:
                out.append((side, None, 0, [*reasons, "price not positive"]))
                continue
            out.append((side, units, size, reasons))
        return out

    def _work_side(self, side: int, price: int | None, size: int, now: int, arrival: int, reasons: list[str]) -> None:
        current = self.quoted[side]
        if price is None:
            self.cancel_side(side, now, arrival, reasons)
            return
        if current is not None:
            band = self.p.tolerance_ticks * self.tick
            if abs(current.price - price) <= band and current.size == size:
                self.counts["kept"] += 1
                return
            self.cancel_side(side, now, arrival, [*reasons, f"requote to {price / UNIT:.10g}"])
        order = self.exchange.send(side, price, size, arrival)
        self.quoted[side] = order
        self.counts["orders"] += 1
        self.log({"ts": now, "action": "place", "order": order.oid, "side": SIDE_NAME[side], "price": price, "qty": size,
                  "reasons": reasons})

    def cancel_side(self, side: int, now: int, arrival: int, reasons: list[str]) -> None:
        """Cancel this side's order; the cancel takes effect at the exchange at `arrival`."""
        current = self.quoted[side]
        if current is None:
            return
        self.quoted[side] = None
        current.cancel_at = arrival
        self.counts["cancels"] += 1
        self.log({"ts": now, "action": "cancel", "order": current.oid, "side": SIDE_NAME[side], "price": current.price,
                  "reasons": reasons})

    def drop_all(self, now: int, reason: str) -> None:
        """Every order off the exchange at once (the book went unsynced)."""
        for order in list(self.exchange.orders):
            self.exchange.remove(order)
            self.seen_gone(order)
            self.log({"ts": now, "action": "cancel", "order": order.oid, "side": SIDE_NAME[order.side],
                      "price": order.price, "reasons": [reason]})

    def seen_gone(self, order: SimOrder) -> None:
        """The quoter learns `order` is off the exchange (filled, rejected, dropped): its side is free."""
        if self.quoted[order.side] is order:
            self.quoted[order.side] = None

    def lock_out(self, side: int, known: int, seconds: float) -> None:
        """No new order on `side` until `seconds` after local time `known` (a fill or reject learned then)."""
        self.lockout_until[side] = max(self.lockout_until[side], known + int(seconds * 1e9))
