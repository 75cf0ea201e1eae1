"""The Berlin trading window: UTC bounds on ordinary and DST days, edges, waiting with a fake clock."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from recorder.window import (
    FakeClock,
    RunPlan,
    SystemClock,
    TradingWindow,
    WindowState,
    plan_run,
    sleep_until,
)

NS = 1_000_000_000
WINDOW = TradingWindow(dt.time(8), dt.time(22))


def utc_ns(year, month, day, hour=0, minute=0, second=0) -> int:
    return int(dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()) * NS


@pytest.mark.parametrize(
    ("date", "start_utc_hour", "end_utc_hour"),
    [
        ("2024-01-15", 7, 21),  # winter, CET
        ("2024-07-15", 6, 20),  # summer, CEST
        ("2024-03-31", 6, 20),  # spring forward at 02:00 local: already CEST at 08:00
        ("2024-10-27", 7, 21),  # fall back at 03:00 local: already CET at 08:00
    ],
)
def test_bounds_for(date, start_utc_hour, end_utc_hour):
    day = dt.date.fromisoformat(date)
    start_ns, end_ns = WINDOW.bounds_for(day)
    assert start_ns == utc_ns(day.year, day.month, day.day, start_utc_hour)
    assert end_ns == utc_ns(day.year, day.month, day.day, end_utc_hour)
    assert WINDOW.bounds_for(date) == (start_ns, end_ns)  # strings as in schemas.layout.parse_date


def test_window_that_spans_the_switch_is_shorter_or_longer():
    spring = TradingWindow(dt.time(0), dt.time(23, 59))
    start, end = spring.bounds_for("2024-03-31")
    assert end - start == (22 * 3600 + 59 * 60) * NS  # 23:59 of wall clock, 22:59 of real time
    start, end = spring.bounds_for("2024-10-27")
    assert end - start == (24 * 3600 + 59 * 60) * NS


def test_edges():
    start_ns, end_ns = WINDOW.bounds_for("2024-03-31")
    day = dt.date(2024, 3, 31)
    assert WINDOW.current_or_next(start_ns - 1) == (day, start_ns, end_ns, WindowState.BEFORE)
    assert WINDOW.current_or_next(start_ns).state is WindowState.INSIDE
    assert WINDOW.current_or_next(end_ns - 1).state is WindowState.INSIDE
    after = WINDOW.current_or_next(end_ns)
    assert after.state is WindowState.AFTER
    assert after.date == dt.date(2024, 4, 1)
    assert (after.start_ns, after.end_ns) == WINDOW.bounds_for("2024-04-01")
    assert after.state == "after"  # plain strings compare equal


def test_day_of_now_is_the_local_day():
    # 23:30 UTC on 2024-07-15 is 01:30 on the 16th in Berlin: before the 16th's window
    slot = WINDOW.current_or_next(utc_ns(2024, 7, 15, 23, 30))
    assert (slot.date, slot.state) == (dt.date(2024, 7, 16), WindowState.BEFORE)


def test_seconds_until_start():
    start_ns, end_ns = WINDOW.bounds_for("2024-10-27")
    assert WINDOW.seconds_until_start(start_ns - 90 * NS) == 90
    assert WINDOW.seconds_until_start(start_ns) == 0
    assert WINDOW.seconds_until_start(end_ns - 1) == 0
    # after the 27th's end (21:00 UTC) the next start is 07:00 UTC on the 28th
    assert WINDOW.seconds_until_start(end_ns) == 10 * 3600
    # before the spring-forward window: midnight local (22:00 UTC on the 30th) to 06:00 UTC
    assert WINDOW.seconds_until_start(utc_ns(2024, 3, 30, 22)) == 8 * 3600


def test_other_timezone():
    new_york = TradingWindow(dt.time(9, 30), dt.time(16), tz="America/New_York")
    assert new_york.bounds_for("2024-01-15") == (utc_ns(2024, 1, 15, 14, 30), utc_ns(2024, 1, 15, 21))


def test_invalid_windows():
    with pytest.raises(ValueError, match="after start"):
        TradingWindow(dt.time(22), dt.time(8))
    with pytest.raises(ValueError, match="after start"):
        TradingWindow(dt.time(8), dt.time(8))
    with pytest.raises(ValueError, match="unknown time zone"):
        TradingWindow(dt.time(8), dt.time(22), tz="Mars/Olympus")


def test_started_before_the_window_waits_until_its_start():
    start_ns, end_ns = WINDOW.bounds_for("2024-07-15")
    clock = FakeClock(start_ns - 2 * 3600 * NS)
    plan = plan_run(WINDOW, clock.now_ns())
    assert plan == RunPlan(start_ns, end_ns)
    asyncio.run(sleep_until(clock, plan.start_ns))
    assert clock.now_ns() == start_ns
    assert len(clock.sleeps) == 120  # bounded steps of at most 60 s re-read the clock
    assert WINDOW.current_or_next(clock.now_ns()).state is WindowState.INSIDE


def test_plan_run():
    start_ns, end_ns = WINDOW.bounds_for("2024-07-15")
    inside = start_ns + 3600 * NS
    assert plan_run(WINDOW, inside) == RunPlan(inside, end_ns)
    assert plan_run(WINDOW, inside, duration_s=60) == RunPlan(inside, inside + 60 * NS)
    assert plan_run(WINDOW, end_ns - NS, duration_s=60) == RunPlan(end_ns - NS, end_ns)
    # --no-wait outside the window: nothing to do
    assert plan_run(WINDOW, start_ns - 1, wait=False) is None
    assert plan_run(WINDOW, end_ns, wait=False) is None
    assert plan_run(WINDOW, inside, wait=False) == RunPlan(inside, end_ns)
    # after today's end, waiting means tomorrow's window
    assert plan_run(WINDOW, end_ns) == RunPlan(*WINDOW.bounds_for("2024-07-16"))
    # --ignore-window: now, for the duration or until interrupted
    night = end_ns + 3600 * NS
    assert plan_run(WINDOW, night, ignore_window=True) == RunPlan(night, None)
    assert plan_run(WINDOW, night, ignore_window=True, duration_s=1.5) == RunPlan(night, night + 3 * NS // 2)


def test_fake_clock():
    clock = FakeClock(1_000)
    clock.advance(0.5)
    assert clock.now_ns() == 1_000 + NS // 2
    clock.set(5)
    asyncio.run(clock.sleep(2))
    assert clock.now_ns() == 5 + 2 * NS and clock.sleeps == [2]


def test_system_clock():
    clock = SystemClock()
    before = clock.now_ns()
    asyncio.run(clock.sleep(0.01))
    assert clock.now_ns() - before >= 5_000_000
    assert abs(clock.now_ns() - dt.datetime.now(dt.UTC).timestamp() * NS) < NS
