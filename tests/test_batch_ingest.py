"""`Pipeline.frames` (a batch: trades, aggTrades and bookTickers undecoded until flush, one journal record)
gives what `Pipeline.frame` called frame by frame gives: seqs, rows, events, counts, journal contents and
what journal recovery writes. `frame()` is the reference; real captures of every market are compared
through `recorder import` in test_columnar.py."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from recorder import journal as jr
from recorder.columnar import FrameBuffers
from recorder.markets import get_market
from recorder.pipeline import Pipeline
from recorder.runtime import recover_journals
from recorder.streamroutes import stream_route
from tests.test_columnar import T0, _wrap, assert_same_dataset, dataset, synthetic_frames


def _snapshot(last_update_id: int) -> bytes:
    return orjson.dumps({"lastUpdateId": last_update_id, "E": 1723161255200, "T": 1723161255199,
                         "bids": [["61700.1", "2"]], "asks": [["61900", "1"]]})


def traffic(seed: int) -> list[tuple]:
    """Frames of every kind in a random order, with a snapshot that syncs SOLUSDT (futures ids) and a
    gap later, so the sync engine emits events in the middle of batches."""
    rng = random.Random(seed)
    frames = synthetic_frames()
    rng.shuffle(frames)
    depth, ids = [], []
    u = 5000
    for i in range(60):
        first = u + 1
        u += rng.randint(1, 4)
        if i == 40:
            first, u = u + 10, u + 12  # a gap: pu is no longer the previous u
        event = {"e": "depthUpdate", "E": 1723161255300 + i, "T": 1723161255299 + i, "s": "SOLUSDT", "U": first,
                 "u": u, "pu": first - 1 if i != 40 else first - 7, "b": [["161.5", str(i)]], "a": []}
        depth.append(_wrap(event, "solusdt@depth@100ms", True))
        ids.append(u)
    items: list[tuple] = [("frame", f) for f in frames]
    at = sorted(rng.randint(0, len(items)) for _ in depth)
    for n, (position, frame) in reversed(list(enumerate(zip(at, depth)))):  # the diffs stay in order
        items.insert(position, ("frame", frame))
        if n == 5:
            items.insert(position + 1, ("snapshot", _snapshot(ids[2])))
    return items


def feed(items: list[tuple], out: Path, *, batched: bool, seed: int = 0, journal: jr.Journal | None = None,
         flush_every: int = 150, t0: int = T0, pending: list | None = None, seen: dict | None = None) -> Pipeline:
    """Feed `items` (1 ms apart from `t0`), flushing every `flush_every`; `pending` gets the buffered
    message count per day before each flush, `seen` the latest receive time per (message type, symbol) as
    the recorder's stream watchdog learns it."""
    pipeline = Pipeline(get_market("usdm"), journal=journal)
    rng = random.Random(seed)
    batch_ts, batch = [], []
    seen = {} if seen is None else seen

    def hand_over():
        if batch:
            decoded, latest = pipeline.frames(list(batch_ts), list(batch))
            for ts, message in decoded:
                seen[(type(message), getattr(message, "symbol", None))] = ts
            for key, ts in latest.items():
                seen[key] = max(ts, seen.get(key, ts))
            batch_ts.clear()
            batch.clear()

    for n, (kind, payload) in enumerate(items):
        ts = t0 + n * 1_000_000
        if kind == "snapshot":
            hand_over()
            pipeline.snapshot(ts, "SOLUSDT", payload, 1000)
        elif batched:
            batch_ts.append(ts)
            batch.append(payload)
            if rng.random() < 0.05:
                hand_over()
        else:
            message = pipeline.frame(ts, payload)
            seen[(type(message), getattr(message, "symbol", None))] = ts
        if n % flush_every == flush_every - 1:
            hand_over()
            if pending is not None:
                pending.append({day: rows.count for day, rows in pipeline.buffers.items()})
            pipeline.flush(out, f"seg-{n:08d}")
    hand_over()
    pipeline.flush(out, "seg-last")
    return pipeline


def journal_records(path: Path) -> list[tuple]:
    return sorted((r.seq, r.recv_ts, r.kind, r.limit, r.symbol, r.payload) for r in jr.read_journal(path))


@pytest.mark.parametrize("seed", range(6))
def test_batches_give_what_frame_by_frame_gives(seed, tmp_path, monkeypatch):
    monkeypatch.setattr(FrameBuffers, "column_min_frames", 1)  # every group through the column reader
    items = traffic(seed)
    journals = {}
    pipelines = {}
    seen = {"reference": {}, "batched": {}}
    for name, batched in (("reference", False), ("batched", True)):
        journal = jr.Journal(tmp_path / f"journal-{name}")
        journal.open("seg")
        pipelines[name] = feed(items, tmp_path / name, batched=batched, seed=seed, journal=journal, seen=seen[name])
        journal.close()
        journals[name] = journal_records(tmp_path / f"journal-{name}" / "seg.jnl")
    reference, batched = pipelines["reference"], pipelines["batched"]
    assert_same_dataset(tmp_path / "reference", tmp_path / "batched")
    assert (batched.seq, batched.counts, batched.gaps, batched.depth_counts, batched.last_feed_latency_ns) == (
        reference.seq, reference.counts, reference.gaps, reference.depth_counts, reference.last_feed_latency_ns)
    assert seen["batched"] == seen["reference"]
    assert journals["batched"] == journals["reference"]
    events = [e["kind"] for p in (tmp_path / "batched").rglob("events/**/*.parquet") for e in pq.read_table(p).to_pylist()]
    assert {"synced", "gap"} <= set(events)  # the engine decided inside batches
    assert sum(1 for r in jr.read_journal(tmp_path / "journal-batched" / "seg.jnl") if r.kind == jr.FRAME) == \
        sum(1 for kind, _ in items if kind == "frame")


def test_batches_across_berlin_midnight_give_what_frame_by_frame_gives(tmp_path, monkeypatch):
    """Batches whose frames fall on two Berlin dates: each date's rows, counts and latest times as frame by
    frame gives them."""
    monkeypatch.setattr(FrameBuffers, "column_min_frames", 1)
    items = traffic(8)
    midnight = 1_723_154_400_000_000_000  # 2024-08-09 00:00 Berlin (CEST)
    pending = {}
    for name, batched in (("reference", False), ("batched", True)):
        pending[name] = []
        feed(items, tmp_path / name, batched=batched, seed=8, flush_every=97, t0=midnight - len(items) // 2 * 1_000_000,
             pending=pending[name])
    assert_same_dataset(tmp_path / "reference", tmp_path / "batched")
    assert pending["batched"] == pending["reference"]
    assert any(len(days) == 2 for days in pending["batched"])  # a flush held rows of both dates
    dates = {p.parent.parent.name for p in (tmp_path / "batched").rglob("trades/**/*.parquet")}
    assert dates == {"date=2024-08-08", "date=2024-08-09"}


def test_a_journal_of_batches_recovers_the_segments_it_stands_for(tmp_path, monkeypatch):
    """kill -9 before the flush: recovery from the batch records writes what the flush would have."""
    monkeypatch.setattr(FrameBuffers, "column_min_frames", 1)
    items = traffic(7)
    journal = jr.Journal(tmp_path / "journal")
    journal.open("00000000000000000001-0of1")
    feed(items, tmp_path / "live", batched=True, journal=journal, flush_every=10**9)
    journal.close()
    recover_journals(tmp_path / "journal", tmp_path / "recovered", get_market("usdm"))
    live = {name.rsplit("/", 1)[0]: table for name, table in dataset(tmp_path / "live").items()}
    recovered = {name.rsplit("/", 1)[0]: table for name, table in dataset(tmp_path / "recovered").items()}
    assert sorted(recovered) == sorted(live)
    for name, table in live.items():
        assert recovered[name].equals(table), name


def test_a_torn_batch_record_ends_the_replay_there(tmp_path):
    journal = jr.Journal(tmp_path)
    journal.open("seg")
    journal.append(1, T0, jr.EVENT, b'{"kind":"connect","detail":{}}')
    for seqs, stamps, frames in (([2, 3, 5], [T0 + 1, T0 + 2, T0 + 3], [b"a", b"bb", b"ccc"]), ([6], [T0 + 4], [b"dddd"])):
        journal.append_frames(np.array(seqs), np.array(stamps), np.array([len(f) for f in frames]), b"".join(frames))
    journal.close()
    records = list(jr.read_journal(tmp_path / "seg.jnl"))
    assert [(r.seq, r.recv_ts, r.kind, r.payload) for r in records] == [
        (1, T0, jr.EVENT, b'{"kind":"connect","detail":{}}'), (2, T0 + 1, jr.FRAME, b"a"),
        (3, T0 + 2, jr.FRAME, b"bb"), (5, T0 + 3, jr.FRAME, b"ccc"), (6, T0 + 4, jr.FRAME, b"dddd")]
    data = (tmp_path / "seg.jnl").read_bytes()
    (tmp_path / "seg.jnl").write_bytes(data[:-2])  # the process died while writing the last batch
    assert [r.seq for r in jr.read_journal(tmp_path / "seg.jnl")] == [1, 2, 3, 5]


def test_routes_of_stream_names():
    assert stream_route(b"btcusdt@bookTicker") == ("book_ticker", "BTCUSDT")
    assert stream_route(b"btcusd_perp@aggTrade") == ("agg_trades", "BTCUSD_PERP")
    assert stream_route(b"1000shibusdt@trade") == ("trades", "1000SHIBUSDT")
    for stream in (b"btcusdt@depth@100ms", b"btcusdt@depth", b"btcusdt@depth@0ms", b"btcusdt@depth@500ms"):
        assert stream_route(stream) == ("depth", "BTCUSDT"), stream
    for stream in (b"btcusdt@depth5@100ms", b"btcusdt@depth@250ms", b"btcusdt@kline_1m", b"btcusdt",
                   b"BTCUSDT@trade", b"btc usdt@trade", b"@trade", b"btcusdt@markPrice@1s"):
        assert stream_route(stream) is None, stream


def test_bad_undecoded_frames_are_set_aside_at_flush_with_their_seq(tmp_path, monkeypatch):
    """Frames routed by their stream name alone are checked when read at flush: a malformed one, a price
    that is a number, one whose symbol is not its stream's are set aside with their seq; the rest of the
    segment is written and every frame stays in the journal."""
    monkeypatch.setattr(FrameBuffers, "column_min_frames", 1)
    good = [_wrap({"e": "trade", "E": 1 + i, "T": 1 + i, "s": "BTCUSDT", "t": 100 + i, "p": "61837.63",
                   "q": "0.5", "m": True, "M": True}, "btcusdt@trade", True) for i in range(6)]
    bad = [
        good[0][:-9],  # truncated
        good[1].replace(b'"p":"61837.63"', b'"p":61837.63'),
        good[2].replace(b'"s":"BTCUSDT"', b'"s":"ETHUSDT"'),
        good[3].replace(b'"e":"trade"', b'"e":"aggTrade"'),
    ]
    frames = [good[0], bad[0], good[1], bad[1], bad[2], good[4], bad[3], good[5]]
    journal = jr.Journal(tmp_path / "journal")
    journal.open("seg")
    pipeline = Pipeline(get_market("spot"), journal=journal)
    pipeline.frames([T0 + i for i in range(len(frames))], frames)
    journal.close()
    _, rejected = pipeline.flush(tmp_path / "out", "seg-1")
    assert [(r.table, r.symbol, r.seq) for r in rejected] == [("trades", "BTCUSDT", s) for s in (2, 4, 5, 7)]
    assert "ETHUSDT" in rejected[2].reason
    trades = pq.read_table(next((tmp_path / "out").rglob("trades/**/*.parquet")))
    assert trades.column("seq").to_pylist() == [1, 3, 6, 8]
    assert [r.payload for r in jr.read_journal(tmp_path / "journal" / "seg.jnl") if r.kind == jr.FRAME] == frames
    for bad in rejected:  # as `recorder run` and `recorder import` do: counted, logged, an event naming the seq
        pipeline.set_aside(bad, T0 + 100)
    assert pipeline.counts["parse_errors"] == 4
    assert "seq 7" in pipeline.latest_problem["parse_errors"]
    pipeline.flush(tmp_path / "out", "seg-2")
    events = pq.read_table(next((tmp_path / "out").rglob("events/**/seg-2.parquet"))).to_pylist()
    assert [(e["kind"], orjson.loads(e["detail"])["seq"]) for e in events] == [("parse_error", s) for s in (2, 4, 5, 7)]


def test_journal_writes_in_order_across_a_failed_and_an_abandoned_write(tmp_path, monkeypatch):
    """`take` hands the bytes to `run` (another thread in the recorder): a write that fails halfway (ENOSPC)
    and one never run are both written by the next, before what was appended since, with sealed crcs."""
    journal = jr.Journal(tmp_path)
    journal.open("seg")
    frames = [b'{"n":%d}' % i for i in range(12)]

    def batch(k):
        chunk = frames[3 * k:3 * k + 3]
        journal.append_frames(np.arange(3 * k + 1, 3 * k + 4), T0 + np.arange(3 * k, 3 * k + 3),
                              np.array([len(f) for f in chunk]), b"".join(chunk))

    real_writev = os.writev
    calls = []

    def half_then_full(fd, buffers):  # as a filling disk: a short write, then ENOSPC, then room again
        calls.append(len(buffers))
        if len(calls) == 1:
            data = b"".join(buffers)
            return os.write(fd, data[:len(data) // 2 + 3])  # cut inside a part
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_writev(fd, buffers)

    batch(0)
    monkeypatch.setattr(jr.os, "writev", half_then_full)
    with pytest.raises(OSError):
        jr.run(journal.take())
    assert journal.backlog > 0
    batch(1)
    journal.take()  # never run: abandoned by the next take
    batch(2)
    jr.run(journal.take())
    batch(3)
    journal.close()
    assert [(r.seq, r.payload) for r in jr.read_journal(tmp_path / "seg.jnl")] == list(zip(range(1, 13), frames))


def test_warm_kernels_compiles_what_a_recording_runs(tmp_path, monkeypatch):
    """After `warm_kernels` (called before the recorder connects, and in the Docker build) nothing a batch
    or a flush runs is compiled again: a compile holds the GIL for seconds."""
    from recorder import framescan, streamroutes
    from recorder.pipeline import warm_kernels

    kernels = [framescan.scan, framescan.gather_strings, framescan.depth_ids, streamroutes.route_batch,
               streamroutes.last_of_routes, streamroutes._insert, streamroutes._find]
    monkeypatch.setattr(FrameBuffers, "column_min_frames", 1)  # every group through the kernel at flush
    warm_kernels()
    compiled = [len(kernel.signatures) for kernel in kernels]
    assert all(compiled)
    feed(traffic(3), tmp_path / "out", batched=True, seed=3)
    assert [len(kernel.signatures) for kernel in kernels] == compiled


FAULTS_OF_A_REUSED_BUFFER = """
import resource
import numpy as np
from recorder.pipeline import tune_malloc
if not tune_malloc():
    print("not glibc"); raise SystemExit
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(20 << 20, np.uint8)  # written, freed: a flush's buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
print(faults())
"""


def test_tuned_malloc_keeps_a_flush_buffer_for_the_next_flush():
    """`recorder run` and `import` call `tune_malloc`: a buffer freed by one flush is reused by the next
    without faulting its pages in again. In a fresh process, as the recorder starts (glibc's default maps
    it afresh: ~500 faults here, numpy asking for huge pages)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FAULTS_OF_A_REUSED_BUFFER], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[1])
    tuned = done.stdout.strip()
    if tuned == "not glibc":
        pytest.skip("mallopt is glibc's")
    assert int(tuned) < 50


def test_journal_writes_thousands_of_parts_through_short_writes(tmp_path, monkeypatch):
    """More parts than one writev takes (1,024), and a disk that writes at most 1,000 bytes a call: every
    record comes back in order, single records and batches alike."""
    journal = jr.Journal(tmp_path)
    journal.open("seg")
    expected, seq = [], 0
    for k in range(1_500):
        seq += 1
        single = b'{"single":%d}' % k
        journal.append(seq, T0 + seq, jr.FRAME, single)
        expected.append((seq, single))
        if k % 3 == 0:
            chunk = [b'{"batch":%d,"i":%d}' % (k, i) for i in range(2)]
            journal.append_frames(np.arange(seq + 1, seq + 3), T0 + np.arange(seq + 1, seq + 3),
                                  np.array([len(f) for f in chunk]), b"".join(chunk))
            expected += [(seq + 1, chunk[0]), (seq + 2, chunk[1])]
            seq += 2
    real_writev = os.writev
    calls = []

    def short_writev(fd, buffers):
        calls.append(len(buffers))
        return os.write(fd, b"".join(buffers)[:1_000]) if len(calls) % 2 else real_writev(fd, buffers)

    monkeypatch.setattr(jr.os, "writev", short_writev)
    journal.close()
    assert max(calls) == jr.IOV_MAX
    assert [(r.seq, r.payload) for r in jr.read_journal(tmp_path / "seg.jnl")] == expected
