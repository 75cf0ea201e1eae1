"""The one walk of a recorded day: replay and validation agree on where a book is valid, and replay tells an
applied diff from a dropped one.

Datasets: a synthetic spot recording with dropped diffs (gaps and resyncs) and, when ../shared is there, the
real spot BTCUSDT capture of 2024-08-08 imported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder.importer import import_captures
from recorder.markets import get_market
from recorder.sync import Action
from recorder.validate import validate_day
from replay.engine import BOOK_INVALID, BOOK_VALID, DEPTH, SNAPSHOT, DayReplay

REAL = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "hftbacktest"
SPOT = get_market("spot")


def replay_spans(root: Path, date: str, symbol: str) -> tuple[list[tuple[int, int]], int, int]:
    """(valid spans, first, last arrival of a book message) as replay's book_valid/book_invalid events say."""
    spans: list[tuple[int, int]] = []
    since = first = last = None
    for event in DayReplay(root, SPOT, date, [symbol], channels=()).events():
        if event.kind == BOOK_VALID:
            since = event.recv_ts
        elif event.kind == BOOK_INVALID:
            spans.append((since, event.recv_ts))
            since = None
        else:
            first = event.recv_ts if first is None else first
            last = event.recv_ts if last is None else max(last, event.recv_ts)
    if since is not None:
        spans.append((since, last))
    return spans, first, last


def unsynced(spans: list[tuple[int, int]], first: int, last: int) -> list[list[int]]:
    """The gaps between valid spans over [first, last], as the validation report lists them."""
    out, cursor = [], first
    for a, b in spans:
        if a > cursor:
            out.append([cursor, a])
        cursor = max(cursor, b)
    if last > cursor:
        out.append([cursor, last])
    return out


def assert_same_valid_spans(root: Path, date: str, symbol: str) -> list[tuple[int, int]]:
    spans, first, last = replay_spans(root, date, symbol)
    report = validate_day(root, SPOT, date, [symbol])["symbols"][symbol]
    coverage = report["checks"]["coverage"]["figures"]
    assert coverage["sync_intervals"] == len(spans)
    assert report["series"]["unsynced"] == unsynced(spans, first, last)
    assert coverage["synced_seconds"] == round(sum(b - a for a, b in spans) / 1e9, 3)
    return spans


@pytest.fixture(scope="module")
def gappy_day(tmp_path_factory) -> tuple[Path, str]:
    from tests.test_recorder_venue import record

    out, _, code = record(tmp_path_factory.mktemp("gappy"), "spot", ["BTCUSDT"], "drop=0.03", seconds=4.0)
    assert code == 0
    return out, next((out / SPOT.exchange / "depth").glob("date=*")).name.split("=")[1]


def test_replay_and_validation_agree_on_valid_spans_through_resyncs(gappy_day):
    spans = assert_same_valid_spans(*gappy_day, "BTCUSDT")
    assert len(spans) >= 2  # the dropped diffs broke the book and it was rebuilt


def test_replay_events_carry_the_sync_action(gappy_day):
    out, date = gappy_day
    replay = DayReplay(out, SPOT, date, ["BTCUSDT"], channels=())
    book_actions, other_actions = [], []
    valid_diffs = []  # (action, the diff's final update id, the book's update id after it)
    for event in replay.events():
        if event.kind in (DEPTH, SNAPSHOT):
            book_actions.append(event.action)
            if event.kind == DEPTH and event.book is not None:
                valid_diffs.append((event.action, event.data.final_update_id, replay.books["BTCUSDT"].update_id))
        else:
            other_actions.append(event.action)
    assert {Action.APPLY, Action.SYNCED, Action.RESYNC} <= set(book_actions)
    assert other_actions and set(other_actions) == {None}  # validity events carry no action
    applied = [(final, local_id) for action, final, local_id in valid_diffs if action is Action.APPLY]
    assert applied and all(final == local_id for final, local_id in applied)  # the book is at the applied diff
    dropped = [(final, local_id) for action, final, local_id in valid_diffs if action is Action.IGNORED]
    assert all(final <= local_id for final, local_id in dropped)  # what it drops, the book already holds


def test_replay_and_validation_agree_on_valid_spans_of_a_real_capture(tmp_path):
    capture = REAL / "spot_btcusdt_20240808.gz"
    if not capture.exists():
        pytest.skip(f"{capture} not available")
    result = import_captures([capture], SPOT, tmp_path)
    spans = assert_same_valid_spans(tmp_path, min(result.dates).isoformat(), "BTCUSDT")
    assert spans
