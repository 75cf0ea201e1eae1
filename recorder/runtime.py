"""`recorder run`: connections, snapshots, journal and segments around the sans-I/O pipeline.

Asyncio, one process. Symbols are sharded over combined-stream connections within the market's
stream limit; every frame is journaled, parsed and buffered by `Pipeline`; REST snapshots share one
weight budget and are staggered; segments are written every few seconds; at the end of the run the
day's segments are compacted. The exit code tells cron whether the recording is healthy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import logging
import os
import random
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import orjson
import pyarrow.parquet as pq

from recorder import journal as jr
from recorder.client import RestError, RestLimiter, SnapshotFetcher, send_paced
from recorder.compaction import clean_day, compact_day, finish_compactions
from recorder.config import RecorderConfig
from recorder.health import SYNC_GRACE_S, publish, recording_health, waiting
from recorder.iofaults import IoFaults
from recorder.observability import Health, Metrics, MetricsServer, StatusRow, StatusView
from recorder.pipeline import Pipeline, tune_gc, tune_malloc, warm_kernels, write_buffers
from recorder.problems import ProblemLog
from recorder.protocol import DepthUpdate, Instrument, ServerShutdown, parse_exchange_info, parse_frame
from recorder.resync import SnapshotRetries
from recorder.routing import ConnectLimiter, PlannedConnection, plan_connections, subscribe_interval_s
from recorder.watchdog import (
    Reconnect,
    StreamResumed,
    StreamSilent,
    StreamWatchdog,
    channels_of,
    stream_channel,
)
from recorder.window import Clock, SystemClock, TradingWindow, plan_run, sleep_until
from recorder.wsconnection import WebSocketConnection, connect
from recorder.wsframes import ConnectionClosed, HandshakeError
from schemas import berlin_date

log = logging.getLogger("recorder")

EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE, EXIT_IO = 0, 1, 2, 3


@dataclass(frozen=True)
class RunSpan:
    """The span a run was meant to record, in the shape the validator takes a trading window in."""

    start_ns: int
    stop_ns: int
    tz: str

    def bounds_for(self, date) -> tuple[int, int]:
        return self.start_ns, self.stop_ns

    @property
    def start(self) -> dt.time:
        return dt.datetime.fromtimestamp(self.start_ns / 1e9, ZoneInfo(self.tz)).time()

    @property
    def end(self) -> dt.time:
        return dt.datetime.fromtimestamp(self.stop_ns / 1e9, ZoneInfo(self.tz)).time()


def report_dir(root: Path, exchange: str, date) -> Path:
    """Where `recorder run` writes a day's validation reports: beside the tables, not inside them."""
    return Path(root) / "reports" / exchange / date.isoformat()


class RecorderError(Exception):
    """A condition that stops the recorder with a one-line message and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Connection:
    """One combined-stream WebSocket and the symbols whose frames it currently records."""

    cid: int
    symbols: list[str]
    streams: list[str]
    plan: PlannedConnection  # its route, symbols and streams
    owned: set[str] = field(default_factory=set)
    opened_at: float = 0.0
    task: asyncio.Task | None = None
    retiring: bool = False
    successor: Connection | None = None  # the connection taking over during a rollover
    last_ids: dict[tuple[str, type], int] = field(default_factory=dict)  # without depth: last trade id recorded


MAX_BATCH = 512  # frames handed to Pipeline.frames at once by a connection
# The writer loop runs every journal_flush_ms, and sooner once this much is waiting to be journaled: a
# burst (a reconnect's backlog, a whole market's open) is journaled and its segment started while it
# still arrives, not all after it (measured 2026-12-03: 597k frames at 1.5M msg/s ingested in 0.4 s,
# then written in 0.8 s, with only the 200 ms timer).
JOURNAL_WAKE_BYTES = 4 << 20


def trade_id(message: object) -> int | None:
    """The id a rollover of a connection without depth hands streams over at: aggTrade `a`, trade `t`."""
    return getattr(message, "agg_trade_id", getattr(message, "trade_id", None))


def remember_trade_id(conn: Connection, message: object) -> None:
    frame_id = trade_id(message)
    if frame_id is not None:
        conn.last_ids[(message.symbol, type(message))] = frame_id


def streams_for(config: RecorderConfig, symbol: str) -> list[str]:
    lower = symbol.lower()
    streams = [f"{lower}@{config.channels.depth}"]
    if config.channels.trade:
        streams.append(f"{lower}@trade")
    if config.channels.agg_trade:
        streams.append(f"{lower}@aggTrade")
    if config.channels.book_ticker:
        streams.append(f"{lower}@bookTicker")
    return streams


def shard_connections(config: RecorderConfig, symbols: list[str]) -> list[PlannedConnection]:
    """The connections for these symbols: per route of the market, each within the per-connection stream limit."""
    channels = [stream.split("@", 1)[1] for stream in streams_for(config, "x")]
    return plan_connections(config.market, symbols, channels, config.connection.max_streams)


def max_seq_on_disk(root: Path, exchange: str, date, symbols: list[str]) -> int:
    """Highest seq already written for this day and these symbols, from Parquet statistics (no data read)."""
    best = 0
    base = root / exchange
    if not base.is_dir():
        return 0
    for symbol in [*symbols, "_all"]:
        for path in base.glob(f"*/date={date.isoformat()}/symbol={symbol}/*.parquet"):
            with suppress(Exception):
                meta = pq.read_metadata(path)
                index = meta.schema.names.index("seq")
                for rg in range(meta.num_row_groups):
                    stats = meta.row_group(rg).column(index).statistics
                    if stats is not None and stats.has_min_max:
                        best = max(best, stats.max)
    return best


class SymbolLocks:
    """One lock file per symbol under <out>/.locks/<exchange>/, so shards can share an output root."""

    def __init__(self, root: Path, exchange: str, symbols: list[str]) -> None:
        self.directory = root / ".locks" / exchange
        self.symbols = symbols
        self._fds: list[int] = []

    def acquire(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for symbol in self.symbols:
            path = self.directory / f"{symbol}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self.release()
                raise RecorderError(
                    f"{symbol} is already being recorded into {self.directory.parent.parent} "
                    f"by another recorder (lock {path})"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fds.append(fd)

    def acquire_slot(self, shard_tag: str) -> str:
        """The first free recorder slot of this shard tag: `0of1`, then `0of1-r2`, ...

        The slot names this recorder's journal directory and its connection-wide event files, so recorders
        of different symbols with the same shard tag sharing one root never touch each other's.
        """
        for k in range(1, 100):
            tag = shard_tag if k == 1 else f"{shard_tag}-r{k}"
            fd = try_lock(self.directory / f"_all-{tag}.lock")
            if fd is not None:
                self._fds.append(fd)
                return tag
        raise RecorderError(f"too many recorders with shard {shard_tag} in {self.directory.parent.parent}")

    def release(self) -> None:
        for fd in self._fds:
            with suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        self._fds.clear()


def try_lock(path: Path) -> int | None:
    """An exclusive flock on `path` (created if needed), or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def release_lock(fd: int) -> None:
    with suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        raise RecorderError(f"output directory {directory} is not writable: {exc.strerror or exc}", EXIT_IO) from None


def recover_journals(journal_dir: Path, root: Path, market, wanted: set[str] | None = None,
                     dates: set | None = None) -> int:
    """Write the rows of journals left by a crash into their segments (same names), then delete them."""
    recovered = 0
    for path in jr.leftover_journals(journal_dir):
        pipeline = Pipeline(market, use_engine=False)
        for record in jr.read_journal(path):
            pipeline.replay_journal_record(record, wanted)
            recovered += 1
        if dates is not None:
            dates |= {d for d, rows in pipeline.buffers.items() if rows.count}
        pipeline.flush(root, f"seg-{path.stem}")
        path.unlink()
    return recovered


def recover_orphan_slots(root: Path, market, shard_tag: str, own_tag: str, dates: set) -> int:
    """Recover the journals of other slots of this shard tag whose recorder is gone (lock free)."""
    base = root / ".journal" / market.exchange
    locks = root / ".locks" / market.exchange
    recovered = 0
    for directory in sorted(base.glob(f"{shard_tag}*")):
        tag = directory.name
        if tag == own_tag or not (tag == shard_tag or tag.startswith(f"{shard_tag}-r")):
            continue
        if not jr.leftover_journals(directory):
            continue
        fd = try_lock(locks / f"_all-{tag}.lock")
        if fd is None:
            continue  # its recorder is alive
        try:
            recovered += recover_journals(directory, root, market, None, dates)
        finally:
            release_lock(fd)
    return recovered


class Recorder:
    def __init__(self, config: RecorderConfig, clock: Clock | None = None, *, no_wait: bool = False,
                 status_view: bool = False, validate: bool = False,
                 metrics_server: MetricsServer | None = None) -> None:
        self.config = config
        self.validate = validate  # validate the day at the end of the run; its verdict is the exit code
        self.market = config.market
        self.clock = clock or SystemClock()
        self.no_wait = no_wait
        self.status_view = status_view
        self.symbols = list(config.shard_symbols)
        shard_i, shard_n = config.shard
        self.shard_tag = f"{shard_i}of{shard_n}"
        self.tag = self.shard_tag  # this recorder's slot: journal directory, connection-wide files
        self.root = Path(config.out)
        self.journal_dir = self.root / ".journal" / self.market.exchange / self.tag
        self.metrics = Metrics()
        self.watchdog = StreamWatchdog(config.watchdog.silent_after_s, config.watchdog.reconnect_after_s)
        self.silent_streams = self.watchdog.silent  # names of the streams silent now (kept by the watchdog)
        self.pipeline: Pipeline | None = None
        self.journal: jr.Journal | None = None
        self.connections: list[Connection] = []
        self.owner: dict[str, Connection] = {}
        self.limiter = RestLimiter(self.market.weight_limit_per_minute, config.connection.weight_headroom)
        self.connect_limiter = ConnectLimiter.for_market(self.market)
        self.fetcher: SnapshotFetcher | None = None
        self.instruments: dict[str, Instrument] = {}
        self.failed_journals: list[Path] = []
        self.io_faults = IoFaults()
        self.io_error: str | None = None  # the first I/O error while writes fail, None while fine
        self._fatal: str | None = None  # why the run stops with exit 3 (the journal or the writer failed)
        self.snapshot_inflight: set[str] = set()
        self.snapshot_tasks: set[asyncio.Task] = set()
        self.snapshot_retries = SnapshotRetries(max_s=config.snapshot.retry_max_backoff_s)
        self.problem_log = ProblemLog()
        self.ever_synced: set[str] = set()
        self.unsynced_since: dict[str, float] = {}
        self.segment_id = ""
        self.last_write = 0.0
        self.started = 0.0
        self._stop = asyncio.Event()
        self._cid = 0
        self._rates: dict[str, tuple[float, int]] = {}
        self._dates: set = set()  # Berlin dates this run wrote, compacted at the end
        self._stopping = False  # tells the writer loop to finish its current segment and return
        self._writer_wake = asyncio.Event()  # set by the receiving loop when the journal backlog is large
        self.waiting_until_ns: int | None = None  # while waiting for the window to open
        self.sync_grace_s = SYNC_GRACE_S
        self.metrics_server = metrics_server  # a server of the caller's (schedule), else one of our own

    # ---- lifecycle --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Serve /metrics and /healthz from the start (also while waiting for the window), then record."""
        own_server = self.metrics_server is None and self.config.metrics_port is not None
        if own_server:
            self.metrics_server = MetricsServer(self.metrics, "0.0.0.0", self.config.metrics_port, self.health)
            try:
                await self.metrics_server.start()
            except OSError as exc:
                raise RecorderError(f"cannot serve metrics on port {self.config.metrics_port}: "
                                    f"{exc.strerror or exc}") from None
        elif self.metrics_server is not None:
            self.metrics_server.metrics, self.metrics_server.health = self.metrics, self.health
        try:
            return await self._run_planned()
        finally:
            if own_server:
                await self.metrics_server.stop()

    async def _run_planned(self) -> int:
        if not self.symbols:
            raise RecorderError(f"shard {self.config.shard[0]}/{self.config.shard[1]} has no symbols to record")
        plan = plan_run(
            TradingWindow(self.config.window.start, self.config.window.end, self.config.window.timezone),
            self.clock.now_ns(),
            wait=not self.no_wait,
            ignore_window=self.config.ignore_window,
            duration_s=self.config.duration_s,
        )
        if plan is None:
            log.info("outside the recording window %s-%s %s and --no-wait given: nothing to record",
                     self.config.window.start, self.config.window.end, self.config.window.timezone)
            return EXIT_OK
        check_writable(self.root)
        locks = SymbolLocks(self.root, self.market.exchange, self.symbols)
        locks.acquire()
        try:
            self.tag = locks.acquire_slot(self.shard_tag)
            self.journal_dir = self.root / ".journal" / self.market.exchange / self.tag
            try:
                finish_compactions(self.journal_dir, self.root, self.market.exchange, set(self.symbols))
                recovered = recover_journals(self.journal_dir, self.root, self.market, set(self.symbols), self._dates)
                recovered += recover_orphan_slots(self.root, self.market, self.shard_tag, self.tag, self._dates)
                for date in self._dates:  # temp files of segment writes a crash interrupted
                    clean_day(self.root, self.market.exchange, date, self.symbols, self.shard_tag, self.tag)
            except OSError as exc:
                raise RecorderError(f"finishing the interrupted run in {self.root} failed: {exc}; nothing is lost, "
                                    "free space and run again", EXIT_IO) from None
            if recovered:
                log.info("recovered %d journal records from an interrupted run", recovered)
            if plan.start_ns > self.clock.now_ns():
                log.info("waiting %.0f s for the recording window to open",
                         (plan.start_ns - self.clock.now_ns()) / 1e9)
                self.waiting_until_ns = plan.start_ns
                waiter = asyncio.ensure_future(sleep_until(self.clock, plan.start_ns))
                stopper = asyncio.ensure_future(self._stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                self.waiting_until_ns = None
                if self._stop.is_set():
                    return EXIT_OK
            self.run_start_ns = max(plan.start_ns, time.time_ns())
            return await self._record(plan.stop_ns, recovered)
        finally:
            locks.release()

    async def _record(self, stop_ns: int | None, recovered: int) -> int:
        # rows carry real receive times; the (injectable) clock only decides when to start and stop
        now_ns = time.time_ns()
        day = berlin_date(now_ns)
        seq_start = max_seq_on_disk(self.root, self.market.exchange, day, self.symbols)
        self.journal = jr.Journal(self.journal_dir)
        self.segment_id = f"{now_ns:020d}-{self.tag}"
        self.journal.open(self.segment_id)
        self.pipeline = Pipeline(self.market, journal=self.journal, max_buffer=self.config.sync.max_buffer,
                                 seq_start=seq_start, bridge_max_diffs=self.config.snapshot.bridge_max_diffs,
                                 bridge_max_ns=int(self.config.snapshot.bridge_timeout_s * 1e9))
        tune_gc()
        tune_malloc()
        warm_kernels()  # before connecting: a first compile would stall the receiving loop for seconds
        self.started = time.monotonic()
        # also stop after the planned span of monotonic time: an injected clock that does not move on its
        # own (FakeClock) still ends the run, and a wall-clock step cannot stretch it
        deadline = None if stop_ns is None else self.started + max(stop_ns - self.clock.now_ns(), 0) / 1e9
        if recovered:
            self.pipeline.event(now_ns, None, "journal_recovered", {"records": recovered})
        self.pipeline.event(now_ns, None, "window_start", {
            "symbols": self.symbols, "shard": list(self.config.shard), "stop_ns": stop_ns,
            "ignore_window": self.config.ignore_window,
            "channels": channels_of(streams_for(self.config, self.symbols[0])),
            "window": [str(self.config.window.start), str(self.config.window.end), self.config.window.timezone]})
        writer: asyncio.Task | None = None
        tasks: list[asyncio.Task] = []
        stopped_by_signal = False
        async with httpx.AsyncClient(timeout=self.config.connection.rest_timeout_s) as http:
            self.fetcher = SnapshotFetcher(self.market, self.config.rest_url, self.config.snapshot.limit,
                                           timeout=self.config.connection.rest_timeout_s, limiter=self.limiter,
                                           http=http)
            try:
                await self._load_instruments(http, deadline)
                for symbol in self.symbols:
                    self.pipeline.engine(symbol, now_ns)
                for planned in shard_connections(self.config, self.symbols):
                    self._open_connection(planned)
                tasks.append(asyncio.create_task(self._snapshot_loop()))
                tasks.append(asyncio.create_task(self._watchdog_loop()))
                writer = asyncio.create_task(self._writer_loop())
                if self.status_view:
                    tasks.append(asyncio.create_task(StatusView(self.status_rows).run()))
                stopped_by_signal = await self._wait_until(stop_ns, deadline)
            finally:
                self._stopping = True
                if writer is not None:
                    with suppress(Exception):
                        await writer  # finishes a segment write in progress, then returns
                for conn in self.connections:
                    conn.retiring = True
                running = tasks + [c.task for c in self.connections if c.task] + list(self.snapshot_tasks)
                for task in running:
                    task.cancel()
                for task in running:
                    with suppress(asyncio.CancelledError, Exception):
                        await task
                end_ns = time.time_ns()
                reason = "io_error" if self._fatal else "signal" if stopped_by_signal else "end"
                self.pipeline.event(end_ns, None, "window_end",
                                    {"reason": reason, "synced": sorted(self.ever_synced)})
                try:
                    await self._flush()
                except Exception as exc:  # noqa: BLE001 - as in the writer loop: exit 3, never a traceback
                    self._fail(f"the last segment write stopped: {type(exc).__name__}: {exc}")
                self._close_journal()
        if self._fatal is not None:
            raise RecorderError(self._fatal, EXIT_IO)
        if self.failed_journals:
            self._retry_failed_journals()
        if self.failed_journals:
            raise RecorderError(
                f"could not write {len(self.failed_journals)} segment(s) to {self.root} ({self.io_error}); the "
                f"data is kept in {self.journal_dir} and is written by the next run", EXIT_IO)
        if not stopped_by_signal:
            for date in sorted(self._dates):
                try:
                    compact_day(self.root, self.market.exchange, date, self.symbols, self.shard_tag,
                                row_group_rows=self.config.writer.row_group_rows, formats=self.config.formats,
                                events_tag=self.tag, pending_dir=self.journal_dir)
                except OSError as exc:
                    raise RecorderError(self._end_failure(f"compacting {date}", exc) + "; the segments are "
                                        "kept as they are and the next run compacts them", EXIT_IO) from None
        healthy = set(self.symbols) <= self.ever_synced
        if not healthy:
            log.warning("never synced: %s", ", ".join(sorted(set(self.symbols) - self.ever_synced)))
        if self.validate and not stopped_by_signal:
            span = RunSpan(self.run_start_ns, stop_ns or time.time_ns(), self.config.window.timezone)
            try:
                healthy = self._validate(span) and healthy
            except OSError as exc:
                raise RecorderError(self._end_failure("writing the validation report", exc) + "; the data is "
                                    "complete, `recorder validate` writes the report again", EXIT_IO) from None
        return EXIT_OK if healthy or stopped_by_signal else EXIT_UNHEALTHY

    def _validate(self, span: RunSpan) -> bool:
        """Validate each recorded day over the span this run was meant to cover; reports go next to the data."""
        from recorder.report_html import render_html
        from recorder.validate import Thresholds, validate_day
        from schemas.write import write_file_atomic

        thresholds = Thresholds.from_mapping(self.config.validate)
        ok = True
        no_data: list[str] = []
        for date in sorted(self._dates):
            report = validate_day(self.root, self.market, date, self.symbols, thresholds, window=span,
                                  silent_after_s=self.config.watchdog.silent_after_s, report_missing=True)
            directory = report_dir(self.root, self.market.exchange, date)
            directory.mkdir(parents=True, exist_ok=True)
            stem = directory / f"validation-{self.tag}"
            write_file_atomic(stem.with_suffix(".json"), orjson.dumps(report, option=orjson.OPT_INDENT_2))
            write_file_atomic(stem.with_suffix(".html"), render_html(report).encode())
            log.info("validation %s: %s (report %s)", date, report["status"], stem.with_suffix(".html"))
            ok = ok and report["exit_code"] == 0
            missing = {s: r["no_data"] for s, r in report["symbols"].items() if "no_data" in r}
            if missing:
                no_data.append(f"{date}: no depth data for {', '.join(missing)}: {next(iter(missing.values()))} "
                               f"(report {stem.with_suffix('.html')})")
        if no_data:
            raise RecorderError("; ".join(no_data), EXIT_UNHEALTHY)
        return ok

    async def _wait_until(self, stop_ns: int | None, deadline: float | None = None) -> bool:
        """Sleep until the plan's end (by the clock, or `deadline` in monotonic time); True if stopped by a signal."""
        while not self._stop.is_set():
            now = self.clock.now_ns()
            if stop_ns is not None and now >= stop_ns:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            timeout = 0.5 if stop_ns is None else min(0.5, (stop_ns - now) / 1e9)
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(timeout, 0.0))
        return True

    # ---- exchange info ----------------------------------------------------------------------------

    async def _load_instruments(self, http: httpx.AsyncClient, deadline: float | None = None) -> None:
        """exchangeInfo: check the symbols and record their filters.

        An unknown symbol stops the run (exit 2). If exchangeInfo cannot be had (REST down or too slow)
        within a few attempts and the run's span, each failure is an `error` event and the recording goes
        on without instrument rows: the streams are still worth recording; a symbol that never syncs
        makes the run unhealthy.
        """
        url = f"{self.config.rest_url.rstrip('/')}{self.market.exchange_info_path}"
        last_error = ""
        retry_after: float | None = None
        for attempt in range(5):
            if attempt:
                pause = min(0.5 * 2**attempt, 5) * random.uniform(0.5, 1.5)
                if retry_after is not None:
                    pause = retry_after
                if self._stop.is_set() or deadline is not None and time.monotonic() + pause >= deadline:
                    break
                await asyncio.sleep(pause)
            retry_after = None
            try:
                response = await http.get(url)
            except httpx.HTTPError as exc:
                last_error = str(exc) or type(exc).__name__
                self.pipeline.event(time.time_ns(), None, "error", {"exchange_info": last_error[:200]})
                continue
            if response.status_code != 200:
                last_error = f"HTTP {response.status_code}"
                self.pipeline.event(time.time_ns(), None, "error", {"exchange_info": last_error})
                retry = response.headers.get("retry-after")
                retry_after = float(retry) if retry and retry.isdigit() else None
                continue
            info = parse_exchange_info(response.content)
            if not isinstance(info, dict):
                last_error = str(info)
                self.pipeline.event(time.time_ns(), None, "error", {"exchange_info": last_error[:200]})
                continue
            unknown = [s for s in self.symbols if s not in info]
            if unknown:
                raise RecorderError(
                    f"unknown symbol(s) {', '.join(unknown)} on {self.market.name}: exchangeInfo at "
                    f"{self.config.rest_url} does not list them")
            self.instruments = {s: info[s] for s in self.symbols}
            self.pipeline.instruments(time.time_ns(), list(self.instruments.values()), response.content)
            return
        log.error("exchangeInfo unavailable at %s: %s; recording without instrument data, symbols unchecked",
                  url, last_error)

    # ---- connections ------------------------------------------------------------------------------

    def _open_connection(self, planned: PlannedConnection, takeover_from: Connection | None = None) -> Connection:
        self._cid += 1
        symbols = list(planned.symbols)
        conn = Connection(self._cid, symbols, list(planned.streams), planned)
        if takeover_from is None:
            conn.owned = set(symbols)
            if planned.carries_depth:  # `owner`: the connection whose depth diffs a symbol's book follows
                for symbol in symbols:
                    self.owner[symbol] = conn
        self.connections.append(conn)
        conn.task = asyncio.create_task(self._connection_loop(conn))
        return conn

    async def _connection_loop(self, conn: Connection) -> None:
        url = conn.plan.url(self.config.ws_url)
        subscriptions = conn.plan.subscriptions(self.config.ws_url)
        backoff = 0.25
        pipeline = self.pipeline
        loop = asyncio.get_running_loop()
        while not conn.retiring:
            try:
                await asyncio.sleep(self.connect_limiter.reserve(time.monotonic()))
                async with connect(url, open_timeout=10, close_timeout=1) as ws:
                    await send_paced(ws, subscriptions, subscribe_interval_s(self.market))
                    conn.opened_at = time.monotonic()
                    self.watchdog.opened(conn.cid, conn.streams, time.time_ns())
                    pipeline.event(time.time_ns(), None, "connect", {"connection": conn.cid, "streams": len(conn.streams)})
                    backoff = 0.25
                    rollover = loop.call_later(self.config.connection.lifetime_s, self._rollover, conn, "lifetime")
                    try:
                        await self._receive(conn, ws)
                    finally:
                        rollover.cancel()
            except (OSError, ConnectionClosed, HandshakeError, TimeoutError) as exc:
                self.watchdog.closed(conn.cid)
                if conn.retiring:
                    return
                now_ns = time.time_ns()
                pipeline.event(now_ns, None, "disconnect", {"connection": conn.cid, "reason": str(exc)[:200]})
                log.warning("connection %d lost: %s", conn.cid, exc)
                for symbol in (conn.owned if conn.plan.carries_depth else ()):  # no book rides on the others
                    pipeline.reset(symbol, now_ns, "disconnect")
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, self.config.connection.reconnect_max_backoff_s)

    async def _receive(self, conn: Connection, ws: WebSocketConnection) -> None:
        """The hot loop: take what the connection received, hand it to the pipeline, until it fails.

        Frames that arrived together go to the pipeline as one batch (`Pipeline.frames`) when nothing needs
        them one by one: no rollover in progress, and a connection carrying depth (a connection without
        depth remembers each trade id for its rollover)."""
        pipeline = self.pipeline
        seen = self.watchdog.seen
        while True:
            stamps, batch = await ws.batch(MAX_BATCH)
            if len(conn.owned) == len(conn.symbols) and conn.plan.carries_depth:
                decoded, latest = pipeline.frames(stamps, batch)
                self.watchdog.seen_latest(latest)
                if self.journal.backlog >= JOURNAL_WAKE_BYTES and self.io_error is None:  # not while it fails
                    self._writer_wake.set()
            else:
                decoded = []
                for recv_ts, raw in zip(stamps, batch):
                    if len(conn.owned) != len(conn.symbols):
                        message = self._overlap_frame(conn, recv_ts, raw)
                    else:
                        message = pipeline.frame(recv_ts, raw)
                        if not conn.plan.carries_depth:
                            remember_trade_id(conn, message)
                    decoded.append((recv_ts, message))
            for recv_ts, message in decoded:
                seen(message, recv_ts)
                if type(message) is ServerShutdown:
                    self._rollover(conn, "server_shutdown")

    def _rollover(self, old: Connection, reason: str) -> None:
        """Open a fresh connection for the same streams; it takes each symbol over without a gap."""
        if old.retiring or old.successor is not None:
            return
        log.info("connection %d: %s, rolling over to a fresh connection", old.cid, reason)
        new = self._open_connection(old.plan, takeover_from=old)
        old.successor = new
        self.pipeline.event(time.time_ns(), None, "rollover",
                            {"from": old.cid, "to": new.cid, "reason": reason})
        asyncio.get_running_loop().call_later(60.0, self._force_takeover, old, new)

    def _overlap_frame(self, conn: Connection, recv_ts: int, raw: bytes) -> object:
        """During a rollover both connections deliver the same streams: record each frame once.

        A symbol moves to the new connection at the first depth diff there that continues the book
        (or at once if the book is not synced); until then the new connection's copies are dropped, and
        after it the old connection's are.
        """
        message = parse_frame(raw)
        symbol = getattr(message, "symbol", None)
        if not conn.plan.carries_depth:
            return self._overlap_takeover(conn, symbol, recv_ts, raw, message)
        if symbol is None or symbol in conn.owned:
            return self.pipeline.frame(recv_ts, raw)
        old = self.owner.get(symbol)
        if old is None or old is conn or type(message) is not DepthUpdate:
            return message
        engine = self.pipeline.engine(symbol, recv_ts)
        local = engine.local_id
        continues = not engine.synced or (
            message.prev_final_update_id == local if engine.futures else message.first_update_id == local + 1)
        if not continues:
            return message
        old.owned.discard(symbol)
        conn.owned.add(symbol)
        self.owner[symbol] = conn
        if not old.owned:
            self._retire(old)
        return self.pipeline.frame(recv_ts, raw)

    def _overlap_takeover(self, conn: Connection, symbol: str | None, recv_ts: int, raw: bytes,
                          message: object) -> object:
        """Frames of a connection without depth (USD-M `/market`), which remembers the last trade id it
        recorded per stream. In a rollover the new connection takes a symbol's stream over at the frame
        that follows the old one's last (its copies of earlier ones are dropped, later ones the old one
        still delivers); a stream without ids, or one the old connection never recorded, at once."""
        if symbol is None or symbol in conn.owned:
            remember_trade_id(conn, message)
            return self.pipeline.frame(recv_ts, raw)
        old = next((c for c in self.connections if c.successor is conn and symbol in c.owned), None)
        if old is None:
            return message  # the old connection's copy of a symbol already taken over
        frame_id = trade_id(message)
        last = old.last_ids.get((symbol, type(message)))
        if frame_id is not None and last is not None and frame_id != last + 1:
            return message
        old.owned.discard(symbol)
        conn.owned.add(symbol)
        if not old.owned:
            self._retire(old)
        remember_trade_id(conn, message)
        return self.pipeline.frame(recv_ts, raw)

    def _force_takeover(self, old: Connection, new: Connection) -> None:
        if old.retiring:
            return
        now_ns = time.time_ns()
        for symbol in list(old.owned):
            old.owned.discard(symbol)
            new.owned.add(symbol)
            if old.plan.carries_depth:
                self.owner[symbol] = new
                self.pipeline.reset(symbol, now_ns, "rollover")
        self._retire(old)

    def _retire(self, conn: Connection) -> None:
        conn.retiring = True
        self.watchdog.closed(conn.cid)
        if conn.task is not None:
            conn.task.cancel()
        self.connections.remove(conn)

    # ---- snapshots --------------------------------------------------------------------------------

    async def _snapshot_loop(self) -> None:
        interval = self.config.snapshot.checkpoint_interval_s
        stagger = self.config.snapshot.stagger_s
        start = time.monotonic()
        next_checkpoint = {s: start + interval * (1 + i / max(1, len(self.symbols)))
                           for i, s in enumerate(self.symbols)}
        while True:
            now = time.monotonic()
            self._check_held_snapshots(now)
            wanted = [s for s in self.symbols if s in self.pipeline.snapshot_wanted and s not in self.snapshot_inflight
                      and self.snapshot_retries.ready(s, now)]
            due = [s for s in self.symbols
                   if now >= next_checkpoint[s] and s not in self.snapshot_inflight and self._synced(s)]
            for symbol in due:
                next_checkpoint[symbol] = now + interval
            for symbol in wanted + due:
                if self.owner.get(symbol) is None or self.owner[symbol].opened_at == 0.0:
                    continue  # no live stream yet: a snapshot could not be bridged
                self.snapshot_inflight.add(symbol)
                task = asyncio.create_task(self._snapshot(symbol, checkpoint=symbol in due))
                self.snapshot_tasks.add(task)
                task.add_done_callback(self.snapshot_tasks.discard)
                await asyncio.sleep(stagger)
            self._track_sync()
            await asyncio.sleep(0.05)

    async def _snapshot(self, symbol: str, checkpoint: bool) -> None:
        try:
            self.pipeline.event(time.time_ns(), symbol, "snapshot_requested",
                                {"limit": self.fetcher.limit, "checkpoint": checkpoint})
            try:
                _, body, recv_ts = await self.fetcher.fetch(symbol)
            except RestError as exc:
                self.pipeline.event(time.time_ns(), symbol, "error", {"rest": str(exc)})
                self._snapshot_failed(symbol, str(exc))
                return
            finally:
                self.metrics.used_weight.set(self.limiter.used)
            action = self.pipeline.snapshot(recv_ts, symbol, body, self.fetcher.limit)
            if action is not None and action.name == "STALE":
                self._snapshot_failed(symbol, "stale: older than the buffered diffs")
        finally:
            self.snapshot_inflight.discard(symbol)

    def _check_held_snapshots(self, now: float) -> None:
        """Discard held snapshots past their time bound; back off and warn for every discarded one."""
        self.pipeline.expire_held_snapshots(time.time_ns())
        discarded, self.pipeline.snapshots_discarded = self.pipeline.snapshots_discarded, []
        for symbol, detail in discarded:
            self._snapshot_failed(symbol, f"discarded: lastUpdateId {detail['last_update_id']} not bridged by the "
                                          f"stream (at u={detail['stream_u']}) after {detail['diffs']} diffs"
                                          f"{'' if detail['reason'] == 'diffs' else ' and the time bound'}", now)

    def _snapshot_failed(self, symbol: str, reason: str, now: float | None = None) -> None:
        retry = self.snapshot_retries.failed(symbol, time.monotonic() if now is None else now)
        if retry.warn:
            log.warning("%s: snapshot attempt failed (%d in a row): %s; next in %.0f s", symbol, retry.failures,
                        reason, retry.delay_s)

    def _synced(self, symbol: str) -> bool:
        engine = self.pipeline.engines.get(symbol)
        return engine is not None and engine.synced

    def _track_sync(self) -> None:
        now = time.monotonic()
        for line in self.problem_log.update(self.pipeline.counts, self.pipeline.latest_problem, now):
            log.warning("%s", line)
        for symbol, latency in self.pipeline.last_feed_latency_ns.items():
            self.metrics.feed_latency_ms.set(latency / 1e6, symbol)
        for symbol in self.symbols:
            engine = self.pipeline.engines.get(symbol)
            synced = engine is not None and engine.synced
            self.metrics.synced.set(1 if synced else 0, symbol)
            if synced:
                self.ever_synced.add(symbol)
                self.unsynced_since.pop(symbol, None)
                failures = self.snapshot_retries.succeeded(symbol)
                if failures:
                    log.info("%s: synced after %d failed snapshot attempt(s)", symbol, failures)
            else:
                self.unsynced_since.setdefault(symbol, now)

    # ---- stream watchdog --------------------------------------------------------------------------

    async def _watchdog_loop(self) -> None:
        """Act on the stream watchdog's decisions, a few times per shortest silence threshold."""
        for symbol in self.symbols:
            for parsed in filter(None, map(stream_channel, streams_for(self.config, symbol))):
                self.metrics.stream_silent.set(0, *parsed)
        while True:
            await asyncio.sleep(self.watchdog.check_interval_s)
            now_ns = time.time_ns()
            for decision in self.watchdog.check(now_ns):
                if type(decision) is StreamSilent:
                    self.pipeline.event(now_ns, decision.symbol, "stream_silent", {
                        "stream": decision.stream, "channel": decision.channel,
                        "silent_since": decision.silent_since_ns, "threshold": decision.threshold_s,
                        "connection": decision.connection})
                    log.warning("stream %s silent: no message for over %g s while connection %d is up",
                                decision.stream, decision.threshold_s, decision.connection)
                    self.metrics.stream_silent.set(1, decision.symbol, decision.channel)
                    self.metrics.stream_silences.inc(decision.symbol, decision.channel)
                elif type(decision) is StreamResumed:
                    seconds = (decision.resumed_ns - decision.silent_since_ns) / 1e9
                    self.pipeline.event(now_ns, decision.symbol, "stream_resumed", {
                        "stream": decision.stream, "channel": decision.channel,
                        "silent_since": decision.silent_since_ns, "resumed_at": decision.resumed_ns})
                    log.info("stream %s resumed after %.1f s without a message", decision.stream, seconds)
                    self.metrics.stream_silent.set(0, decision.symbol, decision.channel)
                elif type(decision) is Reconnect:
                    conn = next((c for c in self.connections if c.cid == decision.connection), None)
                    if conn is not None:
                        log.info("connection %d: %s silent for %.0f s, reconnecting", conn.cid,
                                 ", ".join(decision.streams[:5]) + (" ..." if len(decision.streams) > 5 else ""),
                                 decision.silent_for_s)
                        self.metrics.stream_reconnects.inc()
                        self._rollover(conn, "stream_silent")

    # ---- writing ----------------------------------------------------------------------------------

    async def _writer_loop(self) -> None:
        """Every journal_flush_ms (or sooner: JOURNAL_WAKE_BYTES) the journal is written and fsynced; a
        segment, when due, is started right after and written while the journal keeps that cadence: a
        crash loses at most that long of frames, however long a segment write takes (a whole market's:
        seconds). One segment at a time."""
        flush_every = self.config.writer.journal_flush_ms / 1000
        last_segment = time.monotonic()
        segment: asyncio.Task | None = None
        try:
            try:
                while not self._stopping:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._writer_wake.wait(), flush_every)
                    self._writer_wake.clear()
                    if segment is not None and segment.done():
                        segment, written = None, segment
                        await written  # raises what the write raised
                    if not await self._sync_journal():
                        continue
                    now = time.monotonic()
                    if segment is None and (now - last_segment >= self.config.writer.segment_seconds or
                                            self.pipeline.pending_rows >= self.config.writer.segment_rows):
                        last_segment = now
                        segment = asyncio.create_task(self._flush())
            finally:
                if segment is not None:
                    await segment  # the run stops: a segment write in progress finishes first
        except Exception as exc:  # noqa: BLE001 - the writer never dies silently: it stops the run, exit 3
            self._fail(f"the writer stopped: {type(exc).__name__}: {exc}")

    async def _flush(self) -> None:
        """Rotate the journal, write the buffered rows as the closed journal's segment, drop the journal.

        The rows are detached and written in a worker thread (Arrow and zstd release the GIL), so frames
        keep being received and journaled meanwhile."""
        old_segment = self.segment_id
        new_segment = f"{time.time_ns():020d}-{self.tag}"
        dates = {d for d, rows in self.pipeline.buffers.items() if rows.count}
        try:
            closed = self.journal.rotate(new_segment) if self.journal.path is not None else None
        except OSError as exc:  # the rows stay buffered with the journal they are in, retried next time
            self._journal_failed(exc, rotating=True)
            return
        self.io_faults.journal_written(rotated=True)
        self.segment_id = new_segment
        buffers = self.pipeline.detach()
        try:
            # on failure the rows are dropped here: they are in the closed journal, written from there later
            _, rejected = await asyncio.to_thread(write_buffers, buffers, self.root, self.market.exchange,
                                                  f"seg-{old_segment}")
        except OSError as exc:
            self._io_failed(f"writing segment {old_segment} (its rows stay in the journal)", exc)
            self.pipeline.event(time.time_ns(), None, "error", {"write": str(exc)[:200]})
            if closed is not None:
                self.failed_journals.append(closed)
            return
        self._dates |= dates
        if closed is not None:
            closed.unlink(missing_ok=True)
        if self.failed_journals:
            self._retry_failed_journals()  # the disk takes writes again
        if not self.failed_journals and (line := self.io_faults.recovered(time.monotonic())):
            log.info("%s", line)
            self.io_error = None
        self.last_write = time.time()
        self.metrics.last_write_timestamp.set(self.last_write)
        now_ns = time.time_ns()
        for bad in rejected:
            self.pipeline.set_aside(bad, now_ns)

    def _retry_failed_journals(self) -> None:
        still_failed = []
        for path in self.failed_journals:
            try:
                pipeline = Pipeline(self.market, use_engine=False)
                for record in jr.read_journal(path):
                    pipeline.replay_journal_record(record, set(self.symbols))
                dates = {d for d, rows in pipeline.buffers.items() if rows.count}
                pipeline.flush(self.root, f"seg-{path.stem}")
                self._dates |= dates
                path.unlink()
            except OSError:
                still_failed.append(path)
        self.failed_journals = still_failed

    async def _sync_journal(self) -> bool:
        """Write and fsync the journal; while it fails its bytes wait, and a lasting failure stops the run.
        Both run in a thread (tens of ms at high rates): frames keep being received meanwhile."""
        try:
            job = self.journal.take()
            if job is not None:
                await asyncio.to_thread(jr.run, job)
        except OSError as exc:
            self._journal_failed(exc)
            return False
        self.io_faults.journal_written()
        return True

    def _journal_failed(self, exc: OSError, rotating: bool = False) -> None:
        what = f"writing the journal {self.journal.path}"
        self._io_failed(what, exc)
        reason = self.io_faults.journal_failed(what, exc, time.monotonic(), self.journal.backlog, rotating)
        if reason is not None:
            self._fail(reason)

    def _close_journal(self) -> None:
        """Close the journal at the end; delete it if everything in it is in segments, else write it like the
        journal of a failed segment."""
        try:
            last = self.journal.close()
        except OSError as exc:
            self._io_failed(f"writing the journal {self.journal.path}", exc)
            self._fail(f"the journal could not be written at the end: {self.io_error}; what reached it is "
                       f"in {self.journal_dir} and the next run writes it")
            return
        if last is not None and not self.pipeline.pending_rows:
            last.unlink(missing_ok=True)  # opened by the last flush, holds nothing unwritten
        elif last is not None:
            self.failed_journals.append(last)

    def _io_failed(self, what: str, exc: OSError) -> None:
        line = self.io_faults.failed(what, exc, time.monotonic())
        if line is not None:
            log.error("%s", line)
        self.io_error = self.io_faults.first_error

    def _end_failure(self, what: str, exc: OSError) -> str:
        self._io_failed(what, exc)
        return f"{what} failed: {exc}"

    def _fail(self, reason: str) -> None:
        """Stop the run: connections close, what can be written is written, and it exits 3 with `reason`."""
        if self._fatal is None:
            self._fatal = reason
            log.error("stopping: %s", reason)
        self._stop.set()

    # ---- observability ----------------------------------------------------------------------------

    def health(self) -> Health:
        """waiting / starting / recording / degraded (recorder/health.py), also set as `recorder_state`."""
        if self.waiting_until_ns is not None:
            return publish(self.metrics, waiting((self.waiting_until_ns - self.clock.now_ns()) / 1e9,
                                                 len(self.symbols)))
        now = time.monotonic()
        started = self.started or now  # exchangeInfo and the first sync count from the recording's start
        synced = {s for s in self.symbols if self.pipeline is not None and self._synced(s)}
        unsynced_for = {s: now - self.unsynced_since.get(s, started) for s in self.symbols if s not in synced}
        return publish(self.metrics, recording_health(self.symbols, synced, self.ever_synced | synced, unsynced_for,
                                                      self.silent_streams, self.io_error, len(self.failed_journals),
                                                      self.sync_grace_s))

    def status_rows(self) -> list[StatusRow]:
        rows = []
        now = time.monotonic()
        for symbol in self.symbols:
            engine = self.pipeline.engines.get(symbol)
            count = self.pipeline.depth_counts.get(symbol, 0)
            last_t, last_n = self._rates.get(symbol, (self.started, 0))
            rate = (count - last_n) / (now - last_t) if now > last_t else 0.0
            self._rates[symbol] = (now, count)
            latency = self.pipeline.last_feed_latency_ns.get(symbol)
            rows.append(StatusRow(
                symbol, rate, engine.state.name.lower() if engine else "need_snapshot",
                self.pipeline.gaps.get(symbol, 0), None if latency is None else round(latency / 1e6),
                None if not self.last_write else time.time() - self.last_write))
        return rows
