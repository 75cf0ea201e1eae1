"""Per-stream silence watchdog: notices a subscribed stream that stops delivering while its connection is up.

Sans-I/O: the runtime feeds it connection opens and closes, every parsed message (`seen`, one dict store on
the hot path) and the time (`check`, from a slow periodic task), and acts on the decisions it returns: a
`StreamSilent` once per silence, a `StreamResumed` when the stream delivers again, and a `Reconnect` of the
stream's connection when the silence lasts longer still. Times are int64 ns of the receive clock.

A stream's clock starts when a connection carrying it opens, not at process start, and stops while no open
connection carries it (a disconnect is reported as such, not as a silence). A silence outlives a reconnect:
it ends only with the stream's next message. Reconnects within one silence back off (the wait doubles), so
a stream that is silent at the source (a halted symbol) costs one fresh connection per doubling wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from recorder.protocol import AggTrade, BookTicker, DepthUpdate, Trade

NS = 1_000_000_000
CHANNELS = ("depth", "trade", "agg_trade", "book_ticker")  # the config's channel names

# Defaults from the inter-arrival gaps per stream in the real captures of shared/realdata (cryptofeed 2021
# sessions of illiquid binance.com and binance.us pairs, 30-119 s each; hftbacktest 2023-24 BTC/ETH sessions of
# 2-7 min): the longest gaps were 17 s on depth@100ms (BUSDUSD on binance.us; BTCAUD 15 s on binance.com),
# 16 s on bookTicker (BTCAUD) and 113 s between two aggTrades (QTUMETH; AXSBNB's first came 41 s after the
# subscription); BTC/ETH never paused over 2.1 s on depth, 3.9 s on bookTicker, 8.5 s on trades. Depth and
# bookTicker follow every book change, so a minute without one is several times the worst seen; trades of an
# illiquid pair can pause for many minutes, so 15 minutes.
DEFAULT_SILENT_AFTER_S: Mapping[str, float] = {"depth": 60.0, "trade": 900.0, "agg_trade": 900.0,
                                               "book_ticker": 60.0}
# A reconnect (a gapless rollover) only after the silence has lasted several times longer: a fresh connection
# cures a stream the server stopped routing, and costs nothing the data would notice.
DEFAULT_RECONNECT_AFTER_S: Mapping[str, float] = {"depth": 300.0, "trade": 3600.0, "agg_trade": 3600.0,
                                                  "book_ticker": 600.0}

_CHANNEL_OF_SUFFIX = {"depth": "depth", "trade": "trade", "aggTrade": "agg_trade", "bookTicker": "book_ticker"}
_TYPE_OF_CHANNEL = {"depth": DepthUpdate, "trade": Trade, "agg_trade": AggTrade, "book_ticker": BookTicker}


def stream_channel(stream: str) -> tuple[str, str] | None:
    """'btcusdt@depth@100ms' -> ('BTCUSDT', 'depth'); None for a stream the watchdog does not watch."""
    symbol, _, suffix = stream.partition("@")
    channel = _CHANNEL_OF_SUFFIX.get(suffix.partition("@")[0])
    return None if channel is None or not symbol else (symbol.upper(), channel)


def channels_of(streams: Iterable[str]) -> list[str]:
    """The watched channels among `streams`, in `CHANNELS` order."""
    present = {parsed[1] for parsed in map(stream_channel, streams) if parsed is not None}
    return [c for c in CHANNELS if c in present]


@dataclass(frozen=True)
class StreamSilent:
    stream: str
    symbol: str
    channel: str
    silent_since_ns: int  # its last message, or the opening of its connection if none came since
    threshold_s: float
    connection: int


@dataclass(frozen=True)
class StreamResumed:
    stream: str
    symbol: str
    channel: str
    silent_since_ns: int
    resumed_ns: int  # receive time of the first message after the silence


@dataclass(frozen=True)
class Reconnect:
    connection: int
    streams: tuple[str, ...]  # the silent streams that asked for it
    silent_for_s: float  # the longest of their silences


Decision = StreamSilent | StreamResumed | Reconnect


class _Stream:
    __slots__ = ("carriers", "channel", "key", "name", "reconnect_after", "reconnects", "silent_after",
                 "silent_since", "started", "symbol")

    def __init__(self, name: str, symbol: str, channel: str, silent_after: int, reconnect_after: int) -> None:
        self.name = name
        self.symbol = symbol
        self.channel = channel
        self.key = (_TYPE_OF_CHANNEL[channel], symbol)
        self.silent_after = silent_after
        self.reconnect_after = reconnect_after
        self.carriers: list[int] = []  # open connections delivering it, oldest first
        self.started = 0  # the latest opening of a carrier, or the latest reconnect asked for
        self.silent_since: int | None = None
        self.reconnects = 0  # within the current silence


class StreamWatchdog:
    """Silence detection for every stream of the recorder's connections, keyed by stream name and connection id."""

    def __init__(self, silent_after_s: Mapping[str, float] = DEFAULT_SILENT_AFTER_S,
                 reconnect_after_s: Mapping[str, float] = DEFAULT_RECONNECT_AFTER_S) -> None:
        self.silent_after_ns = {c: int(silent_after_s[c] * NS) for c in CHANNELS}
        self.reconnect_after_ns = {c: int(reconnect_after_s[c] * NS) for c in CHANNELS}
        self.silent: set[str] = set()  # names of the streams silent now
        self._streams: dict[str, _Stream] = {}
        self._by_connection: dict[int, list[_Stream]] = {}
        self._last: dict[tuple[type, str], int] = {}  # (message type, symbol) -> receive time of the last one

    @property
    def check_interval_s(self) -> float:
        """How often `check` should run: a quarter of the shortest threshold, at most once a second."""
        return min(1.0, min(self.silent_after_ns.values()) / NS / 4)

    def seen(self, message: object, now: int) -> None:
        """A parsed message received at `now`; on the hot path, so one dict store (about 0.1 µs)."""
        try:
            self._last[type(message), message.symbol] = now
        except AttributeError:  # not a stream message: ParseError, SubscribeAck, ...
            pass

    def seen_latest(self, latest: dict[tuple[type, str], int]) -> None:
        """Receive times of a batch of frames, the latest per (message type, symbol)."""
        self._last.update(latest)

    def opened(self, connection: int, streams: Iterable[str], now: int) -> None:
        """A connection carrying `streams` is open: their clocks (re)start now."""
        carried = []
        for name in streams:
            stream = self._streams.get(name)
            if stream is None:
                parsed = stream_channel(name)
                if parsed is None:
                    continue
                symbol, channel = parsed
                stream = self._streams[name] = _Stream(name, symbol, channel, self.silent_after_ns[channel],
                                                       self.reconnect_after_ns[channel])
            if connection not in stream.carriers:
                stream.carriers.append(connection)
            stream.started = now
            carried.append(stream)
        self._by_connection[connection] = carried

    def closed(self, connection: int) -> None:
        """The connection is gone (lost or retired): streams no other open connection carries pause."""
        for stream in self._by_connection.pop(connection, ()):
            if connection in stream.carriers:
                stream.carriers.remove(connection)

    def check(self, now: int) -> list[Decision]:
        decisions: list[Decision] = []
        reconnects: dict[int, list[tuple[str, int]]] = {}
        for stream in self._streams.values():
            last = self._last.get(stream.key, 0)
            if stream.silent_since is not None and last > stream.silent_since:
                decisions.append(StreamResumed(stream.name, stream.symbol, stream.channel, stream.silent_since, last))
                stream.silent_since = None
                stream.reconnects = 0
                self.silent.discard(stream.name)
            if not stream.carriers:
                continue  # paused: no open connection carries it
            quiet_since = max(last, stream.started)
            if stream.silent_since is None:
                if now - quiet_since > stream.silent_after:
                    stream.silent_since = quiet_since
                    self.silent.add(stream.name)
                    decisions.append(StreamSilent(stream.name, stream.symbol, stream.channel, quiet_since,
                                                  stream.silent_after / NS, stream.carriers[-1]))
            elif len(stream.carriers) == 1 and now - quiet_since > stream.reconnect_after << stream.reconnects:
                reconnects.setdefault(stream.carriers[0], []).append((stream.name, now - stream.silent_since))
                stream.reconnects += 1
                stream.started = now  # the next escalation waits for the fresh connection
        for connection, silent in reconnects.items():
            decisions.append(Reconnect(connection, tuple(name for name, _ in silent),
                                       max(ns for _, ns in silent) / NS))
        return decisions
