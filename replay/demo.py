"""`make demo`: the synthetic venue at fast-forward speed -> `recorder run` -> the dataset on disk.

Runs everything on this machine (127.0.0.1), nothing reaches Binance. Prints what was written and the
book rebuilt from the files.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from recorder.config import load_config
from recorder.markets import get_market
from recorder.numbers import format_units
from recorder.rebuild import rebuild
from recorder.runtime import Recorder
from replay.venue.server import VenueServer
from schemas import TABLES

console = Console()


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
    parser.add_argument("--speed", type=float, default=10.0, help="venue fast-forward factor")
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
        code = asyncio.run(Recorder(config).run())
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
    raise SystemExit(code)


if __name__ == "__main__":
    main()
