"""`make demo`: synthetic venue -> `recorder run` -> dataset -> validation report -> calibration -> backtest -> sweep.

Runs everything on this machine (127.0.0.1), nothing reaches Binance. The venue runs in real time (1x) so
the exchange timestamps it sends stay comparable with the receive times the validator judges.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from rich.table import Table

from recorder.config import load_config
from recorder.markets import get_market
from recorder.numbers import format_units
from recorder.rebuild import rebuild
from recorder.runtime import Recorder
from recorder.validate import print_report
from replay.venue.server import VenueServer
from replay.view import wide_console
from schemas import TABLES

console = wide_console()
# 0.01 BTC/ETH a side; γ, σ, A, k come from `replay calibrate --write` (which prints why); maker fee 0 as on
# Binance's spot market-maker programme (the VIP 0 rate of 0.1% makes a round trip cost 0.2% of the price)
CALIBRATE_FLAGS = ["--maker-fee", "0"]
BACKTEST_FLAGS = ["--order-size", "0.01", "--no-progress"]
# the demo's last step: γ around the calibrated one × two order sizes, on Ray, ranked in an HTML leaderboard
SWEEP_SIZES = "order_size=0.005,0.01"


def dataset_summary(root: Path, exchange: str) -> Table:
    table = Table(title=f"dataset {root}/{exchange}")
    for column in ("table", "symbols", "files", "rows", "bytes"):
        table.add_column(column, justify="right" if column in ("files", "rows", "bytes") else "left")
    for name in TABLES:
        files = sorted((root / exchange / name).glob("date=*/symbol=*/*.parquet"))
        if not files:
            continue
        rows = sum(pq.read_metadata(f).num_rows for f in files)
        size = sum(f.stat().st_size for f in files)
        symbols = sorted({f.parent.name.split("=", 1)[1] for f in files})
        table.add_row(name, ",".join(symbols), str(len(files)), f"{rows:,}", f"{size:,}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-data"))
    parser.add_argument("--seconds", type=float, default=60.0, help="wall-clock recording time")
    parser.add_argument("--speed", type=float, default=1.0, help="venue speed (market time per wall time)")
    parser.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    symbols = args.symbols.split(",")
    shutil.rmtree(args.out, ignore_errors=True)
    market = get_market("spot")
    venue = VenueServer("spot", symbols, speed=args.speed, seed=42)
    with venue.run_in_thread():
        console.print(f"[bold]synthetic venue[/] {venue.rest_url} ({args.speed:g}x) -> "
                      f"[bold]recorder run[/] for {args.seconds:g} s into {args.out}/")
        config = load_config(None, {"market": "spot", "symbols": symbols, "out": args.out,
                                    "rest_url": venue.rest_url, "ws_url": venue.ws_url,
                                    "duration": args.seconds, "ignore_window": True})
        started = time.monotonic()
        code = asyncio.run(Recorder(config, validate=True).run())
        console.print(f"recorder exited with {code} after {time.monotonic() - started:.1f} s")
    console.print(dataset_summary(args.out, market.exchange))
    date = next((args.out / market.exchange / "depth").glob("date=*")).name.split("=", 1)[1]
    for symbol in symbols:
        last = None
        books = 0
        for _, _, _, _, local in rebuild(args.out, market, date, symbol):
            if local.valid_book() is not None:
                books += 1
                last = local
        if last is not None:
            (bid, bid_qty), (ask, ask_qty) = last.book.best_bid(), last.book.best_ask()
            console.print(f"{symbol}: {books:,} valid books rebuilt from the files; last at update id "
                          f"{last.update_id}: bid {format_units(bid, 2)} x {format_units(bid_qty)}  "
                          f"ask {format_units(ask, 2)} x {format_units(ask_qty)}")
    report_path = next((args.out / "reports" / market.exchange / date).glob("validation-*.json"))
    print_report(json.loads(report_path.read_text()), console)
    console.print(f"HTML report: {report_path.with_suffix('.html')}")
    simulator = args.out / "simulator.yaml"
    first = symbols[0]
    for command in (["calibrate", "--date", date, "--data", str(args.out), "--symbols", first, "--write", str(simulator),
                     *CALIBRATE_FLAGS],
                    ["--date", date, "--data", str(args.out), "--symbols", first, "--speed", "max", "--config",
                     str(simulator), *BACKTEST_FLAGS]):
        console.rule("replay " + " ".join(command))
        result = subprocess.run([sys.executable, "-m", "replay.cli", *command], check=False)
        code = code or result.returncode
    gamma = yaml.safe_load(simulator.read_text())["simulator"]["gamma"]
    for command in (["calibrate", "--date", f"{date}..{date}", "--data", str(args.out)],
                    ["sweep", "--date", f"{date}..{date}", "--data", str(args.out), "--symbols", args.symbols,
                     "--config", str(simulator), "--grid", f"gamma={gamma / 4:.4g}:{gamma * 4:.4g}:log3",
                     "--grid", SWEEP_SIZES, "--no-progress"]):
        console.rule("replay " + " ".join(command))
        result = subprocess.run([sys.executable, "-m", "replay.cli", *command], check=False)
        code = code or result.returncode
    raise SystemExit(code)


if __name__ == "__main__":
    main()
