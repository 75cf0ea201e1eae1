"""Simulator throughput and fills against hftbacktest 2.4.x on the same real capture, same settings.

Usage: python benchmarks/bench_sim.py [--realdata DIR] [--peer-python /tmp/hbt-venv/bin/python]
Data: ../shared/realdata/hftbacktest/usdm_btcusdt_20240808.gz imported into the dataset (not timed).
Settings on both engines: 10 ms entry and response latency, power-probability queue model n = 3, no
partial fills, maker −0.5 bp / taker 7 bp, tick 0.1, lot 0.001, 0.001 BTC a side, requote every 100 ms of
data time; (a) join the touch, (b) a fixed 5 USD half-spread around the mid.
Ours, three ways: warm = map the prepared day + simulate in the numba kernel (what `replay --speed max` does
once the day is prepared); cold = prepare the day from Parquet + simulate; reference = the event-driven
`Simulator` over `DayReplay` (the oracle the kernel is tested against; the same fills). None of them writes
reports. The peer runs benchmarks/hbt_peer.py in a Python that has hftbacktest (the `bench` extra, or a
separate venv) and times reading its npz + simulating. Rows: ours counts the dataset rows of the capture
(depth levels + snapshot levels + trades), the peer the rows of its npz (the same capture's events as its
converter writes them); both are printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from recorder.importer import import_captures
from recorder.markets import get_market
from recorder.window import TradingWindow
from replay.engine import TRADE, DayReplay
from replay.prepared import load_or_build
from replay.sim.engine import UNIT, Simulator
from replay.sim.params import load_params
from replay.sim.record import from_simulator
from replay.sim.run import fees_for, horizon_ns, instrument_steps_for, simulate_prepared
from replay.sim.strategies import load_strategy

HERE = Path(__file__).resolve().parent
DEFAULT_REALDATA = HERE.parents[1] / "shared" / "realdata"
CAPTURE = "hftbacktest/usdm_btcusdt_20240808.gz"
STRATEGIES = {"join": {"strategy": "join"}, "fixed5": {"strategy": "fixed", "half_spread": "5"}}
COMMON = {"order_size": "0.001", "tick_size": "0.1", "maker_fee": "-0.00005", "taker_fee": "0.0007",
          "fill_model": "queue", "queue_power": "3", "partial_fills": "false", "entry_latency": "10ms",
          "response_latency": "10ms", "requote_interval": "100ms", "soft_limit": "1e9", "hard_limit": "1e9",
          "reject_lockout": "0"}  # the peer strategy has no inventory limits and no lockouts


def ours(root: Path, date: str, name: str, how: str) -> dict:
    """One run: `warm` (prepared day mapped), `cold` (prepared from Parquet first) or `reference`."""
    market = get_market("usdm")
    params = load_params(None, {**COMMON, **STRATEGIES[name]})
    if how == "cold":
        shutil.rmtree(root / "prepared", ignore_errors=True)
    started = time.perf_counter()
    replay = DayReplay(root, market, date, channels=(TRADE,))  # what the simulator reads
    symbol = replay.symbols[0]
    horizon = horizon_ns(params, replay, replay.last_ns, TradingWindow(dt.time(8), dt.time(22)))
    if how == "reference":
        sim = None
        for event in replay.events():
            if sim is None:
                if event.book is None or not event.book.bids or not event.book.asks:
                    continue
                tick, lot = instrument_steps_for(params, replay, symbol)
                sim = Simulator(symbol, params, load_strategy(params), tick, lot, horizon, *fees_for(params, "usdm"),
                                grid_start_ns=replay.first_event_ns())
                sim.valid = True
            sim.on_event(event)
        sim.finish()
        record = from_simulator(sim)
    else:
        day = load_or_build(root, market, replay.date, symbol)
        record = simulate_prepared(day, replay, symbol, params, horizon)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "fills": len(record.fills["qty"]), "position": record.inventory / UNIT,
            "pnl": record.pnl(), "fees": -record.fees, "orders": record.counts["orders"],
            "rejects": record.counts["rejects"]}


def dataset_rows(root: Path) -> int:
    """Rows our engine reads: depth levels, snapshot levels and trades (the other channels are not read)."""
    total = 0
    for table in ("depth", "snapshots", "trades"):
        total += sum(pq.read_metadata(p).num_rows for p in root.glob(f"binance-usdm/{table}/**/*.parquet"))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA)
    parser.add_argument("--peer-python", default="/tmp/hbt-venv/bin/python",
                        help="a Python with hftbacktest 2.4.x (skip the peer if it has none)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", default="1,4,14", help="hours of the long synthetic days bench_scale.py times "
                        "after the comparison (generated once into /tmp/ld); 'none' skips them")
    args = parser.parse_args()
    capture = args.realdata / CAPTURE
    if not capture.exists():
        raise SystemExit(f"bench_sim: {capture} not found (the real captures live in ../shared/realdata)")
    peer = None
    if Path(args.peer_python).exists():
        done = subprocess.run([args.peer_python, str(HERE / "hbt_peer.py"), "--capture", str(capture)],
                              capture_output=True, text=True, check=False)
        peer = json.loads(done.stdout) if done.returncode == 0 else None
        if peer is None:
            print(f"peer: hftbacktest run failed: {done.stderr.strip().splitlines()[-1:]}")
    else:
        print(f"peer: {args.peer_python} not found; run `python3 -m venv /tmp/hbt-venv && "
              f"/tmp/hbt-venv/bin/pip install 'hftbacktest==2.4.*'` for the comparison")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        date = min(import_captures([capture], get_market("usdm"), root).dates).isoformat()
        rows = dataset_rows(root)
        print(f"data: {CAPTURE} -> {rows:,} dataset rows (depth levels, snapshot levels, trades)")
        ours(root, date, "join", "warm")  # compile (or load the numba cache), page cache, imports
        for name in STRATEGIES:
            timed = {how: min((ours(root, date, name, how) for _ in range(runs)), key=lambda r: r["seconds"])
                     for how, runs in (("warm", args.runs), ("cold", args.runs), ("reference", 1))}
            best = timed["warm"]
            print(f"{name:7s} ours warm: {rows / best['seconds']:>11,.0f} rows/s ({best['seconds']:.3f} s), "
                  f"fills {best['fills']}, position {best['position']:+.3f}, PnL {best['pnl']:+.4f} "
                  f"(fees {best['fees']:+.4f}), orders {best['orders']}, rejects {best['rejects']}")
            for how, what in (("cold", "prepare from Parquet + simulate"), ("reference", "event-driven oracle")):
                r = timed[how]
                same = "same fills and PnL" if (r["fills"], r["pnl"]) == (best["fills"], best["pnl"]) else \
                    f"DIFFERENT: fills {r['fills']}, PnL {r['pnl']:+.4f}"
                print(f"{'':7s} ours {how}: {rows / r['seconds']:>11,.0f} rows/s ({r['seconds']:.3f} s, {what}); {same}")
            if peer is not None:
                p = peer["strategies"][name]
                fills_diff = (best["fills"] - p["fills"]) / p["fills"] if p["fills"] else float("nan")
                print(f"{'':7s} hftbacktest {peer['version']}: {p['rows_per_s']:>10,.0f} rows/s "
                      f"({p['seconds']:.3f} s, {peer['rows']:,} rows), fills {p['fills']}, position "
                      f"{p['position']:+.3f}, PnL {p['pnl']:+.4f} (fees {p['fees']:+.4f}), orders "
                      f"{p['orders_submitted']}, rejects {p['gtx_rejects']}")
                print(f"{'':7s} ratio rows/s ours/peer: warm {rows / best['seconds'] / p['rows_per_s']:.2f} "
                      f"(target >= 1.0), cold {rows / timed['cold']['seconds'] / p['rows_per_s']:.2f}; fills "
                      f"{fills_diff:+.1%} (target within {'5' if name == 'join' else '2'}%)")
    sys.stdout.flush()
    if args.scale != "none":  # the scale figures: long synthetic days at the capture's message rate
        print("scale (benchmarks/bench_scale.py):", flush=True)
        subprocess.run([sys.executable, str(HERE / "bench_scale.py"), "--hours", args.scale, "--rate", "messages",
                        "--generate"], check=False)


if __name__ == "__main__":
    main()
