"""What `recorder run` does when the disk fails it (ENOSPC, EIO, a read-only remount): decisions, no I/O.

The journal is the recorder's promise: every frame received is on disk within ~200 ms, and the next start
writes it into segments. So the two kinds of failure are told apart:

- A **segment** write fails but the journal is still written (the disk is nearly full, a large file does
  not fit, the small journal appends still do): recording goes on. The rows of the failed segment are
  dropped from memory, as they are in that segment's journal, which is kept and written as a segment when
  a later write succeeds, at the end of the run, or by the next run. Memory stays bounded; nothing is lost.
- The **journal** cannot be written: frames would now live only in memory. The unwritten bytes are kept
  and retried for a short grace (`journal_grace_s`, or until `backlog_limit` bytes wait), so a blip
  (space freed a moment later) costs nothing. If it lasts, the recorder stops receiving: it closes its
  connections and exits 3 with one line saying why. That is what a user of a recorder expects: a recorder
  that keeps its sockets open and its health green while it can no longer write would be losing every
  row silently, and its memory would grow without end; a stopped one is restarted by its supervisor
  (compose `restart:`, systemd, cron) once space is freed, and that run recovers every journaled frame.

The first error is logged once; while writes keep failing, a reminder at most every `reminder_s`; when
they succeed again, one line says so. Log lines are returned, never per frame.
"""

from __future__ import annotations

import os

JOURNAL_GRACE_S = 5.0
JOURNAL_BACKLOG_LIMIT = 64 * 1024 * 1024  # bytes received but not journaled, held while the grace lasts
REMINDER_S = 60.0


def describe(exc: BaseException) -> str:
    """`[Errno 28] No space left on device` without the file name the caller names anyway."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"[Errno {exc.errno}] {exc.strerror or os.strerror(exc.errno)}"
    return str(exc) or type(exc).__name__


class IoFaults:
    """Failed and succeeded writes in, log lines and the decision to stop out."""

    def __init__(self, journal_grace_s: float = JOURNAL_GRACE_S, backlog_limit: int = JOURNAL_BACKLOG_LIMIT,
                 reminder_s: float = REMINDER_S) -> None:
        self.journal_grace_s = journal_grace_s
        self.backlog_limit = backlog_limit
        self.reminder_s = reminder_s
        self.first_error: str | None = None  # the first error since writes last all succeeded; None while fine
        self.failures = 0
        self._failing_since = 0.0
        self._next_reminder = 0.0
        self._journal_failing_since: float | None = None
        self._rotate_failing = False

    def failed(self, what: str, exc: BaseException, now: float) -> str | None:
        """`what` ("writing segment ...") failed: the line to log now (the first failure, then a reminder)."""
        message = f"{what} failed: {describe(exc)}"
        self.failures += 1
        if self.first_error is None:
            self.first_error = message
            self._failing_since = now
            self._next_reminder = now + self.reminder_s
            return message
        if now >= self._next_reminder:
            self._next_reminder = now + self.reminder_s
            return (f"writes still failing: {self.failures} failed in {now - self._failing_since:.0f} s, "
                    f"the last: {message}")
        return None

    def journal_failed(self, what: str, exc: BaseException, now: float, backlog: int, rotating: bool = False
                       ) -> str | None:
        """The journal could not be written (or, `rotating`, the next one not created: then the rows wait in
        memory with no segment written): why the recorder must stop receiving now, or None (grace)."""
        if self._journal_failing_since is None:
            self._journal_failing_since = now
        self._rotate_failing |= rotating
        failing_for = now - self._journal_failing_since
        if failing_for < self.journal_grace_s and backlog < self.backlog_limit:
            return None
        lost = f"the last {backlog / 1e6:.1f} MB received are lost" if backlog else "nothing received is lost"
        return (f"{what} failed for {failing_for:.0f} s ({describe(exc)}): stopped recording, {lost}; free space "
                f"and run again: the next run writes everything journaled")

    def journal_written(self, rotated: bool = False) -> None:
        """The journal was written (and, `rotated`, the next one created): the grace starts afresh."""
        if rotated:
            self._rotate_failing = False
        if not self._rotate_failing:
            self._journal_failing_since = None

    def recovered(self, now: float) -> str | None:
        """Every write succeeds again: the line to log once, or None if nothing had failed."""
        if self.first_error is None or self._journal_failing_since is not None:
            return None
        line = f"writes succeed again after {now - self._failing_since:.0f} s ({self.failures} failed)"
        self.first_error = None
        self.failures = 0
        return line
