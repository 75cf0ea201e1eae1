"""From received bytes to dataset rows: parse, sequence number, sync decision, buffer. No I/O.

One `Pipeline` serves the live recorder, journal recovery and `recorder import`, so a day recorded live
and a day imported from a capture are written by the same code. The hot path per frame is: a narrow
decode of ids and times (`recorder.narrow`), one seq increment, one append of the frame's bytes, and for
depth one sync-engine call; levels and prices are decoded column-wise at flush (`recorder.columnar`).
`frames()` takes a batch as one buffer: frames in combined-stream envelopes are routed by their stream
name by a compiled lookup (`recorder.streamroutes`), trades, aggTrades and bookTickers with no decode at
all until the flush, depth diffs with a compiled read of their ids for the sync engine
(`framescan.depth_ids`); the batch is kept whole until the flush and journaled as one record. Everything
else in it goes through `frame()` in order, so seqs, rows and events are those of `frame()` called frame
by frame (the reference it is tested against).
`Pipeline(market, columnar=False)` is the row path (full parse per frame, rows of Python values): the
reference the column path is tested against, and the path a group of frames takes when the column
reader refuses one of them.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import gc
from pathlib import Path
from typing import NamedTuple

import numpy as np
import orjson

from recorder import framescan
from recorder import journal as jr
from recorder.columnar import EXAMPLE_FRAMES, STREAM_TABLES, FrameBatch, FrameBuffers, warm_decoders
from recorder.markets import Market, get_market
from recorder.narrow import decode_frame
from recorder.protocol import (
    AggTrade,
    BookTicker,
    DepthSnapshot,
    DepthUpdate,
    ErrorPayload,
    Instrument,
    ParseError,
    ServerShutdown,
    SubscribeAck,
    Trade,
    parse_frame,
    parse_snapshot,
)
from recorder.sink import Rejected, TableBuffers
from recorder.streamroutes import FRAME_PATH, StreamRoutes, last_of_routes
from recorder.sync import DEFAULT_MAX_BUFFER, Action, State, SyncEngine
from schemas import berlin_date, berlin_day_bounds


class Batch(NamedTuple):
    """What `Pipeline.frames` tells its caller: the messages of the frames it decoded on arrival (acks,
    errors, notices, frames of another layout), each with its receive time, and the latest receive time
    per (message type, symbol) of the frames it routed by stream name (for the stream watchdog)."""

    decoded: list[tuple[int, object]]
    latest: dict[tuple[type, str], int]


class Pipeline:
    """Rows for one exchange, partitioned by the Berlin date of their receive time."""

    def __init__(
        self,
        market: Market,
        *,
        use_engine: bool = True,
        journal: jr.Journal | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        seq_start: int = 0,
        bridge_max_diffs: int | None = None,
        bridge_max_ns: int | None = None,
        columnar: bool = True,
    ) -> None:
        self.market = market
        self._decode = decode_frame if columnar else parse_frame
        self._buffer_type = FrameBuffers if columnar else TableBuffers
        self.use_engine = use_engine  # False when replaying a journal: its events were journaled already
        self.journal = journal
        self.max_buffer = max_buffer
        self.bridge_bounds = (bridge_max_diffs, bridge_max_ns)  # how long a held snapshot may wait
        self.seq = seq_start
        self.engines: dict[str, SyncEngine] = {}
        self.buffers: dict[dt.date, TableBuffers] = {}
        self.snapshot_wanted: set[str] = set()  # symbols whose engine needs a REST snapshot
        self.snapshots_discarded: list[tuple[str, dict]] = []  # (symbol, detail), taken by the recorder
        self.shutdown_announced = False
        self.last_feed_latency_ns: dict[str, int] = {}
        self.depth_counts: dict[str, int] = {}
        self.gaps: dict[str, int] = {}
        self.counts: dict[str, int] = {"frames": 0, "parse_errors": 0, "errors": 0}
        self.latest_problem: dict[str, str] = {}  # "parse_errors" / "errors" -> the latest one, for the log
        self._day: dt.date | None = None
        self._day_start = self._day_end = 0
        self._rows: TableBuffers | None = None
        self.columnar = columnar
        self._routes = StreamRoutes()  # stream name -> route, for frames()

    # ---- routing helpers --------------------------------------------------------------------------

    def _buffers_for(self, ts: int) -> TableBuffers:
        if self._day_start <= ts < self._day_end:
            return self._rows
        day = berlin_date(ts)
        self._day = day
        self._day_start, self._day_end = berlin_day_bounds(day)
        rows = self.buffers.get(day)
        if rows is None:
            rows = self.buffers[day] = self._buffer_type()
        self._rows = rows
        return self._rows

    def engine(self, symbol: str, ts: int) -> SyncEngine:
        """The symbol's engine, created (with its `need_snapshot` start event at `ts`) on first use."""
        engine = self.engines.get(symbol)
        if engine is None:
            engine = self.engines[symbol] = SyncEngine(self.market.sequence_rule, self.max_buffer,
                                                       *self.bridge_bounds)
            self._drain(engine, symbol, ts)
        return engine

    def _drain(self, engine: SyncEngine, symbol: str, ts: int) -> None:
        for event in engine.drain_events():
            if event.kind == "need_snapshot":
                self.snapshot_wanted.add(symbol)
            elif event.kind == "gap":
                self.gaps[symbol] = self.gaps.get(symbol, 0) + 1
            elif event.kind == "snapshot_discarded":
                self.snapshots_discarded.append((symbol, event.detail))
            self.event(ts, symbol, event.kind, event.detail)

    @property
    def pending_rows(self) -> int:
        return sum(b.count for b in self.buffers.values())

    # ---- inputs -----------------------------------------------------------------------------------

    def frame(self, recv_ts: int, raw: bytes, seq: int | None = None) -> object:
        """One WebSocket frame. Returns the parsed message (or ParseError)."""
        if seq is None:
            self.seq += 1
            seq = self.seq
            if self.journal is not None:
                self.journal.append(seq, recv_ts, jr.FRAME, raw)
        elif seq > self.seq:
            self.seq = seq
        self.counts["frames"] += 1
        message = self._decode(raw)
        kind = type(message)
        if kind is DepthUpdate:
            rows = self._buffers_for(recv_ts)
            rows.depth(seq, recv_ts, message, raw)
            self._decide_diff(message.symbol, recv_ts, message.event_ts, message.first_update_id,
                              message.final_update_id, message.prev_final_update_id)
        elif kind is Trade:
            self._buffers_for(recv_ts).trade(seq, recv_ts, message, raw)
        elif kind is BookTicker:
            self._buffers_for(recv_ts).book_ticker(seq, recv_ts, message, raw)
        elif kind is AggTrade:
            self._buffers_for(recv_ts).agg_trade(seq, recv_ts, message, raw)
        elif self.use_engine:
            self._other(recv_ts, message)
        return message

    def frames(self, recv_ts: list[int], raws: list[bytes]) -> Batch:
        """A batch of WebSocket frames, in arrival order: the same seqs, rows and events as `frame()` on
        each, with less work per frame (see the module docstring). The journal gets one record."""
        if not self.columnar or not self.use_engine:
            return Batch([(ts, self.frame(ts, raw)) for ts, raw in zip(recv_ts, raws)], {})
        n = len(raws)
        if not n:
            return Batch([], {})
        stamps = np.array(recv_ts, np.int64)
        rows = self._buffers_for(recv_ts[0])
        if stamps.min() < self._day_start or stamps.max() >= self._day_end:
            # the batch spans Berlin midnight: each day's run of frames is a batch of its own
            split = int(np.flatnonzero((stamps < self._day_start) | (stamps >= self._day_end))[0])
            first = self.frames(recv_ts[:split], raws[:split])  # split > 0: the day is the first frame's
            rest = self.frames(recv_ts[split:], raws[split:])
            return Batch(first.decoded + rest.decoded, {**first.latest, **rest.latest})
        lengths = np.fromiter(map(len, raws), np.int64, n)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        joined = b"".join(raws)
        buf = np.frombuffer(joined, np.uint8)
        routes = self._routes
        route = routes.route(buf, starts, ends)
        depth_ids = self._depth_ids(buf, starts, ends, route)
        first = self.seq
        seqs = np.arange(first + 1, first + n + 1, dtype=np.int64)
        decoded: list[tuple[int, object]] = []
        taken = 0  # seqs taken by events in between frames
        names = routes.routes
        visit = np.flatnonzero(route < 0).tolist()  # in order: the frames decided on one by one
        if depth_ids:
            visit = sorted(visit + list(depth_ids))
        for i in visit:
            seq = first + 1 + i + taken
            ts = recv_ts[i]
            diff = depth_ids.get(i)
            if diff is None:  # anything unusual: the frame-by-frame path
                self.seq = seq - 1
                decoded.append((ts, self.frame(ts, raws[i], seq)))
            else:  # a depth diff: as `frame()` decides it, from the ids the kernel read
                self.seq = seq
                (event_ts, _, first_id, final_id, _), prev_id = diff
                self._decide_diff(names[route[i]][1], ts, event_ts, first_id, final_id,
                                  None if prev_id < 0 else prev_id)
            if self.seq != seq:
                seqs[i + 1:] += self.seq - seq
                taken += self.seq - seq
        self.seq = first + n + taken
        routed = n - len(decoded)
        self.counts["frames"] += routed  # `frame()` counted the others
        latest = {}
        if routed:
            rows.add_batch(FrameBatch(joined, starts, ends, stamps, seqs, route, names), routed)
            present, last = last_of_routes(route, len(names))
            latest = {(STREAM_TABLES[names[r][0]].message, names[r][1]): recv_ts[i]
                      for r, i in zip(present.tolist(), last.tolist())}
        if self.journal is not None:
            self.journal.append_frames(seqs, stamps, lengths, joined)
        return Batch(decoded, latest)

    def _decide_diff(self, symbol: str, recv_ts: int, event_ts: int, first_id: int, final_id: int,
                     prev_id: int | None) -> None:
        """A depth diff's sync decision from its ids, whoever read them (`frame()` or `frames()`)."""
        self.last_feed_latency_ns[symbol] = recv_ts - event_ts * 1_000_000
        self.depth_counts[symbol] = self.depth_counts.get(symbol, 0) + 1
        if self.use_engine:
            engine = self.engine(symbol, recv_ts)
            if engine.on_diff(first_id, final_id, prev_id) is not Action.APPLY and engine.events:
                self._drain(engine, symbol, recv_ts)

    def _depth_ids(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, route: np.ndarray) -> dict:
        """Frame index -> ((E, T, U, u, pu), pu or -1) of the batch's depth diffs the kernel reads; the
        others get route FRAME_PATH (the full decode takes them)."""
        routes = self._routes
        diffs = np.flatnonzero(routes.is_depth[route] & (route >= 0))  # route -1 reads the last entry: masked
        if not len(diffs):
            return {}
        ids = np.empty((len(diffs), 5), np.int64)
        present = np.empty((len(diffs), 5), np.bool_)
        read = framescan.depth_ids(buf, starts, ends, diffs, route[diffs], routes.symbols, routes.symbol_starts,
                                   routes.symbol_ends, ids, present)
        route[diffs[~read]] = FRAME_PATH
        pu = np.where(present[read, framescan.ID_pu], ids[read, framescan.ID_pu], -1).tolist()
        return dict(zip(diffs[read].tolist(), zip(ids[read].tolist(), pu)))

    def set_aside(self, bad: Rejected, ts: int) -> None:
        """A message a flush could not convert (its rows are not written): a `parse_error` event naming its
        seq, counted and logged as a parse error, and a resync of the symbol's book if it was a depth diff."""
        self.counts["parse_errors"] += 1
        self.latest_problem["parse_errors"] = f"{bad.table} seq {bad.seq}: {bad.reason}"
        self.event(ts, bad.symbol, "parse_error", {"table": bad.table, "seq": bad.seq, "reason": bad.reason})
        if bad.table == "depth" and bad.symbol:
            self.reset(bad.symbol, ts, "bad_levels")

    def _other(self, recv_ts: int, message: object) -> None:
        if isinstance(message, ParseError):
            self.counts["parse_errors"] += 1
            self.latest_problem["parse_errors"] = f"{message.reason}: {message.raw[:120].decode('utf-8', 'replace')}"
            self.event(recv_ts, None, "parse_error",
                       {"reason": message.reason, "raw": message.raw.decode("utf-8", "replace")})
        elif isinstance(message, ErrorPayload):
            self.counts["errors"] += 1
            self.latest_problem["errors"] = f"code {message.code}: {message.msg} (id {message.id})"
            self.event(recv_ts, None, "error", {"code": message.code, "msg": message.msg, "id": message.id})
        elif isinstance(message, ServerShutdown):
            self.shutdown_announced = True
            self.event(recv_ts, None, "server_shutdown", {"E": message.event_ts})
        elif isinstance(message, SubscribeAck):
            self.event(recv_ts, None, "subscribe", {"id": message.id, "result": message.result})

    def snapshot(self, recv_ts: int, symbol: str, body: bytes | DepthSnapshot, limit: int,
                 seq: int | None = None) -> Action | None:
        """A REST depth snapshot (raw body or parsed). Returns the engine's action, None if unusable."""
        if seq is None:
            self.seq += 1
            seq = self.seq
            if self.journal is not None and isinstance(body, bytes):
                self.journal.append(seq, recv_ts, jr.SNAPSHOT, body, symbol, limit)
        elif seq > self.seq:
            self.seq = seq
        snapshot = parse_snapshot(body, symbol) if isinstance(body, bytes) else body
        if not isinstance(snapshot, DepthSnapshot):
            if self.use_engine:
                self.event(recv_ts, symbol, "error", {"snapshot": str(snapshot)})
            return None
        self._buffers_for(recv_ts).snapshot(seq, recv_ts, symbol, snapshot, limit)
        if not self.use_engine:
            return None
        engine = self.engine(symbol, recv_ts)
        action = engine.on_snapshot(snapshot.last_update_id, now_ns=recv_ts)
        if action is Action.SYNCED:
            engine.take_sync()
        if not engine.needs_snapshot:
            self.snapshot_wanted.discard(symbol)
        self._drain(engine, symbol, recv_ts)
        return action

    def expire_held_snapshots(self, now_ns: int) -> None:
        """Discard the snapshots held past the time bound (their symbols then want a fresh one)."""
        for symbol, engine in self.engines.items():
            if engine.state is State.BRIDGING and engine.expire_held(now_ns):
                self._drain(engine, symbol, now_ns)

    def event(self, ts: int, symbol: str | None, kind: str, detail: dict, seq: int | None = None) -> None:
        if seq is None:
            self.seq += 1
            seq = self.seq
            if self.journal is not None:
                self.journal.append(seq, ts, jr.EVENT, orjson.dumps({"kind": kind, "detail": detail}), symbol)
        elif seq > self.seq:
            self.seq = seq
        self._buffers_for(ts).event(seq, ts, symbol, kind, detail)

    def instruments(self, recv_ts: int, instruments: list[Instrument], body: bytes | None = None,
                    seq: int | None = None) -> None:
        if seq is None:
            self.seq += 1
            seq = self.seq
            if self.journal is not None and body is not None:
                self.journal.append(seq, recv_ts, jr.INSTRUMENTS, body)
        rows = self._buffers_for(recv_ts)
        for instrument in instruments:
            rows.instrument(seq, recv_ts, instrument)

    def reset(self, symbol: str, ts: int, reason: str) -> None:
        """The symbol's book is invalid from here (disconnect, bad data): ask for a snapshot."""
        engine = self.engine(symbol, ts)
        engine.reset(reason)
        self._drain(engine, symbol, ts)

    def replay_journal_record(self, record: jr.JournalRecord, wanted: set[str] | None = None) -> None:
        """Re-create the rows of one journal record exactly as they were first buffered."""
        from recorder.protocol import parse_exchange_info

        if record.kind == jr.FRAME:
            self.frame(record.recv_ts, record.payload, record.seq)
        elif record.kind == jr.SNAPSHOT:
            self.snapshot(record.recv_ts, record.symbol, record.payload, record.limit, record.seq)
        elif record.kind == jr.EVENT:
            event = orjson.loads(record.payload)
            self.event(record.recv_ts, record.symbol, event["kind"], event["detail"], record.seq)
        elif record.kind == jr.INSTRUMENTS:
            info = parse_exchange_info(record.payload)
            if isinstance(info, dict):
                chosen = [i for s, i in info.items() if wanted is None or s in wanted]
                self.instruments(record.recv_ts, chosen, None, record.seq)

    # ---- output -----------------------------------------------------------------------------------

    def detach(self) -> dict[dt.date, TableBuffers]:
        """Hand over the buffered rows (to be written elsewhere, e.g. in a thread) and start empty ones."""
        buffers, self.buffers = self.buffers, {}
        self._day = None
        self._day_start = self._day_end = 0
        self._rows = None
        return buffers

    def flush(self, root: Path, file_stem: str) -> tuple[list[Path], list[Rejected]]:
        """Write all buffered rows as segment files named `file_stem` (atomic per file); always empties the
        buffers: when a write fails (disk full) the rows are in the journal, which is written again under
        the same segment name, so kept here they would be written twice."""
        return write_buffers(self.detach(), root, self.market.exchange, file_stem)


def write_buffers(buffers: dict[dt.date, TableBuffers], root: Path, exchange: str, file_stem: str
                  ) -> tuple[list[Path], list[Rejected]]:
    """Write detached buffers as one segment per table/date/symbol. Touches nothing else: thread-safe."""
    written, rejected = [], []
    for day, rows in sorted(buffers.items()):
        files, bad = rows.write(root, exchange, day, file_stem)
        written += files
        rejected += bad
    return written, rejected


def tune_gc() -> None:
    """Row buffers are millions of small tuples and lists freed at every flush, with no reference cycles:
    a young-generation threshold of 100k (and frozen start-up objects) stops the collector from
    rescanning them on every few hundred messages, roughly halving the per-message cost."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


# glibc's mallopt parameters (malloc.h) and the values the recorder sets
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MALLOC_SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 256 << 20), (M_TOP_PAD, 64 << 20))


def tune_malloc() -> bool:
    """Keep freed flush buffers for the next flush instead of giving them back to the kernel.

    A segment's buffers (joined frames, kernel outputs, Arrow columns) are tens of MB, allocated and freed
    every flush. glibc maps each block over 128 kB-32 MB afresh and trims the heap's free top, so every
    flush page-faults them in again: ~63k faults and ~0.3 s of CPU per 600k messages (measured 2026-12-03,
    bench_recorder figure 1; 10k faults with these settings). Blocks up to 32 MB now come from the heap,
    which keeps up to 256 MB free. False where the C library is not glibc (nothing is changed)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS)


def warm_kernels() -> None:
    """Compile (or load from numba's cache) every kernel a recording runs: the flush's decoder and the
    routing of a batch. A first compile takes seconds and holds the GIL: the recorder does it before it
    connects, not on its first frames."""
    warm_decoders()
    frames = list(EXAMPLE_FRAMES.values())
    Pipeline(get_market("spot")).frames(list(range(len(frames))), frames)
