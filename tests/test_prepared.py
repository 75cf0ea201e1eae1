"""The prepared day: built once as the reference builder's arrays, mapped afterwards, rebuilt (one log line)
whenever it is stale, truncated or of another version; chunks end at END rows; `replay prepare`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recorder.markets import get_market
from replay.engine import TRADE as TRADE_CHANNEL
from replay.engine import DayReplay
from replay.prepared import META, PreparedDay, load_or_build
from replay.prepared_format import CLEAR, COLUMNS, EMPTY, END, INVALID, TIME, VALID, arrays_from_events
from schemas import berlin_day_bounds, table_from_columns, write_partition

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "realdata" / "hftbacktest"
SPOT = get_market("spot")
DATE = "2024-05-01"
MS = 1_000_000
UNIT = 100_000_000


def write_synthetic_day(root: Path) -> None:
    """A spot day with every situation the rows distinguish: diffs buffered before the first snapshot, a
    bridged sync, stale and empty diffs, a checkpoint snapshot while synced, a gap (invalid, time passes),
    a stale snapshot, a resync, level removals and trades on both sides."""
    rng = np.random.default_rng(3)
    t0 = berlin_day_bounds(DATE)[0] + 10 * 3600 * 10**9
    depth = {k: [] for k in ("recv_ts", "seq", "event_ts", "transact_ts", "first_update_id", "final_update_id",
                             "prev_final_update_id", "side", "price", "qty")}
    snaps = {k: [] for k in ("recv_ts", "seq", "last_update_id", "event_ts", "transact_ts", "side", "price", "qty",
                             "level", "requested_limit")}
    trades = {k: [] for k in ("recv_ts", "seq", "event_ts", "trade_ts", "trade_id", "price", "qty",
                              "buyer_is_maker", "best_match", "order_type")}
    seq, now, update_id = 0, t0, 100

    def tick() -> tuple[int, int]:
        nonlocal seq, now
        seq += 1
        now += int(rng.integers(1, 50)) * MS
        return seq, now

    def diff(first: int, final: int, levels: list[tuple[str, int, int]]) -> None:
        s, t = tick()
        for side, price, qty in levels or [(None, None, None)]:
            for name, value in zip(depth, (t, s, t - MS, None, first, final, None, side, price, qty)):
                depth[name].append(value)

    def levels() -> list[tuple[str, int, int]]:
        out = []
        for _ in range(int(rng.integers(1, 6))):
            side = "bid" if rng.random() < 0.5 else "ask"
            base = 60_000 * UNIT + (-1 if side == "bid" else 1) * int(rng.integers(1, 40)) * UNIT // 100
            out.append((side, base, int(rng.integers(0, 4)) * UNIT // 1000))  # qty 0: removal
        return out

    def snapshot(last_id: int) -> None:
        s, t = tick()
        book = [("bid", 60_000 * UNIT - i * UNIT // 100, (i + 1) * UNIT // 1000) for i in range(1, 21)]
        book += [("ask", 60_000 * UNIT + i * UNIT // 100, (i + 2) * UNIT // 1000) for i in range(1, 21)]
        for level, (side, price, qty) in enumerate(book):
            for name, value in zip(snaps, (t, s, last_id, None, None, side, price, qty, level, 20)):
                snaps[name].append(value)

    def trade() -> None:
        s, t = tick()
        for name, value in zip(trades, (t, s, t - MS, t - 2 * MS, s, 60_000 * UNIT + int(rng.integers(-5, 5)) * UNIT // 100,
                                        int(rng.integers(1, 9)) * UNIT // 1000, bool(rng.random() < 0.5), True, None)):
            trades[name].append(value)

    last_diff: tuple = ()

    def diffs(count: int) -> None:
        nonlocal update_id, last_diff
        for _ in range(count):
            first, update_id = update_id + 1, update_id + int(rng.integers(1, 4))
            last_diff = (first, update_id, levels())
            diff(*last_diff)
            if rng.random() < 0.3:
                trade()

    diffs(5)  # buffered: the book is invalid (TIME rows)
    snapshot(update_id - 2)  # bridged by a buffered diff: valid, CLEAR + full book
    diffs(10)
    diff(update_id - 30, update_id - 25, levels())  # late re-delivery of an old diff, ignored: EMPTY
    diff(*last_diff)  # the last diff again: ignored, its (same) levels written again
    diff(update_id + 1, update_id + 1, [])  # empty diff: EMPTY
    update_id += 1
    snapshot(update_id)  # checkpoint while synced: CLEAR + the (unchanged) full book
    diffs(10)
    update_id += 5  # gap: INVALID
    diffs(8)
    snapshot(update_id - 20)  # older than the buffer: stale, still invalid (TIME)
    snapshot(update_id - 1)  # bridged: valid again
    diffs(20)
    exchange = SPOT.exchange
    write_partition(root, exchange, "depth", DATE, "BTCUSDT", table_from_columns("depth", depth), "part-0")
    write_partition(root, exchange, "snapshots", DATE, "BTCUSDT", table_from_columns("snapshots", snaps), "part-0")
    write_partition(root, exchange, "trades", DATE, "BTCUSDT", table_from_columns("trades", trades), "part-0")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared") / "data"
    write_synthetic_day(root)
    return root


def reference(root: Path, market=SPOT, date: str = DATE, symbol: str = "BTCUSDT"):
    """The reference builder's arrays for a day, and the replay they came from."""
    replay = DayReplay(root, market, date, [symbol], channels=(TRADE_CHANNEL,))
    return arrays_from_events(replay.events(), replay, symbol), replay


def assert_same(got, expected) -> None:
    assert (got.price_step, got.qty_step) == (expected.price_step, expected.qty_step)
    for name, dtype in COLUMNS.items():
        column = getattr(got, name)
        assert column.dtype == dtype, name
        assert np.array_equal(column, getattr(expected, name)), name


def builds(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "replay.prepared"]


def test_synthetic_day_covers_every_row_kind(synthetic):
    expected, _ = reference(synthetic)
    assert set(np.unique(expected.kind)) >= {TIME, CLEAR, EMPTY, VALID, INVALID}
    assert list(expected.kind[expected.kind >= VALID]) == [VALID, INVALID, VALID]
    assert np.count_nonzero(expected.kind == CLEAR) == 3  # two syncs and the checkpoint


def test_build_then_load_equals_the_reference_and_the_second_load_maps(synthetic, tmp_path, caplog):
    expected, replay = reference(synthetic)
    caplog.set_level(logging.INFO, "replay.prepared")
    day = load_or_build(synthetic, SPOT, DATE, "BTCUSDT", cache=tmp_path)
    assert day.built and len(builds(caplog)) == 1
    assert_same(day.arrays(), expected)
    meta = day.meta
    assert meta.rows == len(expected) and meta.first_event_ns == replay.first_event_ns()
    assert (meta.first_recv_ts, meta.last_recv_ts) == (expected.recv_ts[0], expected.recv_ts[-1])
    priced = expected.price[expected.price != 0]
    assert (meta.price_min, meta.price_max) == (priced.min(), priced.max())
    assert day.path == tmp_path / "binance-spot" / DATE / "BTCUSDT"

    caplog.clear()
    again = load_or_build(synthetic, SPOT, DATE, "BTCUSDT", cache=tmp_path)
    assert not again.built and builds(caplog) == []
    assert isinstance(again.arrays().price, np.memmap)
    assert_same(again.arrays(), expected)


def test_streaming_reference_build_equals_the_reference(synthetic, tmp_path):
    expected, _ = reference(synthetic)
    day = PreparedDay(synthetic, SPOT, DATE, "BTCUSDT", tmp_path)
    day.build(reference=True)
    assert_same(day.arrays(), expected)


@pytest.mark.parametrize(("batch_rows", "fold_levels"), [(5, 3), (64, 1 << 20)])
def test_columnar_build_across_small_batches_and_folds_equals_the_reference(synthetic, tmp_path, monkeypatch,
                                                                            batch_rows, fold_levels):
    monkeypatch.setattr("replay.prepared_columnar.BATCH_ROWS", batch_rows)
    monkeypatch.setattr("replay.prepared_columnar.FOLD_LEVELS", fold_levels)
    monkeypatch.setattr("replay.prepared.BUILD_BLOCK_ROWS", 10)
    expected, _ = reference(synthetic)
    day = load_or_build(synthetic, SPOT, DATE, "BTCUSDT", cache=tmp_path)
    assert_same(day.arrays(), expected)


def test_trades_out_of_arrival_order_are_built_by_the_reference(synthetic, tmp_path, caplog):

    root = tmp_path / "data"
    shutil.copytree(synthetic, root)
    late = berlin_day_bounds(DATE)[0] + 20 * 3600 * 10**9
    unordered = table_from_columns("trades", {
        "recv_ts": [late, late - 5 * MS], "seq": [10**6, 10**6 + 1], "event_ts": [0, 0], "trade_ts": [0, 0],
        "trade_id": [1, 2], "price": [60_000 * UNIT, 60_001 * UNIT], "qty": [UNIT // 1000, UNIT // 100],
        "buyer_is_maker": [True, False], "best_match": [True, True], "order_type": [None, None]})
    write_partition(root, "binance-spot", "trades", DATE, "BTCUSDT", unordered, "part-1")
    caplog.set_level(logging.INFO, "replay.prepared")
    expected, _ = reference(root)
    day = load_or_build(root, SPOT, DATE, "BTCUSDT", cache=tmp_path / "cache")
    assert any("trades not in arrival order; building with the reference builder" in line for line in builds(caplog))
    assert_same(day.arrays(), expected)


def test_default_cache_is_not_seen_as_dataset_tables(synthetic):
    from schemas import available

    before = available(synthetic)
    day = load_or_build(synthetic, SPOT, DATE, "BTCUSDT")
    assert day.path.is_relative_to(synthetic / "prepared")
    assert available(synthetic) == before


@pytest.mark.parametrize("rows", [1, 7, 64, 10_000])
def test_chunks_end_at_end_rows_and_concatenate_to_the_whole(synthetic, tmp_path, rows):
    day = load_or_build(synthetic, SPOT, DATE, "BTCUSDT", cache=tmp_path)
    whole = day.arrays()
    chunks = list(day.chunks(rows=rows))
    assert all(chunk.flags[-1] & END for chunk in chunks)
    # longer than asked only to hold one whole message
    assert all(len(chunk) <= rows or np.count_nonzero(chunk.flags & END) == 1 for chunk in chunks)
    for name in COLUMNS:
        assert np.array_equal(np.concatenate([getattr(c, name) for c in chunks]), getattr(whole, name)), name


def rebuilt_because(root: Path, cache: Path, caplog) -> str:
    """Load again: the day must be rebuilt with exactly one log line; that line."""
    caplog.clear()
    day = load_or_build(root, SPOT, DATE, "BTCUSDT", cache=cache)
    lines = builds(caplog)
    assert day.built and len(lines) == 1, lines
    assert day.problem() is None  # the rebuilt day is current
    return lines[0]


def test_touched_or_changed_source_file_rebuilds(synthetic, tmp_path, caplog):
    load_or_build(synthetic, SPOT, DATE, "BTCUSDT", cache=tmp_path)
    trades = next((synthetic / "binance-spot" / "trades").rglob("*.parquet"))
    stat = trades.stat()
    os.utime(trades, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert f"stale: trades file {trades.name} changed" in rebuilt_because(synthetic, tmp_path, caplog)


def add_late_trade(root: Path) -> None:
    extra = table_from_columns("trades", {
        "recv_ts": [berlin_day_bounds(DATE)[0] + 20 * 3600 * 10**9], "seq": [10**6], "event_ts": [0], "trade_ts": [0],
        "trade_id": [1], "price": [60_000 * UNIT], "qty": [UNIT // 1000], "buyer_is_maker": [True],
        "best_match": [True], "order_type": [None]})
    write_partition(root, "binance-spot", "trades", DATE, "BTCUSDT", extra, "part-1")


def test_new_source_file_rebuilds_with_its_rows(synthetic, tmp_path, caplog):

    root = tmp_path / "data"
    shutil.copytree(synthetic, root)
    first = load_or_build(root, SPOT, DATE, "BTCUSDT", cache=tmp_path / "cache").meta.rows
    add_late_trade(root)
    assert "stale: new trades file part-1.parquet" in rebuilt_because(root, tmp_path / "cache", caplog)
    assert PreparedDay(root, SPOT, DATE, "BTCUSDT", tmp_path / "cache").load_or_build().meta.rows == first + 1


def test_a_reader_keeps_the_day_it_loaded_while_another_rebuilds_it(synthetic, tmp_path):

    root = tmp_path / "data"
    shutil.copytree(synthetic, root)
    reader = load_or_build(root, SPOT, DATE, "BTCUSDT", cache=tmp_path / "cache")
    loaded = {name: np.array(column) for name, column in reader.arrays().columns().items()}
    chunks = reader.chunks(rows=50)
    first = next(chunks)
    add_late_trade(root)
    assert load_or_build(root, SPOT, DATE, "BTCUSDT", cache=tmp_path / "cache").built  # replaced on disk
    rest = list(chunks)
    for name in COLUMNS:
        assert np.array_equal(np.concatenate([getattr(c, name) for c in [first, *rest]]), loaded[name]), name
    with pytest.raises(RuntimeError, match="changed since it was loaded"):
        next(reader.chunks())


@pytest.mark.parametrize("column", ["price", "flags"])
def test_truncated_column_file_rebuilds(synthetic, tmp_path, caplog, column):
    day = load_or_build(synthetic, SPOT, DATE, "BTCUSDT", cache=tmp_path)
    path = day.path / f"{column}.npy"
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size - 3)
    assert f"truncated: {column}.npy holds" in rebuilt_because(synthetic, tmp_path, caplog)


def test_missing_column_or_garbled_meta_rebuilds(synthetic, tmp_path, caplog):
    day = load_or_build(synthetic, SPOT, DATE, "BTCUSDT", cache=tmp_path)
    (day.path / "qty.npy").unlink()
    assert "qty.npy is unreadable" in rebuilt_because(synthetic, tmp_path, caplog)
    (day.path / META).write_text('{"rows": ')
    assert f"unreadable {META}" in rebuilt_because(synthetic, tmp_path, caplog)


@pytest.mark.parametrize(("key", "value", "says"), [("schema_version", "1.0", "schema 1.0 != "),
                                                    ("format_version", 0, "format 0 != ")])
def test_other_version_rebuilds(synthetic, tmp_path, caplog, key, value, says):
    day = load_or_build(synthetic, SPOT, DATE, "BTCUSDT", cache=tmp_path)
    meta = json.loads((day.path / META).read_text())
    (day.path / META).write_text(json.dumps({**meta, key: value}))
    assert says in rebuilt_because(synthetic, tmp_path, caplog)


def test_a_failed_build_leaves_the_old_day_and_no_partial_one(synthetic, tmp_path, monkeypatch):
    day = load_or_build(synthetic, SPOT, DATE, "BTCUSDT", cache=tmp_path)
    before = {p.name: p.read_bytes() for p in day.path.iterdir()}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("replay.prepared._divide_in_place", crash)
    with pytest.raises(OSError, match="disk full"):
        PreparedDay(synthetic, SPOT, DATE, "BTCUSDT", tmp_path).build()
    assert {p.name: p.read_bytes() for p in day.path.iterdir()} == before
    assert [p.name for p in day.path.parent.iterdir()] == ["BTCUSDT"]


def test_work_directories_of_a_killed_build_are_removed_by_the_next(synthetic, tmp_path):
    day = PreparedDay(synthetic, SPOT, DATE, "BTCUSDT", tmp_path)
    day.path.parent.mkdir(parents=True)
    abandoned = day.path.parent / ".BTCUSDT.building-999999999-x1"  # no such process
    running = day.path.parent / f".BTCUSDT.building-{os.getpid()}-x2"  # a build still under way
    for directory in (abandoned, running):
        directory.mkdir()
        (directory / "price.npy").write_bytes(b"partial")
    day.load_or_build()
    assert not abandoned.exists() and running.exists()
    assert day.problem() is None


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "replay.cli", "prepare", *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT)


def test_cli_prepares_then_reports_up_to_date(synthetic, tmp_path):
    cache = tmp_path / "cache"
    first = run_cli("--date", "20240501", "--data", str(synthetic), "--cache", str(cache), "--no-progress")
    assert first.returncode == 0, first.stderr
    rows = PreparedDay(synthetic, SPOT, DATE, "BTCUSDT", cache).load_or_build().meta.rows
    path = cache / "binance-spot" / DATE / "BTCUSDT"
    assert first.stdout.startswith(f"BTCUSDT: {rows:,} rows, built in ") and first.stdout.rstrip().endswith(str(path))
    second = run_cli("--date", DATE, "--data", str(synthetic), "--cache", str(cache), "--symbols", "btcusdt")
    assert second.returncode == 0 and ", up to date, " in second.stdout
    forced = run_cli("--date", DATE, "--data", str(synthetic), "--cache", str(cache), "--force")
    assert forced.returncode == 0 and ", built in " in forced.stdout
    assert "(forced)" in forced.stderr


def test_cli_prepares_every_day_of_a_range(synthetic, tmp_path):
    from tests.synthetic_days import copy_day

    root = tmp_path / "data"
    shutil.copytree(synthetic, root)
    later = copy_day(root, SPOT.exchange, DATE, 1)
    cache = tmp_path / "cache"
    result = run_cli("--date", f"{DATE}..{later}", "--data", str(root), "--cache", str(cache), "--no-progress")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"{DATE} BTCUSDT", f"{later} BTCUSDT"]
    assert all(", built in " in line for line in lines)
    assert PreparedDay(root, SPOT, later, "BTCUSDT", cache).problem() is None


@pytest.mark.parametrize(("args", "says"), [
    (["--date", "2024-05-02"], "no data for 2024-05-02"),
    (["--date", "2024-05-02..2024-04-30"], "is before the start"),
    (["--date", DATE, "--symbols", "ETHUSDT"], "no ETHUSDT on 2024-05-01; available symbols: BTCUSDT"),
    (["--date", DATE, "--market", "usdm"], "no usdm data (--market usdm)"),
    (["--date", "yesterdayish"], "yesterdayish"),
])
def test_cli_bad_input_is_one_line_and_exit_2(synthetic, tmp_path, args, says):
    from typer.testing import CliRunner

    from replay.cli import app

    result = CliRunner().invoke(app, ["prepare", *args, "--data", str(synthetic), "--cache", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("replay: error: ") and says in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("capture", "market"), [("spot_btcusdt_20240808.gz", "spot"),
                                                 ("usdm_btcusdt_20240808.gz", "usdm"),
                                                 ("cm_btcusd_perp_20240808.gz", "coinm")])
def test_real_capture_prepares_as_the_reference(tmp_path, caplog, capture, market):
    if not (REAL / capture).exists():
        pytest.skip("../shared/realdata is not available")
    from recorder.importer import import_captures

    root = tmp_path / "real"
    import_captures([REAL / capture], market, root)
    mk = get_market(market)
    symbol = DayReplay(root, mk, "2024-08-09").symbols[0]
    expected, _ = reference(root, mk, "2024-08-09", symbol)
    caplog.set_level(logging.INFO, "replay.prepared")
    day = load_or_build(root, mk, "2024-08-09", symbol)
    assert len(expected) > 100_000
    assert_same(day.arrays(), expected)
    assert not any("reference builder" in line for line in builds(caplog))  # the columnar builder made it
