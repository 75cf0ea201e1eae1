"""Logging formats, the Prometheus text rendering, /metrics and /healthz over HTTP, status output."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import httpx
import pytest
from rich.console import Console

from recorder.observability import (
    Health,
    Metrics,
    MetricsServer,
    StatusRow,
    StatusView,
    setup_logging,
    status_summary,
    status_table,
)


def run(coro, timeout: float = 10.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# ---- logging -------------------------------------------------------------------------------------------


def test_json_log_lines_parse_and_carry_extra_fields(restore_root_logger):
    stream = io.StringIO()
    setup_logging("json", "debug", stream=stream)
    logger = logging.getLogger("recorder.test")
    logger.debug("gap in %s", "BTCUSDT", extra={"symbol": "BTCUSDT", "kind": "gap", "missing": 3})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("resync failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "debug"
    assert first["logger"] == "recorder.test"
    assert first["msg"] == "gap in BTCUSDT"
    assert (first["symbol"], first["kind"], first["missing"]) == ("BTCUSDT", "gap", 3)
    assert first["ts"].endswith("+00:00") and "T" in first["ts"]
    assert "RuntimeError: boom" in second["exc"]


def test_setup_logging_replaces_its_handler_and_sets_the_level(restore_root_logger):
    first, second = io.StringIO(), io.StringIO()
    setup_logging("json", "info", stream=first)
    setup_logging("plain", "warning", stream=second)
    logging.getLogger("recorder.test").info("hidden")
    logging.getLogger("recorder.test").warning("shown", extra={"symbol": "ETHUSDT"})
    assert first.getvalue() == ""
    line = second.getvalue().strip()
    assert "WARNING" in line and "recorder.test: shown symbol=ETHUSDT" in line
    with pytest.raises(ValueError):
        setup_logging("xml")


# ---- metrics -------------------------------------------------------------------------------------------


def test_prometheus_text_format():
    metrics = Metrics()
    metrics.messages.inc("BTCUSDT", "depth")
    metrics.messages.inc("BTCUSDT", "depth")
    metrics.messages.add(5, "ETHUSDT", "trade")
    metrics.synced.set(1, "BTCUSDT")
    metrics.feed_latency_ms.set(12.5, "BTCUSDT")
    metrics.resyncs.inc()
    metrics.rest_requests.inc("200")
    metrics.used_weight.set(120)
    text = metrics.render()
    lines = text.splitlines()
    assert text.endswith("\n")
    counter = lines.index("# TYPE recorder_messages_total counter")
    assert lines[counter - 1] == "# HELP recorder_messages_total Stream messages received."
    assert lines[counter + 1 : counter + 3] == [
        'recorder_messages_total{symbol="BTCUSDT",channel="depth"} 2',
        'recorder_messages_total{symbol="ETHUSDT",channel="trade"} 5',
    ]
    assert "# TYPE recorder_synced gauge" in lines
    assert 'recorder_synced{symbol="BTCUSDT"} 1' in lines
    assert 'recorder_feed_latency_ms{symbol="BTCUSDT"} 12.5' in lines
    assert "recorder_resyncs_total 1" in lines
    assert 'recorder_rest_requests_total{status="200"} 1' in lines
    assert "recorder_used_weight 120" in lines
    assert "recorder_last_write_timestamp_seconds 0" in lines  # unlabelled series exist from the start
    assert "# TYPE recorder_gaps_total counter" in lines  # a family without samples keeps its header
    for line in lines:  # every sample line is `name{labels} value`
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_label_and_help_escaping_and_special_values():
    metrics = Metrics()
    odd = metrics.gauge("odd_value", "help with \\ and\nnewline", ("label",))
    odd.set(float("inf"), 'quote " back \\ new\nline')
    odd.set(float("nan"), "nan")
    lines = metrics.render().splitlines()
    assert "# HELP odd_value help with \\\\ and\\nnewline" in lines
    assert 'odd_value{label="quote \\" back \\\\ new\\nline"} +Inf' in lines
    assert 'odd_value{label="nan"} NaN' in lines


def test_wrong_label_count_and_duplicate_names_fail_loudly():
    metrics = Metrics()
    metrics.gaps.inc("BTCUSDT", "extra")
    with pytest.raises(ValueError, match="recorder_gaps_total"):
        metrics.render()
    with pytest.raises(ValueError, match="twice"):
        metrics.counter("recorder_gaps_total", "again")


# ---- HTTP ----------------------------------------------------------------------------------------------


async def _serve_and_get(health, paths, method="GET"):
    metrics = Metrics()
    metrics.messages.inc("BTCUSDT", "depth")
    server = MetricsServer(metrics, "127.0.0.1", 0, health=health)
    await server.start()
    try:
        assert server.port != 0
        async with httpx.AsyncClient(base_url=server.url) as client:
            return [await client.request(method, path) for path in paths]
    finally:
        await server.stop()


def test_metrics_and_healthz_over_http():
    metrics, healthz, missing = run(
        _serve_and_get(lambda: Health(True, details={"synced": 2}), ["/metrics", "/healthz", "/nope"])
    )
    assert metrics.status_code == 200
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert 'recorder_messages_total{symbol="BTCUSDT",channel="depth"} 1' in metrics.text.splitlines()
    assert healthz.status_code == 200
    assert healthz.json() == {"status": "ok", "synced": 2}
    assert missing.status_code == 404


def test_healthz_503_with_reason_when_unhealthy():
    (response,) = run(_serve_and_get(lambda: Health(False, "BTCUSDT not synced for 120 s"), ["/healthz"]))
    assert response.status_code == 503
    assert response.json() == {"status": "unhealthy", "reason": "BTCUSDT not synced for 120 s"}


def test_healthz_503_when_the_check_raises():
    def broken() -> Health:
        raise RuntimeError("no state yet")

    (response,) = run(_serve_and_get(broken, ["/healthz"]))
    assert response.status_code == 503
    assert "no state yet" in response.json()["reason"]


def test_healthz_without_a_check_is_ok_and_post_is_refused():
    (ok,) = run(_serve_and_get(None, ["/healthz"]))
    assert ok.status_code == 200 and ok.json() == {"status": "ok"}
    (post,) = run(_serve_and_get(None, ["/metrics"], method="POST"))
    assert post.status_code == 405


def test_query_strings_are_ignored_and_garbage_is_survived():
    async def scenario():
        server = MetricsServer(Metrics())
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"nonsense\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
            writer.close()
            async with httpx.AsyncClient() as client:
                return await client.get(f"{server.url}/metrics?name=x")
        finally:
            await server.stop()

    assert run(scenario()).status_code == 200


# ---- status --------------------------------------------------------------------------------------------

ROWS = [
    StatusRow("BTCUSDT", 41.25, "synced", 0, 12, 1.5),
    StatusRow("ETHUSDT", 10.0, "need_snapshot", 2, None, None),
]


def test_status_table_and_summary():
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    console.print(status_table(ROWS))
    drawn = console.file.getvalue()
    assert "BTCUSDT" in drawn and "41.2" in drawn and "need_snapshot" in drawn
    assert status_summary(ROWS) == (
        "2 symbols, 1 synced, 51.2 msg/s, 2 gaps, max latency 12 ms, oldest write 1.5 s ago"
    )
    assert status_summary([]) == (
        "0 symbols, 0 synced, 0.0 msg/s, 0 gaps, max latency - ms, oldest write - s ago"
    )


def test_status_view_logs_a_summary_without_a_terminal(caplog):
    view = StatusView(lambda: ROWS, summary_every_s=0.01, console=Console(file=io.StringIO()))

    async def briefly():
        task = asyncio.create_task(view.run())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.INFO, logger="recorder.observability"):
        run(briefly())
    assert any(r.getMessage().startswith("status: 2 symbols, 1 synced") for r in caplog.records)


def test_status_view_draws_on_a_terminal():
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=100)
    view = StatusView(lambda: ROWS, refresh_s=0.01, console=console)

    async def briefly():
        task = asyncio.create_task(view.run())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(briefly())
    assert "ETHUSDT" in output.getvalue()


def test_problem_log_says_the_first_at_once_then_one_summary_per_interval():
    from recorder.problems import ProblemLog

    problems = ProblemLog(interval_s=60.0)
    latest = {"parse_errors": "bad json: {\"e\":"}
    assert problems.update({"parse_errors": 0, "errors": 0}, {}, 0.0) == []
    first = problems.update({"parse_errors": 1}, latest, 1.0)
    assert len(first) == 1 and first[0].startswith("WebSocket parse errors: bad json")
    assert all(problems.update({"parse_errors": n}, latest, t) == [] for n, t in ((50, 2.0), (400, 30.0), (999, 60.9)))
    (summary,) = problems.update({"parse_errors": 1000}, latest, 61.0)
    assert summary.startswith("WebSocket parse errors: 999 more in the last 60 s")
    assert problems.update({"parse_errors": 1000}, latest, 500.0) == []  # nothing new: silent
    (late,) = problems.update({"parse_errors": 1001}, latest, 501.0)
    assert "1 more in the last 440 s" in late


def test_health_states_from_the_facts():
    from recorder.health import recording_health, waiting

    symbols = ["BTCUSDT", "ETHUSDT"]
    assert waiting(3600.4, 2).state == "waiting" and waiting(-1, 2).details["opens_in_s"] == 0
    starting = recording_health(symbols, {"BTCUSDT"}, {"BTCUSDT"}, {"ETHUSDT": 10.0}, set(), None, 0, 60.0)
    assert starting.ok and starting.state == "starting"
    resyncing = recording_health(symbols, {"BTCUSDT"}, set(symbols), {"ETHUSDT": 10.0}, set(), None, 0, 60.0)
    assert resyncing.ok and resyncing.state == "recording" and resyncing.details["synced"] == 1
    stuck = recording_health(symbols, set(), set(), {"BTCUSDT": 61.0, "ETHUSDT": 61.0}, set(), None, 0, 60.0)
    assert not stuck.ok and stuck.state == "degraded" and stuck.details["unsynced"] == symbols
    disk = recording_health(symbols, set(symbols), set(symbols), {}, set(), "[Errno 28] No space", 1, 60.0)
    assert disk.state == "degraded" and len(disk.details["reasons"]) == 2
    (response,) = run(_serve_and_get(lambda: stuck, ["/healthz"]))
    assert response.status_code == 503
    assert response.json()["state"] == "degraded" and response.json()["synced"] == 0
