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
from dataclasses import dataclass, field

import numpy as np

from recorder.numbers import parse_units
from replay.engine import BOOK_INVALID, BOOK_VALID, DEPTH, SNAPSHOT, TRADE, ReplayEvent
from replay.sim.calibrate import IntensityEstimator, VolatilityEstimator
from replay.sim.params import AUTO, SimParams, parse_latency
from replay.sim.strategies import MarketState, Quote, Strategy

UNIT = 100_000_000  # 1e-8 units per price or quantity unit
BUY, SELL = 1, -1
SIDE_NAME = {BUY: "bid", SELL: "ask"}


class StrategyError(RuntimeError):
    """The researcher's strategy raised or answered nonsense; the run stops with a partial report."""


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
    """One symbol: strategy + practical layer + simulated exchange + accounting."""

    def __init__(self, symbol: str, params: SimParams, strategy: Strategy, tick: int, lot: int,
                 horizon_ns: int, maker_fee: float, taker_fee: float,
                 log: Callable[[dict], None] | None = None, grid_start_ns: int | None = None) -> None:
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
        self.rng = np.random.default_rng(params.seed)
        # exchange side
        self.orders: list[SimOrder] = []  # at the exchange or on their way: at most a few
        self.quoted: dict[int, SimOrder | None] = {BUY: None, SELL: None}  # the current intent per side
        self.next_oid = 1
        self.exchange_now = 0
        self.clock_offset: int | None = None  # min(recv − exchange time) so far: clock skew + the fastest delivery
        self.feed_latency_ns = 0.0  # EWMA of recv − exchange time − clock_offset: the feed latency beyond the fastest
        self.feed_samples: list[int] = []
        # accounting (exact)
        self.inventory = 0  # 1e-8 base units, true
        self.cash = 0  # 1e-16 quote units
        self.fees = 0.0
        self.spread_capture = 0.0
        self.inventory_pnl = 0.0
        self.realized = 0.0
        self.avg_cost = 0.0
        self.known_inventory = 0
        self.pending_known: list[Fill] = []
        self.pending_gone: list[tuple[int, SimOrder]] = []  # (local time known, order filled or rejected)
        self.fills: list[Fill] = []
        # state
        self.mid: float | None = None
        self.best: tuple[int, int] | None = None
        self.book = None
        self.valid = False
        self.killed: str | None = None
        self.paused = False
        self.lockout_until = {BUY: 0, SELL: 0}
        self.decision_interval = int(params.requote_interval * 1e9)
        self.next_decision = grid_start_ns  # decisions on a grid of data time from here (default: first event)
        self.next_sample = 0
        self.next_fit = 0
        self.peak_pnl = 0.0
        self.max_drawdown = 0.0
        self.counts = {"orders": 0, "cancels": 0, "rejects": 0, "kept": 0, "decisions": 0, "unsynced_spans": 0,
                       "pauses": 0}
        # decisions at which each constraint kept quotes away (fee_floor, min_spread, max_spread, hard_limit,
        # soft_limit, lockout, regime_pause, warming_up, kill_switch): the summary's "why few fills"
        self.held: dict[str, int] = {}
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

    # -- feeding ---------------------------------------------------------------------------------
    def on_event(self, event: ReplayEvent) -> None:
        kind = event.kind
        now = event.recv_ts
        if self.first_ts is None:
            self.first_ts = now
            if self.next_decision is None:
                self.next_decision = now
        self.last_ts = now
        if now >= self.next_decision and self.valid and self.mid is not None:
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
            self.book = book
            bid, ask = book.best_bid()[0], book.best_ask()[0]
            self.best = (bid, ask)
            mid = (bid + ask) / (2 * UNIT)
            if self.mid is not None and mid != self.mid:
                self.inventory_pnl += self.inventory / UNIT * (mid - self.mid)
            self.mid = mid
            self.vol.update(now, mid)
            self.fast_vol.update(now, mid)
            if self.orders:
                self._on_book(book)
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
                if self.orders:
                    self._on_trade(data["price"], data["qty"], data["buyer_is_maker"])
        elif kind is BOOK_INVALID:
            if self.valid:
                self.counts["unsynced_spans"] += 1
                self._unsynced_since = now
                self.log({"ts": now, "action": "stop", "reasons": ["book unsynced: cancel all, stop quoting"]})
            self.valid = False
            self._drop_all(now, "book unsynced")
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
        if self.mid is None or not self.valid:
            return
        if now >= self.next_sample:
            self._sample(now)
            self.next_sample = now + int(self.p.sample_interval * 1e9)
        if now >= self.next_fit:  # until a first fit succeeds, retry every second
            fitted = self._refit(now)
            self.next_fit = now + int((self.p.refit_interval if fitted or self.fits else 1.0) * 1e9)

    def _clock(self, exchange_ts: int) -> None:
        """Advance exchange time: orders arriving become live (or are rejected), cancels take effect."""
        self.exchange_now = max(self.exchange_now, exchange_ts)
        if not self.orders:
            return
        now = self.exchange_now
        if self.p.fill_model == "poisson" and self.mid is not None:
            self._poisson(now)
        for order in list(self.orders):
            if order.cancel_at is not None and order.cancel_at <= now:
                self._remove(order)
                continue
            if not order.active and order.live_at <= now and self.best is not None:
                self._activate(order)

    def _activate(self, order: SimOrder) -> None:
        bid, ask = self.best
        if (order.side == BUY and order.price >= ask) or (order.side == SELL and order.price <= bid):
            self.counts["rejects"] += 1
            known = self._local_time(order.live_at) + self._latency_ns(self.resp_const, self.resp_factor)
            self._remove(order, known)
            self.lockout_until[order.side] = max(self.lockout_until[order.side],
                                                 known + int(self.p.reject_lockout * 1e9))
            self.log({"ts": known, "action": "reject", "order": order.oid, "side": SIDE_NAME[order.side], "price": order.price,
                      "reasons": ["post-only order would have crossed the book on arrival",
                                  f"lockout {self.p.reject_lockout:g}s"]})
            return
        order.active = True
        levels = self.book.bids if order.side == BUY else self.book.asks
        order.level_qty = levels.get(order.price, 0)
        order.queue_ahead = float(order.level_qty)
        order.checked_at = self.exchange_now

    # -- fill models -----------------------------------------------------------------------------
    def _on_book(self, book) -> None:
        bid, ask = self.best
        queue = self.p.fill_model == "queue"
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
        n = self.p.queue_power
        fb, ff = max(back, 0.0) ** n, max(front, 0.0) ** n
        prob = fb / (fb + ff) if fb + ff > 0 else 1.0
        estimate = front - (1 - prob) * change + min(back - prob * change, 0.0)
        order.queue_ahead = min(estimate, float(new))

    def _on_trade(self, price: int, qty: int, buyer_is_maker: bool) -> None:
        model = self.p.fill_model
        for order in list(self.orders):
            if not order.active:
                continue
            hits = (order.side == BUY) == buyer_is_maker  # sell market orders hit bids
            if not hits:
                continue
            through = price < order.price if order.side == BUY else price > order.price
            if through:
                self._fill(order, order.qty, "trade printed through the quote")
            elif price == order.price and model == "queue":
                order.queue_ahead -= qty
                order.traded_at_level += qty
                if order.queue_ahead < 0:
                    filled = order.qty
                    if self.p.partial_fills:
                        filled = min(order.qty, int(-order.queue_ahead) // self.lot * self.lot)
                    if filled > 0:
                        order.queue_ahead = 0.0
                        self._fill(order, filled, "queue ahead traded away at our price")

    def _poisson(self, now: int) -> None:
        """Each live order: filled with probability A·e^(−kδ)·dt over the exchange time since its last check."""
        for order in list(self.orders):
            if not order.active:
                continue
            dt = (now - order.checked_at) / 1e9
            order.checked_at = now
            if dt <= 0:
                continue
            delta = abs(order.price / UNIT - self.mid)
            rate = self.A * math.exp(-self.k * delta)
            if rate > 0 and self.rng.random() < min(1.0, rate * dt):  # no rate (nan) before the first fit
                self._fill(order, order.qty, f"poisson fill at depth {delta:.6g}")

    # -- fills and accounting --------------------------------------------------------------------
    def _fill(self, order: SimOrder, qty: int, reason: str, liquidity: str = "maker", price: int | None = None) -> None:
        price = order.price if price is None else price
        side = order.side
        notional = price * qty / (UNIT * UNIT)
        fee = notional * (self.maker_fee if liquidity == "maker" else self.taker_fee)
        self._account(side, price, qty, fee)
        known = self._local_time(self.exchange_now) + self._latency_ns(self.resp_const, self.resp_factor)
        fill = Fill(self.exchange_now, known, side, price, qty, self.mid, fee, liquidity, self.inventory)
        self.fills.append(fill)
        self.pending_known.append(fill)
        order.qty -= qty
        if order.qty <= 0:
            self._remove(order, known)
        if self.p.fill_lockout > 0:
            self.lockout_until[side] = max(self.lockout_until[side], known + int(self.p.fill_lockout * 1e9))
        self.log({"ts": known, "exchange_ts": self.exchange_now, "action": "fill", "order": order.oid, "side": SIDE_NAME[side],
                  "price": price, "qty": qty, "liquidity": liquidity, "reasons": [reason]})

    def _account(self, side: int, price: int, qty: int, fee: float) -> None:
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
        self.spread_capture += side * (self.mid - px) * qty / UNIT

    def _learn_fills(self, now: int) -> None:
        """What the strategy knows by local time `now`: its fills, and which of its orders are gone."""
        while self.pending_known and self.pending_known[0].known_ts <= now:
            fill = self.pending_known.pop(0)
            self.known_inventory += fill.side * fill.qty
        if self.pending_gone:
            for entry in [e for e in self.pending_gone if e[0] <= now]:
                self.pending_gone.remove(entry)
                if self.quoted[entry[1].side] is entry[1]:
                    self.quoted[entry[1].side] = None

    def _remove(self, order: SimOrder, known: int | None = None) -> None:
        """Off the exchange; the strategy sees its quote gone at `known` (filled, rejected) or at once."""
        if order in self.orders:
            self.orders.remove(order)
        if known is not None:
            self.pending_gone.append((known, order))
        elif self.quoted[order.side] is order:
            self.quoted[order.side] = None

    def _drop_all(self, now: int, reason: str) -> None:
        for order in list(self.orders):
            self._remove(order)
            self.log({"ts": now, "action": "cancel", "order": order.oid, "side": SIDE_NAME[order.side], "price": order.price,
                      "reasons": [reason]})

    # -- quoting ---------------------------------------------------------------------------------
    def _exchange_time(self, local: int) -> int:
        """A local moment on the exchange clock. Local and exchange clocks differ by skew, so the fastest
        delivery seen (min recv − exchange time) is taken as zero latency, as hftbacktest's converter does."""
        return local - (self.clock_offset or 0)

    def _local_time(self, exchange: int) -> int:
        return exchange + (self.clock_offset or 0)

    def _latency_ns(self, const: float, factor: float) -> int:
        return int(const * 1e9 + factor * self.feed_latency_ns)

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
        return self.cash / (UNIT * UNIT) + self.inventory / UNIT * (self.mid or 0.0) - self.fees

    def _decide(self, now: int) -> None:
        self.counts["decisions"] += 1
        if self.killed or self._check_kill(now):
            self._held("kill_switch")
            return
        if self.warming_up:
            waiting = [name for name, missing in (
                ("σ", self.p.sigma == AUTO and self.vol.sigma is None),
                ("A, k", (self.p.A == AUTO or self.p.k == AUTO) and not self.fits)) if missing]
            if waiting:
                self._held("warming_up")
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
                self._held("regime_pause")
                self._cancel_side(BUY, now, ["regime pause"])
                self._cancel_side(SELL, now, ["regime pause"])
                return
        bid_px, ask_px = self.best
        q = self.known_inventory / self.size
        state = MarketState(ts=now, mid=self.mid, best_bid=bid_px / UNIT, best_ask=ask_px / UNIT,
                            tick=self.tick / UNIT, q=q, sigma=self.sigma(), A=self.A, k=self.k,
                            time_left=max(0.0, (self.horizon_ns - now) / 1e9))
        try:
            quote = self.strategy.quote(state)
        except Exception as exc:
            raise StrategyError(f"strategy {self.p.strategy!r} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(quote, Quote) or not all(v is None or (isinstance(v, int | float) and math.isfinite(v))
                                                   for v in (quote.bid, quote.ask)):
            raise StrategyError(f"strategy {self.p.strategy!r} returned {quote!r}; expected Quote(bid, ask) "
                                f"with finite prices or None")
        if quote.bid is not None and quote.ask is not None:
            self.strategy_half_sum += (quote.ask - quote.bid) / 2
            self.touch_half_sum += (state.best_ask - state.best_bid) / 2
            self.two_sided += 1
        for side, price, size, reasons in self._practical(quote, state, q):
            self._work_side(side, price, size, now, reasons)

    def _held(self, constraint: str) -> None:
        self.held[constraint] = self.held.get(constraint, 0) + 1

    def _practical(self, quote: Quote, state: MarketState, q: float) -> list[tuple]:
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
                self._held("fee_floor" if floor > p.min_spread else "min_spread")
                spread = floor
                why[BUY].append(f"widened to min spread {floor:.6g}")
                why[SELL].append(f"widened to min spread {floor:.6g}")
            if p.max_spread is not None and spread > p.max_spread:
                self._held("max_spread")
                spread = p.max_spread
                why[BUY].append(f"narrowed to max spread {p.max_spread:g}")
                why[SELL].append(f"narrowed to max spread {p.max_spread:g}")
            bid, ask = center - spread / 2, center + spread / 2
        best_bid, best_ask = self.best
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
                self._held("hard_limit")
                out.append((side, None, 0, [*reasons, f"|q| {abs(q):g} at hard limit {p.hard_limit:g}: one-sided"]))
                continue
            if growing and abs(q) > p.soft_limit:
                scale = (p.hard_limit - abs(q)) / (p.hard_limit - p.soft_limit) if p.hard_limit > p.soft_limit else 0
                size = int(self.size * scale) // self.lot * self.lot
                reasons.append(f"|q| {abs(q):g} above soft limit {p.soft_limit:g}: size x{scale:.2f}")
                if size <= 0:
                    self._held("soft_limit")
                    out.append((side, None, 0, reasons))
                    continue
            if state.ts < self.lockout_until[side]:
                self._held("lockout")
                out.append((side, None, 0, [*reasons, "lockout after a fill or reject"]))
                continue
            if units <= 0:
                out.append((side, None, 0, [*reasons, "price not positive"]))
                continue
            out.append((side, units, size, reasons))
        return out

    def _work_side(self, side: int, price: int | None, size: int, now: int, reasons: list[str]) -> None:
        current = self.quoted[side]
        if price is None:
            self._cancel_side(side, now, reasons)
            return
        if current is not None:
            band = self.p.tolerance_ticks * self.tick
            if abs(current.price - price) <= band and current.size == size:
                self.counts["kept"] += 1
                return
            self._cancel_side(side, now, [*reasons, f"requote to {price / UNIT:.10g}"])
        entry = self._latency_ns(self.entry_const, self.entry_factor)
        sent_exchange = self._exchange_time(now)
        order = SimOrder(self.next_oid, side, price, size, sent_exchange + entry, size=size)
        self.next_oid += 1
        self.orders.append(order)
        self.quoted[side] = order
        self.counts["orders"] += 1
        self.log({"ts": now, "action": "place", "order": order.oid, "side": SIDE_NAME[side], "price": price, "qty": size,
                  "reasons": reasons})

    def _cancel_side(self, side: int, now: int, reasons: list[str]) -> None:
        current = self.quoted[side]
        if current is None:
            return
        self.quoted[side] = None
        current.cancel_at = self._exchange_time(now) + self._latency_ns(self.entry_const, self.entry_factor)
        self.counts["cancels"] += 1
        self.log({"ts": now, "action": "cancel", "order": current.oid, "side": SIDE_NAME[side], "price": current.price,
                  "reasons": reasons})

    def _check_kill(self, now: int) -> bool:
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
        self._cancel_side(BUY, now, ["kill switch: " + reason])
        self._cancel_side(SELL, now, ["kill switch: " + reason])
        self.log({"ts": now, "action": "kill", "reasons": [reason]})
        if self.p.flatten_on_kill and self.inventory:
            self._flatten(now)
        return True

    def _flatten(self, now: int) -> None:
        """Close the inventory against the displayed book as a taker (walking levels)."""
        side = SELL if self.inventory > 0 else BUY
        bids, asks = self.book.export()
        levels = bids if side == SELL else asks
        left = abs(self.inventory)
        for price, qty in levels:
            if left <= 0:
                break
            take = min(left, qty)
            order = SimOrder(0, side, price, take, self.exchange_now, active=True)
            self._fill(order, take, "flatten on kill", liquidity="taker")
            left -= take

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
        s.spread_capture.append(self.spread_capture)
        s.inventory_pnl.append(self.inventory_pnl)
        s.fees.append(-self.fees)

    def finish(self) -> None:
        """Close the books at the last data time: a final sample; open orders are left unfilled."""
        if self._unsynced_since is not None and self.last_ts is not None:
            self.unsynced_ns += self.last_ts - self._unsynced_since
            self._unsynced_since = None
        if self.last_ts is not None and self.mid is not None:
            self._learn_fills(self.last_ts)
            self._sample(self.last_ts)
