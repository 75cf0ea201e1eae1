"""The Python side of the simulation kernel: parameters in, `SimResult` out, user strategies and A, k fits.

`simulate` feeds kernel.py a day as chunks of `EventArrays` (each ending at an END row, so a long day
runs in bounded memory) and hands control to Python only where the reference needs Python: a user
strategy's `quote(state)` at each decision (validated exactly as `Simulator._decide` does), and each A, k
re-fit (`fit_intensity` on the same trade depths the reference's `IntensityEstimator` holds). The decision
log is written from the kernel's action arrays at the end, as the same dicts the reference logs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from recorder.numbers import parse_units
from replay.prepared_format import LEVEL, EventArrays
from replay.sim import kernel as K
from replay.sim.calibrate import VolatilityEstimator, fit_intensity
from replay.sim.engine import BUY, SIDE_NAME, UNIT
from replay.sim.params import AUTO, SimParams, parse_latency
from replay.sim.record import SERIES_COLUMNS, SimResult
from replay.sim.strategies import (
    BUILTIN,
    MarketState,
    Quote,
    Strategy,
    StrategyError,
    ask_strategy,
    load_strategy,
)

STRATEGY_CODES = {"as": K.S_AS, "glft": K.S_GLFT, "join": K.S_JOIN, "fixed": K.S_FIXED}
MODEL_CODES = {"queue": K.QUEUE, "cross": K.CROSS, "poisson": K.POISSON}
FILL_REASONS = {K.R_CROSSED: "book crossed the quote", K.R_THROUGH: "trade printed through the quote",
                K.R_QUEUE: "queue ahead traded away at our price", K.R_FLATTEN: "flatten on kill"}


def price_bounds(arrays: EventArrays) -> tuple[int, int]:
    """The lowest and highest book price (in ticks of `price_step`) of a prepared day: the array book's range."""
    levels = arrays.price[arrays.kind == LEVEL]
    return (int(levels.min()), int(levels.max())) if len(levels) else (0, 0)


# the kernel's growable outputs: initial rows, the FULL bit the kernel reports, the arrays (name, columns, dtype)
BUFFERS = {
    "orders": (16, K.FULL_ORDERS, (("orders_i", K.N_OI, np.int64), ("orders_f", K.N_OF, np.float64))),
    "fills": (1024, K.FULL_FILLS, (("fills_i", K.N_FI, np.int64), ("fills_f", K.N_FF, np.float64))),
    "gone": (16, K.FULL_GONE, (("gone", K.N_GI, np.int64),)),
    "series": (1024, K.FULL_SERIES, (("series_ts", 0, np.int64), ("series_f", K.N_SF, np.float64))),
    "feed": (4096, K.FULL_FEED, (("feed", 0, np.int64),)),
    "acts": (4096, K.FULL_ACTS, (("acts_i", K.N_AI, np.int64), ("acts_f", K.N_AF, np.float64))),
    "trades": (4096, K.FULL_TRADES, (("trades_ts", 0, np.int64), ("trades_delta", 0, np.float64))),
    "hours": (32, K.FULL_HOURS, (("hours", 2, np.int64),)),
}


class _Buffers:
    """The array book and the kernel's outputs; `grow` doubles the ones the kernel reported full."""

    def __init__(self, levels: int) -> None:
        self.bids = np.zeros(levels, np.int64)
        self.asks = np.zeros(levels, np.int64)
        for rows, _, arrays in BUFFERS.values():
            for name, columns, dtype in arrays:
                setattr(self, name, np.zeros((rows, columns) if columns else rows, dtype))

    def grow(self, mask: int) -> None:
        for _, bit, arrays in BUFFERS.values():
            if mask & bit:
                for name, _, _ in arrays:
                    old = getattr(self, name)
                    new = np.zeros((2 * old.shape[0], *old.shape[1:]), old.dtype)
                    new[: old.shape[0]] = old
                    setattr(self, name, new)


def _parameters(p: SimParams, tick: int, lot: int, size: int, horizon_ns: int, maker_fee: float, taker_fee: float,
                grid_start_ns: int | None, price_step: int, qty_step: int, price_min: int, levels: int,
                builtin: bool) -> tuple[np.ndarray, np.ndarray]:
    pi = np.zeros(K.N_PI, np.int64)
    pf = np.zeros(K.N_PF)
    slow, fast = VolatilityEstimator(p.sigma_halflife), VolatilityEstimator(p.fast_sigma_halflife)
    entry, response = parse_latency(p.entry_latency), parse_latency(p.response_latency)
    ints = {
        K.P_MODEL: MODEL_CODES[p.fill_model], K.P_PARTIAL: p.partial_fills,
        K.P_STRATEGY: STRATEGY_CODES[p.strategy] if builtin else K.S_USER, K.P_TICK: tick, K.P_LOT: lot,
        K.P_SIZE: size, K.P_INTERVAL: int(p.requote_interval * 1e9), K.P_SAMPLE_NS: int(p.sample_interval * 1e9),
        K.P_REFIT_NS: int(p.refit_interval * 1e9), K.P_RETRY_NS: int(1.0 * 1e9),
        K.P_REJECT_LOCK_NS: int(p.reject_lockout * 1e9), K.P_FILL_LOCK_NS: int(p.fill_lockout * 1e9),
        K.P_FILL_LOCK_ON: p.fill_lockout > 0, K.P_TOL_TICKS: p.tolerance_ticks, K.P_HORIZON: horizon_ns,
        K.P_PRICE_STEP: price_step, K.P_QTY_STEP: qty_step, K.P_PMIN: price_min, K.P_LEVELS: levels,
        K.P_CASH_P: math.gcd(tick, price_step), K.P_CASH_Q: math.gcd(lot, qty_step),
        K.P_WINDOW_NS: int(p.intensity_window * 1e9), K.P_VOL_STEP_NS: slow.step_ns,
        K.P_SIGMA_AUTO: p.sigma == AUTO, K.P_A_AUTO: p.A == AUTO, K.P_K_AUTO: p.k == AUTO,
        K.P_HAS_MAX_SPREAD: p.max_spread is not None, K.P_HAS_MAX_LOSS: p.max_loss is not None,
        K.P_HAS_MAX_DD: p.max_drawdown is not None, K.P_FLATTEN: p.flatten_on_kill,
        K.P_HAS_PAUSE: p.pause_vol_ratio is not None, K.P_FEE_AWARE: p.fee_aware,
        K.P_HAS_GRID: grid_start_ns is not None, K.P_GRID: grid_start_ns or 0,
        K.P_WARMING: p.strategy not in ("join", "fixed"),
    }
    floats = {
        K.F_GAMMA: p.gamma, K.F_SIGMA: p.sigma if p.sigma != AUTO else 0.0, K.F_HALF: p.half_spread,
        K.F_MIN_SPREAD: p.min_spread, K.F_MAX_SPREAD: p.max_spread or 0.0, K.F_MAKER: maker_fee,
        K.F_TAKER: taker_fee, K.F_SOFT: p.soft_limit, K.F_HARD: p.hard_limit, K.F_MAX_LOSS: p.max_loss or 0.0,
        K.F_MAX_DD: p.max_drawdown or 0.0, K.F_PAUSE: p.pause_vol_ratio or 0.0, K.F_QPOW: p.queue_power,
        K.F_ENTRY_C: entry[0], K.F_ENTRY_F: entry[1], K.F_RESP_C: response[0], K.F_RESP_F: response[1],
        K.F_ALPHA_SLOW: slow.alpha, K.F_ALPHA_FAST: fast.alpha, K.F_VOL_STEP_S: slow.step_s,
    }
    for index, value in ints.items():
        pi[index] = int(value)
    for index, value in floats.items():
        pf[index] = float(value)
    return pi, pf


def _initial_state(p: SimParams, pi: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    ist = np.zeros(K.IST_SIZE, np.int64)
    fs = np.zeros(K.FS_SIZE)
    ist[K.NEXT_OID] = 1
    ist[K.WARMING] = pi[K.P_WARMING]
    ist[K.NEXT_DECISION] = pi[K.P_GRID]
    ist[K.BB], ist[K.BA] = -1, levels
    ist[K.SET_LOW], ist[K.SET_HIGH] = levels, -1
    fs[K.A_NOW] = math.nan if p.A == AUTO else p.A
    fs[K.K_NOW] = math.nan if p.k == AUTO else p.k
    return ist, fs


def _open(opening: tuple[int, int], ist: np.ndarray, fs: np.ndarray, pi: np.ndarray) -> None:
    """A position carried over from the previous day, as the reference's `Accounts.open`: held as if bought at
    the mark (the cash units shrink so that −inventory × mark stays an exact count of them)."""
    inventory, mark = opening
    pi[K.P_CASH_P] = math.gcd(int(pi[K.P_CASH_P]), mark)
    pi[K.P_CASH_Q] = math.gcd(int(pi[K.P_CASH_Q]), inventory)
    ist[K.INVENTORY] = ist[K.KNOWN_INV] = inventory
    ist[K.CASH] = -(inventory // pi[K.P_CASH_Q]) * (mark // pi[K.P_CASH_P])
    fs[K.AVG_COST] = fs[K.MID] = mark / UNIT
    ist[K.MARKED] = 1


def _columns(chunk: EventArrays, price_step: int, qty_step: int) -> tuple:
    """The chunk's columns, prices and quantities in the day's steps."""
    if len(chunk) and not chunk.flags[-1] & K.END:
        raise ValueError("each chunk of event arrays must end at a row flagged END (a whole message)")
    price, qty = chunk.price, chunk.qty
    if chunk.price_step != price_step:
        if chunk.price_step % price_step:
            raise ValueError(f"chunk price step {chunk.price_step} is not a multiple of the day's {price_step}")
        price = price * (chunk.price_step // price_step)
    if chunk.qty_step != qty_step:
        if chunk.qty_step % qty_step:
            raise ValueError(f"chunk qty step {chunk.qty_step} is not a multiple of the day's {qty_step}")
        qty = qty * (chunk.qty_step // qty_step)
    return chunk.kind, chunk.flags, chunk.recv_ts, chunk.exch_ts, chunk.side, price, qty


def _user_quote(strategy: Strategy, name: str, ist: np.ndarray, fs: np.ndarray, tick: int,
                reasons: list[str]) -> None:
    """Simulator._decide's call of a user strategy and its checks; the raw prices go back into fs."""
    state = MarketState(ts=int(ist[K.DEC_AT]), mid=float(fs[K.S_MID]), best_bid=float(fs[K.S_BID]),
                        best_ask=float(fs[K.S_ASK]), tick=tick / UNIT, q=float(fs[K.S_Q]),
                        sigma=float(fs[K.S_SIGMA]), A=float(fs[K.A_NOW]), k=float(fs[K.K_NOW]),
                        time_left=float(fs[K.S_TIME_LEFT]))
    quote = ask_strategy(strategy, name, state)
    fs[K.RAW_BID] = math.nan if quote.bid is None else quote.bid
    fs[K.RAW_ASK] = math.nan if quote.ask is None else quote.ask
    ist[K.USER_REASON] = -1
    if quote.reason:
        reasons.append(quote.reason)
        ist[K.USER_REASON] = len(reasons) - 1


def _builtin_error(p: SimParams, fs: np.ndarray, numbers: np.ndarray) -> StrategyError:
    """What the reference raises when a built-in strategy's quote is not finite."""
    if numbers[2]:
        return StrategyError(f"strategy {p.strategy!r} raised OverflowError: (34, 'Numerical result out of range')")
    quote = Quote(float(fs[K.RAW_BID]), float(fs[K.RAW_ASK]), _strategy_reason(p, numbers[0], numbers[1]))
    return StrategyError(f"strategy {p.strategy!r} returned {quote!r}; expected Quote(bid, ask) with finite "
                         f"prices or None")


def _refit(p: SimParams, ist: np.ndarray, fs: np.ndarray, buffers: _Buffers, tick: int, fits: list[dict]) -> None:
    """Simulator._refit on the kernel's window of trade depths (pruned by the kernel as the estimator does)."""
    now = int(ist[K.FIT_NOW])
    fit = None
    if ist[K.HAS_TR_FIRST]:
        span = min(p.intensity_window, (now - int(ist[K.TR_FIRST])) / 1e9)
        fit = fit_intensity(buffers.trades_delta[ist[K.TR_START]:ist[K.TR_END]], span, tick / UNIT)
    ist[K.FITTED] = fit is not None
    if fit is None:
        return
    if p.A == AUTO:
        fs[K.A_NOW] = fit.A
    if p.k == AUTO:
        fs[K.K_NOW] = fit.k
    fits.append({"ts": now, "A": fit.A, "k": fit.k, "r2": fit.r2, "trades": fit.trades})
    ist[K.N_FITS] += 1


def simulate(chunks: Iterable[EventArrays], symbol: str, params: SimParams, tick: int, lot: int, horizon_ns: int,
             maker_fee: float, taker_fee: float, grid_start_ns: int | None, price_step: int, qty_step: int,
             price_min: int, price_max: int, log: Callable[[dict], None] | None = None,
             strategy: Strategy | None = None, opening: tuple[int, int] | None = None) -> SimResult:
    """One symbol's backtest on the kernel: the same `SimResult` the reference `Simulator` gives for these events.

    The simulator starts at the first book message with both sides, as run.py creates it. `price_min` and
    `price_max` (ticks of `price_step`) bound the array book: `price_bounds` of the day. A user strategy (not a
    built-in) is loaded from `params` unless given. `log` receives the decision log's entries at the end,
    written from the kernel's action arrays (the same dicts, in the same order, as the reference logs as it
    goes). On a `StrategyError` the partial record is on the exception as `.result` (and the log is written).
    """
    builtin = params.strategy in BUILTIN
    if not builtin and strategy is None:
        strategy = load_strategy(params)
    size = parse_units(params.order_size) if params.order_size is not None else lot
    size = max(lot, size // lot * lot)
    levels = price_max - price_min + 1
    pi, pf = _parameters(params, tick, lot, size, horizon_ns, maker_fee, taker_fee, grid_start_ns, price_step,
                         qty_step, price_min, levels, builtin)
    ist, fs = _initial_state(params, pi, levels)
    if opening is not None:
        _open(opening, ist, fs, pi)
    buffers = _Buffers(levels)
    numbers = np.zeros(4)
    rng = np.random.default_rng(params.seed)
    fits: list[dict] = []
    user_reasons: list[str] = []
    stopped = None
    try:
        for chunk in chunks:
            columns = _columns(chunk, price_step, qty_step)
            ist[K.POS] = 0
            while True:
                b = buffers
                status = K.run(*columns, ist, fs, pi, pf, b.bids, b.asks, b.orders_i, b.orders_f, b.fills_i,
                               b.fills_f, b.gone, b.acts_i, b.acts_f, b.series_ts, b.series_f, b.feed, b.trades_ts,
                               b.trades_delta, b.hours, numbers, rng)
                if status == K.DONE:
                    _hand_over_actions(params, buffers, ist, user_reasons, log)
                    break
                if status == K.FULL:
                    buffers.grow(int(ist[K.FULL_MASK]))
                elif status == K.QUOTE:
                    _user_quote(strategy, params.strategy, ist, fs, tick, user_reasons)
                elif status == K.FIT:
                    _refit(params, ist, fs, buffers, tick, fits)
                else:
                    raise _builtin_error(params, fs, numbers)
    except StrategyError as exc:
        stopped = exc
    K.finish(ist, fs, pi, pf, buffers.fills_i, buffers.gone, buffers.series_ts, buffers.series_f)
    _hand_over_actions(params, buffers, ist, user_reasons, log)
    result = _result(symbol, params, tick, lot, size, maker_fee, taker_fee, ist, fs, pi, buffers, fits)
    if stopped is not None:
        stopped.result = result
        raise stopped
    return result


def _kill_text(params: SimParams, code: int, value: float) -> str:
    if code == K.R_KILL_LOSS:
        return f"loss {value:.2f} beyond max_loss {params.max_loss:g}"
    return f"drawdown {value:.2f} beyond max_drawdown {params.max_drawdown:g}"


def _strategy_reason(params: SimParams, first: float, second: float) -> str:
    name = params.strategy
    if name == "as":
        return f"A-S r={first:.6g} spread={second:.6g}"
    if name == "glft":
        return f"GLFT half={first:.6g} skew={second:.6g}"
    if name == "join":
        return "join touch"
    return f"fixed ±{params.half_spread:g}"


def _decision_reasons(params: SimParams, side: int, flags: int, ref: int, numbers: np.ndarray, target: int,
                      user_reasons: list[str]) -> list[str]:
    """The practical layer's reasons for one side, in the reference's order."""
    p = params
    if p.strategy in BUILTIN:
        first = _strategy_reason(p, numbers[0], numbers[1])
    else:
        first = user_reasons[ref] if ref >= 0 else ""
    reasons = [first] if first else []
    if flags & K.W_WIDENED:
        reasons.append(f"widened to min spread {numbers[2]:.6g}")
    if flags & K.W_NARROWED:
        reasons.append(f"narrowed to max spread {p.max_spread:g}")
    if flags & K.W_POST_ONLY:
        reasons.append("kept one tick below the best ask (post-only)" if side == BUY
                       else "kept one tick above the best bid (post-only)")
    if flags & K.W_SOFT:
        reasons.append(f"|q| {numbers[3]:g} above soft limit {p.soft_limit:g}: size x{numbers[4]:.2f}")
    if flags & K.W_HARD:
        reasons.append(f"|q| {numbers[3]:g} at hard limit {p.hard_limit:g}: one-sided")
    if flags & K.W_NO_QUOTE:
        reasons.append("strategy does not quote this side")
    if flags & K.W_LOCKOUT:
        reasons.append("lockout after a fill or reject")
    if flags & K.W_NOT_POSITIVE:
        reasons.append("price not positive")
    if flags & K.W_REQUOTE:
        reasons.append(f"requote to {target / UNIT:.10g}")
    return reasons


def _hand_over_actions(params: SimParams, buffers: _Buffers, ist: np.ndarray, user_reasons: list[str],
                       log: Callable[[dict], None] | None) -> None:
    """The actions recorded so far go to the log (or are dropped when there is none) and their rows are reused,
    so a day's decision log never sits in memory whole (peak RSS stays flat however long the day)."""
    if log is not None:
        for entry in _log_entries(params, buffers, int(ist[K.N_ACTS]), user_reasons):
            log(entry)
    ist[K.N_ACTS] = 0


def _log_entries(params: SimParams, buffers: _Buffers, count: int, user_reasons: list[str]) -> list[dict]:
    """The decision log, written from the kernel's action arrays: the dicts `Simulator` passes to its log."""
    entries = []
    acts_i, acts_f = buffers.acts_i[:count].tolist(), buffers.acts_f[:count]
    for row, numbers in zip(acts_i, acts_f, strict=True):
        ts, exch, code, oid, side, price, qty, reason, flags, ref, target = row
        if code == K.A_PLACE:
            entries.append({"ts": ts, "action": "place", "order": oid, "side": SIDE_NAME[side], "price": price,
                            "qty": qty, "reasons": _decision_reasons(params, side, flags, ref, numbers, target,
                                                                     user_reasons)})
        elif code == K.A_CANCEL:
            if reason == K.R_DECISION:
                reasons = _decision_reasons(params, side, flags, ref, numbers, target, user_reasons)
            elif reason == K.R_UNSYNCED:
                reasons = ["book unsynced"]
            elif reason == K.R_REGIME:
                reasons = ["regime pause"]
            else:
                reasons = ["kill switch: " + _kill_text(params, reason, numbers[0])]
            entries.append({"ts": ts, "action": "cancel", "order": oid, "side": SIDE_NAME[side], "price": price,
                            "reasons": reasons})
        elif code == K.A_FILL:
            why = FILL_REASONS.get(reason) or f"poisson fill at depth {numbers[0]:.6g}"
            entries.append({"ts": ts, "exchange_ts": exch, "action": "fill", "order": oid, "side": SIDE_NAME[side],
                            "price": price, "qty": qty, "liquidity": "maker" if flags else "taker",
                            "reasons": [why]})
        elif code == K.A_REJECT:
            entries.append({"ts": ts, "action": "reject", "order": oid, "side": SIDE_NAME[side], "price": price,
                            "reasons": ["post-only order would have crossed the book on arrival",
                                        f"lockout {params.reject_lockout:g}s"]})
        elif code == K.A_KILL:
            entries.append({"ts": ts, "action": "kill", "reasons": [_kill_text(params, reason, numbers[0])]})
        elif code == K.A_STOP:
            entries.append({"ts": ts, "action": "stop", "reasons": ["book unsynced: cancel all, stop quoting"]})
        elif reason == K.R_VOL_RATIO:
            fast, slow = numbers[0], numbers[1]
            entries.append({"ts": ts, "action": "pause" if code == K.A_PAUSE else "resume",
                            "reasons": [f"fast/slow σ {fast / slow:.2f} vs {params.pause_vol_ratio:g}"]})
        else:
            text = "book valid again" if reason == K.R_BOOK_VALID else "model parameters estimated from the data: quoting"
            entries.append({"ts": ts, "action": "resume", "reasons": [text]})
    return entries


def _result(symbol: str, p: SimParams, tick: int, lot: int, size: int, maker_fee: float, taker_fee: float,
            ist: np.ndarray, fs: np.ndarray, pi: np.ndarray, b: _Buffers, fits: list[dict]) -> SimResult:
    n = int(ist[K.N_FILLS])
    fi, ff = b.fills_i[:n], b.fills_f[:n]
    fills = {"exchange_ts": fi[:, K.FI_EXCH].copy(), "known_ts": fi[:, K.FI_KNOWN].copy(),
             "side": fi[:, K.FI_SIDE].astype(np.int8), "price": fi[:, K.FI_PRICE].copy(),
             "qty": fi[:, K.FI_QTY].copy(), "mid": ff[:, K.FF_MID].copy(), "fee": ff[:, K.FF_FEE].copy(),
             "maker": fi[:, K.FI_MAKER].astype(bool), "inventory": fi[:, K.FI_INVENTORY].copy()}
    s = int(ist[K.N_SERIES])
    series = {"ts": b.series_ts[:s].copy()}
    for column, name in enumerate(SERIES_COLUMNS[1:]):
        series[name] = b.series_f[:s, column].copy()
    counts = {"orders": ist[K.C_ORDERS], "cancels": ist[K.C_CANCELS], "rejects": ist[K.C_REJECTS],
              "kept": ist[K.C_KEPT], "decisions": ist[K.C_DECISIONS], "unsynced_spans": ist[K.C_UNSYNCED],
              "pauses": ist[K.C_PAUSES]}
    held = {name: int(ist[K.HELD_BASE + i]) for i, name in enumerate(K.HELD_NAMES) if ist[K.HELD_BASE + i]}
    killed = _kill_text(p, int(ist[K.KILLED]), float(fs[K.KILL_VALUE])) if ist[K.KILLED] else None
    sigma = p.sigma if p.sigma != AUTO else (math.sqrt(fs[K.V_VAR]) if ist[K.V_HAS_VAR] else 0.0)
    return SimResult(
        symbol=symbol, params=p, tick=tick, lot=lot, size=size, maker_fee=maker_fee, taker_fee=taker_fee,
        fills=fills, series=series, counts={k: int(v) for k, v in counts.items()}, held=held, fits=fits,
        inventory=int(ist[K.INVENTORY]), cash=int(ist[K.CASH]) * int(pi[K.P_CASH_P]) * int(pi[K.P_CASH_Q]),
        fees=float(fs[K.FEES]), spread_capture=float(fs[K.SPREAD_CAPTURE]), inventory_pnl=float(fs[K.INVENTORY_PNL]),
        realized=float(fs[K.REALIZED]), avg_cost=float(fs[K.AVG_COST]),
        mid=float(fs[K.MID]) if ist[K.HAS_MID] else None, killed=killed,
        first_ts=int(ist[K.FIRST_TS]) if ist[K.HAS_FIRST] else None,
        last_ts=int(ist[K.LAST_TS]) if ist[K.HAS_FIRST] else None, unsynced_ns=int(ist[K.UNSYNCED_NS]),
        strategy_half_sum=float(fs[K.STRATEGY_HALF]), touch_half_sum=float(fs[K.TOUCH_HALF]),
        two_sided=int(ist[K.TWO_SIDED]), market_volume=int(ist[K.MARKET_VOLUME]),
        hourly_market_volume={int(hour): int(qty) for hour, qty in b.hours[: int(ist[K.N_HOURS])]},
        time_at_soft=float(fs[K.TIME_SOFT]), time_at_hard=float(fs[K.TIME_HARD]),
        abs_q_time=float(fs[K.ABS_Q_TIME]), sampled_time=float(fs[K.SAMPLED_TIME]),
        max_drawdown=float(fs[K.MAX_DD]), clock_offset=int(ist[K.CLOCK_OFFSET]) if ist[K.HAS_OFFSET] else None,
        feed_samples=b.feed[: int(ist[K.N_FEED])].copy(), feed_latency_ns=float(fs[K.FEED_LAT]),
        entry_latency=parse_latency(p.entry_latency), response_latency=parse_latency(p.response_latency),
        A=float(fs[K.A_NOW]), k=float(fs[K.K_NOW]), sigma=float(sigma), warmed_up=not ist[K.WARMING],
    )


def load_kernel() -> None:
    """Load the compiled kernel now (compile it if the disk cache has none) by simulating a three-message day:
    a process about to run many backtests pays this once up front, e.g. a sweep's Ray worker as it starts,
    instead of inside its first task."""
    from replay.prepared_format import CLEAR, END, TRADE, VALID

    t = 1_700_000_000_000_000_000
    rows = np.array([(VALID, END, t, -1, 0, 0, 0), (CLEAR, 0, t, t, 0, 0, 0), (LEVEL, 0, t, t, 1, 99, 2),
                     (LEVEL, END, t, t, -1, 101, 2), (TRADE, END, t + 10**9, t + 10**9, -1, 98, 1)], dtype=np.int64)
    day = EventArrays(rows[:, 0].astype(np.uint8), rows[:, 1].astype(np.uint8), rows[:, 2].copy(), rows[:, 3].copy(),
                      rows[:, 4].astype(np.int8), rows[:, 5].copy(), rows[:, 6].copy(), 10**8, 10**5)
    simulate([day], "WARMUP", SimParams(strategy="join").check(), 10**8, 10**5, t + 10**10, 0.0, 0.0, None,
             10**8, 10**5, 99, 101)
