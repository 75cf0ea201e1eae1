"""The numba kernel equals the reference `Simulator`: same events and parameters, the same `SimResult`
(fills, inventory, cash, PnL, counts, held, fits, series: exactly) and the same decision log.

Real captures (spot, USD-M, COIN-M, cut to their first minutes), a synthetic day with feed faults, and
random books and trades (hypothesis).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.markets import get_market
from replay.engine import TRADE as TRADE_CHANNEL
from replay.engine import DayReplay
from replay.prepared_format import (
    CLEAR,
    EMPTY,
    END,
    INVALID,
    LEVEL,
    TIME,
    TRADE,
    VALID,
    EventArrays,
    arrays_from_events,
)
from replay.sim.engine import StrategyError
from replay.sim.params import load_params
from replay.sim.strategies import Quote
from tests.kernel_reference import Reference, assert_same, both_on_replay, events_from_arrays, run_kernel
from tests.synthetic_day import record_day, recorded_date

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "realdata" / "hftbacktest"
UNIT = 100_000_000
CAPTURES = {"usdm": ("usdm_btcusdt_20240808.gz", "BTCUSDT", UNIT // 10, UNIT // 1000),
            "spot": ("spot_btcusdt_20240808.gz", "BTCUSDT", UNIT // 100, UNIT // 100_000),
            "coinm": ("cm_btcusd_perp_20240808.gz", "BTCUSD_PERP", UNIT // 10, UNIT)}
# bench_sim's settings
COMMON = {"order_size": "0.001", "tick_size": "0.1", "maker_fee": "-0.00005", "taker_fee": "0.0007",
          "fill_model": "queue", "queue_power": "3", "partial_fills": "false", "entry_latency": "10ms",
          "response_latency": "10ms", "requote_interval": "100ms", "soft_limit": "1e9", "hard_limit": "1e9",
          "reject_lockout": "0"}
MAKER, TAKER = -0.00005, 0.0007
EVENTS = 20_000  # of the USD-M day: about two minutes of data


class Alternating:
    """A user strategy: fixed distance from the mid, one side left out on every third call, with a reason."""

    def __init__(self, params, distance: float = 1.0) -> None:
        self.distance = distance
        self.calls = 0

    def quote(self, state) -> Quote:
        self.calls += 1
        bid = None if self.calls % 3 == 0 else state.mid - self.distance - state.q * state.tick
        return Quote(bid, state.mid + self.distance, f"call {self.calls}" if self.calls % 2 else "")


class Breaks:
    """A user strategy that fails after a while."""

    def __init__(self, params) -> None:
        self.calls = 0

    def quote(self, state) -> Quote:
        self.calls += 1
        if self.calls > 300:
            raise RuntimeError("model diverged")
        return Quote(state.best_bid, state.best_ask)


@pytest.fixture(scope="module")
def captures(tmp_path_factory) -> dict[str, Path]:
    if not all((REAL / name).exists() for name, *_ in CAPTURES.values()):
        pytest.skip("../shared/realdata is not available")
    from recorder.importer import import_captures

    roots = {}
    for market, (name, *_) in CAPTURES.items():
        roots[market] = tmp_path_factory.mktemp(market) / "data"
        import_captures([REAL / name], market, roots[market])
    return roots


def replay_of(root: Path, market: str) -> DayReplay:
    return DayReplay(root, get_market(market), "2024-08-09", channels=(TRADE_CHANNEL,))


@pytest.fixture(scope="module")
def usdm(captures) -> tuple[EventArrays, int, int]:
    """The USD-M day's first EVENTS events as arrays, with the grid start and horizon."""
    replay = replay_of(captures["usdm"], "usdm")
    events = replay.events()
    arrays = arrays_from_events((next(events) for _ in range(EVENTS)), replay, "BTCUSDT")
    return arrays, replay.first_event_ns(), replay.last_ns


def on_arrays(arrays: EventArrays, grid: int | None, horizon: int, overrides: dict, chunk_rows: int | None = None,
              tick: int = UNIT // 10, lot: int = UNIT // 1000, opening: tuple[int, int] | None = None):
    """(reference result, log, kernel result, log): the reference fed the arrays' messages as ReplayEvents."""
    params = load_params(None, {**COMMON, **overrides})
    maker = params.maker_fee  # as run.py passes it
    reference = Reference("BTCUSDT", params, tick, lot, horizon, maker, TAKER, grid, opening=opening)
    for event in events_from_arrays(arrays):
        reference.on_event(event)
    expected = reference.result()
    log: list[dict] = []
    got = run_kernel(arrays, "BTCUSDT", params, tick, lot, horizon, maker, TAKER, grid, log.append, chunk_rows,
                     opening=opening)
    return expected, reference.log, got, log


def assert_all_same(expected, expected_log, got, got_log) -> None:
    assert_same(expected, got)
    assert got_log == expected_log


@pytest.mark.parametrize("market", CAPTURES)
def test_real_capture_equals_the_reference(captures, market):
    _, symbol, tick, lot = CAPTURES[market]
    params = load_params(None, {**COMMON, "strategy": "join", "response_latency": "feed"})
    expected, expected_log, got, got_log = both_on_replay(replay_of(captures[market], market), symbol, params, tick,
                                                          lot, MAKER, TAKER, max_events=15_000, chunk_rows=4_000)
    assert len(expected.fills["qty"]) > 10 and expected.feed_samples.size > 1000
    assert_all_same(expected, expected_log, got, got_log)


CASES = {
    "join": {"strategy": "join"},
    "fixed5": {"strategy": "fixed", "half_spread": "5"},
    "as, sigma A k fitted": {"strategy": "as", "gamma": "0.05", "sigma": "auto", "A": "auto", "k": "auto",
                             "refit_interval": "20s", "requote_interval": "250ms"},
    "glft fitted, feed latency": {"strategy": "glft", "gamma": "0.05", "A": "auto", "k": "auto",
                                  "entry_latency": "feed*2", "response_latency": "feed"},
    "poisson": {"strategy": "fixed", "half_spread": "2", "fill_model": "poisson", "A": "auto", "k": "auto",
                "seed": "4"},
    "cross": {"strategy": "join", "fill_model": "cross", "entry_latency": "50ms"},
    "partial fills, limits, lockouts, tolerance": {
        "strategy": "join", "partial_fills": "true", "order_size": "0.004", "soft_limit": "1", "hard_limit": "2",
        "fill_lockout": "0.3", "reject_lockout": "1", "tolerance_ticks": "2"},
    "spread limits, fee floor, regime pause": {
        "strategy": "fixed", "half_spread": "1", "min_spread": "3", "max_spread": "5", "maker_fee": "0.0001",
        "pause_vol_ratio": "1.2", "fast_sigma_halflife": "5", "sigma_halflife": "60"},
    "user strategy": {"strategy": "tests.test_kernel:Alternating", "strategy_options": {"distance": 0.5}},
}


@pytest.mark.parametrize("case", CASES)
def test_every_feature_equals_the_reference(usdm, case):
    arrays, grid, horizon = usdm
    expected, expected_log, got, got_log = on_arrays(arrays, grid, horizon, CASES[case], chunk_rows=20_000)
    assert expected.counts["orders"] > 10
    assert_all_same(expected, expected_log, got, got_log)
    if "fitted" in case:
        assert expected.fits and expected.warmed_up
    if case == "poisson" or case.startswith("partial"):
        assert len(expected.fills["qty"]) > 10
    if case.startswith("partial"):
        assert {"hard_limit", "lockout"} <= expected.held.keys() and expected.time_at_soft > 0
        assert any("above soft limit" in why for entry in expected_log for why in entry["reasons"])
    if case.startswith("spread"):
        assert expected.counts["pauses"] > 0 and {"fee_floor", "max_spread"} <= expected.held.keys()


def test_kill_switch_with_flatten_equals_the_reference(usdm):
    arrays, grid, horizon = usdm
    expected, expected_log, got, got_log = on_arrays(arrays, grid, horizon, {
        "strategy": "fixed", "half_spread": "1", "order_size": "0.05", "max_drawdown": "0.5",
        "flatten_on_kill": "true"})
    assert expected.killed and not expected.fills["maker"][-1] and expected.inventory == 0
    assert_all_same(expected, expected_log, got, got_log)


def test_fed_in_chunks_equals_fed_at_once(usdm):
    arrays, grid, horizon = usdm
    overrides = {"strategy": "as", "gamma": "0.05", "A": "auto", "k": "auto", "refit_interval": "10s"}
    _, _, whole, whole_log = on_arrays(arrays, grid, horizon, overrides)
    params = load_params(None, {**COMMON, **overrides})
    log: list[dict] = []
    chunks = run_kernel(arrays, "BTCUSDT", params, UNIT // 10, UNIT // 1000, horizon, MAKER, TAKER, grid, log.append,
                        chunk_rows=997)
    assert_all_same(whole, whole_log, chunks, log)


def test_a_failing_user_strategy_stops_both_alike(usdm):
    arrays, grid, horizon = usdm
    params = load_params(None, {**COMMON, "strategy": "tests.test_kernel:Breaks"})
    reference = Reference("BTCUSDT", params, UNIT // 10, UNIT // 1000, horizon, MAKER, TAKER, grid)
    with pytest.raises(StrategyError, match="model diverged") as expected:
        for event in events_from_arrays(arrays):
            reference.on_event(event)
    with pytest.raises(StrategyError, match="model diverged") as got:
        run_kernel(arrays, "BTCUSDT", params, UNIT // 10, UNIT // 1000, horizon, MAKER, TAKER, grid)
    assert str(got.value) == str(expected.value)
    assert_same(reference.result(), got.value.result)


# ---- a synthetic day with feed faults (gaps, resyncs) --------------------------------------------------------


@pytest.fixture(scope="module")
def faulty_day(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "data"
    assert record_day(out, "spot", ["BTCUSDT"], 6.0, faults="drop=0.05,disconnect=2s", speed=5.0, seed=7) == 0
    return out


@pytest.mark.parametrize("overrides", [{"strategy": "join", "partial_fills": "true"},
                                       {"strategy": "fixed", "half_spread": "0.5", "fill_model": "poisson",
                                        "A": "5", "k": "1"}])
def test_synthetic_day_with_gaps_and_resyncs_equals_the_reference(faulty_day, overrides):
    replay = DayReplay(faulty_day, get_market("spot"), recorded_date(faulty_day), channels=(TRADE_CHANNEL,))
    params = load_params(None, {**COMMON, **overrides, "tick_size": None, "order_size": "0.01"})
    expected, expected_log, got, got_log = both_on_replay(replay, "BTCUSDT", params, UNIT // 100, UNIT // 100_000,
                                                          MAKER, TAKER, chunk_rows=500)
    assert expected.counts["unsynced_spans"] > 0 and expected.unsynced_ns > 0 and expected.counts["orders"] > 0
    assert_all_same(expected, expected_log, got, got_log)


# ---- random books and trades ---------------------------------------------------------------------------------


@st.composite
def random_day(draw) -> EventArrays:
    """Messages with a valid structure: the book valid with a full book first, then diffs, trades, empty messages, and unsynced
    spans (INVALID, time passing, VALID, a full book again). Prices in ticks of 0.01 around 100."""
    rows: list[tuple[int, int, int, int, int, int, int]] = []
    now = 1_700_000_000_000_000_000

    def full_book() -> list[tuple]:
        middle = draw(st.integers(9_900, 10_100))
        bids = draw(st.lists(st.tuples(st.integers(1, 40), st.integers(1, 30)), min_size=1, max_size=6))
        asks = draw(st.lists(st.tuples(st.integers(1, 40), st.integers(1, 30)), min_size=1, max_size=6))
        return ([(CLEAR, 0, 0, 0)] + [(LEVEL, 1, middle - d, q) for d, q in bids]
                + [(LEVEL, -1, middle + d, q) for d, q in asks])

    def message(levels: list[tuple]) -> None:
        exch = -1 if draw(st.integers(0, 4)) == 0 else now - draw(st.integers(1_000_000, 30_000_000))
        for i, (kind, side, price, qty) in enumerate(levels):
            rows.append((kind, END if i == len(levels) - 1 else 0, now, exch, side, price, qty))

    rows.append((VALID, END, now, -1, 0, 0, 0))
    message(full_book())
    for _ in range(draw(st.integers(20, 160))):
        now += draw(st.integers(1, 80_000_000))
        what = draw(st.sampled_from(["diff", "diff", "diff", "trade", "trade", "empty", "gap"]))
        if what == "diff":
            message([(LEVEL, draw(st.sampled_from([1, -1])), draw(st.integers(9_850, 10_150)),
                      draw(st.integers(0, 30))) for _ in range(draw(st.integers(1, 4)))])
        elif what == "trade":
            exch = -1 if draw(st.integers(0, 5)) == 0 else now - draw(st.integers(1_000_000, 30_000_000))
            rows.append((TRADE, END, now, exch, draw(st.sampled_from([1, -1])), draw(st.integers(9_850, 10_150)),
                         draw(st.integers(1, 20))))
        elif what == "empty":
            message([(EMPTY, 0, 0, 0)])
        else:
            rows.append((INVALID, END, now, -1, 0, 0, 0))
            for _ in range(draw(st.integers(0, 3))):
                now += draw(st.integers(1, 50_000_000))
                message([(TIME, 0, 0, 0)])
            rows.append((VALID, END, now, -1, 0, 0, 0))
            message(full_book())
    table = np.array(rows, dtype=np.int64)
    return EventArrays(table[:, 0].astype(np.uint8), table[:, 1].astype(np.uint8), table[:, 2].copy(),
                       table[:, 3].copy(), table[:, 4].astype(np.int8), table[:, 5].copy(), table[:, 6].copy(),
                       UNIT // 100, UNIT // 1000)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(day=random_day(), strategy=st.sampled_from(["join", "fixed", "as", "glft"]),
       model=st.sampled_from(["queue", "cross", "poisson"]), latency=st.sampled_from(["0ms", "20ms", "feed*3"]),
       partial=st.booleans(), interval=st.sampled_from(["30ms", "200ms"]), tick=st.sampled_from([1, 5]),
       chunk_rows=st.sampled_from([None, 7]), practical=st.sampled_from([
           {}, {"max_loss": "0.0005", "flatten_on_kill": "true"}, {"max_drawdown": "0.001"},
           {"fill_lockout": "0.05", "tolerance_ticks": "1", "min_spread": "0.08", "max_spread": "0.2"},
           {"pause_vol_ratio": "1.1", "fast_sigma_halflife": "1", "sigma_halflife": "4"}]))
def test_random_books_and_trades_equal_the_reference(day, strategy, model, latency, partial, interval, tick,
                                                     chunk_rows, practical):
    overrides = {"strategy": strategy, "fill_model": model, "entry_latency": latency, "response_latency": latency,
                 "partial_fills": str(partial), "requote_interval": interval, "half_spread": "0.05",
                 "sigma": "0.01", "A": "2", "k": "10", "gamma": "0.1", "order_size": "0.002",
                 "soft_limit": "2", "hard_limit": "5", "reject_lockout": "0.1", "sample_interval": "200ms",
                 **practical}
    expected, expected_log, got, got_log = on_arrays(day, None, int(day.recv_ts[-1]), overrides, chunk_rows,
                                                     tick=tick * UNIT // 100, lot=UNIT // 1000)
    assert_all_same(expected, expected_log, got, got_log)


def test_exact_ratio_rounds_as_python_divides():
    from replay.sim.kernel import _exact_ratio

    rng = np.random.default_rng(3)
    cases = [(6_123_450_000_000, 12_300_000), (2**62 + 1, 2**62 - 1), (3, 5), (10**16, 5 * 10**15 + 1)]
    cases += [(int(a), int(b)) for a, b in rng.integers(1, 2**62, size=(200, 2))]
    wrong = [(a, b) for a, b in cases if _exact_ratio(a, b, 10**16) != a * b / 10**16]
    assert len(cases) == 204 and not wrong
    assert math.isfinite(_exact_ratio(2**62, 2**62, 1))


TINY_DAY = """
import numpy as np
from replay.prepared_format import CLEAR, END, LEVEL, TRADE, VALID, EventArrays
from replay.sim import kernel
from replay.sim.fast import simulate
from replay.sim.params import SimParams

t = 1_700_000_000_000_000_000
rows = [(VALID, END, t, -1, 0, 0, 0), (CLEAR, 0, t, t - 5, 0, 0, 0), (LEVEL, 0, t, t - 5, 1, 99, 2),
        (LEVEL, END, t, t - 5, -1, 101, 2), (TRADE, END, t + 10**9, t + 10**9 - 5, -1, 98, 1),
        (TRADE, END, t + 2 * 10**9, t + 2 * 10**9 - 5, -1, 98, 1)]
table = np.array(rows, dtype=np.int64)
arrays = EventArrays(table[:, 0].astype(np.uint8), table[:, 1].astype(np.uint8), table[:, 2].copy(),
                     table[:, 3].copy(), table[:, 4].astype(np.int8), table[:, 5].copy(), table[:, 6].copy(),
                     10**8, 10**5)
result = simulate([arrays], "X", SimParams(strategy="join").check(), 10**8, 10**5, t + 10**10, 0.0, 0.0, None,
                  10**8, 10**5, 99, 101)
print(len(result.fills["qty"]), len(kernel.run.stats.cache_hits), len(kernel.run.stats.cache_misses))
"""


def test_a_second_process_loads_the_compiled_kernel_from_the_cache():
    import subprocess
    import sys

    def tiny_day() -> tuple[int, int, int]:
        done = subprocess.run([sys.executable, "-c", TINY_DAY], capture_output=True, text=True, cwd=ROOT,
                              timeout=600, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=False)
        assert done.returncode == 0, done.stderr
        fills, hits, misses = map(int, done.stdout.split())
        return fills, hits, misses

    tiny_day()  # compiles, or loads, and leaves the cache
    assert tiny_day() == (1, 1, 0)  # one fill; the kernel loaded from the cache, not compiled


def test_load_kernel_leaves_the_kernel_ready_in_the_process():
    """What a sweep's Ray worker runs as it starts: afterwards the kernel has a compiled signature, so the
    worker's first backtest neither compiles nor loads it."""
    import subprocess
    import sys

    check = ("from replay.sim import kernel; from replay.sim.fast import load_kernel; n = len(kernel.run.signatures); "
             "load_kernel(); print(n, len(kernel.run.signatures))")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1"]


def test_a_carried_position_equals_the_reference(usdm):
    """A day opened with the previous close's inventory (--carry-inventory), marked half a tick off the grid."""
    arrays, grid, horizon = usdm
    opening = (3 * UNIT // 1000, 6_123_405_000_000)  # 0.003 BTC at 61,234.05
    overrides = {"strategy": "as", "gamma": "0.05", "sigma": "2", "A": "1", "k": "0.5", "soft_limit": "2",
                 "hard_limit": "6"}
    expected, expected_log, got, got_log = on_arrays(arrays, grid, horizon, overrides, chunk_rows=5_000,
                                                     opening=opening)
    assert expected.series["inventory"][0] == pytest.approx(0.003) and expected.inventory_pnl != 0
    assert_all_same(expected, expected_log, got, got_log)


def test_replay_at_max_speed_writes_what_the_paced_reference_writes(captures, tmp_path):
    """The CLI end to end: `--speed max` (prepared day + kernel) and a paced run (the reference, event by
    event) write byte-identical reports and decision logs, also when `--to` cuts the day."""
    from typer.testing import CliRunner

    from replay.cli import app

    written = {}
    for speed in ("max", "100000x"):
        out = tmp_path / speed
        result = CliRunner().invoke(app, ["--date", "2024-08-09", "--market", "usdm", "--data", str(captures["usdm"]),
                                          "--speed", speed, "--strategy", "fixed", "--param", "half_spread=2",
                                          "--to", "01:57", "--no-progress", "--out", str(out)])
        assert result.exit_code == 0, result.output
        written[speed] = {path.name: path.read_bytes() for path in out.iterdir()}
    assert len(written["max"]) == 3 and written["max"] == written["100000x"]
    assert b'"action":"fill"' in next(v for k, v in written["max"].items() if k.endswith(".jsonl"))
