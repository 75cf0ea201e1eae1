"""The recorder's configuration: a YAML file, overridden by command-line flags, checked once at start.

Every error is a `ConfigError` on one line naming where the value came from (the file or the command
line) and its dotted key, so a bad deployment fails before it opens a connection. Market-dependent
defaults (URLs, depth stream, stream limit) are resolved here so the runtime reads plain values.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from recorder.markets import SPOT, Market, get_market
from recorder.watchdog import CHANNELS, DEFAULT_RECONNECT_AFTER_S, DEFAULT_SILENT_AFTER_S

CONFIG_PATH_ENV = "CONFIG_PATH"
COMMAND_LINE = "command line"
FORMATS = ("parquet", "csv")
LOG_FORMATS = ("plain", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message is one line naming source and key."""


@dataclass(frozen=True)
class ChannelsConfig:
    depth: str  # depth stream suffix, e.g. depth@100ms
    trade: bool = True
    agg_trade: bool = True
    book_ticker: bool = True


@dataclass(frozen=True)
class SnapshotConfig:
    limit: int = 1000
    checkpoint_interval_s: float = 600.0
    stagger_s: float = 0.25  # pause between the first snapshot requests of different symbols
    # a snapshot no diff bridges (ahead of the stream) is discarded after this long or this many diffs
    bridge_timeout_s: float = 30.0
    bridge_max_diffs: int = 2000
    retry_max_backoff_s: float = 60.0  # upper bound of the back-off between failed snapshot attempts


@dataclass(frozen=True)
class WindowConfig:
    timezone: str = "Europe/Berlin"
    start: dt.time = dt.time(8, 0)
    end: dt.time = dt.time(22, 0)


@dataclass(frozen=True)
class WriterConfig:
    segment_seconds: float = 5.0
    segment_rows: int = 200_000
    journal_flush_ms: int = 200
    row_group_rows: int = 131_072


@dataclass(frozen=True)
class ConnectionConfig:
    max_streams: int  # streams per WebSocket connection
    lifetime_s: float = 23.5 * 3600  # roll over before Binance cuts the connection at 24 h
    reconnect_max_backoff_s: float = 30.0
    rest_timeout_s: float = 10.0
    weight_headroom: float = 0.8  # share of the market's request-weight budget the recorder may use


@dataclass(frozen=True)
class SyncConfig:
    max_buffer: int = 50_000


@dataclass(frozen=True)
class WatchdogConfig:
    """Per channel (depth, trade, agg_trade, book_ticker): seconds without a message on a stream while its
    connection is up before it counts as silent, and before its connection is replaced."""

    silent_after_s: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SILENT_AFTER_S))
    reconnect_after_s: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RECONNECT_AFTER_S))


@dataclass(frozen=True)
class LogConfig:
    format: str = "plain"
    level: str = "info"


@dataclass(frozen=True)
class RecorderConfig:
    market: Market
    symbols: tuple[str, ...]  # all symbols of the deployment; `shard_symbols` is this process's share
    out: Path
    rest_url: str
    ws_url: str
    channels: ChannelsConfig
    snapshot: SnapshotConfig
    formats: tuple[str, ...]
    window: WindowConfig
    writer: WriterConfig
    connection: ConnectionConfig
    sync: SyncConfig
    shard: tuple[int, int]  # (index, count)
    log: LogConfig
    metrics_port: int | None
    validate: Mapping[str, Any]  # thresholds for `recorder validate`, interpreted there
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    duration_s: float | None = None  # command line only: stop after this long
    ignore_window: bool = False  # command line only: record outside the trading window

    @property
    def shard_symbols(self) -> tuple[str, ...]:
        """The symbols this process records."""
        return shard_symbols(self.symbols, *self.shard)


# ---- value parsers: plain ValueError, the loader adds source and key ----------------------------------

_NUM = r"(\d+(?:\.\d+)?|\.\d+)"
_DURATION_RE = re.compile(rf"(?:{_NUM}h)?(?:{_NUM}m)?(?:{_NUM}s)?(?:{_NUM}ms)?")
_SYMBOL_RE = re.compile(r"[A-Z0-9_]+")
_TIME_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def parse_duration(value: str | float) -> float:
    """'250ms', '1.5s', '10m', '23h30m', '1h' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise TypeError(f"bad duration {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        match = _DURATION_RE.fullmatch(text)
        if text and match:
            h, m, s, ms = (float(part or 0) for part in match.groups())
            seconds = ((h * 60 + m) * 60 + s) + ms / 1000
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"bad duration {value!r} (use e.g. 250ms, 5s, 10m, 23h30m)") from None
    if not 0 <= seconds < float("inf"):  # also rejects nan
        raise ValueError(f"bad duration {value!r}: must be a finite number of seconds >= 0")
    return seconds


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4): shard index 2 of 4, 0 <= index < count."""
    index, sep, count = text.strip().partition("/")
    if not (sep and index.isdigit() and count.isdigit()):
        raise ValueError(f"bad shard {text!r} (use i/n, e.g. 0/1)")
    i, n = int(index), int(count)
    if not 0 <= i < n:
        raise ValueError(f"bad shard {text!r}: need 0 <= i < n")
    return i, n


def shard_symbols(symbols: Sequence[str], index: int, count: int) -> tuple[str, ...]:
    """The symbols of shard `index` of `count`, in input order.

    A symbol's shard depends only on its name (CRC-32, stable across processes and Python versions,
    unlike hash()), so every symbol lands in exactly one shard whatever the other symbols are.
    """
    if not 0 <= index < count:
        raise ValueError(f"bad shard {index}/{count}: need 0 <= i < n")
    return tuple(s for s in symbols if zlib.crc32(s.encode()) % count == index)


def _parse_time(value: Any) -> dt.time:
    match = _TIME_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f'bad time {value!r} (use HH:MM, e.g. "08:00")')
    return dt.time(int(match[1]), int(match[2]))


# ---- YAML ----------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's base-60 numbers, so `end: 22:00` stays the string "22:00"."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


# ---- loading -------------------------------------------------------------------------------------------

# CLI override name -> dotted key it replaces; None: a command-line-only setting
_OVERRIDE_KEYS: dict[str, str | None] = {
    "market": "market",
    "symbols": "symbols",
    "out": "out",
    "rest_url": "rest_url",
    "ws_url": "ws_url",
    "shard": "shard",
    "metrics_port": "metrics_port",
    "log_format": "log.format",
    "log_level": "log.level",
    "duration": None,
    "ignore_window": None,
}

_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "": (
        "market",
        "symbols",
        "out",
        "rest_url",
        "ws_url",
        "channels",
        "snapshot",
        "formats",
        "window",
        "writer",
        "connection",
        "sync",
        "shard",
        "log",
        "metrics_port",
        "validate",
        "watchdog",
    ),
    "channels": ("depth", "trade", "agg_trade", "book_ticker"),
    "snapshot": ("limit", "checkpoint_interval", "stagger", "bridge_timeout", "bridge_max_diffs",
                 "retry_max_backoff"),
    "window": ("timezone", "start", "end"),
    "writer": ("segment_seconds", "segment_rows", "journal_flush_ms", "row_group_rows"),
    "connection": ("lifetime", "max_streams", "reconnect_max_backoff", "rest_timeout", "weight_headroom"),
    "sync": ("max_buffer",),
    "log": ("format", "level"),
    "watchdog": ("silent_after", "reconnect_after"),
    "watchdog.silent_after": CHANNELS,
    "watchdog.reconnect_after": CHANNELS,
}


class _Reader:
    """Reads one mapping of the merged settings, naming the source and dotted key in every error."""

    def __init__(self, sources: Mapping[str, str], default_source: str, data: Any, section: str = ""):
        self._sources = sources  # dotted key -> where an overridden value came from
        self._default_source = default_source
        self._section = section
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error(section, f"expected a mapping, got {type(data).__name__}", with_key=False)
        allowed = _SECTION_KEYS[section]
        for key in data:
            if key not in allowed:
                level = f"in {section}" if section else "at the top level"
                raise self.error(str(key), f"unknown key; allowed {level}: {', '.join(allowed)}")
        self._data = data

    def _dotted(self, key: str) -> str:
        return f"{self._section}.{key}" if self._section else key

    def error(self, key: str, message: str, with_key: bool = True) -> ConfigError:
        dotted = self._dotted(key) if with_key else key
        source = self._sources.get(dotted, self._default_source)
        return ConfigError(f"{source}: {dotted}: {message}")

    def section(self, key: str) -> _Reader:
        return _Reader(self._sources, self._default_source, self._data.get(key), self._dotted(key))

    def get(self, key: str, parse: Callable[[Any], Any], default: Any) -> Any:
        """The parsed value of `key`; null or absent gives `default`."""
        value = self._data.get(key)
        if value is None:
            return default
        try:
            return parse(value)
        except (ValueError, TypeError) as exc:
            raise self.error(key, str(exc)) from None


def _typed(kind: type, name: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise TypeError(f"expected {name}, got {_describe(value)}")
        return value

    return check


def _describe(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"


def _int_at_least(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = _typed(int, "an integer")(value)
        if number < minimum:
            raise ValueError(f"must be >= {minimum}, got {number}")
        return number

    return check


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise ValueError(f"must be longer than 0, got {value!r}")
    return seconds


def _duration(value: Any) -> float:
    if not isinstance(value, str | int | float):
        raise TypeError(f"expected a duration such as 250ms, 5s, 10m, 23h30m, got {_describe(value)}")
    return parse_duration(value)


def _symbols(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected a list of symbols, got {_describe(value)}")
    if not value:
        raise ValueError("empty symbol list; name at least one symbol, e.g. [BTCUSDT]")
    for symbol in value:
        if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol):
            raise ValueError(f"bad symbol {symbol!r}: use Binance's upper-case name, e.g. BTCUSDT")
    duplicates = sorted({s for s in value if value.count(s) > 1})
    if duplicates:
        raise ValueError(f"symbols listed twice: {', '.join(duplicates)}")
    return tuple(value)


def _formats(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise TypeError(f"expected a non-empty list drawn from {list(FORMATS)}, got {_describe(value)}")
    unknown = [f for f in value if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; allowed: {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(value))


def _one_of(choices: Sequence[str]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError(f"got {value!r}; use one of {', '.join(choices)}")
        return value.lower()

    return check


def _timezone(value: Any) -> str:
    try:
        ZoneInfo(_typed(str, "a time zone name")(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}, e.g. Europe/Berlin") from None
    return value


def _shard(value: Any) -> tuple[int, int]:
    return parse_shard(_typed(str, "a shard i/n")(value))


def _port(value: Any) -> int:
    port = _typed(int, "a port number")(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0..65535")
    return port


def _headroom(value: Any) -> float:
    share = float(_typed(int | float, "a number in (0, 1]")(value))
    if not 0 < share <= 1:
        raise ValueError(f"must be within (0, 1], got {value!r}")
    return share


def _mapping(value: Any) -> dict[str, Any]:
    return dict(_typed(dict, "a mapping")(value))


def _watchdog(section: _Reader) -> WatchdogConfig:
    silent, reconnect = section.section("silent_after"), section.section("reconnect_after")
    silent_after = {c: silent.get(c, _positive_duration, DEFAULT_SILENT_AFTER_S[c]) for c in CHANNELS}
    reconnect_after = {c: reconnect.get(c, _positive_duration, DEFAULT_RECONNECT_AFTER_S[c]) for c in CHANNELS}
    for channel in CHANNELS:
        if reconnect_after[channel] <= silent_after[channel]:
            raise reconnect.error(channel, f"{reconnect_after[channel]:g} s must be longer than "
                                           f"watchdog.silent_after.{channel} ({silent_after[channel]:g} s)")
    return WatchdogConfig(silent_after, reconnect_after)


def _merge_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, str]:
    """Write the given CLI values into `data` (in place); return dotted key -> source of each."""
    unknown = [name for name in overrides if name not in _OVERRIDE_KEYS]
    if unknown:
        allowed = ", ".join(_OVERRIDE_KEYS)
        raise ConfigError(f"{COMMAND_LINE}: unknown override(s) {unknown}; allowed: {allowed}")
    sources: dict[str, str] = {}
    for name, value in overrides.items():
        dotted = _OVERRIDE_KEYS[name]
        if value is None or dotted is None:
            continue
        if name == "shard" and isinstance(value, tuple | list) and len(value) == 2:
            value = f"{value[0]}/{value[1]}"
        elif name == "out":
            value = str(value)
        section, _, key = dotted.rpartition(".")
        target = data
        if section:
            if not isinstance(data.get(section), dict):
                data[section] = {}
            target = data[section]
        target[key] = value
        sources[dotted] = COMMAND_LINE
    return sources


def _command_line_duration(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return _positive_duration(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{COMMAND_LINE}: duration: {exc}") from None


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> RecorderConfig:
    """Read the file (or `$CONFIG_PATH`, or nothing: all defaults) and apply the CLI `overrides`.

    `overrides` holds already-parsed flag values by name; None means the flag was not given.
    """
    overrides = dict(overrides or {})
    if path is None and os.environ.get(CONFIG_PATH_ENV):
        path = Path(os.environ[CONFIG_PATH_ENV])
    data = _read_yaml(path) if path is not None else {}
    sources = _merge_overrides(data, overrides)
    top = _Reader(sources, str(path) if path is not None else "defaults", data)

    market = top.get("market", lambda v: get_market(_typed(str, "a market name")(v)), SPOT)
    channels = top.section("channels")
    snapshot = top.section("snapshot")
    window = top.section("window")
    writer = top.section("writer")
    connection = top.section("connection")
    log = top.section("log")

    def depth_stream(value: Any) -> str:
        suffix = _typed(str, "a depth stream suffix")(value)
        if suffix not in market.depth_streams:
            offered = ", ".join(market.depth_streams)
            raise ValueError(f"{suffix!r} not offered on {market.name}; use one of {offered}")
        return suffix

    def snapshot_limit(value: Any) -> int:
        return market.check_limit(_typed(int, "an integer")(value))

    def max_streams(value: Any) -> int:
        count = _int_at_least(1)(value)
        if count > market.max_streams_per_connection:
            limit = market.max_streams_per_connection
            raise ValueError(f"{count} exceeds {market.name}'s limit of {limit} per connection")
        return count

    def lifetime(value: Any) -> float:
        seconds = _positive_duration(value)
        if seconds >= market.connection_lifetime_s:
            raise ValueError(f"must be shorter than Binance's {market.connection_lifetime_s / 3600:g} h cut")
        return seconds

    window_config = WindowConfig(
        timezone=window.get("timezone", _timezone, WindowConfig.timezone),
        start=window.get("start", _parse_time, WindowConfig.start),
        end=window.get("end", _parse_time, WindowConfig.end),
    )
    if window_config.end <= window_config.start:
        start, end = window_config.start, window_config.end
        raise window.error("end", f"{end:%H:%M} must be after start {start:%H:%M}")

    return RecorderConfig(
        market=market,
        symbols=top.get("symbols", _symbols, ("BTCUSDT",)),
        out=Path(top.get("out", _typed(str, "a directory path"), "./data")),
        rest_url=top.get("rest_url", _typed(str, "a URL"), market.rest_url),
        ws_url=top.get("ws_url", _typed(str, "a URL"), market.ws_url),
        channels=ChannelsConfig(
            depth=channels.get("depth", depth_stream, market.depth_streams[0]),
            trade=channels.get("trade", _typed(bool, "true or false"), True),
            agg_trade=channels.get("agg_trade", _typed(bool, "true or false"), True),
            book_ticker=channels.get("book_ticker", _typed(bool, "true or false"), True),
        ),
        snapshot=SnapshotConfig(
            limit=snapshot.get("limit", snapshot_limit, SnapshotConfig.limit),
            checkpoint_interval_s=snapshot.get(
                "checkpoint_interval", _positive_duration, SnapshotConfig.checkpoint_interval_s
            ),
            stagger_s=snapshot.get("stagger", _duration, SnapshotConfig.stagger_s),
            bridge_timeout_s=snapshot.get("bridge_timeout", _positive_duration, SnapshotConfig.bridge_timeout_s),
            bridge_max_diffs=snapshot.get("bridge_max_diffs", _int_at_least(1), SnapshotConfig.bridge_max_diffs),
            retry_max_backoff_s=snapshot.get(
                "retry_max_backoff", _positive_duration, SnapshotConfig.retry_max_backoff_s
            ),
        ),
        formats=top.get("formats", _formats, ("parquet",)),
        window=window_config,
        writer=WriterConfig(
            segment_seconds=writer.get("segment_seconds", _positive_duration, WriterConfig.segment_seconds),
            segment_rows=writer.get("segment_rows", _int_at_least(1), WriterConfig.segment_rows),
            journal_flush_ms=writer.get("journal_flush_ms", _int_at_least(1), WriterConfig.journal_flush_ms),
            row_group_rows=writer.get("row_group_rows", _int_at_least(1), WriterConfig.row_group_rows),
        ),
        connection=ConnectionConfig(
            max_streams=connection.get("max_streams", max_streams, market.max_streams_per_connection),
            lifetime_s=connection.get("lifetime", lifetime, ConnectionConfig.lifetime_s),
            reconnect_max_backoff_s=connection.get(
                "reconnect_max_backoff", _positive_duration, ConnectionConfig.reconnect_max_backoff_s
            ),
            rest_timeout_s=connection.get(
                "rest_timeout", _positive_duration, ConnectionConfig.rest_timeout_s
            ),
            weight_headroom=connection.get("weight_headroom", _headroom, ConnectionConfig.weight_headroom),
        ),
        sync=SyncConfig(
            max_buffer=top.section("sync").get("max_buffer", _int_at_least(1), SyncConfig.max_buffer)
        ),
        shard=top.get("shard", _shard, (0, 1)),
        log=LogConfig(
            format=log.get("format", _one_of(LOG_FORMATS), LogConfig.format),
            level=log.get("level", _one_of(LOG_LEVELS), LogConfig.level),
        ),
        metrics_port=top.get("metrics_port", _port, None),
        validate=top.get("validate", _mapping, {}),
        watchdog=_watchdog(top.section("watchdog")),
        duration_s=_command_line_duration(overrides.get("duration")),
        ignore_window=bool(overrides.get("ignore_window") or False),
    )
