"""Model parameters from the data: σ from mid changes, A and k from where trades print relative to the mid.

σ: EWMA of squared mid changes sampled every `step` seconds of data time, divided by the step, so σ is
in price per √second. A, k: over a rolling window of trades, δ = how far each trade printed from the
mid just before it (on the side it hit); λ(δ) = trades per second that reached depth ≥ δ, i.e. would have
filled a quote at δ; least-squares fit of log λ(δ) = log A − k·δ on a grid of depths. The same
estimators run inside the simulator (re-fit every `refit_interval`) and in `replay calibrate`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

GRID_POINTS = 12
MIN_TRADES = 20


class VolatilityEstimator:
    """σ (price/√s) as an EWMA of squared mid changes over fixed steps of data time."""

    def __init__(self, halflife_s: float, step_s: float = 1.0) -> None:
        self.step_ns = int(step_s * 1e9)
        self.step_s = step_s
        self.alpha = 1.0 - 0.5 ** (step_s / halflife_s)
        self.variance: float | None = None  # per second
        self.samples = 0
        self._next_ns: int | None = None
        self._last_mid: float | None = None
        self._sum = self._weight = 0.0

    def update(self, ts: int, mid: float) -> None:
        if self._next_ns is None:
            self._next_ns, self._last_mid = ts + self.step_ns, mid
            return
        if ts < self._next_ns:
            return
        steps = (ts - self._next_ns) // self.step_ns + 1  # several empty steps: one change spread over them
        change = mid - self._last_mid
        per_second = change * change / (self.step_s * steps)
        decay = (1.0 - self.alpha) ** steps
        # bias-corrected EWMA (weights normalised), so early estimates are plain averages, not the first value
        self._sum = decay * self._sum + per_second
        self._weight = decay * self._weight + 1.0
        self.variance = self._sum / self._weight
        self.samples += 1
        self._next_ns += steps * self.step_ns
        self._last_mid = mid

    @property
    def sigma(self) -> float | None:
        return None if self.variance is None else math.sqrt(self.variance)


@dataclass(frozen=True)
class IntensityFit:
    A: float  # trades/s reaching the mid (δ = 0)
    k: float  # 1/price
    r2: float
    trades: int
    window_s: float
    depths: tuple[float, ...]
    rates: tuple[float, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def fit_intensity(deltas: np.ndarray, window_s: float, tick: float) -> IntensityFit | None:
    """Least-squares fit of log λ(δ) = log A − kδ; None when there are too few trades or no decay."""
    deltas = np.asarray(deltas, dtype=float)
    if len(deltas) < MIN_TRADES or window_s <= 0:
        return None
    top = float(np.quantile(deltas, 0.95))
    if top <= 0:
        return None
    step = max(tick, top / (GRID_POINTS - 1))
    depths = np.arange(0.0, top + step / 2, step)
    ordered = np.sort(deltas)
    counts = len(ordered) - np.searchsorted(ordered, depths, side="left")  # trades with δ >= depth
    keep = counts > 0
    depths, rates = depths[keep], counts[keep] / window_s
    if len(depths) < 3:
        return None
    slope, intercept = np.polyfit(depths, np.log(rates), 1)
    if not slope < 0:
        return None
    fitted = intercept + slope * depths
    residual = np.log(rates) - fitted
    total = np.log(rates) - np.log(rates).mean()
    r2 = 1.0 - float(residual @ residual) / float(total @ total) if float(total @ total) > 0 else 1.0
    return IntensityFit(A=float(math.exp(intercept)), k=float(-slope), r2=r2, trades=len(deltas),
                        window_s=window_s, depths=tuple(float(d) for d in depths),
                        rates=tuple(float(r) for r in rates))


class IntensityEstimator:
    """Rolling window of trade depths δ (distance from the mid on the side the trade hit)."""

    def __init__(self, window_s: float, tick: float) -> None:
        self.window_ns = int(window_s * 1e9)
        self.window_s = window_s
        self.tick = tick
        self.trades: deque[tuple[int, float]] = deque()
        self.first_ts: int | None = None

    def add(self, ts: int, price: float, buyer_is_maker: bool, mid: float) -> None:
        """A trade: a buyer-maker trade is a sell market order hitting bids (δ = mid − price)."""
        delta = mid - price if buyer_is_maker else price - mid
        self.trades.append((ts, max(0.0, delta)))
        if self.first_ts is None:
            self.first_ts = ts

    def fit(self, now: int) -> IntensityFit | None:
        trades = self.trades
        while trades and trades[0][0] < now - self.window_ns:
            trades.popleft()
        if self.first_ts is None:
            return None
        span = min(self.window_s, (now - self.first_ts) / 1e9)
        return fit_intensity(np.fromiter((d for _, d in trades), float, len(trades)), span, self.tick)


def mid_of(book) -> tuple[float, float, float] | None:
    """(best bid, best ask, mid) of a valid book in price units (floats), None when a side is empty."""
    best_bid, best_ask = book.best_bid(), book.best_ask()
    if best_bid is None or best_ask is None:
        return None
    bid, ask = best_bid[0] / 1e8, best_ask[0] / 1e8
    return bid, ask, (bid + ask) / 2


def calibrate_events(events: Iterator, symbol: str, tick: float, halflife_s: float = 300.0,
                     window_s: float = 600.0, refit_s: float = 60.0) -> dict:
    """σ, A and k for one symbol over a replayed span: the whole-span fit and the rolling re-fits."""
    from replay.engine import BOOK_INVALID, DEPTH, SNAPSHOT, TRADE

    vol = VolatilityEstimator(halflife_s)
    rolling = IntensityEstimator(window_s, tick)
    every: list[float] = []
    first = last = None
    mids_1s: list[float] = []
    next_sample = None
    top = None
    rolling_fits: list[IntensityFit] = []
    next_fit = None
    for event in events:
        if event.symbol != symbol:
            continue
        ts = event.recv_ts
        if event.kind is DEPTH or event.kind is SNAPSHOT:
            top = mid_of(event.book) if event.book is not None else None
            if top is None:
                continue
            vol.update(ts, top[2])
            first = ts if first is None else first
            last = ts
            if next_sample is None or ts >= next_sample:
                mids_1s.append(top[2])
                next_sample = ts + 1_000_000_000
        elif event.kind is BOOK_INVALID:
            top = None
        elif event.kind is TRADE and top is not None:
            price = event.data["price"] / 1e8
            rolling.add(ts, price, event.data["buyer_is_maker"], top[2])
            every.append(rolling.trades[-1][1])
            if next_fit is None:
                next_fit = ts + int(refit_s * 1e9)
            elif ts >= next_fit:
                fit = rolling.fit(ts)
                if fit is not None:
                    rolling_fits.append(fit)
                next_fit = ts + int(refit_s * 1e9)
    span_s = 0.0 if first is None else (last - first) / 1e9
    changes = np.diff(np.array(mids_1s)) if len(mids_1s) > 1 else np.array([])
    whole = fit_intensity(np.array(every), span_s, tick) if span_s > 0 else None
    return {
        "symbol": symbol,
        "span_s": span_s,
        "sigma": float(changes.std()) if len(changes) > 1 else None,  # 1-s changes: price/√s
        "sigma_ewma_end": vol.sigma,
        "trades": len(every),
        "mid": float(np.median(mids_1s)) if mids_1s else None,
        "first_ns": first,
        "last_ns": last,
        "fit": whole.as_dict() if whole else None,
        "rolling": {
            "fits": len(rolling_fits),
            "A_median": float(np.median([f.A for f in rolling_fits])) if rolling_fits else None,
            "k_median": float(np.median([f.k for f in rolling_fits])) if rolling_fits else None,
            "r2_median": float(np.median([f.r2 for f in rolling_fits])) if rolling_fits else None,
        },
    }


# ---- strategy parameters ------------------------------------------------------------------------------

GAMMA_GRID = np.logspace(-9, 3, 2401)  # candidate γ (and ξ = γ for GLFT), 1/(price × order size)


def _as_quote_shape(gamma: float, sigma: float, k: float, tau: float) -> tuple[float, float] | None:
    """A–S (half-spread, reservation shift per order size of inventory) at time-to-horizon tau."""
    var = sigma * sigma * tau
    return (gamma * var + (2.0 / gamma) * math.log1p(gamma / k)) / 2, gamma * var


def _glft_quote_shape(gamma: float, sigma: float, k: float, A: float) -> tuple[float, float] | None:
    """GLFT (half-spread, skew per order size): c1 + σ·c2/2 and σ·c2, with ξ = γ."""
    try:
        c1 = math.log1p(gamma / k) / gamma
        c2 = math.sqrt(gamma / (2 * A * k) * (1 + gamma / k) ** (k / gamma + 1))
    except OverflowError:
        return None
    return c1 + 0.5 * sigma * c2, sigma * c2


def propose_strategy(strategy: str, *, sigma: float, A: float, k: float, tick: float, mid: float,
                     mean_time_left: float, soft_limit: float, maker_fee: float,
                     target_ticks: float | None = None, currency: str = "price") -> dict:
    """γ (ξ = γ for GLFT) for a day: the inventory skew at the soft limit equals the target half-spread, so a
    full position moves the growing side's quote out by one half-spread and the reducing side's to the mid.

    The target (in ticks) defaults to the smallest half-spread the model quotes with the fitted k (≈ 1/k:
    closer than that the fitted intensity says fills would be too frequent to price). Returns the proposed
    parameters and the reasoning as sentences, prices in the quote currency.
    """
    if strategy not in ("as", "glft"):
        raise ValueError(f"calibrate proposes γ for the model strategies as and glft, not {strategy!r}")

    def shape(gamma: float) -> tuple[float, float] | None:
        if strategy == "as":
            return _as_quote_shape(gamma, sigma, k, mean_time_left)
        return _glft_quote_shape(gamma, sigma, k, A)

    shapes = [(g, s) for g in GAMMA_GRID if (s := shape(float(g))) is not None and all(map(math.isfinite, s))]
    if not shapes:
        raise ValueError("no γ gives finite quotes for these σ, A, k")
    floor_half = min(s[0] for _, s in shapes)
    target = target_ticks * tick if target_ticks is not None else floor_half
    gamma, (half, skew) = min(shapes, key=lambda gs: abs(math.log(max(gs[1][1], 1e-300) * soft_limit / target)))
    name = "A–S" if strategy == "as" else "GLFT"
    why = [(f"σ {sigma:.4g} per √s, A {A:.4g} trades/s, k {k:.4g} per price unit (fitted); tick {tick:g}, "
            f"mid ≈ {mid:,.2f}")]
    if strategy == "as":
        why.append(f"A–S spread = γσ²(T−t) + (2/γ)ln(1+γ/k), taken at the span's mean time to the horizon "
                   f"T−t = {mean_time_left:,.0f} s")
    else:
        why.append("GLFT (ξ = γ): half-spread c1 + σc2/2, skew σc2 per order size of inventory")
    why.append(f"target half-spread {target:.6g} ({target / tick:.1f} ticks"
               f"{', the smallest the model quotes with this k' if target_ticks is None else ', set by --target-half-spread'})")
    why.append(f"γ = {gamma:.4g} per ({currency} × order size) puts the skew at the soft limit ({soft_limit:g} order sizes) "
               f"at {skew * soft_limit:.6g}; {name} then quotes ±{half:.6g} ({half / tick:.1f} ticks) from its "
               f"reservation price")
    if target < floor_half * 0.999:
        why.append(f"the model cannot quote closer than ±{floor_half:.6g} ({floor_half / tick:.1f} ticks) with k "
                   f"{k:.4g}: for tighter quotes use strategy fixed (half_spread) or join")
    fee_half = maker_fee * mid
    fee_aware = True
    if maker_fee > 0 and fee_half > half:
        fee_aware = False
        why.append(f"the fee-aware minimum (maker fee {maker_fee:.4%} × mid ≈ ±{fee_half:.6g}, {fee_half / tick:.0f} "
                   f"ticks) is wider than these quotes and would keep them from filling: the config sets "
                   f"fee_aware: false (each round trip then pays ≈ {2 * fee_half:.6g} in fees; set maker_fee to your "
                   f"fee tier, e.g. -0.00005 for a rebate, and fee_aware: true to see the cost)")
    return {"strategy": strategy, "gamma": float(gamma), "half_spread": half, "skew_at_soft_limit": skew * soft_limit,
            "target_half_spread": target, "fee_aware": fee_aware, "reasoning": why}


# ---- many days: the calibration table -----------------------------------------------------------------

TABLE_COLUMNS = (("date", "string"), ("symbol", "string"), ("seconds", "float64"), ("trades", "int64"),
                 ("sigma", "float64"), ("A", "float64"), ("k", "float64"), ("r2", "float64"), ("fits", "int64"),
                 ("A_median", "float64"), ("k_median", "float64"), ("r2_median", "float64"),
                 ("sigma_ewma_end", "float64"), ("mid", "float64"))


def table_row(date: str, result: dict) -> dict:
    """One (day, symbol) row of the calibration table from `calibrate_events`; None where a fit failed."""
    fit = result["fit"] or {}
    rolling = result["rolling"]
    return {"date": date, "symbol": result["symbol"], "seconds": result["span_s"], "trades": result["trades"],
            "sigma": result["sigma"], "A": fit.get("A"), "k": fit.get("k"), "r2": fit.get("r2"),
            "fits": rolling["fits"], "A_median": rolling["A_median"], "k_median": rolling["k_median"],
            "r2_median": rolling["r2_median"], "sigma_ewma_end": result["sigma_ewma_end"], "mid": result["mid"]}


def write_table(rows: list[dict], path) -> None:  # type: ignore[no-untyped-def]
    """The rows as Parquet with fixed column types, so an all-null column (no fit on any day) keeps its type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in TABLE_COLUMNS])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def day_tick(root, market, day, symbol: str) -> float:  # type: ignore[no-untyped-def]
    """The symbol's tick size that day: the instruments table, else the finest step its prices use."""
    from recorder.numbers import SCALE
    from recorder.rebuild import sampled_decimals
    from recorder.validate import instrument_steps

    tick, _ = instrument_steps(root, market.exchange, day, symbol)
    if tick is None:
        tick = 10 ** (SCALE - sampled_decimals(root, market.exchange, day, symbol)[0])
    return tick / 10**SCALE


def calibrate_day(root, market, day, symbol: str, halflife_s: float = 300.0,  # type: ignore[no-untyped-def]
                  window_s: float = 600.0, start_ns: int | None = None, end_ns: int | None = None) -> dict:
    """`calibrate_events` over one symbol's recorded day (or its span start_ns..end_ns)."""
    from replay.engine import TRADE, DayReplay

    replay = DayReplay(root, market, day, [symbol], start_ns, end_ns, channels=(TRADE,))
    return calibrate_events(replay.events(), symbol, day_tick(root, market, day, symbol), halflife_s, window_s)
