"""Sans-I/O sync engine: Binance's "How to manage a local order book correctly", as a plain object.

Feed it diffs (`on_diff`) and REST snapshots (`on_snapshot`); it answers with an `Action` and records
every state change as a `SyncEvent` in `events`. It owns no socket, clock, file or book: the recorder,
the validator and replay all drive the same object, so there is one implementation of the rules.

Rules (spot: continuity by `U == previous u + 1`; futures: by `pu == previous u`):
- While not synced, diffs are buffered (bounded; overflow drops the buffer and asks for a resync).
  A buffered diff that does not chain onto the previous one starts the buffer afresh.
- On a snapshot, buffered diffs it already contains are dropped (spot `u <= lastUpdateId`, futures
  `u < lastUpdateId`); the first remaining one must bridge it (spot `U <= lastUpdateId+1 <= u`, futures
  `U <= lastUpdateId <= u`, or `pu == lastUpdateId`), else the snapshot is older than the buffer and can
  never be bridged: STALE, fetch another. Bridged diffs are applied after it, never discarded. If none
  remain, the engine holds the snapshot and waits for the diff that bridges it, keeping the diffs it
  already contains. The wait is bounded when the owner says so (`bridge_max_diffs`, `bridge_max_ns`): a
  snapshot ahead of every diff that arrives (another server's, another market's) is then discarded
  (`snapshot_discarded`) and a fresh one is asked for. A snapshot older than the held one replaces it
  unless the kept diffs show it stale, so a rebuild of the recorded day syncs where the recorder did.
- Once synced, a diff continues the chain (APPLY), is already contained in the book (`u <= local id`,
  IGNORED: duplicates and late re-deliveries), or is a gap (RESYNC: the book is invalid from here; the
  diff is kept in the buffer so that the next snapshot is bridged from it).

Two precise readings of Binance's text: its spot stale test is "lastUpdateId < first U", but a snapshot
at `U - 1` is bridged by that very diff, so only "lastUpdateId + 1 < U" is stale; and on futures a diff
with `pu == lastUpdateId` continues the snapshot exactly. Both yield the same books with fewer refetches.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum
from typing import Any, NamedTuple

from recorder.book import BookError, OrderBook
from recorder.markets import SequenceRule
from recorder.protocol import DepthSnapshot, DepthUpdate


class Action(IntEnum):
    APPLY = 0  # synced: apply this diff to the book now
    BUFFERED = 1  # not synced: kept until a snapshot bridges it
    IGNORED = 2  # stale or duplicate: already contained in the book / snapshot
    RESYNC = 3  # gap, overflow or reset: the book is invalid now; fetch a snapshot
    SYNCED = 4  # just became synced: `take_sync()` gives the snapshot and the diffs to apply after it
    WAIT = 5  # snapshot held; waiting for the diff that bridges it
    STALE = 6  # snapshot older than the buffered diffs: fetch a new one


class State(IntEnum):
    NEED_SNAPSHOT = 0
    BRIDGING = 1  # holding a snapshot, no diff bridges it yet
    SYNCED = 2


class SyncEvent(NamedTuple):
    """A state change worth writing down; `kind` is one of the `events` table kinds."""

    kind: str
    detail: dict[str, Any]


class _Diff(NamedTuple):
    first: int  # U
    final: int  # u
    prev: int | None  # pu
    item: Any


DEFAULT_MAX_BUFFER = 50_000


class SyncEngine:
    """Decides, diff by diff, whether a local book built from snapshot + diffs is valid."""

    __slots__ = (
        "_buffer",
        "_held_since",
        "_snapshot",
        "_sync",
        "bridge_max_diffs",
        "bridge_max_ns",
        "events",
        "futures",
        "local_id",
        "max_buffer",
        "state",
    )

    def __init__(self, rule: SequenceRule | str, max_buffer: int = DEFAULT_MAX_BUFFER,
                 bridge_max_diffs: int | None = None, bridge_max_ns: int | None = None) -> None:
        self.futures = SequenceRule(rule) is SequenceRule.FUTURES
        self.max_buffer = max_buffer
        self.bridge_max_diffs = bridge_max_diffs  # diffs a held snapshot may wait for; None: no bound
        self.bridge_max_ns = bridge_max_ns  # time a held snapshot may wait (see `expire_held`); None: no bound
        self._held_since: int | None = None
        self.state = State.NEED_SNAPSHOT
        self.local_id: int | None = None  # update id the synced book is at
        self.events: list[SyncEvent] = [SyncEvent("need_snapshot", {"reason": "start"})]
        self._buffer: deque[_Diff] = deque()
        self._snapshot: tuple[int, Any] | None = None
        self._sync: tuple[Any, list[Any]] | None = None

    @property
    def synced(self) -> bool:
        return self.state is State.SYNCED

    @property
    def needs_snapshot(self) -> bool:
        return self.state is State.NEED_SNAPSHOT

    def drain_events(self) -> list[SyncEvent]:
        events, self.events = self.events, []
        return events

    # ---- diffs ----------------------------------------------------------------------------------

    def on_diff(self, first_id: int, final_id: int, prev_final_id: int | None, item: Any = None) -> Action:
        if self.state is State.SYNCED:
            local = self.local_id
            if (prev_final_id == local) if self.futures else (first_id == local + 1):
                self.local_id = final_id
                return Action.APPLY
            if final_id <= local:
                self.events.append(
                    SyncEvent("ignored_stale", {"U": first_id, "u": final_id, "local_id": local})
                )
                return Action.IGNORED
            if self.futures:
                detail = {"expected_pu": local, "got_pu": prev_final_id, "U": first_id, "u": final_id}
            else:
                detail = {"expected_U": local + 1, "got_U": first_id, "u": final_id}
            self.events.append(SyncEvent("gap", detail))
            self._need_snapshot("gap")
            self._buffer.append(_Diff(first_id, final_id, prev_final_id, item))
            return Action.RESYNC
        if self.state is State.BRIDGING:
            return self._bridge(_Diff(first_id, final_id, prev_final_id, item))
        return self._buffer_diff(_Diff(first_id, final_id, prev_final_id, item))

    def _chains(self, prev: _Diff, diff: _Diff) -> bool:
        return diff.prev == prev.final if self.futures else diff.first == prev.final + 1

    def _buffer_diff(self, diff: _Diff) -> Action:
        buffer = self._buffer
        if buffer:
            last = buffer[-1]
            if diff.final <= last.final:
                return Action.IGNORED  # duplicate or late copy of something already buffered
            if not self._chains(last, diff):
                self.events.append(
                    SyncEvent(
                        "gap",
                        {"while": "buffering", "after_u": last.final, "U": diff.first, "u": diff.final,
                         "pu": diff.prev, "dropped": len(buffer)},
                    )
                )
                buffer.clear()
        buffer.append(diff)
        if len(buffer) > self.max_buffer:
            self.events.append(SyncEvent("buffer_overflow", {"size": len(buffer)}))
            buffer.clear()
            self._need_snapshot("buffer_overflow")
            return Action.RESYNC
        return Action.BUFFERED

    def _bridges(self, snapshot_id: int, diff: _Diff) -> bool:
        if self.futures:
            # Binance: U <= lastUpdateId <= u. Also exact: a snapshot taken right after the previous event
            # (lastUpdateId == pu) is continued by this one, though futures ids jump so U > lastUpdateId.
            return diff.first <= snapshot_id <= diff.final or diff.prev == snapshot_id
        return diff.first <= snapshot_id + 1 <= diff.final

    def _contained(self, snapshot_id: int, diff: _Diff) -> bool:
        """Diff already reflected in a snapshot at `snapshot_id` (Binance's drop rule per market)."""
        return diff.final < snapshot_id if self.futures else diff.final <= snapshot_id

    def _bridge(self, diff: _Diff) -> Action:
        snapshot_id, snapshot = self._snapshot
        if self._contained(snapshot_id, diff):
            # kept: a snapshot after a discard (or an older one in a rebuild) may be bridged from it
            if self._buffer_diff(diff) is Action.RESYNC:
                return Action.RESYNC
            if self.bridge_max_diffs is not None and len(self._buffer) >= self.bridge_max_diffs:
                self._discard_held("diffs", None)
                return Action.RESYNC
            return Action.IGNORED
        buffer = self._buffer
        if self._bridges(snapshot_id, diff):
            buffer.clear()
            self._become_synced(snapshot_id, snapshot, [diff], dropped=0)
            return Action.SYNCED
        self.events.append(
            SyncEvent("gap", {"while": "bridging", "last_update_id": snapshot_id, "U": diff.first, "u": diff.final})
        )
        self._need_snapshot("gap")
        if buffer and not self._chains(buffer[-1], diff):
            buffer.clear()
        buffer.append(diff)
        return Action.RESYNC

    def expire_held(self, now_ns: int) -> bool:
        """Discard a snapshot held for longer than `bridge_max_ns` (True if it was): RESYNC without a diff."""
        if self.state is not State.BRIDGING or self.bridge_max_ns is None or self._held_since is None:
            return False
        if now_ns - self._held_since < self.bridge_max_ns:
            return False
        self._discard_held("time", now_ns)
        return True

    def _discard_held(self, reason: str, now_ns: int | None) -> None:
        buffer = self._buffer
        detail = {"reason": reason, "last_update_id": self._snapshot[0],
                  "stream_u": buffer[-1].final if buffer else None, "diffs": len(buffer)}
        if now_ns is not None and self._held_since is not None:
            detail["held_ms"] = (now_ns - self._held_since) // 1_000_000
        self.events.append(SyncEvent("snapshot_discarded", detail))
        self._need_snapshot("snapshot_discarded")

    # ---- snapshots ------------------------------------------------------------------------------

    def on_snapshot(self, last_update_id: int, item: Any = None, now_ns: int | None = None) -> Action:
        """`now_ns` (the receive time) starts the `bridge_max_ns` bound of a snapshot that has to wait."""
        if self.state is State.SYNCED:
            return Action.IGNORED  # a checkpoint snapshot: the synced book does not need it
        buffer = self._buffer
        if self.state is State.BRIDGING:
            held = self._snapshot[0]
            if last_update_id == held or last_update_id < held and not self._bridgeable(last_update_id):
                return Action.WAIT
            self._snapshot = None  # a newer snapshot, or an older one the kept diffs do not refute, replaces it
        dropped = 0
        while buffer and self._contained(last_update_id, buffer[0]):
            buffer.popleft()
            dropped += 1
        if buffer and not self._bridges(last_update_id, buffer[0]):
            self.events.append(
                SyncEvent("snapshot_stale", {"last_update_id": last_update_id, "first_buffered_U": buffer[0].first})
            )
            self.state = State.NEED_SNAPSHOT
            return Action.STALE
        if not buffer:
            self._snapshot = (last_update_id, item)
            self._held_since = now_ns
            self.state = State.BRIDGING
            self.events.append(SyncEvent("snapshot_waiting", {"last_update_id": last_update_id, "dropped": dropped}))
            return Action.WAIT
        diffs = list(buffer)
        buffer.clear()
        self._become_synced(last_update_id, item, diffs, dropped)
        return Action.SYNCED

    def _bridgeable(self, snapshot_id: int) -> bool:
        """No buffered diff shows a snapshot at `snapshot_id` stale: the first one it does not contain
        bridges it, or it contains them all."""
        for diff in self._buffer:
            if not self._contained(snapshot_id, diff):
                return self._bridges(snapshot_id, diff)
        return True

    def _become_synced(self, snapshot_id: int, snapshot: Any, diffs: list[_Diff], dropped: int) -> None:
        self.local_id = diffs[-1].final
        self.state = State.SYNCED
        self._snapshot = None
        self._sync = (snapshot, [d.item for d in diffs])
        self.events.append(
            SyncEvent(
                "synced",
                {"last_update_id": snapshot_id, "first_U": diffs[0].first, "first_u": diffs[0].final,
                 "applied_from_buffer": len(diffs), "dropped": dropped, "local_id": self.local_id},
            )
        )

    def take_sync(self) -> tuple[Any, list[Any]]:
        """After SYNCED: the snapshot item and the diff items to apply after it, in order."""
        sync, self._sync = self._sync, None
        if sync is None:
            raise RuntimeError("take_sync() called without a pending sync")
        return sync

    # ---- resets ---------------------------------------------------------------------------------

    def reset(self, reason: str) -> None:
        """Forget everything (disconnect, bad data): the book is invalid until the next sync."""
        self._buffer.clear()
        self._need_snapshot(reason)

    def _need_snapshot(self, reason: str) -> None:
        self.state = State.NEED_SNAPSHOT
        self.local_id = None
        self._snapshot = None
        self._sync = None
        self.events.append(SyncEvent("need_snapshot", {"reason": reason}))


class LocalBook:
    """A sync engine driving an `OrderBook`: the book is exposed only while the engine says synced.

    Levels are Binance's decimal strings, or with `units=True` (price, qty) ints in 1e-8 units, as read
    back from the dataset.
    """

    __slots__ = ("_apply", "_load_levels", "book", "engine", "symbol")

    def __init__(self, rule: SequenceRule | str, symbol: str | None = None, max_buffer: int = DEFAULT_MAX_BUFFER,
                 units: bool = False):
        self.engine = SyncEngine(rule, max_buffer)
        self.book = OrderBook()
        self.symbol = symbol
        self._apply = self.book.apply_levels if units else self.book.apply
        self._load_levels = self.book.load_levels if units else self.book.load

    @property
    def synced(self) -> bool:
        return self.engine.state is State.SYNCED

    @property
    def update_id(self) -> int | None:
        return self.engine.local_id

    def valid_book(self) -> OrderBook | None:
        """The book if it is known to be correct, else None: never a stale book."""
        return self.book if self.engine.state is State.SYNCED else None

    def on_diff(self, diff: DepthUpdate) -> Action:
        action = self.engine.on_diff(diff.first_update_id, diff.final_update_id, diff.prev_final_update_id, diff)
        if action is Action.APPLY:
            try:
                self._apply(diff.bids, diff.asks)
            except BookError as exc:
                return self._bad_data(exc)
        elif action is Action.SYNCED:
            return self._load()
        elif action is Action.RESYNC:
            self.book.clear()
        return action

    def on_snapshot(self, snapshot: DepthSnapshot) -> Action:
        action = self.engine.on_snapshot(snapshot.last_update_id, snapshot)
        if action is Action.SYNCED:
            return self._load()
        return action

    def reset(self, reason: str) -> None:
        self.engine.reset(reason)
        self.book.clear()

    def _load(self) -> Action:
        snapshot, diffs = self.engine.take_sync()
        try:
            self._load_levels(snapshot.bids, snapshot.asks)
            for diff in diffs:
                self._apply(diff.bids, diff.asks)
        except BookError as exc:
            return self._bad_data(exc)
        return Action.SYNCED

    def _bad_data(self, exc: BookError) -> Action:
        self.engine.events.append(SyncEvent("error", {"reason": str(exc)}))
        self.reset("bad_levels")
        return Action.RESYNC
