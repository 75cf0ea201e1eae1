"""The numba simulation kernel: the reference `Simulator` (engine.py) over a prepared day's event arrays.

Same semantics, message by message (the kernel acts at rows flagged END, as `Simulator.on_event` does once
per `ReplayEvent`), with the same floating-point operations in the same order, so fills, accounting, counts
and series equal the reference's exactly. State lives in numpy arrays (numba's cache cannot store jitclasses):
one int64 and one float64 state vector with the named indices below, order slots, and output arrays the
driver (fast.py) enlarges when the kernel reports them full. `run` walks rows from `ist[POS]` and returns a
status: done with the rows given, an output array is full, a user strategy must quote, A and k must be
re-fitted, or a built-in strategy failed. The driver acts and calls `run` again: it resumes mid-message.

Exactness notes: integer quantities stay integers (cash as a count of `cash_unit` = gcd(tick, price_step) ×
gcd(lot, qty_step) in 1e-16 quote units, so it does not overflow int64); the one place the reference divides
an integer beyond 2^53 (notional = price × qty / 1e16, and cash / 1e16 in the PnL) uses `_exact_ratio`, a
correctly rounded division as Python's int / int; powers with integer exponents are taken on floats, as
Python's float ** int does.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from replay.prepared_format import CLEAR, EMPTY, END, INVALID, LEVEL, TRADE, VALID

UNIT = 100_000_000
NONE = np.iinfo(np.int64).max  # an absent timestamp (cancel_at)

# statuses returned by `run`
DONE, FULL, QUOTE, FIT, BAD_QUOTE = 0, 1, 2, 3, 4
# message phases (ist[PHASE]): where `run` resumes
PH_START, PH_QUOTED, PH_BODY, PH_FITTED = 0, 1, 2, 3

# fill models, strategies
QUEUE, CROSS, POISSON = 0, 1, 2
S_AS, S_GLFT, S_JOIN, S_FIXED, S_USER = 0, 1, 2, 3, 4

# -- int64 parameters (pi)
(P_MODEL, P_PARTIAL, P_STRATEGY, P_TICK, P_LOT, P_SIZE, P_INTERVAL, P_SAMPLE_NS, P_REFIT_NS, P_RETRY_NS,
 P_REJECT_LOCK_NS, P_FILL_LOCK_NS, P_FILL_LOCK_ON, P_TOL_TICKS, P_HORIZON, P_PRICE_STEP, P_QTY_STEP, P_PMIN,
 P_LEVELS, P_CASH_P, P_CASH_Q, P_WINDOW_NS, P_VOL_STEP_NS, P_SIGMA_AUTO, P_A_AUTO, P_K_AUTO, P_HAS_MAX_SPREAD,
 P_HAS_MAX_LOSS, P_HAS_MAX_DD, P_FLATTEN, P_HAS_PAUSE, P_FEE_AWARE, P_HAS_GRID, P_GRID, P_WARMING) = range(35)
N_PI = 35
# -- float64 parameters (pf)
(F_GAMMA, F_SIGMA, F_HALF, F_MIN_SPREAD, F_MAX_SPREAD, F_MAKER, F_TAKER, F_SOFT, F_HARD, F_MAX_LOSS,
 F_MAX_DD, F_PAUSE, F_QPOW, F_ENTRY_C, F_ENTRY_F, F_RESP_C, F_RESP_F, F_ALPHA_SLOW, F_ALPHA_FAST, F_VOL_STEP_S,
 ) = range(20)
N_PF = 20

# -- int64 state (ist)
(POS, PHASE, STARTED, VALID_NOW, N_ORDERS, NEXT_OID, EXCH_NOW, HAS_OFFSET, CLOCK_OFFSET, INVENTORY, CASH,
 KNOWN_INV, KNOWN_PTR, N_FILLS, N_GONE, BEST_BID, BEST_ASK, HAS_MID, KILLED, PAUSED, WARMING, LOCK_BUY,
 LOCK_SELL, NEXT_DECISION, NEXT_SAMPLE, NEXT_FIT, C_ORDERS, C_CANCELS, C_REJECTS, C_KEPT, C_DECISIONS,
 C_UNSYNCED, C_PAUSES, UNSYNCED_NS, HAS_UNSYNCED, UNSYNCED_SINCE, TWO_SIDED, HAS_STAT, LAST_STAT, HAS_FIRST,
 FIRST_TS, LAST_TS, N_SERIES, N_FEED, N_ACTS, TR_START, TR_END, HAS_TR_FIRST, TR_FIRST, N_FITS, Q_OID_BUY,
 Q_OID_SELL, Q_PRICE_BUY, Q_PRICE_SELL, Q_SIZE_BUY, Q_SIZE_SELL, BB, BA, NB, NA, DEC_AT, FULL_MASK, FIT_NOW,
 FITTED, V_HAS_NEXT, V_NEXT, V_HAS_VAR, FV_HAS_NEXT, FV_NEXT, FV_HAS_VAR, USER_REASON, SET_LOW, SET_HIGH,
 MARKET_VOLUME, N_HOURS, MARKED) = range(76)  # MARKED: fs[MID] holds an opening mark, no book yet
N_IST = 76
# held counters (ist), in the order of HELD_NAMES
HELD_BASE = N_IST
HELD_NAMES = ("fee_floor", "min_spread", "max_spread", "hard_limit", "soft_limit", "lockout", "regime_pause",
              "warming_up", "kill_switch")
H_FEE_FLOOR, H_MIN_SPREAD, H_MAX_SPREAD, H_HARD, H_SOFT, H_LOCKOUT, H_PAUSE, H_WARMING, H_KILL = range(9)
IST_SIZE = N_IST + len(HELD_NAMES)

# -- float64 state (fs)
(FEED_LAT, FEES, SPREAD_CAPTURE, INVENTORY_PNL, REALIZED, AVG_COST, MID, PEAK, MAX_DD, STRATEGY_HALF,
 TOUCH_HALF, TIME_SOFT, TIME_HARD, ABS_Q_TIME, SAMPLED_TIME, A_NOW, K_NOW, V_LAST_MID, V_SUM, V_WEIGHT, V_VAR,
 FV_LAST_MID, FV_SUM, FV_WEIGHT, FV_VAR, RAW_BID, RAW_ASK, S_MID, S_BID, S_ASK, S_Q, S_SIGMA, S_TIME_LEFT,
 KILL_VALUE) = range(34)
FS_SIZE = 34

# order slots: int64 columns, float64 columns
O_OID, O_SIDE, O_PRICE, O_QTY, O_LIVE, O_SIZE, O_CANCEL, O_ACTIVE, O_LEVEL, O_CHECKED = range(10)
N_OI = 10
OF_AHEAD, OF_TRADED = range(2)
N_OF = 2

# fills: int64 columns, float64 columns
FI_EXCH, FI_KNOWN, FI_SIDE, FI_PRICE, FI_QTY, FI_MAKER, FI_INVENTORY = range(7)
N_FI = 7
FF_MID, FF_FEE = range(2)
N_FF = 2
# pending "gone" entries: known ts, order id
N_GI = 2
# series: ts (int64) and float columns in SERIES_COLUMNS order after ts
N_SF = 8

# actions (the decision log), int64 columns and float64 columns
(AI_TS, AI_EXCH, AI_CODE, AI_OID, AI_SIDE, AI_PRICE, AI_QTY, AI_REASON, AI_FLAGS, AI_REF, AI_TARGET) = range(11)
N_AI = 11
N_AF = 6  # numbers the reasons quote (see fast.py for what each action keeps where)
(A_PLACE, A_CANCEL, A_FILL, A_REJECT, A_KILL, A_PAUSE, A_RESUME, A_STOP) = range(8)
# reason codes
(R_NONE, R_UNSYNCED, R_BOOK_VALID, R_WARMED, R_VOL_RATIO, R_REGIME, R_KILL_LOSS, R_KILL_DD, R_DECISION,
 R_CROSSED, R_THROUGH, R_QUEUE, R_POISSON, R_FLATTEN, R_REJECT) = range(15)
# practical-layer reason flags (AI_FLAGS), in the order the reference lists them
W_WIDENED, W_NARROWED, W_POST_ONLY, W_SOFT, W_NO_QUOTE, W_HARD, W_LOCKOUT, W_NOT_POSITIVE, W_REQUOTE = (
    1, 2, 4, 8, 16, 32, 64, 128, 256)

# FULL_MASK bits: which output array the driver must enlarge
FULL_ORDERS, FULL_FILLS, FULL_GONE, FULL_SERIES, FULL_FEED, FULL_ACTS, FULL_TRADES, FULL_HOURS = 1, 2, 4, 8, 16, 32, 64, 128
HOUR_NS = 3_600_000_000_000


# ---- exact arithmetic ------------------------------------------------------------------------------------

@njit(cache=True)
def _mul128(a, b):
    """a × b for 0 <= a, b < 2^63 as (high, low) 64-bit halves (uint64)."""
    a = np.uint64(a)
    b = np.uint64(b)
    mask = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    a0, a1 = a & mask, a >> s32
    b0, b1 = b & mask, b >> s32
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> s32) + (p01 & mask) + (p10 & mask)
    low = (p00 & mask) | ((mid & mask) << s32)
    high = p11 + (p01 >> s32) + (p10 >> s32) + (mid >> s32)
    return high, low


@njit(cache=True)
def _bit_length(high, low):
    n = 0
    if high:
        n = 64
        x = high
    else:
        x = low
    while x:
        x >>= np.uint64(1)
        n += 1
    return n


@njit(cache=True)
def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


@njit(cache=True)
def _exact_ratio(a, b, d):
    """a × b / d correctly rounded to a float, as Python's int / int (a, b >= 0, 0 < d < 2^62)."""
    common = _gcd(b, d)  # the same fraction in lowest terms: usually small enough to divide as floats
    b, d = b // common, d // common
    common = _gcd(a, d)
    a, d = a // common, d // common
    high, low = _mul128(a, b)
    if high == 0 and low < np.uint64(1 << 53):
        return float(low) / float(d)  # both exact: one rounding, as Python's
    length = _bit_length(high, low) - _bit_length(np.uint64(0), np.uint64(d))
    shift = 55 - length  # quotient of 55 or 56 bits, then rounded to 53 with a sticky bit
    sticky = False
    if shift < 0:  # drop low bits of the dividend, remembering whether any was set
        for _ in range(-shift):
            sticky = sticky or (low & np.uint64(1)) != 0
            low = (low >> np.uint64(1)) | ((high & np.uint64(1)) << np.uint64(63))
            high >>= np.uint64(1)
        shift_left = 0
    else:
        shift_left = shift
    dd = np.uint64(d)
    rem = np.uint64(0)
    quotient = np.uint64(0)
    # long division of (high, low) << shift_left by d, one bit at a time
    total = 128 + shift_left
    for i in range(total):
        if i < 64:
            bit = (high >> np.uint64(63 - i)) & np.uint64(1)
        elif i < 128:
            bit = (low >> np.uint64(127 - i)) & np.uint64(1)
        else:
            bit = np.uint64(0)
        rem = (rem << np.uint64(1)) | bit
        quotient = quotient << np.uint64(1)
        if rem >= dd:
            rem -= dd
            quotient |= np.uint64(1)
    sticky = sticky or rem != 0
    extra = _bit_length(np.uint64(0), quotient) - 53
    if extra > 0:
        low_bits = quotient & ((np.uint64(1) << np.uint64(extra)) - np.uint64(1))
        half = np.uint64(1) << np.uint64(extra - 1)
        quotient >>= np.uint64(extra)
        if low_bits > half or (low_bits == half and (sticky or (quotient & np.uint64(1)) != 0)):
            quotient += np.uint64(1)
    else:
        extra = 0
    return math.ldexp(float(quotient), extra - shift)


@njit(cache=True, inline="always")
def _pymin(a, b):
    return min(a, b)


@njit(cache=True, inline="always")
def _pymax(a, b):
    return max(a, b)


# ---- small pieces of the reference ------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _offset(ist):
    return ist[CLOCK_OFFSET] if ist[HAS_OFFSET] else 0


@njit(cache=True, inline="always")
def _latency(const, factor, fs):
    return np.int64(const * 1e9 + factor * fs[FEED_LAT])


@njit(cache=True)
def _cash_value(ist, pi):
    """cash / 1e16 exactly as the reference's int division."""
    cash = ist[CASH]
    if cash == 0:
        return 0.0
    value = _exact_ratio(abs(cash), pi[P_CASH_P] * pi[P_CASH_Q], 10_000_000_000_000_000)
    return value if cash > 0 else -value


@njit(cache=True)
def _pnl(ist, fs, pi):
    mid = fs[MID] if ist[HAS_MID] else 0.0
    return _cash_value(ist, pi) + ist[INVENTORY] / UNIT * mid - fs[FEES]


@njit(cache=True, inline="always")
def _vol_update(ist, fs, has_next, next_ns, has_var, last_mid, wsum, weight, var, alpha, step_ns, step_s, ts, mid):
    """VolatilityEstimator.update over slots of the state vectors."""
    if not ist[has_next]:
        ist[has_next] = 1
        ist[next_ns] = ts + step_ns
        fs[last_mid] = mid
        return
    if ts < ist[next_ns]:
        return
    steps = (ts - ist[next_ns]) // step_ns + 1
    change = mid - fs[last_mid]
    per_second = change * change / (step_s * steps)
    decay = (1.0 - alpha) ** float(steps)
    fs[wsum] = decay * fs[wsum] + per_second
    fs[weight] = decay * fs[weight] + 1.0
    fs[var] = fs[wsum] / fs[weight]
    ist[has_var] = 1
    ist[next_ns] += steps * step_ns
    fs[last_mid] = mid


@njit(cache=True, inline="always")
def _level(book, price, pi):
    """Displayed 1e-8 quantity at a 1e-8 price on one side of the array book (0 off the data's grid)."""
    step = pi[P_PRICE_STEP]
    if price % step != 0:
        return 0
    index = price // step - pi[P_PMIN]
    if index < 0 or index >= pi[P_LEVELS]:
        return 0
    return book[index] * pi[P_QTY_STEP]


@njit(cache=True)
def _log(acts_i, acts_f, ist, ts, code, oid, side, price, reason):
    n = ist[N_ACTS]
    ist[N_ACTS] = n + 1
    acts_i[n, AI_TS] = ts
    acts_i[n, AI_EXCH] = 0
    acts_i[n, AI_CODE] = code
    acts_i[n, AI_OID] = oid
    acts_i[n, AI_SIDE] = side
    acts_i[n, AI_PRICE] = price
    acts_i[n, AI_QTY] = 0
    acts_i[n, AI_REASON] = reason
    acts_i[n, AI_FLAGS] = 0
    acts_i[n, AI_REF] = -1
    acts_i[n, AI_TARGET] = 0
    for j in range(N_AF):
        acts_f[n, j] = 0.0
    return n


@njit(cache=True)
def _remove(orders_i, orders_f, ist, j):
    n = ist[N_ORDERS]
    for r in range(j, n - 1):
        for c in range(N_OI):
            orders_i[r, c] = orders_i[r + 1, c]
        for c in range(N_OF):
            orders_f[r, c] = orders_f[r + 1, c]
    ist[N_ORDERS] = n - 1


@njit(cache=True)
def _gone(gone, ist, known, oid):
    n = ist[N_GONE]
    gone[n, 0] = known
    gone[n, 1] = oid
    ist[N_GONE] = n + 1


@njit(cache=True)
def _forget_quote(ist, side, oid):
    """quoted[side] = None if it is this order."""
    slot = Q_OID_BUY if side == 1 else Q_OID_SELL
    if ist[slot] == oid:
        ist[slot] = 0


@njit(cache=True)
def _fill(ist, fs, pi, pf, fills_i, fills_f, side, price, qty, maker):
    """Simulator._fill's accounting and fill record; returns the time the strategy knows of it."""
    fee_rate = pf[F_MAKER] if maker else pf[F_TAKER]
    fee = _exact_ratio(price, qty, 10_000_000_000_000_000) * fee_rate
    # _account
    signed = side * qty
    px = price / UNIT
    q = ist[INVENTORY]
    if q == 0 or (q > 0) == (signed > 0):
        total = abs(q) + qty
        fs[AVG_COST] = (fs[AVG_COST] * abs(q) + px * qty) / total
    else:
        closed = min(abs(q), qty)
        fs[REALIZED] += (px - fs[AVG_COST]) * closed / UNIT * (1 if q > 0 else -1)
        if qty > abs(q):
            fs[AVG_COST] = px
    ist[INVENTORY] += signed
    ist[CASH] -= side * (qty // pi[P_CASH_Q]) * (price // pi[P_CASH_P])
    fs[FEES] += fee
    fs[SPREAD_CAPTURE] += side * (fs[MID] - px) * qty / UNIT
    known = ist[EXCH_NOW] + _offset(ist) + _latency(pf[F_RESP_C], pf[F_RESP_F], fs)
    n = ist[N_FILLS]
    fills_i[n, FI_EXCH] = ist[EXCH_NOW]
    fills_i[n, FI_KNOWN] = known
    fills_i[n, FI_SIDE] = side
    fills_i[n, FI_PRICE] = price
    fills_i[n, FI_QTY] = qty
    fills_i[n, FI_MAKER] = maker
    fills_i[n, FI_INVENTORY] = ist[INVENTORY]
    fills_f[n, FF_MID] = fs[MID]
    fills_f[n, FF_FEE] = fee
    ist[N_FILLS] = n + 1
    return known


@njit(cache=True)
def _fill_order(ist, fs, pi, pf, orders_i, orders_f, j, qty, fills_i, fills_f, gone, acts_i, acts_f, reason,
                number):
    """A maker fill of the order in slot j; True when the order is used up (and removed)."""
    side, price, oid = orders_i[j, O_SIDE], orders_i[j, O_PRICE], orders_i[j, O_OID]
    known = _fill(ist, fs, pi, pf, fills_i, fills_f, side, price, qty, 1)
    orders_i[j, O_QTY] -= qty
    removed = orders_i[j, O_QTY] <= 0
    if removed:
        _remove(orders_i, orders_f, ist, j)
        _gone(gone, ist, known, oid)
    _fill_lockout_and_log(ist, pi, acts_i, acts_f, side, price, qty, 1, oid, reason, number, known)
    return removed


@njit(cache=True)
def _fill_lockout_and_log(ist, pi, acts_i, acts_f, side, price, qty, maker, oid, reason, number, known):
    if pi[P_FILL_LOCK_ON]:
        slot = LOCK_BUY if side == 1 else LOCK_SELL
        ist[slot] = max(ist[slot], known + pi[P_FILL_LOCK_NS])
    n = _log(acts_i, acts_f, ist, known, A_FILL, oid, side, price, reason)
    acts_i[n, AI_EXCH] = ist[EXCH_NOW]
    acts_i[n, AI_QTY] = qty
    acts_i[n, AI_FLAGS] = maker
    acts_f[n, 0] = number


# ---- the exchange -----------------------------------------------------------------------------------------

@njit(cache=True)
def _queue_depth(orders_i, orders_f, j, prev, new, power):
    change = prev - new - orders_f[j, OF_TRADED]
    orders_f[j, OF_TRADED] = 0.0
    if change < 0:
        orders_f[j, OF_AHEAD] = _pymin(orders_f[j, OF_AHEAD], float(new))
        return
    front = orders_f[j, OF_AHEAD]
    back = prev - front
    fb, ff = _pymax(back, 0.0) ** power, _pymax(front, 0.0) ** power
    prob = fb / (fb + ff) if fb + ff > 0 else 1.0
    estimate = front - (1 - prob) * change + _pymin(back - prob * change, 0.0)
    orders_f[j, OF_AHEAD] = _pymin(estimate, float(new))


@njit(cache=True, inline="always")
def _clock(ist, fs, pi, pf, orders_i, orders_f, fills_i, fills_f, gone, acts_i, acts_f, bids, asks,
           rng):
    """Exchange time has advanced (ist[EXCH_NOW]) with orders out: poisson draws, cancels take effect, arriving
    orders go live or are rejected."""
    now = ist[EXCH_NOW]
    if pi[P_MODEL] == POISSON and ist[HAS_MID]:
        j = 0
        while j < ist[N_ORDERS]:
            if not orders_i[j, O_ACTIVE]:
                j += 1
                continue
            dt = (now - orders_i[j, O_CHECKED]) / 1e9
            orders_i[j, O_CHECKED] = now
            if dt <= 0:
                j += 1
                continue
            delta = abs(orders_i[j, O_PRICE] / UNIT - fs[MID])
            rate = fs[A_NOW] * math.exp(-fs[K_NOW] * delta)
            if rate > 0 and rng.random() < _pymin(1.0, rate * dt) and _fill_order(
                    ist, fs, pi, pf, orders_i, orders_f, j, orders_i[j, O_QTY], fills_i, fills_f, gone, acts_i, acts_f,
                    R_POISSON, delta):
                continue
            j += 1
    j = 0
    while j < ist[N_ORDERS]:
        if orders_i[j, O_CANCEL] != NONE and orders_i[j, O_CANCEL] <= now:
            side, oid = orders_i[j, O_SIDE], orders_i[j, O_OID]
            _remove(orders_i, orders_f, ist, j)
            _forget_quote(ist, side, oid)
            continue
        if not orders_i[j, O_ACTIVE] and orders_i[j, O_LIVE] <= now and ist[HAS_MID]:
            side, price = orders_i[j, O_SIDE], orders_i[j, O_PRICE]
            if (side == 1 and price >= ist[BEST_ASK]) or (side == -1 and price <= ist[BEST_BID]):
                ist[C_REJECTS] += 1
                known = orders_i[j, O_LIVE] + _offset(ist) + _latency(pf[F_RESP_C], pf[F_RESP_F], fs)
                oid = orders_i[j, O_OID]
                _remove(orders_i, orders_f, ist, j)
                _gone(gone, ist, known, oid)
                slot = LOCK_BUY if side == 1 else LOCK_SELL
                ist[slot] = max(ist[slot], known + pi[P_REJECT_LOCK_NS])
                _log(acts_i, acts_f, ist, known, A_REJECT, oid, side, price, R_REJECT)
                continue
            orders_i[j, O_ACTIVE] = 1
            level = _level(bids if side == 1 else asks, price, pi)
            orders_i[j, O_LEVEL] = level
            orders_f[j, OF_AHEAD] = float(level)
            orders_i[j, O_CHECKED] = ist[EXCH_NOW]
        j += 1


@njit(cache=True, inline="always")
def _on_book(ist, fs, pi, pf, orders_i, orders_f, fills_i, fills_f, gone, acts_i, acts_f, bids, asks):
    bid, ask = ist[BEST_BID], ist[BEST_ASK]
    j = 0
    while j < ist[N_ORDERS]:
        if not orders_i[j, O_ACTIVE]:
            j += 1
            continue
        side, price = orders_i[j, O_SIDE], orders_i[j, O_PRICE]
        if (side == 1 and ask <= price) or (side == -1 and bid >= price):
            if _fill_order(ist, fs, pi, pf, orders_i, orders_f, j, orders_i[j, O_QTY], fills_i, fills_f, gone,
                           acts_i, acts_f, R_CROSSED, 0.0):
                continue
            j += 1
            continue
        if pi[P_MODEL] == QUEUE:
            new = _level(bids if side == 1 else asks, price, pi)
            if new != orders_i[j, O_LEVEL]:
                _queue_depth(orders_i, orders_f, j, orders_i[j, O_LEVEL], new, pf[F_QPOW])
                orders_i[j, O_LEVEL] = new
        j += 1


@njit(cache=True, inline="always")
def _on_trade(price, qty, buyer_is_maker, ist, fs, pi, pf, orders_i, orders_f, fills_i, fills_f, gone, acts_i,
              acts_f):
    j = 0
    while j < ist[N_ORDERS]:
        if not orders_i[j, O_ACTIVE]:
            j += 1
            continue
        side, mine = orders_i[j, O_SIDE], orders_i[j, O_PRICE]
        if (side == 1) != buyer_is_maker:
            j += 1
            continue
        through = price < mine if side == 1 else price > mine
        if through:
            if _fill_order(ist, fs, pi, pf, orders_i, orders_f, j, orders_i[j, O_QTY], fills_i, fills_f, gone,
                           acts_i, acts_f, R_THROUGH, 0.0):
                continue
        elif price == mine and pi[P_MODEL] == QUEUE:
            orders_f[j, OF_AHEAD] -= qty
            orders_f[j, OF_TRADED] += qty
            if orders_f[j, OF_AHEAD] < 0:
                filled = orders_i[j, O_QTY]
                if pi[P_PARTIAL]:
                    lot = pi[P_LOT]
                    filled = min(orders_i[j, O_QTY], np.int64(-orders_f[j, OF_AHEAD]) // lot * lot)
                if filled > 0:
                    orders_f[j, OF_AHEAD] = 0.0
                    if _fill_order(ist, fs, pi, pf, orders_i, orders_f, j, filled, fills_i, fills_f, gone,
                                   acts_i, acts_f, R_QUEUE, 0.0):
                        continue
        j += 1


@njit(cache=True, inline="always")
def _learn_fills(now, ist, fills_i, gone):
    """What the strategy knows by local time `now`: its fills, and which of its orders are gone."""
    while ist[KNOWN_PTR] < ist[N_FILLS] and fills_i[ist[KNOWN_PTR], FI_KNOWN] <= now:
        k = ist[KNOWN_PTR]
        ist[KNOWN_INV] += fills_i[k, FI_SIDE] * fills_i[k, FI_QTY]
        ist[KNOWN_PTR] = k + 1
    n = ist[N_GONE]
    kept = 0
    for g in range(n):
        if gone[g, 0] <= now:
            oid = gone[g, 1]
            if ist[Q_OID_BUY] == oid:
                ist[Q_OID_BUY] = 0
            if ist[Q_OID_SELL] == oid:
                ist[Q_OID_SELL] = 0
        else:
            gone[kept, 0] = gone[g, 0]
            gone[kept, 1] = gone[g, 1]
            kept += 1
    ist[N_GONE] = kept


@njit(cache=True)
def _drop_all(now, ist, orders_i, orders_f, acts_i, acts_f):
    while ist[N_ORDERS] > 0:
        side, oid, price = orders_i[0, O_SIDE], orders_i[0, O_OID], orders_i[0, O_PRICE]
        _remove(orders_i, orders_f, ist, 0)
        _forget_quote(ist, side, oid)
        _log(acts_i, acts_f, ist, now, A_CANCEL, oid, side, price, R_UNSYNCED)


# ---- quoting ------------------------------------------------------------------------------------------------

@njit(cache=True)
def _cancel_side(side, now, ist, fs, pf, orders_i, acts_i, acts_f, reason):
    """Returns the log row of the cancel (-1: nothing quoted on that side)."""
    slot = Q_OID_BUY if side == 1 else Q_OID_SELL
    oid = ist[slot]
    if oid == 0:
        return -1
    ist[slot] = 0
    cancel_at = now - _offset(ist) + _latency(pf[F_ENTRY_C], pf[F_ENTRY_F], fs)
    for j in range(ist[N_ORDERS]):
        if orders_i[j, O_OID] == oid:
            orders_i[j, O_CANCEL] = cancel_at
    ist[C_CANCELS] += 1
    price = ist[Q_PRICE_BUY] if side == 1 else ist[Q_PRICE_SELL]
    return _log(acts_i, acts_f, ist, now, A_CANCEL, oid, side, price, reason)


@njit(cache=True)
def _flatten(ist, fs, pi, pf, fills_i, fills_f, acts_i, acts_f, bids, asks):
    """Close the inventory against the array book as a taker, best level first (OrderBook.export order)."""
    side = -1 if ist[INVENTORY] > 0 else 1
    left = abs(ist[INVENTORY])
    step, qstep, pmin = pi[P_PRICE_STEP], pi[P_QTY_STEP], pi[P_PMIN]
    if side == -1:
        index, stop, direction, levels = ist[BB], -1, -1, bids
    else:
        index, stop, direction, levels = ist[BA], pi[P_LEVELS], 1, asks
    while index != stop and 0 <= index < pi[P_LEVELS]:
        if left <= 0:
            break
        if levels[index] > 0:
            price = (index + pmin) * step
            take = min(left, levels[index] * qstep)
            known = _fill(ist, fs, pi, pf, fills_i, fills_f, side, price, take, 0)
            _fill_lockout_and_log(ist, pi, acts_i, acts_f, side, price, take, 0, 0, R_FLATTEN, 0.0, known)
            left -= take
        index += direction


@njit(cache=True)
def _check_kill(now, ist, fs, pi, pf, orders_i, fills_i, fills_f, acts_i, acts_f, bids, asks):
    if not (pi[P_HAS_MAX_LOSS] or pi[P_HAS_MAX_DD]):
        return False
    pnl = _pnl(ist, fs, pi)
    drawdown = fs[PEAK] - pnl
    reason = R_NONE
    value = 0.0
    if pi[P_HAS_MAX_LOSS] and pnl < -pf[F_MAX_LOSS]:
        reason, value = R_KILL_LOSS, -pnl
    elif pi[P_HAS_MAX_DD] and drawdown > pf[F_MAX_DD]:
        reason, value = R_KILL_DD, drawdown
    if reason == R_NONE:
        return False
    ist[KILLED] = reason
    fs[KILL_VALUE] = value
    for side in (1, -1):
        row = _cancel_side(side, now, ist, fs, pf, orders_i, acts_i, acts_f, reason)
        if row >= 0:
            acts_f[row, 0] = value
    n = _log(acts_i, acts_f, ist, now, A_KILL, 0, 0, 0, reason)
    acts_f[n, 0] = value
    if pi[P_FLATTEN] and ist[INVENTORY] != 0:
        _flatten(ist, fs, pi, pf, fills_i, fills_f, acts_i, acts_f, bids, asks)
    return True


@njit(cache=True)
def _sigma(ist, fs, pi, pf):
    if not pi[P_SIGMA_AUTO]:
        return pf[F_SIGMA]
    return math.sqrt(fs[V_VAR]) if ist[V_HAS_VAR] else 0.0


@njit(cache=True)
def _decide(at, ist, fs, pi, pf, orders_i, fills_i, fills_f, acts_i, acts_f, bids, asks):
    """Simulator._decide up to the strategy's call: True when the strategy is to quote (state in fs)."""
    ist[C_DECISIONS] += 1
    if ist[KILLED] or _check_kill(at, ist, fs, pi, pf, orders_i, fills_i, fills_f, acts_i, acts_f, bids, asks):
        ist[HELD_BASE + H_KILL] += 1
        return False
    if ist[WARMING]:
        sigma_missing = pi[P_SIGMA_AUTO] and not ist[V_HAS_VAR]
        ak_missing = (pi[P_A_AUTO] or pi[P_K_AUTO]) and ist[N_FITS] == 0
        if sigma_missing or ak_missing:
            ist[HELD_BASE + H_WARMING] += 1
            return False
        ist[WARMING] = 0
        _log(acts_i, acts_f, ist, at, A_RESUME, 0, 0, 0, R_WARMED)
    if pi[P_HAS_PAUSE]:
        has_slow, has_fast = ist[V_HAS_VAR], ist[FV_HAS_VAR]
        slow = math.sqrt(fs[V_VAR]) if has_slow else 0.0
        fast = math.sqrt(fs[FV_VAR]) if has_fast else 0.0
        wild = has_slow and slow != 0 and has_fast and fast != 0 and fast / slow > pf[F_PAUSE]
        if wild != (ist[PAUSED] != 0):
            ist[PAUSED] = 1 if wild else 0
            ist[C_PAUSES] += 1 if wild else 0
            n = _log(acts_i, acts_f, ist, at, A_PAUSE if wild else A_RESUME, 0, 0, 0, R_VOL_RATIO)
            acts_f[n, 0] = fast
            acts_f[n, 1] = slow
        if wild:
            ist[HELD_BASE + H_PAUSE] += 1
            _cancel_side(1, at, ist, fs, pf, orders_i, acts_i, acts_f, R_REGIME)
            _cancel_side(-1, at, ist, fs, pf, orders_i, acts_i, acts_f, R_REGIME)
            return False
    fs[S_MID] = fs[MID]
    fs[S_BID] = ist[BEST_BID] / UNIT
    fs[S_ASK] = ist[BEST_ASK] / UNIT
    fs[S_Q] = ist[KNOWN_INV] / pi[P_SIZE]
    fs[S_SIGMA] = _sigma(ist, fs, pi, pf)
    fs[S_TIME_LEFT] = _pymax(0.0, (pi[P_HORIZON] - at) / 1e9)
    return True


@njit(cache=True)
def _builtin_quote(ist, fs, pi, pf, numbers):
    """The built-in strategies (strategies.py) on the state in fs: raw bid, ask; numbers of the reason."""
    strategy = pi[P_STRATEGY]
    mid = fs[S_MID]
    if strategy == S_JOIN:
        return fs[S_BID], fs[S_ASK]
    if strategy == S_FIXED:
        return mid - pf[F_HALF], mid + pf[F_HALF]
    g, sigma, k, a, q = pf[F_GAMMA], fs[S_SIGMA], fs[K_NOW], fs[A_NOW], fs[S_Q]
    if strategy == S_AS:
        var = sigma * sigma * fs[S_TIME_LEFT]
        r = mid - q * g * var
        spread = g * var + (2.0 / g) * math.log1p(g / k)
        numbers[0], numbers[1] = r, spread
        return r - spread / 2, r + spread / 2
    c1 = math.log1p(g / k) / g
    power = (1 + g / k) ** (k / g + 1)
    if math.isinf(power):  # Python raises OverflowError here: the reference stops with a StrategyError
        numbers[2] = 1.0
        return math.nan, math.nan
    c2 = math.sqrt(g / (2 * a * k) * power)
    half, skew = c1 + 0.5 * sigma * c2, sigma * c2
    numbers[0], numbers[1] = half, skew
    bid_depth, ask_depth = half + skew * q, half - skew * q
    return mid - bid_depth, mid + ask_depth


@njit(cache=True)
def _quote_row(acts_i, acts_f, row, flags, numbers, ref):
    acts_i[row, AI_FLAGS] |= flags
    acts_i[row, AI_REF] = ref
    acts_f[row, 0] = numbers[0]
    acts_f[row, 1] = numbers[1]
    acts_f[row, 2] = numbers[3]


@njit(cache=True)
def _work_side(side, price, size, now, flags, soft_q, soft_scale, numbers, ref, ist, fs, pi, pf, orders_i,
               orders_f, acts_i, acts_f):
    """price < 0: the side is not quoted (flags say why)."""
    oid_slot = Q_OID_BUY if side == 1 else Q_OID_SELL
    if price < 0:
        row = _cancel_side(side, now, ist, fs, pf, orders_i, acts_i, acts_f, R_DECISION)
        if row >= 0:
            _quote_row(acts_i, acts_f, row, flags, numbers, ref)
            acts_f[row, 3], acts_f[row, 4] = soft_q, soft_scale
        return
    if ist[oid_slot] != 0:
        current_price = ist[Q_PRICE_BUY] if side == 1 else ist[Q_PRICE_SELL]
        current_size = ist[Q_SIZE_BUY] if side == 1 else ist[Q_SIZE_SELL]
        band = pi[P_TOL_TICKS] * pi[P_TICK]
        if abs(current_price - price) <= band and current_size == size:
            ist[C_KEPT] += 1
            return
        row = _cancel_side(side, now, ist, fs, pf, orders_i, acts_i, acts_f, R_DECISION)
        _quote_row(acts_i, acts_f, row, flags | W_REQUOTE, numbers, ref)
        acts_f[row, 3], acts_f[row, 4] = soft_q, soft_scale
        acts_i[row, AI_TARGET] = price
    entry = _latency(pf[F_ENTRY_C], pf[F_ENTRY_F], fs)
    sent_exchange = now - _offset(ist)
    n = ist[N_ORDERS]
    oid = ist[NEXT_OID]
    ist[NEXT_OID] = oid + 1
    orders_i[n, O_OID] = oid
    orders_i[n, O_SIDE] = side
    orders_i[n, O_PRICE] = price
    orders_i[n, O_QTY] = size
    orders_i[n, O_LIVE] = sent_exchange + entry
    orders_i[n, O_SIZE] = size
    orders_i[n, O_CANCEL] = NONE
    orders_i[n, O_ACTIVE] = 0
    orders_i[n, O_LEVEL] = 0
    orders_i[n, O_CHECKED] = 0
    orders_f[n, OF_AHEAD] = 0.0
    orders_f[n, OF_TRADED] = 0.0
    ist[N_ORDERS] = n + 1
    ist[oid_slot] = oid
    if side == 1:
        ist[Q_PRICE_BUY], ist[Q_SIZE_BUY] = price, size
    else:
        ist[Q_PRICE_SELL], ist[Q_SIZE_SELL] = price, size
    ist[C_ORDERS] += 1
    row = _log(acts_i, acts_f, ist, now, A_PLACE, oid, side, price, R_DECISION)
    acts_i[row, AI_QTY] = size
    _quote_row(acts_i, acts_f, row, flags, numbers, ref)
    acts_f[row, 3], acts_f[row, 4] = soft_q, soft_scale


@njit(cache=True)
def _apply_quote(at, bid, ask, numbers, ref, ist, fs, pi, pf, orders_i, orders_f, acts_i, acts_f):
    """The practical layer (Simulator._practical + _work_side) on the strategy's raw prices (nan: None)."""
    has_bid, has_ask = not math.isnan(bid), not math.isnan(ask)
    if has_bid and has_ask:
        fs[STRATEGY_HALF] += (ask - bid) / 2
        fs[TOUCH_HALF] += (fs[S_ASK] - fs[S_BID]) / 2
        ist[TWO_SIDED] += 1
    q = ist[KNOWN_INV] / pi[P_SIZE]
    common = 0
    if has_bid and has_ask:
        center, spread = (bid + ask) / 2, ask - bid
        floor = pf[F_MIN_SPREAD]
        if pi[P_FEE_AWARE] and pf[F_MAKER] > 0:
            floor = _pymax(floor, 2 * pf[F_MAKER] * fs[S_MID])
        if spread < floor:
            ist[HELD_BASE + (H_FEE_FLOOR if floor > pf[F_MIN_SPREAD] else H_MIN_SPREAD)] += 1
            spread = floor
            common |= W_WIDENED
            numbers[3] = floor
        if pi[P_HAS_MAX_SPREAD] and spread > pf[F_MAX_SPREAD]:
            ist[HELD_BASE + H_MAX_SPREAD] += 1
            spread = pf[F_MAX_SPREAD]
            common |= W_NARROWED
        bid, ask = center - spread / 2, center + spread / 2
    tick = pi[P_TICK]
    for side in (1, -1):
        price = bid if side == 1 else ask
        flags = common
        soft_q, soft_scale = 0.0, 0.0
        if math.isnan(price):
            _work_side(side, -1, 0, at, flags | W_NO_QUOTE, soft_q, soft_scale, numbers, ref, ist, fs, pi, pf,
                       orders_i, orders_f, acts_i, acts_f)
            continue
        ticks = price * UNIT / tick
        if side == 1:
            units = np.int64(math.floor(ticks + 1e-9)) * tick
            if units >= ist[BEST_ASK]:
                units = ist[BEST_ASK] - tick
                flags |= W_POST_ONLY
        else:
            units = np.int64(math.ceil(ticks - 1e-9)) * tick
            if units <= ist[BEST_BID]:
                units = ist[BEST_BID] + tick
                flags |= W_POST_ONLY
        size = pi[P_SIZE]
        growing = q * side >= 0
        if growing and abs(q) >= pf[F_HARD]:
            ist[HELD_BASE + H_HARD] += 1
            _work_side(side, -1, 0, at, flags | W_HARD, abs(q), soft_scale, numbers, ref, ist, fs, pi, pf,
                       orders_i, orders_f, acts_i, acts_f)
            continue
        if growing and abs(q) > pf[F_SOFT]:
            if pf[F_HARD] > pf[F_SOFT]:
                scale = (pf[F_HARD] - abs(q)) / (pf[F_HARD] - pf[F_SOFT])
            else:
                scale = 0.0
            lot = pi[P_LOT]
            size = np.int64(pi[P_SIZE] * scale) // lot * lot
            flags |= W_SOFT
            soft_q, soft_scale = abs(q), scale
            if size <= 0:
                ist[HELD_BASE + H_SOFT] += 1
                _work_side(side, -1, 0, at, flags, soft_q, soft_scale, numbers, ref, ist, fs, pi, pf, orders_i,
                           orders_f, acts_i, acts_f)
                continue
        lock = ist[LOCK_BUY] if side == 1 else ist[LOCK_SELL]
        if at < lock:
            ist[HELD_BASE + H_LOCKOUT] += 1
            _work_side(side, -1, 0, at, flags | W_LOCKOUT, soft_q, soft_scale, numbers, ref, ist, fs, pi, pf,
                       orders_i, orders_f, acts_i, acts_f)
            continue
        if units <= 0:
            _work_side(side, -1, 0, at, flags | W_NOT_POSITIVE, soft_q, soft_scale, numbers, ref, ist, fs, pi,
                       pf, orders_i, orders_f, acts_i, acts_f)
            continue
        _work_side(side, units, size, at, flags, soft_q, soft_scale, numbers, ref, ist, fs, pi, pf, orders_i,
                   orders_f, acts_i, acts_f)


# ---- the series ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _sample(now, ist, fs, pi, pf, series_ts, series_f):
    if ist[HAS_STAT]:
        dt = (now - ist[LAST_STAT]) / 1e9
        q = abs(ist[INVENTORY]) / pi[P_SIZE]
        fs[ABS_Q_TIME] += q * dt
        fs[SAMPLED_TIME] += dt
        fs[TIME_SOFT] += dt if q > pf[F_SOFT] else 0.0
        fs[TIME_HARD] += dt if q >= pf[F_HARD] else 0.0
    ist[HAS_STAT] = 1
    ist[LAST_STAT] = now
    pnl = _pnl(ist, fs, pi)
    fs[PEAK] = _pymax(fs[PEAK], pnl)
    fs[MAX_DD] = _pymax(fs[MAX_DD], fs[PEAK] - pnl)
    n = ist[N_SERIES]
    series_ts[n] = now
    series_f[n, 0] = fs[MID]
    series_f[n, 1] = ist[Q_PRICE_BUY] / UNIT if ist[Q_OID_BUY] else math.nan
    series_f[n, 2] = ist[Q_PRICE_SELL] / UNIT if ist[Q_OID_SELL] else math.nan
    series_f[n, 3] = ist[INVENTORY] / UNIT
    series_f[n, 4] = pnl
    series_f[n, 5] = fs[SPREAD_CAPTURE]
    series_f[n, 6] = fs[INVENTORY_PNL]
    series_f[n, 7] = -fs[FEES]
    ist[N_SERIES] = n + 1


# ---- the array book -----------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _apply_levels(kind, side, price, qty, start, end, ist, pi, bids, asks):
    pmin = pi[P_PMIN]
    levels = pi[P_LEVELS]
    for r in range(start, end + 1):
        k = kind[r]
        if k == CLEAR:  # only the span levels were set in: a deep book's range can be millions of ticks
            low, high = ist[SET_LOW], ist[SET_HIGH]
            if low <= high:
                bids[low:high + 1] = 0
                asks[low:high + 1] = 0
            ist[SET_LOW], ist[SET_HIGH] = levels, -1
            ist[BB], ist[BA], ist[NB], ist[NA] = -1, levels, 0, 0
        elif k == LEVEL:
            index = price[r] - pmin
            new = qty[r]
            if new > 0:
                ist[SET_LOW] = min(ist[SET_LOW], index)
                ist[SET_HIGH] = max(ist[SET_HIGH], index)
            if side[r] == 1:
                old = bids[index]
                bids[index] = new
                if new > 0:
                    ist[NB] += 1 if old == 0 else 0
                    ist[BB] = max(ist[BB], index)
                elif old > 0:
                    ist[NB] -= 1
                    if index == ist[BB]:
                        b = index
                        while b >= 0 and bids[b] == 0:
                            b -= 1
                        ist[BB] = b
            else:
                old = asks[index]
                asks[index] = new
                if new > 0:
                    ist[NA] += 1 if old == 0 else 0
                    ist[BA] = min(ist[BA], index)
                elif old > 0:
                    ist[NA] -= 1
                    if index == ist[BA]:
                        a = index
                        while a < levels and asks[a] == 0:
                            a += 1
                        ist[BA] = a


# ---- the book alone ---------------------------------------------------------------------------------------

# counters of `rebuild_book` (its `counts` vector)
BK_LEVELS, BK_MESSAGES, BK_VALID_SPANS = range(3)
N_BK = 3


@njit(cache=True)
def rebuild_book(kind, flags, side, price, qty, ist, pi, bids, asks, counts):
    """The array book alone (no simulator) over rows that end at an END row: `_apply_levels` message by
    message, VALID / INVALID kept in ist[VALID_NOW], LEVEL rows, messages and valid spans added to `counts`.
    State is in ist (BB, BA, NB, NA, SET_LOW, SET_HIGH, VALID_NOW), so the next chunk resumes it. Returns
    the best bid and ask in ticks of the day's price step after the last message (-1 while the book is
    invalid or that side is empty; and just after a VALID row, as the whole book comes with the next message)."""
    n = len(kind)
    levels = 0
    messages = 0
    i = 0
    while i < n:
        e = i
        while True:
            if kind[e] == LEVEL:
                levels += 1
            if flags[e] & END:
                break
            e += 1
        k = kind[e]
        if k == VALID:
            ist[VALID_NOW] = 1
            counts[BK_VALID_SPANS] += 1
        elif k == INVALID:
            ist[VALID_NOW] = 0
        else:
            _apply_levels(kind, side, price, qty, i, e, ist, pi, bids, asks)
        messages += 1
        i = e + 1
    counts[BK_LEVELS] += levels
    counts[BK_MESSAGES] += messages
    if not ist[VALID_NOW] or (n > 0 and kind[n - 1] == VALID):
        return -1, -1
    bid = ist[BB] + pi[P_PMIN] if ist[NB] > 0 else -1
    ask = ist[BA] + pi[P_PMIN] if ist[NA] > 0 else -1
    return bid, ask


# ---- the driver loop ----------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _room(ist, pi, orders_i, fills_i, gone, series_ts, feed, acts_i, trades_ts, trades_delta, hours):
    """Before a message: enough room in every output for the most it can add; else the FULL mask."""
    n_orders = ist[N_ORDERS]
    flatten = ist[NB] + ist[NA] if pi[P_FLATTEN] and not ist[KILLED] else 0
    mask = 0
    if n_orders + 2 > orders_i.shape[0]:
        mask |= FULL_ORDERS
    if ist[N_FILLS] + 2 * n_orders + 2 + flatten > fills_i.shape[0]:
        mask |= FULL_FILLS
    if ist[N_GONE] + 2 * n_orders + 2 > gone.shape[0]:
        mask |= FULL_GONE
    if ist[N_SERIES] + 2 > series_ts.shape[0]:
        mask |= FULL_SERIES
    if ist[N_FEED] + 1 > feed.shape[0]:
        mask |= FULL_FEED
    if ist[N_ACTS] + 4 * n_orders + 12 + flatten > acts_i.shape[0]:
        mask |= FULL_ACTS
    if ist[TR_END] + 1 > trades_ts.shape[0]:
        start = ist[TR_START]
        if start > 0:  # trades already out of the window: drop them
            count = ist[TR_END] - start
            trades_ts[:count] = trades_ts[start:ist[TR_END]]
            trades_delta[:count] = trades_delta[start:ist[TR_END]]
            ist[TR_START], ist[TR_END] = 0, count
        if ist[TR_END] + 1 > trades_ts.shape[0]:
            mask |= FULL_TRADES
    if ist[N_HOURS] + 1 > hours.shape[0]:
        mask |= FULL_HOURS
    ist[FULL_MASK] = mask
    return mask == 0


@njit(cache=True, inline="always")
def _body(s, e, kind, recv, exch, side, price, qty, ist, fs, pi, pf, bids, asks, orders_i, orders_f, fills_i,
          fills_f, gone, acts_i, acts_f, series_ts, series_f, feed, trades_ts, trades_delta, hours, rng):
    """Simulator.on_event after the decision; True when A and k are to be re-fitted (ist[FIT_NOW])."""
    now = recv[e]
    k = kind[e]
    if k == LEVEL or k == CLEAR or k == EMPTY:
        if ist[NB] == 0 or ist[NA] == 0:
            return False
        ex = exch[e]
        if ex != -1:
            lat = now - ex
            feed[ist[N_FEED]] = lat
            ist[N_FEED] += 1
            if not ist[HAS_OFFSET] or lat < ist[CLOCK_OFFSET]:
                ist[HAS_OFFSET] = 1
                ist[CLOCK_OFFSET] = lat
            fs[FEED_LAT] += 0.01 * ((lat - ist[CLOCK_OFFSET]) - fs[FEED_LAT])
        else:
            ex = now - _offset(ist) - np.int64(fs[FEED_LAT])
        ist[EXCH_NOW] = max(ist[EXCH_NOW], ex)
        if ist[N_ORDERS] > 0:
            _clock(ist, fs, pi, pf, orders_i, orders_f, fills_i, fills_f, gone, acts_i, acts_f, bids, asks, rng)
        step, pmin = pi[P_PRICE_STEP], pi[P_PMIN]
        bid = (ist[BB] + pmin) * step
        ask = (ist[BA] + pmin) * step
        ist[BEST_BID], ist[BEST_ASK] = bid, ask
        mid = (bid + ask) / (2 * UNIT)
        if (ist[HAS_MID] or ist[MARKED]) and mid != fs[MID]:
            fs[INVENTORY_PNL] += ist[INVENTORY] / UNIT * (mid - fs[MID])
        fs[MID] = mid
        ist[HAS_MID] = 1
        _vol_update(ist, fs, V_HAS_NEXT, V_NEXT, V_HAS_VAR, V_LAST_MID, V_SUM, V_WEIGHT, V_VAR, pf[F_ALPHA_SLOW],
                    pi[P_VOL_STEP_NS], pf[F_VOL_STEP_S], now, mid)
        _vol_update(ist, fs, FV_HAS_NEXT, FV_NEXT, FV_HAS_VAR, FV_LAST_MID, FV_SUM, FV_WEIGHT, FV_VAR,
                    pf[F_ALPHA_FAST], pi[P_VOL_STEP_NS], pf[F_VOL_STEP_S], now, mid)
        if ist[N_ORDERS] > 0:
            _on_book(ist, fs, pi, pf, orders_i, orders_f, fills_i, fills_f, gone, acts_i, acts_f, bids, asks)
    elif k == TRADE:
        ex = exch[e]
        if ex == -1:
            ex = now - _offset(ist) - np.int64(fs[FEED_LAT])
        ist[EXCH_NOW] = max(ist[EXCH_NOW], ex)
        if ist[N_ORDERS] > 0:
            _clock(ist, fs, pi, pf, orders_i, orders_f, fills_i, fills_f, gone, acts_i, acts_f, bids, asks, rng)
        trade_price = price[e] * pi[P_PRICE_STEP]
        trade_qty = qty[e] * pi[P_QTY_STEP]
        buyer_is_maker = side[e] == -1
        _count_volume(now, trade_qty, ist, hours)
        if ist[HAS_MID] and ist[VALID_NOW]:
            px = trade_price / UNIT
            delta = fs[MID] - px if buyer_is_maker else px - fs[MID]
            n = ist[TR_END]
            trades_ts[n] = now
            trades_delta[n] = _pymax(0.0, delta)
            ist[TR_END] = n + 1
            if not ist[HAS_TR_FIRST]:
                ist[HAS_TR_FIRST] = 1
                ist[TR_FIRST] = now
            if ist[N_ORDERS] > 0:
                _on_trade(trade_price, trade_qty, buyer_is_maker, ist, fs, pi, pf, orders_i, orders_f, fills_i,
                          fills_f, gone, acts_i, acts_f)
    elif k == INVALID:
        if ist[VALID_NOW]:
            ist[C_UNSYNCED] += 1
            ist[HAS_UNSYNCED] = 1
            ist[UNSYNCED_SINCE] = now
            _log(acts_i, acts_f, ist, now, A_STOP, 0, 0, 0, R_UNSYNCED)
        ist[VALID_NOW] = 0
        _drop_all(now, ist, orders_i, orders_f, acts_i, acts_f)
        return False
    elif k == VALID:
        if not ist[VALID_NOW]:
            _log(acts_i, acts_f, ist, now, A_RESUME, 0, 0, 0, R_BOOK_VALID)
            if ist[HAS_UNSYNCED]:
                ist[UNSYNCED_NS] += now - ist[UNSYNCED_SINCE]
                ist[HAS_UNSYNCED] = 0
        ist[VALID_NOW] = 1
        return False
    else:  # TIME: a book message while the book is invalid
        return False
    _learn_fills(now, ist, fills_i, gone)
    if not ist[HAS_MID] or not ist[VALID_NOW]:
        return False
    if now >= ist[NEXT_SAMPLE]:
        _sample(now, ist, fs, pi, pf, series_ts, series_f)
        ist[NEXT_SAMPLE] = now + pi[P_SAMPLE_NS]
    if now >= ist[NEXT_FIT]:
        ist[FIT_NOW] = now
        if pi[P_A_AUTO] or pi[P_K_AUTO]:
            window_start = now - pi[P_WINDOW_NS]
            while ist[TR_START] < ist[TR_END] and trades_ts[ist[TR_START]] < window_start:
                ist[TR_START] += 1
            return True
        ist[FITTED] = 1
        _after_fit(ist, pi)
    return False


@njit(cache=True, inline="always")
def _count_volume(now, qty, ist, hours):
    """Market volume while simulating, in total and per hour of arrival (hours: rows of hour, volume)."""
    ist[MARKET_VOLUME] += qty
    hour = now // HOUR_NS
    n = ist[N_HOURS]
    for h in range(n - 1, -1, -1):
        if hours[h, 0] == hour:
            hours[h, 1] += qty
            return
    hours[n, 0] = hour
    hours[n, 1] = qty
    ist[N_HOURS] = n + 1


@njit(cache=True)
def _after_fit(ist, pi):
    fitted = ist[FITTED] or ist[N_FITS] > 0
    ist[NEXT_FIT] = ist[FIT_NOW] + (pi[P_REFIT_NS] if fitted else pi[P_RETRY_NS])


@njit(cache=True)
def run(kind, flags, recv, exch, side, price, qty, ist, fs, pi, pf, bids, asks, orders_i, orders_f, fills_i,
        fills_f, gone, acts_i, acts_f, series_ts, series_f, feed, trades_ts, trades_delta, hours, numbers, rng):
    """Walk rows from ist[POS] to the end of the arrays; returns DONE, FULL, QUOTE, FIT or BAD_QUOTE."""
    n = len(kind)
    i = ist[POS]
    while i < n:
        e = i
        while not (flags[e] & END):
            e += 1
        phase = ist[PHASE]
        if phase == PH_START:
            if not _room(ist, pi, orders_i, fills_i, gone, series_ts, feed, acts_i, trades_ts, trades_delta, hours):
                ist[POS] = i
                return FULL
            _apply_levels(kind, side, price, qty, i, e, ist, pi, bids, asks)
            if not ist[STARTED]:
                k = kind[e]
                if (k == LEVEL or k == CLEAR or k == EMPTY) and ist[NB] > 0 and ist[NA] > 0:
                    ist[STARTED] = 1
                    ist[VALID_NOW] = 1
                else:
                    i = e + 1
                    continue
            now = recv[e]
            if not ist[HAS_FIRST]:
                ist[HAS_FIRST] = 1
                ist[FIRST_TS] = now
                if not pi[P_HAS_GRID]:
                    ist[NEXT_DECISION] = now
            ist[LAST_TS] = now
            phase = PH_BODY
            if now >= ist[NEXT_DECISION] and ist[VALID_NOW] and ist[HAS_MID]:
                interval = pi[P_INTERVAL]
                at = now - (now - ist[NEXT_DECISION]) % interval
                ist[DEC_AT] = at
                _learn_fills(at, ist, fills_i, gone)
                if _decide(at, ist, fs, pi, pf, orders_i, fills_i, fills_f, acts_i, acts_f, bids, asks):
                    if pi[P_STRATEGY] == S_USER:
                        ist[POS] = i
                        ist[PHASE] = PH_QUOTED
                        return QUOTE
                    for j in range(4):
                        numbers[j] = 0.0
                    bid, ask = _builtin_quote(ist, fs, pi, pf, numbers)
                    if not (math.isfinite(bid) and math.isfinite(ask)):
                        ist[POS] = i
                        ist[PHASE] = PH_QUOTED  # the driver raises; resuming is not expected
                        fs[RAW_BID], fs[RAW_ASK] = bid, ask
                        return BAD_QUOTE
                    _apply_quote(at, bid, ask, numbers, -1, ist, fs, pi, pf, orders_i, orders_f, acts_i, acts_f)
                ist[NEXT_DECISION] = at + interval
        elif phase == PH_QUOTED:  # resumed after the user strategy quoted (fs[RAW_BID], fs[RAW_ASK])
            for j in range(4):
                numbers[j] = 0.0
            at = ist[DEC_AT]
            _apply_quote(at, fs[RAW_BID], fs[RAW_ASK], numbers, ist[USER_REASON], ist, fs, pi, pf, orders_i,
                         orders_f, acts_i, acts_f)
            ist[NEXT_DECISION] = at + pi[P_INTERVAL]
            phase = PH_BODY
        if phase == PH_BODY:
            if _body(i, e, kind, recv, exch, side, price, qty, ist, fs, pi, pf, bids, asks, orders_i, orders_f,
                     fills_i, fills_f, gone, acts_i, acts_f, series_ts, series_f, feed, trades_ts, trades_delta,
                     hours, rng):
                ist[POS] = i
                ist[PHASE] = PH_FITTED
                return FIT
        elif phase == PH_FITTED:  # resumed after the driver's fit (ist[FITTED]; A, k in fs)
            _after_fit(ist, pi)
        ist[PHASE] = PH_START
        i = e + 1
    ist[POS] = n
    return DONE


@njit(cache=True)
def finish(ist, fs, pi, pf, fills_i, gone, series_ts, series_f):
    """Simulator.finish: close the unsynced span, learn the fills, a last sample (`_room` keeps space for it)."""
    if ist[HAS_UNSYNCED] and ist[HAS_FIRST]:
        ist[UNSYNCED_NS] += ist[LAST_TS] - ist[UNSYNCED_SINCE]
        ist[HAS_UNSYNCED] = 0
    if ist[HAS_FIRST] and ist[HAS_MID]:
        _learn_fills(ist[LAST_TS], ist, fills_i, gone)
        _sample(ist[LAST_TS], ist, fs, pi, pf, series_ts, series_f)
