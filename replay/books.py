"""Book rebuild only (`replay --strategy none`): each symbol's order book rebuilt over a day, no simulator.

At `--speed max` the prepared day (replay/prepared.py) goes through the simulation kernel's own array book
(`kernel.rebuild_book`, the `_apply_levels` the backtest uses) chunk by chunk; paced, or over a span inside
the day, the events come from `DayReplay` (the recorder's `LocalBook`) and are counted as the prepared rows
count them (`MessageRows`). Both give one `BookReplayStats` per symbol: the same counts and final top of book.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from recorder.numbers import format_units
from replay.engine import BOOK_VALID, DayReplay, ReplayEvent
from replay.prepared import CHUNK_ROWS, PreparedDay
from replay.prepared_format import LEVEL, MessageRows
from replay.sim import kernel as K


@dataclass
class BookReplayStats:
    """One symbol's book rebuild: counts, wall time and the top of book at the end (prices in 1e-8 units;
    None while the book is invalid or that side is empty)."""

    symbol: str
    messages: int = 0  # the symbol's book and trade messages and validity changes (prepared rows flagged END)
    level_updates: int = 0  # levels set or removed (LEVEL rows: diff levels; the whole book on a (re)sync)
    valid_spans: int = 0  # times the book became valid
    seconds: float = 0.0  # wall time of the rebuild (from DayReplay's events: of all symbols, merged)
    best_bid: int | None = None
    best_ask: int | None = None

    @property
    def level_updates_per_second(self) -> float:
        return self.level_updates / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One line: what was rebuilt, how fast, and the final top of book."""
        def price(units: int | None) -> str:
            return "-" if units is None else format_units(units).rstrip("0").rstrip(".")

        return (f"{self.symbol}: {self.messages:,} messages, {self.level_updates:,} level updates in "
                f"{self.seconds:.2f} s ({self.level_updates_per_second:,.0f} level updates/s), "
                f"{self.valid_spans:,} valid spans; final best bid {price(self.best_bid)}, "
                f"best ask {price(self.best_ask)}")


def replay_books(day: PreparedDay, chunk_rows: int = CHUNK_ROWS,
                 on_chunk: Callable[[BookReplayStats], None] | None = None) -> BookReplayStats:
    """The prepared day's book rebuilt by the numba kernel, chunk by chunk (`day` loaded); `on_chunk` sees
    the running stats (top of book included) after each chunk."""
    meta = day.meta
    if meta is None:
        raise RuntimeError(f"{day!r} is not loaded: call load_or_build() first")
    stats = BookReplayStats(day.symbol)
    price_min = meta.price_min or 0
    levels = (meta.price_max or 0) - price_min + 1
    pi = np.zeros(K.N_PI, np.int64)
    pi[K.P_PMIN], pi[K.P_LEVELS] = price_min, levels
    pi[K.P_PRICE_STEP], pi[K.P_QTY_STEP] = meta.price_step, meta.qty_step
    ist = np.zeros(K.IST_SIZE, np.int64)
    ist[K.BB], ist[K.BA] = -1, levels
    ist[K.SET_LOW], ist[K.SET_HIGH] = levels, -1
    bids, asks = np.zeros(levels, np.int64), np.zeros(levels, np.int64)
    counts = np.zeros(K.N_BK, np.int64)
    started = time.perf_counter()
    for chunk in day.chunks(chunk_rows):
        bid, ask = K.rebuild_book(chunk.kind, chunk.flags, chunk.side, chunk.price, chunk.qty, ist, pi, bids, asks,
                                  counts)
        stats.best_bid = None if bid < 0 else int(bid) * meta.price_step
        stats.best_ask = None if ask < 0 else int(ask) * meta.price_step
        stats.messages, stats.level_updates = int(counts[K.BK_MESSAGES]), int(counts[K.BK_LEVELS])
        stats.valid_spans = int(counts[K.BK_VALID_SPANS])
        stats.seconds = time.perf_counter() - started
        if on_chunk is not None:
            on_chunk(stats)
    return stats


def replay_book_events(events: Iterator[ReplayEvent], replay: DayReplay) -> dict[str, BookReplayStats]:
    """The books `DayReplay` rebuilds as `events` (its events, paced or not) are handed out, per symbol: the
    counts the prepared rows would give, and the `LocalBook`'s top of book at the end."""
    started = time.perf_counter()
    stats = {symbol: BookReplayStats(symbol) for symbol in replay.symbols}
    rows = {symbol: MessageRows(replay) for symbol in replay.symbols}
    for event in events:
        symbol = event.symbol
        if symbol not in rows:
            continue
        message = rows[symbol](event)
        if not message:
            continue  # a channel the prepared rows leave out
        counted = stats[symbol]
        counted.messages += 1
        counted.level_updates += sum(1 for row in message if row[0] == LEVEL)
        counted.valid_spans += event.kind is BOOK_VALID
    seconds = time.perf_counter() - started
    for symbol, counted in stats.items():
        counted.seconds = seconds
        book = replay.books[symbol].valid_book() if symbol in replay.books else None
        if book is not None:
            counted.best_bid = book.best_bid()[0] if book.bids else None
            counted.best_ask = book.best_ask()[0] if book.asks else None
    return stats

