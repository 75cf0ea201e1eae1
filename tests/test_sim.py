"""The market-making simulator: quote formulas, practical layer, fill models, latency, accounting, CLI.

Constructed books and trades drive `Simulator` directly (sans-I/O); the CLI runs on a day recorded from
the synthetic venue and, when ../shared is there, on the imported real USD-M capture.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from recorder.book import OrderBook
from recorder.markets import get_market
from replay.engine import BOOK_INVALID, DEPTH, TRADE, DayReplay, Pacer, ReplayEvent, paced
from replay.sim.calibrate import VolatilityEstimator, fit_intensity
from replay.sim.engine import BUY, SELL, UNIT, Simulator, StrategyError
from replay.sim.params import SimConfigError, SimParams, load_params
from replay.sim.record import from_simulator
from replay.sim.results import summarize
from replay.sim.run import backtest
from replay.sim.strategies import GLFT, AvellanedaStoikov, MarketState, Quote, load_strategy
from tests.synthetic_day import record_day, recorded_date

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "realdata" / "hftbacktest"
MS = 1_000_000
T0 = 1_700_000_000_000_000_000
TICK, LOT = UNIT // 10, UNIT // 1000  # 0.1 and 0.001


def state(q: float = 0.0, **kw) -> MarketState:
    base = {"ts": 0, "mid": 100.0, "best_bid": 99.95, "best_ask": 100.05, "tick": 0.1, "q": q, "sigma": 2.0, "A": 140.0, "k": 1.5,
                "time_left": 0.5}
    base.update(kw)
    return MarketState(**base)


# ---- formulas --------------------------------------------------------------------------------------


def test_avellaneda_stoikov_quotes_match_hand_computed_values():
    # r = 100 − 2·0.1·2²·0.5 = 99.6; spread = 0.1·4·0.5 + (2/0.1)·ln(1 + 0.1/1.5) = 0.2 + 1.2907704 = 1.4907704
    quote = AvellanedaStoikov(SimParams(gamma=0.1)).quote(state(q=2))
    assert quote.bid == pytest.approx(99.6 - 1.4907704227 / 2, abs=1e-9)
    assert quote.ask == pytest.approx(99.6 + 1.4907704227 / 2, abs=1e-9)


def test_glft_quotes_match_hand_computed_values():
    # c1 = ln(1 + 0.1/1.5)/0.1 = 0.64538521; c2 = √(0.1/(2·140·1.5)·(1+0.1/1.5)^16) = 0.02585861
    # half spread = c1 + σ·c2/2 = 0.67124382; skew = σ·c2 = 0.05171722
    flat = GLFT(SimParams(gamma=0.1)).quote(state(q=0))
    assert 100 - flat.bid == pytest.approx(0.6712438194, abs=1e-9)
    assert flat.ask - 100 == pytest.approx(0.6712438194, abs=1e-9)
    long = GLFT(SimParams(gamma=0.1)).quote(state(q=3))
    assert 100 - long.bid == pytest.approx(0.6712438194 + 3 * 0.0517172161, abs=1e-9)
    assert long.ask - 100 == pytest.approx(0.6712438194 - 3 * 0.0517172161, abs=1e-9)


@pytest.mark.parametrize("cls", [AvellanedaStoikov, GLFT])
def test_inventory_skews_quotes_away_from_the_position(cls):
    strategy = cls(SimParams(gamma=0.1))
    flat, long, short = (strategy.quote(state(q=q)) for q in (0, 2, -2))
    assert long.bid < flat.bid and long.ask < flat.ask  # long: sell sooner, buy less eagerly
    assert short.bid > flat.bid and short.ask > flat.ask


def test_as_spread_shrinks_towards_the_horizon():
    strategy = AvellanedaStoikov(SimParams(gamma=0.1))
    early, late = strategy.quote(state(time_left=1.0)), strategy.quote(state(time_left=0.0))
    assert early.ask - early.bid > late.ask - late.bid == pytest.approx((2 / 0.1) * math.log1p(0.1 / 1.5))


def test_as_horizon_is_the_window_end_or_the_end_of_the_data():
    import datetime as dt
    from types import SimpleNamespace

    from recorder.window import TradingWindow
    from replay.sim.run import horizon_ns

    window = TradingWindow(dt.time(8), dt.time(22))
    start, end = window.bounds_for("2024-05-01")
    inside = SimpleNamespace(date=dt.date(2024, 5, 1), first_event_ns=lambda: start + 3600 * 10**9)
    assert horizon_ns(SimParams(), inside, start + 7200 * 10**9, window) == end
    assert horizon_ns(SimParams(horizon="span"), inside, start + 7200 * 10**9, window) == start + 7200 * 10**9
    night = SimpleNamespace(date=dt.date(2024, 5, 1), first_event_ns=lambda: start - 7200 * 10**9)  # 06:00
    assert horizon_ns(SimParams(), night, start - 3600 * 10**9, window) == start - 3600 * 10**9


# ---- parameters ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, name", [
    ({"gamma": 0}, "gamma"), ({"gamma": -1}, "gamma"), ({"k": 0}, "k"), ({"k": "-2"}, "k"),
    ({"order_size": "-0.1"}, "order_size"), ({"soft_limit": 5, "hard_limit": 2}, "hard_limit"),
    ({"fill_model": "magic"}, "fill_model"), ({"entry_latency": "soon"}, "entry_latency"),
    ({"strategy": "nonsense"}, "strategy"), ({"colour": "red"}, "colour"),
])
def test_bad_parameters_name_the_parameter(overrides, name):
    with pytest.raises(SimConfigError, match=name):
        load_params(None, overrides)


def test_config_file_and_flags(tmp_path):
    path = tmp_path / "sim.yaml"
    path.write_text("simulator:\n  gamma: 0.05\n  requote_interval: 250ms\n  k: auto\n")
    params = load_params(path, {"gamma": "0.2", "fill_model": None})
    assert params.gamma == 0.2 and params.requote_interval == 0.25 and params.k == "auto"


def test_example_config_lists_the_defaults():
    assert load_params(ROOT / "config" / "simulator.example.yaml") == SimParams().check()


def test_example_user_strategy_skews_with_inventory():
    params = load_params(None, {"strategy": "replay.sim.example_strategy:InventorySkewedTouch",
                                "strategy_options": '{"skew_ticks": 2}'})
    strategy = load_strategy(params)
    flat, long = strategy.quote(state(q=0)), strategy.quote(state(q=3))
    assert (flat.bid, flat.ask) == (99.95, 100.05)
    assert long.bid == pytest.approx(99.95 - 2 * 0.1 * 3) and long.ask == 100.05


def test_user_strategy_from_a_file(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("from replay.sim.strategies import Quote\n"
                    "class Skewed:\n"
                    "    def __init__(self, params, offset=1.0):\n        self.offset = offset\n"
                    "    def quote(self, state):\n"
                    "        return Quote(state.mid - self.offset, state.mid + self.offset, 'mine')\n")
    params = SimParams(strategy=f"{path}:Skewed", strategy_options={"offset": 2.5}).check()
    assert load_strategy(params).quote(state()).bid == 97.5
    with pytest.raises(SimConfigError, match="has no 'Nope'"):
        load_strategy(SimParams(strategy=f"{path}:Nope"))


# ---- the simulated exchange ------------------------------------------------------------------------


def book(bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> OrderBook:
    b = OrderBook()
    b.load_levels([(round(p * UNIT), round(q * UNIT)) for p, q in bids],
                  [(round(p * UNIT), round(q * UNIT)) for p, q in asks])
    return b


class Market:
    """Feeds a Simulator constructed events; exchange time = arrival − 1 ms."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.t = T0
        self.seq = 0

    def depth(self, bids, asks, after_ms: float = 1.0) -> None:
        self.t += int(after_ms * MS)
        self.seq += 1
        self.sim.on_event(ReplayEvent(self.t, self.seq, "BTCUSDT", DEPTH, None, book(bids, asks), self.t - MS))

    def trade(self, price: float, qty: float, buyer_is_maker: bool, after_ms: float = 1.0) -> None:
        self.t += int(after_ms * MS)
        self.seq += 1
        data = {"price": round(price * UNIT), "qty": round(qty * UNIT), "buyer_is_maker": buyer_is_maker}
        self.sim.on_event(ReplayEvent(self.t, self.seq, "BTCUSDT", TRADE, data, None, self.t - MS))


class Fixed:
    """Quotes given prices (None: no quote)."""

    def __init__(self, bid: float | None, ask: float | None) -> None:
        self.bid, self.ask = bid, ask

    def quote(self, state: MarketState) -> Quote:
        return Quote(self.bid, self.ask, "test")


def make(strategy, **kw) -> tuple[Simulator, Market]:
    params = SimParams(**{"order_size": "0.001", "requote_interval": 3600.0, "entry_latency": "10ms",
                          "response_latency": "10ms", "sigma": 1.0, "A": 1.0, "k": 1.0, **kw}).check()
    sim = Simulator("BTCUSDT", params, strategy, TICK, LOT, T0 + 3600 * 10**9, maker_fee=-0.00005,
                    taker_fee=0.0007)
    sim.valid = True
    market = Market(sim)
    market.depth(BIDS, ASKS)  # the quoter's first decision comes with the next event, on this book
    return sim, market


BIDS = [(100.0, 0.005), (99.9, 1.0)]
ASKS = [(100.1, 0.005), (100.2, 1.0)]


def test_queue_position_advances_on_trades_and_fills_at_the_front():
    sim, m = make(Fixed(100.0, None))
    m.depth(BIDS, ASKS)  # decision: bid 100.0 sent, live 10 ms later (exchange time)
    m.depth(BIDS, ASKS, after_ms=20)  # now live behind the displayed 0.005
    order = sim.quoted[BUY]
    assert order.active and order.queue_ahead == 0.005 * UNIT
    m.trade(100.0, 0.003, True)
    assert not sim.fills and order.queue_ahead == pytest.approx(0.002 * UNIT)
    m.trade(100.0, 0.003, True)  # the queue ahead is used up: filled at the front
    assert len(sim.fills) == 1 and sim.fills[0].price == 100 * UNIT and sim.inventory == LOT


def test_power_probability_rule_on_cancellations():
    sim, m = make(Fixed(100.0, None), queue_power=3.0)
    m.depth([(100.0, 0.010)], ASKS)
    m.depth([(100.0, 0.010)], ASKS, after_ms=20)
    order = sim.quoted[BUY]
    assert order.queue_ahead == 0.010 * UNIT
    m.depth([(100.0, 0.012)], ASKS)  # 0.002 joins behind us: the queue ahead is unchanged
    assert order.queue_ahead == 0.010 * UNIT
    m.depth([(100.0, 0.008)], ASKS)  # 0.004 cancelled; front 0.010, back 0.002: almost all from the back
    front, back, change = 0.010, 0.002, 0.004
    prob = back**3 / (back**3 + front**3)
    expected = front - (1 - prob) * change + min(back - prob * change, 0)
    assert order.queue_ahead == pytest.approx(expected * UNIT)


def test_partial_fills():
    sim, m = make(Fixed(100.0, None), order_size="0.003", partial_fills=True)
    m.depth(BIDS, ASKS)
    m.depth(BIDS, ASKS, after_ms=20)
    m.trade(100.0, 0.006, True)  # 0.005 ahead, then 0.001 of ours
    assert [f.qty for f in sim.fills] == [LOT] and sim.quoted[BUY].qty == 2 * LOT
    m.trade(100.0, 0.004, True)
    assert [f.qty for f in sim.fills] == [LOT, 2 * LOT] and not sim.orders
    assert sim.quoted[BUY] is not None  # the strategy learns the order is gone after the response latency
    m.depth(BIDS, ASKS, after_ms=15)
    assert sim.quoted[BUY] is None


def test_entry_latency_delays_a_fill():
    sim, m = make(Fixed(100.0, None), entry_latency="50ms")
    m.depth(BIDS, ASKS)
    m.trade(99.0, 1.0, True, after_ms=20)  # prints through our price, but the order is not live yet
    assert not sim.fills
    m.depth(BIDS, ASKS, after_ms=40)
    m.trade(99.0, 1.0, True)
    assert len(sim.fills) == 1
    assert sim.known_inventory == 0  # the fill is known only after the response latency
    m.depth(BIDS, ASKS, after_ms=20)
    assert sim.known_inventory == LOT


def test_cross_model_needs_a_trade_through_the_price():
    sim, m = make(Fixed(100.0, None), fill_model="cross")
    m.depth(BIDS, ASKS)
    m.depth(BIDS, ASKS, after_ms=20)
    m.trade(100.0, 5.0, True)
    assert not sim.fills
    m.trade(100.1, 5.0, False)  # a buy: hits asks, not our bid
    assert not sim.fills
    m.trade(99.9, 0.001, True)
    assert len(sim.fills) == 1


def test_book_crossing_the_quote_fills_it():
    sim, m = make(Fixed(None, 100.1), fill_model="cross")
    m.depth(BIDS, ASKS)
    m.depth(BIDS, ASKS, after_ms=20)
    m.depth([(100.2, 1.0)], [(100.3, 1.0)])
    assert len(sim.fills) == 1 and sim.fills[0].side == SELL and sim.fills[0].price == round(100.1 * UNIT)


def test_poisson_model_follows_the_intensity():
    hot, m = make(Fixed(99.9, 100.2), fill_model="poisson", A=1e6, k=0.001, seed=3)
    m.depth(BIDS, ASKS)
    for _ in range(5):
        m.depth(BIDS, ASKS, after_ms=20)
    assert hot.fills
    cold, m = make(Fixed(99.9, 100.2), fill_model="poisson", A=1e-6, k=10.0, seed=3)
    m.depth(BIDS, ASKS)
    for _ in range(50):
        m.depth(BIDS, ASKS, after_ms=20)
    assert not cold.fills


def test_poisson_draws_cover_only_the_time_an_order_was_live():
    # one order, live for 20 ms after a long idle span: P(fill) = A·dt = 0.02, not A·(idle span)
    fills = 0
    for seed in range(200):
        sim, m = make(Fixed(99.9, None), fill_model="poisson", A=1.0, k=1e-9, seed=seed)
        m.depth(BIDS, ASKS, after_ms=3_600_000)
        m.depth(BIDS, ASKS, after_ms=15)  # live
        m.depth(BIDS, ASKS, after_ms=20)
        fills += len(sim.fills)
    assert fills <= 15  # expected 200 × 0.02 = 4


def test_regime_pause_cancels_quotes_while_volatility_spikes():
    sim, m = make(Fixed(99.0, 101.0), requote_interval=1.0, pause_vol_ratio=2.0, sigma_halflife=600.0,
                  fast_sigma_halflife=2.0)
    for i in range(120):  # calm: the mid alternates by 0.1
        mid = 100.0 + 0.1 * (i % 2)
        m.depth([(mid - 0.05, 1.0)], [(mid + 0.05, 1.0)], after_ms=1000)
    assert not sim.paused and sim.quoted[BUY] is not None
    for i in range(10):  # wild: swings of 5
        mid = 100.0 + 5 * (i % 2)
        m.depth([(mid - 0.05, 1.0)], [(mid + 0.05, 1.0)], after_ms=1000)
    assert sim.paused and sim.counts["pauses"] == 1 and sim.quoted == {BUY: None, SELL: None}


def test_model_strategy_waits_for_its_first_estimates():
    sim, m = make(AvellanedaStoikov(SimParams(gamma=0.1)), sigma="auto", A="auto", k="auto", requote_interval=0.1)
    for _ in range(15):
        m.depth(BIDS, ASKS, after_ms=100)
    assert sim.counts["orders"] == 0 and sim.warming_up  # σ is there after 1 s, A and k are not
    assert summarize(from_simulator(sim))["model"]["warmed_up"] is False  # the report says why nothing was quoted
    depths = [0.05] * 15 + [0.15] * 8 + [0.25] * 4 + [0.35] * 2 + [0.45]
    for i, d in enumerate(depths):
        m.trade(100.05 - d if i % 2 else 100.05 + d, 0.001, bool(i % 2), after_ms=20)
    for _ in range(25):
        m.depth(BIDS, ASKS, after_ms=100)
    assert not sim.warming_up and sim.fits and sim.k > 0 and sim.counts["orders"] > 0


def test_post_only_order_crossing_on_arrival_is_rejected_with_a_lockout():
    sim, m = make(Fixed(100.0, None), reject_lockout=5.0, requote_interval=0.1)
    m.depth(BIDS, ASKS)  # bid 100.0 sent, arrives 10 ms later
    m.depth([(99.8, 1.0)], [(99.9, 1.0)], after_ms=5)  # the market fell before it arrived: 100.0 would take
    m.depth([(99.8, 1.0)], [(99.9, 1.0)], after_ms=20)
    assert sim.counts["rejects"] == 1 and not sim.fills
    for _ in range(10):
        m.depth([(99.8, 1.0)], [(99.9, 1.0)], after_ms=200)
    assert sim.quoted[BUY] is None and sim.counts["rejects"] == 1  # locked out, no new order


def test_hard_limit_quotes_one_side_and_soft_limit_shrinks_size():
    sim, m = make(Fixed(99.5, 100.5), soft_limit=1.0, hard_limit=2.0, order_size="0.002")
    sim.known_inventory = sim.inventory = 4 * LOT  # q = 2 order sizes: at the hard limit
    m.depth(BIDS, ASKS)
    assert sim.quoted[BUY] is None and sim.quoted[SELL] is not None
    sim2, m2 = make(Fixed(99.5, 100.5), soft_limit=1.0, hard_limit=2.0, order_size="0.002")
    sim2.known_inventory = sim2.inventory = 3 * LOT  # q = 1.5: half way from soft to hard
    m2.depth(BIDS, ASKS)
    assert sim2.quoted[BUY].qty == LOT and sim2.quoted[SELL].qty == 2 * LOT


def test_tick_rounding_spread_limits_and_tolerance_band():
    sim, m = make(Fixed(99.43, 100.47), max_spread=0.6, requote_interval=0.1, tolerance_ticks=1)
    m.depth(BIDS, ASKS)
    # centre 99.95, spread 1.04 capped to 0.6 -> 99.65 / 100.25, rounded outwards to ticks
    assert sim.quoted[BUY].price == round(99.6 * UNIT) and sim.quoted[SELL].price == round(100.3 * UNIT)
    first = sim.quoted[BUY]
    sim.strategy = Fixed(99.53, 100.57)  # centre moves 0.1: within the 1-tick band, kept
    m.depth(BIDS, ASKS, after_ms=150)
    assert sim.quoted[BUY] is first and sim.counts["kept"] == 2


def test_unsynced_book_cancels_everything_and_stops_quoting():
    sim, m = make(Fixed(99.5, 100.5), requote_interval=0.1)
    m.depth(BIDS, ASKS)
    assert sim.orders
    m.t += MS
    sim.on_event(ReplayEvent(m.t, 99, "BTCUSDT", BOOK_INVALID, {"reason": "gap"}))
    assert not sim.orders and sim.quoted == {BUY: None, SELL: None}
    m.trade(90.0, 10.0, True, after_ms=500)
    assert not sim.orders and not sim.fills


def test_kill_switch_on_loss():
    sim, m = make(Fixed(100.0, None), max_loss=0.01, requote_interval=0.1)
    m.depth(BIDS, ASKS)
    m.depth(BIDS, ASKS, after_ms=20)
    m.trade(99.0, 1.0, True)  # bought 0.001 at 100
    m.depth([(80.0, 1.0)], [(80.1, 1.0)], after_ms=200)  # mark: −0.02
    m.depth([(80.0, 1.0)], [(80.1, 1.0)], after_ms=200)  # the next decision sees it
    assert sim.killed and "max_loss" in sim.killed and not sim.quoted[BUY]


def test_kill_switch_can_flatten_as_a_taker():
    sim, m = make(Fixed(100.0, None), max_drawdown=0.005, flatten_on_kill=True, requote_interval=0.1)
    m.depth(BIDS, ASKS)
    m.depth(BIDS, ASKS, after_ms=20)
    m.trade(99.0, 1.0, True)  # bought 0.001 at 100
    m.depth([(90.0, 1.0)], [(90.1, 1.0)], after_ms=200)
    m.depth([(90.0, 1.0)], [(90.1, 1.0)], after_ms=200)
    assert sim.killed and "max_drawdown" in sim.killed and sim.inventory == 0
    taker = sim.fills[-1]
    assert taker.liquidity == "taker" and taker.price == 90 * UNIT and taker.side == SELL
    assert taker.qty == sum(f.qty for f in sim.fills[:-1]) and taker.fee == pytest.approx(90 * taker.qty / UNIT * 0.0007)


def test_fill_lockout_keeps_the_side_unquoted():
    sim, m = make(Fixed(100.0, None), fill_lockout=5.0, requote_interval=0.1)
    m.depth(BIDS, ASKS)
    m.depth(BIDS, ASKS, after_ms=20)
    m.trade(99.0, 1.0, True)
    for _ in range(20):
        m.depth(BIDS, ASKS, after_ms=200)  # 4 s: still locked
    assert len(sim.fills) == 1 and sim.quoted[BUY] is None
    m.depth(BIDS, ASKS, after_ms=1500)
    assert sim.quoted[BUY] is not None


def swing(m: Market, rounds: int) -> None:
    """A mid swinging by up to 0.4 every 30 ms, a thin touch, and a trade through each side each time."""
    prices = [100.0, 100.3, 99.7, 100.1, 99.6, 100.4, 100.0]
    for i in range(rounds):
        mid = prices[i % len(prices)]
        m.depth([(mid - 0.05, 0.001), (mid - 0.15, 1.0)], [(mid + 0.05, 0.001), (mid + 0.15, 1.0)], after_ms=30)
        m.trade(mid - 0.5, 0.01, True)
        m.trade(mid + 0.5, 0.01, False)


def test_pnl_attribution_sums_to_the_total():
    sim, m = make(Fixed(99.9, 100.2), requote_interval=0.05)
    swing(m, 60)
    sim.finish()
    summary = summarize(from_simulator(sim))
    pnl = summary["pnl"]
    assert summary["fills"]["count"] > 10
    exact = sim.cash / UNIT**2 + sim.inventory / UNIT * sim.mid - sim.fees
    assert pnl["total"] == pytest.approx(exact, abs=1e-9)
    assert pnl["spread_capture"] + pnl["inventory"] + pnl["fees"] == pytest.approx(exact, abs=1e-9)
    assert pnl["realized"] + pnl["unrealized"] + pnl["fees"] == pytest.approx(exact, abs=1e-9)


def test_strategy_that_raises_stops_the_run():
    class Broken:
        def quote(self, state):
            raise ZeroDivisionError("oops")

    _sim, m = make(Broken())
    with pytest.raises(StrategyError, match="ZeroDivisionError: oops"):
        m.depth(BIDS, ASKS)


# ---- calibration -------------------------------------------------------------------------------------


def test_intensity_fit_recovers_a_and_k():
    # trades whose depth is exponential with rate k: λ(δ) = N/T·e^(−kδ)
    import numpy as np

    rng = np.random.default_rng(5)
    deltas = rng.exponential(1 / 2.0, 20_000)
    fit = fit_intensity(deltas, 1000.0, 0.01)
    assert fit.k == pytest.approx(2.0, rel=0.1) and fit.A == pytest.approx(20.0, rel=0.15) and fit.r2 > 0.95


def test_volatility_estimator_is_in_price_per_root_second():
    import numpy as np

    rng = np.random.default_rng(2)
    vol = VolatilityEstimator(halflife_s=1e9)  # ~ plain average
    mid, ts = 100.0, 0
    for _ in range(5000):
        ts += 1_000_000_000
        mid += rng.normal(0, 0.3)
        vol.update(ts, mid)
    assert vol.sigma == pytest.approx(0.3, rel=0.05)


# ---- end to end --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> tuple[Path, str]:
    """15 s recorded from the synthetic venue."""
    out = tmp_path_factory.mktemp("sim") / "data"

    assert record_day(out, "spot", ["BTCUSDT"], 15.0) == 0
    date = recorded_date(out)
    return out, date


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "replay.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT)


def test_replay_date_prints_the_backtest_and_writes_reports(day, tmp_path):
    out, date = day
    # horizon=span: the 15 s day lies inside the Berlin window while the suite runs in the day, and A–S
    # quotes for a horizon of hours are too wide to fill; the end of the data is the horizon at any hour
    result = run_cli("--date", date, "--data", str(out), "--speed", "max", "--out", str(tmp_path),
                     "--order-size", "0.01", "--param", "maker_fee=0", "--param", "horizon=span")
    assert result.returncode == 0, result.stderr
    assert "backtest BTCUSDT" in result.stdout and "PnL total" in result.stdout and "per hour" in result.stdout
    saved = json.loads(next(tmp_path.glob("backtest-BTCUSDT-as-*.json")).read_text())
    summary = saved["summary"]
    assert summary["fills"]["count"] > 0 and summary["orders"]["orders"] > 0
    assert summary["quotes"]["bid_time"] > 0.5 and 0 < summary["quotes"]["bid_distance"] < 100
    pnl = summary["pnl"]
    assert pnl["spread_capture"] + pnl["inventory"] + pnl["fees"] == pytest.approx(pnl["total"], abs=1e-6)
    html = next(tmp_path.glob("backtest-BTCUSDT-as-*.html")).read_text()
    assert html.count("<svg") == 3 and "<script" not in html and "<link" not in html and 'src="' not in html
    assert html.count("<circle") >= summary["fills"]["count"]  # every fill is a dot on the quotes plot
    decisions = next(tmp_path.glob("decisions-BTCUSDT-as-*.jsonl")).read_text().splitlines()
    assert decisions and all(json.loads(line)["reasons"] for line in decisions[:100])
    entries = [json.loads(line) for line in decisions]
    placed = {e["order"] for e in entries if e["action"] == "place"}
    assert {e["order"] for e in entries if e["action"] == "fill"} <= placed  # each fill names its order


def test_calibrate_prints_and_writes_the_config(day, tmp_path):
    out, date = day
    target = tmp_path / "fit.yaml"
    result = run_cli("calibrate", "--date", date, "--data", str(out), "--write", str(target))
    assert result.returncode == 0, result.stderr
    assert "BTCUSDT" in result.stdout
    params = load_params(target)
    assert params.sigma > 0 and params.A > 0 and params.k > 0


@pytest.mark.parametrize("args, message", [
    (["--gamma", "0"], "gamma"),
    (["--param", "k=-1"], "k must be"),
    (["--order-size", "-1"], "order_size"),
    (["--param", "hard_limit=1", "--param", "soft_limit=2"], "hard_limit"),
    (["--strategy", "nosuchmodule:Thing"], "nosuchmodule"),
    (["--param", "gamma"], "KEY=VALUE"),
])
def test_cli_bad_input_exits_2_with_one_line(day, tmp_path, args, message):
    out, date = day
    result = run_cli("--date", date, "--data", str(out), "--speed", "max", "--out", str(tmp_path), *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("replay: error:") and message in lines[0], lines
    assert not list(tmp_path.iterdir())  # nothing written


def test_strategy_error_mid_run_writes_the_partial_report(day, tmp_path):
    out, date = day
    path = tmp_path / "late.py"
    path.write_text("from replay.sim.strategies import Quote\n"
                    "class Late:\n"
                    "    def __init__(self, params):\n        self.calls = 0\n"
                    "    def quote(self, state):\n"
                    "        self.calls += 1\n"
                    "        if self.calls > 20:\n            raise RuntimeError('model diverged')\n"
                    "        return Quote(state.best_bid, state.best_ask)\n")
    reports = tmp_path / "reports"
    result = run_cli("--date", date, "--data", str(out), "--speed", "max", "--out", str(reports),
                     "--strategy", f"{path}:Late", "--no-progress")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model diverged" in lines[0] and "partial report" in lines[0]
    saved = json.loads(next(reports.glob("backtest-BTCUSDT-Late-*.json")).read_text())
    assert "model diverged" in saved["summary"]["stopped"]
    assert list(reports.glob("backtest-BTCUSDT-Late-*.html"))


@pytest.fixture(scope="module")
def real_usdm(tmp_path_factory) -> Path:
    if not (REAL / "usdm_btcusdt_20240808.gz").exists():
        pytest.skip("../shared/realdata is not available")
    from recorder.importer import import_captures

    out = tmp_path_factory.mktemp("real") / "data"
    import_captures([REAL / "usdm_btcusdt_20240808.gz"], "usdm", out)
    return out


def test_real_capture_backtests_end_to_end(real_usdm, tmp_path):
    usdm = get_market("usdm")
    replay = DayReplay(real_usdm, usdm, "2024-08-09")
    params = load_params(None, {"strategy": "join", "order_size": "0.001", "maker_fee": "-0.00005",
                                "taker_fee": "0.0007", "tick_size": "0.1"})
    outcome = backtest(paced(replay.events(), Pacer(None)), replay, params, tmp_path, replay.last_ns,
                       progress=False)
    summary = outcome.summaries[0]
    assert outcome.stopped is None and summary["span_s"] > 300
    assert summary["fills"]["count"] > 50 and summary["pnl"]["fees"] > 0  # a rebate on maker fills
    assert summary["latency_ms"]["feed_p50"] is not None
