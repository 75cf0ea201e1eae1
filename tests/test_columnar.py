"""The column path (narrow decode per frame, frames decoded column-wise at flush) writes the very dataset
the row path (full parse per frame, rows of Python values) writes: same files, rows and values.

The row path is the reference. Real captures of every market in ../shared/realdata (skipped cleanly when
absent) go through `recorder import` once per path; synthetic frames cover what the captures may lack.
"""

from __future__ import annotations

import functools
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from recorder import importer
from recorder import journal as jr
from recorder.captures import sessions_in_realdata
from recorder.columnar import FrameBuffers
from recorder.importer import import_captures
from recorder.markets import get_market
from recorder.pipeline import Pipeline
from recorder.protocol import DepthUpdate, ParseError

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
SESSIONS = sessions_in_realdata(REALDATA) if REALDATA.is_dir() else []
T0 = 1_723_161_255_000_000_000  # 2024-08-09 ~01:54 Berlin


def dataset(root: Path) -> dict[str, object]:
    return {p.relative_to(root).as_posix(): pq.read_table(p) for p in sorted(root.rglob("*.parquet"))}


def assert_same_dataset(reference: Path, candidate: Path) -> None:
    expected, got = dataset(reference), dataset(candidate)
    assert sorted(got) == sorted(expected)
    assert expected, "nothing was written"
    for name, table in expected.items():
        assert got[name].schema == table.schema, name
        assert got[name].equals(table), name


@pytest.mark.skipif(not SESSIONS, reason="../shared/realdata is absent")
@pytest.mark.parametrize("session", SESSIONS, ids=[s.name for s in SESSIONS])
def test_import_writes_the_same_dataset_on_real_captures(session, tmp_path, monkeypatch):
    monkeypatch.setattr(FrameBuffers, "_build_by_rows", _no_row_path)
    monkeypatch.setattr(FrameBuffers, "column_min_frames", 1)  # every group through the column reader
    import_captures(session.paths, session.market, tmp_path / "columns")
    monkeypatch.setattr(importer, "Pipeline", functools.partial(Pipeline, columnar=False))
    import_captures(session.paths, session.market, tmp_path / "rows")
    assert_same_dataset(tmp_path / "rows", tmp_path / "columns")


def _depth(symbol, u, bids, asks, *, futures=False, envelope=True, ts=1723161255208):
    event = {"e": "depthUpdate", "E": ts, "s": symbol, "U": u - 2, "u": u, "b": bids, "a": asks}
    if futures:
        event |= {"T": ts - 3, "pu": u - 3, "ps": symbol[:6]}
    return _wrap(event, f"{symbol.lower()}@depth@100ms", envelope)


def _wrap(event: dict, stream: str, envelope: bool) -> bytes:
    return orjson.dumps({"stream": stream, "data": event} if envelope else event)


def synthetic_frames() -> list[bytes]:
    frames = []
    for i in range(40):
        u = 1000 + 3 * i
        frames.append(_depth("BTCUSDT", u, [["61737.63000000", "0.00000000"], ["61730.1", "1.5"]],
                             [["61837.64000000", f"{i}.25"]], envelope=i % 3 != 0))
        frames.append(_depth("ETHUSDT", u, [], [], futures=True))  # an empty diff: one placeholder row
        frames.append(_depth("ETHUSDT", u + 1, [["2500", "1"]], [["2501.5", "0.001"], ["2502", "0"]], futures=True))
        frames.append(_wrap({"e": "trade", "E": 1723161255343 + i, "s": "BTCUSDT", "t": 3735683259 + i,
                             "p": "61837.63000000", "q": "0.00016000", "T": 1723161255342 + i, "m": i % 2 == 0,
                             "M": True}, "btcusdt@trade", i % 2 == 0))
        frames.append(_wrap({"e": "trade", "E": 1680652700455 + i, "T": 1680652700452, "s": "ETHUSDT",
                             "t": 3535186032 + i, "p": "1900.5", "q": "0.010", "X": "MARKET", "m": False},
                            "ethusdt@trade", True))
        frames.append(_wrap({"e": "aggTrade", "E": 1723161255343 + i, "s": "BTCUSDT", "a": 77 + i,
                             "p": "61837.6", "q": "0.0001", "f": 100 + 2 * i, "l": 101 + 2 * i,
                             "T": 1723161255340 + i, "m": True, "M": True}, "btcusdt@aggTrade", i % 2 == 1))
        frames.append(_wrap({"u": 50093239212 + i, "s": "BTCUSDT", "b": "61837.63000000", "B": "3.78826000",
                             "a": "61837.64000000", "A": "0.00010000"}, "btcusdt@bookTicker", i % 4 != 0))
        frames.append(_wrap({"e": "bookTicker", "u": 2710246762461 + i, "s": "ETHUSDT", "b": "2500.00",
                             "B": "12.5", "a": "2500.01", "A": "0.004", "T": 1680652700452, "E": 1680652700455},
                            "ethusdt@bookTicker", True))
    frames.append(b'{"result":null,"id":1}')
    frames.append(b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{"t":1}}}')
    return frames


def run(frames: list[bytes], out: Path, *, columnar: bool, market: str = "usdm", flush_every: int = 97,
        journal: jr.Journal | None = None) -> tuple[Pipeline, list, list]:
    """Feed `frames` (flushing every `flush_every`): the pipeline, what flushes set aside, the messages
    returned, and `pipeline.frame_seqs` the seq each frame got."""
    pipeline = Pipeline(get_market(market), columnar=columnar, journal=journal)
    rejected, messages = [], []
    pipeline.frame_seqs = []
    for n, frame in enumerate(frames):
        pipeline.frame_seqs.append(pipeline.seq + 1)
        messages.append(pipeline.frame(T0 + n * 1_000_000, frame))
        if n % flush_every == flush_every - 1:
            rejected += pipeline.flush(out, f"seg-{n:08d}")[1]
    rejected += pipeline.flush(out, "seg-last")[1]
    return pipeline, rejected, messages


def _no_row_path(*args):
    raise AssertionError("the column reader refused well-formed frames")


def test_synthetic_frames_write_the_same_dataset_and_messages(tmp_path, monkeypatch):
    monkeypatch.setattr(FrameBuffers, "_build_by_rows", _no_row_path)
    monkeypatch.setattr(FrameBuffers, "column_min_frames", 1)  # every group through the column reader
    frames = synthetic_frames()
    rows, rows_rejected, rows_messages = run(frames, tmp_path / "rows", columnar=False)
    columns, columns_rejected, columns_messages = run(frames, tmp_path / "columns", columnar=True)
    assert rows_rejected == columns_rejected == []
    assert_same_dataset(tmp_path / "rows", tmp_path / "columns")
    assert columns.counts == rows.counts
    assert columns.gaps == rows.gaps
    # what callers read off the message: its type, symbol and ids
    for full, narrow in zip(rows_messages, columns_messages):
        assert type(narrow) is type(full)
        for name in ("symbol", "event_ts", "first_update_id", "final_update_id", "prev_final_update_id",
                     "transact_ts", "trade_id", "agg_trade_id", "update_id", "id", "result"):
            assert getattr(narrow, name, None) == getattr(full, name, None), (name, full)


# ---- bad input ------------------------------------------------------------------------------------------

GOOD = _depth("BTCUSDT", 1002, [["61737.63", "1"]], [["61837.64", "2"]])
UNREADABLE = [
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate"',  # truncated
    GOOD[: len(GOOD) // 2],  # truncated inside the levels
    b"not json at all",
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":"1","s":"BTCUSDT","U":1,"u":2,"b":[],"a":[]}}',
    b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"b":"61737.63","a":[]}',  # levels not a list
    b'{"e":"trade","E":1,"T":1,"s":"BTCUSDT","t":5,"p":61837.63,"q":"1","m":true}',  # price a number
    b'{"e":"aggTrade","E":1,"T":1,"s":"BTCUSDT","a":1.5,"p":"1","q":"1","f":1,"l":1,"m":true}',
    b'{"e":"somethingNew","E":1,"s":"BTCUSDT"}',  # unknown type
]


def test_unreadable_frames_are_counted_logged_and_kept_in_the_journal(tmp_path, monkeypatch):
    monkeypatch.setattr(FrameBuffers, "column_min_frames", 1)
    frames = [GOOD, *UNREADABLE, GOOD.replace(b"1002", b"1005")]
    journal = jr.Journal(tmp_path / "journal")
    journal.open("seg")
    columns, rejected, messages = run(frames, tmp_path / "columns", columnar=True, journal=journal)
    journal.close()
    rows, _, row_messages = run(frames, tmp_path / "rows", columnar=False)
    assert rejected == []
    assert [type(m) for m in messages] == [DepthUpdate, *[ParseError] * len(UNREADABLE), DepthUpdate]
    assert [m.reason for m in messages[1:-1]] == [m.reason for m in row_messages[1:-1]]
    assert columns.counts["parse_errors"] == len(UNREADABLE) == rows.counts["parse_errors"]
    assert "somethingNew" in columns.latest_problem["parse_errors"]
    assert [r.payload for r in jr.read_journal(tmp_path / "journal" / "seg.jnl") if r.kind == jr.FRAME] == frames
    assert_same_dataset(tmp_path / "rows", tmp_path / "columns")
    events = pq.read_table(next((tmp_path / "columns").rglob("events/**/*.parquet"))).to_pylist()
    assert sum(e["kind"] == "parse_error" for e in events) == len(UNREADABLE)


def test_a_malformed_level_fails_only_its_frame_with_its_seq(tmp_path, monkeypatch):
    monkeypatch.setattr(FrameBuffers, "column_min_frames", 1)
    frames = [GOOD]
    for i, levels in enumerate([[["61737.63", 2]], [["abc", "1"]], [["61737.63"]], [["0.123456789", "1"]]]):
        frames.append(_depth("BTCUSDT", 1005 + 3 * i, levels, []))
        frames.append(_depth("BTCUSDT", 1006 + 3 * i, [["61700", "1"]], [["61900", "0"]]))
    frames.append(_wrap({"e": "trade", "E": 1, "T": 1, "s": "BTCUSDT", "t": 9, "p": "1.5.3", "q": "1", "m": True},
                        "btcusdt@trade", True))
    columns, rejected, _ = run(frames, tmp_path / "columns", columnar=True, flush_every=1000)
    _, row_rejected, _ = run(frames, tmp_path / "rows", columnar=False, flush_every=1000)
    seqs = columns.frame_seqs  # the bad ones: the second, fourth, sixth and eighth diffs and the trade
    assert [(r.table, r.symbol, r.seq) for r in rejected] == [
        ("depth", "BTCUSDT", seqs[1]), ("depth", "BTCUSDT", seqs[3]), ("depth", "BTCUSDT", seqs[5]),
        ("depth", "BTCUSDT", seqs[7]), ("trades", "BTCUSDT", seqs[9])]
    assert rejected == row_rejected
    depth = pq.read_table(next((tmp_path / "columns").rglob("depth/**/*.parquet")))
    assert sorted(set(depth.column("seq").to_pylist())) == [seqs[i] for i in (0, 2, 4, 6, 8)]
    assert_same_dataset(tmp_path / "rows", tmp_path / "columns")


def test_small_groups_take_the_row_path_and_write_the_same_rows(tmp_path):
    """Below `column_min_frames` a symbol's diffs are built by the row path: same dataset either way."""
    frames = synthetic_frames()[:FrameBuffers.column_min_frames - 1]  # every group below the threshold
    assert sum(b"depthUpdate" in f for f in frames) > 3
    run(frames, tmp_path / "rows", columnar=False)
    run(frames, tmp_path / "columns", columnar=True)
    assert_same_dataset(tmp_path / "rows", tmp_path / "columns")
