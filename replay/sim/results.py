"""Backtest figures from the plain record of a run (`SimResult`): PnL and its attribution, fills, inventory,
risk, per hour.

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
from recorder.numbers import UNIT
from replay.sim.exchange import BUY
from replay.sim.record import SERIES_COLUMNS, SimResult

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


def summarize(record: SimResult, stopped: str | None = None) -> dict:
    s = record.series
    ts = s["ts"]
    pnl = s["pnl"]
    pnls = pnl.tolist()
    inventory = s["inventory"]
    side, qty = record.fills["side"].tolist(), record.fills["qty"].tolist()
    filled = sum(qty)
    mid = record.mid or 0.0
    unrealized = record.inventory / UNIT * (mid - record.avg_cost) if record.inventory else 0.0
    total = record.pnl()
    feed = (record.feed_samples - (record.clock_offset or 0)) / 1e6
    hours: dict[int, dict] = {}
    for i, t in enumerate(ts.tolist()):
        hour = t // 3_600_000_000_000
        row = hours.setdefault(hour, {"first": i, "last": i, "fills": 0, "volume": 0})
        row["last"] = i
    for exchange_ts, q in zip(record.fills["exchange_ts"].tolist(), qty):
        hour = exchange_ts // 3_600_000_000_000
        if hour in hours:
            hours[hour]["fills"] += 1
            hours[hour]["volume"] += q
    per_hour = []
    previous_pnl = 0.0
    for hour in sorted(hours):
        row = hours[hour]
        end_pnl = pnls[row["last"]]
        inv = np.abs(inventory[row["first"]:row["last"] + 1])
        market = record.hourly_market_volume.get(hour, 0)
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
    mids = s["mid"]
    with np.errstate(invalid="ignore"):
        bid_distance = mids - s["bid"]
        ask_distance = s["ask"] - mids
    span = record.sampled_time
    params = record.params
    orders = record.counts["orders"]
    return {
        "symbol": record.symbol,
        "currency": quote_currency(record.symbol),  # prices, spreads and PnL are in it
        "strategy": params.strategy,
        "fill_model": params.fill_model,
        "stopped": stopped or record.killed,
        "start_ns": record.first_ts,
        "end_ns": record.last_ts,
        "span_s": (record.last_ts - record.first_ts) / 1e9 if record.first_ts is not None else 0.0,
        "order_size": record.size / UNIT,
        "tick": record.tick / UNIT,
        "pnl": {
            "total": total,
            "realized": record.realized,
            "unrealized": unrealized,
            "fees": -record.fees,
            "spread_capture": record.spread_capture,
            "inventory": record.inventory_pnl,
        },
        "fills": {
            "count": len(qty),
            "buys": sum(1 for x in side if x == BUY),
            "sells": sum(1 for x in side if x != BUY),
            "volume": filled / UNIT,
            "orders": orders,
            "fill_ratio": len(qty) / orders if orders else 0.0,
            "market_volume": record.market_volume / UNIT,
            "market_share": filled / record.market_volume if record.market_volume else 0.0,
        },
        "orders": dict(record.counts),
        "inventory": {
            "final": record.inventory / UNIT,
            "mean_abs_q": record.abs_q_time / span if span else 0.0,
            "max_abs": float(np.abs(inventory).max()) if len(inventory) else 0.0,
            "time_above_soft": record.time_at_soft / span if span else 0.0,
            "time_at_hard": record.time_at_hard / span if span else 0.0,
        },
        "quotes": {  # mean distance of our live quotes from the mid over the samples that had one
            "bid_distance": float(np.nanmean(bid_distance)) if np.isfinite(bid_distance).any() else None,
            "ask_distance": float(np.nanmean(ask_distance)) if np.isfinite(ask_distance).any() else None,
            "bid_time": float(np.isfinite(bid_distance).mean()) if len(bid_distance) else 0.0,
            "ask_time": float(np.isfinite(ask_distance).mean()) if len(ask_distance) else 0.0,
        },
        "risk": {"max_drawdown": record.max_drawdown, "sharpe": sharpe(ts, pnl)},
        "model": {
            "sigma_end": record.sigma,
            "A_end": None if math.isnan(record.A) else record.A,
            "k_end": None if math.isnan(record.k) else record.k,
            "fits": len(record.fits),
            "warmed_up": record.warmed_up,  # False: σ or A, k never had an estimate, nothing was quoted
            "fits_first": record.fits[:3],
            "fits_last": record.fits[-3:],
        },
        "latency_ms": {
            "clock_offset": (record.clock_offset or 0) / 1e6,  # min(recv − exchange time): skew + fastest delivery
            "feed_p50": _pct(feed, 50),  # recv − exchange time − clock_offset
            "feed_p99": _pct(feed, 99),
            "entry": _latency_ms(record.entry_latency, record.feed_latency_ns),
            "response": _latency_ms(record.response_latency, record.feed_latency_ns),
        },
        "per_hour": per_hour,
        "constraints": constraint_shares(record),
    }


def _latency_ms(latency: tuple[float, float], feed_latency_ns: float) -> float:
    """An order latency (constant s, × feed latency) in ms at the feed latency of the end of the run."""
    const, factor = latency
    return const * 1000 + factor * feed_latency_ns / 1e6


SIDE_CONSTRAINTS = ("hard_limit", "soft_limit", "lockout")  # held per side; the rest per decision
FEW_FILLS = 20  # below this many fills the summary says why


def constraint_shares(record: SimResult) -> dict:
    """Share of the simulated data time each constraint kept quotes away (per side for the inventory limits and
    lockouts), the unsynced share, and the strategy's own half-spread against the market's."""
    span = (record.last_ts - record.first_ts) / 1e9 if record.first_ts is not None else 0.0
    interval = record.params.requote_interval
    shares = {name: min(1.0, n * interval / (span * (2 if name in SIDE_CONSTRAINTS else 1))) if span else 0.0
              for name, n in sorted(record.held.items())}
    two_sided = record.two_sided
    return {
        "share_of_time": shares,
        "unsynced": record.unsynced_ns / 1e9 / span if span else 0.0,
        "strategy_half_spread": record.strategy_half_sum / two_sided if two_sided else None,
        "touch_half_spread": record.touch_half_sum / two_sided if two_sided else None,
        "maker_fee": record.maker_fee,
        "gamma": record.params.gamma,
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


def fills_of(record: SimResult) -> dict:
    """Every fill, as columns: exchange time, time the strategy knew, side (+1 buy / −1 sell), price, qty, ..."""
    f = {name: column.tolist() for name, column in record.fills.items()}
    return {"exchange_ts": f["exchange_ts"], "known_ts": f["known_ts"], "side": f["side"],
            "price": [x / UNIT for x in f["price"]], "qty": [x / UNIT for x in f["qty"]], "mid": f["mid"],
            "fee": f["fee"], "liquidity": ["maker" if x else "taker" for x in f["maker"]],
            "inventory": [x / UNIT for x in f["inventory"]]}


def series_of(record: SimResult) -> dict:
    """The sampled series as lists (JSON): ts, mid, our bid and ask, inventory, pnl and its attribution."""
    return {name: record.series[name].tolist() for name in SERIES_COLUMNS}
