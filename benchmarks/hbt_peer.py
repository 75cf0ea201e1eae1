"""Peer benchmark: the same two quoting strategies run in hftbacktest on a real Binance capture.

Why: our replay/simulator numbers mean little without a reference point. hftbacktest (Rust core, numba
strategy loop) is the best-known open-source L2 market-making backtester, so this script times it on the
real USD-M BTCUSDT capture hftbacktest's own collector recorded and reports its fills/PnL for comparison.

The capture is converted once with hftbacktest's Binance-futures converter (cached npz, not timed). The
converter turns the capture's one REST depth snapshot into clear + snapshot events, so the book is the
diffs seen before the snapshot, then reset to the snapshot, then diffs. Each strategy is run once untimed
(numba JIT, Rust warm-up) and once timed: load npz + build backtest + simulate the whole capture.

Run with a Python that has hftbacktest 2.4.x:
    python benchmarks/hbt_peer.py [--capture PATH] [--cache DIR] [--strategy join|fixed5|both]
Prints one JSON object to stdout; progress goes to stderr.
"""
import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

try:
    import hftbacktest
    import numpy as np
    from hftbacktest import (
        CANCELED,
        EXPIRED,
        FILLED,
        GTX,
        LIMIT,
        TRADE_EVENT,
        BacktestAsset,
        ROIVectorMarketDepthBacktest,
    )
    from hftbacktest.data.utils import binancefutures
    from numba import njit
except ImportError as exc:
    sys.exit(f"hbt_peer: hftbacktest 2.4.x is required ({exc}); pip install 'hftbacktest==2.4.*'")

CAPTURE = Path(__file__).resolve().parents[2] / "shared/realdata/hftbacktest/usdm_btcusdt_20240808.gz"
TICK, LOT = 0.1, 0.001
QTY = 0.001                   # BTC per side
STEP_NS = 100_000_000         # requote every 100 ms of data time
LATENCY_NS = 10_000_000       # order entry and response latency
MAKER_FEE, TAKER_FEE = -0.00005, 0.0007
OFFSETS = {"join": -1, "fixed5": round(5.0 / TICK)}   # quote offset from mid in ticks; -1 = join the touch


@njit
def quote(hbt, offset_ticks, qty):
    """Requote loop. Returns [submitted, cancels, gtx_rejects, position, pnl, fees, num_trades, volume, steps]."""
    bid_id = 0
    ask_id = 0
    next_id = 1
    submitted = 0
    cancels = 0
    rejects = 0
    steps = 0
    while hbt.elapse(STEP_NS) == 0:
        steps += 1
        depth = hbt.depth(0)
        bb = depth.best_bid_tick
        ba = depth.best_ask_tick
        if not (0 < bb < ba < 1 << 40):   # empty side (sentinel tick) or crossed book: nothing to quote
            continue
        if offset_ticks < 0:
            want_bid, want_ask = bb, ba
        else:   # floor(mid - offset) and ceil(mid + offset), in exact integer ticks (2*mid = bb + ba)
            want_bid = (bb + ba - 2 * offset_ticks) // 2
            want_ask = -((-(bb + ba + 2 * offset_ticks)) // 2)
        orders = hbt.orders(0)
        for side in range(2):
            oid = bid_id if side == 0 else ask_id
            want = want_bid if side == 0 else want_ask
            order = orders.get(oid) if oid else None
            live = False
            if order is not None:
                if order.status == EXPIRED:
                    rejects += 1          # GTX would have crossed when it reached the exchange
                elif order.status != FILLED and order.status != CANCELED:
                    live = True
            if live:
                if not order.cancellable or order.price_tick == want:
                    continue              # request in flight, or already at the wanted price
                hbt.cancel(0, oid, False)
                cancels += 1
            oid = next_id
            next_id += 1
            if side == 0:
                hbt.submit_buy_order(0, oid, want * TICK, qty, GTX, LIMIT, False)
                bid_id = oid
            else:
                hbt.submit_sell_order(0, oid, want * TICK, qty, GTX, LIMIT, False)
                ask_id = oid
            submitted += 1
        hbt.clear_inactive_orders(0)
    depth = hbt.depth(0)
    mid = (depth.best_bid + depth.best_ask) / 2.0
    sv = hbt.state_values(0)
    pnl = sv.balance + sv.position * mid - sv.fee
    return np.array([submitted, cancels, rejects, sv.position, pnl, sv.fee,
                     sv.num_trades, sv.trading_volume, steps], dtype=np.float64)


def npz_for(capture: Path, cache: Path) -> Path:
    """Convert the capture with hftbacktest's own converter once; reuse the npz afterwards."""
    out = cache / (capture.name.split(".")[0] + ".npz")
    if not out.exists():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"converting {capture} -> {out}", file=sys.stderr)
        with contextlib.redirect_stdout(sys.stderr):   # the converter prints progress to stdout
            binancefutures.convert(str(capture), output_filename=str(out), buffer_size=10_000_000)
    return out


def run(npz: Path, offset_ticks: int, roi: tuple) -> np.ndarray:
    asset = (BacktestAsset().data([str(npz)]).linear_asset(1.0)
             .constant_order_latency(LATENCY_NS, LATENCY_NS)
             .power_prob_queue_model(3.0).no_partial_fill_exchange()
             .trading_value_fee_model(MAKER_FEE, TAKER_FEE)
             .tick_size(TICK).lot_size(LOT).roi_lb(roi[0]).roi_ub(roi[1]))
    hbt = ROIVectorMarketDepthBacktest([asset])
    out = quote(hbt, offset_ticks, QTY)
    hbt.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", type=Path, default=CAPTURE)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/hbt-peer-cache"))
    ap.add_argument("--strategy", choices=["join", "fixed5", "both"], default="both")
    args = ap.parse_args()

    npz = npz_for(args.capture, args.cache)
    data = np.load(npz)["data"]
    trades = data[(data["ev"] & 0xFF) == TRADE_EVENT]["px"]
    roi = (math.floor(trades.min() * 0.9), math.ceil(trades.max() * 1.1))   # book levels outside are ignored
    rows = len(data)
    del data

    result = {"engine": "hftbacktest", "version": hftbacktest.__version__, "rows": rows,
              "roi": list(roi), "strategies": {}}
    names = ["join", "fixed5"] if args.strategy == "both" else [args.strategy]
    for name in names:
        print(f"{name}: warm-up run", file=sys.stderr)
        run(npz, OFFSETS[name], roi)
        print(f"{name}: timed run", file=sys.stderr)
        t0 = time.perf_counter()
        r = run(npz, OFFSETS[name], roi)
        secs = time.perf_counter() - t0
        submitted, cancels, rejects, position, pnl, fees, fills, volume, steps = r
        result["strategies"][name] = {
            "seconds": round(secs, 4), "rows_per_s": round(rows / secs),
            "fills": int(fills), "filled_qty": round(volume, 6),
            "position": round(position, 6), "pnl": round(pnl, 6), "fees": round(fees, 6),
            "orders_submitted": int(submitted), "cancels": int(cancels), "gtx_rejects": int(rejects),
            "steps": int(steps),
        }
        print(f"{name}: {secs:.3f}s, {int(fills)} fills", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
