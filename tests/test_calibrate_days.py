"""`replay calibrate --date A..B` (issue 13): the fits per (day, symbol) as Parquet and an HTML page, equal to
one-day runs of each day; bad input as for the backtest (one line, exit 2)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.synthetic_day import record_day, recorded_date
from tests.synthetic_days import copy_day
from tests.test_first_hour import one_error_line, run

pytestmark = pytest.mark.xdist_group("ray")  # the ranges run on the session's Ray
SYMBOLS = "BTCUSDT,ETHUSDT"
SHOWN = ("seconds", "trades", "sigma", "A", "k", "r2", "fits", "A_median", "k_median")  # single-day table order


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> tuple[Path, list[str]]:
    """Two symbols recorded for 6 s (day D), copied to D−2 and D−1."""
    out = tmp_path_factory.mktemp("caldays") / "data"
    assert record_day(out, "spot", SYMBOLS.split(","), 6.0) == 0
    today = recorded_date(out)
    return out, [copy_day(out, "binance-spot", today, -n) for n in (2, 1)] + [today]


def shown(value: float | None, column: str) -> str:
    """A table value as the single-day table prints it."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if column == "seconds" else f"{value:,}" if column in ("trades", "fits") else f"{value:.4g}"


def test_a_range_writes_one_row_per_day_and_symbol_equal_to_single_day_runs(days, tmp_path, ray_cluster):
    data, dates = days
    # over several days the fits run on Ray (the session's), one task per (day, symbol), as replay sweep's
    result = run("replay", "calibrate", "--address", ray_cluster.address, "--date", f"{dates[0]}..{dates[-1]}",
                 "--symbols", SYMBOLS, "--data", str(data), "--out", str(tmp_path), env=ray_cluster.env)
    assert result.returncode == 0, result.stderr
    assert "Ray: 1 node, 2 CPUs" in result.stderr
    stem = tmp_path / f"calibration-spot-{dates[0]}-{dates[-1]}"
    assert f"wrote {stem}.parquet" in result.stdout and f"wrote {stem}.html" in result.stdout
    rows = pq.read_table(f"{stem}.parquet").to_pylist()
    assert [(r["date"], r["symbol"]) for r in rows] == [(d, s) for d in dates for s in SYMBOLS.split(",")]
    assert any(r["sigma"] is not None for r in rows)  # something was measured
    for date in dates:
        single = run("replay", "calibrate", "--date", date, "--symbols", SYMBOLS, "--data", str(data))
        assert single.returncode == 0, single.stderr
        printed = {line.split()[1]: line.split()[2:] for line in single.stdout.splitlines()
                   if line.split()[1:2] in (["BTCUSDT"], ["ETHUSDT"]) and line.startswith("│")}
        for row in (r for r in rows if r["date"] == date):
            cells = [c for c in printed[row["symbol"]] if c != "│"]
            assert cells == [shown(row[column], column) for column in SHOWN], (date, row)
    page = Path(f"{stem}.html").read_text()
    assert page.count("<svg") == 6 and "σ (price/√s)" in page and dates[1] in page  # σ, A, k × 2 symbols


def test_the_default_directory_is_the_backtests_reports(days, ray_cluster):
    data, dates = days
    result = run("replay", "calibrate", "--date", f"{dates[0]},{dates[-1]}", "--data", str(data),
                 env={"RAY_ADDRESS": ray_cluster.address, **ray_cluster.env})
    assert result.returncode == 0, result.stderr
    assert (data / "reports" / "binance-spot" / f"calibration-spot-{dates[0]}-{dates[-1]}.parquet").exists()


@pytest.mark.parametrize("spec, extra, message", [
    ("{last}..{first}", [], "is before the start"),
    ("{first}..2099-01-01", [], "--skip-missing"),
    ("{first}..{last}", ["--symbols", "BTCUSDT,NOPEUSDT"], "NOPEUSDT"),
    ("{first}..{last}", ["--write", "sim.yaml"], "--write takes one day"),
])
def test_bad_input_gives_one_line_and_exit_2_and_writes_nothing(days, tmp_path, spec, extra, message):
    data, dates = days
    extra = [str(tmp_path / e) if e == "sim.yaml" else e for e in extra]
    line = one_error_line(run("replay", "calibrate", "--date", spec.format(first=dates[0], last=dates[-1]),
                              "--data", str(data), "--out", str(tmp_path / "out"), *extra), "replay: error:")
    assert message in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "sim.yaml").exists()


def test_skip_missing_calibrates_the_days_with_data(days, tmp_path, ray_cluster):
    data, dates = days
    result = run("replay", "calibrate", "--address", ray_cluster.address, "--date", f"{dates[0]}..2099-01-01",
                 "--skip-missing", "--symbols", "BTCUSDT", "--data", str(data), "--out", str(tmp_path),
                 env=ray_cluster.env)
    assert result.returncode == 0, result.stderr
    rows = pq.read_table(tmp_path / f"calibration-spot-{dates[0]}-{dates[-1]}.parquet").to_pylist()
    assert [r["date"] for r in rows] == dates
