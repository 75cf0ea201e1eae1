"""`recorder validate` on days recorded from the synthetic venue: clean, with faults, and corrupted."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from recorder.report_html import render_html
from recorder.validate import CHECKS, Thresholds, resolve_date, validate_command, validate_day
from tests.synthetic_day import record_day, recorded_date

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
TOP_KEYS = {"report_version", "generated_at", "root", "market", "exchange", "date", "window", "status", "exit_code",
            "thresholds", "connection", "symbols", "rows", "elapsed_seconds", "rows_per_second"}

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command("validate")(validate_command)
app.command("noop")(lambda: None)  # a second command keeps `validate` a subcommand, as in recorder.cli
runner = CliRunner()


def record(path: Path, market: str, symbols: list[str], faults: str, seconds: float = 4.0) -> Path:
    out = path / "data"
    path.mkdir(parents=True, exist_ok=True)
    config_file = path / "recorder.yaml"
    config_file.write_text("snapshot:\n  checkpoint_interval: 1s\n")  # snapshots to compare against

    assert record_day(out, market, symbols, seconds, faults=faults or None, config=config_file, ping_interval=1.0,
                      ping_timeout=5.0) == 0
    return out



@pytest.fixture(scope="module")
def days(tmp_path_factory):
    base = tmp_path_factory.mktemp("validate")
    return {
        "clean": record(base / "clean", "spot", ["BTCUSDT", "ETHUSDT"], ""),
        "usdm": record(base / "usdm", "usdm", ["BTCUSDT"], ""),
        "drop": record(base / "drop", "spot", ["BTCUSDT"], "drop=0.05", seconds=5.0),
        "stale": record(base / "stale", "spot", ["BTCUSDT"], "stale_snapshot=0.6,disconnect=1s"),
    }


def copy_day(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite(path: Path, keep) -> None:
    """Rewrite one Parquet file with only the rows `keep(table)` selects, keeping its contract metadata."""
    table = pq.read_table(path)
    pq.write_table(table.filter(keep(table)), path)


def cli(*args: str):
    return runner.invoke(app, ["validate", *args])


def test_clean_day_passes_with_every_check(days, tmp_path):
    out = days["clean"]
    report = validate_day(out, "spot", recorded_date(out))
    assert TOP_KEYS <= set(report)
    assert report["exit_code"] == 0, json.dumps({s: {c: v["summary"] for c, v in r["checks"].items()}
                                                for s, r in report["symbols"].items()}, indent=1)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        result = report["symbols"][symbol]
        assert tuple(result["checks"]) == CHECKS
        checks = result["checks"]
        assert checks["continuity"]["figures"]["breaks"] == 0
        assert checks["book_sanity"]["figures"]["crossed"] == 0
        assert checks["book_ticker"]["figures"]["compared"] > 0
        assert checks["book_ticker"]["figures"]["agreement"] == 1.0
        assert checks["snapshots"]["figures"]["mismatched_levels"] == 0
        assert checks["coverage"]["figures"]["imported_or_off_window"] or checks["coverage"]["status"] != "fail"
        series = result["series"]
        assert len(series["depth_msgs"]) == series["n"] == len(series["synced_fraction"]) == len(series["mid"])
    assert sum(r["checks"]["snapshots"]["figures"]["compared"] for r in report["symbols"].values()) > 0
    # the command: exit 0, JSON and a self-contained HTML file
    result = cli("--date", recorded_date(out), "--data", str(out), "--json", str(tmp_path / "r.json"),
                 "--html", str(tmp_path / "r.html"))
    assert result.exit_code == 0, result.output
    assert "BTCUSDT" in result.output and "continuity" in result.output
    assert json.loads((tmp_path / "r.json").read_text())["status"] in ("pass", "warn")
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "<script" not in page and "<link" not in page and " src=" not in page
    assert "https://" not in page and page.count("http://") == page.count("http://www.w3.org/2000/svg")


def test_an_ignore_window_run_is_judged_on_its_own_span_whatever_the_time(days):
    """The fixture days are short --ignore-window runs: inside a window that covers them, coverage is reported,
    not failed (the suite passes at any hour, also during the Berlin trading day)."""
    from recorder.window import TradingWindow

    out = days["clean"]
    report = validate_day(out, "spot", recorded_date(out), window=TradingWindow(dt.time(0), dt.time(23, 59, 59)))
    coverage = report["symbols"]["BTCUSDT"]["checks"]["coverage"]
    assert coverage["figures"]["inside_window_fraction"] == 1.0
    assert coverage["figures"]["imported_or_off_window"] and coverage["status"] != "fail"
    assert any("--ignore-window" in note for note in coverage["notes"])


def test_futures_day_passes(days):
    report = validate_day(days["usdm"], "usdm", recorded_date(days["usdm"], "usdm"))
    assert report["exit_code"] == 0
    assert report["symbols"]["BTCUSDT"]["checks"]["continuity"]["figures"]["rule"] == "pu == prev u"


def test_dropped_diffs_are_explained_breaks_but_cost_synced_time(days):
    out = days["drop"]
    checks = validate_day(out, "spot", recorded_date(out))["symbols"]["BTCUSDT"]["checks"]
    continuity = checks["continuity"]["figures"]
    assert continuity["breaks"] > 0 and continuity["unexplained_breaks"] == 0
    assert checks["continuity"]["status"] == "warn"
    coverage = checks["coverage"]["figures"]
    assert coverage["unsynced_seconds"] > 0 and coverage["synced_fraction"] < 1
    assert coverage["need_snapshot_reasons"].get("gap", 0) > 0
    assert checks["snapshots"]["figures"]["mismatched_levels"] == 0


def test_stale_snapshots_and_disconnects_are_reported(days):
    out = days["stale"]
    report = validate_day(out, "spot", recorded_date(out))
    checks = report["symbols"]["BTCUSDT"]["checks"]
    # a stale snapshot is the exchange's timing, handled by the engine: a figure and a note, not a fault.
    # (Under CPU load every old snapshot may land while synced: then it is a checkpoint that is not comparable.)
    snapshots = checks["snapshots"]
    assert snapshots["status"] == "pass", snapshots
    assert snapshots["figures"]["stale_events"] > 0 or snapshots["figures"]["not_aligned"] > 0, snapshots
    if snapshots["figures"]["stale_events"]:
        assert any("stale" in note for note in snapshots["notes"])
    assert checks["coverage"]["figures"]["disconnects"] >= 1
    assert checks["continuity"]["figures"]["unexplained_breaks"] == 0
    assert report["connection"]["disconnects"] >= 1
    assert report["symbols"]["BTCUSDT"]["series"]["disconnects"]
    assert "<svg" in render_html(report)


def test_deleted_depth_rows_are_an_unexplained_break(days, tmp_path):
    out = copy_day(days["clean"], tmp_path / "data")
    path = next((out / "binance-spot" / "depth").glob("date=*/symbol=BTCUSDT/*.parquet"))
    seqs = pc.unique(pq.read_table(path, columns=["seq"]).column("seq")).to_pylist()
    lo, hi = seqs[len(seqs) // 2], seqs[len(seqs) // 2 + 3]  # a "row group" of three diffs goes missing
    rewrite(path, lambda t: pc.or_(pc.less(t["seq"], lo), pc.greater(t["seq"], hi)))
    report = validate_day(out, "spot", recorded_date(out))
    continuity = report["symbols"]["BTCUSDT"]["checks"]["continuity"]
    assert continuity["status"] == "fail" and continuity["figures"]["unexplained_breaks"] == 1
    assert continuity["examples"][0]["explained"] is False and continuity["examples"][0]["time"]["berlin"]
    assert report["exit_code"] == 1
    assert cli("--date", recorded_date(out), "--data", str(out)).exit_code == 1


def test_a_wrong_checkpoint_snapshot_level_fails_the_snapshot_check(days, tmp_path):
    out = copy_day(days["clean"], tmp_path / "data")
    path = next((out / "binance-spot" / "snapshots").glob("date=*/symbol=BTCUSDT/*.parquet"))
    table = pq.read_table(path)
    seqs, sides, prices = (table[c].to_pylist() for c in ("seq", "side", "price"))
    qty = table["qty"].to_pylist()
    # every snapshot after the first (the sync one) gets its ten best bids wrong: whichever of them the
    # validator compares (not one that arrived while unsynced), those levels are inside the compared range,
    # and not all of them can be left out as touched by the diffs around the snapshot's id (the best bid
    # alone sometimes was, with the recording's timing)
    for seq in sorted(set(seqs))[1:]:
        bids = [i for i, (s, side) in enumerate(zip(seqs, sides)) if s == seq and side == "bid"]
        for target in sorted(bids, key=lambda i: prices[i], reverse=True)[:10]:
            qty[target] += type(qty[target])("0.5")
    table = table.set_column(table.schema.get_field_index("qty"), table.schema.field("qty"),
                             pa.array(qty, type=table.schema.field("qty").type))
    pq.write_table(table, path)
    report = validate_day(out, "spot", recorded_date(out))
    snapshots = report["symbols"]["BTCUSDT"]["checks"]["snapshots"]
    assert snapshots["status"] == "fail" and snapshots["figures"]["mismatched_levels"] >= 1, snapshots
    assert snapshots["examples"][0]["last_update_id"] and snapshots["examples"][0]["differences"]
    assert report["symbols"]["ETHUSDT"]["checks"]["snapshots"]["status"] == "pass"
    assert report["exit_code"] == 1


def test_deleted_gap_events_leave_the_break_unexplained(days, tmp_path):
    out = copy_day(days["drop"], tmp_path / "data")
    path = next((out / "binance-spot" / "events").glob("date=*/symbol=BTCUSDT/*.parquet"))
    table = pq.read_table(path)
    gaps = [s for s, k in zip(table["seq"].to_pylist(), table["kind"].to_pylist()) if k == "gap"]
    first = gaps[0]
    # drop the first gap and its need_snapshot, as if those events rows were lost
    rewrite(path, lambda t: pc.invert(pc.and_(pc.greater_equal(t["seq"], first), pc.less_equal(t["seq"], first + 2))))
    report = validate_day(out, "spot", recorded_date(out))
    continuity = report["symbols"]["BTCUSDT"]["checks"]["continuity"]["figures"]
    assert continuity["unexplained_breaks"] >= 1
    assert report["exit_code"] == 1


@pytest.mark.parametrize("damage", ["truncated", "not_parquet", "version"])
def test_unreadable_data_exits_2_with_one_line(days, tmp_path, damage):
    out = copy_day(days["clean"], tmp_path / "data")
    path = next((out / "binance-spot" / "trades").glob("date=*/symbol=ETHUSDT/*.parquet"))
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "not_parquet":
        path.write_text("hello")
    else:
        table = pq.read_table(path)
        meta = dict(table.schema.metadata)
        meta[b"avellaneda_mm.schema_version"] = b"2.0"
        pq.write_table(table.replace_schema_metadata(meta), path)
    result = cli("--date", recorded_date(out), "--data", str(out))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("recorder: error: ") and path.name in lines[0]
    if damage == "version":
        assert "2.0" in lines[0]


def test_usage_errors_exit_2(days, tmp_path):
    out = days["clean"]
    assert cli("--date", "20240501", "--data", str(out)).exit_code == 2  # no such day
    assert cli("--date", "someday", "--data", str(out)).exit_code == 2
    assert cli("--date", recorded_date(out), "--data", str(out), "--symbols", "XRPUSDT").exit_code == 2
    config = tmp_path / "c.yaml"
    config.write_text("validate:\n  max_gap_secs: 3\n")
    result = cli("--date", recorded_date(out), "--data", str(out), "--config", str(config))
    assert result.exit_code == 2 and "max_gap_secs" in result.output


def test_thresholds_from_config_can_fail_a_day(days, tmp_path):
    out = days["clean"]
    config = tmp_path / "c.yaml"
    config.write_text("validate:\n  max_latency_p99_ms: -1\n  min_synced_fraction: 0.5\n")
    result = cli("--date", recorded_date(out), "--data", str(out), "--config", str(config), "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 1
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["thresholds"]["max_latency_p99_ms"] == -1
    assert report["symbols"]["BTCUSDT"]["checks"]["time"]["status"] == "fail"
    with pytest.raises(ValueError):
        Thresholds.from_mapping({"max_unexplained_breaks": 0.5})


def test_dates():
    noon = dt.datetime(2024, 5, 1, 23, 30, tzinfo=dt.UTC)  # already 2 May in Berlin
    assert resolve_date("today", noon) == dt.date(2024, 5, 2)
    assert resolve_date("yesterday", noon) == dt.date(2024, 5, 1)
    assert resolve_date("2024-05-01") == resolve_date("20240501") == dt.date(2024, 5, 1)


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
def test_real_captures_through_the_importer(tmp_path):
    importer = pytest.importorskip("recorder.importer", reason="recorder/importer.py not written yet")
    from recorder.captures import sessions_in_realdata

    sessions = sessions_in_realdata(REALDATA)
    if not sessions:
        pytest.skip("no capture sessions")
    session = sessions[0]
    market = getattr(session, "market", "spot")
    paths = [getattr(session, "path", None) or getattr(session, "paths", None)]
    try:
        importer.import_captures(paths if not isinstance(paths[0], list) else paths[0], market, tmp_path / "data")
    except TypeError as exc:  # the importer's signature is still settling
        pytest.skip(f"import_captures signature: {exc}")
    exchange_dir = tmp_path / "data" / f"binance-{market}" / "depth"
    for day_dir in sorted(exchange_dir.glob("date=*"))[:1]:
        report = validate_day(tmp_path / "data", market, day_dir.name.split("=")[1])
        for result in report["symbols"].values():
            assert result["checks"]["coverage"]["figures"]["imported_or_off_window"]
            assert result["checks"]["continuity"]["figures"]["unexplained_breaks"] == 0
            assert result["checks"]["book_sanity"]["figures"]["crossed"] == 0
