"""The recorder's health state for /healthz and the `recorder_state` metric, from plain facts. No I/O.

waiting    before the recording window opens (`recorder run` waiting, `recorder schedule` between windows)
starting   exchangeInfo and the first sync of every symbol, for at most the grace period
recording  every symbol synced (a resync within the grace period included), nothing wrong
degraded   a symbol unsynced past the grace period, a silent stream, or an I/O error (HTTP 503)

A compose/Docker health check therefore stays green while the recorder waits for its window and turns
red only for a real problem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from recorder.observability import Health

STATES = ("waiting", "starting", "recording", "degraded")
SYNC_GRACE_S = 60.0  # how long a symbol may be unsynced (start, resync) before the recorder is degraded


def waiting(opens_in_s: float, symbols: int) -> Health:
    return Health(True, state="waiting", details={"opens_in_s": round(max(opens_in_s, 0.0)), "symbols": symbols})


def recording_health(symbols: Sequence[str], synced: set[str], ever_synced: set[str],
                     unsynced_for_s: Mapping[str, float], silent_streams: set[str], io_error: str | None,
                     failed_segments: int, grace_s: float = SYNC_GRACE_S) -> Health:
    """While recording: `unsynced_for_s` gives, per unsynced symbol, how long it has been so."""
    stuck = sorted(s for s, seconds in unsynced_for_s.items() if s not in synced and seconds > grace_s)
    reasons = []
    if io_error:
        reasons.append(f"I/O error: {io_error}")
    if failed_segments:
        reasons.append(f"{failed_segments} segment write(s) failed, kept in the journal")
    if silent_streams:
        reasons.append(f"silent stream(s): {', '.join(sorted(silent_streams))}")
    if stuck:
        reasons.append(f"not synced for over {grace_s:g} s: {', '.join(stuck)}")
    details = {"symbols": len(symbols), "synced": len(synced & set(symbols)), "unsynced": stuck,
               "silent_streams": len(silent_streams), "reasons": reasons}
    if reasons:
        return Health(False, "; ".join(reasons), details, state="degraded")
    return Health(True, state="recording" if set(symbols) <= ever_synced else "starting", details=details)


def publish(metrics, health: Health) -> Health:
    """Set the `recorder_state` gauge (one series per state) to `health`'s state; returns `health`."""
    for state in STATES:
        metrics.state.set(1 if state == health.state else 0, state)
    return health
