"""Test helpers for the simulation kernel: run the reference `Simulator` and the kernel on the same events.

`both_on_replay` walks a `DayReplay` once, feeding the reference exactly as run.py does while the
prepared-format builder turns the same events into arrays for the kernel. `events_from_arrays` goes the
other way for generated arrays: each message back into the `ReplayEvent` the reference would have seen.
`assert_same` compares two `SimResult`s field by field, exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import fields

import numpy as np

from recorder.book import OrderBook
from replay.engine import BOOK_INVALID, BOOK_VALID, DEPTH, SNAPSHOT, ReplayEvent
from replay.engine import TRADE as TRADE_EVENT
from replay.prepared_format import (
    CLEAR,
    EMPTY,
    END,
    INVALID,
    LEVEL,
    TIME,
    TRADE,
    VALID,
    EventArrays,
    arrays_from_events,
)
from replay.sim.engine import Simulator
from replay.sim.fast import price_bounds, simulate
from replay.sim.params import SimParams
from replay.sim.record import SimResult, from_simulator
from replay.sim.strategies import load_strategy


class Reference:
    """The reference as run.py drives it: created on the first valid book with both sides."""

    def __init__(self, symbol: str, params: SimParams, tick: int, lot: int, horizon_ns: int, maker_fee: float,
                 taker_fee: float, grid_start_ns: int | None, strategy=None,
                 opening: tuple[int, int] | None = None) -> None:
        self.args = (symbol, params, strategy or load_strategy(params), tick, lot, horizon_ns, maker_fee, taker_fee)
        self.grid_start_ns = grid_start_ns
        self.opening = opening
        self.log: list[dict] = []
        self.sim: Simulator | None = None

    def on_event(self, event: ReplayEvent) -> None:
        if self.sim is None:
            if event.book is None or (event.kind is not DEPTH and event.kind is not SNAPSHOT):
                return
            if not event.book.bids or not event.book.asks:
                return
            self.sim = Simulator(*self.args, log=self.log.append, grid_start_ns=self.grid_start_ns,
                                 opening=self.opening)
            self.sim.valid = True
        self.sim.on_event(event)

    def result(self) -> SimResult:
        self.sim.finish()
        return from_simulator(self.sim)


def both_on_replay(replay, symbol: str, params: SimParams, tick: int, lot: int, maker_fee: float, taker_fee: float,
                   max_events: int | None = None, chunk_rows: int | None = None, strategy=None,
                   kernel_strategy=None) -> tuple[SimResult, list[dict], SimResult, list[dict]]:
    """(reference result, its log, kernel result, its log) over the replay's first `max_events` events."""
    grid = replay.first_event_ns()
    reference = Reference(symbol, params, tick, lot, replay.last_ns, maker_fee, taker_fee, grid, strategy)

    def feed() -> Iterator[ReplayEvent]:
        for count, event in enumerate(replay.events()):
            if max_events is not None and count >= max_events:
                return
            if event.symbol == symbol:
                reference.on_event(event)
            yield event

    arrays = arrays_from_events(feed(), replay, symbol)
    expected = reference.result()
    log: list[dict] = []
    got = run_kernel(arrays, symbol, params, tick, lot, replay.last_ns, maker_fee, taker_fee, grid, log.append,
                     chunk_rows, kernel_strategy)
    return expected, reference.log, got, log


def run_kernel(arrays: EventArrays, symbol: str, params: SimParams, tick: int, lot: int, horizon_ns: int,
               maker_fee: float, taker_fee: float, grid_start_ns: int | None, log=None, chunk_rows: int | None = None,
               strategy=None, opening: tuple[int, int] | None = None) -> SimResult:
    low, high = price_bounds(arrays)
    return simulate(chunked(arrays, chunk_rows) if chunk_rows else [arrays], symbol, params, tick, lot, horizon_ns,
                    maker_fee, taker_fee, grid_start_ns, arrays.price_step, arrays.qty_step, low, high, log,
                    strategy, opening)


def chunked(arrays: EventArrays, rows: int) -> Iterator[EventArrays]:
    """The arrays in pieces of about `rows` rows, each ending at an END row."""
    ends = np.flatnonzero(arrays.flags & END) + 1
    start = 0
    while start < len(arrays):
        stop = ends[np.searchsorted(ends, start + rows)] if start + rows < ends[-1] else ends[-1]
        yield EventArrays(*(getattr(arrays, name)[start:stop] for name in
                            ("kind", "flags", "recv_ts", "exch_ts", "side", "price", "qty")),
                          arrays.price_step, arrays.qty_step)
        start = stop


def events_from_arrays(arrays: EventArrays, symbol: str = "BTCUSDT") -> Iterator[ReplayEvent]:
    """Each message of the arrays as the `ReplayEvent` it stands for (one live book, as LocalBook keeps)."""
    book = OrderBook()
    valid = False
    start = 0
    step, qstep = arrays.price_step, arrays.qty_step
    for seq, end in enumerate(np.flatnonzero(arrays.flags & END)):
        rows = range(start, end + 1)
        start = end + 1
        kind, now = int(arrays.kind[end]), int(arrays.recv_ts[end])
        exch = int(arrays.exch_ts[end])
        if kind in (VALID, INVALID):
            valid = kind == VALID
            yield ReplayEvent(now, seq, symbol, BOOK_VALID if valid else BOOK_INVALID, {})
            continue
        if kind == TRADE:
            data = {"price": int(arrays.price[end]) * step, "qty": int(arrays.qty[end]) * qstep,
                    "buyer_is_maker": bool(arrays.side[end] == -1)}
            yield ReplayEvent(now, seq, symbol, TRADE_EVENT, data, None, None if exch == -1 else exch)
            continue
        for r in rows:
            if arrays.kind[r] == CLEAR:
                book.clear()
            elif arrays.kind[r] == LEVEL:
                levels = [(int(arrays.price[r]) * step, int(arrays.qty[r]) * qstep)]
                book.apply_levels(levels, []) if arrays.side[r] == 1 else book.apply_levels([], levels)
        assert kind in (TIME, LEVEL, CLEAR, EMPTY)
        shown = book if kind != TIME and valid else None
        yield ReplayEvent(now, seq, symbol, DEPTH if exch != -1 else SNAPSHOT, None, shown,
                          None if exch == -1 else exch)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(
            np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def assert_same(expected: SimResult, got: SimResult) -> None:
    """Every field equal: integers exactly, floats to the last bit, arrays element by element."""
    wrong = [f.name for f in fields(SimResult) if not _same(getattr(expected, f.name), getattr(got, f.name))]
    detail = {name: (getattr(expected, name), getattr(got, name)) for name in wrong if name not in ("fills", "series")}
    for table in ("fills", "series"):
        if table in wrong:
            e, g = getattr(expected, table), getattr(got, table)
            detail[table] = [(k, len(e[k]), len(g[k])) for k in e if not _same(e[k], g[k])]
    assert not wrong, detail
