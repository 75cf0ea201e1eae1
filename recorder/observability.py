"""Logs, Prometheus metrics, a health endpoint and a live status table for the recorder.

Metric updates sit on the message hot path, so a sample is one dict update keyed by a tuple of label
values; all text formatting happens when /metrics is scraped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

from rich.console import Console
from rich.live import Live
from rich.table import Table

log = logging.getLogger(__name__)

# ---- logging -------------------------------------------------------------------------------------------

# attributes every LogRecord has; anything else on a record came from `extra=`
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra=` fields; a private one (a leading `_`, e.g. the `_ray_timestamp_ns` that importing
    Ray adds to every record of the process) is not ours to print."""
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601 UTC), level, logger, msg, then the `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """`ts LEVEL logger: msg key=value ...` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _extra_fields(record).items())
        if not extra:
            return line
        head, newline, traceback = line.partition("\n")
        return f"{head} {extra}{newline}{traceback}"


class _RecorderHandler(logging.StreamHandler):
    """Marks the handler `setup_logging` installs, so calling it again replaces rather than adds."""


def setup_logging(format: str = "plain", level: str = "info", stream: TextIO | None = None) -> None:
    """Send the root logger's records to `stream` (stderr) as plain text or JSON lines."""
    formatters = {"plain": PlainFormatter, "json": JsonFormatter}
    if format not in formatters:
        raise ValueError(f"unknown log format {format!r}; use one of {', '.join(formatters)}")
    handler = _RecorderHandler(stream or sys.stderr)
    handler.setFormatter(formatters[format]())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _RecorderHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


# ---- metrics -------------------------------------------------------------------------------------------


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


@dataclass
class _Family:
    name: str
    help: str
    label_names: tuple[str, ...]
    values: dict[tuple[str, ...], float] = field(default_factory=dict)  # label values -> sample

    def __post_init__(self) -> None:
        if not self.label_names:
            self.values[()] = 0  # an unlabelled series exists from the start

    def render(self, kind: str) -> list[str]:
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {kind}"]
        for label_values, value in sorted(self.values.items()):
            if len(label_values) != len(self.label_names):
                raise ValueError(f"{self.name}: got labels {label_values}, expected {self.label_names}")
            labels = ",".join(
                f'{name}="{_escape_label(str(v))}"' for name, v in zip(self.label_names, label_values)
            )
            series = f"{self.name}{{{labels}}}" if labels else self.name
            lines.append(f"{series} {_format_value(value)}")
        return lines


class Counter(_Family):
    """A monotonically increasing count per label-value tuple."""

    def inc(self, *label_values: str) -> None:
        values = self.values
        values[label_values] = values.get(label_values, 0) + 1

    def add(self, amount: float, *label_values: str) -> None:
        values = self.values
        values[label_values] = values.get(label_values, 0) + amount


class Gauge(_Family):
    """A last-set value per label-value tuple."""

    def set(self, value: float, *label_values: str) -> None:
        self.values[label_values] = value


_F = TypeVar("_F", bound=_Family)


class Metrics:
    """The recorder's metric families (attributes, for the hot path) plus any registered later.

    Label values are passed positionally in `label_names` order, e.g.
    `metrics.messages.inc("BTCUSDT", "depth")`; a wrong count shows up as an error at render time.
    """

    def __init__(self) -> None:
        self._families: list[tuple[str, _Family]] = []
        self.messages = self.counter(
            "recorder_messages_total", "Stream messages received.", ("symbol", "channel")
        )
        self.gaps = self.counter("recorder_gaps_total", "Sequence gaps detected in depth diffs.", ("symbol",))
        self.synced = self.gauge(
            "recorder_synced", "1 while the symbol's local book is in sync.", ("symbol",)
        )
        self.feed_latency_ms = self.gauge(
            "recorder_feed_latency_ms", "Receive time minus event time (E) of the last message.", ("symbol",)
        )
        self.last_write_timestamp = self.gauge(
            "recorder_last_write_timestamp_seconds", "Unix time of the last segment written."
        )
        self.resyncs = self.counter("recorder_resyncs_total", "Book resynchronisations from a snapshot.")
        self.rest_requests = self.counter(
            "recorder_rest_requests_total", "REST requests by HTTP status.", ("status",)
        )
        self.used_weight = self.gauge(
            "recorder_used_weight", "Binance request weight used this minute (X-MBX-USED-WEIGHT-1M)."
        )
        self.stream_silent = self.gauge(
            "recorder_stream_silent", "1 while the stream has had no message for longer than its watchdog "
            "threshold, its connection up.", ("symbol", "channel")
        )
        self.stream_silences = self.counter(
            "recorder_stream_silences_total", "Silences noticed by the stream watchdog.", ("symbol", "channel")
        )
        self.stream_reconnects = self.counter(
            "recorder_stream_reconnects_total", "Connections replaced because a stream stayed silent."
        )
        self.state = self.gauge(
            "recorder_state", "1 for the recorder's current health state, 0 for the others.", ("state",)
        )

    def counter(self, name: str, help: str, label_names: tuple[str, ...] = ()) -> Counter:
        return self._register("counter", Counter(name, help, label_names))

    def gauge(self, name: str, help: str, label_names: tuple[str, ...] = ()) -> Gauge:
        return self._register("gauge", Gauge(name, help, label_names))

    def _register(self, kind: str, family: _F) -> _F:
        if any(existing.name == family.name for _, existing in self._families):
            raise ValueError(f"metric {family.name} registered twice")
        self._families.append((kind, family))
        return family

    def render(self) -> str:
        """All families in the Prometheus text exposition format (version 0.0.4)."""
        lines = [line for kind, family in self._families for line in family.render(kind)]
        return "\n".join(lines) + "\n"


# ---- HTTP: /metrics and /healthz -----------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """What a health callback reports; `details` are added to the /healthz JSON body."""

    ok: bool
    reason: str = ""  # why not ok
    details: Mapping[str, Any] = field(default_factory=dict)
    state: str = ""  # e.g. waiting, starting, recording, degraded (recorder/health.py)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_REQUEST_TIMEOUT_S = 5.0
_MAX_HEADER_LINES = 100


class MetricsServer:
    """A minimal asyncio HTTP/1.1 server: GET /metrics and GET /healthz, one request per connection."""

    def __init__(
        self,
        metrics: Metrics,
        host: str = "127.0.0.1",
        port: int = 0,
        health: Callable[[], Health] | None = None,
    ):
        self.metrics = metrics
        self.host = host
        self.port = port  # the bound port once started (port 0 picks a free one)
        self.health = health
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics server listening on %s", self.url, extra={"port": self.port})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(self._read_head(reader), _REQUEST_TIMEOUT_S)
            status, content_type, body = self._respond(request_line)
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that went away or sent garbage gets no answer
        finally:
            writer.close()

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> str:
        """The request line; the headers are read and ignored."""
        request_line = (await reader.readuntil(b"\r\n")).decode("latin-1").strip()
        for _ in range(_MAX_HEADER_LINES):
            if await reader.readuntil(b"\r\n") == b"\r\n":
                break
        return request_line

    def _respond(self, request_line: str) -> tuple[int, str, bytes]:
        parts = request_line.split()
        if len(parts) != 3:
            return 400, "text/plain", b"bad request\n"
        method, target, _ = parts
        path = target.partition("?")[0]
        if path not in ("/metrics", "/healthz"):
            return 404, "text/plain", b"not found\n"
        if method != "GET":
            return 405, "text/plain", b"method not allowed\n"
        health = self._check_health()  # also for /metrics: the health callback sets the state gauge
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render().encode()
        body: dict[str, Any] = {"status": "ok"} if health.ok else {"status": "unhealthy", "reason": health.reason}
        if health.state:
            body["state"] = health.state
        body.update(health.details)
        return (200 if health.ok else 503), "application/json", json.dumps(body, default=str).encode()

    def _check_health(self) -> Health:
        if self.health is None:
            return Health(True)
        try:
            return self.health()
        except Exception as exc:  # a broken check is itself unhealthy, not a crashed server
            log.exception("health check failed")
            return Health(False, f"health check failed: {exc!r}")


# ---- terminal status -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusRow:
    symbol: str
    messages_per_s: float
    sync_state: str  # e.g. synced, bridging, need_snapshot
    gaps: int
    feed_latency_ms: int | None  # receive time minus event time E of the last message
    last_write_age_s: float | None  # None: nothing written yet


def _optional(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def status_table(rows: Sequence[StatusRow]) -> Table:
    table = Table(title="recorder")
    for column in ("symbol", "msg/s", "sync", "gaps", "latency ms", "last write s"):
        table.add_column(column, justify="left" if column in ("symbol", "sync") else "right")
    for row in rows:
        table.add_row(
            row.symbol,
            f"{row.messages_per_s:.1f}",
            row.sync_state,
            str(row.gaps),
            _optional(row.feed_latency_ms, "d"),
            _optional(row.last_write_age_s, ".1f"),
        )
    return table


def status_summary(rows: Sequence[StatusRow]) -> str:
    """One line for logs when there is no terminal to draw the table on."""
    latencies = [r.feed_latency_ms for r in rows if r.feed_latency_ms is not None]
    ages = [r.last_write_age_s for r in rows if r.last_write_age_s is not None]
    return (
        f"{len(rows)} symbols, {sum(r.sync_state == 'synced' for r in rows)} synced, "
        f"{sum(r.messages_per_s for r in rows):.1f} msg/s, {sum(r.gaps for r in rows)} gaps, "
        f"max latency {_optional(max(latencies, default=None), 'd')} ms, "
        f"oldest write {_optional(max(ages, default=None), '.1f')} s ago"
    )


class StatusView:
    """Redraws a status table on a terminal, or logs a one-line summary when stdout is not one."""

    def __init__(
        self,
        snapshot: Callable[[], Sequence[StatusRow]],
        refresh_s: float = 1.0,
        summary_every_s: float = 60.0,
        console: Console | None = None,
    ):
        self.snapshot = snapshot
        self.refresh_s = refresh_s
        self.summary_every_s = summary_every_s
        self.console = console or Console()

    async def run(self) -> None:
        """Until cancelled. A failure is logged, not lost with the task."""
        try:
            if self.console.is_terminal:
                await self._draw()
            else:
                await self._log_summaries()
        except Exception:
            log.exception("status view stopped")
            raise

    async def _log_summaries(self) -> None:
        while True:
            await asyncio.sleep(self.summary_every_s)
            log.info("status: %s", status_summary(self.snapshot()))

    async def _draw(self) -> None:
        with Live(status_table(self.snapshot()), console=self.console, auto_refresh=False) as live:
            # log lines through Live's stderr proxy, which prints them above the table instead of into it
            handlers = [h for h in logging.getLogger().handlers if isinstance(h, _RecorderHandler)]
            streams = [h.setStream(sys.stderr) for h in handlers]
            try:
                while True:
                    await asyncio.sleep(self.refresh_s)
                    live.update(status_table(self.snapshot()), refresh=True)
            finally:
                for handler, stream in zip(handlers, streams, strict=True):
                    handler.setStream(stream)
