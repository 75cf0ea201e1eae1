"""Parse + sync + apply throughput on real Binance frames, against bare `orjson.loads` of the same frames.

Usage: python benchmarks/bench_sync.py [--realdata DIR] [--repeat N]
Frames: the hftbacktest BTCUSDT spot (depth@100ms, trade, bookTicker) and USD-M (depth@0ms, trade,
bookTicker) captures in ../shared/realdata, held in memory so only CPU work is timed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import orjson

from recorder.captures import iter_capture
from recorder.markets import get_market
from recorder.protocol import DepthUpdate, parse_frame, parse_snapshot
from recorder.sync import LocalBook

DEFAULT_REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
CAPTURES = {
    "spot BTCUSDT": ("spot", ["hftbacktest/spot_btcusdt_20240808.gz", "hftbacktest/spot_btcusdt_20240809.gz"]),
    "usdm BTCUSDT": ("usdm", ["hftbacktest/usdm_btcusdt_20240808.gz"]),
}


def load(root: Path, files: list[str]) -> list[tuple[str, bytes, str | None]]:
    return [(r.kind, r.payload, r.symbol) for r in iter_capture([root / f for f in files]) if r.kind in ("ws", "rest")]


def bare_parse(frames) -> None:
    loads = orjson.loads
    for _, payload, _ in frames:
        loads(payload)


def parse_sync_apply(frames, market: str) -> LocalBook:
    local = LocalBook(get_market(market).sequence_rule)
    for kind, payload, symbol in frames:
        if kind == "rest":
            local.on_snapshot(parse_snapshot(payload, symbol))
            continue
        message = parse_frame(payload)
        if type(message) is DepthUpdate:
            local.on_diff(message)
    return local


def best_of(repeat: int, fn, *args) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not args.realdata.is_dir():
        raise SystemExit(f"bench_sync: {args.realdata} not found (the real captures live in ../shared/realdata)")
    print(f"{'capture':14s} {'frames':>8s} {'levels':>8s} {'orjson.loads msg/s':>19s} "
          f"{'parse+sync+apply msg/s':>23s} {'ratio':>6s}")
    for name, (market, files) in CAPTURES.items():
        frames = load(args.realdata, files)
        local = parse_sync_apply(frames, market)
        assert local.synced, f"{name}: the book did not sync"
        levels = sum(len(m.bids) + len(m.asks) for m in (parse_frame(p) for k, p, _ in frames if k == "ws")
                     if type(m) is DepthUpdate)
        bare = best_of(args.repeat, bare_parse, frames)
        full = best_of(args.repeat, parse_sync_apply, frames, market)
        n = len(frames)
        print(f"{name:14s} {n:8d} {levels:8d} {n / bare:19,.0f} {n / full:23,.0f} {bare / full:6.2f}")


if __name__ == "__main__":
    main()
