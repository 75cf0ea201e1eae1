"""Validation speed and memory on a real BTCUSDT spot day-equivalent, extrapolated to a Berlin day.

Usage: python benchmarks/bench_validate.py [--realdata DIR]
Imports the real spot BTCUSDT capture (../shared/realdata, ~11 minutes of Binance traffic) with
`recorder import`'s code, validates it with `recorder validate`'s code, and prints rows/s, peak RSS and the
time a full 08:00-22:00 day would take at that rate (validation streams row groups, so time grows with
the rows and memory does not).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from recorder.importer import import_captures
from recorder.validate import validate_day

DEFAULT_REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
FILES = ["hftbacktest/spot_btcusdt_20240808.gz", "hftbacktest/spot_btcusdt_20240809.gz"]
BERLIN_DAY_S = 14 * 3600


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA)
    args = parser.parse_args()
    if not args.realdata.is_dir():
        raise SystemExit(f"bench_validate: {args.realdata} not found (the real captures live in ../shared/realdata)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        result = import_captures([args.realdata / f for f in FILES], "spot", out)
        date = min(result.dates)
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        report = validate_day(out, "spot", date)
        elapsed = time.perf_counter() - started
        rows = report["rows"]
        symbol = report["symbols"]["BTCUSDT"]
        span_s = symbol["checks"]["coverage"]["figures"]["recorded_seconds"]
    rate = rows / elapsed
    print(f"validated {rows:,} rows ({span_s:,.0f} s of BTCUSDT spot traffic) in {elapsed:.2f} s: {rate:,.0f} rows/s")
    print(f"peak RSS {peak_rss_mb():,.0f} MB (before validation {rss_before:,.0f} MB; depth is streamed by row groups)")
    if span_s:
        day_rows = rows * BERLIN_DAY_S / span_s
        print(f"a full 08:00-22:00 Berlin day at this traffic: ~{day_rows / 1e6:,.1f}M rows -> "
              f"~{day_rows / rate:,.0f} s (target < 120 s)")
    print(f"day status {report['status']}; checks: " +
          ", ".join(f"{name} {c['status']}" for name, c in symbol["checks"].items()))


if __name__ == "__main__":
    main()
