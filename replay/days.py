"""Which recorded days a command runs on: `--date` as one day, a range or a list, checked against the data.

    2024-05-01 | 20240501 | today | yesterday      one day
    2024-05-01..2024-05-31                          every day from the first to the last, inclusive
    2024-05-01,2024-05-03,2024-05-10..2024-05-12    a list of days and ranges, in any order

One place for the rule, so `replay`, `replay calibrate` and `replay prepare` read dates alike. The days come
back sorted and once each. A requested day without data is an error naming the missing and the recorded
days, unless `skip_missing`; a range holding no recorded day, or ending before it starts, is always one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

RANGE = ".."


class DaySpecError(ValueError):
    """A --date that names no runnable day: bad input (one line, exit 2)."""


def parse_days(text: str, recorded: Iterable[dt.date], skip_missing: bool = False, source: str = "recorded",
               now: dt.datetime | None = None) -> list[dt.date]:
    """The days `text` asks for that have data, in order (see the module doc). `source` introduces the recorded
    days in messages (e.g. 'data/ has spot'); `now` fixes today for tests."""
    from recorder.validate import resolve_date

    have = set(recorded)
    wanted: set[dt.date] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise DaySpecError(f"--date {text!r} has an empty entry")
        first_text, is_range, last_text = part.partition(RANGE)
        first = resolve_date(first_text, now)
        if not is_range:
            wanted.add(first)
            continue
        last = resolve_date(last_text, now)
        if last < first:
            raise DaySpecError(f"--date {part}: the end {last} is before the start {first}")
        days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        if not have.intersection(days):
            raise DaySpecError(f"no recorded day in {first}..{last}; {source}: {describe_days(have)}")
        wanted.update(days)
    found, missing = sorted(wanted & have), sorted(wanted - have)
    if missing and (not skip_missing or not found):
        hint = " (--skip-missing runs the days that have data)" if found and not skip_missing else ""
        raise DaySpecError(f"no data for {describe_days(missing)}{hint}; {source}: {describe_days(have)}")
    return found


def describe_days(days: Iterable[dt.date]) -> str:
    """'2024-05-01..2024-05-03, 2024-05-07': consecutive days as one range, so a month stays one line."""
    ordered = sorted(set(days))
    if not ordered:
        return "none"
    runs: list[list[dt.date]] = [[ordered[0], ordered[0]]]
    for day in ordered[1:]:
        if day - runs[-1][1] == dt.timedelta(days=1):
            runs[-1][1] = day
        else:
            runs.append([day, day])
    return ", ".join(str(a) if a == b else f"{a}{RANGE}{b}" for a, b in runs)
