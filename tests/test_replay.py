"""Replay of a recorded day: arrival order, books only while valid, seek, pacing, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recorder.markets import get_market
from replay.engine import BOOK_INVALID, BOOK_VALID, DEPTH, DayReplay, Pacer, ReplayError, batches, paced
from tests.synthetic_day import record_day, recorded_date

SPOT = get_market("spot")


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> tuple[Path, str]:
    """12 s recorded from the venue with 1 s checkpoints and a disconnect (an unsynced span)."""
    base = tmp_path_factory.mktemp("replay")
    out = base / "data"
    (base / "rec.yaml").write_text("snapshot:\n  checkpoint_interval: 1s\n")

    assert record_day(out, "spot", ["BTCUSDT", "ETHUSDT"], 12.0, faults="disconnect=5s", seed=11,
                      config=base / "rec.yaml") == 0
    date = recorded_date(out)
    return out, date


def test_events_in_arrival_order_and_books_only_while_valid(day):
    out, date = day
    events = list(DayReplay(out, SPOT, date).events())
    keys = [(e.recv_ts, e.seq) for e in events if e.kind not in (BOOK_VALID, BOOK_INVALID)]
    assert keys == sorted(keys)
    assert {e.kind for e in events} >= {"depth", "snapshot", "trade", "agg_trade", "book_ticker", "event"}
    valid = {}
    for e in events:
        if e.kind == BOOK_VALID:
            valid[e.symbol] = True
        elif e.kind == BOOK_INVALID:
            valid[e.symbol] = False
        elif e.kind == DEPTH:
            assert (e.book is not None) == valid.get(e.symbol, False)  # never a stale book
            if e.book is not None:
                assert not e.book.is_crossed()
    # the disconnect made each book invalid once, and it became valid again
    for symbol in ("BTCUSDT", "ETHUSDT"):
        kinds = [e.kind for e in events if e.symbol == symbol and e.kind in (BOOK_VALID, BOOK_INVALID)]
        assert kinds[:3] == [BOOK_VALID, BOOK_INVALID, BOOK_VALID], kinds


def test_seek_equals_full_replay_from_the_seek_point(day):
    out, date = day
    full = DayReplay(out, SPOT, date)
    start = full.first_ns + 8 * 1_000_000_000
    expected = [(e.seq, e.kind, e.book.export() if e.book else None)
                for e in full.events() if e.recv_ts >= start and e.kind in ("depth", "snapshot", "trade")]
    seek = DayReplay(out, SPOT, date, start_ns=start)
    got = [(e.seq, e.kind, e.book.export() if e.book else None)
           for e in seek.events() if e.kind in ("depth", "snapshot", "trade")]
    assert got and got == expected


def test_pacing_at_50x_follows_the_schedule(day):
    out, date = day
    replay = DayReplay(out, SPOT, date)
    pacer = Pacer(50.0)
    events = list(paced(replay.events(), pacer))
    stats = pacer.lateness_ms()
    assert stats["events"] == len(events)
    assert stats["p50"] < 5.0  # released on schedule (the replay's own statistics, not the machine's speed)
    first, last = events[0].recv_ts, events[-1].recv_ts
    assert pacer.due(last) <= 0 and -pacer.due(last) < 0.5 + stats["max"] / 1000
    assert (last - first) / 1e9 / 50 > 0.15  # 12 s of data at 50x takes real time


def test_pause_shifts_the_schedule():
    clock = [0.0]
    pacer = Pacer(10.0, clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    pacer.wait(0)
    pacer.pause()
    clock[0] += 5.0
    pacer.resume()
    assert abs(pacer.due(10_000_000_000) - 1.0) < 1e-9  # 10 s of data at 10x is still 1 s away


def test_batches_are_columnar(day):
    out, date = day
    tables = list(batches(DayReplay(out, SPOT, date).events(), 500))
    assert sum(t.num_rows for t in tables) == sum(1 for _ in DayReplay(out, SPOT, date).events())
    assert tables[0].column_names[:4] == ["recv_ts", "seq", "symbol", "kind"]


def test_bad_input(day, tmp_path):
    out, date = day
    with pytest.raises(ReplayError, match="available dates"):
        DayReplay(out, SPOT, "2020-01-01")
    with pytest.raises(ReplayError, match="available symbols: BTCUSDT, ETHUSDT"):
        DayReplay(out, SPOT, date, ["DOGEUSDT"])
    first = DayReplay(out, SPOT, date).first_ns
    with pytest.raises(ReplayError, match="no snapshot before"):
        DayReplay(out, SPOT, date, start_ns=first + 500_000_000)
    for args, message in (
        (["--date", "20200101"], f"no data for 2020-01-01; {out}/ has spot: {date}"),
        (["--date", date, "--symbols", "FOO"], "available symbols"),
        (["--date", date, "--speed", "fast"], "bad speed"),
        (["--date", date, "--from", "03:00", "--to", "03:01"], "outside the data"),
        (["--date", date, "--from", "9h"], "not a time"),
    ):
        result = subprocess.run([sys.executable, "-m", "replay.cli", *args, "--data", str(out)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("replay: error:")
