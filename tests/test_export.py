"""`replay export`: hftbacktest npz and Tardis CSV files of a recorded day.

Datasets: a synthetic spot recording with dropped diffs (gaps, resyncs: runs everywhere) and, when
../shared is there, the real hftbacktest captures of 2024-08-08 imported for usdm and spot. Every export is
checked on its own terms (dtype/columns, event order, snapshot first, exact book at the end against the
dataset's own rebuild); hftbacktest itself loads the npz when /tmp/hbt-venv has it installed.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from recorder.importer import import_captures
from recorder.markets import get_market
from recorder.numbers import parse_units
from recorder.rebuild import rebuild
from recorder.sync import Action
from replay import export as ex
from schemas import decimal_units, read_table

REAL = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "hftbacktest"
HBT_PYTHON = Path("/tmp/hbt-venv/bin/python")
TOP = 20
FLAGS = ex.EXCH_EVENT | ex.LOCAL_EVENT


class Day:
    """A dataset day plus what the dataset's own rebuild says about it."""

    def __init__(self, root: Path, market: str, symbol: str, tick: str, lot: str):
        self.root, self.market, self.symbol, self.tick, self.lot = root, market, symbol, tick, lot
        exchange = get_market(market).exchange
        self.date = next((root / exchange / "depth").glob("date=*")).name.split("=")[1]
        self.syncs = 0
        self.resyncs = 0
        self.top = None  # the last valid book's top levels, exact units
        for _, _, _, action, local in rebuild(root, get_market(market), self.date, symbol):
            self.syncs += action is Action.SYNCED
            self.resyncs += action is Action.RESYNC
            book = local.valid_book()
            if book is not None and action in (Action.SYNCED, Action.APPLY):
                self.top = book.top(TOP)
        assert self.top is not None and self.syncs >= 1


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Day:
    from tests.test_recorder_venue import record

    tmp = tmp_path_factory.mktemp("synthetic")
    out, _, _ = record(tmp, "spot", ["BTCUSDT"], "drop=0.03", seconds=4.0)
    return Day(out, "spot", "BTCUSDT", "0.01", "0.00001")


def _real(tmp_path_factory, name: str, market: str, tick: str, lot: str) -> Day:
    if not (REAL / name).exists():
        pytest.skip(f"{REAL / name} not available")
    out = tmp_path_factory.mktemp(market) / "data"
    import_captures([REAL / name], market, out)
    return Day(out, market, "BTCUSDT", tick, lot)


@pytest.fixture(scope="module")
def real_usdm(tmp_path_factory) -> Day:
    return _real(tmp_path_factory, "usdm_btcusdt_20240808.gz", "usdm", "0.1", "0.001")


@pytest.fixture(scope="module")
def real_spot(tmp_path_factory) -> Day:
    return _real(tmp_path_factory, "spot_btcusdt_20240808.gz", "spot", "0.01", "0.00001")


DAYS = ["synthetic", "real_usdm", "real_spot"]


@pytest.fixture(params=DAYS)
def day(request) -> Day:
    return request.getfixturevalue(request.param)


_npz_cache: dict[tuple[Path, str], Path] = {}


def npz_of(day: Day, out: Path) -> Path:
    key = (day.root, day.market)
    if key not in _npz_cache:
        _npz_cache[key] = ex.export_hftbacktest(day.root, day.market, day.date, day.symbol, out)
    return _npz_cache[key]


def as_float_top(top) -> tuple[list, list]:
    return tuple([(p / 1e8, q / 1e8) for p, q in side] for side in top)


# ---- hftbacktest -----------------------------------------------------------------------------------------------

def assert_event_order(data: np.ndarray) -> None:
    """hftbacktest's validate_event_order, written out independently, plus: every row reaches both processors."""
    ev = data["ev"]
    exch_rows, local_rows = (ev & ex.EXCH_EVENT) != 0, (ev & ex.LOCAL_EVENT) != 0
    assert (exch_rows | local_rows).all()
    assert np.all(np.diff(data["exch_ts"][exch_rows]) >= 0), "exchange events out of order"
    assert np.all(np.diff(data["local_ts"][local_rows]) >= 0), "local events out of order"

    def rows(mask):
        part = data[mask]
        return Counter(zip((part["ev"] & ~np.uint64(FLAGS)).tolist(), part["exch_ts"].tolist(),
                           part["local_ts"].tolist(), part["px"].tolist(), part["qty"].tolist()))

    assert rows(exch_rows) == rows(local_rows)  # the split copies are the same events


def replay_rows(data: np.ndarray, flag: int) -> tuple[dict, dict, int]:
    """Apply a processor's depth rows as hftbacktest does; returns (bids, asks, number of snapshots)."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    snapshots = 0
    for ev, px, qty in zip(data["ev"].tolist(), data["px"].tolist(), data["qty"].tolist()):
        if not ev & flag:
            continue
        kind, side = ev & 0xFF, asks if ev & ex.SELL_EVENT else bids
        if kind == ex.DEPTH_CLEAR_EVENT:  # bids from px up, asks up to px
            snapshots += side is bids
            for p in [p for p in side if (p >= px if side is bids else p <= px)]:
                del side[p]
        elif kind in (ex.DEPTH_EVENT, ex.DEPTH_SNAPSHOT_EVENT):
            if qty:
                side[px] = qty
            else:
                side.pop(px, None)
    return bids, asks, snapshots


def top_of(bids: dict, asks: dict) -> tuple[list, list]:
    return sorted(bids.items(), reverse=True)[:TOP], sorted(asks.items())[:TOP]


def test_hftbacktest_npz(day: Day, tmp_path_factory):
    path = npz_of(day, tmp_path_factory.mktemp("npz"))
    assert path.suffix == ".npz" and path.name == f"{get_market(day.market).exchange}_BTCUSDT_{day.date}.npz"
    with np.load(path) as npz:
        assert list(npz.keys()) == ["data"]
        data = npz["data"]
    assert data.dtype == np.dtype([("ev", "<u8"), ("exch_ts", "<i8"), ("local_ts", "<i8"), ("px", "<f8"),
                                   ("qty", "<f8"), ("order_id", "<u8"), ("ival", "<i8"), ("fval", "<f8")])
    assert len(data) > 1000
    assert_event_order(data)
    assert ex.check_event_order(data) == []

    # starts with a proper snapshot: clear + levels of the bid side, then the same for the ask side
    kinds = (data["ev"] & 0xFF).tolist()
    sides = np.where(data["ev"] & ex.SELL_EVENT, "ask", "bid").tolist()
    head = 0
    while kinds[head] in (ex.DEPTH_CLEAR_EVENT, ex.DEPTH_SNAPSHOT_EVENT):
        head += 1
    assert kinds[0] == ex.DEPTH_CLEAR_EVENT and sides[0] == "bid"
    ask_clear = sides.index("ask")
    assert kinds[ask_clear] == ex.DEPTH_CLEAR_EVENT and ask_clear < head
    assert set(kinds[1:ask_clear]) == {ex.DEPTH_SNAPSHOT_EVENT} and set(sides[1:ask_clear]) == {"bid"}
    assert set(kinds[ask_clear + 1:head]) == {ex.DEPTH_SNAPSHOT_EVENT} and set(sides[ask_clear + 1:head]) == {"ask"}
    assert (data["ev"][:head] & np.uint64(FLAGS) == FLAGS).all()
    first = data[:head]
    assert len(set(first["exch_ts"].tolist())) == 1 and len(set(first["local_ts"].tolist())) == 1

    # ns timestamps; trades carry the taker's side
    assert 1e18 < data["local_ts"][0] < 1e19 and 1e18 < data["exch_ts"][0] < 1e19
    trades = data[(data["ev"] & 0xFF) == ex.TRADE_EVENT]
    assert len(trades) and ((trades["ev"] & np.uint64(ex.BUY_EVENT | ex.SELL_EVENT)) != 0).all()

    # both processors end on the dataset's last valid book; one snapshot per sync of the engine
    expected = as_float_top(day.top)
    for flag in (ex.LOCAL_EVENT, ex.EXCH_EVENT):
        bids, asks, snapshots = replay_rows(data, flag)
        assert top_of(bids, asks) == expected
        assert snapshots == day.syncs


def test_trade_sides_follow_buyer_is_maker(synthetic: Day, tmp_path_factory):
    data = np.load(npz_of(synthetic, tmp_path_factory.mktemp("npz")))["data"]
    local = data[(data["ev"] & ex.LOCAL_EVENT) != 0]
    trades = local[(local["ev"] & 0xFF) == ex.TRADE_EVENT]
    table = read_table(synthetic.root, "binance-spot", "trades", date=synthetic.date, symbols=["BTCUSDT"])
    makers: dict[int, list[bool]] = {}  # messages read off the socket together share their recv_ts
    for recv_ts, maker in zip(table.column("recv_ts").to_pylist(), table.column("buyer_is_maker").to_pylist()):
        makers.setdefault(recv_ts, []).append(maker)
    exported: dict[int, list[bool]] = {}
    for ev, ts in zip(trades["ev"].tolist(), trades["local_ts"].tolist()):
        assert bool(ev & ex.SELL_EVENT) != bool(ev & ex.BUY_EVENT)
        exported.setdefault(ts, []).append(bool(ev & ex.SELL_EVENT))
    assert len(trades) > 10
    # the seller is the taker exactly when the buyer made; a gap inside a group of one receive time ends the
    # valid span there, so the export may hold fewer of that group's trades, never others
    for ts, sells in exported.items():
        assert not Counter(sells) - Counter(makers[ts]), ts
    whole = sum(Counter(sells) == Counter(makers[ts]) for ts, sells in exported.items())
    assert whole >= 0.9 * len(exported), (whole, len(exported))


def test_resync_writes_a_clear_and_a_new_snapshot(synthetic: Day, tmp_path_factory):
    assert synthetic.resyncs >= 1 and synthetic.syncs >= 2, "the faulty recording should resync"
    data = np.load(npz_of(synthetic, tmp_path_factory.mktemp("npz")))["data"]
    local = data[(data["ev"] & ex.LOCAL_EVENT) != 0]
    clears = np.flatnonzero((local["ev"] & 0xFF) == ex.DEPTH_CLEAR_EVENT)
    assert len(clears) == 2 * synthetic.syncs
    for i in clears[::2].tolist():  # bid clear, bid levels, ask clear, ask levels, at one instant
        assert local["ev"][i] & ex.BUY_EVENT
        assert (local["ev"][i + 1] & 0xFF) in (ex.DEPTH_SNAPSHOT_EVENT, ex.DEPTH_CLEAR_EVENT)


def test_split_event_order_invariants():
    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 50, 2000):
        local = np.sort(rng.integers(0, 1000, n))
        exch = local - rng.integers(0, 60, n) + rng.integers(-5, 5, n) * (rng.random(n) < 0.3)
        rows, flags = ex.split_event_order(exch.astype(np.int64), local.astype(np.int64))
        data = np.zeros(len(rows), ex.EVENT_DTYPE)
        data["ev"], data["exch_ts"], data["local_ts"] = flags, exch[rows], local[rows]
        data["px"] = rows  # identifies the source row
        assert_event_order(data)
        exch_side = data["px"][(flags & ex.EXCH_EVENT) != 0]
        local_side = data["px"][(flags & ex.LOCAL_EVENT) != 0]
        assert sorted(exch_side.tolist()) == list(range(n)) == local_side.tolist()
        assert len(rows) - n == int(((flags & FLAGS) != FLAGS).sum()) // 2  # only out-of-order rows are split


CHECK_SCRIPT = r"""
import json, sys
import numpy as np
from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest, __version__
from hftbacktest.data.validation import validate_event_order
path, tick, lot = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
data = np.load(path)["data"]
validate_event_order(data)  # raises ValueError if out of order
asset = (BacktestAsset().data([path]).linear_asset(1.0).constant_order_latency(1_000_000, 1_000_000)
         .risk_adverse_queue_model().no_partial_fill_exchange().trading_value_fee_model(0.0, 0.0)
         .tick_size(tick).lot_size(lot))
hbt = HashMapMarketDepthBacktest([asset])
steps = 0
while hbt.elapse(60_000_000_000) == 0:
    steps += 1
depth = hbt.depth(0)
def side(start, step, qty_at):
    out, t = [], start
    while len(out) < 20 and abs(t - start) < 10_000_000:
        q = qty_at(t)
        if q > 0:
            out.append([t, q])
        t += step
    return out
print(json.dumps({"version": __version__, "steps": steps,
                  "bids": side(depth.best_bid_tick, -1, depth.bid_qty_at_tick),
                  "asks": side(depth.best_ask_tick, 1, depth.ask_qty_at_tick)}))
hbt.close()
"""


@pytest.mark.skipif(not HBT_PYTHON.exists(), reason="no hftbacktest venv at /tmp/hbt-venv")
@pytest.mark.parametrize("name", ["synthetic", "real_usdm"])
def test_npz_runs_in_hftbacktest(name, request, tmp_path_factory):
    day: Day = request.getfixturevalue(name)
    path = npz_of(day, tmp_path_factory.mktemp("npz"))
    run = subprocess.run([str(HBT_PYTHON), "-c", CHECK_SCRIPT, str(path), day.tick, day.lot],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["version"].startswith("2.")
    tick, lot = parse_units(day.tick), parse_units(day.lot)
    bids, asks = day.top
    assert [(t, round(q * 1e8 / lot)) for t, q in result["bids"]] == [(p // tick, q // lot) for p, q in bids]
    assert [(t, round(q * 1e8 / lot)) for t, q in result["asks"]] == [(p // tick, q // lot) for p, q in asks]


# ---- Tardis CSV ------------------------------------------------------------------------------------------------

BOOK_SCHEMA = {"exchange": pl.String, "symbol": pl.String, "timestamp": pl.Int64, "local_timestamp": pl.Int64,
               "is_snapshot": pl.Boolean, "side": pl.String, "price": pl.String, "amount": pl.String}
TRADES_SCHEMA = {"exchange": pl.String, "symbol": pl.String, "timestamp": pl.Int64, "local_timestamp": pl.Int64,
                 "id": pl.Int64, "side": pl.String, "price": pl.String, "amount": pl.String}


def test_tardis_csv(day: Day, tmp_path):
    paths = ex.export_tardis(day.root, day.market, day.date, day.symbol, tmp_path)
    name = {"spot": "binance", "usdm": "binance-futures"}[day.market]
    assert [p.name for p in paths] == [f"{name}_incremental_book_L2_{day.date}_BTCUSDT.csv.gz",
                                       f"{name}_trades_{day.date}_BTCUSDT.csv.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp files left
    book = pl.read_csv(paths[0], schema=BOOK_SCHEMA)
    assert pl.read_csv(paths[0]).columns == list(BOOK_SCHEMA)  # the header itself
    assert pl.read_csv(paths[0], schema_overrides={"price": pl.Float64, "amount": pl.Float64})["price"].dtype == pl.Float64
    assert book["exchange"].unique().to_list() == [name] and book["symbol"].unique().to_list() == ["BTCUSDT"]
    assert set(book["side"].unique().to_list()) == {"bid", "ask"}
    assert book["is_snapshot"][0] and book.height > 1000
    assert (book["local_timestamp"].diff().drop_nulls() >= 0).all()
    assert 1e15 < book["timestamp"][0] < 1e16 and 1e15 < book["local_timestamp"][0] < 1e16  # µs

    # Tardis' rule: a snapshot row after a non-snapshot row discards the book. Exact decimals all the way.
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    previous_snapshot, snapshots = False, 0
    for is_snapshot, side, price, amount in book.select("is_snapshot", "side", "price", "amount").iter_rows():
        if is_snapshot and not previous_snapshot:
            bids.clear(), asks.clear()
            snapshots += 1
        previous_snapshot = is_snapshot
        levels = bids if side == "bid" else asks
        p, q = parse_units(price), parse_units(amount)
        if q:
            levels[p] = q
        else:
            levels.pop(p, None)
    assert snapshots == day.syncs
    assert (sorted(bids.items(), reverse=True)[:TOP], sorted(asks.items())[:TOP]) == tuple(day.top)

    trades = pl.read_csv(paths[1], schema=TRADES_SCHEMA)
    assert pl.read_csv(paths[1]).columns == list(TRADES_SCHEMA)
    assert trades.height > 10 and set(trades["side"].unique().to_list()) <= {"buy", "sell"}
    table = read_table(day.root, get_market(day.market).exchange, "trades", date=day.date, symbols=["BTCUSDT"])
    stored = dict(zip(table.column("trade_id").to_pylist(), zip(
        decimal_units(table.column("price")), decimal_units(table.column("qty")),
        table.column("buyer_is_maker").to_pylist())))
    for tid, side, price, amount in trades.select("id", "side", "price", "amount").iter_rows():
        want_price, want_qty, maker = stored[tid]
        assert (parse_units(price), parse_units(amount)) == (want_price, want_qty)
        assert side == ("sell" if maker else "buy")


def test_decimal_text_is_exact():
    assert ex._dec(6173763000000) == "61737.63"
    assert ex._dec(0) == "0"
    assert ex._dec(1) == "0.00000001"
    assert ex._dec(500000000000) == "5000"
    assert ex._dec(10**30 + 5) == "10000000000000000000000.00000005"


# ---- command line ----------------------------------------------------------------------------------------------

def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("export")(ex.export_command)

    @app.command("noop")
    def noop() -> None:
        pass

    return app


def _invoke(*args):
    return CliRunner().invoke(_app(), ["export", *map(str, args)])


def test_cli_exports_both_formats(synthetic: Day, tmp_path):
    for fmt, suffix in (("hftbacktest", ".npz"), ("tardis-csv", ".csv.gz")):
        result = _invoke("--date", synthetic.date, "--to", fmt, "--data", synthetic.root, "--market", "spot",
                         "--out", tmp_path / fmt)
        assert result.exit_code == 0, result.output
        written = [Path(line) for line in result.output.splitlines() if line.strip()]
        assert written and all(p.exists() and p.name.endswith(suffix) for p in written)


def _one_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("replay: error: ")
    return lines[0]


def test_cli_bad_input(synthetic: Day, tmp_path):
    common = ["--data", synthetic.root, "--market", "spot", "--out", tmp_path / "out"]
    line = _one_error(_invoke("--date", "2001-01-01", "--to", "hftbacktest", *common))
    assert "2001-01-01" in line and synthetic.date in line  # lists the dates there are
    line = _one_error(_invoke("--date", synthetic.date, "--to", "tardis-csv", "--symbols", "NOPEUSDT", *common))
    assert "NOPEUSDT" in line and "BTCUSDT" in line  # lists the symbols there are
    line = _one_error(_invoke("--date", synthetic.date, "--to", "csv", *common))
    assert "hftbacktest" in line and "tardis-csv" in line
    _one_error(_invoke("--date", "yesterday-ish", "--to", "hftbacktest", *common))
    _one_error(_invoke("--date", synthetic.date, "--to", "hftbacktest", "--data", synthetic.root, "--market", "nope"))
    line = _one_error(_invoke("--date", synthetic.date, "--to", "hftbacktest", "--market", "usdm",
                              "--data", synthetic.root))
    assert "usdm" in line
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_chunked_rows_give_the_same_array(synthetic: Day, tmp_path_factory, monkeypatch):
    whole = np.load(npz_of(synthetic, tmp_path_factory.mktemp("npz")))["data"]
    monkeypatch.setattr(ex._EventRows, "CHUNK", 997)
    chunked = ex.hftbacktest_events(synthetic.root, synthetic.market, synthetic.date, synthetic.symbol)
    assert chunked.tobytes() == whole.tobytes()
