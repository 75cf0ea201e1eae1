"""Scale: seconds and rows/s of a synthetic 1, 4 and 14 hour day, and peak RSS (issue 10).

Usage: python benchmarks/bench_scale.py [--hours 1,4,14] [--rate rows] [--data /tmp/ld] [--generate]
Data: `benchmarks/longday.py` days at `<data>/<rate>_<hours>h` (rate "rows": the real capture's rows per
second, ~69M rows in 14 h). A missing day is skipped with one line, or generated with --generate (a 14 h
"rows" day takes ~25 CPU minutes).
Each measurement runs in a fresh process, so its peak RSS (`ru_maxrss`) is its own:
  cold: prepare the day from Parquet (a forced rebuild of `<day>/prepared`);
  warm: map the prepared day and simulate the join strategy with bench_sim's settings (`ours(..., "warm")`),
        after loading the numba kernel on the day's first minute (not timed; its seconds are printed apart).
Rows are the dataset rows (depth levels, snapshot levels, trades), as bench_sim counts them. Warm rows/s
must not fall with the day's length, and peak RSS must stay under 1 GiB whatever the length.
Measured 2026-12-02 ("rows"): warm peak RSS 318 MB at 1 h, 423 MB at 4 h: it grows ~35 MB per hour because
the kernel keeps every decision-log action (acts_i/acts_f, 136 B each, ~140k an hour with join) and fill in
growable arrays for the whole day, doubled when full, even when no log is asked for; the array book
(price_max - price_min + 1 ticks, ~3k here) and the 1M-row chunks are flat.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench_sim import COMMON, STRATEGIES, dataset_rows, ours
from longday import MARKER, PARTIAL, events_per_second, make_long_day

from recorder.markets import get_market
from replay.engine import TRADE, DayReplay
from replay.prepared import load_or_build
from replay.sim.params import load_params
from replay.sim.run import simulate_prepared

MARKET, SYMBOL = "usdm", "BTCUSDT"  # bench_sim's market; longday's default symbol
STRATEGY = "join"
WARMUP_NS = 60 * 1_000_000_000  # the kernel is loaded (or compiled) on this much of the day before timing
GIB = 1 << 30
LINEAR_WITHIN = 0.2  # warm rows/s of the longest day at most 20% below the shortest's counts as linear


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def measure_cold(root: Path, date: str) -> dict:
    """Prepare the day from Parquet, replacing the stored one."""
    started = time.perf_counter()
    day = load_or_build(root, get_market(MARKET), date, SYMBOL, force=True)
    return {"seconds": time.perf_counter() - started, "prepared_rows": day.meta.rows}


def measure_warm(root: Path, date: str) -> dict:
    """Load the kernel on the first minute, then map the prepared day and simulate all of it (timed)."""
    market = get_market(MARKET)
    params = load_params(None, {**COMMON, **STRATEGIES[STRATEGY]})
    started = time.perf_counter()
    replay = DayReplay(root, market, date, channels=(TRADE,))
    replay = DayReplay(root, market, date, channels=(TRADE,), end_ns=replay.first_ns + WARMUP_NS)
    day = load_or_build(root, market, replay.date, SYMBOL)
    if day.built:
        raise SystemExit(f"bench_scale: {root} had no prepared day; the warm run must follow the cold one")
    simulate_prepared(day, replay, SYMBOL, params, replay.end_ns)
    kernel_load = time.perf_counter() - started
    return {**ours(root, date, STRATEGY, "warm"), "kernel_load_seconds": kernel_load}


MEASURES = {"cold": measure_cold, "warm": measure_warm}


def child(how: str, root: Path, date: str) -> None:
    """One measurement in this (fresh) process: its figures and peak RSS as one JSON line on stdout."""
    result = MEASURES[how](root, date)
    print(json.dumps({**result, "peak_rss": peak_rss_bytes()}))


def in_fresh_process(how: str, root: Path, date: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", how, "--root", str(root), "--date", date],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_scale: the {how} run on {root} failed (exit {done.returncode}): "
                         f"{(done.stderr.strip().splitlines() or [''])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_of(runs: int, how: str, root: Path, date: str) -> dict:
    """The fastest of `runs` fresh-process runs, with the highest peak RSS of them all."""
    results = [in_fresh_process(how, root, date) for _ in range(runs)]
    return {**min(results, key=lambda r: r["seconds"]), "peak_rss": max(r["peak_rss"] for r in results)}


def day_for(data: Path, hours: float, rate: str, generate: bool) -> tuple[Path, str] | None:
    """(root, date) of the longday of `hours` under `data`; None (said in one line) when it is not there."""
    out = data / f"{rate}_{hours:g}h"
    marker = out / MARKER
    done = json.loads(marker.read_text()) if marker.is_file() else None
    if not generate and (done is None or done["hours"] != hours or
                         done["events_per_second"] != events_per_second(rate)):
        what = "still being generated (or its generation stopped)" if (out / PARTIAL).exists() else "not there"
        print(f"{hours:g} h: {out} is {what} (no {MARKER} of {hours:g} h at rate {rate}); skipped "
              f"(--generate makes it: benchmarks/longday.py --hours {hours:g} --out {out} --rate {rate})")
        return None
    root, date = make_long_day(out, hours, rate=rate)
    return root, date.isoformat()


def hours_list(text: str) -> list[float]:
    try:
        hours = [float(h) for h in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"hours must be comma-separated numbers, not {text!r}") from None
    if not all(0 < h <= 16 for h in hours):
        raise argparse.ArgumentTypeError(f"hours must be in (0, 16], not {text!r}")
    return sorted(set(hours))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=hours_list, default=[1.0, 4.0, 14.0], help="comma-separated (1,4,14)")
    parser.add_argument("--rate", default="rows", help="longday's rate: rows (default), messages or events/s")
    parser.add_argument("--data", type=Path, default=Path("/tmp/ld"), help="where the longdays are (<rate>_<h>h)")
    parser.add_argument("--generate", action="store_true", help="generate a missing day (minutes per hour)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each measurement: the fastest is shown")
    parser.add_argument("--measure", choices=MEASURES, help=argparse.SUPPRESS)  # the child's side
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--date", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        child(args.measure, args.root, args.date)
        return
    try:
        events_per_second(args.rate)
    except ValueError as exc:
        parser.error(str(exc))
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, not {args.runs}")
    rows_by_hours = {}
    for hours in args.hours:
        try:
            day = day_for(args.data, hours, args.rate, args.generate)
        except ValueError as exc:  # a directory holding other data
            print(f"bench_scale: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        if day is None:
            continue
        root, date = day
        rows = dataset_rows(root)
        cold = best_of(args.runs, "cold", root, date)
        warm = best_of(args.runs, "warm", root, date)
        rows_by_hours[hours] = (rows, cold, warm)
        print(f"{hours:g} h measured: {rows:,} rows, cold {cold['seconds']:.1f} s, warm {warm['seconds']:.1f} s "
              f"(+ kernel load {warm['kernel_load_seconds']:.1f} s)", flush=True)
    if not rows_by_hours:
        raise SystemExit("bench_scale: no day to measure")
    report(rows_by_hours, args.runs)


def report(measured: dict[float, tuple[int, dict, dict]], runs: int) -> None:
    mb = 1 << 20
    print(f"\nstrategy {STRATEGY} (bench_sim settings); each run in a fresh process, the fastest of {runs}; "
          f"peak RSS = ru_maxrss (the highest)")
    print(f"{'hours':>5s} {'rows':>12s} {'cold s':>8s} {'cold rows/s':>12s} {'warm s':>8s} {'warm rows/s':>12s} "
          f"{'fills':>8s} {'peak RSS cold/warm MB':>22s}")
    for hours, (rows, cold, warm) in measured.items():
        print(f"{hours:>5g} {rows:>12,} {cold['seconds']:>8.1f} {rows / cold['seconds']:>12,.0f} "
              f"{warm['seconds']:>8.1f} {rows / warm['seconds']:>12,.0f} {warm['fills']:>8,} "
              f"{cold['peak_rss'] / mb:>11,.0f} / {warm['peak_rss'] / mb:>,.0f}")
    shortest, longest = min(measured), max(measured)
    rate = {h: measured[h][0] / measured[h][2]["seconds"] for h in (shortest, longest)}
    if longest > shortest:
        ratio = rate[longest] / rate[shortest]
        verdict = "linear" if ratio >= 1 - LINEAR_WITHIN else "NOT linear: rows/s falls as the day grows"
        print(f"warm rows/s {longest:g} h / {shortest:g} h = {ratio:.2f}: {verdict} (time per row must not rise "
              f"by more than {LINEAR_WITHIN:.0%}; above 1 = fixed costs spread over more rows)")
    peak = max(max(cold["peak_rss"], warm["peak_rss"]) for _, cold, warm in measured.values())
    print(f"peak RSS {peak / mb:,.0f} MB: {'under' if peak < GIB else 'OVER'} 1 GiB")
    if 14 in measured:
        _, cold, warm = measured[14]
        print(f"seconds per 14 h day: warm {warm['seconds']:.1f} s, cold (prepare) {cold['seconds']:.1f} s")
    else:
        rows, cold, warm = measured[longest]
        scale = 14 / longest
        print(f"seconds per 14 h day: not measured; from {longest:g} h x {scale:g}: warm ~{warm['seconds'] * scale:.0f} s, "
              f"cold (prepare) ~{cold['seconds'] * scale:.0f} s")


if __name__ == "__main__":
    main()
