"""Read a recorded day's book back: stored diffs and snapshots as the messages they came from, and the
rebuild of a symbol's book through `LocalBook` (`recorder.daywalk.walk`, the one walk replay, validation,
the exports and the prepared day share).

Messages come back with levels as (price, qty) ints in 1e-8 units (`LocalBook(..., units=True)`).

Streams row groups (bounded memory whatever the day's size) and regroups the per-level rows into the
messages they came from, so the very sync engine that ran live decides again.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recorder.daywalk import DEPTH, SNAPSHOT, BookMessage, walk
from recorder.markets import Market
from recorder.numbers import decimals_needed
from recorder.protocol import DepthSnapshot, DepthUpdate
from recorder.sync import Action, LocalBook
from schemas import DatasetError, decimal_units, list_files

MS = 1_000_000


def files_in_seq_order(paths: list[Path]) -> list[Path]:
    """Order a partition's files by their smallest seq (segments, compacted day files, recovered ones)."""

    def min_seq(path: Path) -> int:
        meta = pq.read_metadata(path)
        index = meta.schema.names.index("seq")
        mins = [meta.row_group(i).column(index).statistics.min for i in range(meta.num_row_groups)
                if meta.row_group(i).column(index).statistics is not None]
        return min(mins) if mins else 0

    return sorted(paths, key=min_seq)


def _grouped_batches(paths: list[Path], columns: list[str], batch_size: int) -> Iterator[pa.Table]:
    """Tables whose rows never split a message (rows sharing a seq), streamed from the files in order."""
    tail: pa.Table | None = None
    for path in files_in_seq_order(paths):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
            table = pa.Table.from_batches([batch])
            if tail is not None:
                table = pa.concat_tables([tail, table])
            seq = table.column("seq").to_numpy()
            last_start = int(_message_bounds(seq)[0][-1])
            tail = table.slice(last_start)
            if last_start:
                yield table.slice(0, last_start)
    if tail is not None and tail.num_rows:
        yield tail


def _message_bounds(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]])
    return starts, np.r_[starts[1:], len(seq)]


def _levels(side: list, price: list, qty: list, start: int, end: int) -> tuple[list, list]:
    bids, asks = [], []
    for i in range(start, end):
        s = side[i]
        if s == "bid":
            bids.append((price[i], qty[i]))
        elif s == "ask":
            asks.append((price[i], qty[i]))
    return bids, asks


def _ms(value: int | None) -> int | None:
    return None if value is None else value // MS


DEPTH_COLUMNS = ["recv_ts", "seq", "event_ts", "transact_ts", "first_update_id", "final_update_id",
                 "prev_final_update_id", "side", "price", "qty"]
SNAPSHOT_COLUMNS = ["recv_ts", "seq", "last_update_id", "event_ts", "transact_ts", "side", "price", "qty",
                    "requested_limit"]


def _message_starts(table: pa.Table, from_ns: int | None) -> tuple[list[int], list[int], list[int], list[int]]:
    """(seq, recv_ts, starts, ends) of the messages in `table`, those received before `from_ns` left out."""
    seq = table.column("seq").to_numpy()
    starts, ends = _message_bounds(seq)
    recv = table.column("recv_ts").to_numpy()
    if from_ns is not None:
        keep = recv[starts] >= from_ns
        starts, ends = starts[keep], ends[keep]
    return seq[starts].tolist(), recv[starts].tolist(), starts.tolist(), ends.tolist()


def iter_depth(paths: list[Path], symbol: str, batch_size: int = 65_536, from_ns: int | None = None
               ) -> Iterator[BookMessage]:
    """The symbol's diffs in file (seq) order as walk items `(recv_ts, seq, DEPTH, symbol, DepthUpdate)`."""
    for table in _grouped_batches(paths, DEPTH_COLUMNS, batch_size):
        seqs, recvs, starts, ends = _message_starts(table, from_ns)
        ets, tts, first, final, prev = (table.column(c).to_pylist() for c in (
            "event_ts", "transact_ts", "first_update_id", "final_update_id", "prev_final_update_id"))
        side = table.column("side").to_pylist()
        price, qty = decimal_units(table.column("price")), decimal_units(table.column("qty"))
        for seq, recv, start, end in zip(seqs, recvs, starts, ends):
            bids, asks = _levels(side, price, qty, start, end)
            yield recv, seq, DEPTH, symbol, DepthUpdate(
                symbol, ets[start] // MS, first[start], final[start], bids, asks, _ms(tts[start]), prev[start])


def iter_snapshots(paths: list[Path], symbol: str, batch_size: int = 65_536, from_ns: int | None = None
                   ) -> Iterator[BookMessage]:
    """The symbol's snapshots in file (seq) order as walk items `(recv_ts, seq, SNAPSHOT, symbol, DepthSnapshot)`."""
    for table in _grouped_batches(paths, SNAPSHOT_COLUMNS, batch_size):
        seqs, recvs, starts, ends = _message_starts(table, from_ns)
        last_id, ets, tts = (table.column(c).to_pylist() for c in ("last_update_id", "event_ts", "transact_ts"))
        side = table.column("side").to_pylist()
        price, qty = decimal_units(table.column("price")), decimal_units(table.column("qty"))
        for seq, recv, start, end in zip(seqs, recvs, starts, ends):
            bids, asks = _levels(side, price, qty, start, end)
            yield recv, seq, SNAPSHOT, symbol, DepthSnapshot(
                last_id[start], bids, asks, symbol, _ms(ets[start]), _ms(tts[start]))


def book_streams(depth: list[Path], snapshots: list[Path], symbol: str, batch_size: int = 65_536,
                 from_ns: int | None = None) -> list[Iterator[BookMessage]]:
    """The symbol's diffs and snapshots (received from `from_ns` on) as one input stream of the walk, in `seq`
    order: the order the recorder received them in, which a step back of the wall clock (`recv_ts`) must not
    change for the sync engine."""
    return [heapq.merge(iter_depth(depth, symbol, batch_size, from_ns),
                        iter_snapshots(snapshots, symbol, batch_size, from_ns), key=itemgetter(1))]


def day_book_streams(root: Path, exchange: str, date: dt.date | str, symbol: str, batch_size: int = 65_536
                     ) -> list[Iterator[BookMessage]]:
    """`book_streams` of a symbol's recorded day; DatasetError (listing what there is) without depth."""
    depth = list_files(root, exchange, "depth", date=date, symbols=[symbol])
    try:
        snapshots = list_files(root, exchange, "snapshots", date=date, symbols=[symbol])
    except DatasetError:
        snapshots = []  # a day without any snapshot never gets a valid book, but its diffs still replay
    return book_streams(depth, snapshots, symbol, batch_size)


def rebuild(root: Path, market: Market, date: dt.date | str, symbol: str
            ) -> Iterator[tuple[int, int, DepthUpdate | DepthSnapshot, Action, LocalBook]]:
    """The walk of a symbol's recorded day through a fresh `LocalBook`: (seq, recv_ts, message, action, book)."""
    local = LocalBook(market.sequence_rule, symbol, units=True)
    for recv_ts, seq, _, _, message, action, _ in walk(day_book_streams(root, market.exchange, date, symbol),
                                                       {symbol: local}):
        yield seq, recv_ts, message, action, local


def first_rows(root: Path | str, exchange: str, table: str, date: dt.date, symbol: str, columns: list[str],
               rows: int, files: int = 1) -> Iterator[pa.RecordBatch]:
    """The first `rows` rows of each of a partition's first `files` files: a cheap sample of a day."""
    try:
        paths = list_files(root, exchange, table, date=date, symbols=[symbol])
    except DatasetError:
        return
    for path in paths[:files]:
        yield from itertools.islice(pq.ParquetFile(path).iter_batches(batch_size=rows, columns=columns), 1)


def sampled_decimals(root: Path | str, exchange: str, date: dt.date, symbol: str) -> tuple[int, int]:
    """Decimals a day's prices and quantities need, from the first rows of depth and snapshots: the
    tick and step sizes (10^-decimals) when the day has no instruments row."""
    pd = qd = 0
    for table in ("depth", "snapshots"):
        for group in first_rows(root, exchange, table, date, symbol, ["price", "qty"], rows=5_000, files=2):
            pd = max([pd, *(decimals_needed(v) for v in decimal_units(group.column("price")) if v)])
            qd = max([qd, *(decimals_needed(v) for v in decimal_units(group.column("qty")) if v)])
    return pd, qd
