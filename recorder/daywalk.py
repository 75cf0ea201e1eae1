"""The one walk over a recorded day: messages merged in arrival order, book messages through `LocalBook`.

Replay (`replay.engine.DayReplay.events`), `recorder validate`, `replay export` and the prepared day all
walk a day the same way, so they agree on every book and on every span where it is valid:

- input: streams of `(recv_ts, seq, kind, symbol, data)`, each in file (seq) order (a symbol's diffs and
  snapshots from `recorder.rebuild.book_streams`, and any other channel's rows a consumer wants interleaved);
- they are merged by (`recv_ts`, `seq`); a `DEPTH` or `SNAPSHOT` goes through its symbol's `LocalBook`;
- output, one `Step` per message: the message, the sync engine's `Action` for a book message (`APPLY`: the
  diff changed the book; `IGNORED`/`BUFFERED`/`WAIT`/`STALE`: it did not; `SYNCED`: the book became valid,
  snapshot and bridging diffs applied; `RESYNC`: gap, overflow or bad levels), and `became`: True / False
  where this message made the book valid / invalid (the edges of the valid spans), else None.

No file, clock or socket here: the caller opens the streams and owns the books (it reads them live).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from operator import itemgetter
from typing import Any

from recorder.sync import Action, LocalBook, State

__all__ = ["DEPTH", "SNAPSHOT", "BookMessage", "Step", "walk"]

DEPTH, SNAPSHOT = "depth", "snapshot"  # the kinds of book messages (other kinds pass through)

BookMessage = tuple[int, int, str, Any, Any]  # (recv_ts, seq, kind, symbol, data)
Step = tuple[int, int, str, Any, Any, Action | None, bool | None]  # + (action, became)

_ARRIVAL = itemgetter(0, 1)  # (recv_ts, seq)
_SYNCED = State.SYNCED


def walk(streams: Iterable[Iterator[BookMessage]], books: Mapping[str, LocalBook]) -> Iterator[Step]:
    """Every message of `streams` merged in (`recv_ts`, `seq`) order (each stream keeps its own order: a
    symbol's book messages come in `seq` order, see `rebuild.book_streams`) as `(recv_ts, seq, kind, symbol,
    data, action, became)`; `action` and `became` are None for rows that are not book messages.

    `books` holds a fresh `LocalBook` per symbol whose book messages are in the streams; a book is valid
    from the step whose `became` is True up to the one whose `became` is False.
    """
    valid = dict.fromkeys(books, False)
    for recv_ts, seq, kind, symbol, data in heapq.merge(*streams, key=_ARRIVAL):
        if kind is DEPTH or kind is SNAPSHOT:
            local = books[symbol]
            action = local.on_diff(data) if kind is DEPTH else local.on_snapshot(data)
            now_valid = local.engine.state is _SYNCED
            if now_valid is valid[symbol]:
                yield recv_ts, seq, kind, symbol, data, action, None
            else:
                valid[symbol] = now_valid
                yield recv_ts, seq, kind, symbol, data, action, now_valid
        else:
            yield recv_ts, seq, kind, symbol, data, None, None
