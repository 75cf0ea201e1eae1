"""Row buffers that keep stream frames as received and decode them column-wise at flush.

The hot path appends `(recv_ts, seq, frame bytes)` per depth diff, trade, aggTrade and bookTicker; at
flush the frames of one (table, symbol) are read at once by Arrow's NDJSON reader into columns, prices
and quantities kept as the exact strings Binance sent, then built by the same column builders as the
row path (`recorder.sink`): decimal128 cast from strings, levels exploded with Arrow. No float ever.

Anything the reader refuses (a level that is not two strings, a number too large for int64, duplicate
keys, a frame spanning lines) sends that group through the row path instead: each frame parsed by
`parse_frame` and built alone where it fails, so a bad frame is set aside as `Rejected` with its seq
and the rest of the segment is written, exactly as the row buffers do.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

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
_LEVELS = pa.list_(pa.list_(pa.string()))

# The fields each table takes from its frames (Binance field names), by the type Binance sends.
_FIELDS: dict[str, list[tuple[str, pa.DataType]]] = {
    "depth": [("E", _INT), ("T", _INT), ("U", _INT), ("u", _INT), ("pu", _INT), ("b", _LEVELS), ("a", _LEVELS)],
    "trades": [("E", _INT), ("T", _INT), ("t", _INT), ("p", _STR), ("q", _STR), ("m", pa.bool_()),
               ("M", pa.bool_()), ("X", _STR)],
    "agg_trades": [("E", _INT), ("T", _INT), ("a", _INT), ("p", _STR), ("q", _STR), ("f", _INT), ("l", _INT),
                   ("m", pa.bool_()), ("M", pa.bool_())],
    "book_ticker": [("u", _INT), ("E", _INT), ("T", _INT), ("b", _STR), ("B", _STR), ("a", _STR), ("A", _STR)],
}

# Columns in the order of the row path's builders (see recorder.sink), after recv_ts and seq.
_BUILDERS = {
    "depth": (depth_columns, ["E", "T", "U", "u", "pu", "b", "a"]),
    "trades": (trades_columns, ["E", "T", "t", "p", "q", "m", "M", "X"]),
    "agg_trades": (agg_trades_columns, ["E", "T", "a", "p", "q", "f", "l", "m", "M"]),
    "book_ticker": (book_ticker_columns, ["u", "E", "T", "b", "B", "a", "A"]),
}

_MESSAGE_TYPES = {"depth": DepthUpdate, "trades": Trade, "agg_trades": AggTrade, "book_ticker": BookTicker}


def _parse_options(table: str) -> pj.ParseOptions:
    fields = _FIELDS[table]
    schema = pa.schema([("stream", _STR), ("data", pa.struct(fields)), *fields])
    return pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")


_PARSE_OPTIONS = {table: _parse_options(table) for table in _FIELDS}


def _column(parsed: pa.Table, name: str) -> pa.Array:
    """The event field `name`: from `data` in a combined-stream envelope, else from the top level."""
    data = parsed.column("data")
    enveloped = pc.is_valid(data)
    return pc.if_else(enveloped, pc.struct_field(data, name), parsed.column(name)).combine_chunks()


def frames_table(table: str, rows: list[tuple]) -> pa.Table:
    """The table of `(recv_ts, seq, frame)` rows, decoded column-wise; raises if any frame does not read."""
    recv_ts, seq, frames = zip(*rows)
    text = b"\n".join(frames)
    if text.count(b"\n") != len(frames) - 1:
        raise ValueError("a frame spans lines")
    parsed = pj.read_json(io.BytesIO(text), read_options=pj.ReadOptions(block_size=_BLOCK),
                          parse_options=_PARSE_OPTIONS[table])
    if parsed.num_rows != len(frames):
        raise ValueError("frames and rows differ")
    if pc.any(pc.and_(pc.is_valid(parsed.column("data")), pc.is_null(parsed.column("stream")))).as_py():
        raise ValueError("an envelope without stream")  # parse_frame reads such a frame's top level
    build, names = _BUILDERS[table]
    return build(pa.array(recv_ts, _INT), pa.array(seq, _INT), *(_column(parsed, name) for name in names))


class FrameBuffers(TableBuffers):
    """`TableBuffers` whose stream tables hold raw frames, decoded at flush (snapshots, events and
    instruments are rare and stay rows)."""

    def depth(self, seq: int, recv_ts: int, m: DepthUpdate, raw: bytes) -> None:
        self.rows[("depth", m.symbol)].append((recv_ts, seq, raw))
        self.count += 1

    def trade(self, seq: int, recv_ts: int, m: Trade, raw: bytes) -> None:
        self.rows[("trades", m.symbol)].append((recv_ts, seq, raw))
        self.count += 1

    def agg_trade(self, seq: int, recv_ts: int, m: AggTrade, raw: bytes) -> None:
        self.rows[("agg_trades", m.symbol)].append((recv_ts, seq, raw))
        self.count += 1

    def book_ticker(self, seq: int, recv_ts: int, m: BookTicker, raw: bytes) -> None:
        self.rows[("book_ticker", m.symbol)].append((recv_ts, seq, raw))
        self.count += 1

    def build(self, table: str, symbol: str | None, rows: list[tuple], rejected: list[Rejected]) -> pa.Table | None:
        if table not in _FIELDS:
            return build_isolated(table, symbol, rows, rejected)
        try:
            return frames_table(table, rows)
        except (pa.ArrowException, TypeError, ValueError):
            return self._build_by_rows(table, symbol, rows, rejected)

    def _build_by_rows(self, table: str, symbol: str | None, rows: list[tuple], rejected: list[Rejected]
                       ) -> pa.Table | None:
        """The row path for frames the column reader refused: each frame parsed in full, bad ones set aside."""
        wanted = _MESSAGE_TYPES[table]
        as_rows = TableBuffers()
        add = {"depth": as_rows.depth, "trades": as_rows.trade, "agg_trades": as_rows.agg_trade,
               "book_ticker": as_rows.book_ticker}[table]
        for recv_ts, seq, raw in rows:
            message = parse_frame(raw)
            if type(message) is wanted:
                add(seq, recv_ts, message, raw)
            else:
                reason = getattr(message, "reason", f"not a {table} frame")
                rejected.append(Rejected(table, symbol, seq, recv_ts, reason))
        row_list = next(iter(as_rows.rows.values()), [])
        return build_isolated(table, symbol, row_list, rejected) if row_list else None
