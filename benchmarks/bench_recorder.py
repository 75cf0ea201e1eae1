"""Recorder throughput and storage: in-process ingest, end-to-end over loopback WebSocket, bytes on disk.

Usage: python benchmarks/bench_recorder.py [--realdata DIR] [--repeat N] [--seconds S] [--profile]
                                           [--only 1,2,3,4] [--json PATH] [--market-seconds S]
                                           [--market-symbols N] [--max-streams N|default]

1. In-process ingest of the real BTCUSDT spot capture (../shared/realdata/hftbacktest/spot_btcusdt_2024080{8,9}.gz,
   99,574 frames) once per symbol of six liquid ones (INGEST_SYMBOLS), renamed and interleaved as figure 2's
   sender sends them (597,444 frames, held in memory; one copy alone is a row of its own): `Pipeline` with a real
   `Journal`, batches of 256 frames (`Pipeline.frames`, grouped before the clock starts, as the connection
   hands them over) and frame by frame (`frame()`), `snapshot()` per REST record, and between handovers the
   moves of the recorder's writer loop (`ingest`: journal writes every 200 ms or 4 MB, segments of the
   recorder's `segment_rows` written beside them, the last one after the frames); msg/s and the ratio to
   bare `orjson.loads` of the same frames, the two taking turns (best of N each). Target: >= 50 % of bare.
   Breakdown: parse only, the main thread, the last segment, the journal rotations; `--profile` prints
   the top of a cProfile of one full run. CPU seconds per million messages (process time of the full run,
   all threads). The peer: cryptofeed 2.4.x (benchmarks/cryptofeed_peer.py, in its own venv given by
   `--peer-python`, by default /tmp/cf-venv/bin/python) runs the same frames through its Binance handler
   with no-op callbacks and the capture's REST snapshot served from memory, in the same run. Target:
   >= 3x cryptofeed.
2. End-to-end: the real `Recorder` (recorder.runtime) against a sender in another process over loopback:
   (a) a fast sender replaying the real spot frames (one copy per catalogue symbol, one connection per
   symbol, encoded once and written 256 frames at a time as fast as the client reads: TCP flow control,
   nothing is dropped) and (b) the synthetic
   `VenueServer` with speed=None. msg/s received and written, and the `gap` / `disconnect` events of the
   events table (no faults: there must be none). Each sender's own max rate is measured with a null
   client, so the table says which side is the bottleneck. Target: >= 150k msg/s, no gap (issue 12).
3. Bytes on disk for the spot capture: the compacted Parquet dataset (Pipeline + compact_day), the seed
   CSV (export_seed_csv), a per-row CSV of the same tables (depth as one row per level: recv_ts, seq, E,
   U, u, side, price, qty: the like-for-like comparison), the original gzip capture and the raw frames
   re-gzipped. Target: Parquet <= 1/8 of the CSV and <= the gzip raw lines.

4. A whole market: `recorder run` in its own process, with a YAML config of ~1,500 symbols (MARKET_TIERS: a few
   liquid symbols at the real BTCUSDT capture's rates, a long quiet tail, rates taken from the captures), against
   the synthetic VenueServer of that market at 1x in another process, for `--market-seconds` (30 by default,
   60 for the README). Messages/s recorded (dataset rows by seq), gaps caused by the recorder (breaks of
   U = previous u + 1 in the recorded depth, gap/disconnect events), the recorder's CPU share and RSS from
   /proc/<pid> over the steady window, CPU seconds per million messages, and the venue's own figures
   (what it published, its CPU, how far behind real time it fell). Fails with one line if symbols went
   unrecorded (e.g. a connection URL the venue refuses).

Figures 1 and 3 (and 2a) need ../shared/realdata; without it they are skipped with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import gzip
import io
import itertools
import json
import logging
import multiprocessing as mp
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from recorder.captures import iter_capture
from recorder.config import WriterConfig
from recorder.journal import Journal
from recorder.journal import run as run_journal_write
from recorder.markets import get_market
from recorder.pipeline import Pipeline, tune_malloc, write_buffers
from recorder.protocol import parse_frame
from recorder.runtime import JOURNAL_WAKE_BYTES

DEFAULT_REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
SPOT_FILES = ["hftbacktest/spot_btcusdt_20240808.gz", "hftbacktest/spot_btcusdt_20240809.gz"]
SPOT_SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "DOGEUSDT", "PEPEUSDT"]  # the venue's catalogue
# figure 1's copies: symbols the peer's exchangeInfo capture (../shared/realdata/cryptofeed) knows
INGEST_SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "DOGEUSDT", "XRPUSDT"]
FLUSH_EVERY = WriterConfig.segment_rows  # the recorder writes a segment at this many buffered rows (or 5 s)
BATCH = 256  # frames per Pipeline.frames call in the batched path
JOURNAL_SYNC_S = 0.2
SHARD_TAG = "0of1"
TARGET_INGEST_RATIO = 0.5
RECORDER_GC = (100_000, 50, 100)  # recorder.pipeline.tune_gc's thresholds
TARGET_PEER_RATIO = 3.0
PEER_PYTHON = "/tmp/cf-venv/bin/python"
PEER_VENV_COMMAND = "python3 -m venv /tmp/cf-venv && /tmp/cf-venv/bin/pip install 'cryptofeed==2.4.*'"
TARGET_E2E = 150_000  # issue 12: end to end over loopback, no gap caused by the recorder
TARGET_CSV_FACTOR = 8

Record = tuple[int, str, bytes, str | None, int]  # recv_ts, kind, payload, symbol, limit


def load(root: Path) -> list[Record]:
    return [(r.recv_ts, r.kind, r.payload, r.symbol, r.limit or 0)
            for r in iter_capture([root / f for f in SPOT_FILES]) if r.kind in ("ws", "rest")]


def market_copies(records: list[Record], symbols: list[str]) -> list[Record]:
    """The capture once per symbol (renamed, as figure 2's sender sends it), interleaved record by record:
    a multi-symbol stream of real frames, long enough that the last segment's write is a small part of it."""
    return [(recv_ts, kind, _rename(payload, s) if kind == "ws" else payload, s if kind == "rest" else symbol, limit)
            for recv_ts, kind, payload, symbol, limit in records for s in symbols]


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


def handovers(records: list[Record], batch: int) -> list[tuple]:
    """The records as a connection hands them to the pipeline: ("ws", receive times, frames) of at most
    `batch` frames, and ("rest", receive time, symbol, body, limit) between them."""
    out: list[tuple] = []
    stamps: list[int] = []
    frames: list[bytes] = []
    for recv_ts, kind, payload, symbol, limit in records:
        if kind == "ws":
            stamps.append(recv_ts)
            frames.append(payload)
            if len(frames) < batch:
                continue
        if frames:
            out.append(("ws", stamps, frames))
            stamps, frames = [], []
        if kind != "ws":
            out.append(("rest", recv_ts, symbol, payload, limit))
    if frames:
        out.append(("ws", stamps, frames))
    return out


def ingest(items: list[tuple], out: Path | None = None, keep: bool = False) -> dict:
    """The recorder's whole in-process path; returns timings of its parts and the pipeline's counters.

    As `recorder run` does it: `items` handed over as a connection reads them (`handovers`, made before
    the clock starts: that is the socket's part), and between handovers the writer loop's moves
    (`Recorder._writer_loop`), each step in a thread while frames keep coming: every 200 ms the journal
    written and fsynced; after that, once FLUSH_EVERY rows are buffered and no segment is being written,
    a segment: the journal rotated (the bytes since the last write written inline, as `Journal.rotate`
    does), the buffers detached and written beside the journal's next writes (Arrow, zstd and the kernels
    release the GIL), the closed journal deleted. Frames never wait for the writer: while it works, rows
    keep buffering. At the end, as the recorder stops, the segment in progress finishes and the rest is
    written. Batches of one frame go to `frame()`, as the live loop hands them over during a rollover."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-rec-")) if out is None else out
    timings = {"flush_s": 0.0, "flush_wait_s": 0.0, "sync_s": 0.0, "flushes": 0, "syncs": 0}
    started, cpu_started = time.perf_counter(), time.process_time()
    dates = set()
    journal_thread, segment_thread = ThreadPoolExecutor(1), ThreadPoolExecutor(1)  # asyncio.to_thread's
    try:
        journal = Journal(tmp / ".journal")
        journal.open("seg-0")
        pipeline = Pipeline(get_market("spot"), journal=journal)
        frame, frames, snapshot = pipeline.frame, pipeline.frames, pipeline.snapshot
        clock = time.perf_counter
        segment_number = 0
        journal_write = None  # the journal write in progress
        segment = None  # (future, closed journal) of the segment write in progress
        wake = clock() + JOURNAL_SYNC_S

        def write(buffers, stem):
            begin = clock()
            _, rejected = write_buffers(buffers, tmp, pipeline.market.exchange, stem)
            return rejected, clock() - begin

        def segment_written() -> None:
            nonlocal segment
            future, closed = segment
            rejected, seconds = future.result()
            assert not rejected, rejected[:3]
            timings["flush_s"] += seconds
            closed.unlink()
            segment = None

        def start_segment() -> None:
            """`Recorder._flush`: rotate the journal, detach the buffers, write them in a thread."""
            nonlocal segment_number, segment
            begin = clock()
            closed = journal.rotate(f"seg-{segment_number + 1}")
            timings["sync_s"] += clock() - begin
            dates.update(d for d, rows in pipeline.buffers.items() if rows.count)
            stem = f"seg-{segment_number:020d}-{SHARD_TAG}"
            segment = (segment_thread.submit(write, pipeline.detach(), stem), closed)
            timings["flushes"] += 1
            segment_number += 1

        def writer_loop() -> None:
            """The writer loop's next move, if it has one: a journal write every 200 ms; after one, a
            segment if it is due and the previous one is written."""
            nonlocal journal_write, wake
            if journal_write is None:
                if clock() >= wake or journal.backlog >= JOURNAL_WAKE_BYTES:
                    journal_write = journal_thread.submit(run_journal_write, journal.take())
                    timings["syncs"] += 1
                return
            if not journal_write.done():
                return
            journal_write.result()
            journal_write, wake = None, clock() + JOURNAL_SYNC_S
            if segment is not None and segment[0].done():
                segment_written()
            if segment is None and pipeline.pending_rows >= FLUSH_EVERY:
                start_segment()

        n = 0
        next_check = 1024
        for item in items:
            if item[0] == "ws":
                if len(item[2]) == 1:
                    frame(item[1][0], item[2][0])
                    n += 1
                else:
                    frames(item[1], item[2])
                    n += len(item[2])
            else:
                snapshot(*item[1:])
                n += 1
            if n >= next_check:
                next_check = n + 1024
                writer_loop()
        begin = clock()  # the recorder stops: the writes in progress finish, then the last segment
        if journal_write is not None:
            journal_write.result()
        if segment is not None:
            segment_written()
        start_segment()
        segment_written()
        journal.close().unlink()
        timings["flush_wait_s"] = clock() - begin
        # not the removal of what it wrote, which follows
        timings.update(seconds=clock() - started, cpu_s=time.process_time() - cpu_started)
        timings.update(gaps=sum(pipeline.gaps.values()), synced=all(e.synced for e in pipeline.engines.values()),
                       dates=sorted(dates), counts=dict(pipeline.counts))
        return timings
    finally:
        journal_thread.shutdown()
        segment_thread.shutdown()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def taking_turns(repeat: int, **runs) -> dict[str, tuple[float, object]]:
    """The best (seconds, result) of each of `runs` (each returns both), the runs taking turns `repeat`
    times: this machine's speed drifts by tens of percent over a minute (a shared VM), so the ratio of
    two bests is taken over the same stretch of time, not one before the other."""
    best = dict.fromkeys(runs, (float("inf"), None))
    for _ in range(repeat):
        for name, run in runs.items():
            seconds, result = run()
            if seconds < best[name][0]:
                best[name] = (seconds, result)
    return best


def timed_ingest(items: list[tuple]) -> tuple[float, dict]:
    """(seconds, timings) of one `ingest`."""
    parts = ingest(items)
    return parts["seconds"], parts


def best_ingest(repeat: int, items: list[tuple]) -> tuple[float, dict]:
    """(best seconds, timings of the best run) of `ingest`."""
    return min((timed_ingest(items) for _ in range(repeat)), key=lambda run: run[0])


def cryptofeed_peer(records: list[Record], peer_python: str, repeat: int, realdata: Path) -> dict | None:
    """cryptofeed's figures on the same records (benchmarks/cryptofeed_peer.py in the peer's venv)."""
    if not Path(peer_python).exists():
        print(f"   peer: {peer_python} not found; run `{PEER_VENV_COMMAND}` for the comparison")
        return None
    with tempfile.TemporaryDirectory(prefix="bench-cf-") as tmp:
        frames, info = Path(tmp) / "frames.txt", Path(tmp) / "exchange_info.json"
        with frames.open("wb") as f:
            for recv_ts, kind, payload, symbol, _ in records:
                f.write(b"ws %d " % recv_ts + payload + b"\n" if kind == "ws"
                        else b"rest %d %s " % (recv_ts, symbol.encode()) + payload + b"\n")
        dump = (realdata / "cryptofeed" / "BINANCE.0").read_bytes()  # `<url> -> <ts>: <exchangeInfo body>`
        info.write_bytes(dump.split(b": ", 1)[1].split(b"\n", 1)[0])
        done = subprocess.run([peer_python, str(Path(__file__).with_name("cryptofeed_peer.py")), str(frames),
                               str(info), "--repeat", str(repeat)], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"   peer: cryptofeed run failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout)


def figure_ingest(capture: list[Record], repeat: int, profile: bool, peer_python: str = PEER_PYTHON,
                  realdata: Path = DEFAULT_REALDATA) -> dict:
    tune_malloc()  # as `recorder run` and `recorder import` start
    records = market_copies(capture, INGEST_SYMBOLS)
    n = len(records)
    ws = sum(1 for r in records if r[1] == "ws")
    parse_s, _ = best_of(repeat, parse_only, records)
    batches, one_by_one, one_symbol = handovers(records, BATCH), handovers(records, 1), handovers(capture, BATCH)
    with gc_thresholds(RECORDER_GC):  # as `recorder run` and `recorder import` run (tune_gc)
        best = taking_turns(repeat, bare=lambda: (best_of(1, bare_parse, records)[0], None),
                            full=lambda: timed_ingest(batches))
        (bare_s, _), (full_s, parts) = best["bare"], best["full"]
        single_s, _ = best_ingest(repeat, one_by_one)
        cpu_s = min(ingest(batches)["cpu_s"] for _ in range(repeat))  # all threads
        best = taking_turns(repeat, bare=lambda: (best_of(1, bare_parse, capture)[0], None),
                            full=lambda: timed_ingest(one_symbol))
        one_bare_s, one_s = best["bare"][0], best["full"][0]
    default_gc_s, _ = best_ingest(repeat, batches)
    peer = cryptofeed_peer(records, peer_python, repeat, realdata)
    hot_s = full_s - parts["flush_wait_s"] - parts["sync_s"]
    result = {
        "frames": n, "ws_frames": ws, "repeat": repeat, "batch": BATCH,
        "bare_orjson_msg_s": n / bare_s,
        "parse_frame_msg_s": ws / parse_s,
        "full_msg_s": n / full_s,
        "ratio_to_bare": bare_s / full_s,
        "frame_by_frame_msg_s": n / single_s,
        "frame_by_frame_ratio_to_bare": bare_s / single_s,
        "default_gc_msg_s": n / default_gc_s,
        "one_symbol_msg_s": len(capture) / one_s, "one_symbol_ratio_to_bare": one_bare_s / one_s,
        "full_s": full_s, "hot_path_s": hot_s, "flush_thread_s": parts["flush_s"],
        "flush_wait_s": parts["flush_wait_s"], "fsync_s": parts["sync_s"],
        "flushes": parts["flushes"], "syncs": parts["syncs"],
        "gaps_in_data": parts["gaps"], "synced": parts["synced"],
        "target_ratio": TARGET_INGEST_RATIO,
        "meets_target": bare_s / full_s >= TARGET_INGEST_RATIO,
        "cpu_s_per_million": cpu_s / n * 1e6,
        "peer": peer,
        "ratio_to_peer": None if peer is None else (n / full_s) / peer["msg_s"],
    }
    print(f"\n1. In-process ingest, spot BTCUSDT capture x {len(INGEST_SYMBOLS)} symbols ({n:,} frames in memory, "
          f"best of {repeat}; GC as the recorder runs it)")
    rows = [
        ("bare orjson.loads", n / bare_s, bare_s, ""),
        ("parse_frame only", ws / parse_s, parse_s, ""),
        (f"full, batches of {BATCH} (Pipeline.frames)", n / full_s, full_s, f"ratio to bare {bare_s / full_s:.3f}"),
        ("  of which ingest (main thread)", None, hot_s, f"{hot_s / full_s:4.0%}"),
        ("  of which the last segment, after the frames", None, parts["flush_wait_s"],
         f"{parts['flush_wait_s'] / full_s:4.0%} (writer busy {parts['flush_s']:.3f} s, {parts['flushes']} segments)"),
        ("  of which journal rotations (inline)", None, parts["sync_s"],
         f"{parts['sync_s'] / full_s:4.0%} ({parts['syncs']} journal writes in the thread)"),
        ("full, frame by frame (live loop: frame())", n / single_s, single_s, f"ratio to bare {bare_s / single_s:.3f}"),
        (f"full, batches of {BATCH}, default GC", n / default_gc_s, default_gc_s,
         f"ratio to bare {bare_s / default_gc_s:.3f}"),
        (f"full, batches, one symbol ({len(capture):,} frames)", len(capture) / one_s, one_s,
         f"ratio to bare {one_bare_s / one_s:.3f}"),
    ]
    print(f"   {'path':46s} {'msg/s':>11s} {'seconds':>8s}  note")
    for name, rate, seconds, note in rows:
        print(f"   {name:46s} {'' if rate is None else f'{rate:11,.0f}':>11s} {seconds:8.3f}  {note}")
    verdict = "MET" if result["meets_target"] else "MISSED"
    print(f"   target >= {TARGET_INGEST_RATIO:.0%} of bare parse: {verdict} ({bare_s / full_s:.1%}); "
          f"gaps in the data: {parts['gaps']}, books synced: {parts['synced']}")
    print(f"   CPU per million messages (batches, all threads): {result['cpu_s_per_million']:.2f} s")
    if peer is not None:
        ratio = result["ratio_to_peer"]
        verdict = "MET" if ratio >= TARGET_PEER_RATIO else "MISSED"
        print(f"   cryptofeed {peer['version']} (Binance handler, no-op callbacks, snapshot from the capture): "
              f"{peer['msg_s']:,.0f} msg/s = {bare_s / peer['seconds']:.3f} x bare; recorder / cryptofeed "
              f"{ratio:.2f}x (frame by frame {(n / single_s) / peer['msg_s']:.2f}x), "
              f"target >= {TARGET_PEER_RATIO:.0f}x: {verdict}")
    print(f"   summary: recorder {n / full_s:,.0f} msg/s, {bare_s / full_s:.3f} x bare orjson.loads, "
          + (f"{result['ratio_to_peer']:.2f} x cryptofeed, " if peer is not None else "")
          + f"{result['cpu_s_per_million']:.2f} CPU s per million messages")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        ingest(batches)
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


SENDER_WRITE_FRAMES = 256  # frames per write of the fast sender


def _server_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented text frame (RFC 6455 §5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


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
    encoded = {s: [_server_frame(_rename(p, s)) for p in ws] for s in symbols}
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
        """Writes the frames, encoded once up front, 256 at a time (as a server's TCP stream carries many
        frames per segment), each write after the client has read the previous ones (flow control)."""
        wanted = sorted({s.split("@", 1)[0].upper() for s in _streams_of(connection.request.path)})
        lists = [encoded[s] for s in wanted if s in encoded]
        index = len(sent)
        sent.append(0)
        write = connection.transport.write
        with suppress(Exception):  # the client went away
            step = max(1, SENDER_WRITE_FRAMES // max(len(lists), 1))
            for start in range(0, len(ws), step):
                write(b"".join(frame_list[i] for i in range(start, min(start + step, len(ws)))
                               for frame_list in lists))
                await connection.drain()
                sent[index] += len(lists) * (min(start + step, len(ws)) - start)
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
    """Frames a do-nothing client receives in `seconds` over one connection per stream group (the
    recorder's own client, `recorder.wsconnection`, taking batches and dropping them)."""
    from recorder.wsconnection import connect

    async def one(group: list[str]) -> int:
        count = 0
        async with connect(f"ws://127.0.0.1:{port}/stream?streams={'/'.join(group)}") as ws:
            with suppress(TimeoutError):
                async with asyncio.timeout(seconds):  # also ends the wait when a sender has nothing left
                    while True:
                        count += len((await ws.batch(4096))[1])
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
        parts = ingest(handovers(records, BATCH), out=tmp, keep=True)
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


# ---- figure 4: a whole market recorded by `recorder run` ---------------------------------------------

# Activity tiers of a market the size of Binance spot (~1,500 symbols), from the real captures in
# ../shared/realdata (messages/s per stream, each capture's own span):
#   liquid  BTCUSDT 2024-08-08/09 (hftbacktest): depth@100ms 10.0, trade 28-33, bookTicker 81-148;
#           ETHUSDT 2024-08-08: 9.9 / 17.6 / 70
#   active  DENTUSDT, MANAUSDT, ZILUSDT 2021-04-05, FTMUSDT 2021-08-14 (cryptofeed_hist): depth 7.1-8.6,
#           bookTicker 8.5-14.6, aggTrade 0.4-6.0
#   mid     AXSBNB, QTUMETH, BTCSTUSDT 2021-04-05, XMRBTC, SXPBTC 2021-08-14: depth 2.4-4.6,
#           bookTicker 1.2-2.9, aggTrade 0.03-0.4
#   tail    BLZETH, LRCBTC, RUNEEUR 2021-10-12, ADARUB, BUSDTRY, GTOBTC, QSPBTC, STEEMETH 2021-04-17:
#           depth 0.07-0.9, bookTicker 0-0.8, aggTrade 0-0.1
# The synthetic generator at E events/s yields about depth@100ms min(0.85 E, 10), trade 0.4 E, aggTrade 0.2 E,
# bookTicker 0.3 E (measured over 600 s of market time), so each tier's rate E puts its depth and bookTicker
# on the real ones; trades of the quiet tiers come out above the real ones (the generator has one knob),
# which errs on more messages for the recorder.
MARKET_TIERS = (  # name, symbols (share of the market after the liquid ones), events/s per symbol
    ("liquid", None, 150.0),  # the synthetic catalogue's symbols
    ("active", 0.03, 20.0),
    ("mid", 0.17, 4.0),
    ("tail", None, 0.7),  # the rest
)
MARKET_SYMBOLS = 1500
MARKET_QUOTES = ("USDT", "USDT", "USDT", "FDUSD", "BTC", "TRY", "USDC", "ETH", "BNB", "EUR")  # Binance-like mix
MARKET_TEMPLATES = ("BNBUSDT", "SOLUSDT", "DOGEUSDT", "PEPEUSDT")  # price/size formats of the generated symbols


def _letters(n: int, width: int) -> str:
    out = ""
    for _ in range(width):
        n, r = divmod(n, 26)
        out = chr(65 + r) + out
    return out


def market_mix(n_symbols: int = MARKET_SYMBOLS) -> list[tuple[str, str, float]]:
    """(symbol, tier, events per second) for a synthetic spot market of `n_symbols`, tiers as MARKET_TIERS."""
    from replay.venue.synthetic import known_symbols

    liquid = known_symbols("spot")
    if n_symbols < len(liquid):
        raise ValueError(f"a whole market needs at least {len(liquid)} symbols")
    rest = n_symbols - len(liquid)
    mix = [(s, "liquid", MARKET_TIERS[0][2]) for s in liquid]
    sized = [(name, round(rest * share), rate) for name, share, rate in MARKET_TIERS[1:-1]]
    sized.append((MARKET_TIERS[-1][0], rest - sum(n for _, n, _ in sized), MARKET_TIERS[-1][2]))
    i = 0
    for name, count, rate in sized:
        for _ in range(count):
            mix.append((f"X{_letters(i, 3)}{MARKET_QUOTES[i % len(MARKET_QUOTES)]}", name, rate))
            i += 1
    return mix


def market_specs(mix: list[tuple[str, str, float]]) -> dict:
    """SymbolSpecs of the generated symbols: the catalogue's formats under new names."""
    from dataclasses import replace

    from replay.venue.synthetic import CATALOGUE

    catalogue = CATALOGUE["spot"]
    specs = {}
    for i, (symbol, _, _) in enumerate(mix):
        if symbol in catalogue:
            continue
        quote = next(q for q in sorted(MARKET_QUOTES, key=len, reverse=True) if symbol.endswith(q))
        template = catalogue[MARKET_TEMPLATES[i % len(MARKET_TEMPLATES)]]
        specs[symbol] = replace(template, symbol=symbol, base=symbol[: -len(quote)], quote=quote)
    return specs


def market_config(symbols: list[str], out: Path, url: str, max_streams: int | None) -> dict:
    """The `recorder run` YAML config of the whole-market case: the defaults but for symbols and endpoints."""
    config: dict = {"market": "spot", "symbols": symbols, "out": str(out), "rest_url": f"http://{url}",
                    "ws_url": f"ws://{url}"}
    if max_streams is not None:
        config["connection"] = {"max_streams": max_streams}
    return config


def depth_breaks(ids: list[tuple[int, int, int]]) -> int:
    """Spot continuity breaks in one symbol's recorded depth diffs [(seq, U, u)]: a diff whose U is not the
    previous u + 1 (a lost, repeated or reordered frame)."""
    breaks, prev_u = 0, None
    for _, first, final in sorted(ids):
        if prev_u is not None and first != prev_u + 1:
            breaks += 1
        prev_u = final
    return breaks


def market_venue_process(conn, mix: list[tuple[str, str, float]], seed: int) -> None:
    """Child process: the synthetic VenueServer of the whole market at 1x (real time)."""
    from replay.venue.server import VenueServer
    from replay.venue.synthetic import SyntheticSource

    async def main() -> None:
        source = SyntheticSource(get_market("spot"), [s for s, _, _ in mix], seed=seed,
                                 events_per_second={s: rate for s, _, rate in mix}, specs=market_specs(mix))
        async with VenueServer("spot", source=source, speed=1.0) as venue:
            conn.send(venue.port)
            loop = asyncio.get_running_loop()
            started = loop.time()
            while True:
                command = await loop.run_in_executor(None, conn.recv)
                conn.send({"frames": sum(venue.stats.frames.values()), "by_stream": dict(venue.stats.frames),
                           "connections": venue.stats.connections, "connections_total": venue.stats.connections_total,
                           "backlog": sum(c.queue.qsize() for c in venue._clients),
                           "subscribed_symbols": len({k.split("@", 1)[0] for k in venue._subscribers}),
                           "faults": dict(venue.fault_counts), "rest_requests": venue.stats.rest_requests,
                           "market_s": (venue.market_ms - venue.source.start_ms) / 1000,
                           "wall_s": loop.time() - started})
                if command != "stats":
                    return

    asyncio.run(main())


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> tuple[float, int, int] | None:
    """(user+system CPU seconds, VmRSS kB, VmHWM kB) of a live process, from /proc; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15 of proc(5))
    memory = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
              if line.startswith(("VmRSS:", "VmHWM:"))}
    return cpu, memory.get("VmRSS", 0), memory.get("VmHWM", 0)


def recorded_depth(out: Path, exchange: str) -> dict[str, list[tuple[int, int, int]]]:
    """Per symbol, the recorded depth diffs as (seq, U, u), one per message."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    diffs: dict[str, list[tuple[int, int, int]]] = {}
    for directory in sorted((out / exchange / "depth").glob("date=*/symbol=*")):
        files = sorted(directory.glob("*.parquet"))
        if not files:
            continue
        data = pa.concat_tables(pq.read_table(f, columns=["seq", "first_update_id", "final_update_id"])
                                for f in files)
        data = data.group_by("seq").aggregate([("first_update_id", "min"), ("final_update_id", "max")])
        symbol = directory.name.split("=", 1)[1]
        diffs.setdefault(symbol, []).extend(zip(data.column("seq").to_pylist(),
                                                data.column("first_update_id_min").to_pylist(),
                                                data.column("final_update_id_max").to_pylist(), strict=True))
    return diffs


def synced_symbols(out: Path, exchange: str) -> set[str]:
    """Symbols with a `synced` event in the dataset (their book was bridged to a snapshot at least once)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    synced = set()
    for directory in sorted((out / exchange / "events").glob("date=*/symbol=*")):
        for f in directory.glob("*.parquet"):
            kinds = pq.read_table(f, columns=["kind"]).column("kind")
            if pc.any(pc.equal(kinds, "synced")).as_py():
                synced.add(directory.name.split("=", 1)[1])
    return synced


def connection_failures(log_text: str) -> list[tuple[str, int]]:
    """The recorder's 'connection N lost: <reason>' log lines, by reason, most frequent first."""
    reasons = Counter(m.group(1).strip() for m in re.finditer(r"connection \d+ lost: (.*)", log_text))
    return reasons.most_common()


def figure_market(n_symbols: int, seconds: float, max_streams: int | None, seed: int, timeout_s: float) -> dict:
    mix = market_mix(n_symbols)
    symbols = [s for s, _, _ in mix]
    tiers = {}
    for _, tier, rate in mix:
        count, _ = tiers.get(tier, (0, rate))
        tiers[tier] = (count + 1, rate)
    streams_note = f"connection.max_streams {max_streams}" if max_streams else "connection.max_streams default"
    print(f"\n4. Whole market: `recorder run` (own process) records {n_symbols:,} spot symbols for {seconds:g} s from "
          f"the synthetic venue (own process, 1x); {streams_note}, other settings default, --no-validate")
    print("   mix (events/s per symbol): " + ", ".join(f"{t} {c} x {r:g}" for t, (c, r) in tiers.items())
          + f" = {sum(r for _, _, r in mix):,.0f} events/s")
    venue = Child(market_venue_process, mix, seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-market-"))
    samples: list[tuple[float, tuple | None, tuple | None, dict]] = []
    try:
        import yaml

        out = tmp / "data"
        config = tmp / "recorder.yaml"
        config.write_text(yaml.safe_dump(market_config(symbols, out, f"127.0.0.1:{venue.port}", max_streams)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        log_path = tmp / "recorder.log"
        command = [sys.executable, "-m", "recorder.cli", "run", "--config", str(config), "--duration", f"{seconds}s",
                   "--ignore-window", "--no-validate"]
        venue_end = None
        journals: set[str] = set()  # named by the time their segment started: the writer's cadence
        with open(log_path, "wb") as log_file:
            start = time.monotonic()
            recorder = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
            status = rusage = None
            while True:
                pid, status, rusage = os.wait4(recorder.pid, os.WNOHANG)
                if pid:
                    break
                now = time.monotonic() - start
                if now > seconds + timeout_s:
                    recorder.kill()
                    _, status, rusage = os.wait4(recorder.pid, 0)
                    break
                samples.append((now, proc_sample(recorder.pid), proc_sample(venue.process.pid), venue.ask("stats")))
                journals.update(p.name for p in (out / ".journal").glob("*/*/*.jnl"))
                time.sleep(0.5)
            wall = time.monotonic() - start
        exit_code = os.waitstatus_to_exitcode(status)
        venue_end = venue.stop()
        log_text = log_path.read_text(errors="replace")
        counts = dataset_counts(out, get_market("spot").exchange) if (out / "binance-spot").is_dir() else \
            {"written": 0, "span_s": 0.0, "events": {}}
        diffs = recorded_depth(out, get_market("spot").exchange) if counts["written"] else {}
        synced = synced_symbols(out, get_market("spot").exchange) if counts["written"] else set()
    finally:
        if venue_end is None:
            with suppress(Exception):
                venue.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    # the recording window: from the first frame sent plus 5 s of start-up to the last sample with every
    # connection of the run still open (the recorder then stops, writes its last segment and compacts)
    live = [x for x in samples if x[3]["frames"] > 0 and x[1] is not None]
    peak_connections = max((x[3]["connections"] for x in live), default=0)
    window = [x for x in live if x[0] >= live[0][0] + 5.0] if live else []
    last = max((i for i, x in enumerate(window) if x[3]["connections"] == peak_connections), default=None)
    result: dict = {"symbols": n_symbols, "seconds": seconds, "max_streams": max_streams, "exit_code":
                    exit_code, "wall_s": wall, "tiers": tiers,
                    "events_per_second": sum(r for _, _, r in mix), "venue_end": venue_end,
                    "written": counts["written"], "span_s": counts["span_s"], "events": counts["events"]}
    if last is not None and last > 0:
        first, end = window[0], window[last]
        dt_s = end[0] - first[0]
        frames = end[3]["frames"] - first[3]["frames"]
        result["window"] = {
            "seconds": dt_s, "venue_msg_s": frames / dt_s,
            "recorder_cpu_share": (end[1][0] - first[1][0]) / dt_s,
            "venue_cpu_share": (end[2][0] - first[2][0]) / dt_s if end[2] and first[2] else None,
            "recorder_cpu_s_per_million": (end[1][0] - first[1][0]) / frames * 1e6 if frames else None,
            "recorder_rss_mb": end[1][1] / 1024, "recorder_hwm_mb": end[1][2] / 1024,
            "venue_backlog_max": max(x[3]["backlog"] for x in window[:last + 1]),
            "venue_market_lag_s": end[3]["wall_s"] - end[3]["market_s"],
            "connections": peak_connections,
        }
    result["peak_rss_mb_whole_run"] = rusage.ru_maxrss / 1024 if rusage else None
    result["cpu_s_whole_run"] = rusage.ru_utime + rusage.ru_stime if rusage else None
    subscribed = max((x[3]["subscribed_symbols"] for x in samples), default=0)
    breaks = {s: depth_breaks(ids) for s, ids in diffs.items()}
    result.update(depth_messages=sum(len(v) for v in diffs.values()), symbols_with_depth=len(diffs),
                  symbols_subscribed=subscribed, depth_breaks=sum(breaks.values()),
                  symbols_with_breaks=sum(1 for b in breaks.values() if b),
                  gap_events=counts["events"].get("gap", 0), disconnect_events=counts["events"].get("disconnect", 0),
                  synced=len(synced), failures=connection_failures(log_text)[:3])
    span = result["span_s"] or seconds
    result["written_msg_s"] = result["written"] / span
    starts = sorted(int(name.split("-", 1)[0]) for name in journals)
    result["segment_intervals_s"] = [(b - a) / 1e9 for a, b in itertools.pairwise(starts)]
    result["rest_refusals"] = {k: v for k, v in venue_end["faults"].items() if k in ("weight_429", "ip_ban")}
    result["snapshot_answers"] = dict(Counter(re.findall(r"/depth\?\S+ \"HTTP/1.1 (\d+)", log_text)))
    result["end_phase_s"] = wall - window[last][0] if last is not None else None

    if subscribed < n_symbols:
        reasons = result["failures"]
        cause = f"its connections failed: {reasons[0][0]} ({reasons[0][1]}x)" if reasons else "see the recorder log"
        raise SystemExit(f"bench_recorder: the recorder never subscribed {n_symbols - subscribed:,} of "
                         f"{n_symbols:,} symbols at the venue: {cause}")
    w = result.get("window")
    print(f"   recorded {result['written']:,} messages over {span:.1f} s = {result['written_msg_s']:,.0f} msg/s "
          f"(depth {result['depth_messages']:,} diffs of {result['symbols_with_depth']:,} symbols); venue published "
          f"{venue_end['frames']:,} frames ({', '.join(f'{k} {v:,}' for k, v in sorted(venue_end['by_stream'].items()))})")
    if w:
        per_million = w["recorder_cpu_s_per_million"]
        print(f"   steady window {w['seconds']:.0f} s over {w['connections']} connections: venue sent {w['venue_msg_s']:,.0f} msg/s; "
              f"recorder CPU {w['recorder_cpu_share']:.1%} of one core = "
              f"{'n/a' if per_million is None else f'{per_million:.1f}'} CPU s per million messages; RSS "
              f"{w['recorder_rss_mb']:.0f} MB (peak {w['recorder_hwm_mb']:.0f} MB); venue CPU "
              f"{w['venue_cpu_share'] or 0:.1%}, venue behind real time by {w['venue_market_lag_s']:.2f} s, "
              f"largest send backlog {w['venue_backlog_max']:,} frames")
    intervals = result["segment_intervals_s"]
    if intervals:
        print(f"   segments started every {statistics.median(intervals):.1f} s (median; max {max(intervals):.1f} s, "
              f"writer.segment_seconds 5): the recording ran {span - seconds:+.1f} s past --duration while the "
              f"segment in progress was written; end phase (last segment, compaction) {result['end_phase_s'] or 0:.0f} s")
    print(f"   whole run (start-up, recording, last segment, compaction): {result['wall_s']:.0f} s wall, "
          f"{result['cpu_s_whole_run'] or 0:.1f} CPU s, peak RSS {result['peak_rss_mb_whole_run'] or 0:.0f} MB, "
          f"exit code {result['exit_code']}; books synced {result['synced']:,} of {n_symbols:,}; snapshot answers by "
          f"HTTP status {result['snapshot_answers']}, venue REST refusals {result['rest_refusals'] or 'none'}")
    print(f"   gaps caused by the recorder: {result['depth_breaks']} breaks of U = previous u + 1 in the recorded depth "
          f"({result['symbols_with_breaks']} symbols), {result['gap_events']} gap events, "
          f"{result['disconnect_events']} disconnects, {venue_end['faults'].get('slow_client_close', 0)} slow-client "
          f"closes by the venue (no faults injected: the venue skips no ids on a live connection)")
    return result


# ---- main ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA)
    parser.add_argument("--repeat", type=int, default=5, help="best of N for figure 1 (default 5: the machine drifts)")
    parser.add_argument("--seconds", type=float, default=12.0, help="recording time per e2e case (default 12)")
    parser.add_argument("--probe", type=float, default=3.0, help="null-client probe of each sender, seconds")
    parser.add_argument("--events-per-second", type=float, default=1000.0,
                        help="synthetic venue events per second per symbol (default 1000)")
    parser.add_argument("--market-symbols", type=int, default=MARKET_SYMBOLS,
                        help=f"figure 4: symbols of the synthetic market (default {MARKET_SYMBOLS})")
    parser.add_argument("--market-seconds", type=float, default=30.0,
                        help="figure 4: recording time (default 30; the README's figures are from 60)")
    parser.add_argument("--max-streams", default="default",
                        help="figure 4: connection.max_streams of the recorder's config (default: the recorder's "
                             "own, 1024 streams per connection subscribed in paced SUBSCRIBE batches)")
    parser.add_argument("--only", default="1,2,3,4", help="figures to run, e.g. 1,3")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one figure-1 run")
    parser.add_argument("--peer-python", default=PEER_PYTHON,
                        help=f"figure 1: a Python with cryptofeed 2.4.x (default {PEER_PYTHON}; skipped if absent)")
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
        results["ingest"] = figure_ingest(records, args.repeat, args.profile, args.peer_python, realdata)
    if 2 in only:
        frames_per_symbol = sum(1 for r in records if r[1] == "ws") if records else 0
        results["e2e"] = figure_e2e(realdata, args.seconds, args.probe, args.events_per_second, frames_per_symbol)
    if 3 in only and records is not None:
        results["storage"] = figure_storage(records, realdata, args.keep)
    if 4 in only:
        max_streams = None if args.max_streams == "default" else int(args.max_streams)
        results["market"] = figure_market(args.market_symbols, args.market_seconds, max_streams, seed=7,
                                          timeout_s=600.0)
    results["total_s"] = time.perf_counter() - started
    print(f"\n(total {results['total_s']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
