"""A synthetic long recorded day for the scale benchmark (issue 10), generated without sockets.

Usage: python benchmarks/longday.py --hours 1 --out /tmp/longday [--seed 1] [--market usdm] [--symbol BTCUSDT]
                                    [--rate rows|messages|R] [--check] [--real /tmp/rd/usdm_btcusdt_20240808]

`make_long_day(out, hours)` writes `hours` of one symbol from 08:00 Berlin on, in the dataset layout of
`recorder run` (depth, snapshots, trades, instruments, events; compacted day files), and returns
(root, date). The market is the synthetic venue's source (`replay.venue.synthetic.SyntheticSource`)
advanced in-process; its book changes are batched into `@depth@100ms` diffs by the venue's own
`DiffBatcher` and turned into Binance frames by the venue's `Payloads`, exactly as `VenueServer` publishes
them, and those frames go through the recorder's own `Pipeline` (parse, sequence, sync engine, buffers,
segment flush) and `compact_day`: the rows are the ones `recorder run` would write from the venue, with
recv_ts = exchange time + a small deterministic latency. A REST depth snapshot (limit 1000) bridges the
book at the start and checkpoints it every 10 minutes, as the recorder's checkpoints do.

Rates: the source's market model cannot match the real capture's mix (usdm BTCUSDT 2024-08-08: 19.0 depth
diffs/s of 67.7 levels, 61.8 trades/s, 1,354 rows/s): its book changes cluster near the touch, so a 100 ms
diff holds tens of levels, and it trades far more often per book change. Its one knob, events per second,
is set by `rate`:
  "rows"      (default) the capture's rows per second (depth levels + snapshot levels + trades): the scale
              the benchmark measures (~69M rows in 14 h), but ~14x its trades per second;
  "messages"  the capture's trades per second (and the venue's 10 diffs/s): its message count, ~1/8 of
              its rows; quick to make;
  a number    events per second of the source.
The CLI prints the generated rates beside the capture's (`--real`).

Cost (2026-12-02, CPU seconds of one core): "rows" ~95-120 s per hour of data, 85% of it in the source's
engine (~6.5 us per event, 2,200 events/s; the recorder's side is the other 15%), so a 14 h day takes
~25 CPU minutes; "messages" ~10 s per hour (14 h: 4 minutes). Peak RSS of the generation ~220 MB,
flat in the length of the day.

Memory is bounded: segments are flushed every `SEGMENT_S` seconds of data, as the recorder flushes its
segments, and compaction streams them. A complete day is marked by `longday.json` (written last): a
second call with the same arguments returns at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recorder.compaction import compact_day
from recorder.config import SnapshotConfig, WriterConfig
from recorder.markets import get_market
from recorder.pipeline import Pipeline, tune_gc, tune_malloc
from recorder.protocol import parse_exchange_info
from recorder.routing import plan_connections, symbol_streams
from replay.venue.server import DiffBatcher, Payloads
from replay.venue.source import DepthChange, Trade
from replay.venue.synthetic import SyntheticSource, check_symbols
from schemas import BERLIN

MARKER = "longday.json"
PARTIAL = ".longday-partial"
DAY = dt.date(2024, 8, 9)  # the real captures' Berlin date
START = dt.time(8)  # the recording window's start (08:00-22:00 Berlin: 14 hours)
DEPTH_SUFFIX = "depth@100ms"  # the recorder's default depth stream
DEPTH_INTERVAL_MS = 100
CHANNELS = ("depth", "trade")  # the benchmark's tables: depth, snapshots, trades (+ instruments, events)
# source events/s per `rate` preset, measured against /tmp/rd/usdm_btcusdt_20240808 (seed 1, 0.1 h and 1 h)
RATES = {"rows": 2_200, "messages": 155}
SEGMENT_S = 60  # seconds of data per segment (the recorder: 5 s of wall time or 200k messages)
LATENCY_NS = 2_000_000  # exchange -> receive
JITTER_NS = 1_000_000  # plus 0 .. 1 ms, deterministic
REST_LATENCY_MS = 12  # snapshot request -> the venue's book, and the answer back
SHARD_TAG = "0of1"
REAL = Path("/tmp/rd/usdm_btcusdt_20240808")


def day_start_ns(hours: float) -> tuple[int, int]:
    """(start, stop) in ns of `hours` from 08:00 Berlin on DAY; ValueError if they leave the Berlin day."""
    if not 0 < hours <= 16:
        raise ValueError(f"hours must be in (0, 16] (08:00 + hours stays within the Berlin day), not {hours}")
    start = dt.datetime.combine(DAY, START, tzinfo=BERLIN)
    start_ns = int(start.timestamp()) * 1_000_000_000
    return start_ns, start_ns + round(hours * 3600 * 1e9)


class LongDay:
    """The recorder's side of one generated day: frames and snapshots in, segments and the day file out."""

    def __init__(self, root: Path, market, start_ns: int) -> None:
        self.root = root
        self.pipeline = Pipeline(market)
        self.last_recv = start_ns
        self.jitter = 0x9E3779B9
        self.segment_start = start_ns
        self.segments = 0

    def recv_ts(self, exchange_ms: int) -> int:
        """Exchange time + latency + a deterministic jitter, never earlier than the frame before."""
        self.jitter = (self.jitter * 1_103_515_245 + 12_345) & 0x7FFFFFFF
        ts = exchange_ms * 1_000_000 + LATENCY_NS + self.jitter % JITTER_NS
        self.last_recv = ts = max(ts, self.last_recv + 1)
        return ts

    def frame(self, recv_ts: int, stream: str, payload: dict) -> None:
        if recv_ts - self.segment_start >= SEGMENT_S * 1_000_000_000:
            self.flush(recv_ts)
        # the combined-stream form the recorder subscribes to (`<route>/stream?streams=...`)
        self.pipeline.frame(recv_ts, b'{"stream":"%s","data":%s}' % (stream.encode(), orjson.dumps(payload)))

    def flush(self, now_ns: int) -> None:
        _, rejected = self.pipeline.flush(self.root, f"seg-{self.segment_start:020d}-{SHARD_TAG}")
        if rejected:
            raise RuntimeError(f"the recorder rejected rows: {rejected[:3]}")
        self.segment_start = now_ns
        self.segments += 1


def events_per_second(rate: str | float) -> float:
    """The source's rate for a `rate` preset or number; ValueError for anything else."""
    value = RATES.get(rate, rate) if isinstance(rate, str) else rate
    try:
        value = float(value)
    except ValueError:
        raise ValueError(f"rate must be one of {', '.join(RATES)} or events per second, not {rate!r}"
                         ) from None
    if not value > 0:
        raise ValueError(f"rate must be positive, not {rate!r}")
    return value


def generate(root: Path, hours: float, market_name: str, symbol: str, seed: int, source_rate: float) -> dict:
    """Write the day's segments and compact them; returns counts of what went in."""
    market = get_market(market_name)
    start_ns, stop_ns = day_start_ns(hours)
    start_ms, stop_ms = start_ns // 1_000_000, stop_ns // 1_000_000
    source = SyntheticSource(market, [symbol], seed=seed, start_ms=start_ms, events_per_second=source_rate)
    spec = source.spec(symbol)
    payloads = Payloads(market)
    limit = SnapshotConfig.limit
    day = LongDay(root, market, start_ns)
    pipeline = day.pipeline
    tune_gc()
    tune_malloc()

    # as `recorder run` starts: window_start, exchangeInfo, the engine's need_snapshot, the connections
    channels = [DEPTH_SUFFIX if c == "depth" else c for c in CHANNELS]
    planned = plan_connections(market, [symbol], channels, market.max_streams_per_connection)
    pipeline.event(start_ns, None, "window_start", {
        "symbols": [symbol], "shard": [0, 1], "stop_ns": stop_ns, "ignore_window": False,
        "channels": list(CHANNELS), "window": ["08:00:00", "22:00:00", "Europe/Berlin"]})
    info = orjson.dumps({"timezone": "UTC", "serverTime": start_ms,
                         "symbols": [source.exchange_info_symbol(symbol)]})
    pipeline.instruments(start_ns + 2_000_000, [parse_exchange_info(info)[symbol]], info)
    pipeline.engine(symbol, start_ns)
    for cid, connection in enumerate(planned, 1):
        pipeline.event(start_ns + 5_000_000 + cid, None, "connect",
                       {"connection": cid, "streams": len(connection.streams)})
    depth_stream, trade_stream = symbol_streams(symbol, [DEPTH_SUFFIX, "trade"])

    batcher = DiffBatcher(symbol, DEPTH_SUFFIX, DEPTH_INTERVAL_MS, source.book(symbol, 1).update_id)
    boundary = (start_ms // DEPTH_INTERVAL_MS + 1) * DEPTH_INTERVAL_MS
    snapshot_every_ms = int(SnapshotConfig.checkpoint_interval_s * 1000)
    next_request = start_ms + 250  # the first snapshot once the stream is open, then every checkpoint
    checkpoint = False
    pending: tuple[int, bytes] | None = None  # a snapshot answer on its way: (recv_ts, body)
    counts = {"depth_frames": 0, "trade_frames": 0, "snapshots": 0}

    def publish(recv_ts: int, stream: str, payload: dict) -> None:
        nonlocal pending
        if pending is not None and pending[0] <= recv_ts:
            answer()
        day.frame(recv_ts, stream, payload)

    def answer() -> None:
        nonlocal pending
        pipeline.snapshot(pending[0], symbol, pending[1], limit)
        day.last_recv = max(day.last_recv, pending[0])
        pending = None

    def flush_until(ts: int) -> None:  # the venue's `_flush_until` for the one depth stream served
        nonlocal boundary
        while boundary <= ts:
            diff = batcher.flush(boundary)
            if diff is not None:
                publish(day.recv_ts(boundary), depth_stream, payloads.depth_update(spec, diff))
                counts["depth_frames"] += 1
            boundary += DEPTH_INTERVAL_MS

    step_ms = 1_000
    now_ms = start_ms
    while now_ms < stop_ms:
        until = min(now_ms + step_ms, stop_ms, next_request + REST_LATENCY_MS)
        for event in source.advance(until):
            flush_until(event.ts)
            if type(event) is DepthChange:
                batcher.add(event)
            elif type(event) is Trade:
                publish(day.recv_ts(event.ts + 1), trade_stream, payloads.trade(spec, event))
                counts["trade_frames"] += 1
        flush_until(until)
        now_ms = until
        if now_ms == next_request + REST_LATENCY_MS and now_ms < stop_ms:
            # the request leaves at next_request; the venue answers with its book at `now_ms`
            pipeline.event(max(next_request * 1_000_000, day.last_recv + 1), symbol, "snapshot_requested",
                           {"limit": limit, "checkpoint": checkpoint})
            body = orjson.dumps(payloads.depth_snapshot(spec, source.book(symbol, limit), now_ms))
            pending = ((now_ms + REST_LATENCY_MS) * 1_000_000 + LATENCY_NS, body)
            counts["snapshots"] += 1
            checkpoint = True
            next_request += snapshot_every_ms
    if pending is not None:
        answer()
    synced = [symbol] if pipeline.engines[symbol].synced else []
    pipeline.event(max(stop_ns, day.last_recv + 1), None, "window_end", {"reason": "end", "synced": synced})
    day.flush(stop_ns)
    compact_day(root, market.exchange, DAY, [symbol], SHARD_TAG, row_group_rows=WriterConfig.row_group_rows,
                events_tag=SHARD_TAG)
    if not synced or pipeline.gaps.get(symbol):
        raise RuntimeError(f"the generated day is not continuous: synced {synced}, gaps {pipeline.gaps}")
    return {**counts, "segments": day.segments}


def table_rows(root: Path, exchange: str, date: dt.date) -> dict[str, int]:
    """Rows per table of one day (from Parquet metadata)."""
    rows = {}
    for table_dir in sorted((root / exchange).iterdir()):
        files = list(table_dir.glob(f"date={date.isoformat()}/symbol=*/*.parquet"))
        if files:
            rows[table_dir.name] = sum(pq.read_metadata(f).num_rows for f in files)
    return rows


def make_long_day(out: Path, hours: float, market: str = "usdm", symbol: str = "BTCUSDT", seed: int = 1,
                  rate: str | float = "rows") -> tuple[Path, dt.date]:
    """The dataset root and Berlin date of a generated day of `hours` (cached: a complete one is reused)."""
    out = Path(out)
    wanted = {"hours": hours, "market": market, "symbol": symbol.upper(), "seed": seed,
              "events_per_second": events_per_second(rate), "date": DAY.isoformat()}
    marker = out / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        if {k: done.get(k) for k in wanted} == wanted:
            return out, DAY
    day_start_ns(hours)  # bad hours, market or symbol: one line, before anything is touched
    check_symbols(get_market(market), [symbol])
    if out.exists() and any(out.iterdir()) and not (marker.exists() or (out / PARTIAL).exists()):
        raise ValueError(f"{out} holds other data; give an empty or new directory")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / PARTIAL).write_text(json.dumps(wanted))
    started = time.perf_counter()
    counts = generate(out, hours, market, wanted["symbol"], seed, wanted["events_per_second"])
    seconds = time.perf_counter() - started
    rows = table_rows(out, get_market(market).exchange, DAY)
    done = {**wanted, "rows": rows, **counts, "seconds": seconds}
    (out / (MARKER + ".tmp")).write_text(json.dumps(done, indent=1))
    (out / (MARKER + ".tmp")).replace(marker)
    (out / PARTIAL).unlink()
    return out, DAY


# ---- measuring and checking ---------------------------------------------------------------------------


def rates(root: Path, market: str, date: dt.date, symbol: str) -> dict:
    """Messages and rows per second of a day: depth diffs, levels per diff, trades, snapshots."""
    base = Path(root) / get_market(market).exchange

    def read(table: str, columns: list[str]):
        files = sorted(base.glob(f"{table}/date={date.isoformat()}/symbol={symbol}/*.parquet"))
        return pq.read_table(files, columns=columns) if files else None

    import pyarrow.compute as pc

    depth = read("depth", ["recv_ts", "seq"])
    trades = read("trades", ["recv_ts"])
    snapshots = read("snapshots", ["seq"])
    first = min(pc.min(t.column("recv_ts")).as_py() for t in (depth, trades) if t is not None)
    last = max(pc.max(t.column("recv_ts")).as_py() for t in (depth, trades) if t is not None)
    span_s = (last - first) / 1e9
    diffs = pc.count_distinct(depth.column("seq")).as_py()
    n_trades = trades.num_rows if trades is not None else 0
    n_snapshot_rows = snapshots.num_rows if snapshots is not None else 0
    return {"span_s": span_s, "depth_msg_s": diffs / span_s, "levels_per_msg": depth.num_rows / diffs,
            "depth_rows_s": depth.num_rows / span_s, "trades_s": n_trades / span_s,
            "snapshots": pc.count_distinct(snapshots.column("seq")).as_py() if snapshots is not None else 0,
            "rows": depth.num_rows + n_snapshot_rows + n_trades,
            "rows_s": (depth.num_rows + n_snapshot_rows + n_trades) / span_s}


def check_day(root: Path, market: str, date: dt.date, symbol: str, hours: float) -> dict:
    """`recorder validate` over the generated span (as `recorder run` validates its run) and a full
    `DayReplay`: the book must be valid from the first snapshot on and never become invalid."""
    from recorder.runtime import RunSpan
    from recorder.validate import validate_day
    from replay.engine import BOOK_INVALID, BOOK_VALID, DEPTH, SNAPSHOT, DayReplay

    start_ns, stop_ns = day_start_ns(hours)
    started = time.perf_counter()
    report = validate_day(root, market, date, [symbol], window=RunSpan(start_ns, stop_ns, "Europe/Berlin"))
    validate_s = time.perf_counter() - started
    started = time.perf_counter()
    replay = DayReplay(root, get_market(market), date, [symbol], channels=())
    events = invalid = bookless = 0
    first_snapshot = valid_since = None
    for event in replay.events():
        events += 1
        if event.kind == SNAPSHOT and first_snapshot is None:
            first_snapshot = event.seq
        elif event.kind == BOOK_VALID and valid_since is None:
            valid_since = event.seq
        elif event.kind == BOOK_INVALID:
            invalid += 1
        elif event.kind == DEPTH and valid_since is not None and event.book is None:
            bookless += 1
    return {"validate_status": report["status"], "validate_exit_code": report["exit_code"],
            "validate_s": validate_s, "replay_events": events, "replay_s": time.perf_counter() - started,
            "first_snapshot_seq": first_snapshot, "book_valid_from_seq": valid_since,
            "book_invalid_events": invalid, "diffs_without_book_after_valid": bookless}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--market", default="usdm")
    parser.add_argument("--symbol", default="BTCUSDT")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", default="rows", help="rows (default), messages, or the source's events per "
                        "second: which of the real capture's rates the day matches (see the module text)")
    parser.add_argument("--check", action="store_true", help="also validate the day and replay it in full")
    parser.add_argument("--real", type=Path, default=REAL, help="an imported real day to compare rates with")
    args = parser.parse_args()
    started = time.perf_counter()
    try:
        root, date = make_long_day(args.out, args.hours, args.market, args.symbol, args.seed, args.rate)
    except (ValueError, KeyError) as exc:  # bad hours, market, symbol or out directory
        print(f"longday: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        raise SystemExit(2) from None
    seconds = time.perf_counter() - started
    done = json.loads((root / MARKER).read_text())
    total = sum(done["rows"].values())
    print(f"{root} {date}: {args.hours:g} h of {args.symbol.upper()} ({args.market}), seed {args.seed}, rate "
          f"{args.rate}: source {done['events_per_second']:,.0f} events/s")
    for table, rows in done["rows"].items():
        print(f"   {table:12s} {rows:>12,} rows")
    print(f"   {'total':12s} {total:>12,} rows; {done['depth_frames']:,} depth diffs, "
          f"{done['trade_frames']:,} trades, "
          f"{done['snapshots']} snapshots, {done['segments']} segments")
    cached = " (cached; generated earlier)" if seconds < done["seconds"] / 2 else ""
    print(f"   generated in {done['seconds']:.1f} s = {total / done['seconds']:,.0f} rows/s{cached}")
    sides = [("generated", rates(root, args.market, date, args.symbol.upper()))]
    real_days = sorted((args.real / get_market(args.market).exchange / "depth").glob(
        f"date=*/symbol={args.symbol.upper()}"))
    if real_days:  # the imported capture of this market and symbol, if there is one
        real_day = dt.date.fromisoformat(real_days[0].parent.name.split("=")[1])
        sides.insert(0, ("real capture", rates(args.real, args.market, real_day, args.symbol.upper())))
    print(f"   {'':14s} {'depth msg/s':>11s} {'levels/msg':>10s} {'depth rows/s':>12s} {'trades/s':>9s} "
          f"{'rows/s':>8s} {'span s':>8s}")
    for name, r in sides:
        print(f"   {name:14s} {r['depth_msg_s']:>11.1f} {r['levels_per_msg']:>10.1f} "
              f"{r['depth_rows_s']:>12,.0f} {r['trades_s']:>9.1f} {r['rows_s']:>8,.0f} {r['span_s']:>8,.0f}")
    if args.check:
        r = check_day(root, args.market, date, args.symbol.upper(), args.hours)
        print(f"   validate: {r['validate_status']} (exit {r['validate_exit_code']}, "
              f"{r['validate_s']:.1f} s); "
              f"replay: {r['replay_events']:,} events in {r['replay_s']:.1f} s, first snapshot seq "
              f"{r['first_snapshot_seq']}, book valid from seq {r['book_valid_from_seq']}, "
              f"{r['book_invalid_events']} book_invalid events, {r['diffs_without_book_after_valid']} diffs "
              "without a book after that")
        if r["validate_exit_code"] != 0 or r["book_invalid_events"] or r["book_valid_from_seq"] is None \
                or r["diffs_without_book_after_valid"]:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
