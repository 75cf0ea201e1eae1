"""Round trip: record D from the synthetic venue, serve D with `RecordedSource` (`replay serve`), record D'
from that, and D' must equal D (rows and rebuilt books) over the span both have. A Binance-protocol client
(`BookClient`) syncing from the replayed venue must see D's books. Also an imported real capture, if
../shared/realdata is there."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from recorder.client import BookClient
from recorder.config import load_config
from recorder.markets import get_market
from recorder.protocol import DepthUpdate, parse_exchange_info
from recorder.rebuild import rebuild
from recorder.runtime import Recorder
from replay.cli import app
from replay.engine import ReplayError
from replay.venue.recorded import RecordedSource, infer_depth_suffix
from replay.venue.server import BookUnavailable, Disconnect, VenueServer
from replay.venue.source import DepthDiff, RawEvent
from schemas import available, read_table
from tests.synthetic_day import record_day

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


# ---- helpers ------------------------------------------------------------------------------------------


def record_synthetic(out: Path, market: str, symbols: list[str], seconds: float, faults: str | None = None) -> None:
    assert record_day(out, market, symbols, seconds, faults=faults, speed=5.0, seed=7, ping_interval=1.0,
                      ping_timeout=5.0) == 0


def only_date(root: Path, market: str):
    days = available(root)[get_market(market).exchange]["depth"]
    assert len(days) == 1, days
    return next(iter(days))


def replay_and_record(data: Path, market: str, out: Path, speed: float, *, symbols: list[str] | None = None,
                      client: bool = False, start_ns: int | None = None, max_seconds: float = 10.0,
                      snapshot_limit: int = 1000):
    """Serve `data` and record it into `out` (plus, optionally, a BookClient on the same venue).

    `snapshot_limit`: depth of the recorder's and the client's snapshots. A real book is deeper than
    1000 levels after a while (diffs add levels beyond the recorded snapshot): a client syncing with
    limit=1000 rightly knows only the top 1000 of it, so to compare whole books take 5000.

    Returns (source, client books {symbol: {update_id: (bids, asks)}})."""
    date = only_date(data, market)
    source = RecordedSource(data, market, date, symbols, start_ns=start_ns)
    seconds = min(max_seconds, (source.last_ns / 1e6 - source.start_ms) / 1000 / speed + 1.0)
    books: dict[str, dict[int, tuple[dict, dict]]] = {s: {} for s in source.symbols()}

    config_file = None
    if snapshot_limit != 1000:
        config_file = out.parent / f"{out.name}.yaml"
        config_file.write_text(f"snapshot:\n  limit: {snapshot_limit}\n")

    async def main():
        async with VenueServer(source.market, source=source, speed=speed) as venue:
            config = load_config(config_file, {
                "market": market, "symbols": source.symbols(), "out": out, "rest_url": venue.rest_url,
                "ws_url": venue.ws_url, "duration": seconds, "ignore_window": True})
            tasks = [asyncio.create_task(Recorder(config).run())]
            if client:
                bc = BookClient(source.market, source.symbols(), venue.rest_url, venue.ws_url, limit=snapshot_limit)

                def on_message(_recv_ts, message):
                    if type(message) is DepthUpdate:
                        local = bc.books[message.symbol]
                        book = local.valid_book()
                        if book is not None:
                            books[message.symbol][local.update_id] = (dict(book.bids), dict(book.asks))

                bc.on_message = on_message
                tasks.append(asyncio.create_task(bc.run(duration=seconds - 0.5)))
            results = await asyncio.gather(*tasks)
            return results[0]

    assert asyncio.run(main()) == 0
    return source, books


DEPTH_KEY = ["first_update_id", "final_update_id", "prev_final_update_id", "event_ts", "transact_ts", "side",
             "price", "qty"]
TABLE_KEYS = {
    "depth": DEPTH_KEY,
    "trades": ["trade_id", "event_ts", "trade_ts", "price", "qty", "buyer_is_maker", "best_match", "order_type"],
    "agg_trades": ["agg_trade_id", "event_ts", "trade_ts", "first_trade_id", "last_trade_id", "price", "qty",
                   "buyer_is_maker", "best_match"],
    "book_ticker": ["update_id", "event_ts", "transact_ts", "bid_price", "bid_qty", "ask_price", "ask_qty"],
}


def rows(root: Path, market: str, table: str, symbol: str) -> list[tuple]:
    t = read_table(root, get_market(market).exchange, table, symbols=[symbol]).sort_by("seq")
    cols = [t.column(c).to_pylist() for c in TABLE_KEYS[table]]
    return list(zip(*cols))


def assert_rows_continue(d: list[tuple], d2: list[tuple], what: str, minimum: int) -> None:
    """D' is one contiguous run of D: from D's copy of D's first row on, row for row."""
    assert len(d2) >= minimum, f"{what}: only {len(d2)} rows replayed"
    start = d.index(d2[0])
    assert d[start:start + len(d2)] == d2, f"{what}: D' differs from D"


def valid_books(root: Path, market: str, symbol: str):
    date = only_date(root, market)
    for _, _, message, _, local in rebuild(root, get_market(market), date, symbol):
        book = local.valid_book()
        if book is not None and type(message) is DepthUpdate:
            yield local.update_id, book


def compare_books(d: Path, d2: Path, market: str, symbol: str, client_books: dict | None = None) -> int:
    """D's rebuilt book equals D''s (and the client's) at every update id both have; returns how many."""
    replayed = {uid: (dict(b.bids), dict(b.asks)) for uid, b in valid_books(d2, market, symbol)}
    assert len(replayed) > 10, f"{symbol}: only {len(replayed)} valid books in D'"
    seen = seen_client = 0
    for uid, book in valid_books(d, market, symbol):
        if uid in replayed:
            assert replayed[uid] == (dict(book.bids), dict(book.asks)), f"{symbol}: books differ at {uid}"
            seen += 1
        if client_books and uid in client_books:
            assert client_books[uid] == (dict(book.bids), dict(book.asks)), f"{symbol}: client differs at {uid}"
            seen_client += 1
    assert seen == len(replayed), (seen, len(replayed))
    if client_books is not None:
        assert seen_client == len(client_books) and seen_client > 10, (seen_client, len(client_books))
    return seen


def assert_round_trip(d: Path, d2: Path, market: str, symbol: str, tables=("depth", "trades", "book_ticker"),
                      client_books: dict | None = None) -> None:
    for table in tables:
        assert_rows_continue(rows(d, market, table, symbol), rows(d2, market, table, symbol), f"{symbol} {table}",
                             minimum=5)
    compare_books(d, d2, market, symbol, client_books)


# ---- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spot_day(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("spot") / "D"
    record_synthetic(out, "spot", SYMBOLS, 6.0)
    return out


@pytest.fixture(scope="module")
def usdm_day(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("usdm") / "D"
    record_synthetic(out, "usdm", SYMBOLS, 4.0)
    return out


# ---- round trips --------------------------------------------------------------------------------------


def test_spot_round_trip_and_book_client(spot_day, tmp_path):
    out = tmp_path / "D2"
    source, client_books = replay_and_record(spot_day, "spot", out, speed=2.0, client=True)
    assert source.depth_suffix == "depth@100ms" and source.finished and source.outages == 0
    for symbol in SYMBOLS:
        assert_round_trip(spot_day, out, "spot", symbol, ("depth", "trades", "agg_trades", "book_ticker"),
                          client_books[symbol])
    # exchangeInfo came from D's instruments: D' has the same rules
    for symbol in SYMBOLS:
        a, b = (read_table(r, "binance-spot", "instruments", symbols=[symbol]) for r in (spot_day, out))
        cols = ["tick_size", "step_size", "min_qty", "min_notional", "filters"]
        assert a.select(cols).slice(0, 1).to_pylist() == b.select(cols).slice(0, 1).to_pylist()


def test_usdm_round_trip(usdm_day, tmp_path):
    out = tmp_path / "D2"
    source, _ = replay_and_record(usdm_day, "usdm", out, speed=2.0)
    assert source.spec("BTCUSDT").price_decimals == 2 and source.spec("BTCUSDT").qty_decimals == 3
    for symbol in SYMBOLS:
        assert_round_trip(usdm_day, out, "usdm", symbol, ("depth", "trades", "agg_trades", "book_ticker"))


@pytest.mark.skipif(not (REALDATA / "hftbacktest" / "spot_btcusdt_20240808.gz").is_file(),
                    reason="../shared/realdata is absent")
def test_real_capture_round_trip(tmp_path):
    from recorder.importer import import_captures

    d = tmp_path / "real"
    import_captures([REALDATA / "hftbacktest" / "spot_btcusdt_20240808.gz"], "spot", d)
    out = tmp_path / "D2"
    source, client_books = replay_and_record(d, "spot", out, speed=10.0, client=True, max_seconds=5.0,
                                             snapshot_limit=5000)
    assert source.depth_suffix == "depth@100ms"
    assert_round_trip(d, out, "spot", "BTCUSDT", client_books=client_books["BTCUSDT"])


# ---- the source without a server --------------------------------------------------------------------


def drain(source: RecordedSource, step_ms: int = 50):
    """Advance through the whole day; yields (events, books by symbol or None) after every step."""
    t = source.start_ms
    while not source.finished:
        t += step_ms
        events = source.advance(t)
        state = {}
        for s in source.symbols():
            try:
                state[s] = source.book(s)
            except BookUnavailable:
                state[s] = None
        yield events, state


def test_rest_book_continues_with_the_next_diff(spot_day, usdm_day):
    for day, market in ((spot_day, "spot"), (usdm_day, "usdm")):
        source = RecordedSource(day, market, only_date(day, market), None)
        last = {s: source.book(s).update_id for s in source.symbols()}
        checked = 0
        for events, state in drain(source, 37):
            diffs = {}
            for ev in events:
                if isinstance(ev, DepthDiff) and ev.symbol not in diffs:
                    diffs[ev.symbol] = ev
            for s, first in diffs.items():
                if market == "spot":
                    assert first.U == last[s] + 1
                else:
                    assert first.pu == last[s]
                checked += 1
            for s, book in state.items():
                assert book is not None
                last[s] = book.update_id
            # the book REST would give: the last published diff's u
            for ev in events:
                if isinstance(ev, DepthDiff):
                    assert last[ev.symbol] >= ev.u
        assert checked > 20
        assert isinstance(events[-1], Disconnect) and not events[-1].abort  # end of data: a clean close
        assert source.book(SYMBOLS[0]).update_id == last[SYMBOLS[0]]  # REST keeps the last book


@pytest.fixture(scope="module")
def faulty_day(tmp_path_factory) -> Path:
    """A spot day whose recorder lost its connection: unsynced spans in the data."""
    out = tmp_path_factory.mktemp("faulty") / "D"
    record_synthetic(out, "spot", ["BTCUSDT"], 4.0, faults="disconnect=1.2s")
    return out


def test_unsynced_span_is_an_outage(faulty_day):
    source = RecordedSource(faulty_day, "spot", only_date(faulty_day, "spot"), None)
    venue = VenueServer(source.market, source=source)  # not started: only its REST handler is used
    outages = invalid_steps = 0
    for events, state in drain(source):
        for ev in events:
            if isinstance(ev, Disconnect) and ev.abort:
                outages += 1
        response = venue._depth({"symbol": "BTCUSDT", "limit": "5"}, [], None)
        if state["BTCUSDT"] is None:
            invalid_steps += 1
            assert response.status_code == 503 and orjson.loads(response.body)["code"] == -1001
        else:
            assert response.status_code == 200
            assert orjson.loads(response.body)["lastUpdateId"] == state["BTCUSDT"].update_id
    assert outages >= 1 and invalid_steps >= 1 and source.outages == outages


def test_outage_end_to_end(faulty_day, tmp_path):
    """Served, an unsynced span cuts the connections: the client reconnects, resyncs, never a wrong book."""
    source, client_books = replay_and_record(faulty_day, "spot", tmp_path / "D2", speed=2.0, client=True)
    assert source.outages >= 1
    books = client_books["BTCUSDT"]
    seen = 0
    for uid, book in valid_books(faulty_day, "spot", "BTCUSDT"):
        if uid in books:
            assert books[uid] == (dict(book.bids), dict(book.asks))
            seen += 1
    assert seen == len(books) and seen > 10
    kinds = read_table(tmp_path / "D2", "binance-spot", "events", symbols=[None]).column("kind").to_pylist()
    assert kinds.count("disconnect") >= source.outages


def test_start_inside_the_day(spot_day):
    first = RecordedSource(spot_day, "spot", only_date(spot_day, "spot"), ["BTCUSDT"])
    start_ns = first.first_ns + 4_000_000_000
    source = RecordedSource(spot_day, "spot", only_date(spot_day, "spot"), ["BTCUSDT"], start_ns=start_ns)
    assert source.start_ms >= start_ns // 1_000_000
    uid = source.book("BTCUSDT").update_id
    events = source.advance(source.start_ms + 10_000)
    diff = next(e for e in events if isinstance(e, DepthDiff))
    assert diff.U == uid + 1


def test_payloads_keep_recorded_fields(usdm_day):
    source = RecordedSource(usdm_day, "usdm", only_date(usdm_day, "usdm"), ["BTCUSDT"])
    trades = read_table(usdm_day, "binance-usdm", "trades", symbols=["BTCUSDT"]).sort_by("seq").to_pylist()
    seen = {}
    for events, _ in drain(source, 200):
        for ev in events:
            if isinstance(ev, RawEvent) and ev.suffix == "trade":
                seen[ev.payload["t"]] = ev.payload
    assert seen
    for row in trades:
        if row["trade_id"] in seen:
            p = seen[row["trade_id"]]
            assert list(p) == ["e", "E", "T", "s", "t", "p", "q", "X", "m"]
            assert p["E"] == row["event_ts"] // 1_000_000 and p["T"] == row["trade_ts"] // 1_000_000
            assert "." in p["p"] and len(p["p"].split(".")[1]) == 2 and len(p["q"].split(".")[1]) == 3
    info = source.exchange_info_symbol("BTCUSDT")
    parsed = parse_exchange_info(orjson.dumps({"symbols": [info]}))
    assert parsed["BTCUSDT"].tick_size.rstrip("0") == "0.1" and info["pricePrecision"] == 2


def test_infer_depth_suffix():
    spot, usdm = get_market("spot"), get_market("usdm")
    assert infer_depth_suffix(spot, [100, 101, 99, 200]) == "depth@100ms"
    assert infer_depth_suffix(spot, [1000, 1001, 2000]) == "depth"
    assert infer_depth_suffix(usdm, [3, 10, 40, 1, 80]) == "depth@0ms"
    assert infer_depth_suffix(usdm, [250, 250, 500]) == "depth"


# ---- command line -----------------------------------------------------------------------------------


def test_cli_bad_input(spot_day):
    runner = CliRunner()
    date = only_date(spot_day, "spot")
    cases = [
        (["serve", "--date", "20200101", "--data", str(spot_day)], "available dates"),
        (["serve", "--date", str(date), "--data", str(spot_day), "--symbols", "XRPUSDT"], "available symbols"),
        (["serve", "--date", str(date), "--data", str(spot_day), "--speed", "fast"], "bad speed"),
        (["serve", "--date", str(date), "--data", str(spot_day), "--from", "00:00"], "no snapshot before"),
        (["serve", "--date", str(date), "--data", str(spot_day), "--from", "nine"], "is not a time"),
    ]
    for args, text in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines() if result.stderr_bytes is not None else []
        assert len(lines) == 1 and lines[0].startswith("replay: error: ") and text in lines[0], (args, lines)


def test_cli_serves_a_day_and_exits_at_its_end(spot_day):
    date = only_date(spot_day, "spot")
    proc = subprocess.Popen(
        [sys.executable, "-m", "replay.cli", "serve", "--date", date.strftime("%Y%m%d"), "--data", str(spot_day),
         "--port", "0", "--speed", "4x"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        ready = proc.stdout.readline()
        assert ready.startswith("venue ready:"), (ready, proc.stderr.read() if proc.poll() is not None else "")
        rest = ready.split("rest=")[1].split()[0]
        body = httpx.get(f"{rest}/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 5}).json()
        assert len(body["bids"]) == 5 and body["lastUpdateId"] > 0
        info = httpx.get(f"{rest}/api/v3/exchangeInfo").json()
        assert [s["symbol"] for s in info["symbols"]] == SYMBOLS
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "end of data" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_library_errors(spot_day):
    with pytest.raises(ReplayError, match="outside the data"):
        RecordedSource(spot_day, "spot", only_date(spot_day, "spot"), None, start_ns=2**62)
    with pytest.raises(ReplayError, match="available symbols"):
        RecordedSource(spot_day, "spot", only_date(spot_day, "spot"), ["XRPUSDT"])
    with pytest.raises(ReplayError, match="not offered"):
        RecordedSource(spot_day, "spot", only_date(spot_day, "spot"), None, depth_suffix="depth@0ms")


def test_client_sees_data_time_at_the_requested_speed(spot_day):
    """A client of `replay serve` at 4x sees exchange time E advance 4 x as fast as it did in the recording
    (the recording's own E per receive time: this day was recorded from a 5x venue), within 2 %."""
    import time

    import websockets

    source = RecordedSource(spot_day, "spot", only_date(spot_day, "spot"), ["BTCUSDT"])

    async def main():
        samples = []
        async with VenueServer(source.market, source=source, speed=4.0) as venue:
            url = f"{venue.ws_url}/ws/btcusdt@depth@100ms"
            async with websockets.connect(url) as ws:
                deadline = time.monotonic() + 1.2
                while time.monotonic() < deadline:
                    message = orjson.loads(await asyncio.wait_for(ws.recv(), 2.0))
                    samples.append((time.monotonic(), message["E"]))
        return samples

    samples = asyncio.run(main())
    depth = read_table(spot_day, "binance-spot", "depth", symbols=["BTCUSDT"])
    recv, event = depth.column("recv_ts").to_numpy(), depth.column("event_ts").to_numpy()
    recorded_rate = (event.max() - event.min()) / (recv.max() - recv.min())  # E seconds per arrival second
    (w0, e0), (w1, e1) = samples[0], samples[-1]
    assert len(samples) > 20
    seen = (e1 - e0) / 1000 / (w1 - w0) / recorded_rate
    batches = 0.2 / ((e1 - e0) / 1000)  # one 100 ms diff batch of E at either end of the sample
    assert abs(seen - 4.0) < 4.0 * (0.02 + batches), seen
