"""Recorder configuration: defaults, the example file, CLI overrides and one-line errors."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from recorder.config import (
    ConfigError,
    RecorderConfig,
    load_config,
    parse_duration,
    parse_shard,
    shard_symbols,
)
from recorder.markets import COINM, SPOT, USDM

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "recorder.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recorder.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, overrides: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides or {})
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture(autouse=True)
def no_config_path_env(monkeypatch):
    monkeypatch.delenv("CONFIG_PATH", raising=False)


def test_defaults():
    config = load_config(None, {})
    assert config.market is SPOT
    assert config.symbols == ("BTCUSDT",)
    assert config.out == Path("data")
    assert (config.rest_url, config.ws_url) == (SPOT.rest_url, SPOT.ws_url)
    assert config.channels.depth == "depth@100ms"
    assert config.channels.trade and config.channels.agg_trade and config.channels.book_ticker
    assert config.snapshot.limit == 1000
    assert config.snapshot.checkpoint_interval_s == 600
    assert config.snapshot.stagger_s == 0.25
    assert config.formats == ("parquet",)
    assert (config.window.timezone, config.window.start, config.window.end) == (
        "Europe/Berlin",
        dt.time(8),
        dt.time(22),
    )
    assert config.writer.segment_seconds == 5
    assert config.writer.segment_rows == 200_000
    assert config.writer.journal_flush_ms == 200
    assert config.writer.row_group_rows == 131_072
    assert config.connection.lifetime_s == 23 * 3600 + 30 * 60
    assert config.connection.max_streams == SPOT.max_streams_per_connection
    assert config.connection.reconnect_max_backoff_s == 30
    assert config.connection.rest_timeout_s == 10
    assert config.connection.weight_headroom == 0.8
    assert config.sync.max_buffer == 50_000
    assert config.shard == (0, 1)
    assert (config.log.format, config.log.level) == ("plain", "info")
    assert config.metrics_port is None
    assert config.validate == {}
    assert config.duration_s is None and config.ignore_window is False


def test_example_file_loads_and_equals_the_defaults():
    assert load_config(EXAMPLE, {}) == load_config(None, {})


def test_example_file_documents_every_key():
    text = EXAMPLE.read_text()
    keys = [
        "market", "symbols", "out", "rest_url", "ws_url", "channels", "depth", "trade", "agg_trade",
        "book_ticker", "snapshot", "limit", "checkpoint_interval", "stagger", "formats", "window",
        "timezone", "start", "end", "writer", "segment_seconds", "segment_rows", "journal_flush_ms",
        "row_group_rows", "connection", "lifetime", "max_streams", "reconnect_max_backoff", "rest_timeout",
        "weight_headroom", "sync", "max_buffer", "shard", "log", "format", "level", "metrics_port",
        "validate", "watchdog", "silent_after", "reconnect_after",
    ]  # fmt: skip
    for key in keys:
        assert f"{key}:" in text, key


def test_config_path_env_is_used_when_no_path_given(tmp_path, monkeypatch):
    monkeypatch.setenv("CONFIG_PATH", str(write(tmp_path, "market: usdm\n")))
    assert load_config(None, {}).market is USDM


def test_file_values_and_market_dependent_defaults(tmp_path):
    path = write(
        tmp_path,
        """
market: coinm
symbols: [BTCUSD_PERP, ETHUSD_PERP]
out: /srv/data
channels: {depth: depth@0ms, trade: false}
snapshot: {limit: 500, checkpoint_interval: 1h, stagger: 0.5}
formats: [parquet, csv]
window: {start: "09:30", end: 17:45}
connection: {lifetime: 12h, weight_headroom: 1}
shard: 1/3
log: {format: json, level: DEBUG}
metrics_port: 9100
validate: {max_gap_ms: 500}
""",
    )
    config = load_config(path, {})
    assert config.market is COINM
    assert config.rest_url == COINM.rest_url
    assert config.connection.max_streams == COINM.max_streams_per_connection
    assert config.channels.depth == "depth@0ms" and not config.channels.trade
    assert config.snapshot.checkpoint_interval_s == 3600 and config.snapshot.stagger_s == 0.5
    assert config.formats == ("parquet", "csv")
    assert config.window.start == dt.time(9, 30)
    assert config.window.end == dt.time(17, 45)  # unquoted: not YAML 1.1's base-60 number 1065
    assert config.connection.lifetime_s == 12 * 3600 and config.connection.weight_headroom == 1.0
    assert config.shard == (1, 3)
    assert config.log == type(config.log)("json", "debug")
    assert config.metrics_port == 9100
    assert config.validate == {"max_gap_ms": 500}


def test_cli_overrides_win_and_none_means_not_given(tmp_path):
    path = write(tmp_path, "market: usdm\nsymbols: [ETHUSDT]\nlog: {level: warning}\nmetrics_port: 9000\n")
    config = load_config(
        path,
        {
            "market": None,
            "symbols": ["BTCUSDT", "SOLUSDT"],
            "out": tmp_path / "out",
            "rest_url": "http://127.0.0.1:8080",
            "ws_url": None,
            "duration": 90.0,
            "ignore_window": True,
            "shard": (1, 2),
            "metrics_port": None,
            "log_format": "json",
        },
    )
    assert config.market is USDM
    assert config.symbols == ("BTCUSDT", "SOLUSDT")
    assert config.out == tmp_path / "out"
    assert config.rest_url == "http://127.0.0.1:8080" and config.ws_url == USDM.ws_url
    assert config.duration_s == 90.0 and config.ignore_window
    assert config.shard == (1, 2)
    assert config.metrics_port == 9000
    assert (config.log.format, config.log.level) == ("json", "warning")


def test_cli_errors_name_the_command_line(tmp_path):
    message = error_of(tmp_path, "market: usdm\n", {"shard": (2, 2)})
    assert message.startswith("command line: shard:")
    with pytest.raises(ConfigError, match=r"^command line: duration:"):
        load_config(None, {"duration": -1})
    with pytest.raises(ConfigError, match="unknown override"):
        load_config(None, {"colour": "blue"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("market: spot\nsymbols: [BTCUSDT\n", r"recorder\.yaml:3: invalid YAML"),
        ("snapshots: {}\n", r"recorder\.yaml: snapshots: unknown key; allowed at the top level: market, "),
        ("snapshot:\n  limt: 100\n", r"snapshot\.limt: unknown key; allowed in snapshot: limit, checkpoint"),
        ("market: bitmex\n", r"recorder\.yaml: market: unknown market 'bitmex'"),
        ("symbols: BTCUSDT\n", r"symbols: expected a list"),
        ("symbols: []\n", r"symbols: empty symbol list"),
        ("symbols: [btcusdt]\n", r"symbols: bad symbol 'btcusdt'"),
        ("symbols: [BTCUSDT, BTCUSDT]\n", r"symbols: symbols listed twice: BTCUSDT"),
        ("channels: {trade: yes please}\n", r"channels\.trade: expected true or false"),
        ("channels: {depth: depth@0ms}\n", r"channels\.depth: 'depth@0ms' not offered on spot"),
        ("market: usdm\nsnapshot: {limit: 30}\n", r"snapshot\.limit: limit 30 not allowed on usdm"),
        ("snapshot: {limit: 6000}\n", r"snapshot\.limit: limit 6000 out of range"),
        ("snapshot: {limit: '100'}\n", r"snapshot\.limit: expected an integer, got str"),
        ("snapshot: {checkpoint_interval: 10 minutes}\n", r"snapshot\.checkpoint_interval: bad duration"),
        ("snapshot: {checkpoint_interval: 0s}\n", r"snapshot\.checkpoint_interval: must be longer than 0"),
        ("formats: [parquet, json]\n", r"formats: unknown format\(s\) \['json'\]"),
        ("formats: []\n", r"formats: expected a non-empty list"),
        ("window: {start: '22:00', end: '08:00'}\n", r"window\.end: 08:00 must be after start 22:00"),
        ("window: {start: '8am'}\n", r"window\.start: bad time"),
        ("window: {timezone: Mars/Olympus}\n", r"window\.timezone: unknown time zone"),
        ("connection: {lifetime: 24h}\n", r"connection\.lifetime: must be shorter than Binance's 24 h"),
        ("market: coinm\nconnection: {max_streams: 1100}\n", r"connection\.max_streams: 1100 exceeds coinm"),
        ("connection: {weight_headroom: 1.5}\n", r"connection\.weight_headroom: must be within"),
        ("writer: {segment_rows: 0}\n", r"writer\.segment_rows: must be >= 1"),
        ("sync: {max_buffer: true}\n", r"sync\.max_buffer: expected an integer, got bool"),
        ("shard: 3/3\n", r"shard: bad shard '3/3': need 0 <= i < n"),
        ("shard: three\n", r"shard: bad shard 'three'"),
        ("log: {format: xml}\n", r"log\.format: got 'xml'; use one of plain, json"),
        ("metrics_port: 70000\n", r"metrics_port: port 70000 out of range"),
        ("validate: [1]\n", r"validate: expected a mapping"),
        ("window: 08:00\n", r"window: expected a mapping, got str"),
        ("- a\n- b\n", r"expected a mapping of keys at the top level"),
    ],
)
def test_errors_name_file_and_key(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    assert message.startswith(str(tmp_path / "recorder.yaml"))
    assert re.search(expected, message), message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", {})


def test_empty_file_means_defaults(tmp_path):
    assert load_config(write(tmp_path, "# nothing\n"), {}) == load_config(None, {})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("5s", 5), ("10m", 600), ("23h30m", 84600), ("1h", 3600), ("1m30s", 90),
     ("2s500ms", 2.5), ("5", 5), ("0.5", 0.5), (7, 7), (1.5, 1.5), ("1.5s", 1.5), ("1.5h", 5400)],
)  # fmt: skip
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ms", "5x", "30m1h", "-5s", "-1", "nan", "inf", "1.5.5s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard(" 0/1 ") == (0, 1)
    for bad in ("4/4", "1/0", "-1/2", "1", "a/b", "1/2/3"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_shard_symbols_partition_every_symbol_exactly_once():
    symbols = [f"SYM{i}USDT" for i in range(200)]
    for count in (1, 2, 3, 7):
        shards = [shard_symbols(symbols, i, count) for i in range(count)]
        assert sorted(s for shard in shards for s in shard) == sorted(symbols)
        assert all(shard for shard in shards)  # 200 symbols spread over at most 7 shards
    # a symbol's shard does not depend on the other symbols (stable across deployments)
    assert shard_symbols(["BTCUSDT"], *_shard_of("BTCUSDT", symbols + ["BTCUSDT"], 3)) == ("BTCUSDT",)
    with pytest.raises(ValueError):
        shard_symbols(symbols, 3, 3)


def _shard_of(symbol: str, symbols: list[str], count: int) -> tuple[int, int]:
    return next((i, count) for i in range(count) if symbol in shard_symbols(symbols, i, count))


def test_shard_symbols_are_fixed_values():
    """crc32, not hash(): the same split in every process, run and Python version."""
    symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"]
    assert [shard_symbols(symbols, i, 3) for i in range(3)] == [
        ("BTCUSDT", "ETHUSDT"),
        ("XRPUSDT",),
        ("BNBUSDT", "SOLUSDT"),
    ]


def test_config_shard_symbols_property(tmp_path):
    config = load_config(write(tmp_path, "symbols: [BTCUSDT, ETHUSDT, BNBUSDT]\nshard: 1/2\n"), {})
    assert isinstance(config, RecorderConfig)
    assert config.shard_symbols == shard_symbols(config.symbols, 1, 2)
