"""Where each frame of a batch goes, by its combined-stream name, in one compiled pass.

`Pipeline.frames` keeps stream events undecoded until the flush: on arrival only the stream name matters
(`btcusdt@trade` -> the trades of BTCUSDT), and for a depth diff its ids. `StreamRoutes` remembers every
name it has seen, as a hash table in arrays, and `route_batch` (a numba kernel) reads the names of a
whole batch held as one buffer and looks them up: no Python work per frame. A name seen for the first
time is resolved in Python (`stream_route`) and added to the table.

Per frame the answer is a route index (into `StreamRoutes.routes`, a (table, symbol)) or FRAME_PATH: an
unrouted stream (partial depth, klines, ...) or a frame without the envelope `{"stream":"<name>",...`,
which `Pipeline.frame` takes one by one.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from recorder.framescan import ENVELOPE
from recorder.markets import MARKETS

FRAME_PATH = -1  # the frame goes through `Pipeline.frame`
_UNKNOWN = -2  # a name the table does not hold yet (kernel output only)
_QUOTE = 34
_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)

# stream channel -> table of its frames, for the channels `frames()` routes by name; the diff depth streams
# are those the markets offer (`recorder.markets`)
ROUTED_CHANNELS = {"trade": "trades", "aggTrade": "agg_trades", "bookTicker": "book_ticker",
                   **{suffix: "depth" for market in MARKETS.values() for suffix in market.depth_streams}}


def stream_route(stream: bytes) -> tuple[str, str] | None:
    """(table, symbol) of a combined-stream name `frames()` routes by name, else None."""
    name, at, channel = stream.partition(b"@")
    table = ROUTED_CHANNELS.get(channel.decode("ascii", "replace"))
    if not at or table is None or not name.replace(b"_", b"").isalnum() or not name.islower():
        return None
    return table, name.decode().upper()


@njit(cache=True, nogil=True, inline="always")
def _hash(buf, start, end):
    """FNV-1a of buf[start:end]."""
    h = _FNV_OFFSET
    for i in range(start, end):
        h = (h ^ np.uint64(buf[i])) * _FNV_PRIME
    return h


@njit(cache=True, nogil=True)
def _name_span(buf, start, end):
    """(first, end) of the stream name of the frame buf[start:end], or (-1, -1) without the envelope."""
    if end - start <= len(ENVELOPE):
        return -1, -1
    for k in range(len(ENVELOPE)):
        if buf[start + k] != ENVELOPE[k]:
            return -1, -1
    first = start + len(ENVELOPE)
    i = first
    while i < end:
        if buf[i] == _QUOTE:
            return first, i
        i += 1
    return -1, -1


@njit(cache=True, nogil=True)
def _find(buf, first, last, slots, names, name_starts, name_ends):
    """Index of the name buf[first:last] in the table, or -1."""
    mask = len(slots) - 1
    k = _hash(buf, first, last) & np.uint64(mask)
    length = last - first
    while True:
        n = slots[k]
        if n < 0:
            return -1
        if name_ends[n] - name_starts[n] == length:
            base = name_starts[n]
            same = True
            for j in range(length):
                if names[base + j] != buf[first + j]:
                    same = False
                    break
            if same:
                return n
        k = (k + np.uint64(1)) & np.uint64(mask)


@njit(cache=True, nogil=True)
def route_batch(buf, starts, ends, slots, names, name_starts, name_ends, name_routes, out, spans):
    """out[i]: the route of frame i (buf[starts[i]:ends[i]]), FRAME_PATH, or _UNKNOWN with its name's
    span in spans[i] (for the caller to resolve and add)."""
    for i in range(len(starts)):
        first, last = _name_span(buf, starts[i], ends[i])
        if first < 0:
            out[i] = FRAME_PATH
            continue
        n = _find(buf, first, last, slots, names, name_starts, name_ends)
        if n < 0:
            out[i] = _UNKNOWN
            spans[i, 0] = first
            spans[i, 1] = last
        else:
            out[i] = name_routes[n]


@njit(cache=True)
def last_of_routes(route, n_routes):
    """(each route present in `route`, the index of its last frame), the latest first."""
    seen = np.zeros(n_routes, np.bool_)
    present = np.empty(len(route), np.int64)
    last = np.empty(len(route), np.int64)
    k = 0
    for i in range(len(route) - 1, -1, -1):
        r = route[i]
        if r >= 0 and not seen[r]:
            seen[r] = True
            present[k] = r
            last[k] = i
            k += 1
    return present[:k], last[:k]


@njit(cache=True, nogil=True)
def _insert(slots, names, name_starts, name_ends, n):
    mask = len(slots) - 1
    k = _hash(names, name_starts[n], name_ends[n]) & np.uint64(mask)
    while slots[k] >= 0:
        k = (k + np.uint64(1)) & np.uint64(mask)
    slots[k] = n


class StreamRoutes:
    """The stream names seen so far, each with its route index or FRAME_PATH, as a hash table in arrays.

    At most `max_names` names are kept (a faulty server's garbage names must not grow it without end);
    past that, unseen names are resolved in Python each time they come."""

    def __init__(self, max_names: int = 1 << 16) -> None:
        self.max_names = max_names
        self.routes: list[tuple[str, str]] = []  # route index -> (table, symbol)
        self._route_index: dict[tuple[str, str], int] = {}
        # per route index, for `framescan.depth_ids`: its symbol as symbols[symbol_starts[r]:symbol_ends[r]]
        self.is_depth = np.zeros(16, np.bool_)
        self.symbols = np.empty(256, np.uint8)
        self.symbol_starts = np.zeros(16, np.int64)
        self.symbol_ends = np.zeros(16, np.int64)
        self._slots = np.full(1 << (2 * max_names - 1).bit_length(), -1, np.int32)  # a power of two, at most half full
        self._names = np.empty(1 << 12, np.uint8)
        self._name_starts = np.empty(max_names, np.int64)
        self._name_ends = np.empty(max_names, np.int64)
        self._name_routes = np.empty(max_names, np.int32)
        self._count = 0
        self._used = 0  # bytes of `_names`

    def route(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The route index or FRAME_PATH of each frame buf[starts[i]:ends[i]] (int32)."""
        n = len(starts)
        out = np.empty(n, np.int32)
        spans = np.empty((n, 2), np.int64)
        route_batch(buf, starts, ends, self._slots, self._names, self._name_starts, self._name_ends,
                    self._name_routes, out, spans)
        for i in np.flatnonzero(out == _UNKNOWN).tolist():
            name = buf[spans[i, 0]:spans[i, 1]].tobytes()
            out[i] = self._add(name)
        return out

    def _add(self, name: bytes) -> int:
        """The route of a new name (FRAME_PATH if none), remembered while there is room. The same name
        may come twice in one batch: the second time it is found."""
        found = _find(np.frombuffer(name, np.uint8), 0, len(name), self._slots, self._names, self._name_starts,
                      self._name_ends)
        if found >= 0:
            return int(self._name_routes[found])
        route = stream_route(name)
        index = FRAME_PATH
        if route is not None:
            index = self._route_index.get(route, -1)
            if index < 0:
                index = self._route_index[route] = len(self.routes)
                self.routes.append(route)
                self._describe(index, *route)
        if self._count < self.max_names:
            n = self._count
            if self._used + len(name) > len(self._names):
                self._names = np.concatenate([self._names, np.empty(max(len(self._names), len(name)), np.uint8)])
            self._names[self._used:self._used + len(name)] = np.frombuffer(name, np.uint8)
            self._name_starts[n], self._name_ends[n] = self._used, self._used + len(name)
            self._name_routes[n] = index
            self._used += len(name)
            self._count += 1
            _insert(self._slots, self._names, self._name_starts, self._name_ends, n)
        return index

    def _describe(self, index: int, table: str, symbol: str) -> None:
        """Route `index`'s entries in the per-route arrays (grown by doubling)."""
        if index == len(self.is_depth):
            self.is_depth = np.concatenate([self.is_depth, np.zeros(index, np.bool_)])
            self.symbol_starts = np.concatenate([self.symbol_starts, np.zeros(index, np.int64)])
            self.symbol_ends = np.concatenate([self.symbol_ends, np.zeros(index, np.int64)])
        name = np.frombuffer(symbol.encode(), np.uint8)
        start = int(self.symbol_ends[index - 1]) if index else 0
        if start + len(name) > len(self.symbols):
            self.symbols = np.concatenate([self.symbols, np.empty(max(len(self.symbols), len(name)), np.uint8)])
        self.symbols[start:start + len(name)] = name
        self.symbol_starts[index], self.symbol_ends[index] = start, start + len(name)
        self.is_depth[index] = table == "depth"
