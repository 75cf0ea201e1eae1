"""`recorder run` as a researcher relies on it: crashes, signals, bad input, a full disk, shards, metrics,
the trading window, CSV export and compaction. Every server listens on 127.0.0.1 only, every wait is
bounded."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import datetime as dt
import errno
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recorder import journal as jr
from recorder import runtime, sink
from recorder.config import WindowConfig, load_config, shard_symbols
from recorder.markets import get_market
from recorder.numbers import parse_units
from recorder.protocol import DepthUpdate
from recorder.rebuild import rebuild
from recorder.runtime import EXIT_IO, Recorder, RecorderError
from recorder.window import FakeClock, TradingWindow, plan_run
from replay.venue.server import VenueServer
from schemas import TABLES, read_table

BIN = Path(sys.executable).parent
RECORDER = str(BIN / "recorder")
SPOT = get_market("spot")
EXCHANGE = SPOT.exchange
NS = 1_000_000_000


# ---- helpers ---------------------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


@contextlib.contextmanager
def venue_thread(symbols=("BTCUSDT", "ETHUSDT"), faults: str | None = None, **options) -> Iterator[VenueServer]:
    venue = VenueServer("spot", list(symbols), host="127.0.0.1", port=0, speed=5.0, faults=faults, seed=7,
                        **options)
    with venue.run_in_thread() as running:
        yield running


def run_args(venue: VenueServer, out: Path, symbols: str = "BTCUSDT", duration: str = "30s", *extra: str) -> list[str]:
    return [RECORDER, "run", "--market", "spot", "--symbols", symbols, "--rest-url", venue.rest_url,
            "--ws-url", venue.ws_url, "--out", str(out), "--duration", duration, "--ignore-window", "--no-validate",
            *extra]


def spawn(args: list[str], log_path: Path) -> subprocess.Popen:
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed by the OS when the test process ends
    return subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def run_cli(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=False, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def journals(out: Path) -> list[Path]:
    return sorted((out / ".journal").rglob("*.jnl"))


def segments(out: Path) -> list[Path]:
    return sorted(out.rglob("seg-*.parquet"))


def assert_all_parquet_readable(out: Path) -> int:
    files = sorted(out.rglob("*.parquet"))
    for path in files:
        pq.read_table(path)  # raises on a torn or corrupt file
    return len(files)


def snapshot_of_tree(out: Path) -> dict[str, str]:
    """Path -> sha256 of every data file (locks excluded): to prove a failed run touched nothing."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and ".locks" not in p.parts}


def one_error_line(result: subprocess.CompletedProcess, code: int, fragment: str = "") -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("recorder: error:")]
    assert len(errors) == 1, result.stderr
    assert fragment.lower() in errors[0].lower(), errors[0]
    return errors[0]


def as_units(levels) -> dict[int, int]:
    return {parse_units(p): parse_units(q) for p, q in levels}


def dates(out: Path, table: str = "depth") -> list[str]:
    return sorted(d.name.split("=")[1] for d in (out / EXCHANGE / table).glob("date=*"))


def check_against_truth(out: Path, venue: VenueServer, symbol: str) -> dict[str, int]:
    stats = {"books": 0, "mismatches": 0}
    for date in dates(out):
        for _, _, message, _, local in rebuild(out, SPOT, date, symbol):
            book = local.valid_book()
            if book is None or type(message) is not DepthUpdate:
                continue
            _, bids, asks = venue.true_book_at(symbol, local.update_id)
            stats["books"] += 1
            if dict(book.bids) != as_units(bids) or dict(book.asks) != as_units(asks):
                stats["mismatches"] += 1
    return stats


def events(out: Path, symbol: str | None = None) -> list[dict]:
    return read_table(out, EXCHANGE, "events", symbols=[symbol]).to_pylist()


def all_events(out: Path) -> list[dict]:
    return read_table(out, EXCHANGE, "events").to_pylist()


def kinds(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["kind"]] = counts.get(row["kind"], 0) + 1
    return counts


def message_seqs(out: Path) -> list[int]:
    """One seq per recorded message across every table (depth/snapshot levels share their message's seq)."""
    seqs: list[int] = []
    for table in TABLES:
        directory = out / EXCHANGE / table
        if not directory.is_dir():
            continue
        for path in directory.rglob("*.parquet"):
            column = pq.read_table(path, columns=["seq"]).column("seq")
            if table in ("depth", "snapshots", "instruments"):
                column = pc.unique(column)
            seqs += column.to_pylist()
    return seqs


def assert_seq_unique(out: Path) -> list[int]:
    seqs = message_seqs(out)
    assert seqs, "nothing recorded"
    duplicates = len(seqs) - len(set(seqs))
    assert duplicates == 0, f"{duplicates} messages recorded twice"
    return seqs


def in_process_config(venue: VenueServer, out: Path, symbols=("BTCUSDT",), duration: float = 4.0, **writer):
    config = load_config(None, {"market": "spot", "symbols": list(symbols), "out": out, "rest_url": venue.rest_url,
                                "ws_url": venue.ws_url, "duration": duration, "ignore_window": True})
    if writer:
        config = dataclasses.replace(config, writer=dataclasses.replace(config.writer, **writer))
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- 1. kill -9 and restart --------------------------------------------------------------------------------


def test_kill_9_then_restart_recovers_the_journal(tmp_path):
    out = tmp_path / "data"
    with venue_thread() as venue:
        proc = spawn(run_args(venue, out, "BTCUSDT", "30s"), tmp_path / "run1.log")
        try:
            assert wait_for(lambda: segments(out), 20), (tmp_path / "run1.log").read_text()
            time.sleep(3)
            assert proc.poll() is None, (tmp_path / "run1.log").read_text()
            kill_ns = time.time_ns()
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        finally:
            stop_process(proc)

        # the crash left readable Parquet only, and a journal of what was not yet in a segment
        assert assert_all_parquet_readable(out) > 0
        left = journals(out)
        assert left, "no journal left by the killed recorder"
        assert all(p.parent == out / ".journal" / EXCHANGE / "0of1" for p in left)
        records = [r for p in left for r in jr.read_journal(p)]
        frames = [r for r in records if r.kind == jr.FRAME]
        assert frames, "the journal holds no frame"
        missing_s = (kill_ns - max(r.recv_ts for r in frames)) / NS
        assert missing_s <= 1.0, f"the journal misses the last {missing_s:.2f} s before the kill"
        run1_max_seq = max([r.seq for r in records] + message_seqs(out))

        # restart: the journal becomes segments, seq keeps increasing, the book is still the venue's
        restart_ns = time.time_ns()
        result = run_cli(run_args(venue, out, "BTCUSDT", "5s"), timeout=60)
        assert result.returncode == 0, result.stderr
        assert not journals(out), journals(out)
        assert kinds(events(out)).get("journal_recovered", 0) == 1
        assert not list(out.rglob("*.tmp")), list(out.rglob("*.tmp"))
        assert_all_parquet_readable(out)
        seqs = assert_seq_unique(out)
        assert max(seqs) > run1_max_seq
        depth = read_table(out, EXCHANGE, "depth", symbols=["BTCUSDT"], columns=["recv_ts", "seq"])
        new = pc.filter(depth.column("seq"), pc.greater_equal(depth.column("recv_ts"), restart_ns))
        old_max = pc.max(pc.filter(depth.column("seq"), pc.less(depth.column("recv_ts"), restart_ns))).as_py()
        assert len(new) > 0 and pc.min(new).as_py() > run1_max_seq >= old_max
        # the frames in the journal are in the dataset now
        recovered_seqs = {r.seq for r in frames}
        assert recovered_seqs <= set(seqs)
        stats = check_against_truth(out, venue, "BTCUSDT")
        assert stats["mismatches"] == 0 and stats["books"] > 20, stats


# ---- 2. SIGTERM / SIGINT -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_and_flushes(tmp_path, sig):
    out = tmp_path / "data"
    with venue_thread() as venue:
        proc = spawn(run_args(venue, out, "BTCUSDT", "60s"), tmp_path / "run.log")
        try:
            assert wait_for(lambda: journals(out), 15), (tmp_path / "run.log").read_text()
            time.sleep(3)
            assert proc.poll() is None
            sent = time.monotonic()
            proc.send_signal(sig)
            code = proc.wait(5)
            elapsed = time.monotonic() - sent
        finally:
            stop_process(proc)
        log_text = (tmp_path / "run.log").read_text()
        assert code == 0, log_text
        assert elapsed < 5
        assert "Traceback" not in log_text
        assert f"stopping on {sig.name}" in log_text
        assert assert_all_parquet_readable(out) > 0
        assert not journals(out), journals(out)
        assert not list(out.rglob("*.tmp"))
        ends = [e for e in events(out) if e["kind"] == "window_end"]
        assert ends and '"signal"' in ends[-1]["detail"]
        stats = check_against_truth(out, venue, "BTCUSDT")
        assert stats["mismatches"] == 0 and stats["books"] > 5, stats


# ---- 3. bad input --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One normal in-process run (parquet + csv, small row groups), shared by several tests."""
    out = tmp_path_factory.mktemp("recorded") / "data"
    row_group_rows = 500

    async def main():
        async with VenueServer("spot", ["BTCUSDT", "ETHUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=11) as venue:
            config = in_process_config(venue, out, ("BTCUSDT",), 5.0, row_group_rows=row_group_rows,
                                       segment_seconds=1.0)
            config = dataclasses.replace(config, formats=("parquet", "csv"))
            return venue, await Recorder(config).run()

    venue, code = asyncio.run(main())
    assert code == 0
    return out, venue, row_group_rows


@pytest.fixture
def existing(recorded, tmp_path):
    """A copy of a finished dataset, and the hashes of its files."""
    import shutil

    out = tmp_path / "data"
    shutil.copytree(recorded[0], out)
    return out, snapshot_of_tree(out)


def test_unknown_symbol(tmp_path, existing):
    out, before = existing
    with venue_thread() as venue:
        result = run_cli(run_args(venue, out, "DOGEUSDT", "5s"), timeout=30)
    one_error_line(result, 2, "DOGEUSDT")
    after = snapshot_of_tree(out)
    assert {k: after.get(k) for k in before} == before
    assert not [p for p in after if "DOGEUSDT" in p]
    assert not journals(out)


def test_bad_yaml(tmp_path, existing):
    out, before = existing
    config = tmp_path / "bad.yaml"
    config.write_text("symbols: [BTCUSDT\nout: x\n")
    result = run_cli([RECORDER, "run", "--config", str(config), "--out", str(out), "--ignore-window",
                      "--duration", "1s"], timeout=30)
    one_error_line(result, 2, "invalid YAML")
    assert snapshot_of_tree(out) == before


def test_unknown_config_key(tmp_path, existing):
    out, before = existing
    config = tmp_path / "unknown.yaml"
    config.write_text("symbols: [BTCUSDT]\nwriter:\n  segment_secs: 5\n")
    result = run_cli([RECORDER, "run", "--config", str(config), "--out", str(out), "--ignore-window",
                      "--duration", "1s"], timeout=30)
    one_error_line(result, 2, "segment_secs")
    assert snapshot_of_tree(out) == before


def test_unwritable_output_under_a_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    with venue_thread() as venue:
        result = run_cli(run_args(venue, blocker / "sub", "BTCUSDT", "3s"), timeout=30)
    one_error_line(result, 3, "not writable")
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 directory anyway")
def test_unwritable_output_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with venue_thread() as venue:
            result = run_cli(run_args(venue, locked / "data", "BTCUSDT", "3s"), timeout=30)
        one_error_line(result, 3, "not writable")
    finally:
        locked.chmod(0o700)


def test_second_recorder_on_the_same_symbol_is_refused(tmp_path):
    out = tmp_path / "data"
    with venue_thread() as venue:
        first = spawn(run_args(venue, out, "BTCUSDT", "8s"), tmp_path / "first.log")
        try:
            assert wait_for(lambda: journals(out), 15), (tmp_path / "first.log").read_text()
            # a recorder on BTCUSDT too (and ETHUSDT): refused while the first one holds BTCUSDT's lock
            result = run_cli(run_args(venue, out, "ETHUSDT,BTCUSDT", "3s"), timeout=30)
            one_error_line(result, 2, "BTCUSDT")
            # a recorder on a different symbol into the same root is fine
            other = run_cli(run_args(venue, out, "ETHUSDT", "3s"), timeout=30)
            assert other.returncode == 0, other.stderr
            assert first.wait(30) == 0, (tmp_path / "first.log").read_text()
        finally:
            stop_process(first)
        assert not journals(out)
        assert_all_parquet_readable(out)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            stats = check_against_truth(out, venue, symbol)
            assert stats["mismatches"] == 0 and stats["books"] > 10, (symbol, stats)
        # the refused recorder wrote no ETHUSDT data of its own: seqs of one recorder per partition
        assert_seq_unique_per_partition(out)


def assert_seq_unique_per_partition(out: Path) -> None:
    for directory in (out / EXCHANGE).glob("*/date=*/symbol=*"):
        table = directory.parent.parent.name
        for path in directory.glob("*.parquet"):
            column = pq.read_table(path, columns=["seq"]).column("seq")
            if table in ("depth", "snapshots", "instruments"):
                column = pc.unique(column)
            assert len(column) == len(pc.unique(column)), path


def test_rest_snapshot_never_arrives(tmp_path):
    out = tmp_path / "data"
    config = tmp_path / "config.yaml"
    config.write_text("connection:\n  rest_timeout: 1s\n")
    with venue_thread(faults="slow_rest=1:30s") as venue:
        started = time.monotonic()
        result = run_cli(run_args(venue, out, "BTCUSDT", "4s", "--config", str(config)), timeout=60)
        elapsed = time.monotonic() - started
    assert "Traceback" not in result.stderr
    assert result.returncode == 1, result.stderr
    assert elapsed < 4 + 6, elapsed
    rows = all_events(out)
    assert kinds(rows).get("error", 0) >= 1, kinds(rows)
    assert not [e for e in rows if e["kind"] == "synced"]
    assert not journals(out)


def test_malformed_frames_and_error_payloads(tmp_path):
    out = tmp_path / "data"

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=3,
                               faults="malformed=0.2") as venue:
            with captured_log() as logs:
                return venue, await Recorder(in_process_config(venue, out, ("BTCUSDT",), 5.0)).run(), logs.messages

    venue, code, messages = asyncio.run(main())
    assert code == 0
    assert venue.fault_counts["malformed"] > 5
    # logged too: the first of each kind at once, then at most a summary a minute (none in a 5 s run)
    logged = [m for m in messages if m.startswith(("WebSocket parse errors", "WebSocket error payloads"))]
    assert 1 <= len(logged) <= 2 and any(m.startswith("WebSocket parse errors: ") for m in logged), messages
    connection_wide = kinds(events(out, None))
    # Every malformed frame the recorder read is reported; those decided as the run closed may never arrive.
    reported = connection_wide.get("parse_error", 0) + connection_wide.get("error", 0)
    assert reported >= max(1, venue.fault_counts["malformed"] - 2)
    assert connection_wide.get("parse_error", 0) >= 1
    stats = check_against_truth(out, venue, "BTCUSDT")
    assert stats["mismatches"] == 0 and stats["books"] > 20, stats


# ---- 4. a full disk ------------------------------------------------------------------------------------------


class FullDisk:
    """Makes every segment write fail with ENOSPC while `full` is set."""

    def __init__(self, monkeypatch) -> None:
        self.full = True
        self.failures = 0
        real = sink.write_partition

        def write_partition(*args, **kwargs):
            if self.full:
                self.failures += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(*args, **kwargs)

        monkeypatch.setattr(sink, "write_partition", write_partition)


def test_disk_full_for_a_while_loses_nothing(tmp_path, monkeypatch):
    out = tmp_path / "data"
    disk = FullDisk(monkeypatch)

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=4) as venue:
            recorder = Recorder(in_process_config(venue, out, ("BTCUSDT",), 6.0, segment_seconds=1.0))
            task = asyncio.create_task(recorder.run())
            await asyncio.sleep(3.0)
            assert not task.done()
            assert recorder.failed_journals, "no segment write failed"
            assert not recorder.health().ok
            disk.full = False
            return venue, await task

    venue, code = asyncio.run(main())
    assert disk.failures > 0
    assert code == 0
    assert not journals(out)
    assert_seq_unique(out)
    errors = [e for e in events(out) if e["kind"] == "error"]
    assert errors and "write" in errors[0]["detail"]
    stats = check_against_truth(out, venue, "BTCUSDT")
    assert stats["mismatches"] == 0 and stats["books"] > 20, stats
    # no hole: the depth stream is continuous over the failing seconds (one sync for the whole run)
    assert kinds(events(out, "BTCUSDT")).get("synced") == 1


def test_disk_full_for_good_exits_3_and_the_next_run_recovers(tmp_path, monkeypatch):
    out = tmp_path / "data"
    disk = FullDisk(monkeypatch)

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=4) as venue:
            first = Recorder(in_process_config(venue, out, ("BTCUSDT",), 3.0, segment_seconds=1.0))
            with pytest.raises(RecorderError) as failure:
                await first.run()
            left = {r.seq for p in journals(out) for r in jr.read_journal(p)}
            disk.full = False
            second = await Recorder(in_process_config(venue, out, ("BTCUSDT",), 3.0)).run()
            return venue, failure.value, left, second

    venue, error, left, code = asyncio.run(main())
    assert error.exit_code == EXIT_IO
    assert "could not write" in str(error) and ".journal" in str(error)
    assert left, "the data of the failed segments is not in the journal"
    assert code == 0
    assert not journals(out)
    assert kinds(events(out)).get("journal_recovered") == 1
    seqs = assert_seq_unique(out)
    assert left <= set(seqs)
    stats = check_against_truth(out, venue, "BTCUSDT")
    assert stats["mismatches"] == 0 and stats["books"] > 10, stats


# ---- 5. shards ---------------------------------------------------------------------------------------------


def test_shard_symbols_split_deterministically():
    symbols = [f"SYM{i}USDT" for i in range(200)] + ["BTCUSDT", "ETHUSDT"]
    for n in (1, 2, 3, 7):
        shards = [shard_symbols(symbols, i, n) for i in range(n)]
        assert shards == [shard_symbols(symbols, i, n) for i in range(n)]
        flat = [s for shard in shards for s in shard]
        assert sorted(flat) == sorted(symbols)  # every symbol exactly once
        # a symbol's shard does not depend on the other symbols
        assert all(shard_symbols([s], i, n) == (s,) for i, shard in enumerate(shards) for s in shard)


def test_two_shards_share_one_root(tmp_path):
    out = tmp_path / "data"
    symbols = ["BTCUSDT", "ETHUSDT"]
    shards = [shard_symbols(symbols, i, 2) for i in range(2)]
    assert all(len(s) == 1 for s in shards), shards  # these two names land in different shards
    with venue_thread(symbols) as venue:
        procs = [spawn(run_args(venue, out, ",".join(symbols), "5s", "--shard", f"{i}/2"), tmp_path / f"s{i}.log")
                 for i in range(2)]
        try:
            codes = [p.wait(40) for p in procs]
        finally:
            for p in procs:
                stop_process(p)
        assert codes == [0, 0], [(tmp_path / f"s{i}.log").read_text()[-2000:] for i in range(2)]
        for i, shard in enumerate(shards):
            for table in ("depth", "trades", "events", "snapshots"):
                for directory in (out / EXCHANGE / table).glob("date=*/symbol=*"):
                    names = {p.name for p in directory.glob("*.parquet")}
                    if directory.name == "symbol=_all":
                        assert names == {"day-0of2.parquet", "day-1of2.parquet"}, names
                    else:
                        symbol = directory.name.split("=")[1]
                        owner = next(j for j, s in enumerate(shards) if symbol in s)
                        assert names == {f"day-{owner}of2.parquet"}, (directory, names)
        for symbol in symbols:
            stats = check_against_truth(out, venue, symbol)
            assert stats["mismatches"] == 0 and stats["books"] > 10, (symbol, stats)
        starts = [e for e in events(out) if e["kind"] == "window_start"]
        assert sorted(tuple(orjson_loads(e["detail"])["symbols"]) for e in starts) == sorted(shards)


def orjson_loads(text: str):
    import orjson

    return orjson.loads(text)


# ---- 6. metrics --------------------------------------------------------------------------------------------


def test_metrics_and_health_while_recording(tmp_path, monkeypatch):
    out = tmp_path / "data"
    servers = local_metrics_servers(monkeypatch)

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=8) as venue:
            config = dataclasses.replace(in_process_config(venue, out, ("BTCUSDT",), 20.0), metrics_port=free_port())
            recorder = Recorder(config)
            task = asyncio.create_task(recorder.run())
            seen = {}
            try:
                async with httpx.AsyncClient(timeout=2.0) as http:
                    deadline = time.monotonic() + 15
                    while time.monotonic() < deadline and not task.done():
                        if servers and servers[0].port:
                            with contextlib.suppress(httpx.HTTPError):
                                health = await http.get(f"http://127.0.0.1:{servers[0].port}/healthz")
                                metrics = await http.get(f"http://127.0.0.1:{servers[0].port}/metrics")
                                seen = {"health": health.status_code, "metrics": metrics.text}
                                if health.status_code == 200 and 'recorder_synced{symbol="BTCUSDT"} 1' in metrics.text:
                                    break
                        await asyncio.sleep(0.2)
            finally:
                recorder.request_stop()
                code = await asyncio.wait_for(task, 10)
            return seen, code

    seen, code = asyncio.run(main())
    assert code == 0
    assert servers and servers[0].port == servers[0].port
    assert seen.get("health") == 200, seen
    assert 'recorder_synced{symbol="BTCUSDT"} 1' in seen["metrics"], seen["metrics"][-2000:]


# ---- 7. the trading window ---------------------------------------------------------------------------------


def berlin_ns(year, month, day, hour, minute=0, second=0) -> int:
    from zoneinfo import ZoneInfo

    moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo("Europe/Berlin"))
    return int(moment.timestamp()) * NS


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def captured_log() -> Iterator[ListHandler]:
    handler = ListHandler()
    logger = logging.getLogger("recorder")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_before_the_window_with_no_wait_records_nothing(tmp_path):
    out = tmp_path / "data"
    config = load_config(None, {"market": "spot", "symbols": ["BTCUSDT"], "out": out,
                                "rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9"})
    clock = FakeClock(berlin_ns(2024, 6, 3, 6, 30))
    with captured_log() as logs:
        code = asyncio.run(Recorder(config, clock=clock, no_wait=True).run())
    assert code == 0
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
    assert any("outside the recording window" in m and "--no-wait" in m for m in logs.messages), logs.messages
    assert clock.sleeps == []


def test_before_the_window_waits_for_its_start(tmp_path):
    out = tmp_path / "data"

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=9) as venue:
            config = in_process_config(venue, out, ("BTCUSDT",), 3.0)
            config = dataclasses.replace(config, ignore_window=False)
            clock = FakeClock(berlin_ns(2024, 6, 3, 7, 55))  # five minutes before 08:00 Berlin
            with captured_log() as logs:
                started = time.monotonic()
                code = await asyncio.wait_for(Recorder(config, clock=clock).run(), 30)
                elapsed = time.monotonic() - started
            return clock, code, logs.messages, elapsed

    clock, code, messages, elapsed = asyncio.run(main())
    assert code == 0
    assert clock.sleeps and sum(clock.sleeps) == pytest.approx(300, abs=1)
    assert clock.now_ns() >= berlin_ns(2024, 6, 3, 8, 0)
    assert any("waiting" in m for m in messages), messages
    assert 2.5 < elapsed < 15  # recorded for its duration in real time, not for the fake clock's hours
    assert check_against_truth_free(out)


def check_against_truth_free(out: Path) -> bool:
    """Data was written, and every date partition is a real receive date (not the fake clock's)."""
    assert dates(out) and all(d != "2024-06-03" for d in dates(out))
    assert all(d != "2024-06-03" for d in dates(out, "events"))
    return True


@pytest.mark.parametrize(("day", "end_utc_hour"), [((2024, 3, 31), 20), ((2024, 10, 27), 21)],
                         ids=["spring-forward", "fall-back"])
def test_window_end_on_dst_days(day, end_utc_hour):
    window = TradingWindow(dt.time(8), dt.time(22), "Europe/Berlin")
    utc = dt.UTC
    for hour in (3, 12, 19):  # before the window, inside, near the end
        now = int(dt.datetime(*day, hour, tzinfo=utc).timestamp()) * NS
        plan = plan_run(window, now)
        assert plan is not None
        assert plan.stop_ns == int(dt.datetime(*day, end_utc_hour, tzinfo=utc).timestamp()) * NS
    start_utc = 6 if end_utc_hour == 20 else 7
    plan = plan_run(window, int(dt.datetime(*day, 3, tzinfo=utc).timestamp()) * NS)
    assert plan.start_ns == int(dt.datetime(*day, start_utc, tzinfo=utc).timestamp()) * NS
    assert plan_run(window, int(dt.datetime(*day, 3, tzinfo=utc).timestamp()) * NS, wait=False) is None


# ---- 8. seed CSV ---------------------------------------------------------------------------------------------


def test_seed_csv_export(recorded):
    out, venue, _ = recorded
    (date,) = dates(out)
    stamp = date.replace("-", "")
    directory = out / "csv" / EXCHANGE / date

    with open(directory / f"orderbook_rest_snapshot_BTCUSDT_{stamp}.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["side", "price", "qty", "lastUpdateId", "recv_time_ms"]
    assert len(rows) > 1
    for side, price, qty, last_id, recv_ms in rows[1:]:
        assert side in ("bid", "ask")
        assert len(price.split(".")[1]) == 8 and len(qty.split(".")[1]) == 8, (price, qty)
        assert int(last_id) > 0 and int(recv_ms) > 1_600_000_000_000

    with open(directory / f"orderbook_ws_depth_BTCUSDT_{stamp}.csv", newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    assert header[:6] == ["event_time_ms", "recv_time_ms", "bid1_price", "bid1_qty", "ask1_price", "ask1_qty"]
    assert header[-4:] == ["bid10_price", "bid10_qty", "ask10_price", "ask10_qty"] and len(header) == 42
    assert len(rows) > 20
    # one row per depth diff while the book is valid: the venue's true top 10 at that diff
    truth = []
    for _, recv_ts, message, _, local in rebuild(out, SPOT, date, "BTCUSDT"):
        if local.valid_book() is not None and type(message) is DepthUpdate:
            _, bids, asks = venue.true_book_at("BTCUSDT", local.update_id)
            truth.append((message.event_ts, recv_ts // 1_000_000, bids[:10], asks[:10]))
    assert len(rows) - 1 == len(truth)
    for row, (event_ms, recv_ms, bids, asks) in zip(rows[1:], truth, strict=True):
        assert len(row) == 42
        assert all(len(value.split(".")[1]) == 8 for value in row[2:]), row
        assert (int(row[0]), int(row[1])) == (event_ms, recv_ms)
        for i in range(10):
            level = row[2 + 4 * i: 6 + 4 * i]
            assert level[:2] == (bids[i] if i < len(bids) else ["0.00000000", "0.00000000"]), (i, row)
            assert level[2:] == (asks[i] if i < len(asks) else ["0.00000000", "0.00000000"]), (i, row)

    with open(directory / f"trades_ws_BTCUSDT_{stamp}.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["event_time_ms", "price", "qty", "is_buyer_maker"]
    trades = read_table(out, EXCHANGE, "trades", date=date, symbols=["BTCUSDT"])
    assert len(rows) - 1 == trades.num_rows > 0
    assert {r[3] for r in rows[1:]} <= {"0", "1"}


def test_seed_csv_depth_rows_are_never_crossed(recorded):
    out, _, _ = recorded
    (date,) = dates(out)
    path = out / "csv" / EXCHANGE / date / f"orderbook_ws_depth_BTCUSDT_{date.replace('-', '')}.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    crossed = [row[:6] for row in rows if float(row[2]) >= float(row[4])]
    assert not crossed, f"{len(crossed)} of {len(rows)} rows crossed, e.g. {crossed[0]}"


# ---- 9. compaction -------------------------------------------------------------------------------------------


def test_compaction_leaves_one_sorted_zstd_file_per_partition(recorded):
    out, venue, row_group_rows = recorded
    partitions = list((out / EXCHANGE).glob("*/date=*/symbol=*"))
    assert {p.parent.parent.name for p in partitions} >= {"depth", "trades", "events", "snapshots", "instruments"}
    multi_group = False
    for directory in partitions:
        files = sorted(p.name for p in directory.iterdir())
        assert files == ["day-0of1.parquet"], (directory, files)
        meta = pq.read_metadata(directory / "day-0of1.parquet")
        multi_group |= meta.num_row_groups > 1
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            assert group.num_rows <= row_group_rows
            assert all(group.column(c).compression == "ZSTD" for c in range(group.num_columns))
        seq = pq.read_table(directory / "day-0of1.parquet", columns=["seq"]).column("seq").to_numpy()
        assert (seq[1:] >= seq[:-1]).all(), directory
    assert multi_group, "no partition was large enough to test row group sizes"
    assert not segments(out) and not journals(out)
    stats = check_against_truth(out, venue, "BTCUSDT")
    assert stats["mismatches"] == 0 and stats["books"] > 20, stats


# ---- 10. recorder schedule -----------------------------------------------------------------------------------


def test_schedule_records_and_stops_on_sigterm(tmp_path):
    out = tmp_path / "data"
    now = dt.datetime.now(dt.UTC)
    inside = dt.time(0, 0) <= now.time() < dt.time(23, 58)
    config = tmp_path / "schedule.yaml"
    config.write_text("window:\n  timezone: UTC\n  start: \"00:00\"\n  end: \"23:59\"\n")
    with venue_thread() as venue:
        proc = spawn([RECORDER, "schedule", "--config", str(config), "--market", "spot", "--symbols", "BTCUSDT",
                      "--rest-url", venue.rest_url, "--ws-url", venue.ws_url, "--out", str(out)],
                     tmp_path / "schedule.log")
        try:
            if inside:
                assert wait_for(lambda: segments(out), 20), (tmp_path / "schedule.log").read_text()
            else:
                time.sleep(2)
            assert proc.poll() is None, (tmp_path / "schedule.log").read_text()
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(5)
            assert time.monotonic() - sent < 5
        finally:
            stop_process(proc)
    log_text = (tmp_path / "schedule.log").read_text()
    assert code == 0, log_text
    assert "Traceback" not in log_text
    assert not journals(out)
    if inside:
        assert assert_all_parquet_readable(out) > 0


def test_run_validates_the_day_and_its_verdict_is_the_exit_code(tmp_path):
    """At the end `recorder run` validates what it recorded and writes the report next to the data."""
    import json

    out = tmp_path / "data"

    async def main(faults):
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=1.0, seed=21,
                               faults=faults) as venue:
            config = load_config(None, {"market": "spot", "symbols": ["BTCUSDT"], "out": out / (faults or "clean"),
                                        "rest_url": venue.rest_url, "ws_url": venue.ws_url, "duration": 5.0,
                                        "ignore_window": True})
            return await Recorder(config, validate=True).run()

    assert asyncio.run(main(None)) == 0
    reports = list((out / "clean" / "reports" / "binance-spot").glob("*/validation-*.json"))
    assert len(reports) == 1 and reports[0].with_suffix(".html").exists()
    report = json.loads(reports[0].read_text())
    assert report["status"] in ("pass", "warn") and report["exit_code"] == 0
    assert asyncio.run(main("drop=0.3")) == 1  # the day is not healthy: the verdict reaches cron


# ---- 11. a snapshot that never bridges -------------------------------------------------------------------------


def test_snapshot_ahead_of_the_stream_is_discarded_and_refetched(tmp_path):
    """The venue's first snapshot is far ahead of every diff (as from another server or market): the recorder
    drops it after its bound, fetches a fresh one after a back-off, syncs, and the day validates."""
    out = tmp_path / "data"

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=1.0, seed=5,
                               faults="ahead_snapshot=0.5,seed=2") as venue:  # seed 2: 1st ahead, 2nd not
            config = in_process_config(venue, out, ("BTCUSDT",), 6.0)
            config = dataclasses.replace(config, snapshot=dataclasses.replace(
                config.snapshot, bridge_timeout_s=1.0, bridge_max_diffs=10_000))
            with captured_log() as logs:
                code = await Recorder(config, validate=True).run()
            return venue, code, logs.messages

    venue, code, messages = asyncio.run(main())
    assert venue.fault_counts["ahead_snapshot"] >= 1
    assert code == 0, messages
    rows = [e for e in events(out, "BTCUSDT")]
    order = [e["kind"] for e in rows if e["kind"] in ("snapshot_requested", "snapshot_discarded", "synced")]
    assert order[:4] == ["snapshot_requested", "snapshot_discarded", "snapshot_requested", "synced"], order
    discarded = orjson_loads(next(e["detail"] for e in rows if e["kind"] == "snapshot_discarded"))
    assert discarded["reason"] == "time" and discarded["last_update_id"] > discarded["stream_u"] > 0
    warnings = [m for m in messages if "BTCUSDT: snapshot attempt failed" in m]
    assert len(warnings) == 1 and "discarded" in warnings[0], messages
    stats = check_against_truth(out, venue, "BTCUSDT")
    assert stats["mismatches"] == 0 and stats["books"] > 20, stats


# ---- 12. a day that never synced -----------------------------------------------------------------------------


def test_day_that_never_synced_ends_in_one_line_and_a_report_saying_why(tmp_path):
    import json

    out = tmp_path / "data"
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there: Binance unreachable
    result = run_cli([RECORDER, "run", "--market", "spot", "--symbols", "BTCUSDT", "--rest-url", f"http://{closed}",
                      "--ws-url", f"ws://{closed}", "--out", str(out), "--duration", "3s", "--ignore-window"])
    line = one_error_line(result, 1, "no depth data for BTCUSDT")
    assert "never connected" in line and "report" in line, line
    (report_path,) = (out / "reports" / EXCHANGE).glob("*/validation-*.json")
    assert report_path.with_suffix(".html").exists()
    report = json.loads(report_path.read_text())
    assert report["status"] == "fail" and report["exit_code"] == 1
    coverage = report["symbols"]["BTCUSDT"]["checks"]["coverage"]
    assert coverage["status"] == "fail" and "never connected" in coverage["summary"]
    assert "never synced" in coverage["summary"] and coverage["figures"]["connects"] == 0
    # `recorder validate` of that day stays a one-line usage error
    date = report_path.parent.name
    checked = run_cli([RECORDER, "validate", "--date", date, "--data", str(out), "--market", "spot"])
    one_error_line(checked, 2, "no depth data")


# ---- 13. health, status, signals and logs --------------------------------------------------------------------


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "log"])
def test_status_view_refreshes_while_recording(tmp_path, monkeypatch, terminal):
    """The table is redrawn every refresh (0.2 s here) on a terminal; elsewhere a summary line is logged."""
    import io

    from rich.console import Console

    screen = io.StringIO()

    class FastStatusView(runtime.StatusView):
        def __init__(self, snapshot):
            super().__init__(snapshot, refresh_s=0.2, summary_every_s=0.2,
                             console=Console(file=screen, force_terminal=terminal, width=120))

    monkeypatch.setattr(runtime, "StatusView", FastStatusView)

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=4) as venue:
            with captured_log() as logs:
                code = await Recorder(in_process_config(venue, out, ("BTCUSDT",), 3.0), status_view=True).run()
            return code, logs.messages

    out = tmp_path / "data"
    code, messages = asyncio.run(main())
    assert code == 0
    if terminal:
        frames = screen.getvalue().count("msg/s")
        assert frames >= 8, frames  # ~15 in 3 s
        assert "synced" in screen.getvalue()
    else:
        summaries = [m for m in messages if m.startswith("status: ")]
        assert len(summaries) >= 8 and any(" 1 synced" in m for m in summaries), messages


def window_away_from_now() -> WindowConfig:
    """A one-hour UTC window at least an hour from now."""
    hour = dt.datetime.now(dt.UTC).hour
    start = dt.time(20) if hour < 12 else dt.time(1)
    return WindowConfig("UTC", start, dt.time(start.hour + 1))


def local_metrics_servers(monkeypatch) -> list:
    servers = []

    class LocalMetricsServer(runtime.MetricsServer):
        def __init__(self, metrics, host, port, health):
            super().__init__(metrics, "127.0.0.1", port, health)  # tests listen on 127.0.0.1 only
            servers.append(self)

    monkeypatch.setattr(runtime, "MetricsServer", LocalMetricsServer)
    return servers


async def poll_health(port: int, until: Callable[[int, dict], bool], timeout: float) -> list[tuple[int, dict]]:
    """GET /healthz every 0.1 s until `until(status, body)` or the timeout; every answer, in order."""
    answers = []
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                response = await http.get(f"http://127.0.0.1:{port}/healthz")
                answers.append((response.status_code, response.json()))
                if until(*answers[-1]):
                    break
            await asyncio.sleep(0.1)
    return answers


def test_health_is_served_while_run_waits_for_the_window(tmp_path, monkeypatch):
    local_metrics_servers(monkeypatch)
    config = load_config(None, {"market": "spot", "symbols": ["BTCUSDT"], "out": tmp_path / "data",
                                "rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9"})
    config = dataclasses.replace(config, window=window_away_from_now(), metrics_port=free_port())

    async def main():
        recorder = Recorder(config)
        task = asyncio.create_task(recorder.run())
        answers = await poll_health(config.metrics_port, lambda status, body: True, 10)
        async with httpx.AsyncClient(timeout=2.0) as http:
            metrics = (await http.get(f"http://127.0.0.1:{config.metrics_port}/metrics")).text
        recorder.request_stop()
        return answers, metrics, await asyncio.wait_for(task, 10)

    answers, metrics, code = asyncio.run(main())
    assert code == 0
    assert answers and answers[-1][0] == 200, answers
    body = answers[-1][1]
    assert body["state"] == "waiting" and 3600 <= body["opens_in_s"] <= 24 * 3600, body
    assert 'recorder_state{state="waiting"} 1' in metrics and 'recorder_state{state="recording"} 0' in metrics


def test_health_answers_during_exchange_info_retries_then_degrades_unsynced(tmp_path, monkeypatch):
    servers = local_metrics_servers(monkeypatch)
    closed = f"127.0.0.1:{free_port()}"
    config = load_config(None, {"market": "spot", "symbols": ["BTCUSDT"], "out": tmp_path / "data",
                                "rest_url": f"http://{closed}", "ws_url": f"ws://{closed}", "duration": 20.0,
                                "ignore_window": True})
    config = dataclasses.replace(config, metrics_port=free_port())

    async def main():
        recorder = Recorder(config)
        recorder.sync_grace_s = 2.0
        task = asyncio.create_task(recorder.run())
        during_exchange_info = await poll_health(config.metrics_port, lambda status, body: True, 5)
        in_retries = not recorder.connections  # the connections open once exchangeInfo is given up
        later = await poll_health(config.metrics_port, lambda status, body: status == 503, 10)
        recorder.request_stop()
        await asyncio.wait_for(task, 15)
        return during_exchange_info, in_retries, later

    during_exchange_info, in_retries, later = asyncio.run(main())
    assert servers
    assert in_retries
    assert during_exchange_info[-1] == (200, during_exchange_info[-1][1])
    assert during_exchange_info[-1][1]["state"] == "starting", during_exchange_info
    status, body = later[-1]
    assert status == 503 and body["state"] == "degraded", later[-3:]
    assert body["synced"] == 0 and body["unsynced"] == ["BTCUSDT"] and "not synced" in body["reason"], body


def test_health_degrades_on_io_errors_and_silent_streams(tmp_path, monkeypatch):
    local_metrics_servers(monkeypatch)

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=8) as venue:
            config = dataclasses.replace(in_process_config(venue, tmp_path / "data", ("BTCUSDT",), 20.0),
                                         metrics_port=free_port())
            recorder = Recorder(config)
            task = asyncio.create_task(recorder.run())
            port = config.metrics_port
            try:
                recording = await poll_health(port, lambda status, body: body.get("state") == "recording", 15)
                recorder.io_error = "[Errno 28] No space left on device"
                disk = await poll_health(port, lambda status, body: True, 5)
                recorder.io_error = None
                recorder.silent_streams = {"btcusdt@trade"}
                silent = await poll_health(port, lambda status, body: True, 5)
            finally:
                recorder.request_stop()
                await asyncio.wait_for(task, 10)
            return recording[-1], disk[-1], silent[-1]

    recording, disk, silent = asyncio.run(main())
    assert recording[0] == 200 and recording[1]["synced"] == 1 and recording[1]["reasons"] == [], recording
    assert disk[0] == 503 and disk[1]["state"] == "degraded" and "No space left" in disk[1]["reason"], disk
    assert silent[0] == 503 and "btcusdt@trade" in silent[1]["reason"] and silent[1]["silent_streams"] == 1, silent


def test_schedule_serves_health_between_windows_and_logs_its_stop(tmp_path):
    window = window_away_from_now()
    config = tmp_path / "schedule.yaml"
    config.write_text(f'window:\n  timezone: UTC\n  start: "{window.start:%H:%M}"\n  end: "{window.end:%H:%M}"\n')
    port = free_port()
    proc = spawn([RECORDER, "schedule", "--config", str(config), "--market", "spot", "--symbols", "BTCUSDT",
                  "--rest-url", "http://127.0.0.1:9", "--ws-url", "ws://127.0.0.1:9", "--out", str(tmp_path / "data"),
                  "--metrics-port", str(port)], tmp_path / "schedule.log")
    try:
        answers = asyncio.run(poll_health(port, lambda status, body: True, 15))
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0).text
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(5)
    finally:
        stop_process(proc)
    log_text = (tmp_path / "schedule.log").read_text()
    assert code == 0, log_text
    assert answers and answers[-1][0] == 200 and answers[-1][1]["state"] == "waiting", (answers, log_text)
    assert 'recorder_state{state="waiting"} 1' in metrics
    assert "outside the recording window" in log_text and "--no-wait" not in log_text, log_text
    assert "stopping on SIGTERM" in log_text and "Traceback" not in log_text


def test_frames_received_together_go_to_the_pipeline_as_batches(tmp_path, monkeypatch):
    """A busy venue (4,000 events/s): frames that arrive together are handed over in batches
    (`Pipeline.frames`), and the recording is what frame-by-frame hand-over records: every book matches
    the venue's true book, seqs unique, no gap."""
    out = tmp_path / "data"
    batched = []
    frames = runtime.Pipeline.frames

    def spy(self, recv_ts, raws):
        batched.append(len(raws))
        return frames(self, recv_ts, raws)

    monkeypatch.setattr(runtime.Pipeline, "frames", spy)

    async def main():
        async with VenueServer("spot", ["BTCUSDT", "ETHUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=5,
                               events_per_second=400) as venue:
            return venue, await Recorder(in_process_config(venue, out, ("BTCUSDT", "ETHUSDT"), 4.0)).run()

    venue, code = asyncio.run(main())
    assert code == 0
    assert batched and max(batched) > 1, batched
    assert sum(batched) > 1000, sum(batched)
    assert_seq_unique_per_partition(out)  # one exchangeInfo message gives both symbols' instruments rows
    for symbol in ("BTCUSDT", "ETHUSDT"):
        stats = check_against_truth(out, venue, symbol)
        assert stats["mismatches"] == 0 and stats["books"] > 20, (symbol, stats)
    assert kinds(all_events(out)).get("gap", 0) == 0


def test_frames_keep_arriving_while_the_journal_is_fsynced(tmp_path, monkeypatch):
    """The journal's fsync runs beside the receiving loop, not in it: a slow disk (each fsync 300 ms
    here) does not stop frames from being received, and what was fsynced is still all there."""
    out = tmp_path / "data"
    real_fsync = os.fsync
    recorder_box = []
    received_during = []

    def slow_fsync(fd):
        if recorder_box and recorder_box[0].pipeline is not None:
            before = recorder_box[0].pipeline.counts["frames"]
            time.sleep(0.3)
            received_during.append(recorder_box[0].pipeline.counts["frames"] - before)
        return real_fsync(fd)

    class SlowJournalDisk:  # the journal module's `os`, with a slow fsync
        fsync = staticmethod(slow_fsync)

        def __getattr__(self, name):
            return getattr(os, name)

    monkeypatch.setattr(jr, "os", SlowJournalDisk())

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=6,
                               events_per_second=400) as venue:
            recorder = Recorder(in_process_config(venue, out, ("BTCUSDT",), 2.0))
            recorder_box.append(recorder)
            return venue, await recorder.run()

    venue, code = asyncio.run(main())
    assert code == 0
    assert len(received_during) >= 3, received_during
    assert sum(1 for n in received_during if n > 0) >= len(received_during) // 2, received_during
    assert_seq_unique_per_partition(out)
    stats = check_against_truth(out, venue, "BTCUSDT")
    assert stats["mismatches"] == 0 and stats["books"] > 5, stats


def test_the_journal_keeps_its_cadence_while_a_segment_is_written(tmp_path, monkeypatch):
    """A segment write (seconds for a whole market) does not pause the journal: it is still written and
    fsynced every journal_flush_ms meanwhile, so a crash then loses no more than that, and the data of
    the run is all there. Here the first segment's write takes 1.5 s."""
    from recorder.pipeline import warm_kernels

    warm_kernels()  # as the Docker image is built: a first compile would take the run's 3.5 s
    out = tmp_path / "data"
    real_write, real_run = runtime.write_buffers, jr.run
    journal_writes: list[float] = []
    slow_write: list[tuple[float, float]] = []

    def counted_run(job):
        real_run(job)
        journal_writes.append(time.monotonic())

    def slow_write_buffers(*args, **kwargs):
        if not slow_write:
            start = time.monotonic()
            time.sleep(1.5)
            slow_write.append((start, time.monotonic()))
        return real_write(*args, **kwargs)

    monkeypatch.setattr(jr, "run", counted_run)
    monkeypatch.setattr(runtime, "write_buffers", slow_write_buffers)

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=8,
                               events_per_second=400) as venue:
            config = in_process_config(venue, out, ("BTCUSDT",), 3.5, segment_seconds=0.5, journal_flush_ms=100)
            return venue, await Recorder(config).run()

    venue, code = asyncio.run(main())
    assert code == 0
    (start, end), = slow_write
    during = [t for t in journal_writes if start < t < end]
    assert len(during) >= 5, (len(during), len(journal_writes))  # 1.5 s at 100 ms: ~14
    assert_seq_unique_per_partition(out)
    stats = check_against_truth(out, venue, "BTCUSDT")
    assert stats["mismatches"] == 0 and stats["books"] > 5, stats


def test_a_large_journal_backlog_wakes_the_writer_before_its_timer(tmp_path, monkeypatch):
    """Frames arriving faster than the writer loop's timer expects (a burst) are journaled as they pile
    up, not only when the timer fires: here the timer is 10 s, the run 3 s, the wake threshold 32 kB."""
    from recorder.pipeline import warm_kernels

    warm_kernels()
    out = tmp_path / "data"
    real_run = jr.run
    journal_writes: list[float] = []

    def counted_run(job):
        real_run(job)
        journal_writes.append(time.monotonic())

    monkeypatch.setattr(jr, "run", counted_run)
    monkeypatch.setattr(runtime, "JOURNAL_WAKE_BYTES", 32 << 10)

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=9,
                               events_per_second=2000) as venue:
            config = in_process_config(venue, out, ("BTCUSDT",), 3.0, journal_flush_ms=10_000)
            return venue, await Recorder(config).run()

    venue, code = asyncio.run(main())
    assert code == 0
    assert len(journal_writes) >= 20, len(journal_writes)  # the timer alone: 4, all at the end
    stats = check_against_truth(out, venue, "BTCUSDT")
    assert stats["mismatches"] == 0 and stats["books"] > 5, stats
