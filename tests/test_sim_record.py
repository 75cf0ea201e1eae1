"""The backtest's figures come from the plain `SimResult` record, as they came from the simulator before.

A small deterministic day from the simulator tests: its summary is frozen (values from the reference
`Simulator` before results.py read the record), and the JSON the CLI writes for it is the same to the byte.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction

import orjson

from replay.sim.accounting import mark_to_market
from replay.sim.record import from_simulator
from replay.sim.results import fills_of, series_of, summarize
from tests.test_sim import Fixed, make, swing

FROZEN_SUMMARY = {
    "symbol": "BTCUSDT", "currency": "USDT", "strategy": "as", "fill_model": "queue", "stopped": None,
    "start_ns": 1700000000001000000, "end_ns": 1700000003841000000, "span_s": 3.84, "order_size": 0.001,
    "tick": 0.1,
    "pnl": {"total": 0.0025650299999999886, "realized": 0.0022851851851851705,
            "unrealized": 0.00021481481481481525, "fees": 6.503e-05, "spread_capture": 0.0007999999999999972,
            "inventory": 0.0016999999999999884},
    "fills": {"count": 13, "buys": 6, "sells": 7, "volume": 0.013, "orders": 18,
              "fill_ratio": 0.7222222222222222, "market_volume": 2.4, "market_share": 0.005416666666666667},
    "orders": {"orders": 18, "cancels": 4, "rejects": 3, "kept": 1, "decisions": 77, "unsynced_spans": 0,
               "pauses": 0},
    "inventory": {"final": -0.001, "mean_abs_q": 2.650520833333333, "max_abs": 0.003,
                  "time_above_soft": 0.7666666666666667, "time_at_hard": 0.0},
    "quotes": {"bid_distance": 0.12999999999999828, "ask_distance": 0.25000000000000405,
               "bid_time": 0.08064516129032258, "ask_time": 0.11290322580645161},
    "risk": {"max_drawdown": 0.0024000000000000132,
             "sharpe": {"per_minute": None, "annualised": None, "minutes": 0}},
    "model": {"sigma_end": 1.0, "A_end": 1.0, "k_end": 1.0, "fits": 0, "warmed_up": True, "fits_first": [],
              "fits_last": []},
    "latency_ms": {"clock_offset": 1.0, "feed_p50": 0.0, "feed_p99": 0.0, "entry": 10.0, "response": 10.0},
    "per_hour": [{"hour": "23:00", "pnl": 0.0025650299999999886, "fills": 13, "volume": 0.013,
                  "market_volume": 2.4, "share": 0.005416666666666667,
                  "mean_abs_inventory": 0.0025806451612903226}],
    "constraints": {"share_of_time": {"lockout": 0.48828125, "soft_limit": 0.390625}, "unsynced": 0.0,
                    "strategy_half_spread": 0.14999999999999858, "touch_half_spread": 0.050000000000000204,
                    "maker_fee": -5e-05, "gamma": 0.1},
}
# sha256 of orjson {"summary", "series", "fills"} for this day, as run.py writes it (before the record)
FROZEN_JSON_SHA256 = "56208be5ae8295cfdc3c67096b3af861bea97864cae61fde6e386621fb6b1c12"


def small_day():
    """4 s of quoting every 50 ms: fills both ways, lockouts, the soft limit, rejects, requotes."""
    sim, m = make(Fixed(99.9, 100.2), requote_interval=0.05, fill_lockout=0.1, soft_limit=2.0, hard_limit=4.0,
                  sample_interval=0.05)
    swing(m, 120)
    sim.finish()
    return sim


def test_summary_of_the_record_is_the_frozen_summary():
    sim = small_day()
    record = from_simulator(sim)
    assert summarize(record) == FROZEN_SUMMARY
    assert record.pnl() == sim.pnl()


def test_backtest_json_is_unchanged_to_the_byte():
    record = from_simulator(small_day())
    result = {"summary": summarize(record), "series": series_of(record), "fills": fills_of(record)}
    blob = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
    assert hashlib.sha256(blob).hexdigest() == FROZEN_JSON_SHA256
    assert len(result["fills"]["price"]) == 13 and result["fills"]["liquidity"][0] == "maker"


def test_pnl_divides_the_exact_cash_exactly():
    # cash in 1e-16 units beyond 2^53: int / int rounds once; cash / 1e16 would round the cash first
    cash = 647970824583893261905
    assert mark_to_market(cash, 0, None, 0.0) == float(Fraction(cash, 10**16)) != cash / 1e16
