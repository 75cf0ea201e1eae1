"""The stream watchdog: a subscribed stream that goes quiet while its connection is up is noticed (event,
one warning, metric), its connection is replaced after a longer silence, and `recorder validate` fails a day
whose subscribed channel delivered nothing, naming the silent span."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from recorder.config import ConfigError, load_config
from recorder.protocol import AggTrade, BookTicker, DepthUpdate, Trade
from recorder.report_html import render_html
from recorder.runtime import Recorder
from recorder.validate import print_report, validate_day
from recorder.watchdog import Reconnect, StreamResumed, StreamSilent, StreamWatchdog
from replay.venue.faults import FaultSpec
from replay.venue.server import VenueServer
from schemas import read_table

S = 1_000_000_000
SILENT = {"depth": 2.0, "trade": 10.0, "agg_trade": 10.0, "book_ticker": 3.0}
RECONNECT = {"depth": 5.0, "trade": 30.0, "agg_trade": 30.0, "book_ticker": 6.0}
STREAMS = ["btcusdt@depth@100ms", "btcusdt@trade", "btcusdt@aggTrade", "btcusdt@bookTicker"]


def msg(kind: type, symbol: str = "BTCUSDT") -> object:
    """A parsed message of `kind`; the watchdog reads only its type and symbol."""
    obj = object.__new__(kind)
    obj.symbol = symbol
    return obj


def feed(dog: StreamWatchdog, kinds: list[type], start: int, end: int, every: float = 0.5) -> None:
    t = start
    while t < end:
        for kind in kinds:
            dog.seen(msg(kind), t)
        t += int(every * S)


# ---- the class ----------------------------------------------------------------------------------------


def test_each_channel_has_its_own_threshold_and_a_silence_is_reported_once():
    dog = StreamWatchdog(SILENT, RECONNECT)
    dog.opened(1, STREAMS, 100 * S)
    feed(dog, [DepthUpdate, AggTrade, BookTicker], 100 * S, 112 * S)  # no trade at all
    assert dog.check(109 * S) == []  # 9 s without a trade: under its 10 s
    decisions = dog.check(111 * S)
    assert decisions == [StreamSilent("btcusdt@trade", "BTCUSDT", "trade", 100 * S, 10.0, 1)]
    assert dog.silent == {"btcusdt@trade"}
    assert dog.check(112 * S) == []  # still silent: not reported again
    # depth stops: silent after its own 2 s, not the trade's 10 s
    assert [d.stream for d in dog.check(114 * S + 1) if type(d) is StreamSilent] == ["btcusdt@depth@100ms"]


def test_clock_starts_when_the_connection_opens_and_a_disconnect_pauses_it():
    dog = StreamWatchdog(SILENT, RECONNECT)
    assert dog.check(1000 * S) == []  # nothing subscribed yet
    dog.opened(1, STREAMS, 1000 * S)
    assert dog.check(1001 * S) == []  # 1 s after the open: not silent although nothing came since process start
    dog.closed(1)
    assert dog.check(2000 * S) == []  # no connection: a disconnect, not a silence
    dog.opened(1, STREAMS, 2000 * S)
    assert dog.check(2001 * S) == []  # the clock restarted at the reopen
    assert {d.stream for d in dog.check(2003 * S)} == {"btcusdt@depth@100ms"}


def test_a_message_ends_the_silence():
    dog = StreamWatchdog(SILENT, RECONNECT)
    dog.opened(1, STREAMS, 0)
    feed(dog, [DepthUpdate, Trade, AggTrade], 0, 5 * S)
    dog.seen(msg(BookTicker, "BTCUSDT"), 1 * S)
    assert [d.stream for d in dog.check(5 * S)] == ["btcusdt@bookTicker"]
    dog.seen(msg(BookTicker, "ETHUSDT"), 5 * S + 1)  # another symbol's ticker does not count
    assert dog.check(5 * S + 2) == []
    dog.seen(msg(BookTicker, "BTCUSDT"), 5 * S + 7)
    assert dog.check(5 * S + 9) == [StreamResumed("btcusdt@bookTicker", "BTCUSDT", "book_ticker", 1 * S, 5 * S + 7)]
    assert dog.silent == set()


def test_a_longer_silence_asks_for_a_reconnect_then_backs_off():
    dog = StreamWatchdog(SILENT, RECONNECT)
    dog.opened(1, STREAMS, 0)
    feed(dog, [DepthUpdate, Trade, AggTrade], 0, 100 * S)
    assert [type(d) for d in dog.check(4 * S)] == [StreamSilent]
    assert dog.check(6 * S) == []  # 6 s silent: not yet over reconnect_after
    [reconnect] = dog.check(6 * S + 1)
    assert type(reconnect) is Reconnect and reconnect.connection == 1
    assert reconnect.streams == ("btcusdt@bookTicker",) and reconnect.silent_for_s > 6.0
    assert dog.check(7 * S) == []  # asked once, not on every check
    # the rollover: a fresh connection opens, carries the stream alongside, then the old one retires
    dog.opened(2, STREAMS, 8 * S)
    assert dog.check(30 * S) == []  # two carriers: a rollover is under way, no second reconnect
    dog.closed(1)
    assert dog.check(8 * S + 12 * S) == []  # the second reconnect waits twice as long, from the new connection
    decisions = dog.check(8 * S + 12 * S + 1)
    assert [(type(d), d.connection) for d in decisions] == [(Reconnect, 2)]
    assert dog.silent == {"btcusdt@bookTicker"}  # one silence across the reconnects


def test_unwatched_streams_are_ignored():
    dog = StreamWatchdog(SILENT, RECONNECT)
    dog.opened(1, ["btcusdt@markPrice@1s", "btcusdt@kline_1m"], 0)
    assert dog.check(10_000 * S) == []


def test_thresholds_come_from_the_config(tmp_path):
    path = tmp_path / "recorder.yaml"
    path.write_text("watchdog:\n  silent_after: {trade: 2m}\n  reconnect_after: {trade: 10m}\n")
    config = load_config(path, {})
    assert config.watchdog.silent_after_s["trade"] == 120.0
    assert config.watchdog.reconnect_after_s["trade"] == 600.0
    assert config.watchdog.silent_after_s["depth"] == 60.0  # the default
    path.write_text("watchdog:\n  silent_after: {trade: 2m}\n  reconnect_after: {trade: 1m}\n")
    with pytest.raises(ConfigError, match=r"watchdog\.reconnect_after\.trade: .*longer than"):
        load_config(path, {})
    path.write_text("watchdog:\n  silent_after: {trades: 2m}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(path, {})


def test_silence_fault_grammar():
    assert FaultSpec.parse("silence=trade:btcusdt").silence == ("trade", "BTCUSDT", 0.0, None)
    assert FaultSpec.parse("silence=bookTicker:ETHUSDT:1s:3s").silence == ("bookTicker", "ETHUSDT", 1.0, 3.0)
    with pytest.raises(ValueError, match="silence"):
        FaultSpec.parse("silence=trades:BTCUSDT")
    with pytest.raises(ValueError, match="UNTIL"):
        FaultSpec.parse("silence=trade:BTCUSDT:3s:1s")


# ---- a recording against the synthetic venue ----------------------------------------------------------


@pytest.fixture(scope="module")
def silent_trades(tmp_path_factory):
    """4 s of BTCUSDT and ETHUSDT while the venue never sends btcusdt@trade (0.5 s / 1.5 s thresholds)."""
    base = tmp_path_factory.mktemp("watchdog")
    out = base / "data"
    config_file = base / "recorder.yaml"
    config_file.write_text("watchdog:\n  silent_after: {trade: 500ms}\n  reconnect_after: {trade: 1500ms}\n")
    records: list[logging.LogRecord] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Handler(logging.INFO)
    logger = logging.getLogger("recorder")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)

    async def main():
        async with VenueServer("spot", ["BTCUSDT", "ETHUSDT"], speed=5.0, faults="silence=trade:BTCUSDT", seed=5,
                               ping_interval=1.0, ping_timeout=5.0) as venue:
            config = load_config(config_file, {
                "symbols": ["BTCUSDT", "ETHUSDT"], "out": out, "rest_url": venue.rest_url, "ws_url": venue.ws_url,
                "duration": 4.0, "ignore_window": True})
            recorder = Recorder(config, validate=True)
            code = await recorder.run()
            return recorder, code, venue.stats.connections_total

    try:
        recorder, code, connections = asyncio.run(main())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return out, recorder, code, connections, records


def test_a_stream_that_comes_back_is_resumed(tmp_path):
    """bookTicker of ETHUSDT withheld for the first 2.5 s: silent, then resumed; the gauge goes back to 0."""
    out = tmp_path / "data"
    config_file = tmp_path / "recorder.yaml"
    config_file.write_text("watchdog:\n  silent_after: {book_ticker: 500ms}\n  reconnect_after: {book_ticker: 1h}\n")

    async def main():
        async with VenueServer("spot", ["ETHUSDT"], speed=5.0, faults="silence=bookTicker:ETHUSDT:0s:2500ms",
                               seed=5, ping_interval=1.0, ping_timeout=5.0) as venue:
            config = load_config(config_file, {
                "symbols": ["ETHUSDT"], "out": out, "rest_url": venue.rest_url, "ws_url": venue.ws_url,
                "duration": 4.0, "ignore_window": True})
            recorder = Recorder(config)
            await recorder.run()
            return recorder

    recorder = asyncio.run(main())
    rows = [e for e in event_rows(out, "ETHUSDT") if e["kind"] in ("stream_silent", "stream_resumed")]
    assert [e["kind"] for e in rows] == ["stream_silent", "stream_resumed"]
    silent, resumed = (e["detail"] for e in rows)
    assert resumed["silent_since"] == silent["silent_since"] < resumed["resumed_at"]
    assert recorder.metrics.stream_silent.values[("ETHUSDT", "book_ticker")] == 0
    assert recorder.silent_streams == set()
    date = next((out / "binance-spot" / "depth").glob("date=*")).name.split("=")[1]
    check = validate_day(out, "spot", date)["symbols"]["ETHUSDT"]["checks"]["channels"]
    span = check["examples"][0]
    assert span["channel"] == "book_ticker"
    assert (span["start"]["ns"], span["end"]["ns"]) == (silent["silent_since"], resumed["resumed_at"])


def event_rows(out: Path, symbol: str | None) -> list[dict]:
    table = read_table(out, "binance-spot", "events", symbols=[symbol])
    return [dict(row, detail=orjson.loads(row["detail"])) for row in table.to_pylist()]


def test_a_silent_stream_is_an_event_a_warning_a_metric_and_a_reconnect(silent_trades):
    out, recorder, _, connections, records = silent_trades
    silent = [e for e in event_rows(out, "BTCUSDT") if e["kind"] == "stream_silent"]
    assert len(silent) == 1
    detail = silent[0]["detail"]
    assert detail["stream"] == "btcusdt@trade" and detail["channel"] == "trade"
    assert detail["threshold"] == 0.5 and detail["silent_since"] <= silent[0]["ts"] - S // 2
    assert not [e for e in event_rows(out, "ETHUSDT") if e["kind"] == "stream_silent"]  # its trades flowed
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING and "silent:" in r.getMessage()]
    assert len(warnings) == 1 and "btcusdt@trade" in warnings[0]
    assert recorder.metrics.stream_silent.values[("BTCUSDT", "trade")] == 1
    assert recorder.metrics.stream_silent.values[("ETHUSDT", "trade")] == 0
    assert recorder.metrics.stream_silences.values[("BTCUSDT", "trade")] == 1
    assert "recorder_stream_silent{" in recorder.metrics.render()
    assert recorder.silent_streams == {"btcusdt@trade"}
    # after the longer threshold the connection was replaced by a rollover (no disconnect, no resync)
    rollovers = [e for e in event_rows(out, None) if e["kind"] == "rollover"]
    assert rollovers and rollovers[0]["detail"]["reason"] == "stream_silent"
    assert recorder.metrics.stream_reconnects.values[()] >= 1
    assert connections >= 2
    assert not [e for e in event_rows(out, None) if e["kind"] == "disconnect"]
    starts = [e for e in event_rows(out, None) if e["kind"] == "window_start"]
    assert starts[0]["detail"]["channels"] == ["depth", "trade", "agg_trade", "book_ticker"]


def test_validate_fails_a_day_without_trades_and_names_the_span(silent_trades):
    out, _, code, *_ = silent_trades
    date = next((out / "binance-spot" / "depth").glob("date=*")).name.split("=")[1]
    # the run's own validation (what cron sees): exit 1, and its report says why
    assert code == 1
    [written] = (out / "reports" / "binance-spot" / date).glob("validation-*.json")
    written_check = orjson.loads(written.read_bytes())["symbols"]["BTCUSDT"]["checks"]["channels"]
    assert written_check["status"] == "fail" and written_check["examples"][0]["channel"] == "trade"
    report = validate_day(out, "spot", date)
    check = report["symbols"]["BTCUSDT"]["checks"]["channels"]
    assert check["status"] == "fail" and report["exit_code"] == 1
    assert "trade (no data)" in check["summary"]
    span = check["examples"][0]
    assert span["channel"] == "trade" and span["seconds"] > 2.0
    assert check["figures"]["subscribed"] == ["depth", "trade", "agg_trade", "book_ticker"]
    # the other symbol, recorded normally on the same connections, passes
    assert report["symbols"]["ETHUSDT"]["checks"]["channels"]["status"] == "pass"
    console = Console(record=True, width=200)
    print_report(report, console)
    assert "trade (no data)" in console.export_text()
    assert "trade (no data)" in render_html(report)


def test_validate_names_data_gaps_of_a_day_without_watchdog_events(silent_trades, tmp_path):
    """An imported day (no subscription in its events): a channel whose rows stop is named by the gap."""
    import shutil

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out, *_ = silent_trades
    copy = tmp_path / "data"
    shutil.copytree(out, copy)
    for path in (copy / "binance-spot" / "events").rglob("*.parquet"):
        path.unlink()  # no events: silences come from the data
    date = next((copy / "binance-spot" / "depth").glob("date=*")).name.split("=")[1]
    [agg] = list((copy / "binance-spot" / "agg_trades").glob("date=*/symbol=ETHUSDT/*.parquet"))
    table = pq.read_table(agg)
    start = table.column("recv_ts")[0].as_py()
    pq.write_table(table.filter(pc.less(table.column("recv_ts"), start + S)), agg)
    report = validate_day(copy, "spot", date, ["ETHUSDT"], silent_after_s={**SILENT, "agg_trade": 0.5})
    check = report["symbols"]["ETHUSDT"]["checks"]["channels"]
    assert check["figures"]["silences_from"] == "data"
    assert check["figures"]["expected"] == ["depth", "trade", "agg_trade", "book_ticker"]
    assert check["status"] == "fail", check
    assert check["examples"][0]["channel"] == "agg_trade" and check["examples"][0]["seconds"] > 1.5


def test_a_silence_left_open_ends_with_its_run():
    """A day recorded in two runs: a silence the first run never saw end is not carried into the second."""
    from recorder.validate import Events, _event_silences

    silent = {"stream": "btcusdt@trade", "channel": "trade", "silent_since": 10 * S, "threshold": 900.0}
    symbol_rows = [(5, 20 * S, "stream_silent", silent),
                   (30, 60 * S, "stream_silent", {**silent, "silent_since": 50 * S}),
                   (40, 70 * S, "stream_resumed", {**silent, "resumed_at": 65 * S})]
    connection_rows = [(1, 0, "window_start", {"channels": ["depth", "trade"]}), (10, 30 * S, "window_end", {}),
                       (11, 40 * S, "window_start", {"channels": ["depth", "trade"]})]
    spans = _event_silences(Events(symbol_rows, connection_rows), end=100 * S)
    assert spans == {"trade": [(10 * S, 30 * S), (50 * S, 65 * S)]}
