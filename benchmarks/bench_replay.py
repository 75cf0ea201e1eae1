"""Replay throughput at --speed max (books rebuilt, all channels merged), the book rebuild alone from the
prepared day (`--strategy none`), peak RSS, and pacing at 50x.

Usage: python benchmarks/bench_replay.py [--realdata DIR]
Data: the real USD-M BTCUSDT capture (../shared/realdata/hftbacktest/usdm_btcusdt_20240808.gz, depth@0ms)
imported into the dataset with `recorder import`'s code.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from recorder.importer import import_captures
from recorder.markets import get_market
from replay.books import replay_books
from replay.engine import DEPTH, SNAPSHOT, DayReplay, Pacer, paced
from replay.prepared import load_or_build

DEFAULT_REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA)
    parser.add_argument("--paced-seconds", type=float, default=60.0, help="data seconds replayed at 50x")
    args = parser.parse_args()
    if not args.realdata.is_dir():
        raise SystemExit(f"bench_replay: {args.realdata} not found (the real captures live in ../shared/realdata)")
    market = get_market("usdm")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        result = import_captures([args.realdata / "hftbacktest/usdm_btcusdt_20240808.gz"], market, out)
        date = min(result.dates)
        best = None
        for _ in range(3):
            events = levels = 0
            started = time.perf_counter()
            for event in DayReplay(out, market, date).events():
                events += 1
                if event.kind is DEPTH or event.kind is SNAPSHOT:
                    levels += len(event.data.bids) + len(event.data.asks)
            elapsed = time.perf_counter() - started
            best = elapsed if best is None else min(best, elapsed)
        print(f"speed max: {events:,} events ({levels:,} level updates) in {best:.2f} s: {events / best:,.0f} events/s, "
              f"{levels / best:,.0f} level-updates/s (target 2M)")
        day = load_or_build(out, market, date, DayReplay(out, market, date).symbols[0])
        replay_books(day)  # warm: the prepared day is built and mapped once, the kernel compiled (or loaded)
        books = max((replay_books(day) for _ in range(3)), key=lambda stats: stats.level_updates_per_second)
        print(f"book rebuild from the prepared day (numba): {books.level_updates:,} level updates in "
              f"{books.seconds * 1000:.1f} ms: {books.level_updates_per_second:,.0f} level updates/s "
              f"(target >= 2M)")
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB (target < 1 GiB)")
        replay = DayReplay(out, market, date)
        end = replay.first_ns + int(args.paced_seconds * 1e9)
        pacer = Pacer(50.0)
        started = time.perf_counter()
        n = sum(1 for _ in paced(DayReplay(out, market, date, end_ns=end).events(), pacer))
        wall = time.perf_counter() - started
        late = pacer.lateness_ms()
        print(f"speed 50x: {n:,} events of {args.paced_seconds:.0f} s of data in {wall:.2f} s wall "
              f"(effective {args.paced_seconds / wall:.1f}x); lateness p50 {late['p50']:.3f} ms, "
              f"p99 {late['p99']:.3f} ms, max {late['max']:.1f} ms (target p99 < 5 ms)")


if __name__ == "__main__":
    main()
