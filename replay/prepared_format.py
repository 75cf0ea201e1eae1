"""The prepared day's event array: one symbol's day as typed columns, what the simulation kernel walks.

One row per book level change, trade or validity change, in arrival order (`recv_ts`, then `seq`). Every
replayed message ends with a row flagged `END`: only there is the book complete and the simulator reacts,
exactly as the event-driven reference does once per `ReplayEvent`.

Row kinds:
- `TIME`: a depth message or snapshot that arrived while the book was invalid (time passes, nothing else).
- `LEVEL`: one (side, price, qty) of a diff; qty 0 removes the level.
- `CLEAR`: the book is emptied; the `LEVEL` rows after it (same message) are the full book, as after a
  snapshot is loaded and the buffered diffs that bridge it are applied.
- `EMPTY`: a message while the book is valid that changed no level (a diff with no levels, a stale diff the
  sync engine dropped): the book is complete and unchanged. A snapshot that arrives while the book is valid
  is written as `CLEAR` + the whole book, which is right whatever the sync engine did with it.
- `TRADE`: side is the aggressor's (+1 a buy market order, −1 a sell, i.e. `buyer_is_maker`), price, qty.
- `VALID` / `INVALID`: the book became valid / invalid (each its own message, flagged `END`).

Columns: `kind` u1, `flags` u1 (`END`), `recv_ts` i8 (ns), `exch_ts` i8 (ns: the transaction time `T` where
the message has one, else the event time `E`, else −1 as for snapshots), `side` i1 (+1 bid/buy, −1
ask/sell, 0 none), `price` i8 in ticks of `price_step`, `qty` i8 in lots of `qty_step` (both steps in the
dataset's 1e-8 units, so `price * price_step` is the dataset's integer price).

`arrays_from_events` is the reference builder: it walks `DayReplay.events()` one `ReplayEvent` at a time
(`event_rows`). It is slow and simple; faster builders are tested against it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

FORMAT_VERSION = 1  # of the prepared files (replay/prepared.py): a change makes every stored day rebuild
TIME, LEVEL, CLEAR, EMPTY, TRADE, VALID, INVALID = 0, 1, 2, 3, 4, 5, 6
END = 1
COLUMNS = {"kind": np.uint8, "flags": np.uint8, "recv_ts": np.int64, "exch_ts": np.int64, "side": np.int8,
           "price": np.int64, "qty": np.int64}


@dataclass
class EventArrays:
    """One symbol's prepared events (columns of equal length) and the steps that scale price and qty."""

    kind: np.ndarray
    flags: np.ndarray
    recv_ts: np.ndarray
    exch_ts: np.ndarray
    side: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    price_step: int  # 1e-8 units per price tick of the `price` column
    qty_step: int  # 1e-8 units per lot of the `qty` column

    def __len__(self) -> int:
        return len(self.kind)

    def columns(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in COLUMNS}

    def head(self, rows: int) -> EventArrays:
        """The first `rows` rows (views); end them at a row flagged END."""
        return EventArrays(*(column[:rows] for column in self.columns().values()), self.price_step, self.qty_step)


def event_rows(events: Iterable, replay, symbol: str) -> Iterator[tuple[int, int, int, int, int, int, int]]:
    """`symbol`'s rows (kind, flags, recv_ts, exch_ts, side, price, qty; price and qty in 1e-8 units) from a
    `DayReplay`'s events, one at a time (`replay.books` is read live to tell an applied diff from one the
    sync engine dropped)."""
    rows = MessageRows(replay)
    for event in events:
        if event.symbol == symbol:
            yield from rows(event)


class MessageRows:
    """One symbol's rows of each of its `ReplayEvent`s in turn, read as the event is handed out (it keeps
    whether the book just became valid: the next book message is then the whole book)."""

    def __init__(self, replay) -> None:
        self.replay = replay
        self.just_valid = False

    def __call__(self, event) -> list[tuple[int, int, int, int, int, int, int]]:
        from replay.engine import BOOK_INVALID, BOOK_VALID, DEPTH, SNAPSHOT
        from replay.engine import TRADE as TRADE_EVENT

        now, kind = event.recv_ts, event.kind
        if kind is BOOK_VALID or kind is BOOK_INVALID:
            self.just_valid = kind is BOOK_VALID
            return [(VALID if kind is BOOK_VALID else INVALID, END, now, -1, 0, 0, 0)]
        if kind is DEPTH or kind is SNAPSHOT:
            exch = event.transact_ts or event.exchange_ts
            exch = -1 if exch is None else exch
            book = event.book
            if book is None:
                return [(TIME, END, now, exch, 0, 0, 0)]
            if self.just_valid or kind is SNAPSHOT:
                levels = [(CLEAR, 0, 0, 0)]
                levels += [(LEVEL, 1, p, q) for p, q in book.bids.items()]
                levels += [(LEVEL, -1, p, q) for p, q in book.asks.items()]
            elif self.replay.books[event.symbol].update_id == event.data.final_update_id:
                levels = [(LEVEL, 1, p, q) for p, q in event.data.bids] + [(LEVEL, -1, p, q) for p, q in event.data.asks]
            else:
                levels = []
            self.just_valid = False
            if not levels:
                return [(EMPTY, END, now, exch, 0, 0, 0)]
            last = len(levels) - 1
            return [(row_kind, END if i == last else 0, now, exch, side, price, qty)
                    for i, (row_kind, side, price, qty) in enumerate(levels)]
        if kind is TRADE_EVENT:
            exch = event.transact_ts or event.exchange_ts
            data = event.data
            return [(TRADE, END, now, -1 if exch is None else exch, -1 if data["buyer_is_maker"] else 1,
                     data["price"], data["qty"])]
        return []


def arrays_from_events(events: Iterable, replay, symbol: str) -> EventArrays:
    """The reference builder: `symbol`'s whole day in memory from `event_rows`, price and qty scaled to ticks
    and lots."""
    table = np.array(list(event_rows(events, replay, symbol)), dtype=np.int64).reshape(-1, 7)
    price_step = _step(table[:, 5])
    qty_step = _step(table[:, 6])
    return EventArrays(table[:, 0].astype(np.uint8), table[:, 1].astype(np.uint8), table[:, 2].copy(),
                       table[:, 3].copy(), table[:, 4].astype(np.int8), table[:, 5] // price_step,
                       table[:, 6] // qty_step, price_step, qty_step)


def _step(values: np.ndarray) -> int:
    """The largest step every value is a multiple of (1 when there are none)."""
    return common_step(values) or 1


def common_step(values: np.ndarray, step: int = 0) -> int:
    """The largest step that `step` and every nonzero value are multiples of (0 while there are none):
    a step found block by block."""
    nonzero = values[values != 0]
    return math.gcd(step, int(np.gcd.reduce(nonzero))) if len(nonzero) else step

