"""Rate-limited log lines for bad WebSocket frames (parse errors, error payloads). No I/O.

Every such frame is an event in the dataset; the log gets the first of each kind at once and then at
most one summary line per interval with the count since the last line, so a broken stream is noticed
without a line per frame.
"""

from __future__ import annotations

from collections.abc import Mapping

LABELS = {"parse_errors": "WebSocket parse errors", "errors": "WebSocket error payloads"}  # Pipeline.counts keys


class ProblemLog:
    def __init__(self, interval_s: float = 60.0, labels: Mapping[str, str] = LABELS) -> None:
        self.interval_s = interval_s
        self.labels = labels
        self._seen: dict[str, int] = {}  # kind -> total already accounted for
        self._pending: dict[str, int] = {}  # kind -> count not yet in a line
        self._last_line: dict[str, float] = {}  # kind -> time of its last line

    def update(self, totals: Mapping[str, int], latest: Mapping[str, str], now: float) -> list[str]:
        """The lines to log now, given each kind's running total and latest description."""
        lines = []
        for kind, label in self.labels.items():
            total = totals.get(kind, 0)
            new = total - self._seen.get(kind, 0)
            self._seen[kind] = total
            if new > 0 and kind not in self._last_line:
                lines.append(f"{label}: {latest.get(kind, '')} (further ones: at most one line per "
                             f"{self.interval_s:g} s)")
                self._last_line[kind] = now
                new -= 1
            pending = self._pending[kind] = self._pending.get(kind, 0) + max(new, 0)
            if pending and now - self._last_line[kind] >= self.interval_s:
                lines.append(f"{label}: {pending} more in the last {now - self._last_line[kind]:.0f} s, latest: "
                             f"{latest.get(kind, '')}")
                self._pending[kind] = 0
                self._last_line[kind] = now
        return lines
