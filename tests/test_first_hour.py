"""A researcher's first hour (issue 11): consistent, forgiving command lines and explicit units."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from replay.sim.params import SimConfigError, load_params
from tests.synthetic_day import record_day, recorded_date

ROOT = Path(__file__).resolve().parents[1]


def run(command: str, *args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    module = {"recorder": "recorder.cli", "replay": "replay.cli"}[command]
    environ = {key: value for key, value in os.environ.items() if key != "CONFIG_PATH"}
    environ.update({"PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})})
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=cwd, env=environ)


def one_error_line(result: subprocess.CompletedProcess, prefix: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> tuple[Path, str]:
    """8 s of spot BTCUSDT recorded from the synthetic venue."""
    out = tmp_path_factory.mktemp("first-hour") / "data"
    assert record_day(out, "spot", ["BTCUSDT"], 8.0) == 0
    return out, recorded_date(out)


def test_version_on_both_commands():
    for command in ("recorder", "replay"):
        result = run(command, "--version")
        assert result.returncode == 0 and result.stdout.startswith("avellaneda-mm "), result


def test_every_command_has_debug_and_one_data_default():
    for command, sub in (("recorder", "validate"), ("recorder", "run"), ("recorder", "schedule"),
                         ("recorder", "import"), ("replay", "serve"), ("replay", "export"), ("replay", "calibrate"),
                         ("replay", "montecarlo"), ("replay", None)):
        result = run(command, *([sub] if sub else []), "--help")
        assert result.returncode == 0 and "--debug" in result.stdout, (command, sub)
    for command, sub in (("recorder", "validate"), ("replay", "serve"), ("replay", "export"),
                         ("replay", "calibrate"), ("replay", None)):
        text = " ".join(run(command, *([sub] if sub else []), "--help").stdout.split())
        assert "the config's `out` via $CONFIG_PATH, else ./data" in text, (command, sub)


def test_missing_date_says_so_and_lists_the_days(day):
    out, date = day
    line = one_error_line(run("replay", "--data", str(out)), "replay: error:")
    assert "--date is missing" in line and date in line


def test_data_defaults_to_the_config_out_and_date_today_is_understood(day, tmp_path):
    out, date = day
    config = tmp_path / "rec.yaml"
    config.write_text(f"out: {out}\n")
    line = one_error_line(run("replay", "--date", "2020-01-01", "--speed", "max", env={"CONFIG_PATH": str(config)}),
                          "replay: error:")
    assert date in line  # it looked in the config's `out`, which holds the recorded day
    result = run("replay", "calibrate", "--date", "today", "--data", str(out))  # the synthetic day is today
    assert result.returncode == 0 and "BTCUSDT" in result.stdout, result.stderr


def test_a_market_without_data_lists_the_markets_and_dates(day, tmp_path):
    out, date = day
    for args in (["--date", date, "--market", "usdm"], ["calibrate", "--date", date, "--market", "usdm"]):
        line = one_error_line(run("replay", *args, "--data", str(out), "--speed", "max")
                              if args[0] != "calibrate" else run("replay", *args, "--data", str(out)), "replay: error:")
        assert "no usdm data" in line and f"spot: {date}" in line and "--market spot" in line


def test_speed_without_x_is_documented_and_latency_needs_a_unit():
    assert "a bare 50 means 50x" in " ".join(run("replay", "--help").stdout.split())
    with pytest.raises(SimConfigError, match="entry_latency '10' has no unit"):
        load_params(None, {"entry_latency": "10"})
    assert load_params(None, {"entry_latency": "10ms"}).entry_latency == "10ms"


def test_unknown_section_of_a_simulator_config_is_named(tmp_path):
    path = tmp_path / "sim.yaml"
    path.write_text("simulater:\n  gamma: 0.5\n")
    with pytest.raises(SimConfigError, match="unknown top-level section 'simulater'"):
        load_params(path)


def test_corrupt_parquet_is_named_by_replay(day, tmp_path):
    import shutil

    out, date = day
    copy = tmp_path / "data"
    shutil.copytree(out, copy)
    victim = min((copy / "binance-spot" / "depth").rglob("*.parquet"))
    victim.write_bytes(b"PAR1 this is not parquet")
    for args in (["--date", date, "--speed", "max", "--out", str(tmp_path / "r")],
                 ["calibrate", "--date", date], ["serve", "--date", date, "--port", "0"],
                 ["export", "--date", date, "--to", "tardis-csv",
                                                 "--out", str(tmp_path / "x")]):
        line = one_error_line(run("replay", *args, "--data", str(copy)), "replay: error:")
        assert victim.name in line, (args, line)


def test_import_reports_a_line_cut_mid_json(tmp_path):
    from tests.test_import import _spot_lines, _write_gz

    lines = _spot_lines()
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    capture = _write_gz(tmp_path / "spot_btcusdt_20240808.gz", lines)
    result = run("recorder", "import", str(capture), "--out", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    assert f"recorder: warning: {capture}:{len(lines)}: line cut mid-JSON" in result.stderr
    assert "cut mid-JSON" in result.stdout and f"{capture.name}:{len(lines)}" in result.stdout.replace("\n", "")
    missing = run("recorder", "import", str(tmp_path / "nope.gz"), "--market", "spot", "--out", str(tmp_path / "d"))
    assert "no such file" in one_error_line(missing, "recorder: error:")


def test_validate_says_in_the_terminal_why_a_check_warns(tmp_path):
    """An import without exchangeInfo (no tick size) whose local clock ran 1.5 s behind the exchange."""
    import orjson

    from tests.test_import import _spot_lines, _write_gz

    lines = []
    for line in _spot_lines():
        ts, _, payload = line.partition(b" ")
        message = orjson.loads(payload)
        if "data" in message and "E" in message["data"]:
            message["data"]["E"] += 1500  # exchange stamps 1.5 s after the local receive: local clock behind
            if "T" in message["data"]:
                message["data"]["T"] += 1500
        lines.append(ts + b" " + orjson.dumps(message))
    capture = _write_gz(tmp_path / "spot_btcusdt_20240808.gz", lines)
    assert run("recorder", "import", str(capture), "--out", str(tmp_path / "data")).returncode == 0
    html = tmp_path / "report.html"
    result = run("recorder", "validate", "--date", "2024-08-09", "--market", "spot", "--data", str(tmp_path / "data"),
                 "--html", str(html))
    text = " ".join(result.stdout.split())
    assert "book_sanity: warn - no instruments row: tick/step not checked" in text, result.stdout
    assert "negative feed latency" in text and "local clock is behind the exchange's by at least 1500 ms" in text
    assert_tick_labels_inside_and_mid_axis_has_a_unit(html.read_text(), "USDT")


def assert_tick_labels_inside_and_mid_axis_has_a_unit(page: str, currency: str) -> None:
    import re

    for svg in re.findall(r"<svg.*?</svg>", page, flags=re.DOTALL):
        width = float(re.search(r'viewBox="0 0 ([\d.]+) ', svg).group(1))
        for x, anchor, label in re.findall(r'<text x="([\d.]+)" y="[\d.]+" font-size="10" text-anchor="(\w+)"'
                                           r' fill="#57606a">([^<]*)</text>', svg):
            reach = {"middle": len(label) * 3.2, "start": len(label) * 6.4, "end": 0}[anchor]
            assert float(x) + reach <= width, (label, x, anchor, width)  # not clipped at the right edge
    assert f"mid ({currency})" in page


def _readme_synopses() -> dict[str, set[str]]:
    """Command ('recorder run', 'replay', ...) -> the options its README synopsis blocks list."""
    import re

    blocks, current = [], None
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```") and current is None:
            current = []
        elif line.startswith("```"):
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    found: dict[str, set[str]] = {}
    for lines in blocks:
        block = "\n".join(lines)
        if not lines or "[" not in block or not all(line.startswith(("recorder ", "replay ", " ")) for line in lines):
            continue
        command = None
        for line in lines:
            if line.startswith(("recorder ", "replay ")):
                words = line.split()
                command = " ".join(words[: next(i for i, w in enumerate(words) if w.startswith(("-", "[")) or w.isupper())])
            found.setdefault(command, set()).update(re.findall(r"--[a-z][a-z0-9-]*", line))
    return found


def _help_options(command: str) -> set[str]:
    import re

    program, *sub = command.split()
    options = set()
    for line in run(program, *sub, "--help").stdout.splitlines():
        match = re.match(r"^│\s+(?:\*\s+)?((?:--[a-z][a-z0-9-]*\s*)+)", line)
        if match:
            options.update(match.group(1).split())
    return options


def _primary(options: set[str]) -> set[str]:
    """Without --help/--version and the --no-X half of a --X/--no-X pair."""
    return {o for o in options if o not in ("--help", "--version") and not (o.startswith("--no-") and
                                                                           "--" + o[5:] in options)}


def test_readme_synopses_list_the_options_of_each_command():
    synopses = _readme_synopses()
    expected = {"recorder run", "recorder schedule", "recorder validate", "recorder import", "replay",
                "replay calibrate", "replay serve", "replay export", "replay montecarlo", "replay sweep"}
    assert expected <= set(synopses), sorted(synopses)
    for command in sorted(expected):
        assert _primary(synopses[command]) == _primary(_help_options(command)), command


# ---- backtests that quote -------------------------------------------------------------------------------

REAL_USDM = ROOT.parent / "shared" / "realdata" / "hftbacktest" / "usdm_btcusdt_20240808.gz"


@pytest.mark.parametrize("strategy", ["as", "glft"])
def test_proposed_gamma_puts_the_soft_limit_skew_at_the_target(strategy):
    from replay.sim.calibrate import propose_strategy

    p = propose_strategy(strategy, sigma=7.8, A=31.6, k=0.055, tick=0.1, mid=61_700.0, mean_time_left=172.0,
                         soft_limit=5.0, maker_fee=0.0001, target_ticks=300)
    assert p["skew_at_soft_limit"] == pytest.approx(30.0, rel=0.02)  # 300 ticks of 0.1
    assert 6.17 < p["half_spread"] < 100 and p["fee_aware"]  # the ±6.17 fee minimum is inside the quotes
    wide_fee = propose_strategy(strategy, sigma=7.8, A=31.6, k=0.055, tick=0.1, mid=61_700.0, mean_time_left=172.0,
                                soft_limit=5.0, maker_fee=0.001, target_ticks=None)
    assert not wide_fee["fee_aware"] and any("fee-aware minimum" in line for line in wide_fee["reasoning"])


def test_calibrate_writes_a_complete_config_that_quotes_and_fills(day, tmp_path):
    out, date = day
    config = tmp_path / "sim.yaml"
    result = run("replay", "calibrate", "--date", date, "--data", str(out), "--write", str(config))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "proposed as γ =" in text and "per (USDT × order size)" in text and "target half-spread" in text
    params = load_params(config)
    assert params.strategy == "as" and params.gamma != 0.1 and params.sigma > 0
    assert set(config.read_text().split("simulator:")[1].split()) >= {"hard_limit:", "fill_model:", "fee_aware:"}
    reports = tmp_path / "reports"
    result = run("replay", "--date", date, "--data", str(out), "--speed", "max", "--config", str(config),
                 "--order-size", "0.01", "--out", str(reports), "--no-progress")
    assert result.returncode == 0, result.stderr
    import json

    summary = json.loads(next(reports.glob("backtest-BTCUSDT-as-*.json")).read_text())["summary"]
    assert summary["fills"]["count"] > 0


@pytest.mark.skipif(not REAL_USDM.exists(), reason="../shared/realdata is not available")
def test_calibrated_config_fills_on_the_real_capture(tmp_path):
    import json

    data = tmp_path / "data"
    assert run("recorder", "import", str(REAL_USDM), "--out", str(data)).returncode == 0
    config = tmp_path / "sim.yaml"
    assert run("replay", "calibrate", "--date", "2024-08-09", "--market", "usdm", "--data", str(data),
               "--write", str(config)).returncode == 0
    result = run("replay", "--date", "2024-08-09", "--market", "usdm", "--data", str(data), "--speed", "max",
                 "--config", str(config), "--out", str(tmp_path / "r"), "--no-progress")
    assert result.returncode == 0, result.stderr
    summary = json.loads(next((tmp_path / "r").glob("backtest-BTCUSDT-as-*.json")).read_text())["summary"]
    assert summary["fills"]["count"] >= 5  # the default γ 0.1 quoted ~530 USDT from the mid: 0 fills


def test_a_run_without_fills_says_why_in_the_summary_and_the_report(day, tmp_path):
    out, date = day
    reports = tmp_path / "r"
    result = run("replay", "--date", date, "--data", str(out), "--speed", "max", "--strategy", "join",
                 "--order-size", "0.01", "--out", str(reports), "--no-progress")  # spot: maker fee 0.1 %
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "why 0 fill(s): what kept the quotes away" in text, result.stdout
    import re

    share = re.search(r"the fee-aware minimum spread \(2 × maker fee × mid\) widened the quotes (\d+)% of the time", text)
    assert share and int(share.group(1)) >= 50, text  # most of the time (the warm-up quotes nothing)
    assert "set maker_fee to your fee tier" in text
    page = next(reports.glob("backtest-BTCUSDT-join-*.html")).read_text()
    assert "Why 0 fill(s)" in page and "fee-aware minimum spread" in page
    result = run("replay", "--date", date, "--data", str(out), "--speed", "max", "--gamma", "50",
                 "--param", "maker_fee=0", "--out", str(reports), "--no-progress")
    text = " ".join(result.stdout.split())
    assert "50 per (USDT × order size)" in text and "(USDT)" in text


# ---- the notebook API -----------------------------------------------------------------------------------


def test_notebook_api_on_a_recorded_day(day, tmp_path):
    import polars as pl

    from replay.notebook import open_day

    out, date = day
    opened = open_day(out, date, market="spot")
    assert opened.symbols == ["BTCUSDT"]
    mid = opened.mid("BTCUSDT", every="1s")
    assert isinstance(mid, pl.DataFrame) and mid.height >= 5
    assert (mid["best_bid"] < mid["best_ask"]).all() and mid["time"].dtype == pl.Datetime("ns", "UTC")
    clock = mid["time_berlin"][3].strftime("%H:%M:%S.%f")[:12]
    book = opened.book_at(clock, "BTCUSDT", depth=5)
    bids, asks = book.filter(pl.col("side") == "bid"), book.filter(pl.col("side") == "ask")
    assert 0 < bids.height <= 5 and 0 < asks.height <= 5 and bids["price"].max() < asks["price"].min()
    assert bids["price"].is_sorted(descending=True) and asks["price"].is_sorted()
    assert opened.trades("BTCUSDT").height > 0
    result = opened.backtest(strategy="as", gamma=0.1, order_size="0.01", maker_fee=0, horizon="span",
                             out=tmp_path / "nb")
    # the same engine and files as the CLI: the summary equals the JSON the run wrote
    import json

    saved = json.loads(next((tmp_path / "nb").glob("backtest-BTCUSDT-as-*.json")).read_text())["summary"]
    assert result.summary["fills.count"][0] == saved["fills"]["count"] == result.fills.height
    assert result.summary["pnl.total"][0] == saved["pnl"]["total"]
    assert result.series.height > 0 and "<svg" in result.report_html()
    with pytest.raises(ValueError, match="no usdm data"):
        open_day(out, date, market="usdm")


def test_example_notebook_runs_offline(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    notebook = nbformat.read(ROOT / "examples" / "first_hour.ipynb", as_version=4)
    os.environ["NOTEBOOK_SECONDS"] = "8"
    try:
        nbclient.NotebookClient(notebook, timeout=180, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        del os.environ["NOTEBOOK_SECONDS"]
    outputs = "".join(str(o.get("data", {}).get("text/plain", "")) for cell in notebook.cells
                      for o in cell.get("outputs", []))
    assert "BTCUSDT" in outputs and "fills.count" in outputs


def test_demo_ends_with_the_proposed_parameters_and_a_backtest_that_fills(tmp_path):
    import json

    out = tmp_path / "demo-data"
    result = subprocess.run([sys.executable, "-m", "replay.demo", "--seconds", "8", "--symbols", "BTCUSDT",
                             "--out", str(out)], capture_output=True, text=True, timeout=180, check=False, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "proposed as γ =" in result.stdout
    summary = json.loads(next(out.glob("reports/binance-spot/*/backtest-BTCUSDT-as-*.json")).read_text())["summary"]
    assert summary["fills"]["count"] > 0 and summary["params"]["maker_fee"] == 0
