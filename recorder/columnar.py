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
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from recorder.narrow import decode_frame
from recorder.protocol import AggTrade, BookTicker, DepthUpdate, Trade, parse_frame
from recorder.sink import (
    Rejected,
    TableBuffers,
    agg_trades_columns,
    book_ticker_columns,
    build_isolated,
    depth_columns,
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
        ("E", "T", "t", "p", "q", "m"), "trade", False, Trade, trades_columns, TableBuffers.trade),
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


def frames_table(table: str, symbol: str | None, rows: FrameColumns) -> pa.Table:
    """The `table` rows of one symbol's frames, decoded column-wise; raises (ValueError, TypeError or an
    ArrowException) if any frame does not read exactly as `parse_frame` reads it."""
    spec = STREAM_TABLES[table]
    frames = rows.frames
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
    """The frames of one (table, symbol) as three lists: receive times, seqs, frame bytes."""

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


class FrameBuffers(TableBuffers):
    """`TableBuffers` whose stream-event rows are the raw frames (`FrameColumns`), decoded at flush.

    Arrow's reader costs about 1.5 ms per call whatever the size, the row path about 7 µs per frame
    (measured 2026-12-02): a (table, symbol) with fewer frames in a segment than `column_min_frames` (the
    long tail of a whole-market recording) takes the row path, which writes the same rows.
    """

    column_min_frames = 200

    def frame_columns(self, table: str, symbol: str) -> FrameColumns:
        columns = self.rows.get((table, symbol))
        if columns is None:
            columns = self.rows[(table, symbol)] = FrameColumns()
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

    def build(self, table: str, symbol: str | None, rows: list[tuple], rejected: list[Rejected]) -> pa.Table | None:
        if table not in STREAM_TABLES:
            return build_isolated(table, symbol, rows, rejected)
        if len(rows) < self.column_min_frames:
            return self._build_by_rows(table, symbol, rows, rejected)
        try:
            return frames_table(table, symbol, rows)
        except (pa.ArrowException, TypeError, ValueError):
            return self._build_by_rows(table, symbol, rows, rejected)

    def _build_by_rows(self, table: str, symbol: str | None, rows: FrameColumns,
                       rejected: list[Rejected]) -> pa.Table | None:
        """The row path for frames the column reader refused: each frame parsed in full, bad ones set aside."""
        spec = STREAM_TABLES[table]
        as_rows = TableBuffers()
        decode = parse_frame if table == "depth" else decode_frame  # the narrow decode has all but levels
        for recv_ts, seq, raw in zip(rows.recv_ts, rows.seq, rows.frames):
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
