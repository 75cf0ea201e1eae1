"""Many days, many symbols (issue 10): `replay --date A..B --symbols X,Y` runs every (day, symbol) and writes
one report with per-day rows and totals; inventory reset or carried; run ids keep runs apart; bad input."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recorder.window import TradingWindow
from replay.days import DaySpecError, describe_days, parse_days
from replay.engine import Pacer
from replay.sim.engine import UNIT, Simulator
from replay.sim.params import SimParams
from replay.sim.record import from_simulator
from replay.sim.results import summarize
from tests.synthetic_day import record_day, recorded_date
from tests.synthetic_days import copy_day
from tests.test_sim import ASKS, BIDS, LOT, T0, TICK, Fixed, Market

ROOT = Path(__file__).resolve().parents[1]
D = dt.date


# ---- the --date rule -----------------------------------------------------------------------------------

RECORDED = [D(2024, 5, 1), D(2024, 5, 2), D(2024, 5, 3), D(2024, 5, 7)]


@pytest.mark.parametrize("text, days", [
    ("2024-05-02", [D(2024, 5, 2)]),
    ("20240502", [D(2024, 5, 2)]),
    ("2024-05-01..2024-05-03", [D(2024, 5, 1), D(2024, 5, 2), D(2024, 5, 3)]),
    ("20240507,2024-05-01..20240502, 2024-05-01", [D(2024, 5, 1), D(2024, 5, 2), D(2024, 5, 7)]),
    ("yesterday..today", [D(2024, 5, 2), D(2024, 5, 3)]),
])
def test_date_specs(text, days):
    now = dt.datetime(2024, 5, 3, 12, tzinfo=dt.UTC)
    assert parse_days(text, RECORDED, now=now) == days


@pytest.mark.parametrize("text, skip, message", [
    ("2024-05-03..2024-05-01", False, "the end 2024-05-01 is before the start 2024-05-03"),
    ("2024-06-01..2024-06-30", True, ("no recorded day in 2024-06-01..2024-06-30; recorded: 2024-05-01..2024-05-03, "
                                     "2024-05-07")),
    ("2024-05-01..2024-05-07", False, ("no data for 2024-05-04..2024-05-06 (--skip-missing runs the days that have "
                                      "data); recorded: 2024-05-01..2024-05-03, 2024-05-07")),
    ("2024-05-09", True, "no data for 2024-05-09; recorded:"),
    ("2024-05-01,,2024-05-02", False, "empty entry"),
    ("2024-05-01..may", False, "not a date"),
])
def test_bad_date_specs_say_what_exists(text, skip, message):
    with pytest.raises(DaySpecError if "not a date" not in message else ValueError) as caught:
        parse_days(text, RECORDED, skip)
    assert message in str(caught.value)


def test_skip_missing_runs_the_days_with_data():
    assert parse_days("2024-05-01..2024-05-07", RECORDED, True) == RECORDED
    assert describe_days([D(2024, 5, 3), D(2024, 5, 1), D(2024, 5, 2)]) == "2024-05-01..2024-05-03"
    assert issubclass(DaySpecError, ValueError)  # the CLIs' bad-input handling covers it


def test_pacer_restart_starts_the_next_day_on_schedule():
    wall = [0.0]
    pacer = Pacer(50.0, clock=lambda: wall[0], sleep=lambda s: wall.__setitem__(0, wall[0] + s))
    pacer.wait(0)
    pacer.wait(10 * 10**9)  # 10 s of data at 50x: 0.2 s of wall time
    assert wall[0] == pytest.approx(0.2)
    pacer.restart()
    pacer.wait(86_400 * 10**9)  # the next day's first event: at once, not after the night / 50
    assert wall[0] == pytest.approx(0.2)


# ---- the simulator's opening position ---------------------------------------------------------------------


def test_a_carried_inventory_opens_the_day_valued_at_the_previous_close():
    params = SimParams(order_size="0.001", requote_interval=0.05, entry_latency="10ms", response_latency="10ms",
                       sigma=1.0, A=1.0, k=1.0).check()
    inventory, mark = 3 * LOT, 100_10_000_000  # 0.003 held at the close, mid 100.1
    sim = Simulator("BTCUSDT", params, Fixed(99.9, 100.2), TICK, LOT, T0 + 3600 * 10**9, maker_fee=-0.00005,
                    taker_fee=0.0007, opening=(inventory, mark))
    sim.valid = True
    market = Market(sim)
    market.depth(BIDS, ASKS)  # mid 100.05: the position lost 0.003 × 0.05 overnight
    assert sim.known_inventory == inventory and sim.series.inventory[0] == 0.003
    assert sim.pnl() == pytest.approx(-0.00015, abs=1e-12) == sim.accounts.inventory_pnl
    prices = [100.0, 100.3, 99.7, 100.1, 99.6, 100.4, 100.0]
    for i in range(60):
        mid = prices[i % len(prices)]
        market.depth([(mid - 0.05, 0.001), (mid - 0.15, 1.0)], [(mid + 0.05, 0.001), (mid + 0.15, 1.0)], after_ms=30)
        market.trade(mid - 0.5, 0.01, True)
        market.trade(mid + 0.5, 0.01, False)
    sim.finish()
    summary = summarize(from_simulator(sim))
    pnl = summary["pnl"]
    assert summary["fills"]["count"] > 10
    # the day's PnL: today's value (cash + inventory at the mid − fees) less the opening position's at the mark
    opened = -inventory * mark
    exact = (sim.cash - opened) / UNIT**2 + (sim.inventory * sim.mid - inventory * mark / UNIT) / UNIT - sim.fees
    assert pnl["total"] == pytest.approx(exact, abs=1e-9)
    assert pnl["spread_capture"] + pnl["inventory"] + pnl["fees"] == pytest.approx(pnl["total"], abs=1e-9)
    assert pnl["realized"] + pnl["unrealized"] + pnl["fees"] == pytest.approx(pnl["total"], abs=1e-9)


# ---- the command line on three recorded days of two symbols ------------------------------------------------


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> tuple[Path, list[str]]:
    """Two symbols recorded for 6 s (day D), copied to D−1, D−3 and D−5 (D−5 without ETHUSDT): no D−2, D−4."""
    out = tmp_path_factory.mktemp("days") / "data"
    assert record_day(out, "spot", ["BTCUSDT", "ETHUSDT"], 6.0) == 0
    today = recorded_date(out)
    earlier = [copy_day(out, "binance-spot", today, -n) for n in (5, 3, 1)]
    for table in (out / "binance-spot").iterdir():
        shutil.rmtree(table / f"date={earlier[0]}" / "symbol=ETHUSDT", ignore_errors=True)
    return out, [*earlier, today]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    environ = {key: value for key, value in os.environ.items() if key != "CONFIG_PATH"}
    return subprocess.run([sys.executable, "-m", "replay.cli", *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=ROOT, env={**environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})


def backtest(data: Path, out: Path, date: str, *args: str) -> dict:
    """Run over `date` (both symbols, fills likely), return the combined report."""
    result = run_cli("--date", date, "--symbols", "BTCUSDT,ETHUSDT", "--data", str(data), "--speed", "max",
                     "--out", str(out), "--order-size", "0.01", "--param", "maker_fee=0", "--param", "horizon=span",
                     "--no-progress", *args)
    assert result.returncode == 0, result.stderr
    run = result.stdout.split("run ")[-1].split(":")[0]
    report = json.loads((out / f"days-as-{run}.json").read_text())
    assert report["run_id"] == run and "PnL" in result.stdout and "total" in result.stdout
    return report


@pytest.fixture(scope="module")
def reset(days, tmp_path_factory) -> tuple[Path, dict]:
    """D−3..D (no D−2: skipped), both symbols, inventory reset: the report directory and the combined report."""
    data, (_, d3, _, d0) = days
    out = tmp_path_factory.mktemp("reports")
    return out, backtest(data, out, f"{d3}..{d0}", "--skip-missing")


def test_a_range_of_days_and_symbols_gives_per_day_rows_and_totals(days, reset):
    _, (_, d3, d1, d0) = days
    out, report = reset
    assert report["days"] == [d3, d1, d0]  # --skip-missing: D−2 has no data
    assert [(r["date"], r["symbol"]) for r in report["rows"]] == [
        (d, s) for d in (d3, d1, d0) for s in ("BTCUSDT", "ETHUSDT")]
    assert sum(r["fills"] for r in report["rows"]) > 0
    assert all(r["inventory_open"] == 0 for r in report["rows"])  # reset: every day starts flat
    by_day = {t["date"]: t for t in report["by_day"]}
    for date in (d3, d1, d0):
        rows = [r for r in report["rows"] if r["date"] == date]
        assert by_day[date]["pnl"] == pytest.approx(sum(r["pnl"] for r in rows), abs=1e-12)
        assert by_day[date]["fills"] == sum(r["fills"] for r in rows)
    (total,) = report["total"]
    assert total["currency"] == "USDT" and total["fills"] == sum(r["fills"] for r in report["rows"])
    assert total["pnl"] == pytest.approx(sum(r["pnl"] for r in report["rows"]), abs=1e-12)
    # the days are D moved by whole days: reset each day, they simulate alike
    assert [r["pnl"] for r in report["rows"][:2]] == [r["pnl"] for r in report["rows"][4:]]
    for row in report["rows"]:  # each row names its day's own report, in the day's directory
        saved = json.loads((out / row["report"]).read_text())["summary"]
        assert row["report"].startswith(f"{row['date']}/") and saved["date"] == row["date"]
        assert saved["fills"]["count"] == row["fills"] and saved["run_id"] == report["run_id"]
    page = (out / f"days-as-{report['run_id']}.html").read_text()
    assert "<svg" in page and "running total" in page and f'href="{d0}/backtest-BTCUSDT-as-' in page


def test_carried_inventory_opens_each_day_with_the_previous_close(days, reset):
    data, (_, d3, _, d0) = days
    out, first = reset
    carry = backtest(data, out, f"{d3}..{d0}", "--skip-missing", "--carry-inventory")
    assert carry["run_id"] != first["run_id"] and carry["inventory"] == "carry"
    rows = carry["rows"]
    closes = {r["symbol"]: r["inventory_close"] for r in rows[:2]}
    assert any(closes.values())  # something to carry
    for row in rows[2:4]:  # the second day opens with the first day's close
        assert row["inventory_open"] == closes[row["symbol"]]
        saved = json.loads((out / row["report"]).read_text())
        assert saved["series"]["inventory"][0] == row["inventory_open"]  # the day's first sample holds it
    assert [r["inventory_open"] for r in rows[4:]] == [r["inventory_close"] for r in rows[2:4]]
    (total,) = carry["total"]
    assert total["pnl"] == pytest.approx(sum(r["pnl"] for r in rows), abs=1e-12)
    assert (out / f"days-as-{first['run_id']}.json").exists()  # the reset run's report is still there
    assert len(list((out / d0).glob("backtest-*-as-*.json"))) == 4  # 2 symbols × 2 runs, none overwritten


def test_other_parameters_get_another_run_id_and_each_day_its_own_horizon(days, reset):
    data, (_, _, d1, d0) = days
    out, first = reset
    # a strategy that says in its reasons when the A–S horizon T is (default: the day's window end)
    strategy = out / "horizon.py"
    strategy.write_text("from replay.sim.strategies import Quote\n"
                        "class Horizon:\n"
                        "    def __init__(self, params):\n        pass\n"
                        "    def quote(self, state):\n"
                        "        return Quote(state.best_bid, state.best_ask, f'T={state.ts + state.time_left * 1e9:.0f}')\n")
    result = run_cli("--date", f"{d1},{d0}", "--symbols", "BTCUSDT", "--data", str(data), "--speed", "max",
                     "--out", str(out), "--strategy", f"{strategy}:Horizon", "--no-progress")
    assert result.returncode == 0, result.stderr
    run = result.stdout.split("run ")[-1].split(":")[0]
    assert run != first["run_id"] and (out / f"days-as-{first['run_id']}.json").exists()
    window = TradingWindow(dt.time(8), dt.time(22))
    for date in (d1, d0):
        log = (out / date / f"decisions-BTCUSDT-Horizon-{run}.jsonl").read_text().splitlines()
        reasons = {r for line in log for r in json.loads(line)["reasons"] if r.startswith("T=")}
        assert len(reasons) == 1, reasons  # one horizon over the day
        horizon = int(reasons.pop()[2:])
        summary = json.loads((out / date / f"backtest-BTCUSDT-Horizon-{run}.json").read_text())["summary"]
        opens, closes = window.bounds_for(date)
        if opens <= summary["start_ns"] and summary["end_ns"] <= closes:  # recorded in the day: its 22:00 Berlin
            assert abs(horizon - closes) < 10**6, (date, horizon, closes)
        else:  # recorded at night (the suite ran then): the end of that day's data
            assert abs(horizon - summary["end_ns"]) < 10**9, (date, horizon, summary["end_ns"])


@pytest.mark.parametrize("spec, message", [
    ("{d0}..{d1}", "the end {d1} is before the start {d0}"),
    ("2020-01-01..2020-01-05", "no recorded day in 2020-01-01..2020-01-05"),
    ("{d3}..{d0}", "no data for {d2} (--skip-missing"),
    ("{d5},{d3}", "no ETHUSDT on {d5}; available symbols: BTCUSDT"),
])
def test_bad_days_give_one_line_and_exit_2(days, tmp_path, spec, message):
    from typer.testing import CliRunner

    from replay.cli import app

    data, (d5, d3, d1, d0) = days
    names = {"d5": d5, "d3": d3, "d1": d1, "d0": d0,
             "d2": (dt.date.fromisoformat(d3) + dt.timedelta(days=1)).isoformat()}
    result = CliRunner().invoke(app, ["--date", spec.format(**names), "--symbols", "BTCUSDT,ETHUSDT", "--data",
                                      str(data), "--speed", "max", "--out", str(tmp_path / "r")])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("replay: error:"), result.stderr
    assert message.format(**names) in lines[0]
    if "no data" in message or "no recorded day" in message:  # and it names the recorded days
        assert f"has spot: {d5}, {d3}, {d1}..{d0}" in lines[0]
    assert not (tmp_path / "r").exists()  # nothing written


def test_a_strategy_raising_on_a_later_day_writes_the_partial_report(days, tmp_path):
    data, (_, _, d1, d0) = days
    last_day = dt.datetime.combine(dt.date.fromisoformat(d0), dt.time(0), tzinfo=dt.UTC).timestamp() - 7200
    strategy = tmp_path / "late.py"
    strategy.write_text("from replay.sim.strategies import Quote\n"
                        "class Late:\n"
                        "    def __init__(self, params):\n        pass\n"
                        "    def quote(self, state):\n"
                        f"        if state.ts > {last_day:.0f} * 10**9:\n"
                        "            raise RuntimeError('model diverged')\n"
                        "        return Quote(state.best_bid, state.best_ask)\n")
    reports = tmp_path / "r"
    result = run_cli("--date", f"{d1}..{d0}", "--symbols", "BTCUSDT,ETHUSDT", "--data", str(data), "--speed",
                     "max", "--out", str(reports), "--strategy", f"{strategy}:Late", "--no-progress")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "model diverged" in lines[0] and "partial report" in lines[0]
    (path,) = reports.glob("days-Late-*.json")
    report = json.loads(path.read_text())
    assert "model diverged" in report["stopped"] and report["days"] == [d1, d0]
    assert {r["date"] for r in report["rows"] if not r["stopped"]} == {d1}  # the first day ran whole
    assert any(r["date"] == d0 and r["stopped"] for r in report["rows"])
    assert list((reports / d0).glob("backtest-*-Late-*.json"))  # the stopped day's own partial report
