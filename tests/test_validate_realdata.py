"""`recorder validate` on every real Binance capture in ../shared/realdata, imported into a fresh dataset.

Every symbol of every session with a REST snapshot passes the continuity and snapshot checks; a symbol/day
without any snapshot can never get a valid book, so its validation fails (snapshots `fail`, exit code 1).
One test per session, so that a failure names it. Skips cleanly where ../shared is absent (a user's clone).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recorder.captures import iter_capture, sessions_in_realdata
from recorder.importer import import_captures
from recorder.validate import validate_day

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"

pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")

SESSIONS = sessions_in_realdata(REALDATA) if REALDATA.is_dir() else []


def _summary(report: dict) -> str:
    return json.dumps({symbol: {name: f"{check['status']}: {check['summary']}" for name, check in result["checks"].items()
                                if check["status"] not in ("pass", "skip")}
                       for symbol, result in report["symbols"].items()}, indent=1)


def test_sessions_found():
    assert len(SESSIONS) >= 20, [s.name for s in SESSIONS]


@pytest.mark.parametrize("session", SESSIONS, ids=[s.name for s in SESSIONS])
def test_imported_session_validates(session, tmp_path):
    out = tmp_path / "data"
    result = import_captures(session.paths, session.market, out)
    assert result.dates, f"{session.name}: nothing imported"
    without_snapshot = 0
    for date in result.dates:
        report = validate_day(out, session.market, date)
        assert report["symbols"], f"{session.name} {date}: no symbols"
        for symbol, res in report["symbols"].items():
            checks = res["checks"]
            where = f"{session.name} {date} {symbol}\n{_summary(report)}"
            assert checks["continuity"]["status"] == "pass", where
            assert checks["coverage"]["figures"]["imported_or_off_window"], where
            assert checks["channels"]["status"] == "pass", where  # every channel the capture holds delivers
            if result.messages.get(("snapshots", date, symbol), 0):
                assert checks["snapshots"]["status"] == "pass", where
                assert checks["snapshots"]["figures"]["mismatched_levels"] == 0, where
                assert checks["book_sanity"]["figures"]["crossed"] == 0, where
            else:
                # no REST snapshot: the book is never valid, and the day must not pass
                without_snapshot += 1
                assert checks["snapshots"]["status"] == "fail", where
                assert res["status"] == "fail" and report["exit_code"] == 1, where
    if without_snapshot and not sum(n for (table, _, _), n in result.messages.items() if table == "snapshots"):
        # the capture itself holds no snapshot (not one the importer lost)
        assert not any(record.kind == "rest" for record in iter_capture(session.paths)), session.name
