"""The market-making simulator: one symbol's quoter against the replayed book and trades.

`Simulator.on_event(event)` is fed the replay engine's events in arrival order (sans-I/O: no files or
clocks inside). Two clocks: the local one (arrival time, when the strategy sees data and decides) and the
exchange one (when the matching engine acts: the transaction time `T` where the market gives it, as on
futures, else the event time `E`). Local time t maps to the exchange clock as t minus the
smallest recv − exchange time seen (clock skew plus the fastest delivery, taken as zero latency). An order sent at t is
live at the exchange from that moment + entry latency; a cancel takes effect after the entry latency too, and
the order can still fill until then; a fill (or reject) at exchange time x is known to the strategy, and its
quote seen gone, at x on the local clock + response latency. The quoter is timer-driven: at each grid point
of `requote_interval` it decides on what it knew then, i.e. before the event that crosses the grid point. Prices and quantities are
integers in 1e-8 units as in the book; cash is an exact integer in 1e-16 units of the quote currency.

The parts, one job each: the strategy (strategies.py) answers a raw quote; the order rules (rules.py) turn
it into orders; the simulated exchange and its fill models (exchange.py) match them; the books
(accounting.py) hold inventory, cash and the PnL attribution. This class is their clock and decision
grid, with the estimators, the kill switch, the regime pause and the sampled series.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from recorder.numbers import UNIT, parse_units
from replay.engine import BOOK_INVALID, BOOK_VALID, DEPTH, SNAPSHOT, TRADE, ReplayEvent
from replay.sim.accounting import Accounts, Fill
from replay.sim.calibrate import IntensityEstimator, VolatilityEstimator
from replay.sim.exchange import BUY, SELL, SIDE_NAME, SimExchange, SimOrder
from replay.sim.params import AUTO, SimParams, parse_latency
from replay.sim.rules import OrderRules
from replay.sim.strategies import MarketState, Quote, Strategy, StrategyError, ask_strategy  # noqa: F401 (StrategyError: part of this module's API)

__all__ = ["BUY", "SELL", "UNIT", "Series", "Simulator", "StrategyError"]


@dataclass
class Series:
    """Sampled every `sample_interval` of data time (and at the end)."""

    ts: list[int] = field(default_factory=list)
    mid: list[float] = field(default_factory=list)
    bid: list[float] = field(default_factory=list)  # live quote, nan when none
    ask: list[float] = field(default_factory=list)
    inventory: list[float] = field(default_factory=list)  # base units
    pnl: list[float] = field(default_factory=list)
    spread_capture: list[float] = field(default_factory=list)
    inventory_pnl: list[float] = field(default_factory=list)
    fees: list[float] = field(default_factory=list)


class Simulator:
    """One symbol: strategy + order rules + simulated exchange + accounting, on two clocks."""

    def __init__(self, symbol: str, params: SimParams, strategy: Strategy, tick: int, lot: int,
                 horizon_ns: int, maker_fee: float, taker_fee: float,
                 log: Callable[[dict], None] | None = None, grid_start_ns: int | None = None,
                 opening: tuple[int, int] | None = None) -> None:
        """`opening`: (inventory, mark price), both in 1e-8 units: a position carried over from the previous
        day, held as if bought at its closing mid, so this day's PnL is the change in value from that close."""
        self.symbol, self.p, self.strategy = symbol, params, strategy
        self.tick, self.lot = tick, lot
        self.horizon_ns = horizon_ns
        self.maker_fee, self.taker_fee = maker_fee, taker_fee
        self.size = parse_units(params.order_size) if params.order_size is not None else lot
        self.size = max(lot, self.size // lot * lot)
        self.log = log or (lambda entry: None)
        self.entry_const, self.entry_factor = parse_latency(params.entry_latency)
        self.resp_const, self.resp_factor = parse_latency(params.response_latency)
        self.vol = VolatilityEstimator(params.sigma_halflife)
        self.fast_vol = VolatilityEstimator(params.fast_sigma_halflife)
        self.intensity = IntensityEstimator(params.intensity_window, tick / UNIT)
        self.A = math.nan if params.A == AUTO else params.A  # until the first fit
        self.k = math.nan if params.k == AUTO else params.k
        self.fits: list[dict] = []
        # a model strategy waits for the first estimates of what is `auto` (σ, A, k); the references need none
        self.warming_up = params.strategy not in ("join", "fixed")
        self.counts = {"orders": 0, "cancels": 0, "rejects": 0, "kept": 0, "decisions": 0, "unsynced_spans": 0,
                       "pauses": 0}
        self.exchange = SimExchange(params, lot, self._on_fill, self._on_reject)
        self.rules = OrderRules(params, tick, lot, self.size, maker_fee, self.exchange, self.counts, self.log)
        self.accounts = Accounts(maker_fee, taker_fee)
        self.clock_offset: int | None = None  # min(recv − exchange time) so far: clock skew + the fastest delivery
        self.feed_latency_ns = 0.0  # EWMA of recv − exchange time − clock_offset: the feed latency beyond the fastest
        self.feed_samples: list[int] = []
        # what the strategy knows, after the response latency
        self.known_inventory = 0
        self.pending_known: list[Fill] = []
        self.pending_gone: list[tuple[int, SimOrder]] = []  # (local time known, order filled or rejected)
        # state
        self.mid: float | None = None
        self.valid = False
        self.killed: str | None = None
        self.paused = False
        self.decision_interval = int(params.requote_interval * 1e9)
        self.next_decision = grid_start_ns  # decisions on a grid of data time from here (default: first event)
        self.next_sample = 0
        self.next_fit = 0
        self.peak_pnl = 0.0
        self.max_drawdown = 0.0
        self.unsynced_ns = 0  # data time with the book unsynced (no quotes)
        self._unsynced_since: int | None = None
        self.strategy_half_sum = 0.0  # Σ over quoting decisions of the strategy's own (ask − bid)/2, before limits
        self.touch_half_sum = 0.0  # Σ of the market's (best ask − best bid)/2 at the same decisions
        self.two_sided = 0  # decisions both sums cover
        self.market_volume = 0  # 1e-8 base units traded on the market while simulating
        self.hourly_market_volume: dict[int, int] = {}
        self.time_at_soft = 0.0
        self.time_at_hard = 0.0
        self.abs_q_time = 0.0
        self.sampled_time = 0.0
        self._last_stat_ts: int | None = None
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.series = Series()
        if opening is not None:
            self.accounts.open(*opening)
            self.known_inventory = opening[0]
            self.mid = opening[1] / UNIT  # the first book's mid change is the inventory's move since the close

    # the parts' state under the names tests and tools read
    @property
    def inventory(self) -> int:
        return self.accounts.inventory

    @inventory.setter
    def inventory(self, value: int) -> None:
        self.accounts.inventory = value

    @property
    def cash(self) -> int:
        return self.accounts.cash

    @property
    def fees(self) -> float:
        return self.accounts.fees

    @property
    def fills(self) -> list[Fill]:
        return self.accounts.fills

    @property
    def orders(self) -> list[SimOrder]:
        return self.exchange.orders

    @property
    def quoted(self) -> dict[int, SimOrder | None]:
        return self.rules.quoted

    # -- feeding ---------------------------------------------------------------------------------
    def on_event(self, event: ReplayEvent) -> None:
        kind = event.kind
        now = event.recv_ts
        if self.first_ts is None:
            self.first_ts = now
            if self.next_decision is None:
                self.next_decision = now
        self.last_ts = now
        if now >= self.next_decision and self.valid and self.exchange.best is not None:
            # a timer-driven quoter: it decides at the grid point, on what it knew then (before this event)
            at = now - (now - self.next_decision) % self.decision_interval
            self._learn_fills(at)
            self._decide(at)
            self.next_decision = at + self.decision_interval
        if kind is DEPTH or kind is SNAPSHOT:
            book = event.book
            if book is None or not book.bids or not book.asks:
                return
            ex = event.transact_ts or event.exchange_ts
            if ex is not None:
                lat = now - ex
                self.feed_samples.append(lat)
                if self.clock_offset is None or lat < self.clock_offset:
                    self.clock_offset = lat
                self.feed_latency_ns += 0.01 * (lat - self.clock_offset - self.feed_latency_ns)
            self._clock(ex if ex is not None else self._exchange_time(now) - int(self.feed_latency_ns))
            bid, ask = self.exchange.show(book)
            mid = (bid + ask) / (2 * UNIT)
            if self.mid is not None and mid != self.mid:
                self.accounts.mid_moved(mid - self.mid)
            self.mid = mid
            self.vol.update(now, mid)
            self.fast_vol.update(now, mid)
            if self.exchange.orders:
                self.exchange.match_book()
        elif kind is TRADE:
            ex = event.transact_ts or event.exchange_ts
            if ex is None:
                ex = self._exchange_time(now) - int(self.feed_latency_ns)
            self._clock(ex)
            data = event.data
            self.market_volume += data["qty"]
            hour = now // 3_600_000_000_000
            self.hourly_market_volume[hour] = self.hourly_market_volume.get(hour, 0) + data["qty"]
            if self.mid is not None and self.valid:
                self.intensity.add(now, data["price"] / UNIT, data["buyer_is_maker"], self.mid)
                if self.exchange.orders:
                    self.exchange.match_trade(data["price"], data["qty"], data["buyer_is_maker"])
        elif kind is BOOK_INVALID:
            if self.valid:
                self.counts["unsynced_spans"] += 1
                self._unsynced_since = now
                self.log({"ts": now, "action": "stop", "reasons": ["book unsynced: cancel all, stop quoting"]})
            self.valid = False
            self.rules.drop_all(now, "book unsynced")
            return
        elif kind is BOOK_VALID:
            if not self.valid:
                self.log({"ts": now, "action": "resume", "reasons": ["book valid again"]})
                if self._unsynced_since is not None:
                    self.unsynced_ns += now - self._unsynced_since
                    self._unsynced_since = None
            self.valid = True
            return
        else:
            return
        self._learn_fills(now)
        if self.exchange.best is None or not self.valid:
            return
        if now >= self.next_sample:
            self._sample(now)
            self.next_sample = now + int(self.p.sample_interval * 1e9)
        if now >= self.next_fit:  # until a first fit succeeds, retry every second
            fitted = self._refit(now)
            self.next_fit = now + int((self.p.refit_interval if fitted or self.fits else 1.0) * 1e9)

    # -- clocks ----------------------------------------------------------------------------------
    def _clock(self, exchange_ts: int) -> None:
        """Advance exchange time: orders arriving become live (or are rejected), cancels take effect."""
        self.exchange.advance(exchange_ts, self.mid, self.A, self.k)

    def _exchange_time(self, local: int) -> int:
        """A local moment on the exchange clock. Local and exchange clocks differ by skew, so the fastest
        delivery seen (min recv − exchange time) is taken as zero latency, as hftbacktest's converter does."""
        return local - (self.clock_offset or 0)

    def _local_time(self, exchange: int) -> int:
        return exchange + (self.clock_offset or 0)

    def _latency_ns(self, const: float, factor: float) -> int:
        return int(const * 1e9 + factor * self.feed_latency_ns)

    def _arrival(self, now: int) -> int:
        """Exchange time at which what the quoter sends at local time `now` takes effect."""
        return self._exchange_time(now) + self._latency_ns(self.entry_const, self.entry_factor)

    def _known(self, exchange: int) -> int:
        """Local time at which the quoter learns what the exchange did at `exchange`."""
        return self._local_time(exchange) + self._latency_ns(self.resp_const, self.resp_factor)

    def _on_fill(self, order: SimOrder, qty: int, reason: str, liquidity: str) -> None:
        """The exchange filled `qty` of `order` (already off the exchange when nothing is left)."""
        known = self._known(self.exchange.now)
        fill = self.accounts.fill(order.side, order.price, qty, liquidity, self.mid, self.exchange.now, known)
        self.pending_known.append(fill)
        if order.qty <= 0:
            self.pending_gone.append((known, order))
        if self.p.fill_lockout > 0:
            self.rules.lock_out(order.side, known, self.p.fill_lockout)
        self.log({"ts": known, "exchange_ts": self.exchange.now, "action": "fill", "order": order.oid,
                  "side": SIDE_NAME[order.side], "price": order.price, "qty": qty, "liquidity": liquidity,
                  "reasons": [reason]})

    def _on_reject(self, order: SimOrder) -> None:
        """The exchange rejected a post-only `order` that would have crossed on arrival."""
        self.counts["rejects"] += 1
        known = self._known(order.live_at)
        self.pending_gone.append((known, order))
        self.rules.lock_out(order.side, known, self.p.reject_lockout)
        self.log({"ts": known, "action": "reject", "order": order.oid, "side": SIDE_NAME[order.side],
                  "price": order.price, "reasons": ["post-only order would have crossed the book on arrival",
                                                    f"lockout {self.p.reject_lockout:g}s"]})

    def _learn_fills(self, now: int) -> None:
        """What the strategy knows by local time `now`: its fills, and which of its orders are gone."""
        while self.pending_known and self.pending_known[0].known_ts <= now:
            fill = self.pending_known.pop(0)
            self.known_inventory += fill.side * fill.qty
        if self.pending_gone:
            for entry in [e for e in self.pending_gone if e[0] <= now]:
                self.pending_gone.remove(entry)
                self.rules.seen_gone(entry[1])

    # -- estimates -------------------------------------------------------------------------------
    def _refit(self, now: int) -> bool:
        if self.p.A != AUTO and self.p.k != AUTO:
            return True
        fit = self.intensity.fit(now)
        if fit is None:
            return False
        if self.p.A == AUTO:
            self.A = fit.A
        if self.p.k == AUTO:
            self.k = fit.k
        self.fits.append({"ts": now, "A": fit.A, "k": fit.k, "r2": fit.r2, "trades": fit.trades})
        return True

    def sigma(self) -> float:
        if self.p.sigma != AUTO:
            return self.p.sigma
        return self.vol.sigma or 0.0

    def pnl(self) -> float:
        return self.accounts.pnl(self.mid)

    # -- deciding --------------------------------------------------------------------------------
    def _decide(self, now: int) -> None:
        self.counts["decisions"] += 1
        arrival = self._arrival(now)
        if self.killed or self._check_kill(now, arrival):
            self.rules.hold("kill_switch")
            return
        if self.warming_up:
            waiting = [name for name, missing in (
                ("σ", self.p.sigma == AUTO and self.vol.sigma is None),
                ("A, k", (self.p.A == AUTO or self.p.k == AUTO) and not self.fits)) if missing]
            if waiting:
                self.rules.hold("warming_up")
                return
            self.warming_up = False
            self.log({"ts": now, "action": "resume", "reasons": ["model parameters estimated from the data: quoting"]})
        if self.p.pause_vol_ratio is not None:
            slow, fast = self.vol.sigma, self.fast_vol.sigma
            wild = bool(slow and fast and fast / slow > self.p.pause_vol_ratio)
            if wild != self.paused:
                self.paused = wild
                self.counts["pauses"] += wild
                self.log({"ts": now, "action": "pause" if wild else "resume",
                          "reasons": [f"fast/slow σ {fast / slow:.2f} vs {self.p.pause_vol_ratio:g}"]})
            if wild:
                self.rules.hold("regime_pause")
                self.rules.cancel_side(BUY, now, arrival, ["regime pause"])
                self.rules.cancel_side(SELL, now, arrival, ["regime pause"])
                return
        bid_px, ask_px = self.exchange.best
        q = self.known_inventory / self.size
        state = MarketState(ts=now, mid=self.mid, best_bid=bid_px / UNIT, best_ask=ask_px / UNIT,
                            tick=self.tick / UNIT, q=q, sigma=self.sigma(), A=self.A, k=self.k,
                            time_left=max(0.0, (self.horizon_ns - now) / 1e9))
        quote = ask_strategy(self.strategy, self.p.strategy, state)
        if quote.bid is not None and quote.ask is not None:
            self.strategy_half_sum += (quote.ask - quote.bid) / 2
            self.touch_half_sum += (state.best_ask - state.best_bid) / 2
            self.two_sided += 1
        self.rules.requote(quote, state, q, now, arrival)

    def _check_kill(self, now: int, arrival: int) -> bool:
        pnl = self.pnl()
        drawdown = self.peak_pnl - pnl
        reason = None
        if self.p.max_loss is not None and pnl < -self.p.max_loss:
            reason = f"loss {-pnl:.2f} beyond max_loss {self.p.max_loss:g}"
        elif self.p.max_drawdown is not None and drawdown > self.p.max_drawdown:
            reason = f"drawdown {drawdown:.2f} beyond max_drawdown {self.p.max_drawdown:g}"
        if reason is None:
            return False
        self.killed = reason
        self.rules.cancel_side(BUY, now, arrival, ["kill switch: " + reason])
        self.rules.cancel_side(SELL, now, arrival, ["kill switch: " + reason])
        self.log({"ts": now, "action": "kill", "reasons": [reason]})
        if self.p.flatten_on_kill and self.inventory:
            # close the inventory against the displayed book as a taker
            self.exchange.take(SELL if self.inventory > 0 else BUY, abs(self.inventory), "flatten on kill")
        return True

    # -- series ----------------------------------------------------------------------------------
    def _sample(self, now: int) -> None:
        if self._last_stat_ts is not None:
            dt = (now - self._last_stat_ts) / 1e9
            q = abs(self.inventory) / self.size
            self.abs_q_time += q * dt
            self.sampled_time += dt
            self.time_at_soft += dt if q > self.p.soft_limit else 0.0
            self.time_at_hard += dt if q >= self.p.hard_limit else 0.0
        self._last_stat_ts = now
        pnl = self.pnl()
        self.peak_pnl = max(self.peak_pnl, pnl)
        self.max_drawdown = max(self.max_drawdown, self.peak_pnl - pnl)
        s = self.series
        s.ts.append(now)
        s.mid.append(self.mid)
        bid, ask = self.quoted[BUY], self.quoted[SELL]
        s.bid.append(bid.price / UNIT if bid is not None else math.nan)
        s.ask.append(ask.price / UNIT if ask is not None else math.nan)
        s.inventory.append(self.inventory / UNIT)
        s.pnl.append(pnl)
        s.spread_capture.append(self.accounts.spread_capture)
        s.inventory_pnl.append(self.accounts.inventory_pnl)
        s.fees.append(-self.fees)

    def finish(self) -> None:
        """Close the books at the last data time: a final sample; open orders are left unfilled."""
        if self._unsynced_since is not None and self.last_ts is not None:
            self.unsynced_ns += self.last_ts - self._unsynced_since
            self._unsynced_since = None
        if self.last_ts is not None and self.mid is not None:
            self._learn_fills(self.last_ts)
            self._sample(self.last_ts)
