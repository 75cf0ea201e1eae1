"""Book rebuild only (`replay --strategy none`): the numba array book over the prepared day ends (and passes
through chunk ends) with the top of book of the recorder's `LocalBook` under `DayReplay`, and counts the
same level updates; the command prints one line per symbol and writes no backtest files."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from recorder.markets import get_market
from replay.books import BookReplayStats, replay_book_events, replay_books
from replay.cli import app
from replay.engine import BOOK_VALID, TRADE, DayReplay
from replay.prepared import load_or_build
from replay.prepared_format import LEVEL, MessageRows
from tests.test_prepared import DATE, REAL, SPOT, write_synthetic_day


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("books") / "data"
    write_synthetic_day(root)
    return root


def reference_tops(root: Path, market, date: str, symbol: str) -> tuple[list[tuple], int]:
    """From `DayReplay`: the `LocalBook`'s (best bid, best ask) after each of the symbol's messages (None
    while invalid or a side is empty), and the level updates as the prepared rows count them. At a
    `book_valid` event the live book is already the new one, which the prepared rows carry in the next
    message: there the top is not known yet (None)."""
    replay = DayReplay(root, market, date, [symbol], channels=(TRADE,))
    rows = MessageRows(replay)
    tops, levels = [], 0
    for event in replay.events():
        message = rows(event)
        if not message:
            continue
        levels += sum(1 for row in message if row[0] == LEVEL)
        book = None if event.kind is BOOK_VALID else replay.books[symbol].valid_book()
        tops.append((book.best_bid()[0] if book and book.bids else None,
                     book.best_ask()[0] if book and book.asks else None))
    return tops, levels


def rebuilt_with_chunk_tops(day, chunk_rows: int) -> tuple[BookReplayStats, list[tuple]]:
    """`replay_books` with the (messages so far, best bid, best ask) seen after each chunk."""
    seen = []
    stats = replay_books(day, chunk_rows, lambda s: seen.append((s.messages, s.best_bid, s.best_ask)))
    return stats, seen


def assert_matches(stats: BookReplayStats, seen: list[tuple], tops: list[tuple], levels: int) -> None:
    assert (stats.messages, stats.level_updates) == (len(tops), levels)
    assert (stats.best_bid, stats.best_ask) == tops[-1]
    assert [(bid, ask) for _, bid, ask in seen] == [tops[messages - 1] for messages, _, _ in seen]


@pytest.mark.parametrize("chunk_rows", [1 << 20, 5])
def test_prepared_rebuild_equals_the_local_book_across_resyncs(synthetic, tmp_path, chunk_rows):
    tops, levels = reference_tops(synthetic, SPOT, DATE, "BTCUSDT")
    day = load_or_build(synthetic, SPOT, DATE, "BTCUSDT", cache=tmp_path)
    stats, seen = rebuilt_with_chunk_tops(day, chunk_rows)
    assert_matches(stats, seen, tops, levels)
    assert stats.valid_spans == 2 and None not in tops[-1]  # synced, lost, resynced: a valid book at the end
    if chunk_rows == 5:
        assert len(seen) > 20  # the top compared at many points, some while the book was invalid
        assert any(bid is None for _, bid, _ in seen) and any(bid is not None for _, bid, _ in seen)


def test_event_path_gives_the_prepared_paths_stats(synthetic, tmp_path):
    day = load_or_build(synthetic, SPOT, DATE, "BTCUSDT", cache=tmp_path)
    prepared = replay_books(day)
    replay = DayReplay(synthetic, SPOT, DATE, ["BTCUSDT"], channels=(TRADE,))
    (events,) = replay_book_events(replay.events(), replay).values()
    assert events.level_updates > 100
    assert (events.messages, events.level_updates, events.valid_spans, events.best_bid, events.best_ask) == (
        prepared.messages, prepared.level_updates, prepared.valid_spans, prepared.best_bid, prepared.best_ask)


def test_real_capture_rebuild_equals_the_local_book(tmp_path):
    capture = REAL / "usdm_btcusdt_20240808.gz"
    if not capture.exists():
        pytest.skip("../shared/realdata is not available")
    from recorder.importer import import_captures

    usdm = get_market("usdm")
    root = tmp_path / "real"
    import_captures([capture], usdm, root)
    tops, levels = reference_tops(root, usdm, "2024-08-09", "BTCUSDT")
    day = load_or_build(root, usdm, "2024-08-09", "BTCUSDT")
    stats, seen = rebuilt_with_chunk_tops(day, 20_000)
    assert levels > 100_000 and len(seen) > 10 and None not in tops[-1]
    assert_matches(stats, seen, tops, levels)


def run(root: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["--date", DATE, "--data", str(root), "--strategy", "none", "--no-progress",
                                    *args])


def test_cli_max_prints_one_line_per_symbol_and_writes_no_backtest_files(synthetic, tmp_path):
    expected = replay_books(load_or_build(synthetic, SPOT, DATE, "BTCUSDT", cache=tmp_path))
    result = run(synthetic, "--speed", "max", "--out", str(tmp_path / "reports"))
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"BTCUSDT: {expected.messages:,} messages, {expected.level_updates:,} level updates in ")
    assert line.endswith("2 valid spans; final best bid 59999.99, best ask 60000.01")
    assert not (tmp_path / "reports").exists() and not (synthetic / "reports").exists()
    assert (synthetic / "prepared").is_dir()  # at max the prepared day is used (built on the first run)


def test_cli_paced_replays_the_events_with_the_same_line_and_lateness(synthetic, tmp_path):
    at_max = run(synthetic, "--speed", "max")
    paced = run(synthetic, "--speed", "1000x", "--out", str(tmp_path / "reports"))
    assert paced.exit_code == 0, paced.output
    line, lateness = paced.stdout.splitlines()
    assert line.split(" in ")[0] == at_max.stdout.split(" in ")[0]
    assert line.endswith(at_max.stdout.strip().split("; ")[-1])
    assert lateness.startswith("replayed ") and " events; lateness p50 " in lateness
    assert not (tmp_path / "reports").exists()
