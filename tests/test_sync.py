"""The sync engine and book: Binance's boundary cases, and property tests against a known true book."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.book import OrderBook
from recorder.markets import SequenceRule
from recorder.numbers import format_units, parse_units
from recorder.protocol import DepthSnapshot, DepthUpdate
from recorder.sync import Action, LocalBook, State, SyncEngine

SPOT, FUTURES = SequenceRule.SPOT, SequenceRule.FUTURES


def diff(U, u, pu=None, bids=(), asks=()):
    return DepthUpdate("BTCUSDT", 0, U, u, [list(b) for b in bids], [list(a) for a in asks], None, pu)


def snap(last_update_id, bids=(("100.00", "1.0"),), asks=(("101.00", "1.0"),)):
    return DepthSnapshot(last_update_id, [list(b) for b in bids], [list(a) for a in asks])


def kinds(engine: SyncEngine) -> list[str]:
    return [e.kind for e in engine.drain_events()]


# ---- Binance's boundary cases (all occur in the real captures) ----------------------------------------


def test_spot_first_diff_with_u_equal_last_update_id_is_dropped():
    lb = LocalBook(SPOT)
    assert lb.on_diff(diff(95, 100, bids=[("99.00", "5")])) is Action.BUFFERED
    assert lb.on_diff(diff(101, 103, bids=[("100.00", "2")])) is Action.BUFFERED
    assert lb.on_snapshot(snap(100)) is Action.SYNCED
    assert lb.update_id == 103
    assert lb.book.best_bid() == (parse_units("100"), parse_units("2"))
    assert parse_units("99") not in lb.book.bids  # the u == lastUpdateId diff was dropped, not applied


def test_spot_snapshot_inside_a_diff_is_bridged_by_that_diff():
    lb = LocalBook(SPOT)
    lb.on_diff(diff(90, 99))
    lb.on_diff(diff(100, 110, asks=[("101.00", "0")]))
    assert lb.on_snapshot(snap(104)) is Action.SYNCED  # U=100 <= 105 <= 110
    assert lb.book.best_ask() is None  # the bridging diff was applied on top of the snapshot


def test_futures_first_diff_with_U_equal_last_update_id_applies():
    lb = LocalBook(FUTURES)
    lb.on_diff(diff(200, 210, pu=190, bids=[("100.00", "3")]))
    assert lb.on_snapshot(snap(200)) is Action.SYNCED
    assert lb.book.best_bid() == (parse_units("100"), parse_units("3"))
    assert lb.on_diff(diff(215, 220, pu=210)) is Action.APPLY


def test_futures_first_diff_with_u_equal_last_update_id_applies():
    lb = LocalBook(FUTURES)
    lb.on_diff(diff(150, 180, pu=140))  # u < lastUpdateId: dropped
    lb.on_diff(diff(190, 200, pu=180, bids=[("100.00", "4")]))  # u == lastUpdateId: first applied
    assert lb.on_snapshot(snap(200)) is Action.SYNCED
    events = lb.engine.drain_events()
    assert events[-1].kind == "synced" and events[-1].detail["dropped"] == 1
    assert lb.book.best_bid()[1] == parse_units("4")


def test_snapshot_before_any_diff_waits_for_the_bridging_diff():
    lb = LocalBook(SPOT)
    assert lb.on_snapshot(snap(50)) is Action.WAIT
    assert lb.valid_book() is None
    assert lb.on_diff(diff(45, 50)) is Action.IGNORED
    assert lb.on_diff(diff(51, 55, bids=[("100.50", "1")])) is Action.SYNCED
    assert lb.valid_book() is not None and lb.update_id == 55


def test_snapshot_arriving_after_many_diffs_applies_all_newer_diffs():
    lb = LocalBook(SPOT)
    for i in range(10):
        lb.on_diff(diff(10 * i + 1, 10 * i + 10, bids=[(f"{90 + i}.00", "1")]))
    assert lb.on_snapshot(snap(35)) is Action.SYNCED
    assert lb.update_id == 100
    assert [p for p, _ in lb.book.export()[0]][:6] == [parse_units(f"{p}.00") for p in (100, 99, 98, 97, 96, 95)]
    assert parse_units("93") in lb.book.bids  # diff 31..40 covers 36: applied
    assert parse_units("92") not in lb.book.bids  # diff 21..30 is contained in the snapshot: dropped


def test_stale_snapshot_asks_for_another():
    engine = SyncEngine(SPOT)
    engine.on_diff(100, 110, None)
    assert engine.on_snapshot(98) is Action.STALE  # 98 + 1 < 100: nothing can bridge it
    assert "snapshot_stale" in kinds(engine)
    assert engine.needs_snapshot
    assert engine.on_snapshot(99) is Action.SYNCED  # 99 + 1 == U: bridged by the first diff


def test_gap_resyncs_and_buffered_newer_diffs_are_applied_not_dropped():
    lb = LocalBook(SPOT)
    lb.on_diff(diff(1, 10))
    lb.on_snapshot(snap(5))
    assert lb.on_diff(diff(11, 20)) is Action.APPLY
    assert lb.on_diff(diff(31, 40, bids=[("100.00", "7")])) is Action.RESYNC  # 21..30 lost
    assert lb.valid_book() is None
    gap = next(e for e in lb.engine.drain_events() if e.kind == "gap")
    assert gap.detail["expected_U"] == 21 and gap.detail["got_U"] == 31
    lb.on_diff(diff(41, 50, asks=[("101.00", "9")]))
    assert lb.on_snapshot(snap(35, bids=[("100.00", "6")])) is Action.SYNCED
    assert lb.update_id == 50
    assert lb.book.best_bid() == (parse_units("100"), parse_units("7"))  # 31..40 re-applied
    assert lb.book.best_ask() == (parse_units("101"), parse_units("9"))


def test_futures_gap_by_pu():
    engine = SyncEngine(FUTURES)
    engine.on_diff(100, 120, 90)
    engine.on_snapshot(110)
    assert engine.on_diff(130, 140, 120) is Action.APPLY
    assert engine.on_diff(150, 160, 145) is Action.RESYNC
    gap = next(e for e in engine.drain_events() if e.kind == "gap")
    assert gap.detail == {"expected_pu": 140, "got_pu": 145, "U": 150, "u": 160}


def test_duplicates_and_late_diffs_are_ignored_while_synced():
    engine = SyncEngine(SPOT)
    engine.on_diff(1, 10, None)
    engine.on_snapshot(5)
    assert engine.on_diff(11, 20, None) is Action.APPLY
    assert engine.on_diff(11, 20, None) is Action.IGNORED
    assert engine.on_diff(1, 10, None) is Action.IGNORED
    assert engine.on_diff(21, 25, None) is Action.APPLY
    assert kinds(engine).count("ignored_stale") == 2


def test_buffer_overflow_resyncs_with_bounded_memory():
    engine = SyncEngine(SPOT, max_buffer=100)
    actions = [engine.on_diff(i * 2 + 1, i * 2 + 2, None) for i in range(250)]
    assert actions.count(Action.RESYNC) == 2
    assert len(engine._buffer) <= 100
    assert kinds(engine).count("buffer_overflow") == 2


def test_discontinuous_buffer_restarts_from_the_newest_chain():
    engine = SyncEngine(SPOT)
    engine.on_diff(1, 10, None)
    engine.on_diff(21, 30, None)  # 11..20 never arrived
    assert engine.on_snapshot(5) is Action.STALE  # cannot be bridged across the hole
    assert engine.on_snapshot(25) is Action.SYNCED


def test_bad_levels_never_reach_the_book():
    lb = LocalBook(SPOT)
    lb.on_diff(diff(1, 10))
    lb.on_snapshot(snap(5))
    before = lb.book.export()
    assert lb.on_diff(diff(11, 20, bids=[("100.00", "2"), ("abc", "1")])) is Action.RESYNC
    assert lb.valid_book() is None
    assert "error" in kinds(lb.engine)
    lb.on_diff(diff(21, 30))
    lb.on_snapshot(snap(25))
    assert lb.book.export() == before  # rebuilt from the new snapshot, untouched by the bad diff


def test_snapshot_ahead_of_the_stream_is_discarded_after_the_diff_bound():
    engine = SyncEngine(SPOT, bridge_max_diffs=3)
    assert engine.on_snapshot(10_000) is Action.WAIT  # ahead of every diff that will come
    assert [engine.on_diff(i, i, None) for i in (1, 2)] == [Action.IGNORED, Action.IGNORED]
    assert engine.on_diff(3, 3, None) is Action.RESYNC
    events = engine.drain_events()
    discarded = [e.detail for e in events if e.kind == "snapshot_discarded"]
    assert discarded == [{"reason": "diffs", "last_update_id": 10_000, "stream_u": 3, "diffs": 3}]
    assert events[-1].kind == "need_snapshot" and engine.needs_snapshot
    # the diffs seen while waiting are kept: a fresh snapshot is bridged from them
    assert engine.on_diff(4, 4, None) is Action.BUFFERED
    assert engine.on_snapshot(2) is Action.SYNCED and engine.local_id == 4


def test_snapshot_ahead_of_the_stream_is_discarded_after_the_time_bound():
    engine = SyncEngine(FUTURES, bridge_max_ns=5_000_000_000)
    assert engine.on_snapshot(10_000, now_ns=1_000_000_000) is Action.WAIT
    assert not engine.expire_held(5_999_999_999)
    assert engine.expire_held(6_000_000_000)
    detail = next(e.detail for e in engine.drain_events() if e.kind == "snapshot_discarded")
    assert detail["reason"] == "time" and detail["held_ms"] == 5000 and detail["stream_u"] is None
    assert engine.needs_snapshot and not engine.expire_held(7_000_000_000)


def test_unbounded_engine_holds_a_snapshot_and_a_rebuild_syncs_from_the_next_one():
    """Without bounds (rebuild, validate) the ahead snapshot is held; the recorder's fresh one, older than it
    but not refuted by the diffs seen meanwhile, replaces it, so the rebuild syncs where the recorder did."""
    engine = SyncEngine(SPOT)
    engine.on_snapshot(10_000)
    for first in (11, 21, 31):
        assert engine.on_diff(first, first + 9, None) is Action.IGNORED
    assert engine.state is State.BRIDGING
    assert engine.on_snapshot(5) is Action.WAIT  # older than every kept diff: the held one stays
    assert engine.on_snapshot(25) is Action.SYNCED and engine.local_id == 40
    engine = SyncEngine(SPOT)
    engine.on_snapshot(10_000)
    engine.on_diff(11, 20, None)
    assert engine.on_snapshot(30) is Action.WAIT  # contains every kept diff: replaces the held one
    assert engine.on_diff(21, 30, None) is Action.IGNORED and engine.on_diff(31, 40, None) is Action.SYNCED


def test_checkpoint_snapshot_while_synced_is_ignored():
    engine = SyncEngine(FUTURES)
    engine.on_diff(100, 120, 90)
    engine.on_snapshot(110)
    assert engine.on_snapshot(500) is Action.IGNORED
    assert engine.state is State.SYNCED


# ---- the book ------------------------------------------------------------------------------------------


def test_book_levels_are_exact_at_both_extremes():
    book = OrderBook()
    book.load([["61737.63000000", "0.00000001"]], [["61737.64000000", "12345678901.00000000"]])
    assert book.best_bid() == (6173763000000, 1)
    assert book.best_ask() == (6173764000000, 1234567890100000000)
    assert format_units(book.best_ask()[1], 8) == "12345678901.00000000"
    book.apply([["0.00001234", "98765432109.12"]], [])
    assert book.bids[1234] == 9876543210912000000


def test_book_absolute_set_zero_removes_and_missing_removal_is_normal():
    book = OrderBook()
    book.load([["10.0", "1"], ["9.0", "2"]], [["11.0", "1"]])
    book.apply([["10.0", "5"], ["8.0", "0"], ["9.0", "0.000"]], [["12.0", "3"]])
    assert book.export() == ([(parse_units("10"), parse_units("5"))], [(parse_units("11"), parse_units("1")),
                                                                         (parse_units("12"), parse_units("3"))])
    assert book.top(1) == ([(parse_units("10"), parse_units("5"))], [(parse_units("11"), parse_units("1"))])


def test_crossed_and_locked_detection():
    book = OrderBook()
    book.load([["10.0", "1"]], [["11.0", "1"]])
    assert not book.is_crossed() and not book.is_locked()
    book.apply([["11.0", "1"]], [])
    assert book.is_locked() and not book.is_crossed()
    book.apply([["12.0", "1"]], [])
    assert book.is_crossed()


# ---- property test: a known true book, a faulty delivery, and the engine ---------------------------------


class TrueMarket:
    """Generates a stream of diffs with per-id history, so the truth at any update id is known."""

    def __init__(self, rng: random.Random, futures: bool, n_events: int):
        self.futures = futures
        self.events: list[DepthUpdate] = []
        self.states: dict[int, tuple[dict, dict]] = {}  # final id of each event -> (bids, asks)
        self.id_states: list[tuple[int, dict, dict]] = []  # every single update id -> book after it
        bids = {parse_units(str(p)): parse_units("1") for p in range(90, 100)}
        asks = {parse_units(str(p)): parse_units("1") for p in range(101, 111)}
        last_u = 1000
        self.initial = (last_u, dict(bids), dict(asks))
        for _ in range(n_events):
            first = last_u + (rng.randint(1, 4) if futures else 1)
            n_ids = rng.randint(1, 4)
            changes_b, changes_a = {}, {}
            update_id = first
            for k in range(n_ids):
                update_id = first + k
                side, changes = (bids, changes_b) if rng.random() < 0.5 else (asks, changes_a)
                base = 90 if side is bids else 101
                price = parse_units(str(base + rng.randint(0, 12)))
                qty = rng.choice([0, parse_units(str(rng.randint(1, 50))) + rng.randint(0, 99)])
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
                changes[price] = qty
                self.id_states.append((update_id, dict(bids), dict(asks)))
            fmt = lambda ch: [[format_units(p, 8), format_units(q, 8)] for p, q in ch.items()]
            self.events.append(
                DepthUpdate("X", 0, first, update_id, fmt(changes_b), fmt(changes_a), None,
                            last_u if futures else None)
            )
            self.states[update_id] = (dict(bids), dict(asks))
            last_u = update_id

    def snapshot_at(self, id_index: int) -> DepthSnapshot:
        update_id, bids, asks = self.id_states[id_index] if id_index >= 0 else self.initial
        fmt = lambda side: [[format_units(p, 8), format_units(q, 8)] for p, q in side.items()]
        return DepthSnapshot(update_id, fmt(bids), fmt(asks))


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    futures=st.booleans(),
    drop=st.floats(0, 0.15),
    duplicate=st.floats(0, 0.15),
    reorder=st.floats(0, 0.15),
    stale=st.floats(0, 0.3),
)
def test_engine_never_exposes_a_wrong_book(seed, futures, drop, duplicate, reorder, stale):
    rng = random.Random(seed)
    market = TrueMarket(rng, futures, 300)
    delivered: list[int] = []  # event indices in delivery order, with faults
    i = 0
    while i < len(market.events):
        r = rng.random()
        if r < drop:
            i += 1
            continue
        if r < drop + reorder and i + 1 < len(market.events):
            delivered += [i + 1, i]
            i += 2
            continue
        delivered.append(i)
        if rng.random() < duplicate:
            delivered.append(i)
        i += 1

    lb = LocalBook(SequenceRule.FUTURES if futures else SequenceRule.SPOT)
    id_index_of_event = {}
    count = 0
    for idx, (update_id, _, _) in enumerate(market.id_states):
        id_index_of_event[update_id] = idx
    pending_snapshot_in = rng.randint(0, 5)
    last_applied_event: int | None = None
    finals = [e.final_update_id for e in market.events]
    for pos, ev_index in enumerate(delivered):
        event = market.events[ev_index]
        before_id = lb.update_id
        action = lb.on_diff(event)
        if action is Action.APPLY:
            # only the direct successor of the book's event may be applied: every gap must resync
            assert last_applied_event is not None and before_id == finals[ev_index - 1]
        if action in (Action.APPLY, Action.SYNCED):
            last_applied_event = ev_index
        if lb.engine.needs_snapshot or lb.engine.state is State.BRIDGING:
            pending_snapshot_in -= 1
            if pending_snapshot_in <= 0 and lb.engine.needs_snapshot:
                # the venue has moved on: its current id is somewhere inside a not yet delivered event
                newest = min(ev_index + rng.randint(0, 3), len(market.events) - 1)
                hi = id_index_of_event[finals[newest]]
                idx = hi - rng.randint(0, 3)
                if rng.random() < stale:
                    idx -= rng.randint(5, 60)  # a stale snapshot
                snap_action = lb.on_snapshot(market.snapshot_at(max(idx, -1)))
                if snap_action is Action.SYNCED:
                    last_applied_event = None if lb.update_id is None else finals.index(lb.update_id)
                pending_snapshot_in = rng.randint(0, 5)
        book = lb.valid_book()
        if book is not None:
            count += 1
            true_bids, true_asks = market.states[lb.update_id]
            assert dict(book.bids) == true_bids and dict(book.asks) == true_asks
    if drop == 0 and reorder == 0 and stale == 0:
        assert count > 0  # a clean stream does get synced


def test_every_injected_gap_resyncs():
    rng = random.Random(7)
    for futures in (False, True):
        market = TrueMarket(rng, futures, 200)
        lb = LocalBook(SequenceRule.FUTURES if futures else SequenceRule.SPOT)
        lb.on_snapshot(market.snapshot_at(0))
        dropped = {20, 50, 51, 120}
        resyncs = 0
        for k, event in enumerate(market.events):
            if k in dropped:
                continue
            action = lb.on_diff(event)
            if action is Action.RESYNC:
                resyncs += 1
                lb.on_snapshot(market.snapshot_at(market.id_states.index(
                    next(s for s in market.id_states if s[0] == event.final_update_id))))
        assert resyncs == 3  # 20, 50-51 (one gap), 120


if __name__ == "__main__":
    pytest.main([__file__])


def test_futures_snapshot_at_previous_u_is_continued_by_pu():
    """Futures ids jump: a snapshot taken right after an event (lastUpdateId == its u) is continued by the
    next event, whose pu equals lastUpdateId although its U is larger."""
    lb = LocalBook(FUTURES)
    assert lb.on_snapshot(snap(200)) is Action.WAIT
    assert lb.on_diff(diff(205, 210, pu=200, bids=[("100.00", "8")])) is Action.SYNCED
    assert lb.book.best_bid() == (parse_units("100"), parse_units("8"))
    lb2 = LocalBook(FUTURES)
    lb2.on_diff(diff(205, 210, pu=200))
    assert lb2.on_snapshot(snap(200)) is Action.SYNCED
    lb3 = LocalBook(FUTURES)
    lb3.on_diff(diff(205, 210, pu=201))
    assert lb3.on_snapshot(snap(200)) is Action.STALE  # an id between pu and U, not continued exactly


def test_snapshot_retries_back_off_after_a_few_and_warn_once_per_escalation():
    from recorder.resync import SnapshotRetries

    retries = SnapshotRetries(base_s=0.25, max_s=60.0)
    attempts = [retries.failed("BTCUSDT", 100.0) for _ in range(12)]
    assert [a.delay_s for a in attempts] == [0.25] * 4 + [0.5, 1, 2, 4, 8, 16, 32, 60]
    assert [a.failures for a in attempts if a.warn] == [1, 2, 4, 8]
    assert not retries.ready("BTCUSDT", 159.0) and retries.ready("BTCUSDT", 160.0)
    assert retries.ready("ETHUSDT", 100.0)  # per symbol
    assert retries.succeeded("BTCUSDT") == 12 and retries.ready("BTCUSDT", 100.0)
    assert retries.failed("BTCUSDT", 200.0) == (1, 0.25, True)
