"""`replay sweep` (issue 13): grids and ranges, tasks equal to single backtests, the same table on every run,
resume, a failing task, walk-forward on the previous day's fits, bad input in one line. The sweeps run on the
session's Ray (`ray_cluster`); the plan-level tests need no Ray at all."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from recorder.markets import get_market
from replay.sim.params import SimParams
from replay.sweep.command import SweepInputError, make_plan
from replay.sweep.results import RUN_DEPENDENT
from replay.sweep.space import (
    SweepSpaceError,
    expand,
    load_sweep_config,
    make_task,
    parse_axis,
    previous_days,
)
from tests.synthetic_day import record_day, recorded_date
from tests.synthetic_days import copy_day
from tests.test_first_hour import one_error_line, run

pytestmark = pytest.mark.xdist_group("ray")

SYMBOLS = "BTCUSDT,ETHUSDT"
GRID = ["--grid", "gamma=0.05,0.5", "--grid", "order_size=0.001,0.002"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[str]]:
    """Three recorded days of BTCUSDT and ETHUSDT: D−1 from its own venue seed (so its fits differ from D's),
    D, and D−2 a copy of D."""
    base = tmp_path_factory.mktemp("sweep")
    root, other = base / "data", base / "other"
    assert record_day(root, "spot", SYMBOLS.split(","), 6.0, seed=5) == 0
    assert record_day(other, "spot", SYMBOLS.split(","), 6.0, seed=11) == 0
    today = recorded_date(root)
    before = copy_day(other, "binance-spot", recorded_date(other), -1)
    for table in (other / "binance-spot").iterdir():
        shutil.move(str(table / f"date={before}"), str(root / "binance-spot" / table.name / f"date={before}"))
    first = copy_day(root, "binance-spot", today, -2)
    return root, [first, before, today]


def sweep(data: Path, cluster, *args: str, out: Path) -> object:
    return run("replay", "sweep", "--data", str(data), "--address", cluster.address, "--no-progress", "--out",
               str(out), *args, env=cluster.env)


def table(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def without_run_figures(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in RUN_DEPENDENT} for r in rows]


# ---- the plan: no Ray ----------------------------------------------------------------------------------


def test_axes_lists_ranges_and_steps():
    assert parse_axis("gamma=0.01,0.05,0.1").values == (0.01, 0.05, 0.1)
    assert parse_axis("gamma=0.01:0.16:log3").values == (0.01, 0.04, 0.16)
    assert parse_axis("gamma=0:1:lin5").values == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert parse_axis("order_size=0.001:0.003:0.001").values == ("0.001", "0.002", "0.003")
    assert parse_axis("tolerance_ticks=0:4:2").values == (0, 2, 4)
    search = parse_axis("gamma=0.01:0.2:log", search=True)
    assert (search.low, search.high, search.log, search.values) == (0.01, 0.2, True, ())
    sets = expand([parse_axis("gamma=0.1,0.2"), parse_axis("order_size=0.001,0.002,0.003")])
    assert len(sets) == 6 and sets[0] == {"gamma": 0.1, "order_size": "0.001"}
    assert sets[-1] == {"gamma": 0.2, "order_size": "0.003"}


@pytest.mark.parametrize(("text", "says"), [
    ("gamma", "is not NAME=VALUES"),
    ("colour=1,2", "cannot sweep 'colour'"),
    ("gamma=0.01:0.2", "a grid range needs a count or a step"),
    ("gamma=0.2:0.01:log3", "must go from low to high"),
    ("gamma=0:1:log3", "a log range needs low > 0"),
    ("gamma=0.1,x", "gamma must be a number"),
    ("gamma=0.1,0.1", "a value is given twice"),
])
def test_a_bad_axis_is_one_line_naming_it(text, says):
    with pytest.raises(SweepSpaceError, match=says):
        parse_axis(text)


def test_task_ids_and_seeds_are_derived_from_what_decides_the_result():
    base = SimParams()
    one = make_task(base, {"gamma": 0.1}, "spot", "2024-05-01", "BTCUSDT")
    assert one == make_task(base, {"gamma": 0.1}, "spot", "2024-05-01", "BTCUSDT")
    others = [make_task(base, {"gamma": 0.2}, "spot", "2024-05-01", "BTCUSDT"),
              make_task(base, {"gamma": 0.1}, "spot", "2024-05-02", "BTCUSDT"),
              make_task(base, {"gamma": 0.1}, "spot", "2024-05-01", "ETHUSDT"),
              make_task(base, {"gamma": 0.1}, "usdm", "2024-05-01", "BTCUSDT")]
    assert len({t.task_id for t in [one, *others]}) == 5 and len({t.seed for t in [one, *others]}) == 5
    # a set is named by its parameters, whichever way they were given
    assert one.set_id == make_task(SimParams(gamma=0.1), {}, "spot", "2024-05-01", "BTCUSDT").set_id


def test_walk_forward_days_take_the_recorded_day_before():
    d = dt.date(2024, 5, 1)
    recorded = [d - dt.timedelta(days=3), d, d + dt.timedelta(days=1)]
    assert previous_days([d, d + dt.timedelta(days=1)], recorded) == {d: d - dt.timedelta(days=3),
                                                                     d + dt.timedelta(days=1): d}
    assert previous_days([d - dt.timedelta(days=3)], recorded) == {}


def test_the_config_file_sweep_section_gives_the_same_tasks_as_flags(dataset, tmp_path):
    data, dates = dataset
    config = tmp_path / "sweep.yaml"
    config.write_text("simulator:\n  strategy: as\nsweep:\n  grid:\n    gamma: [0.05, 0.5]\n"
                      "    order_size: '0.001,0.002'\n  objective: sharpe\n")
    days = [dt.date.fromisoformat(d) for d in dates]
    common = {"data": data, "market": get_market("spot"), "days": days, "recorded": days,
              "symbols_by_day": {d: ["BTCUSDT"] for d in days}, "base": SimParams(), "search": None, "trials": None,
              "walk_forward": False, "calibration": True, "out": None}
    by_config = make_plan(**common, grid=[], config=config, objective=None)
    by_flags = make_plan(**common, grid=[GRID[1], GRID[3]], config=None, objective="sharpe")
    assert [t.task_id for t in by_config.tasks] == [t.task_id for t in by_flags.tasks]
    assert len(by_flags.tasks) == 4 * 3 and by_config.objective == "sharpe"
    assert by_config.definition["id"] == by_flags.definition["id"]
    with pytest.raises(SweepSpaceError, match="unknown key 'gird'"):
        config.write_text("sweep:\n  gird: {gamma: [0.1]}\n")
        load_sweep_config(config, False)
    with pytest.raises(SweepInputError, match="walk-forward fits σ, A, k for as and glft"):
        make_plan(**{**common, "walk_forward": True, "base": SimParams(strategy="join")}, grid=[], config=None,
                  objective=None)
    with pytest.raises(SweepSpaceError, match="max_spread 0.1 is below min_spread"):
        make_plan(**common, grid=["min_spread=0,1", "max_spread=0.1"], config=None, objective=None)


# ---- sweeps on Ray -------------------------------------------------------------------------------------


def single_backtest(data: Path, row: dict, out: Path, *extra: str) -> dict:
    """The summary `replay --speed max` writes for the task's day, symbol and parameters (its seed too)."""
    params = json.loads(row["params"])
    args = ["--date", row["day"], "--symbols", row["symbol"], "--speed", "max", "--no-progress", "--data", str(data),
            "--out", str(out), "--param", f"seed={row['seed']}", *extra]
    args += [a for name, value in params.items() for a in ("--param", f"{name}={value}")]
    done = run("replay", *args)
    assert done.returncode == 0, done.stderr
    (path,) = out.glob(f"backtest-{row['symbol']}-*.json")
    return orjson.loads(path.read_bytes())["summary"]


def test_a_grid_sweep_equals_single_backtests_and_is_the_same_on_every_run(dataset, ray_cluster, tmp_path):
    data, dates = dataset
    args = ["--date", f"{dates[1]}..{dates[2]}", "--symbols", SYMBOLS, "--strategy", "as", *GRID]
    done = sweep(data, ray_cluster, *args, out=tmp_path / "a")
    assert done.returncode == 0, done.stderr
    rows = table(tmp_path / "a" / "results.parquet")
    assert len(rows) == 4 * 2 * 2 and not any(r["error"] for r in rows)
    assert {(r["p.gamma"], r["p.order_size"]) for r in rows} == {(g, s) for g in (0.05, 0.5) for s in ("0.001", "0.002")}
    sets = table(tmp_path / "a" / "sets.parquet")
    assert [s["rank"] for s in sets] == [1, 2, 3, 4] and all(s["days"] == 2 and s["tasks"] == 4 for s in sets)
    assert sets[0]["objective"] == max(s["objective"] for s in sets)
    assert (tmp_path / "a" / "leaderboard.html").stat().st_size > 0
    assert "wrote " + str(tmp_path / "a" / "leaderboard.html") in done.stdout
    for row in (rows[0], rows[-1]):
        summary = single_backtest(data, row, tmp_path / f"single-{row['task_id']}")
        assert (row["pnl"], row["fills"], row["orders"]) == (
            summary["pnl"]["total"], summary["fills"]["count"], summary["fills"]["orders"])
    again = sweep(data, ray_cluster, *args, out=tmp_path / "b")
    assert again.returncode == 0, again.stderr
    assert without_run_figures(table(tmp_path / "b" / "results.parquet")) == without_run_figures(rows)


def test_resume_runs_only_what_is_missing(dataset, ray_cluster, tmp_path):
    data, dates = dataset
    out = tmp_path / "sweep"
    args = ["--date", dates[2], "--symbols", SYMBOLS, *GRID]
    assert sweep(data, ray_cluster, *args, out=out).returncode == 0
    first = table(out / "results.parquet")
    removed = sorted((out / "tasks").glob("*.json"))[:3]
    for path in removed:
        path.unlink()
    refused = sweep(data, ray_cluster, *args, out=out)
    assert "already holds this sweep (5 tasks done): pass --resume" in one_error_line(refused, "")
    other = sweep(data, ray_cluster, "--date", dates[2], "--symbols", SYMBOLS, "--grid", "gamma=0.2", out=out)
    assert "holds another sweep" in one_error_line(other, "")
    resumed = sweep(data, ray_cluster, *args, "--resume", out=out)
    assert resumed.returncode == 0, resumed.stderr
    assert "8 task results: ran 3 now (5 done before), 0 failed" in resumed.stdout
    assert without_run_figures(table(out / "results.parquet")) == without_run_figures(first)


def test_a_driver_on_another_machine_uses_ray_client(dataset, ray_cluster, tmp_path):
    """--address ray://HOST:PORT (Ray Client): the same rows as a driver on the head node."""
    data, dates = dataset
    args = ["--date", dates[2], "--symbols", SYMBOLS, *GRID]
    by_client = run("replay", "sweep", "--data", str(data), "--address", ray_cluster.client_address,
                    "--no-progress", "--out", str(tmp_path / "client"), *args, env=ray_cluster.env)
    assert by_client.returncode == 0, by_client.stderr
    assert sweep(data, ray_cluster, *args, out=tmp_path / "head").returncode == 0
    assert without_run_figures(table(tmp_path / "client" / "results.parquet")) == \
        without_run_figures(table(tmp_path / "head" / "results.parquet"))


def test_a_failing_task_is_recorded_and_the_sweep_goes_on(dataset, ray_cluster, tmp_path):
    """ETHUSDT's depth file on one day is damaged: its tasks fail with the reason, all others succeed, exit 1."""
    data, dates = dataset
    damaged = tmp_path / "data"
    shutil.copytree(data, damaged)
    (path,) = (damaged / "binance-spot" / "depth" / f"date={dates[2]}" / "symbol=ETHUSDT").glob("*.parquet")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    done = sweep(damaged, ray_cluster, "--date", f"{dates[1]}..{dates[2]}", "--symbols", SYMBOLS, "--grid",
                 "gamma=0.05,0.5", "--no-calibration", out=tmp_path / "out")
    assert done.returncode == 1, done.stderr
    rows = table(tmp_path / "out" / "results.parquet")
    failed = [r for r in rows if r["error"]]
    assert len(rows) == 2 * 2 * 2
    assert {(r["day"], r["symbol"]) for r in failed} == {(dates[2], "ETHUSDT")} and len(failed) == 2
    assert all("could not be prepared" in r["error"] for r in failed)
    assert "2 failed" in done.stdout and f"failed: {dates[2]} ETHUSDT" in done.stdout
    sets = table(tmp_path / "out" / "sets.parquet")
    assert all(s["failed"] == 1 and s["tasks"] == 4 for s in sets)


def test_walk_forward_trades_each_day_on_the_previous_days_fits(dataset, ray_cluster, tmp_path):
    data, dates = dataset
    done = sweep(data, ray_cluster, "--date", f"{dates[0]}..{dates[2]}", "--symbols", "BTCUSDT", "--strategy", "as",
                 "--grid", "gamma=0.05,0.5", "--walk-forward", out=tmp_path / "wf")
    assert done.returncode == 0, done.stderr
    assert f"walk-forward: {dates[0]} has no recorded day before it: not traded" in done.stderr
    rows = table(tmp_path / "wf" / "results.parquet")
    fits = {r["date"]: r for r in table(tmp_path / "wf" / "calibration.parquet") if r["symbol"] == "BTCUSDT"}
    assert sorted(r["day"] for r in rows) == [dates[1], dates[1], dates[2], dates[2]]
    assert fits[dates[1]]["sigma"] != fits[dates[2]]["sigma"]  # the days differ, so the wrong day's fit would show
    for row in rows:
        previous = fits[dates[dates.index(row["day"]) - 1]]
        assert row["fit_day"] == previous["date"]
        assert (row["fit_sigma"], row["fit_A"], row["fit_k"]) == (previous["sigma"], previous["A"], previous["k"])
    row = next(r for r in rows if r["day"] == dates[2])
    previous = fits[dates[1]]
    summary = single_backtest(data, row, tmp_path / "single", "--param", f"sigma={previous['sigma']!r}",
                              "--param", f"A={previous['A']!r}", "--param", f"k={previous['k']!r}")
    assert (row["pnl"], row["fills"]) == (summary["pnl"]["total"], summary["fills"]["count"])


def test_bad_input_is_one_line_before_ray_starts(dataset, tmp_path):
    data, dates = dataset
    cases = [
        (["--grid", "gamma=0.01:0.2"], "replay: error: gamma: a grid range needs a count"),
        (["--grid", "colour=1,2"], "replay: error: cannot sweep 'colour'"),
        (["--grid", "gamma=0.1", "--search", "grid-search"], "replay: error: --search 'grid-search': one of optuna"),
        (["--grid", "gamma=0.1", "--objective", "luck"], "replay: error: --objective 'luck': one of pnl"),
        (["--strategy", "join", "--walk-forward"], "replay: error: --walk-forward fits σ, A, k"),
        (["--walk-forward", "--date", dates[0]], "replay: error: --walk-forward: no day of --date has a recorded day"),
        (["--symbols", "XRPUSDT"], "replay: error: no XRPUSDT on"),
        (["--grid", "gamma=0.01:0.2:log", "--search", "optuna", "--resume"],
         "replay: error: --resume continues a grid sweep"),
    ]
    for extra, prefix in cases:
        args = ["--date", dates[2], *extra] if "--date" not in extra else extra
        done = run("replay", "sweep", "--data", str(data), "--out", str(tmp_path / "never"), *args)
        one_error_line(done, prefix)
    assert not (tmp_path / "never").exists()


def test_without_ray_the_command_says_how_to_get_it(dataset, tmp_path):
    data, dates = dataset
    stub = tmp_path / "no-ray" / "ray"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    done = run("replay", "sweep", "--data", str(data), "--date", dates[2], "--grid", "gamma=0.1",
               env={"PYTHONPATH": f"{stub.parent}:{Path(__file__).resolve().parents[1]}"})
    one_error_line(done, "replay: error: replay sweep needs Ray: pip install 'avellaneda-mm[sweep]'")
