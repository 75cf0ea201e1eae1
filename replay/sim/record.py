"""The plain result of one simulated (day, symbol): what results.py and report.py read.

Both engines produce it: the event-driven reference `Simulator` (`from_simulator`) and the numba kernel.
Prices and quantities in `fills` are integers in 1e-8 units; cash in 1e-16 quote units; series are floats
in price / base units as the reports show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from replay.sim.accounting import mark_to_market
from replay.sim.params import SimParams

FILL_COLUMNS = ("exchange_ts", "known_ts", "side", "price", "qty", "mid", "fee", "maker", "inventory")
SERIES_COLUMNS = ("ts", "mid", "bid", "ask", "inventory", "pnl", "spread_capture", "inventory_pnl", "fees")


@dataclass
class SimResult:
    symbol: str
    params: SimParams
    tick: int  # 1e-8 units
    lot: int
    size: int  # order size, 1e-8 units
    maker_fee: float
    taker_fee: float
    fills: dict[str, np.ndarray]  # FILL_COLUMNS; side +1/−1, maker bool, inventory after the fill (1e-8 units)
    series: dict[str, np.ndarray]  # SERIES_COLUMNS
    counts: dict[str, int]  # orders, cancels, rejects, kept, decisions, unsynced_spans, pauses
    held: dict[str, int]  # decisions each constraint kept quotes away
    fits: list[dict]  # every A, k fit: ts, A, k, r2, trades
    inventory: int  # 1e-8 base units, final
    cash: int  # 1e-16 quote units
    fees: float
    spread_capture: float
    inventory_pnl: float
    realized: float
    avg_cost: float
    mid: float | None  # last mid
    killed: str | None
    first_ts: int | None
    last_ts: int | None
    unsynced_ns: int
    strategy_half_sum: float
    touch_half_sum: float
    two_sided: int
    market_volume: int  # 1e-8 base units
    hourly_market_volume: dict[int, int]  # hour since the epoch -> 1e-8 base units
    time_at_soft: float
    time_at_hard: float
    abs_q_time: float
    sampled_time: float
    max_drawdown: float
    clock_offset: int | None
    feed_samples: np.ndarray  # recv − exchange time of every depth message with one (ns)
    feed_latency_ns: float
    entry_latency: tuple[float, float]  # (constant s, × feed latency)
    response_latency: tuple[float, float]
    A: float  # last estimate (nan: none)
    k: float
    sigma: float  # last σ used
    warmed_up: bool
    extra: dict = field(default_factory=dict)

    def pnl(self) -> float:
        return mark_to_market(self.cash, self.inventory, self.mid, self.fees)


def from_simulator(sim) -> SimResult:  # type: ignore[no-untyped-def]
    """The record of a finished reference `Simulator`."""
    books = sim.accounts
    f = books.fills
    fills = {
        "exchange_ts": np.array([x.exchange_ts for x in f], dtype=np.int64),
        "known_ts": np.array([x.known_ts for x in f], dtype=np.int64),
        "side": np.array([x.side for x in f], dtype=np.int8),
        "price": np.array([x.price for x in f], dtype=np.int64),
        "qty": np.array([x.qty for x in f], dtype=np.int64),
        "mid": np.array([x.mid for x in f], dtype=np.float64),
        "fee": np.array([x.fee for x in f], dtype=np.float64),
        "maker": np.array([x.liquidity == "maker" for x in f], dtype=bool),
        "inventory": np.array([x.inventory for x in f], dtype=np.int64),
    }
    s = sim.series
    series = {name: np.array(getattr(s, name), dtype=np.int64 if name == "ts" else np.float64)
              for name in SERIES_COLUMNS}
    return SimResult(
        symbol=sim.symbol, params=sim.p, tick=sim.tick, lot=sim.lot, size=sim.size, maker_fee=sim.maker_fee,
        taker_fee=sim.taker_fee, fills=fills, series=series, counts=dict(sim.counts), held=dict(sim.rules.held),
        fits=list(sim.fits), inventory=books.inventory, cash=books.cash, fees=books.fees,
        spread_capture=books.spread_capture, inventory_pnl=books.inventory_pnl, realized=books.realized,
        avg_cost=books.avg_cost, mid=sim.mid, killed=sim.killed, first_ts=sim.first_ts, last_ts=sim.last_ts,
        unsynced_ns=sim.unsynced_ns, strategy_half_sum=sim.strategy_half_sum, touch_half_sum=sim.touch_half_sum,
        two_sided=sim.two_sided, market_volume=sim.market_volume,
        hourly_market_volume=dict(sim.hourly_market_volume), time_at_soft=sim.time_at_soft,
        time_at_hard=sim.time_at_hard, abs_q_time=sim.abs_q_time, sampled_time=sim.sampled_time,
        max_drawdown=sim.max_drawdown, clock_offset=sim.clock_offset,
        feed_samples=np.array(sim.feed_samples, dtype=np.int64), feed_latency_ns=sim.feed_latency_ns,
        entry_latency=(sim.entry_const, sim.entry_factor), response_latency=(sim.resp_const, sim.resp_factor),
        A=sim.A, k=sim.k, sigma=sim.sigma(), warmed_up=not sim.warming_up,
    )
