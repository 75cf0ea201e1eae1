"""Recorder throughput and storage: in-process ingest, end-to-end over loopback WebSocket, bytes on disk.

Usage: python benchmarks/bench_recorder.py [--realdata DIR] [--repeat N] [--seconds S] [--profile]
                                           [--only 1,2,3] [--json PATH]

1. In-process ingest of the real BTCUSDT spot capture (../shared/realdata/hftbacktest/spot_btcusdt_2024080{8,9}.gz,
   held in memory): `Pipeline` with a real `Journal` (append per frame, fsync every 200 ms as the recorder
   does), `frame()`/`snapshot()` per record, `flush()` to Parquet every 50k frames and at the end; msg/s
   and the ratio to bare `orjson.loads` of the same frames (best of N each). Target: >= 50 % of bare.
   Breakdown: parse only, parse+append (journal on, no flush), flush and fsync time; `--profile` prints
   the top of a cProfile of one full run.
2. End-to-end: the real `Recorder` (recorder.runtime) against a sender in another process over loopback:
   (a) a fast sender replaying the real spot frames (one copy per catalogue symbol, one connection per
   symbol, sent as fast as the client reads: TCP flow control, nothing is dropped) and (b) the synthetic
   `VenueServer` with speed=None. msg/s received and written, and the `gap` / `disconnect` events of the
   events table (no faults: there must be none). Each sender's own max rate is measured with a null
   client, so the table says which side is the bottleneck. Target: >= 40k msg/s.
3. Bytes on disk for the spot capture: the compacted Parquet dataset (Pipeline + compact_day), the seed
   CSV (export_seed_csv), a per-row CSV of the same tables (depth as one row per level: recv_ts, seq, E,
   U, u, side, price, qty: the like-for-like comparison), the original gzip capture and the raw frames
   re-gzipped. Target: Parquet <= 1/8 of the CSV and <= the gzip raw lines.

Figures 1 and 3 (and 2a) need ../shared/realdata; without it they are skipped with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import gzip
import io
import json
import logging
import multiprocessing as mp
import pstats
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recorder import sink
from recorder.captures import iter_capture
from recorder.journal import Journal
from recorder.markets import get_market
from recorder.pipeline import Pipeline
from recorder.protocol import parse_frame

DEFAULT_REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
SPOT_FILES = ["hftbacktest/spot_btcusdt_20240808.gz", "hftbacktest/spot_btcusdt_20240809.gz"]
SPOT_SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "DOGEUSDT", "PEPEUSDT"]  # the venue's catalogue
FLUSH_EVERY = 50_000
JOURNAL_SYNC_S = 0.2
SHARD_TAG = "0of1"
TARGET_INGEST_RATIO = 0.5
TARGET_E2E = 40_000
TARGET_CSV_FACTOR = 8

Record = tuple[int, str, bytes, str | None, int]  # recv_ts, kind, payload, symbol, limit


def load(root: Path) -> list[Record]:
    return [(r.recv_ts, r.kind, r.payload, r.symbol, r.limit or 0)
            for r in iter_capture([root / f for f in SPOT_FILES]) if r.kind in ("ws", "rest")]


def best_of(repeat: int, fn, *args):
    """(best seconds, result of the best run)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        elapsed = time.perf_counter() - start
        if elapsed < best:
            best, result = elapsed, out
    return best, result


@contextmanager
def gc_thresholds(threshold: tuple[int, ...] | None):
    if threshold is None:
        yield
        return
    old = gc.get_threshold()
    gc.collect()
    gc.set_threshold(*threshold)
    try:
        yield
    finally:
        gc.set_threshold(*old)


# ---- figure 1: in-process ingest ----------------------------------------------------------------------


def bare_parse(records: list[Record]) -> None:
    loads = orjson.loads
    for _, _, payload, _, _ in records:
        loads(payload)


def parse_only(records: list[Record]) -> None:
    for _, kind, payload, _, _ in records:
        if kind == "ws":
            parse_frame(payload)


def parse_append(records: list[Record]) -> Pipeline:
    """The hot path without I/O: journal append + parse + sync + buffer (no fsync, no flush)."""
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as tmp:
        journal = Journal(Path(tmp) / "journal")
        pipeline = Pipeline(get_market("spot"), journal=journal)
        frame, snapshot = pipeline.frame, pipeline.snapshot
        for recv_ts, kind, payload, symbol, limit in records:
            if kind == "ws":
                frame(recv_ts, payload)
            else:
                snapshot(recv_ts, symbol, payload, limit)
        return pipeline


def ingest(records: list[Record], out: Path | None = None, keep: bool = False) -> dict:
    """The recorder's whole in-process path; returns timings of its parts and the pipeline's counters."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-rec-")) if out is None else out
    timings = {"flush_s": 0.0, "sync_s": 0.0, "flushes": 0, "syncs": 0}
    dates = set()
    try:
        journal = Journal(tmp / ".journal")
        journal.open("bench")
        pipeline = Pipeline(get_market("spot"), journal=journal)
        frame, snapshot = pipeline.frame, pipeline.snapshot
        clock = time.perf_counter
        last_sync = clock()
        segment = 0

        def flush() -> None:
            nonlocal segment
            dates.update(d for d, rows in pipeline.buffers.items() if rows.count)
            start = clock()
            _, rejected = pipeline.flush(tmp, f"seg-{segment:020d}-{SHARD_TAG}")
            timings["flush_s"] += clock() - start
            timings["flushes"] += 1
            assert not rejected, rejected[:3]
            segment += 1

        def sync() -> None:
            nonlocal last_sync
            start = clock()
            journal.sync()
            last_sync = clock()
            timings["sync_s"] += last_sync - start
            timings["syncs"] += 1

        for n, (recv_ts, kind, payload, symbol, limit) in enumerate(records, 1):
            if kind == "ws":
                frame(recv_ts, payload)
            else:
                snapshot(recv_ts, symbol, payload, limit)
            if not n & 1023 and clock() - last_sync >= JOURNAL_SYNC_S:
                sync()
            if not n % FLUSH_EVERY:
                flush()
        sync()
        flush()
        journal.close()
        timings.update(gaps=sum(pipeline.gaps.values()), synced=all(e.synced for e in pipeline.engines.values()),
                       dates=sorted(dates), counts=dict(pipeline.counts))
        return timings
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def flush_split(acc: dict):
    """Time the table builders (Python/Arrow conversion) and the Parquet writes inside `flush` per table."""
    builders, write_partition = dict(sink.TABLE_BUILDERS), sink.write_partition

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[name] = acc.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    for table, fn in builders.items():
        sink.TABLE_BUILDERS[table] = timed(f"build {table}", fn)
    sink.write_partition = timed("write parquet (all tables)", write_partition)
    try:
        yield acc
    finally:
        sink.TABLE_BUILDERS.update(builders)
        sink.write_partition = write_partition


def figure_ingest(records: list[Record], repeat: int, profile: bool) -> dict:
    n = len(records)
    ws = sum(1 for r in records if r[1] == "ws")
    bare_s, _ = best_of(repeat, bare_parse, records)
    parse_s, _ = best_of(repeat, parse_only, records)
    append_s, _ = best_of(repeat, parse_append, records)
    full_s, parts = best_of(repeat, ingest, records)
    with gc_thresholds((100_000, 50, 100)):
        gc_s, gc_parts = best_of(repeat, ingest, records)
    split: dict[str, float] = {}
    with flush_split(split):
        ingest(records)
    result = {
        "frames": n, "ws_frames": ws, "repeat": repeat,
        "bare_orjson_msg_s": n / bare_s,
        "parse_frame_msg_s": ws / parse_s,
        "parse_append_msg_s": n / append_s,
        "full_msg_s": n / full_s,
        "ratio_to_bare": bare_s / full_s,
        "full_s": full_s, "flush_s": parts["flush_s"], "fsync_s": parts["sync_s"],
        "hot_path_s": full_s - parts["flush_s"] - parts["sync_s"],
        "flushes": parts["flushes"], "syncs": parts["syncs"],
        "gaps_in_data": parts["gaps"], "synced": parts["synced"],
        "what_if_gc_threshold_100k_msg_s": n / gc_s,
        "what_if_gc_threshold_100k_ratio": bare_s / gc_s,
        "what_if_gc_flush_s": gc_parts["flush_s"],
        "flush_split_s": split,
        "target_ratio": TARGET_INGEST_RATIO,
        "meets_target": bare_s / full_s >= TARGET_INGEST_RATIO,
    }
    print(f"\n1. In-process ingest, spot BTCUSDT capture ({n:,} frames in memory, best of {repeat})")
    rows = [
        ("bare orjson.loads", n / bare_s, bare_s, ""),
        ("parse_frame only", ws / parse_s, parse_s, ""),
        ("parse+append (journal, engine, buffer)", n / append_s, append_s, "no fsync, no flush"),
        ("full: + fsync/200ms + flush/50k, default GC", n / full_s, full_s, f"ratio to bare {bare_s / full_s:.3f}"),
        ("  of which hot path", None, result["hot_path_s"], f"{result['hot_path_s'] / full_s:4.0%}"),
        ("  of which flush to Parquet", None, parts["flush_s"], f"{parts['flush_s'] / full_s:4.0%} ({parts['flushes']} flushes)"),
        ("  of which journal fsync", None, parts["sync_s"], f"{parts['sync_s'] / full_s:4.0%} ({parts['syncs']} syncs)"),
        ("full, GC tuned as the recorder runs (tune_gc)", n / gc_s, gc_s, f"ratio to bare {bare_s / gc_s:.3f}"),
    ]
    print(f"   {'path':46s} {'msg/s':>11s} {'seconds':>8s}  note")
    for name, rate, seconds, note in rows:
        print(f"   {name:46s} {'' if rate is None else f'{rate:11,.0f}':>11s} {seconds:8.3f}  {note}")
    print("   flush split (one instrumented run): " + ", ".join(
        f"{k} {v:.3f}s" for k, v in sorted(split.items(), key=lambda kv: -kv[1]) if v >= 0.001))
    verdict = "MET" if result["meets_target"] else "MISSED"
    print(f"   target >= {TARGET_INGEST_RATIO:.0%} of bare parse: {verdict} ({bare_s / full_s:.1%}); "
          f"gaps in the data: {parts['gaps']}, books synced: {parts['synced']}")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        ingest(records)
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        body = text.getvalue()
        start = body.find("   ncalls")
        print("   cProfile of one full run (tottime):")
        print("\n".join("   " + line for line in body[start:].rstrip().splitlines()))
    return result


# ---- figure 2: end-to-end over loopback ---------------------------------------------------------------


def _rename(payload: bytes, symbol: str) -> bytes:
    if symbol == "BTCUSDT":
        return payload
    return payload.replace(b"btcusdt@", symbol.lower().encode() + b"@").replace(
        b'"s":"BTCUSDT"', b'"s":"' + symbol.encode() + b'"')


def _streams_of(path: str) -> list[str]:
    from urllib.parse import parse_qs, urlsplit
    parts = urlsplit(path)
    return [s for s in parse_qs(parts.query).get("streams", [""])[0].split("/") if s]


def replay_sender_process(conn, realdata: str, symbols: list[str]) -> None:
    """Child process: serve the real spot frames (one renamed copy per symbol) as fast as the client reads.

    REST: exchangeInfo of the venue catalogue and the capture's own depth snapshot (consistent with the
    first frames of every copy). Every connection replays from the start, interleaving its symbols.
    """
    from websockets.asyncio.server import serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    from replay.venue.synthetic import SyntheticSource

    records = load(Path(realdata))
    ws = [payload for _, kind, payload, _, _ in records if kind == "ws"]
    snapshot = next(payload for _, kind, payload, _, _ in records if kind == "rest")
    frames = {s: [_rename(p, s) for p in ws] for s in symbols}
    market = get_market("spot")
    source = SyntheticSource(market, symbols)
    info = orjson.dumps({"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [],
                         "exchangeFilters": [], "symbols": [source.exchange_info_symbol(s) for s in symbols]})
    sent: list[int] = []

    def response(body: bytes, status: int = 200) -> Response:
        headers = Headers()
        headers["Content-Type"] = "application/json;charset=UTF-8"
        headers["Content-Length"] = str(len(body))
        headers["X-MBX-USED-WEIGHT-1M"] = "1"
        headers["Connection"] = "close"
        return Response(status, "OK" if status == 200 else "Not Found", headers, body)

    def process_request(connection, request):
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return None
        path = request.path.split("?", 1)[0]
        if path == market.exchange_info_path:
            return response(info)
        if path == market.depth_path:
            return response(snapshot)
        return response(b"{}", 404)

    async def handler(connection) -> None:
        wanted = sorted({s.split("@", 1)[0].upper() for s in _streams_of(connection.request.path)})
        lists = [frames[s] for s in wanted if s in frames]
        index = len(sent)
        sent.append(0)
        send = connection.send
        with suppress(Exception):  # the client went away
            for i in range(len(ws)):
                for frame_list in lists:
                    await send(frame_list[i], text=True)
                sent[index] += len(lists)
            await connection.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, process_request=process_request, ping_interval=None,
                         max_size=2**20, compression=None) as server:
            conn.send(next(iter(server.sockets)).getsockname()[1])
            loop = asyncio.get_running_loop()
            while True:
                command = await loop.run_in_executor(None, conn.recv)
                if command == "stats":
                    conn.send(list(sent))
                    sent.clear()
                else:
                    conn.send(list(sent))
                    return

    asyncio.run(main())


def venue_process(conn, symbols: list[str], events_per_second: float) -> None:
    """Child process: the synthetic VenueServer with speed=None."""
    from replay.venue.server import VenueServer

    async def main() -> None:
        async with VenueServer("spot", symbols, speed=None, events_per_second=events_per_second, seed=7) as venue:
            conn.send(venue.port)
            loop = asyncio.get_running_loop()
            while True:
                command = await loop.run_in_executor(None, conn.recv)
                stats = {"clients": [c.sent_frames for c in venue._clients], "faults": dict(venue.fault_counts),
                         "market_s": (venue.market_ms - venue.source.start_ms) / 1000}
                conn.send(stats)
                if command != "stats":
                    return

    asyncio.run(main())


class Child:
    """A sender in a spawned process (the recorder keeps this process's core to itself)."""

    def __init__(self, target, *args) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(child_conn, *args), daemon=True)
        self.process.start()
        if not self.conn.poll(60):
            raise RuntimeError("sender process did not start")
        self.port = self.conn.recv()

    def ask(self, command: str):
        self.conn.send(command)
        return self.conn.recv()

    def stop(self):
        try:
            stats = self.ask("stop")
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
        return stats


def streams(symbols: list[str], agg_trade: bool) -> list[list[str]]:
    channels = ["depth@100ms", "trade", *(["aggTrade"] if agg_trade else []), "bookTicker"]
    return [[f"{s.lower()}@{c}" for c in channels] for s in symbols]


async def null_clients(port: int, groups: list[list[str]], seconds: float) -> int:
    """Frames a do-nothing client receives in `seconds` over one connection per stream group."""
    import websockets

    async def one(group: list[str]) -> int:
        count = 0
        async with websockets.connect(f"ws://127.0.0.1:{port}/stream?streams={'/'.join(group)}",
                                      max_size=None, ping_interval=None, compression=None) as ws:
            recv = ws.recv
            with suppress(TimeoutError):
                async with asyncio.timeout(seconds):  # also ends the wait when a sender has nothing left
                    while True:
                        await recv(decode=False)
                        count += 1
        return count

    return sum(await asyncio.gather(*(one(g) for g in groups)))


def dataset_counts(out: Path, exchange: str) -> dict:
    """Messages written (depth: distinct seq, the others rows), their recv_ts span, event kinds."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    messages, lo, hi = 0, None, None
    for table in ("depth", "trades", "agg_trades", "book_ticker"):
        files = sorted((out / exchange / table).glob("date=*/symbol=*/*.parquet"))
        if not files:
            continue
        data = pa.concat_tables([pq.read_table(f, columns=["seq", "recv_ts"]) for f in files])
        messages += len(pc.unique(data.column("seq"))) if table == "depth" else data.num_rows
        a, b = pc.min(data.column("recv_ts")).as_py(), pc.max(data.column("recv_ts")).as_py()
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
    kinds: dict[str, int] = {}
    for f in sorted((out / exchange / "events").glob("date=*/symbol=*/*.parquet")):
        for kind in pq.read_table(f, columns=["kind"]).column("kind").to_pylist():
            kinds[kind] = kinds.get(kind, 0) + 1
    return {"written": messages, "span_s": (hi - lo) / 1e9 if lo is not None else 0.0, "events": kinds}


def run_recorder(ws_url: str, rest_url: str, symbols: list[str], seconds: float, agg_trade: bool) -> dict:
    import yaml

    from recorder.config import load_config
    from recorder.runtime import Recorder

    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    try:
        out = tmp / "data"
        path = tmp / "recorder.yaml"
        path.write_text(yaml.safe_dump({
            "channels": {"depth": "depth@100ms", "trade": True, "agg_trade": agg_trade, "book_ticker": True},
            "connection": {"max_streams": 4 if agg_trade else 3},  # one connection per symbol
            "snapshot": {"stagger": "50ms"},
        }))
        config = load_config(path, {"market": "spot", "symbols": symbols, "out": out, "rest_url": rest_url,
                                    "ws_url": ws_url, "duration": seconds, "ignore_window": True})
        recorder = Recorder(config)
        start = time.perf_counter()
        code = asyncio.run(recorder.run())
        wall = time.perf_counter() - start
        counts = dataset_counts(out, config.market.exchange)
        received = recorder.pipeline.counts["frames"]
        span = counts["span_s"] or seconds
        return {"exit_code": code, "received": received, "written": counts["written"], "span_s": span,
                "received_msg_s": received / span, "written_msg_s": counts["written"] / span,
                "gap_events": counts["events"].get("gap", 0),
                "disconnect_events": counts["events"].get("disconnect", 0), "events": counts["events"],
                "wall_s": wall, "connections": len(symbols)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def e2e_case(name: str, child: Child, symbols: list[str], seconds: float, agg_trade: bool,
             probe_s: float, capacity: int | None = None) -> dict:
    groups = streams(symbols, agg_trade)
    received = asyncio.run(null_clients(child.port, groups, probe_s))
    child.ask("stats")
    sender_max = received / probe_s
    url = f"127.0.0.1:{child.port}"
    result = run_recorder(f"ws://{url}", f"http://{url}", symbols, seconds, agg_trade)
    result["sender_stats"] = child.stop()
    result.update(name=name, sender_max_msg_s=sender_max, target=TARGET_E2E,
                  meets_target=result["received_msg_s"] >= TARGET_E2E)
    rate = result["received_msg_s"]
    # A null client got everything the sender had: its max rate is at least this (a lower bound).
    result["sender_max_is_lower_bound"] = capacity is not None and received >= capacity
    result["recorder_kept_up"] = rate >= 0.85 * sender_max and not result["sender_max_is_lower_bound"]
    result["bottleneck"] = "sender" if sender_max < TARGET_E2E and not result["sender_max_is_lower_bound"] \
        else "recorder"
    return result


def figure_e2e(realdata: Path | None, seconds: float, probe_s: float, events_per_second: float,
               frames_per_symbol: int) -> dict:
    print(f"\n2. End-to-end over loopback WebSocket: recorder.runtime.Recorder, {seconds:g} s per case, "
          f"one connection per symbol, sender in its own process")
    cases = []
    if realdata is not None:
        child = Child(replay_sender_process, str(realdata), SPOT_SYMBOLS)
        cases.append(e2e_case(f"fast sender: real spot frames x {len(SPOT_SYMBOLS)} symbols", child,
                              SPOT_SYMBOLS, seconds, False, probe_s, frames_per_symbol * len(SPOT_SYMBOLS)))
    else:
        print("   (fast-sender case skipped: no real data)")
    child = Child(venue_process, SPOT_SYMBOLS, events_per_second)
    cases.append(e2e_case(f"VenueServer speed=None, synthetic, {events_per_second:g} ev/s/sym", child,
                          SPOT_SYMBOLS, seconds, True, probe_s))
    print(f"   {'case':52s} {'sender max':>10s} {'received':>9s} {'written':>9s} {'msg/s rcvd':>10s} "
          f"{'msg/s wrtn':>10s} {'gaps':>4s} {'disc':>4s} {'bottleneck':>10s}")
    for c in cases:
        sender_max = (">=" if c["sender_max_is_lower_bound"] else "") + f"{c['sender_max_msg_s']:,.0f}"
        print(f"   {c['name']:52s} {sender_max:>10s} {c['received']:9,d} {c['written']:9,d} "
              f"{c['received_msg_s']:10,.0f} {c['written_msg_s']:10,.0f} {c['gap_events']:4d} "
              f"{c['disconnect_events']:4d} {c['bottleneck']:>10s}")
    for c in cases:
        verdict = "MET" if c["meets_target"] else "MISSED"
        print(f"   {c['name']}: target >= {TARGET_E2E:,} msg/s {verdict}; recorder kept up with the sender: "
              f"{c['recorder_kept_up']}; exit code {c['exit_code']}; events {c['events']}; "
              f"sender stats {c['sender_stats']}")
    return {"cases": cases}


# ---- figure 3: bytes on disk --------------------------------------------------------------------------


def _tree_size(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def per_row_csv(out: Path, exchange: str, csv_root: Path) -> dict[str, int]:
    """Every dataset table as plain CSV (what the Parquet holds, row for row); depth as the per-level diff
    rows recv_ts,seq,E,U,u,side,price,qty. Prices/quantities print as Binance does (8 decimals)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    sizes = {}
    csv_root.mkdir(parents=True, exist_ok=True)
    for table_dir in sorted(p for p in (out / exchange).iterdir() if p.is_dir()):
        files = sorted(table_dir.glob("date=*/symbol=*/*.parquet"))
        if not files:
            continue
        data = pa.concat_tables([pq.read_table(f).replace_schema_metadata(None) for f in files])
        if table_dir.name == "depth":
            data = data.select(["recv_ts", "seq", "event_ts", "first_update_id", "final_update_id", "side",
                                "price", "qty"])
            data = data.rename_columns(["recv_ts", "seq", "E", "U", "u", "side", "price", "qty"])
            data = data.set_column(2, "E", pc.divide(data.column("E"), 1_000_000))  # back to ms
        columns = [c.cast(pa.string()) if pa.types.is_decimal(c.type) else c for c in data.columns]
        data = pa.table(columns, names=data.column_names)
        path = csv_root / f"{table_dir.name}.csv"
        pacsv.write_csv(data, path)
        sizes[table_dir.name] = path.stat().st_size
    return sizes


def figure_storage(records: list[Record], realdata: Path, keep: Path | None) -> dict:
    from recorder.compaction import compact_day, csv_dir

    tmp = Path(tempfile.mkdtemp(prefix="bench-disk-")) if keep is None else keep
    exchange = get_market("spot").exchange
    try:
        start = time.perf_counter()
        parts = ingest(records, out=tmp, keep=True)
        ingest_s = time.perf_counter() - start
        start = time.perf_counter()
        for date in parts["dates"]:
            compact_day(tmp, exchange, date, ["BTCUSDT"], SHARD_TAG, formats=("parquet",))
        compact_s = time.perf_counter() - start
        start = time.perf_counter()
        from recorder.compaction import export_seed_csv
        for date in parts["dates"]:
            export_seed_csv(tmp, exchange, date, "BTCUSDT")
        seed_s = time.perf_counter() - start
        parquet = {d.name: _tree_size(d, "*.parquet") for d in sorted((tmp / exchange).iterdir()) if d.is_dir()}
        seed = {}
        for date in parts["dates"]:
            for f in sorted(csv_dir(tmp, exchange, date).glob("*.csv")):
                seed[f.name.rsplit("_BTCUSDT", 1)[0]] = seed.get(f.name.rsplit("_BTCUSDT", 1)[0], 0) + \
                    f.stat().st_size
        per_row = per_row_csv(tmp, exchange, tmp / "per-row-csv")
        original_gz = sum((realdata / f).stat().st_size for f in SPOT_FILES)
        raw = b"\n".join(payload for _, _, payload, _, _ in records) + b"\n"
        lines = b"".join(b"%d %s\n" % (ts, payload) for ts, _, payload, _, _ in records)
        raw_gz = len(gzip.compress(raw, 6))
        lines_gz = len(gzip.compress(lines, 6))
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    total_parquet = sum(parquet.values())
    total_seed = sum(seed.values())
    total_per_row = sum(per_row.values())
    result = {
        "parquet_bytes": parquet, "parquet_total": total_parquet,
        "seed_csv_bytes": seed, "seed_csv_total": total_seed,
        "per_row_csv_bytes": per_row, "per_row_csv_total": total_per_row,
        "depth_per_level_csv": per_row.get("depth", 0),
        "gzip_original_capture": original_gz, "gzip_raw_frames": raw_gz, "gzip_raw_lines_with_ts": lines_gz,
        "raw_frames_uncompressed": len(raw),
        "seconds": {"ingest_flush": ingest_s, "compact": compact_s, "seed_csv": seed_s},
    }
    result["meets_csv_target"] = total_parquet * TARGET_CSV_FACTOR <= total_per_row
    result["meets_gzip_target"] = total_parquet <= min(original_gz, raw_gz)
    mb = 1e6
    print(f"\n3. Bytes on disk, spot BTCUSDT capture ({len(records):,} frames, {len(raw) / mb:.1f} MB raw JSON)")
    print(f"   {'table':14s} {'Parquet':>10s} {'per-row CSV':>12s} {'CSV/Parquet':>11s}")
    for table in sorted(set(parquet) | set(per_row)):
        p, c = parquet.get(table, 0), per_row.get(table, 0)
        label = "depth (levels)" if table == "depth" else table
        print(f"   {label:14s} {p / mb:9.3f}M {c / mb:11.3f}M {c / p if p else float('nan'):10.1f}x")
    print(f"   {'total':14s} {total_parquet / mb:9.3f}M {total_per_row / mb:11.3f}M "
          f"{total_per_row / total_parquet:10.1f}x")
    print("   seed CSV (export_seed_csv): " + ", ".join(f"{k} {v / mb:.3f}M" for k, v in seed.items())
          + f"; total {total_seed / mb:.3f}M = {total_seed / total_parquet:.1f}x Parquet "
            "(not like-for-like: top-10 books instead of diffs, no bookTicker)")
    print(f"   gzip: original capture {original_gz / mb:.3f}M, raw frames re-gzipped (-6) {raw_gz / mb:.3f}M, "
          f"raw lines with recv_ts re-gzipped {lines_gz / mb:.3f}M")
    print(f"   Parquet total {total_parquet / mb:.3f}M: {total_parquet / total_per_row:.3f} of the per-row CSV "
          f"(target <= 1/{TARGET_CSV_FACTOR}: {'MET' if result['meets_csv_target'] else 'MISSED'}), "
          f"{total_parquet / total_seed:.3f} of the seed CSV, "
          f"{total_parquet / original_gz:.2f}x the original gzip, {total_parquet / raw_gz:.2f}x the re-gzipped "
          f"frames (target <= 1x: {'MET' if result['meets_gzip_target'] else 'MISSED'})")
    print(f"   (ingest+flush {ingest_s:.1f}s, compact_day {compact_s:.1f}s, export_seed_csv {seed_s:.1f}s)")
    return result


# ---- main ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for figure 1 (default 3)")
    parser.add_argument("--seconds", type=float, default=12.0, help="recording time per e2e case (default 12)")
    parser.add_argument("--probe", type=float, default=3.0, help="null-client probe of each sender, seconds")
    parser.add_argument("--events-per-second", type=float, default=1000.0,
                        help="synthetic venue events per second per symbol (default 1000)")
    parser.add_argument("--only", default="1,2,3", help="figures to run, e.g. 1,3")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one figure-1 run")
    parser.add_argument("--keep", type=Path, help="write figure 3's dataset here and keep it")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="   [%(name)s] %(message)s")
    only = {int(x) for x in args.only.split(",") if x.strip()}
    realdata = args.realdata if (args.realdata / SPOT_FILES[0]).is_file() else None
    results: dict = {"python": sys.version.split()[0], "cpus": mp.cpu_count()}
    started = time.perf_counter()
    records = load(realdata) if realdata is not None else None
    if realdata is None:
        print(f"bench_recorder: {args.realdata} not found (the real captures live in ../shared/realdata): "
              "figures 1 and 3 and the real-frame e2e case are skipped")
    if 1 in only and records is not None:
        results["ingest"] = figure_ingest(records, args.repeat, args.profile)
    if 2 in only:
        frames_per_symbol = sum(1 for r in records if r[1] == "ws") if records else 0
        results["e2e"] = figure_e2e(realdata, args.seconds, args.probe, args.events_per_second, frames_per_symbol)
    if 3 in only and records is not None:
        results["storage"] = figure_storage(records, realdata, args.keep)
    results["total_s"] = time.perf_counter() - started
    print(f"\n(total {results['total_s']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
