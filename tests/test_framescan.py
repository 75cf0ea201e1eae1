"""The compiled frame decoder (`recorder.framescan`, via `columnar.scanned_table`) gives exactly the table
Arrow's reader gives (`columnar.arrow_frames_table`, the reference), or declines: never another table.

Real captures of every market (skipped cleanly when ../shared/realdata is absent) must all be read by the
kernel; generated frames, canonical and mutated (whitespace, escapes, key order, unknown and duplicate
keys, out-of-range numbers, odd decimals, missing or wrong fields), must be read identically or declined.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from recorder import framescan
from recorder.captures import iter_capture
from recorder.columnar import (
    STREAM_TABLES,
    FrameArrays,
    FrameBuffers,
    FrameColumns,
    arrow_frames_table,
    frames_table,
    scanned_table,
)
from recorder.markets import get_market
from recorder.narrow import decode_frame
from recorder.pipeline import Pipeline
from recorder.protocol import DepthUpdate

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
CAPTURES = sorted((REALDATA / "hftbacktest").glob("*.gz")) if REALDATA.is_dir() else []
MARKETS = {"spot": "spot", "usdm": "usdm", "cm": "coinm"}
SYMBOL = "BTCUSDT"


def columns_of(frames: list[bytes]) -> FrameArrays:
    rows = FrameColumns()
    for i, frame in enumerate(frames):
        rows.add(1_723_161_255_000_000_000 + i, 10 + i, frame)
    return rows.arrays()


def reference(table: str, rows: FrameArrays) -> pa.Table | None:
    try:
        return arrow_frames_table(table, SYMBOL, rows)
    except (pa.ArrowException, TypeError, ValueError):
        return None


def assert_same_or_declined(table: str, frames: list[bytes]) -> pa.Table | None:
    rows = columns_of(frames)
    fast = scanned_table(table, SYMBOL, rows)
    if fast is not None:
        expected = reference(table, rows)
        assert expected is not None, f"the kernel read frames Arrow's reader refuses: {frames[:2]}"
        assert fast.schema.equals(expected.schema)
        assert fast.equals(expected), frames[:2]
    return fast


@pytest.mark.skipif(not CAPTURES, reason="../shared/realdata is absent")
@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_the_kernel_reads_every_real_capture_as_arrow_does(path):
    pipeline = Pipeline(get_market(MARKETS[path.name.split("_")[0]]))
    stamps, batch = [], []
    for record in iter_capture(path):
        if record.kind == "ws":
            stamps.append(record.recv_ts)
            batch.append(record.payload)
            if len(batch) == 256:
                pipeline.frames(stamps, batch)
                stamps, batch = [], []
        elif record.kind == "rest":
            pipeline.frames(stamps, batch)
            stamps, batch = [], []
            pipeline.snapshot(record.recv_ts, record.symbol, record.payload, record.limit)
    pipeline.frames(stamps, batch)
    groups = []
    for buffers in pipeline.detach().values():
        buffers.gather()
        groups += [(table, symbol, rows) for (table, symbol), rows in buffers.rows.items() if table in STREAM_TABLES]
    assert {table for table, _, _ in groups} >= {"depth", "trades", "book_ticker"}
    for table, symbol, rows in groups:
        fast = scanned_table(table, symbol, rows)
        assert fast is not None, f"{path.name}: the kernel declined {table} {symbol}"
        expected = arrow_frames_table(table, symbol, rows)
        assert fast.schema.equals(expected.schema)
        assert fast.equals(expected), (path.name, table, symbol)


# ---- generated frames ------------------------------------------------------------------------------------

ids = st.integers(0, 10**16)
millis = st.integers(1_500_000_000_000, 1_900_000_000_000)
decimals = st.builds(lambda whole, fraction, digits: f"{whole}" + (f".{fraction:0{digits}d}" if digits else ""),
                     st.integers(0, 9_999_999_999), st.integers(0, 99_999_999), st.sampled_from([0, 1, 2, 3, 8]))
levels = st.lists(st.tuples(decimals, decimals).map(list), max_size=6)


def event_of(table: str):
    if table == "depth":
        return st.fixed_dictionaries(
            {"e": st.just("depthUpdate"), "E": millis, "s": st.just(SYMBOL), "U": ids, "u": ids, "b": levels,
             "a": levels},
            optional={"T": millis, "pu": ids, "ps": st.just("BTCUSD")})
    if table == "trades":
        return st.fixed_dictionaries(
            {"e": st.just("trade"), "E": millis, "s": st.just(SYMBOL), "t": ids, "p": decimals, "q": decimals,
             "T": millis, "m": st.booleans()},
            optional={"M": st.booleans(), "X": st.sampled_from(["MARKET", "LIMIT", "NA", ""])})
    if table == "agg_trades":
        return st.fixed_dictionaries(
            {"e": st.just("aggTrade"), "E": millis, "s": st.just(SYMBOL), "a": ids, "p": decimals,
             "q": decimals, "f": ids, "l": ids, "T": millis, "m": st.booleans()},
            optional={"M": st.booleans()})
    return st.fixed_dictionaries(
        {"u": ids, "s": st.just(SYMBOL), "b": decimals, "B": decimals, "a": decimals, "A": decimals},
        optional={"e": st.just("bookTicker"), "E": millis, "T": millis, "ps": st.just("BTCUSD")})


STREAMS = {"depth": "btcusdt@depth@100ms", "trades": "btcusdt@trade", "agg_trades": "btcusdt@aggTrade",
           "book_ticker": "btcusdt@bookTicker"}


ORDER = {"depth": "e E T s ps U u pu b a", "trades": "e E T s t p q X m M", "agg_trades": "e E s a p q f l T m M",
         "book_ticker": "e u s ps b B a A T E"}  # Binance's key order (the kernel declines asks before bids)


def binance_order(table: str, event: dict) -> dict:
    order = ORDER[table].split()
    return dict(sorted(event.items(), key=lambda item: order.index(item[0])))


def compact(table: str, event: dict) -> bytes:
    return orjson.dumps({"stream": STREAMS[table], "data": event})


# What a server may send instead of the compact layout: each either reads identically or is declined.
MUTATIONS = {
    "spaces": lambda t, e: json.dumps({"stream": STREAMS[t], "data": e}).encode(),
    "escaped symbol": lambda t, e: compact(t, e).replace(b'"BTCUSDT"', b'"\\u0042TCUSDT"'),
    "keys reversed": lambda t, e: compact(t, dict(reversed(list(e.items())))),
    "raw stream": lambda t, e: orjson.dumps(e),
    "unknown scalar": lambda t, e: compact(t, {**e, "zz": 1, "Z": "x", "n": None, "k": True}),
    "unknown object": lambda t, e: compact(t, {**e, "zz": {"a": 1}}),
    "duplicate key": lambda t, e: compact(t, e)[:-2] + b',"s":"BTCUSDT"}}',
    "duplicate unknown key": lambda t, e: compact(t, e)[:-2] + b',"zz":1,"zz":2}}',
    "huge id": lambda t, e: compact(t, e).replace(b'"E":', b'"E":99999999999999999999', 1),
    "negative time": lambda t, e: compact(t, {**e, "E": -5}),
    "19-digit id": lambda t, e: compact(t, {**e, "E": 9_223_372_036_854_775_807}),
    "float time": lambda t, e: compact(t, e).replace(b'"E":1', b'"E":1.0e0', 1),
    "9 decimals": lambda t, e: compact(t, {k: ("0.123456789" if k in "pqBA" else v) for k, v in e.items()}),
    "9 decimals, last 0": lambda t, e: compact(t, {k: ("0.123456780" if k in "pqBA" else v) for k, v in e.items()}),
    "11 whole digits": lambda t, e: compact(t, {k: ("12345678901.5" if k in "pqBA" else v) for k, v in e.items()}),
    "decimal as number": lambda t, e: compact(t, {k: (float(v) if k in "pqbBaA" and isinstance(v, str) else v)
                                                   for k, v in e.items()}),
    "exponent decimal": lambda t, e: compact(t, {k: ("1e-5" if k in "pqBA" else v) for k, v in e.items()}),
    "leading zeros": lambda t, e: compact(t, {k: ("007.5" if k in "pqBA" else v) for k, v in e.items()}),
    "empty decimal": lambda t, e: compact(t, {k: ("" if k in "pqBA" else v) for k, v in e.items()}),
    "negative decimal": lambda t, e: compact(t, {k: ("-1.5" if k in "pqBA" else v) for k, v in e.items()}),
    "missing field": lambda t, e: compact(t, dict(list(e.items())[1:])),
    "null field": lambda t, e: compact(t, {**e, "E": None}),
    "other symbol": lambda t, e: compact(t, {**e, "s": "ETHUSDT"}),
    "other event": lambda t, e: compact(t, {**e, "e": "kline"}),
    "bool as string": lambda t, e: compact(t, {k: ("true" if k == "m" else v) for k, v in e.items()}),
    "three-part level": lambda t, e: compact(t, {**e, "b": [["1", "2", "3"]]} if t == "depth" else e),
    "one-part level": lambda t, e: compact(t, {**e, "a": [["1"]]} if t == "depth" else e),
    "two frames on a line": lambda t, e: compact(t, e) + b"\n" + compact(t, e),
    "truncated": lambda t, e: compact(t, e)[:-3],
    "trailing space": lambda t, e: compact(t, e) + b" ",
    "non-ASCII symbol": lambda t, e: compact(t, {**e, "s": "BTCÜSDT"}),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), table=st.sampled_from(sorted(STREAM_TABLES)))
def test_canonical_frames_are_read_by_the_kernel_exactly_as_arrow_reads_them(data, table):
    events = data.draw(st.lists(event_of(table), min_size=1, max_size=12))
    frames = [compact(table, binance_order(table, event)) for event in events]
    assert assert_same_or_declined(table, frames) is not None, frames[:2]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), table=st.sampled_from(sorted(STREAM_TABLES)), mutation=st.sampled_from(sorted(MUTATIONS)))
def test_other_layouts_read_identically_or_are_declined(data, table, mutation):
    events = [binance_order(table, event) for event in data.draw(st.lists(event_of(table), min_size=1, max_size=6))]
    mutated = data.draw(st.integers(0, len(events) - 1))
    frames = [compact(table, event) for event in events]
    frames[mutated] = MUTATIONS[mutation](table, events[mutated])
    assert_same_or_declined(table, frames)


# The kernel reads eight bytes at a time (SWAR) where eight remain in the frame. These check those reads
# against plain Python on every byte mix that matters: digits, the bytes around '0' and '9', quotes,
# backslashes, control and non-ASCII bytes, with arbitrary bytes beyond the frame's end that must not count.
_BYTES = st.binary(max_size=40) | st.lists(st.sampled_from(b'0123456789./:"\\\x00\x1f -e\x7f\x80\xff'),
                                           max_size=40).map(bytes)


@njit
def _kernel_digits(buf, end, value):
    return framescan._digits(buf, 0, end, value)


@njit
def _kernel_string_end(buf, end):
    return framescan._string_end(buf, 0, end)


@settings(max_examples=400, deadline=None)
@given(frame=_BYTES, beyond=st.binary(max_size=9), value=st.integers(0, 10 ** 10))
def test_digit_runs_and_string_ends_read_eight_bytes_at_a_time_as_byte_by_byte(frame, beyond, value):
    buf = np.frombuffer(frame + beyond, np.uint8)
    end = len(frame)
    run = len(frame) - len(frame.lstrip(b"0123456789"))
    got_value, got_end = _kernel_digits(buf, end, value)
    assert got_end == run
    exact = value * 10 ** run + int(frame[:run] or b"0")
    assert got_value == (exact + 2 ** 63) % 2 ** 64 - 2 ** 63  # int64, wrapped as the kernel wraps (callers refuse that)
    special = next((k for k, c in enumerate(frame) if c in b'"\\' or c < 32 or c >= 128), None)
    expected = special if special is not None and frame[special] == ord('"') else -1
    assert _kernel_string_end(buf, end) == expected


def test_a_depth_diff_without_levels_is_one_null_row_and_asks_first_are_declined():
    empty = compact("depth", {"e": "depthUpdate", "E": 1, "s": SYMBOL, "U": 5, "u": 6, "b": [], "a": []})
    table = assert_same_or_declined("depth", [empty])
    assert table is not None and table.num_rows == 1 and table.column("price").null_count == 1
    asks_first = orjson.dumps({"stream": "btcusdt@depth", "data": {"e": "depthUpdate", "E": 1, "s": SYMBOL, "U": 5,
                                                                   "u": 6, "a": [["2", "1"]], "b": [["1", "1"]]}})
    assert scanned_table("depth", SYMBOL, columns_of([asks_first])) is None
    assert frames_table("depth", SYMBOL, columns_of([asks_first])).num_rows == 2  # Arrow's reader takes it


def test_a_declined_group_is_still_written_and_a_bad_frame_set_aside_alone():
    good = [compact("trades", {"e": "trade", "E": 1, "s": SYMBOL, "t": i, "p": "1.5", "q": "2", "T": 1, "m": True})
            for i in range(300)]
    bad = good[:150] + [good[150].replace(b'"p":"1.5"', b'"p":"1.5x"')] + good[151:]
    rejected = []
    table = FrameBuffers().build("trades", SYMBOL, columns_of(bad), rejected)
    assert table.num_rows == 299
    assert [r.seq for r in rejected] == [10 + 150]


# ---- the ids of depth diffs on arrival (`framescan.depth_ids`; the narrow decode is the reference) --------


def kernel_ids(frames: list[bytes], symbol: str = SYMBOL) -> list[tuple | None]:
    """What `depth_ids` reads of each frame (routed to `symbol`'s depth): (E, T, U, u, pu) or None."""
    rows = columns_of(frames)
    n = len(frames)
    ids, present = np.zeros((n, 5), np.int64), np.zeros((n, 5), np.bool_)
    name = np.frombuffer(symbol.encode(), np.uint8)
    read = framescan.depth_ids(rows.buf, rows.starts, rows.ends, np.arange(n), np.zeros(n, np.int64), name,
                               np.array([0]), np.array([len(name)]), ids, present)
    return [tuple(int(v) if p else None for v, p in zip(ids[j], present[j])) if read[j] else None
            for j in range(n)]


def narrow_ids(frame: bytes, symbol: str = SYMBOL) -> tuple | None:
    message = decode_frame(frame)
    if type(message) is not DepthUpdate or message.symbol != symbol:
        return None
    return (message.event_ts, message.transact_ts, message.first_update_id, message.final_update_id,
            message.prev_final_update_id)


def assert_ids_as_narrow_decode_or_declined(frames: list[bytes]) -> list[tuple | None]:
    got = kernel_ids(frames)
    for frame, ids in zip(frames, got):
        if ids is not None:
            assert ids == narrow_ids(frame), frame
    return got


@pytest.mark.skipif(not CAPTURES, reason="../shared/realdata is absent")
@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_the_ids_of_every_real_depth_diff_are_read_as_the_narrow_decode_reads_them(path):
    by_symbol: dict[str, list[bytes]] = {}
    for record in iter_capture(path):
        message = decode_frame(record.payload) if record.kind == "ws" else None
        if type(message) is DepthUpdate:
            by_symbol.setdefault(message.symbol, []).append(record.payload)
    assert by_symbol
    for symbol, frames in by_symbol.items():
        got = kernel_ids(frames, symbol)
        assert got == [narrow_ids(frame, symbol) for frame in frames], path.name


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event_of("depth"), min_size=1, max_size=12))
def test_the_ids_of_canonical_depth_diffs_are_read(events):
    frames = [compact("depth", binance_order("depth", event)) for event in events]
    assert None not in assert_ids_as_narrow_decode_or_declined(frames)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), mutation=st.sampled_from(sorted(MUTATIONS)))
def test_the_ids_of_other_layouts_are_read_identically_or_declined(data, mutation):
    events = [binance_order("depth", event) for event in data.draw(st.lists(event_of("depth"), min_size=1, max_size=6))]
    mutated = data.draw(st.integers(0, len(events) - 1))
    frames = [compact("depth", event) for event in events]
    frames[mutated] = MUTATIONS[mutation]("depth", events[mutated])
    assert_ids_as_narrow_decode_or_declined(frames)
