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
        "fit": whole.as_dict() if whole else None,
        "rolling": {
            "fits": len(rolling_fits),
            "A_median": float(np.median([f.A for f in rolling_fits])) if rolling_fits else None,
            "k_median": float(np.median([f.k for f in rolling_fits])) if rolling_fits else None,
            "r2_median": float(np.median([f.r2 for f in rolling_fits])) if rolling_fits else None,
        },
    }
