"""Row buffers that keep stream events as received frames and decode them column-wise at flush.

The hot path appends `(recv_ts, seq, frame bytes)` per depth diff, trade, aggTrade and bookTicker; at
flush the frames of one (table, symbol) are read at once by Arrow's NDJSON reader into columns, prices and
quantities kept as the exact strings Binance sent, then built by the same column builders as the row path
(`recorder.sink.depth_columns`, `trades_columns`, ...): decimal128 cast from strings, levels exploded with
Arrow. No float ever.

The reader is strict where `parse_frame` is: a field of another JSON type, a number too large for int64,
duplicate keys, a frame spanning lines, a missing required field, an event type or symbol other than the
group's all refuse the group, which then goes through the row path instead: each frame parsed by
`parse_frame` (trades and tickers by the narrow decode, which falls back to it) and built alone where it
fails, so a bad frame is set aside as `Rejected` with its seq and the rest of the segment is written,
exactly as the row buffers do.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from recorder import framescan
from recorder.narrow import decode_frame
from recorder.protocol import AggTrade, BookTicker, DepthUpdate, Trade, parse_frame
from recorder.sink import (
    Rejected,
    TableBuffers,
    agg_trades_columns,
    book_ticker_columns,
    build_isolated,
    depth_columns,
    depth_levels_table,
    sides_of,
    trades_columns,
)

_BLOCK = 1 << 20  # NDJSON bytes per reader block: blocks are parsed in parallel, rows stay in order
_INT = pa.int64()
_STR = pa.string()
_BOOL = pa.bool_()
_LEVELS = pa.list_(pa.list_(pa.string()))


@dataclass(frozen=True)
class StreamTable:
    """How the frames of one dataset table read as columns.

    `fields`: the Binance fields the table keeps, by the JSON type Binance sends, in the order of the
    table's column builder after recv_ts and seq; `required`: those `parse_frame` insists on; `event`: the
    `e` a frame must carry (None also accepted where Binance omits it: spot bookTicker)."""

    fields: tuple[tuple[str, pa.DataType], ...]
    required: tuple[str, ...]
    event: str
    event_optional: bool
    message: type
    build: Callable[..., pa.Table]
    add_row: Callable[..., None]
    text: tuple[str, ...] = ()  # string fields kept as text; the others are prices and quantities

    def parse_options(self, top_level: bool) -> pj.ParseOptions:
        """Fields in a combined-stream envelope's `data` and, if `top_level`, at the top (raw streams)."""
        event_fields = [("e", _STR), ("s", _STR), *self.fields]
        schema = [("stream", _STR), ("data", pa.struct(event_fields)), *(event_fields if top_level else [])]
        return pj.ParseOptions(explicit_schema=pa.schema(schema), unexpected_field_behavior="ignore")


STREAM_TABLES = {
    "depth": StreamTable(
        (("E", _INT), ("T", _INT), ("U", _INT), ("u", _INT), ("pu", _INT), ("b", _LEVELS), ("a", _LEVELS)),
        ("E", "U", "u", "b", "a"), "depthUpdate", False, DepthUpdate, depth_columns, TableBuffers.depth),
    "trades": StreamTable(
        (("E", _INT), ("T", _INT), ("t", _INT), ("p", _STR), ("q", _STR), ("m", _BOOL), ("M", _BOOL), ("X", _STR)),
        ("E", "T", "t", "p", "q", "m"), "trade", False, Trade, trades_columns, TableBuffers.trade, ("X",)),
    "agg_trades": StreamTable(
        (("E", _INT), ("T", _INT), ("a", _INT), ("p", _STR), ("q", _STR), ("f", _INT), ("l", _INT), ("m", _BOOL),
         ("M", _BOOL)),
        ("E", "T", "a", "p", "q", "f", "l", "m"), "aggTrade", False, AggTrade, agg_trades_columns,
        TableBuffers.agg_trade),
    "book_ticker": StreamTable(
        (("u", _INT), ("E", _INT), ("T", _INT), ("b", _STR), ("B", _STR), ("a", _STR), ("A", _STR)),
        ("u", "b", "B", "a", "A"), "bookTicker", True, BookTicker, book_ticker_columns, TableBuffers.book_ticker),
}
_PARSE_OPTIONS = {table: spec.parse_options(top_level=True) for table, spec in STREAM_TABLES.items()}
_ENVELOPE_OPTIONS = {table: spec.parse_options(top_level=False) for table, spec in STREAM_TABLES.items()}


@dataclass(frozen=True)
class ScanLayout:
    """A table's fields as `framescan.scan` takes them: e and s first, then the table's fields in order."""

    keys: np.ndarray  # (n, 2) uint8: the field names, second byte 0 for one-letter names
    kinds: np.ndarray  # framescan value kind per field
    required: np.ndarray  # bool per field (e and s are checked against the group's event and symbol)
    event: np.ndarray  # uint8 bytes of the event type
    levels: bool

    @classmethod
    def of(cls, spec: StreamTable) -> ScanLayout:
        kinds = [framescan.STR, framescan.STR]
        for name, type_ in spec.fields:
            if type_ == _LEVELS:
                kinds.append(framescan.LEVELS)
            elif type_ == _INT:
                kinds.append(framescan.INT)
            elif type_ == _BOOL:
                kinds.append(framescan.BOOL)
            else:
                kinds.append(framescan.STR if name in spec.text else framescan.DEC)
        names = ["e", "s", *(name for name, _ in spec.fields)]
        keys = np.zeros((len(names), 2), np.uint8)
        for k, name in enumerate(names):
            keys[k, :len(name)] = list(name.encode())
        return cls(keys, np.array(kinds, np.int64), np.array([name in spec.required for name in names]),
                   np.frombuffer(spec.event.encode(), np.uint8), framescan.LEVELS in kinds)


_SCAN_LAYOUTS = {table: ScanLayout.of(spec) for table, spec in STREAM_TABLES.items()}


def scanned_table(table: str, symbol: str, rows: FrameArrays) -> pa.Table | None:
    """The `table` rows of one symbol's frames decoded by the compiled kernel (`recorder.framescan`), or
    None if any frame is not in the compact layout it reads (then `frames_table` reads them)."""
    spec, layout = STREAM_TABLES[table], _SCAN_LAYOUTS[table]
    buf, n = rows.buf, len(rows)
    values = np.zeros((len(layout.kinds), n), np.int64)
    present = np.zeros((len(layout.kinds), n), np.bool_)
    capacity = int((rows.ends - rows.starts).sum()) // 9 + n if layout.levels else 0  # a level: >= 10 bytes
    lv_message, lv_side = np.empty(capacity, np.int64), np.empty(capacity, np.int8)
    lv_price, lv_qty = np.empty(capacity, np.int64), np.empty(capacity, np.int64)
    bad, n_levels = framescan.scan(buf, rows.starts, rows.ends, layout.keys, layout.kinds, layout.required,
                                   layout.event, spec.event_optional, np.frombuffer(symbol.encode(), np.uint8),
                                   values, present, lv_message, lv_side, lv_price, lv_qty)
    if bad != framescan.OK:
        return None
    columns = [_scanned_column(kind, values[k], present[k], buf)
               for k, kind in enumerate(layout.kinds) if k > framescan.SYMBOL_SLOT and kind != framescan.LEVELS]
    recv_ts, seq = pa.array(rows.recv_ts, _INT), pa.array(rows.seq, _INT)
    if not layout.levels:
        return spec.build(recv_ts, seq, *columns)
    side = lv_side[:n_levels]
    no_level = side == 2
    return depth_levels_table(lv_message[:n_levels], sides_of(side),
                              pa.array(lv_price[:n_levels], _INT, mask=no_level),
                              pa.array(lv_qty[:n_levels], _INT, mask=no_level), recv_ts, seq, *columns)


EXAMPLE_FRAMES = {  # one compact frame per table: what the kernels are compiled on before a recording
    "depth": b'{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":1,"u":1,"b":[["1","1"]],"a":[]}}',
    "trades": b'{"stream":"x@trade","data":{"e":"trade","E":1,"s":"X","t":1,"p":"1","q":"1","T":1,"m":true,"X":"x"}}',
    "agg_trades": b'{"stream":"x@aggTrade","data":{"e":"aggTrade","E":1,"s":"X","a":1,"p":"1","q":"1","f":1,"l":1,'
                  b'"T":1,"m":true}}',
    "book_ticker": b'{"stream":"x@bookTicker","data":{"u":1,"s":"X","b":"1","B":"1","a":"1","A":"1"}}',
}


def warm_decoders() -> None:
    """Compile (or load from numba's cache) the kernel as the flush calls it. A first compile takes seconds
    and holds the GIL: the recorder does it before it connects, not in its first flush."""
    for table, frame in EXAMPLE_FRAMES.items():
        rows = FrameColumns()
        rows.add(0, 0, frame)
        if scanned_table(table, "X", rows.arrays()) is None:
            raise RuntimeError(f"the frame decoder refuses its own {table} example")


def _scanned_column(kind: int, values: np.ndarray, present: np.ndarray, buf: np.ndarray) -> pa.Array:
    """One field's Arrow column from the kernel's values (decimals as int64 1e-8 units)."""
    mask = None if present.all() else ~present
    if kind == framescan.BOOL:
        return pa.array(values.astype(np.bool_), _BOOL, mask=mask)
    if kind != framescan.STR:
        return pa.array(values, _INT, mask=mask)
    offsets, data = framescan.gather_strings(buf, values, present)
    validity = None if mask is None else pa.array(present).buffers()[1]
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(data), validity,
                                       int(len(values) - present.sum()))


def _column(parsed: pa.Table, name: str) -> pa.Array:
    """The event field `name`: from `data` in a combined-stream envelope, else from the top level."""
    data = parsed.column("data")
    enveloped = pc.is_valid(data)
    return pc.if_else(enveloped, pc.struct_field(data, name), parsed.column(name)).combine_chunks()


def _read(text: bytes, options: pj.ParseOptions, n: int) -> pa.Table:
    parsed = pj.read_json(io.BytesIO(text), read_options=pj.ReadOptions(block_size=_BLOCK), parse_options=options)
    if parsed.num_rows != n:
        raise ValueError("frames and rows differ")
    return parsed


def frames_table(table: str, symbol: str | None, rows: FrameArrays) -> pa.Table:
    """The `table` rows of one symbol's frames, decoded column-wise: by the compiled kernel when every
    frame is in its layout, else by Arrow's reader; raises (ValueError, TypeError or an ArrowException)
    if any frame does not read exactly as `parse_frame` reads it."""
    fast = scanned_table(table, symbol, rows)
    return fast if fast is not None else arrow_frames_table(table, symbol, rows)


def arrow_frames_table(table: str, symbol: str | None, rows: FrameArrays) -> pa.Table:
    """`frames_table` by Arrow's NDJSON reader: any JSON layout; the reference for the kernel."""
    spec = STREAM_TABLES[table]
    frames = rows.frames()
    text = b"\n".join(frames)  # a frame with a line break in it reads as more rows (or fails): `_read` refuses
    names = ("e", "s", *(name for name, _ in spec.fields))
    # combined-stream envelopes (all the recorder subscribes to) read faster without the top-level fields
    parsed = _read(text, _ENVELOPE_OPTIONS[table], len(frames))
    data = parsed.column("data")
    if not data.null_count and not parsed.column("stream").null_count:
        columns = {name: pc.struct_field(data, name).combine_chunks() for name in names}
    else:
        parsed = _read(text, _PARSE_OPTIONS[table], len(frames))
        if pc.any(pc.and_(pc.is_valid(parsed.column("data")), pc.is_null(parsed.column("stream")))).as_py():
            raise ValueError("an envelope without stream")  # parse_frame reads such a frame's top level
        columns = {name: _column(parsed, name) for name in names}
    event = columns["e"]
    wrong_event = pc.not_equal(event, pa.scalar(spec.event))
    if spec.event_optional:
        wrong_event = pc.fill_null(wrong_event, False)
    elif event.null_count:
        raise ValueError("a frame without event type")
    if pc.any(wrong_event).as_py():
        raise ValueError(f"a frame that is not a {spec.event}")
    if columns["s"].null_count or not pc.all(pc.equal(columns["s"], pa.scalar(symbol, _STR))).as_py():
        raise ValueError(f"a frame of another symbol than {symbol}")
    for name in spec.required:
        if columns[name].null_count:
            raise ValueError(f"a frame without {name}")
    return spec.build(pa.array(rows.recv_ts, _INT), pa.array(rows.seq, _INT),
                      *(columns[name] for name, _ in spec.fields))


class FrameColumns:
    """The frames of one (table, symbol) appended one by one: receive times, seqs, frame bytes."""

    __slots__ = ("frames", "recv_ts", "seq")

    def __init__(self) -> None:
        self.recv_ts: list[int] = []
        self.seq: list[int] = []
        self.frames: list[bytes] = []

    def __len__(self) -> int:
        return len(self.frames)

    def add(self, recv_ts: int, seq: int, raw: bytes) -> None:
        self.recv_ts.append(recv_ts)
        self.seq.append(seq)
        self.frames.append(raw)

    def arrays(self) -> FrameArrays:
        lengths = np.fromiter(map(len, self.frames), np.int64, len(self.frames))
        ends = np.cumsum(lengths)
        return FrameArrays(np.frombuffer(b"".join(self.frames), np.uint8), ends - lengths, ends,
                           np.array(self.recv_ts, np.int64), np.array(self.seq, np.int64))


@dataclass(frozen=True)
class FrameArrays:
    """The frames of one (table, symbol) as the flush reads them: frame i is buf[starts[i]:ends[i]]."""

    buf: np.ndarray  # uint8, shared by the (table, symbol)s of a segment
    starts: np.ndarray  # int64
    ends: np.ndarray
    recv_ts: np.ndarray
    seq: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def frames(self) -> list[bytes]:
        buf = self.buf
        return [buf[start:end].tobytes() for start, end in zip(self.starts.tolist(), self.ends.tolist())]

    def merged(self, other: FrameArrays) -> FrameArrays:
        """Both sets of frames in seq order (one buffer)."""
        offset = len(self.buf)
        order = np.argsort(np.concatenate([self.seq, other.seq]), kind="stable")
        buf = np.concatenate([self.buf, other.buf])
        buf.setflags(write=False)  # as every other buffer of frames: the kernels are compiled for that type
        return FrameArrays(buf,
                           np.concatenate([self.starts, other.starts + offset])[order],
                           np.concatenate([self.ends, other.ends + offset])[order],
                           np.concatenate([self.recv_ts, other.recv_ts])[order],
                           np.concatenate([self.seq, other.seq])[order])


class FrameBatch(NamedTuple):
    """Frames handed over together (`Pipeline.frames`), kept as received: frame i is
    buf[starts[i]:ends[i]], with its receive time, seq and route (an index into `routes`, or negative for
    a frame buffered by its message instead, through `FrameBuffers.depth` and the like)."""

    buf: bytes
    starts: np.ndarray
    ends: np.ndarray
    recv_ts: np.ndarray
    seq: np.ndarray
    route: np.ndarray
    routes: list[tuple[str, str]]  # route index -> (table, symbol); grows, never changes


class FrameBuffers(TableBuffers):
    """`TableBuffers` whose stream-event rows are the raw frames (`FrameColumns`), decoded at flush.

    Building a table costs about 0.3 ms whichever path reads the frames; on top the kernel costs almost
    nothing per frame, the row path about 1.5 µs per trade or ticker and 20 µs per depth diff, Arrow's
    reader 0.5 ms per call (measured 2026-12-02: 30 trades 298 µs by the kernel, 272 µs by rows; 200
    trades 347 and 605 µs): a (table, symbol) with fewer frames in a segment than `column_min_frames`
    (the long tail of a whole-market recording) takes the row path, which writes the same rows.
    """

    column_min_frames = 32

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[FrameBatch] = []
        self.singles: dict[tuple[str, str], FrameColumns] = {}  # frames added one by one

    def add_batch(self, batch: FrameBatch, routed: int) -> None:
        """A batch whose `routed` frames with a route are rows of this buffer (the others were added alone)."""
        self.batches.append(batch)
        self.count += routed

    def write(self, root, exchange, date, file_stem):
        self.gather()
        return super().write(root, exchange, date, file_stem)

    def gather(self) -> None:
        """`rows` of every (table, symbol) as `FrameArrays`: the batches' frames split by route, merged in seq
        order with those added one by one and with what an earlier `gather` put there."""
        groups = {key: columns.arrays() for key, columns in self.singles.items()}
        self.singles = {}
        if self.batches:
            batches, self.batches = self.batches, []
            offsets = np.cumsum([0] + [len(b.buf) for b in batches[:-1]])
            buf = np.frombuffer(b"".join(b.buf for b in batches), np.uint8)
            route = np.concatenate([b.route for b in batches])
            routed = np.flatnonzero(route >= 0)
            names = batches[-1].routes
            narrow = np.uint16 if len(names) <= 1 << 16 else np.int32  # numpy radix-sorts 16-bit keys: 3x faster
            order = routed[np.argsort(route[routed].astype(narrow), kind="stable")]
            starts = np.concatenate([b.starts + offset for b, offset in zip(batches, offsets)])[order]
            ends = np.concatenate([b.ends + offset for b, offset in zip(batches, offsets)])[order]
            recv_ts = np.concatenate([b.recv_ts for b in batches])[order]
            seq = np.concatenate([b.seq for b in batches])[order]
            sorted_routes = route[order]
            bounds = [0, *(np.flatnonzero(np.diff(sorted_routes)) + 1).tolist(), len(order)]
            for lo, hi in itertools.pairwise(bounds):
                if hi > lo:
                    key = names[sorted_routes[lo]]
                    arrays = FrameArrays(buf, starts[lo:hi], ends[lo:hi], recv_ts[lo:hi], seq[lo:hi])
                    groups[key] = groups[key].merged(arrays) if key in groups else arrays
        for key, arrays in groups.items():
            self.rows[key] = self.rows[key].merged(arrays) if key in self.rows else arrays

    def frame_columns(self, table: str, symbol: str) -> FrameColumns:
        columns = self.singles.get((table, symbol))
        if columns is None:
            columns = self.singles[(table, symbol)] = FrameColumns()
        return columns

    def depth(self, seq: int, recv_ts: int, m: DepthUpdate, raw: bytes) -> None:
        self.frame_columns("depth", m.symbol).add(recv_ts, seq, raw)
        self.count += 1

    def trade(self, seq: int, recv_ts: int, m: Trade, raw: bytes) -> None:
        self.frame_columns("trades", m.symbol).add(recv_ts, seq, raw)
        self.count += 1

    def agg_trade(self, seq: int, recv_ts: int, m: AggTrade, raw: bytes) -> None:
        self.frame_columns("agg_trades", m.symbol).add(recv_ts, seq, raw)
        self.count += 1

    def book_ticker(self, seq: int, recv_ts: int, m: BookTicker, raw: bytes) -> None:
        self.frame_columns("book_ticker", m.symbol).add(recv_ts, seq, raw)
        self.count += 1

    def build(self, table: str, symbol: str | None, rows, rejected: list[Rejected]) -> pa.Table | None:
        if table not in STREAM_TABLES:
            return build_isolated(table, symbol, rows, rejected)
        if len(rows) < self.column_min_frames:
            return self._build_by_rows(table, symbol, rows, rejected)
        try:
            return frames_table(table, symbol, rows)
        except (pa.ArrowException, TypeError, ValueError):
            return self._build_by_rows(table, symbol, rows, rejected)

    def work(self, rows) -> int:
        return int((rows.ends - rows.starts).sum()) if isinstance(rows, FrameArrays) else super().work(rows)

    def _build_by_rows(self, table: str, symbol: str | None, rows: FrameArrays,
                       rejected: list[Rejected]) -> pa.Table | None:
        """The row path for frames the column reader refused: each frame parsed in full, bad ones set aside."""
        spec = STREAM_TABLES[table]
        as_rows = TableBuffers()
        decode = parse_frame if table == "depth" else decode_frame  # the narrow decode has all but levels
        for recv_ts, seq, raw in zip(rows.recv_ts.tolist(), rows.seq.tolist(), rows.frames()):
            message = decode(raw)
            if type(message) is not spec.message:
                reason = getattr(message, "reason", f"not a {spec.event}")
            elif message.symbol != symbol:
                reason = f"a frame of {message.symbol} among {symbol}'s"
            else:
                spec.add_row(as_rows, seq, recv_ts, message, raw)
                continue
            rejected.append(Rejected(table, symbol, seq, recv_ts, reason))
        row_list = next(iter(as_rows.rows.values()), [])
        return build_isolated(table, symbol, row_list, rejected) if row_list else None
