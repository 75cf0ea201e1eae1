"""Backtest figures from a finished `Simulator`: PnL and its attribution, fills, inventory, risk, per hour.

Attribution: total PnL = spread capture (each fill's edge against the mid at the fill) + inventory
mark-to-market (inventory × every mid change) + fees (negative = paid, positive = rebate). Realized
(average-cost) + unrealized + fees is the same total, computed the other way. Sharpe: mean / std of
1-minute PnL changes (data time), annualised by √(365·24·60) since crypto trades around the clock.
"""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

import numpy as np

from recorder.markets import quote_currency
from replay.sim.engine import BUY, UNIT, Simulator

BERLIN = ZoneInfo("Europe/Berlin")
MINUTES_PER_YEAR = 365 * 24 * 60


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def sharpe(ts: np.ndarray, pnl: np.ndarray) -> dict:
    """Sharpe of 1-minute PnL changes (the PnL curve sampled on a 1-minute grid of data time)."""
    if len(ts) < 2:
        return {"per_minute": None, "annualised": None, "minutes": 0}
    grid = np.arange(ts[0], ts[-1] + 1, 60 * 1_000_000_000)
    at = np.searchsorted(ts, grid, side="right") - 1
    changes = np.diff(pnl[at])
    if len(changes) < 2 or changes.std() == 0:
        return {"per_minute": None, "annualised": None, "minutes": len(changes)}
    per_minute = float(changes.mean() / changes.std(ddof=1))
    return {"per_minute": per_minute, "annualised": per_minute * math.sqrt(MINUTES_PER_YEAR),
            "minutes": len(changes)}


def summarize(sim: Simulator, stopped: str | None = None) -> dict:
    s = sim.series
    ts = np.array(s.ts, dtype=np.int64)
    pnl = np.array(s.pnl)
    fills = sim.fills
    filled = sum(f.qty for f in fills)
    mid = sim.mid or 0.0
    unrealized = sim.inventory / UNIT * (mid - sim.avg_cost) if sim.inventory else 0.0
    total = sim.pnl()
    feed = (np.array(sim.feed_samples, dtype=np.int64) - (sim.clock_offset or 0)) / 1e6
    hours: dict[int, dict] = {}
    for i, t in enumerate(s.ts):
        hour = t // 3_600_000_000_000
        row = hours.setdefault(hour, {"first": i, "last": i, "fills": 0, "volume": 0})
        row["last"] = i
    for f in fills:
        hour = f.exchange_ts // 3_600_000_000_000
        if hour in hours:
            hours[hour]["fills"] += 1
            hours[hour]["volume"] += f.qty
    per_hour = []
    previous_pnl = 0.0
    for hour in sorted(hours):
        row = hours[hour]
        end_pnl = s.pnl[row["last"]]
        inv = np.abs(np.array(s.inventory[row["first"]:row["last"] + 1]))
        market = sim.hourly_market_volume.get(hour, 0)
        per_hour.append({
            "hour": dt.datetime.fromtimestamp(hour * 3600, BERLIN).strftime("%H:00"),
            "pnl": end_pnl - previous_pnl,
            "fills": row["fills"],
            "volume": row["volume"] / UNIT,
            "market_volume": market / UNIT,
            "share": row["volume"] / market if market else 0.0,
            "mean_abs_inventory": float(inv.mean()) if len(inv) else 0.0,
        })
        previous_pnl = end_pnl
    mids = np.array(s.mid)
    with np.errstate(invalid="ignore"):
        bid_distance = mids - np.array(s.bid)
        ask_distance = np.array(s.ask) - mids
    span = sim.sampled_time
    return {
        "symbol": sim.symbol,
        "currency": quote_currency(sim.symbol),  # prices, spreads and PnL are in it
        "strategy": sim.p.strategy,
        "fill_model": sim.p.fill_model,
        "stopped": stopped or sim.killed,
        "start_ns": sim.first_ts,
        "end_ns": sim.last_ts,
        "span_s": (sim.last_ts - sim.first_ts) / 1e9 if sim.first_ts is not None else 0.0,
        "order_size": sim.size / UNIT,
        "tick": sim.tick / UNIT,
        "pnl": {
            "total": total,
            "realized": sim.realized,
            "unrealized": unrealized,
            "fees": -sim.fees,
            "spread_capture": sim.spread_capture,
            "inventory": sim.inventory_pnl,
        },
        "fills": {
            "count": len(fills),
            "buys": sum(1 for f in fills if f.side == BUY),
            "sells": sum(1 for f in fills if f.side != BUY),
            "volume": filled / UNIT,
            "orders": sim.counts["orders"],
            "fill_ratio": len(fills) / sim.counts["orders"] if sim.counts["orders"] else 0.0,
            "market_volume": sim.market_volume / UNIT,
            "market_share": filled / sim.market_volume if sim.market_volume else 0.0,
        },
        "orders": dict(sim.counts),
        "inventory": {
            "final": sim.inventory / UNIT,
            "mean_abs_q": sim.abs_q_time / span if span else 0.0,
            "max_abs": float(np.abs(np.array(s.inventory)).max()) if s.inventory else 0.0,
            "time_above_soft": sim.time_at_soft / span if span else 0.0,
            "time_at_hard": sim.time_at_hard / span if span else 0.0,
        },
        "quotes": {  # mean distance of our live quotes from the mid over the samples that had one
            "bid_distance": float(np.nanmean(bid_distance)) if np.isfinite(bid_distance).any() else None,
            "ask_distance": float(np.nanmean(ask_distance)) if np.isfinite(ask_distance).any() else None,
            "bid_time": float(np.isfinite(bid_distance).mean()) if len(bid_distance) else 0.0,
            "ask_time": float(np.isfinite(ask_distance).mean()) if len(ask_distance) else 0.0,
        },
        "risk": {"max_drawdown": sim.max_drawdown, "sharpe": sharpe(ts, pnl)},
        "model": {
            "sigma_end": sim.sigma(),
            "A_end": None if math.isnan(sim.A) else sim.A,
            "k_end": None if math.isnan(sim.k) else sim.k,
            "fits": len(sim.fits),
            "warmed_up": not sim.warming_up,  # False: σ or A, k never had an estimate, nothing was quoted
            "fits_first": sim.fits[:3],
            "fits_last": sim.fits[-3:],
        },
        "latency_ms": {
            "clock_offset": (sim.clock_offset or 0) / 1e6,  # min(recv − exchange time): skew + fastest delivery
            "feed_p50": _pct(feed, 50),  # recv − exchange time − clock_offset
            "feed_p99": _pct(feed, 99),
            "entry": sim.entry_const * 1000 + sim.entry_factor * sim.feed_latency_ns / 1e6,
            "response": sim.resp_const * 1000 + sim.resp_factor * sim.feed_latency_ns / 1e6,
        },
        "per_hour": per_hour,
        "constraints": constraint_shares(sim),
    }


SIDE_CONSTRAINTS = ("hard_limit", "soft_limit", "lockout")  # held per side; the rest per decision
FEW_FILLS = 20  # below this many fills the summary says why


def constraint_shares(sim: Simulator) -> dict:
    """Share of the simulated data time each constraint kept quotes away (per side for the inventory limits and
    lockouts), the unsynced share, and the strategy's own half-spread against the market's."""
    span = (sim.last_ts - sim.first_ts) / 1e9 if sim.first_ts is not None else 0.0
    interval = sim.p.requote_interval
    shares = {name: min(1.0, n * interval / (span * (2 if name in SIDE_CONSTRAINTS else 1))) if span else 0.0
              for name, n in sorted(sim.held.items())}
    return {
        "share_of_time": shares,
        "unsynced": sim.unsynced_ns / 1e9 / span if span else 0.0,
        "strategy_half_spread": sim.strategy_half_sum / sim.two_sided if sim.two_sided else None,
        "touch_half_spread": sim.touch_half_sum / sim.two_sided if sim.two_sided else None,
        "maker_fee": sim.maker_fee,
        "gamma": sim.p.gamma,
    }


_ADVICE = {
    "fee_floor": ("the fee-aware minimum spread (2 × maker fee × mid) widened the quotes",
                  "set maker_fee to your fee tier (e.g. -0.00005 for a rebate) or fee_aware: false"),
    "min_spread": ("min_spread widened the quotes", "lower min_spread"),
    "max_spread": ("max_spread narrowed the quotes", "raise max_spread"),
    "hard_limit": ("the inventory hard limit left one side unquoted", "raise hard_limit or a larger γ to skew back"),
    "soft_limit": ("the soft limit shrank the growing side to nothing", "raise soft_limit/hard_limit"),
    "lockout": ("lockouts after fills or post-only rejects kept a side unquoted", "lower fill_lockout/reject_lockout"),
    "regime_pause": ("the regime pause (fast/slow σ) cancelled the quotes", "raise pause_vol_ratio or unset it"),
    "warming_up": ("σ or A, k had no estimate yet, so the model did not quote",
                   "set sigma, A, k (replay calibrate --write) or use a longer span"),
    "kill_switch": ("the kill switch stopped quoting", "raise max_loss/max_drawdown"),
}


def why_few_fills(summary: dict) -> list[str]:
    """Sentences saying what kept the quotes away when a run has few or no fills (empty otherwise)."""
    fills = summary["fills"]["count"]
    c = summary.get("constraints")
    if fills >= FEW_FILLS or not c:
        return []
    currency = summary.get("currency") or "quote currency"
    tick = summary["tick"] or 1.0
    lines = [f"{fills} fill(s): what kept the quotes away"]
    for name, share in sorted(c["share_of_time"].items(), key=lambda kv: -kv[1]):
        if share >= 0.01 and name in _ADVICE:
            what, change = _ADVICE[name]
            lines.append(f"{what} {share:.0%} of the time: {change}")
    if c["unsynced"] >= 0.01:
        lines.append(f"the book was unsynced {c['unsynced']:.0%} of the time (no quotes then): see recorder validate")
    own, touch = c["strategy_half_spread"], c["touch_half_spread"]
    if own is not None and touch is not None and own > 3 * max(touch, tick):
        lines.append(f"the strategy itself quoted ±{own:.6g} {currency} ({own / tick:,.0f} ticks) from its centre "
                     f"while the market's half-spread was {touch:.6g} ({touch / tick:.1f} ticks): with γ "
                     f"{c['gamma']:g} per ({currency} × order size) the model is too wide for the day; run "
                     f"`replay calibrate --write sim.yaml` (optionally --target-half-spread TICKS) and --config sim.yaml")
    quotes = summary["quotes"]
    if quotes["bid_time"] < 0.5 and quotes["ask_time"] < 0.5 and len(lines) == 1:
        lines.append(f"quotes were live only {quotes['bid_time']:.0%} (bid) / {quotes['ask_time']:.0%} (ask) of the "
                     f"time; the decision log says why for each order")
    if len(lines) == 1:
        lines.append("quotes were live and near the market, but no trade reached them in this span: a longer span, "
                     "a closer target half-spread, or --fill-model cross/poisson")
    return lines


def fills_of(sim: Simulator) -> dict:
    """Every fill, as columns: exchange time, time the strategy knew, side (+1 buy / −1 sell), price, qty, ..."""
    f = sim.fills
    return {"exchange_ts": [x.exchange_ts for x in f], "known_ts": [x.known_ts for x in f], "side": [x.side for x in f],
            "price": [x.price / UNIT for x in f], "qty": [x.qty / UNIT for x in f], "mid": [x.mid for x in f],
            "fee": [x.fee for x in f], "liquidity": [x.liquidity for x in f],
            "inventory": [x.inventory / UNIT for x in f]}


def series_of(sim: Simulator) -> dict:
    s = sim.series
    return {"ts": s.ts, "mid": s.mid, "bid": s.bid, "ask": s.ask, "inventory": s.inventory, "pnl": s.pnl,
            "spread_capture": s.spread_capture, "inventory_pnl": s.inventory_pnl, "fees": s.fees}
