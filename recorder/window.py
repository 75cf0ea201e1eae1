"""The daily trading window (08:00-22:00 Berlin by default) and the clock the recorder waits on.

Bounds are computed from local wall-clock times with zoneinfo, so DST switch days come out right
(08:00 Berlin is 06:00 UTC in summer, 07:00 UTC in winter). The clock is injectable so scheduling
logic can be tested without waiting.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.layout import parse_date

_NS_PER_S = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MAX_SLEEP_S = 60.0  # re-read the wall clock at least this often while waiting (suspend, NTP steps)


class Clock(Protocol):
    def now_ns(self) -> int:
        """Wall-clock time in UTC nanoseconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class FakeClock:
    """A clock for tests: time moves only by `set`, `advance`, or a `sleep`, which returns at once."""

    now: int = 0  # UTC ns
    sleeps: list[float] = field(default_factory=list)  # every sleep requested, in seconds

    def now_ns(self) -> int:
        return self.now

    def set(self, now_ns: int) -> None:
        self.now = now_ns

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * _NS_PER_S)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)  # still let other tasks run, as a real sleep would


async def sleep_until(clock: Clock, target_ns: int) -> None:
    """Sleep until the clock reaches `target_ns`, in bounded steps so a clock jump cannot oversleep."""
    while (remaining_ns := target_ns - clock.now_ns()) > 0:
        await clock.sleep(min(remaining_ns / _NS_PER_S, _MAX_SLEEP_S))


class WindowState(str, Enum):
    """Where a moment lies relative to its day's window."""

    BEFORE = "before"
    INSIDE = "inside"
    AFTER = "after"


class WindowSlot(NamedTuple):
    """The window that is current or comes next, and where `now` lies relative to now's own day."""

    date: dt.date  # local date of the window
    start_ns: int
    end_ns: int
    state: WindowState


def _to_ns(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(microseconds=1) * 1000


@dataclass(frozen=True)
class TradingWindow:
    """[start, end) local wall-clock times of each day in `tz`; end after start (no overnight windows)."""

    start: dt.time
    end: dt.time
    tz: str = "Europe/Berlin"

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} must be after start {self.start}")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.tz!r}") from None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)  # cached by zoneinfo

    def local_date(self, now_ns: int) -> dt.date:
        return dt.datetime.fromtimestamp(now_ns // _NS_PER_S, tz=self.zone).date()

    def bounds_for(self, date: str | dt.date) -> tuple[int, int]:
        """[start, end) of the window on this local date, in UTC ns."""
        day = parse_date(date)
        zone = self.zone
        start = dt.datetime.combine(day, self.start, tzinfo=zone)
        end = dt.datetime.combine(day, self.end, tzinfo=zone)
        return _to_ns(start), _to_ns(end)

    def current_or_next(self, now_ns: int) -> WindowSlot:
        """Today's window when `now` is before its end, else tomorrow's (state AFTER)."""
        today = self.local_date(now_ns)
        start_ns, end_ns = self.bounds_for(today)
        if now_ns < start_ns:
            return WindowSlot(today, start_ns, end_ns, WindowState.BEFORE)
        if now_ns < end_ns:
            return WindowSlot(today, start_ns, end_ns, WindowState.INSIDE)
        tomorrow = today + dt.timedelta(days=1)
        return WindowSlot(tomorrow, *self.bounds_for(tomorrow), WindowState.AFTER)

    def seconds_until_start(self, now_ns: int) -> float:
        """0 inside the window, else the wait until the next one opens."""
        slot = self.current_or_next(now_ns)
        return max(slot.start_ns - now_ns, 0) / _NS_PER_S


class RunPlan(NamedTuple):
    """When a `recorder run` records: from `start_ns` until `stop_ns` (None: until interrupted)."""

    start_ns: int
    stop_ns: int | None


def plan_run(
    window: TradingWindow,
    now_ns: int,
    *,
    wait: bool = True,
    ignore_window: bool = False,
    duration_s: float | None = None,
) -> RunPlan | None:
    """Decide a run's span at `now`; None when outside the window and told not to wait (`--no-wait`).

    Inside the window recording starts now, before it (with `wait`) at its start; either way it stops
    at the window's end or after `duration_s`, whichever comes first. `ignore_window` records from now,
    for `duration_s` or until interrupted.
    """
    duration_ns = None if duration_s is None else round(duration_s * _NS_PER_S)
    if ignore_window:
        return RunPlan(now_ns, None if duration_ns is None else now_ns + duration_ns)
    slot = window.current_or_next(now_ns)
    if slot.state is not WindowState.INSIDE and not wait:
        return None
    start_ns = max(now_ns, slot.start_ns)
    stop_ns = slot.end_ns if duration_ns is None else min(slot.end_ns, start_ns + duration_ns)
    return RunPlan(start_ns, stop_ns)
