"""`recorder run` on a full disk: ENOSPC injected at every write site (segment, journal write/fsync/rotate,
compaction, seed CSV export, validation report), a writer that dies, and a real full tmpfs. Each time:
the first error is logged once, the run ends with exit 3 and one line, nothing already written is lost
or corrupted, and the next run writes everything that reached the journal."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import errno
import os
import shutil
import subprocess
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from recorder import compaction, runtime, sink
from recorder import journal as jr
from recorder.iofaults import IoFaults
from recorder.runtime import EXIT_IO, Recorder, RecorderError
from replay.venue.server import VenueServer
from schemas import write as schemas_write
from tests.test_recorder_run import (
    EXCHANGE,
    all_events,
    assert_all_parquet_readable,
    assert_seq_unique,
    captured_log,
    check_against_truth,
    in_process_config,
    journals,
    kinds,
    message_seqs,
    one_error_line,
    run_args,
    run_cli,
    venue_thread,
)


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FailingOs:
    """Stands in for the `os` module of one module: the `failing` calls raise ENOSPC while `full`, after
    `after` more successful calls. A failing `writev` (the journal's write) first writes half its bytes, as
    a filling disk does."""

    def __init__(self, failing: set[str], after: int = 0) -> None:
        self.failing = failing
        self.after = after
        self.full = False
        self.failures = 0
        self._torn = False
        self._filled = False

    def fill(self) -> None:
        """The disk becomes full, once: a later run finds it freed."""
        if not self._filled:
            self.full = self._filled = True

    def __getattr__(self, name: str):
        real = getattr(os, name)
        if name not in self.failing:
            return real

        def call(*args, **kwargs):
            if not self.full:
                return real(*args, **kwargs)
            if self.after > 0:
                self.after -= 1
                return real(*args, **kwargs)
            if name == "writev" and not self._torn and sum(map(len, args[1])) > 1:
                self._torn = True
                data = b"".join(args[1])
                return os.write(args[0], data[: len(data) // 2])
            self.failures += 1
            raise enospc()

        return call


class FullSegments:
    """Every segment write fails with ENOSPC while `full` (a full disk fails them too)."""

    def __init__(self, monkeypatch) -> None:
        self.full = False
        real = sink.write_partition

        def write_partition(*args, **kwargs):
            if self.full:
                raise enospc()
            return real(*args, **kwargs)

        monkeypatch.setattr(sink, "write_partition", write_partition)


def error_lines(logs) -> list[str]:
    return [m for m in logs.messages if "failed:" in m or m.startswith("stopping")]


def rows_by_seq(out: Path) -> dict[str, collections.Counter]:
    """Per partition, rows per seq over every data file: a row twice or missing shows."""
    found: dict[str, collections.Counter] = {}
    for path in (out / EXCHANGE).rglob("*.parquet"):
        if path.name.startswith("."):
            continue
        counter = found.setdefault(str(path.parent.relative_to(out)), collections.Counter())
        counter.update(pq.read_table(path, columns=["seq"]).column("seq").to_pylist())
    return found


def leftovers(out: Path) -> list[Path]:
    """Temp files, replacement manifests and compaction markers: none may outlive a finished run."""
    return [p for p in out.rglob("*") if p.name.endswith((".tmp", ".replaces.json")) or p.name.startswith("compact-")]


async def second_run(venue: VenueServer, out: Path, **options) -> int:
    return await Recorder(in_process_config(venue, out, ("BTCUSDT",), 2.0), **options).run()


def check_recovered(out: Path, venue: VenueServer, journaled: set[int], written: set[int]) -> None:
    assert not journals(out), journals(out)
    assert not leftovers(out), leftovers(out)
    assert_all_parquet_readable(out)
    seqs = set(assert_seq_unique(out))
    assert written <= seqs, f"{len(written - seqs)} rows written before the failure are gone"
    assert journaled <= seqs, f"{len(journaled - seqs)} journaled messages were not recovered"
    stats = check_against_truth(out, venue, "BTCUSDT")
    assert stats["mismatches"] == 0 and stats["books"] > 10, stats


# ---- the policy (sans-I/O) ----------------------------------------------------------------------------


def test_the_first_error_is_logged_once_then_a_reminder_a_minute():
    faults = IoFaults(reminder_s=60.0)
    logged = [(t, line) for t in range(200) if (line := faults.failed("writing segment s", enospc(), float(t)))]
    assert [t for t, _ in logged] == [0, 60, 120, 180]
    assert logged[0][1] == "writing segment s failed: [Errno 28] No space left on device"
    assert faults.first_error == logged[0][1]
    assert faults.recovered(200.0) == "writes succeed again after 200 s (200 failed)"
    assert faults.first_error is None and faults.recovered(201.0) is None


def test_the_journal_gets_a_grace_and_a_bounded_backlog():
    faults = IoFaults(journal_grace_s=5.0, backlog_limit=1000)
    assert faults.journal_failed("writing the journal j", enospc(), 0.0, 10) is None
    assert faults.journal_failed("writing the journal j", enospc(), 4.9, 10) is None
    stop = faults.journal_failed("writing the journal j", enospc(), 5.0, 2_000_000)
    assert stop.startswith("writing the journal j failed for 5 s ([Errno 28] No space left on device)")
    assert "the last 2.0 MB received are lost" in stop
    faults.journal_written()  # space came back in time: the grace starts afresh
    assert faults.journal_failed("writing the journal j", enospc(), 10.0, 10) is None
    assert faults.journal_failed("writing the journal j", enospc(), 10.1, 1000) is not None  # backlog full
    # the next journal cannot be created: appending to the current one does not end the grace
    faults = IoFaults(journal_grace_s=5.0)
    assert faults.journal_failed("writing the journal j", enospc(), 0.0, 0, rotating=True) is None
    faults.journal_written()
    assert "nothing received is lost" in faults.journal_failed("writing the journal j", enospc(), 5.0, 0,
                                                               rotating=True)
    faults.journal_written(rotated=True)
    assert faults.journal_failed("writing the journal j", enospc(), 6.0, 0) is None


# ---- the journal --------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["writev", "fsync", "open"], ids=["journal-write", "journal-fsync", "journal-rotate"])
def test_journal_full_for_good_stops_with_exit_3_and_the_next_run_recovers(tmp_path, monkeypatch, call):
    out = tmp_path / "data"
    disk = FailingOs({call})
    monkeypatch.setattr(jr, "os", disk)
    segments = FullSegments(monkeypatch)

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=4) as venue:
            recorder = Recorder(in_process_config(venue, out, ("BTCUSDT",), 30.0, segment_seconds=0.5))
            recorder.io_faults = IoFaults(journal_grace_s=1.0)
            task = asyncio.create_task(recorder.run())
            await asyncio.sleep(2.0)
            written = set(message_seqs(out))
            disk.full = segments.full = True
            with captured_log() as logs, pytest.raises(RecorderError) as failure:
                await asyncio.wait_for(task, 20)
            journaled = {r.seq for p in journals(out) for r in jr.read_journal(p)}
            disk.full = segments.full = False
            return venue, recorder, failure.value, logs, written, journaled, await second_run(venue, out)

    venue, recorder, error, logs, written, journaled, code = asyncio.run(main())
    assert disk.failures > 0
    assert error.exit_code == EXIT_IO
    assert "\n" not in str(error) and "journal" in str(error) and "No space left" in str(error), str(error)
    # logged once when it starts, once when the recorder stops: not per frame, not per retry
    lines = error_lines(logs)
    assert len(lines) == 2 and "No space left" in lines[0] and lines[1].startswith("stopping"), lines
    assert recorder.io_error is not None and "No space left" in recorder.io_error
    assert journaled and written
    assert code == 0
    assert kinds(all_events(out)).get("journal_recovered") == 1
    ends = [orjson.loads(e["detail"])["reason"] for e in all_events(out) if e["kind"] == "window_end"]
    assert ends[-1] == "end" and set(ends) <= {"io_error", "end"}, ends  # run 1's own may not have reached the disk
    check_recovered(out, venue, journaled, written)


def test_journal_full_for_a_while_loses_nothing(tmp_path, monkeypatch):
    out = tmp_path / "data"
    disk = FailingOs({"writev"})
    monkeypatch.setattr(jr, "os", disk)

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=4) as venue:
            recorder = Recorder(in_process_config(venue, out, ("BTCUSDT",), 5.0, segment_seconds=0.5))
            recorder.io_faults = IoFaults(journal_grace_s=30.0)
            with captured_log() as logs:
                task = asyncio.create_task(recorder.run())
                await asyncio.sleep(1.5)
                disk.full = True
                await asyncio.sleep(1.5)
                backlog = recorder.journal.backlog
                failing = recorder.io_error
                disk.full = False
                code = await asyncio.wait_for(task, 20)
            return venue, recorder, code, logs, backlog, failing

    venue, recorder, code, logs, backlog, failing = asyncio.run(main())
    assert disk.failures > 0 and backlog > 0  # frames waited in memory for the disk
    assert failing is not None and "No space left" in failing
    assert code == 0 and recorder.io_error is None
    lines = error_lines(logs)
    assert len(lines) == 1 and "No space left" in lines[0], lines
    assert any(m.startswith("writes succeed again") for m in logs.messages), logs.messages
    assert not journals(out)
    assert_seq_unique(out)
    stats = check_against_truth(out, venue, "BTCUSDT")
    assert stats["mismatches"] == 0 and stats["books"] > 20, stats
    assert kinds([e for e in all_events(out) if e["symbol"] == "BTCUSDT"]).get("synced") == 1  # no hole


def test_journal_backlog_is_bounded(tmp_path, monkeypatch):
    """A journal that cannot be written holds at most `backlog_limit` bytes before the recorder stops."""
    out = tmp_path / "data"
    disk = FailingOs({"writev"})
    monkeypatch.setattr(jr, "os", disk)

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=4) as venue:
            recorder = Recorder(in_process_config(venue, out, ("BTCUSDT",), 30.0))
            recorder.io_faults = IoFaults(journal_grace_s=600.0, backlog_limit=50_000)
            task = asyncio.create_task(recorder.run())
            await asyncio.sleep(1.0)
            disk.full = True
            with pytest.raises(RecorderError) as failure:
                await asyncio.wait_for(task, 20)
            return failure.value

    error = asyncio.run(main())
    assert error.exit_code == EXIT_IO and "MB received are lost" in str(error), str(error)


# ---- the writer ---------------------------------------------------------------------------------------


def test_a_writer_that_dies_stops_the_run_with_exit_3(tmp_path, monkeypatch):
    out = tmp_path / "data"
    real = runtime.write_buffers
    broken = {"calls": 0}

    def write_buffers(*args, **kwargs):
        broken["calls"] += 1
        if broken["calls"] == 3:
            raise RuntimeError("a bug in the writer")
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime, "write_buffers", write_buffers)

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=4) as venue:
            recorder = Recorder(in_process_config(venue, out, ("BTCUSDT",), 30.0, segment_seconds=0.5))
            with captured_log() as logs, pytest.raises(RecorderError) as failure:
                await asyncio.wait_for(recorder.run(), 20)
            journaled = {r.seq for p in journals(out) for r in jr.read_journal(p)}
            written = set(message_seqs(out))
            return venue, failure.value, logs, journaled, written, await second_run(venue, out)

    venue, error, logs, journaled, written, code = asyncio.run(main())
    assert error.exit_code == EXIT_IO and "\n" not in str(error)
    assert "the writer stopped: RuntimeError: a bug in the writer" in str(error)
    assert [m for m in logs.messages if m.startswith("stopping")] == [f"stopping: {error}"]
    assert code == 0
    check_recovered(out, venue, journaled, written)


# ---- the end of the run: compaction, seed CSV, validation report --------------------------------------


def fail_when(monkeypatch, owner, name: str, disk: FailingOs) -> None:
    """Fill the disk when `owner.name` (a step at the end of the run) starts."""
    real = getattr(owner, name)

    def step(*args, **kwargs):
        disk.fill()
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, step)


@pytest.mark.parametrize("site", ["compaction", "csv", "report"])
def test_disk_full_at_the_end_of_the_run_exits_3_and_the_next_run_finishes(tmp_path, monkeypatch, site):
    out = tmp_path / "data"
    before: dict = {}
    if site == "compaction":  # the marker and the first day files are written, then the disk is full
        disk = FailingOs({"fsync"}, after=8)
        monkeypatch.setattr(schemas_write, "os", disk)
        real = runtime.compact_day

        def compact_day(*args, **kwargs):
            if not before:
                before.update(rows_by_seq(out))
            disk.fill()
            return real(*args, **kwargs)

        monkeypatch.setattr(runtime, "compact_day", compact_day)
    elif site == "csv":  # the first CSV file is written, the second is not
        disk = FailingOs({"fsync"}, after=1)
        monkeypatch.setattr(compaction, "os", disk)
        fail_when(monkeypatch, compaction, "export_seed_csv", disk)
    else:
        disk = FailingOs({"fsync"})
        monkeypatch.setattr(schemas_write, "os", disk)
        fail_when(monkeypatch, Recorder, "_validate", disk)

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], host="127.0.0.1", port=0, speed=5.0, seed=4) as venue:
            config = in_process_config(venue, out, ("BTCUSDT",), 2.5, segment_seconds=0.5, row_group_rows=500)
            config = dataclasses.replace(config, formats=("parquet", "csv"))
            with captured_log() as logs, pytest.raises(RecorderError) as failure:
                await Recorder(config, validate=True).run()
            after_failure = rows_by_seq(out)
            disk.full = False
            code = await Recorder(config, validate=True).run()
            return venue, failure.value, logs, after_failure, code

    venue, error, logs, after_failure, code = asyncio.run(main())
    assert disk.failures > 0
    assert error.exit_code == EXIT_IO and "\n" not in str(error) and "No space left" in str(error), str(error)
    assert {"compaction": "compacting", "csv": "compacting", "report": "validation report"}[site] in str(error)
    assert len(error_lines(logs)) == 1, logs.messages
    assert_all_parquet_readable(out)
    if before:  # the interrupted compaction lost and doubled nothing
        assert after_failure == before
    assert code in (0, 1)  # the verdict of the day: validation of a 2.5 s recording
    # the next run finished the compaction and the export: one day file a partition, each row once
    assert not leftovers(out), leftovers(out)
    assert not list(out.rglob("seg-*.parquet"))
    final = rows_by_seq(out)
    for key, counter in before.items():
        assert {seq: final[key][seq] for seq in counter} == counter, key
    assert_seq_unique(out)
    csv_files = sorted(p.name for p in (out / "csv").rglob("*.csv"))
    assert len(csv_files) == 3 and all(p.stat().st_size > 0 for p in (out / "csv").rglob("*.csv")), csv_files
    reports = list((out / "reports").rglob("validation-*.json"))
    assert reports and all(orjson.loads(p.read_bytes())["status"] for p in reports)
    stats = check_against_truth(out, venue, "BTCUSDT")
    assert stats["mismatches"] == 0, stats


# ---- a real full disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                            check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk_exits_3_and_the_next_run_recovers(small_tmpfs):
    out = small_tmpfs / "data"
    ballast = small_tmpfs / "ballast"
    free = os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
    ballast.write_bytes(b"\0" * (free - 150_000))  # room for a few seconds of journal (~50 kB/s here)
    with venue_thread(("BTCUSDT",)) as venue:
        result = run_cli(run_args(venue, out, "BTCUSDT", "40s"), timeout=90)
        error = one_error_line(result, EXIT_IO, "No space left")
        assert "journal" in error, error
        logged = [line for line in result.stderr.splitlines() if "No space left" in line]
        assert len(logged) <= 4, logged  # the first failure, at most a reminder, the stop, the one-line error
        journaled = {r.seq for p in journals(out) for r in jr.read_journal(p)}
        written = set(message_seqs(out))
        assert journaled
        ballast.unlink()  # space is freed
        again = run_cli(run_args(venue, out, "BTCUSDT", "3s"), timeout=60)
        assert again.returncode == 0, again.stderr
        check_recovered(out, venue, journaled, written)
