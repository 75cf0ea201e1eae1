"""When to fetch a symbol's next REST snapshot after failed attempts, and when to say so. No I/O.

A snapshot fails when it is discarded (ahead of the stream), stale (behind it) or cannot be fetched. A few
failures in a row are normal (a lagging REST cache): the next attempt follows after 0.25 s; from the 5th
on the wait doubles, 0.5 s, 1 s, 2 s, ... up to a bound, so a snapshot that never bridges (a REST URL of
the wrong market) costs a few requests a minute, not the weight budget; the fetcher keeps each request
within that budget. A warning is due at the 1st, 2nd, 4th, 8th, ... failure in a row: one per escalation.
"""

from __future__ import annotations

from typing import NamedTuple


class Retry(NamedTuple):
    failures: int  # failed attempts in a row, this one included
    delay_s: float  # until the next attempt
    warn: bool  # log this one (an escalation), not every attempt


class SnapshotRetries:
    def __init__(self, base_s: float = 0.25, max_s: float = 60.0, cheap: int = 4) -> None:
        self.base_s = base_s
        self.cheap = cheap  # failures in a row retried after `base_s` before the back-off grows
        self.max_s = max_s
        self._failures: dict[str, int] = {}
        self._next: dict[str, float] = {}  # symbol -> time (owner's clock) of the next allowed attempt

    def ready(self, symbol: str, now: float) -> bool:
        return now >= self._next.get(symbol, 0.0)

    def failed(self, symbol: str, now: float) -> Retry:
        failures = self._failures[symbol] = self._failures.get(symbol, 0) + 1
        delay = min(self.base_s * 2 ** min(max(failures - self.cheap, 0), 30), self.max_s)
        self._next[symbol] = now + delay
        return Retry(failures, delay, failures & (failures - 1) == 0)

    def succeeded(self, symbol: str) -> int:
        """The symbol synced: forget its failures; returns how many there were."""
        self._next.pop(symbol, None)
        return self._failures.pop(symbol, 0)
