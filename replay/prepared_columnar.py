"""The fast builder of a prepared day: the same rows as the reference (`prepared_format.event_rows`), from
columns instead of one Python object per level.

Depth and snapshot tables are decoded by Arrow into numpy columns, batch by batch (bounded memory). Only
the sync decisions run per message in Python, on update ids, through the recorder's own `SyncEngine` (one
source of truth for the rules, as `LocalBook` uses it). The book is not kept level by level: the levels
of applied diffs are collected and folded (last write per price wins, zero removes) only when a full book
is written (a sync, a snapshot while valid) or the collected levels grow large. Rows are then exploded
with numpy and merged with the trades in arrival order (`recv_ts`, then `seq`), as `DayReplay` merges.

Anything this builder does not reproduce exactly (a stream not in arrival order, a price beyond int64)
raises `NeedsReference`; `PreparedDay.build` then builds with the reference instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recorder.rebuild import (
    DEPTH_COLUMNS,
    SNAPSHOT_COLUMNS,
    _grouped_batches,
    _message_bounds,
    files_in_seq_order,
)
from recorder.sync import Action, SyncEngine
from replay.prepared_format import CLEAR, EMPTY, END, INVALID, LEVEL, TIME, TRADE, VALID
from schemas import decimal_units64

MS = 1_000_000
BATCH_ROWS = 65_536  # source rows decoded at a time
FOLD_LEVELS = 1 << 20  # collected diff levels folded into the book beyond this (bounded memory)
TRADE_COLUMNS = ["recv_ts", "seq", "event_ts", "trade_ts", "price", "qty", "buyer_is_maker"]
_LEVELS_PIECE = -1  # a piece of output that is one diff's own levels
_FULL_PIECE = -2  # a piece that is CLEAR and the whole book


class NeedsReference(Exception):
    """The data has something this builder does not reproduce exactly: use the reference builder."""


def _int64_units(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """decimal128(38, 8) -> int64 numpy in 1e-8 units, nulls as 0."""
    values = decimal_units64(column)
    if values is None:
        raise NeedsReference("a price or quantity beyond int64")
    return values


def _ints(table: pa.Table, name: str) -> np.ndarray:
    """An integer column as int64 numpy, nulls as 0."""
    return pc.fill_null(table.column(name), 0).to_numpy().astype(np.int64, copy=False)


def _sides(table: pa.Table) -> np.ndarray:
    """+1 bid, −1 ask, 0 none (the placeholder row of an empty message)."""
    side = table.column("side")
    bid = pc.fill_null(pc.equal(side, "bid"), False).to_numpy(zero_copy_only=False)
    ask = pc.fill_null(pc.equal(side, "ask"), False).to_numpy(zero_copy_only=False)
    return bid.astype(np.int8) - ask.astype(np.int8)


def _check_arrival_order(recv: np.ndarray, seq: np.ndarray, last: tuple[int, int] | None, what: str) -> tuple:
    """Raise NeedsReference unless (recv, seq) keys are nondecreasing, also across blocks; the last key.
    (Merging sorted streams by sorting is what `heapq.merge` does only when the streams are sorted.)"""
    if not len(recv):
        return last
    if last is not None and (int(recv[0]), int(seq[0])) < last:
        raise NeedsReference(f"{what} not in arrival order")
    d_recv = np.diff(recv)
    if (d_recv < 0).any() or ((d_recv == 0) & (np.diff(seq) < 0)).any():
        raise NeedsReference(f"{what} not in arrival order")
    return int(recv[-1]), int(seq[-1])


def _check_seq_order(seq: np.ndarray, last: int | None, what: str) -> int | None:
    """Raise NeedsReference unless messages come by increasing seq (depth and snapshots merge by seq)."""
    if not len(seq):
        return last
    if last is not None and seq[0] <= last or (np.diff(seq) <= 0).any():
        raise NeedsReference(f"{what} not in seq order")
    return int(seq[-1])


class _Levels:
    """One batch's level rows, bids before asks within each message, placeholders dropped."""

    def __init__(self, side: np.ndarray, price: np.ndarray, qty: np.ndarray, message: np.ndarray, messages: int):
        keep = np.flatnonzero(side != 0)
        keep = keep[np.lexsort((keep, side[keep] != 1, message[keep]))]
        self.side, self.price, self.qty = side[keep], price[keep], qty[keep]
        bounds = np.searchsorted(message[keep], np.arange(messages + 1))
        self.start, self.end = bounds[:-1], bounds[1:]

    def message(self, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = self.start[m], self.end[m]
        return self.side[lo:hi], self.price[lo:hi], self.qty[lo:hi]


_NO_LEVELS = (np.zeros(0, np.int8), np.zeros(0, np.int64), np.zeros(0, np.int64))


def _fold(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levels applied in order -> the book: last quantity per (side, price), zeros removed; bids then asks,
    each by ascending price (as `OrderBook`'s sorted maps iterate)."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return _NO_LEVELS
    side, price, qty = (np.concatenate([p[i] for p in parts]) for i in range(3))
    order = np.lexsort((np.arange(len(side)), price, -side))  # bids (side +1) first, then by price, then time
    s, p = side[order], price[order]
    last = order[np.r_[(s[1:] != s[:-1]) | (p[1:] != p[:-1]), True]]
    last = last[qty[last] != 0]
    return side[last], price[last], qty[last]


def _snapshot_book(levels: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A snapshot loaded as `OrderBook.load_levels` does: zero quantities skipped, then the last per price."""
    side, price, qty = levels
    nonzero = qty != 0
    return _fold([(side[nonzero], price[nonzero], qty[nonzero])])


class _Book:
    """The synced book as its last folded state plus the levels applied since."""

    def __init__(self) -> None:
        self.base = _NO_LEVELS
        self.applied: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.applied_rows = 0

    def clear(self) -> None:
        self.base, self.applied, self.applied_rows = _NO_LEVELS, [], 0

    def load(self, snapshot, diffs: list) -> None:  # type: ignore[no-untyped-def]
        self.clear()
        self.base = _snapshot_book(snapshot)
        for diff in diffs:
            self.apply(diff)

    def apply(self, levels: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self.applied.append(levels)
        self.applied_rows += len(levels[0])
        if self.applied_rows > FOLD_LEVELS:
            self.full()

    def full(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.applied:
            self.base = _fold([self.base, *self.applied])
            self.applied, self.applied_rows = [], 0
        return self.base


class _Snapshot:
    """One snapshot message, decoded (few and large: handled one at a time)."""

    __slots__ = ("last_id", "levels", "recv", "seq")

    def __init__(self, recv: int, seq: int, last_id: int, levels) -> None:  # type: ignore[no-untyped-def]
        self.recv, self.seq, self.last_id, self.levels = recv, seq, last_id, levels


def _snapshots(paths: list[Path]) -> Iterator[_Snapshot]:
    last = None
    for table in _grouped_batches(paths, SNAPSHOT_COLUMNS, BATCH_ROWS):
        seq = table.column("seq").to_numpy()
        recv = table.column("recv_ts").to_numpy()
        starts, _ = _message_bounds(seq)
        last = _check_seq_order(seq[starts], last, "snapshots")
        side, price, qty = _sides(table), _int64_units(table.column("price")), _int64_units(table.column("qty"))
        last_id = table.column("last_update_id").to_numpy()
        for lo, hi in zip(starts.tolist(), [*starts[1:].tolist(), len(seq)]):
            keep = lo + np.flatnonzero(side[lo:hi] != 0)
            keep = keep[np.argsort(side[keep] != 1, kind="stable")]
            yield _Snapshot(int(recv[lo]), int(seq[lo]), int(last_id[lo]), (side[keep], price[keep], qty[keep]))


class _Pieces:
    """Output of a batch of book messages as pieces (a row kind, or one diff's levels, or a full book),
    exploded into rows at the end with numpy."""

    def __init__(self) -> None:
        self.code: list[int] = []
        self.recv: list[int] = []
        self.seq: list[int] = []
        self.exch: list[int] = []
        self.ref: list[int] = []  # LEVELS: message in the batch; FULL: index into `books`
        self.books: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, code: int, recv: int, seq: int, exch: int, ref: int = 0) -> None:
        self.code.append(code)
        self.recv.append(recv)
        self.seq.append(seq)
        self.exch.append(exch)
        self.ref.append(ref)

    def full(self, recv: int, seq: int, exch: int, book) -> None:  # type: ignore[no-untyped-def]
        self.add(_FULL_PIECE, recv, seq, exch, len(self.books))
        self.books.append(book)

    def rows(self, levels: _Levels | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(recv, seq, rows (n, 7)) of every piece, in order."""
        code = np.array(self.code, np.int64)
        ref = np.array(self.ref, np.int64)
        sizes = np.ones(len(code), np.int64)
        is_levels, is_full = code == _LEVELS_PIECE, code == _FULL_PIECE
        if levels is not None and is_levels.any():
            sizes[is_levels] = (levels.end - levels.start)[ref[is_levels]]
        if is_full.any():
            sizes[is_full] = 1 + np.array([len(self.books[i][0]) for i in ref[is_full].tolist()])
        piece = np.repeat(np.arange(len(code)), sizes)
        first = np.cumsum(sizes) - sizes
        offset = np.arange(len(piece)) - first[piece]
        out = np.zeros((len(piece), 7), np.int64)
        kind = np.where(code >= 0, code, LEVEL)[piece]
        full_rows = is_full[piece]
        kind[full_rows & (offset == 0)] = CLEAR
        out[:, 0] = kind
        out[first + sizes - 1, 1] = END
        out[:, 2] = np.array(self.recv, np.int64)[piece]
        out[:, 3] = np.array(self.exch, np.int64)[piece]
        level_rows = is_levels[piece]
        if level_rows.any():
            source = levels.start[ref[piece[level_rows]]] + offset[level_rows]
            out[level_rows, 4] = levels.side[source]
            out[level_rows, 5] = levels.price[source]
            out[level_rows, 6] = levels.qty[source]
        book_rows = full_rows & (offset > 0)
        if book_rows.any():
            side, price, qty = (np.concatenate([self.books[i][k] for i in ref[is_full].tolist()]) for k in range(3))
            out[book_rows, 4], out[book_rows, 5], out[book_rows, 6] = side, price, qty
        return np.array(self.recv, np.int64)[piece], np.array(self.seq, np.int64)[piece], out


class _BookRows:
    """Depth diffs and snapshots merged by seq through the sync engine, as rows keyed by arrival."""

    def __init__(self, depth: list[Path], snapshots: list[Path], rule) -> None:  # type: ignore[no-untyped-def]
        self.depth = depth
        self.engine = SyncEngine(rule)
        self.book = _Book()
        self.valid = False
        self.snapshots = _snapshots(snapshots)
        self.next_snapshot = next(self.snapshots, None)

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        last = None
        for table in _grouped_batches(self.depth, DEPTH_COLUMNS, BATCH_ROWS):
            seq = table.column("seq").to_numpy()
            recv = table.column("recv_ts").to_numpy()
            starts, _ = _message_bounds(seq)
            last = _check_seq_order(seq[starts], last, "depth")
            message = np.cumsum(np.r_[False, seq[1:] != seq[:-1]])
            levels = _Levels(_sides(table), _int64_units(table.column("price")), _int64_units(table.column("qty")),
                             message, len(starts))
            event_ms = table.column("event_ts").to_numpy()[starts] // MS
            transact_ms = _ints(table, "transact_ts")[starts] // MS
            exch = np.where(transact_ms != 0, transact_ms, event_ms) * MS
            columns = [recv[starts], seq[starts], exch, _ints(table, "first_update_id")[starts],
                       _ints(table, "final_update_id")[starts],
                       pc.fill_null(table.column("prev_final_update_id"), -1).to_numpy()[starts]]
            null_prev = table.column("prev_final_update_id").is_null().to_numpy(zero_copy_only=False)[starts]
            yield self._messages(columns, null_prev.tolist(), levels)
        pieces = _Pieces()
        while self.next_snapshot is not None:
            self._snapshot(pieces)
        if pieces.code:
            yield pieces.rows(None)

    def _messages(self, columns: list[np.ndarray], null_prev: list[bool], levels: _Levels) -> tuple:
        pieces = _Pieces()
        engine, book = self.engine, self.book
        on_diff = engine.on_diff
        for m, (recv, seq, exch, first, final, prev) in enumerate(zip(*(c.tolist() for c in columns))):
            while self.next_snapshot is not None and self.next_snapshot.seq < seq:
                self._snapshot(pieces)
            action = on_diff(first, final, None if null_prev[m] else prev, (levels, m))
            if action is Action.APPLY:
                book.apply(levels.message(m))
            elif action is Action.SYNCED:
                snapshot, diffs = engine.take_sync()
                book.load(snapshot, [items.message(i) for items, i in diffs])
            elif action is Action.RESYNC:
                book.clear()
            became_valid = self._validity(pieces, recv, seq)
            if not self.valid:
                pieces.add(TIME, recv, seq, exch)
            elif became_valid:
                pieces.full(recv, seq, exch, book.full())
            elif engine.local_id == final and levels.end[m] > levels.start[m]:
                pieces.add(_LEVELS_PIECE, recv, seq, exch, m)
            else:
                pieces.add(EMPTY, recv, seq, exch)
        return pieces.rows(levels)

    def _snapshot(self, pieces: _Pieces) -> None:
        message = self.next_snapshot
        self.next_snapshot = next(self.snapshots, None)
        if self.engine.on_snapshot(message.last_id, message.levels) is Action.SYNCED:
            snapshot, diffs = self.engine.take_sync()
            self.book.load(snapshot, [items.message(i) for items, i in diffs])
        self._validity(pieces, message.recv, message.seq)
        if self.valid:
            pieces.full(message.recv, message.seq, -1, self.book.full())
        else:
            pieces.add(TIME, message.recv, message.seq, -1)

    def _validity(self, pieces: _Pieces, recv: int, seq: int) -> bool:
        """Add the VALID/INVALID row if the last message changed validity; True if it became valid."""
        now_valid = self.engine.synced
        if now_valid == self.valid:
            return False
        self.valid = now_valid
        pieces.add(VALID if now_valid else INVALID, recv, seq, -1)
        return now_valid


def _trade_blocks(paths: list[Path]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    for path in files_in_seq_order(paths):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=TRADE_COLUMNS):
            table = pa.Table.from_batches([batch])
            recv, seq = table.column("recv_ts").to_numpy(), table.column("seq").to_numpy()
            trade_ts = table.column("trade_ts").to_numpy()
            out = np.empty((len(recv), 7), np.int64)
            out[:, 0], out[:, 1], out[:, 2] = TRADE, END, recv
            out[:, 3] = np.where(trade_ts != 0, trade_ts, table.column("event_ts").to_numpy())
            out[:, 4] = np.where(table.column("buyer_is_maker").to_numpy(zero_copy_only=False), -1, 1)
            out[:, 5], out[:, 6] = _int64_units(table.column("price")), _int64_units(table.column("qty"))
            yield recv, seq, out


def _upto(recv: np.ndarray, seq: np.ndarray, key: tuple[int, int]) -> int:
    """How many leading rows have (recv, seq) <= key (rows sorted by that pair)."""
    lo, hi = np.searchsorted(recv, key[0], "left"), np.searchsorted(recv, key[0], "right")
    return int(lo + np.searchsorted(seq[lo:hi], key[1], "right"))


def _merge(book: Iterator, trades: Iterator) -> Iterator[np.ndarray]:
    """Two streams of (recv, seq, rows) blocks sorted by (recv, seq) -> rows in that order, book rows first
    on equal keys (as `heapq.merge` puts the earlier stream first)."""
    streams: list[Iterator | None] = [book, trades]
    names, last = ("book messages", "trades"), [None, None]
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 7), np.int64))
    buffers = [empty, empty]
    while True:
        for i in (0, 1):
            while streams[i] is not None and not len(buffers[i][0]):
                block = next(streams[i], None)  # type: ignore[arg-type]
                if block is None:
                    streams[i] = None
                else:
                    last[i] = _check_arrival_order(block[0], block[1], last[i], names[i])
                    buffers[i] = block
        if streams[0] is None and streams[1] is None:
            return
        if streams[0] is None or streams[1] is None:  # one has ended: the other's rows follow as they are
            i = 0 if streams[1] is None else 1
            yield buffers[i][2]
            buffers[i] = empty
            continue
        cut = min((int(recv[-1]), int(seq[-1])) for recv, seq, _ in buffers)
        taken = []
        for i in (0, 1):
            recv, seq, rows = buffers[i]
            n = _upto(recv, seq, cut)
            taken.append((recv[:n], seq[:n], rows[:n]))
            buffers[i] = (recv[n:], seq[n:], rows[n:])
        recv, seq, rows = (np.concatenate([t[k] for t in taken]) for k in range(3))
        yield rows[np.lexsort((seq, recv))]


def columnar_blocks(depth: list[Path], snapshots: list[Path], trades: list[Path], rule) -> Iterator[np.ndarray]:  # type: ignore[no-untyped-def]
    """(n, 7) int64 row blocks (price and qty in 1e-8 units) equal to the reference's `event_rows`."""
    book = _BookRows(depth, snapshots, rule)
    for block in _merge(book.blocks(), _trade_blocks(trades)):
        if len(block):
            yield block
