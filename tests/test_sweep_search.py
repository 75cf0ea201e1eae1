"""`--search optuna` (issue 13): Optuna through Ray Tune over a three-day dataset; every reported day's rows in
the sweep's directory, ASHA stopping the worse sets early, the same backtest as a grid task, a dead trial's days
as error rows."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
import ray
from rich.console import Console

from replay.sim.params import SimParams
from replay.sweep.results import RUN_DEPENDENT
from replay.sweep.runner import StageFigures, progress_bar
from replay.sweep.search import param_space, run_search, trial_values
from replay.sweep.space import Axis, make_task, parse_axis
from replay.sweep.store import SweepStore
from replay.sweep.task import SweepSpec, prepare, run_task
from tests.synthetic_day import record_day, recorded_date
from tests.synthetic_days import copy_day

pytestmark = pytest.mark.xdist_group("ray")

SYMBOL = "BTCUSDT"
SIZES = ("0.001", "0.002")


@pytest.fixture(scope="module")
def local_ray(ray_cluster):
    """This process joins the session's Ray (2 CPUs) for the module: Tune's trials run there."""
    ray.init(address=ray_cluster.address, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict[dt.date, list[str]]]:
    """BTCUSDT on spot for 6 s (day D), copied to D−2 and D−1, each day prepared as the sweep's prepare stage
    does before any task runs."""
    root = tmp_path_factory.mktemp("search") / "data"
    assert record_day(root, "spot", [SYMBOL], 6.0) == 0
    today = recorded_date(root)
    days = [copy_day(root, "binance-spot", today, -n) for n in (2, 1)] + [today]
    for day in days:
        assert prepare(SweepSpec(str(root), "spot", SimParams()), day, SYMBOL)["error"] is None
    return root, {dt.date.fromisoformat(day): [SYMBOL] for day in days}


def search(spec: SweepSpec, axes: list[Axis], symbols_by_day: dict, out: Path, objective: str, trials: int,
           fit_days: dict | None = None, calibration: dict | None = None, **options) -> tuple[StageFigures, list[dict]]:
    """run_search into a new sweep directory: its figures and the rows it wrote (the progress bar ends full)."""
    store = SweepStore(out)
    store.open({"id": "search-test"}, resume=False)
    with progress_bar(Console(quiet=True), False) as bar:
        figures = run_search(spec, axes, symbols_by_day, fit_days, objective, trials, store, calibration or {}, {},
                             bar, **options)
    assert bar.tasks[-1].finished and bar.tasks[-1].completed == figures.ran
    return figures, store.rows()


def days_by_set(rows: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        out[row["set_id"]].append(row["day"])
    return {sid: sorted(days) for sid, days in out.items()}


@pytest.fixture(scope="module")
def optuna_run(local_ray, dataset, tmp_path_factory):
    """Four trials over gamma (log range) and order_size (a choice), two at a time."""
    root, symbols_by_day = dataset
    spec = SweepSpec(str(root), "spot", SimParams())
    axes = [parse_axis("gamma=0.01:1:log", search=True), parse_axis(f"order_size={','.join(SIZES)}", search=True)]
    out = tmp_path_factory.mktemp("optuna") / "sweep"
    figures, rows = search(spec, axes, symbols_by_day, out, "pnl", 4)
    return spec, axes, out, figures, rows


def test_every_reported_day_of_every_trial_is_a_row_in_the_store(optuna_run, dataset):
    spec, axes, out, figures, rows = optuna_run
    days = [day.isoformat() for day in sorted(dataset[1])]
    trials = ray.tune.ExperimentAnalysis(str(out / "tune" / "search")).trials
    assert len(trials) == 4
    reported = {make_task(spec.base, trial_values(axes, t.config), "spot", day, SYMBOL).task_id
                for t in trials for day in days[:t.last_result["day"]]}
    assert {r["task_id"] for r in rows} == reported and figures.ran == len(rows) == len(reported)
    assert figures.failed == 0 and all(r["error"] is None for r in rows)
    assert 1 <= len(days_by_set(rows)) <= 4
    assert all(found == days[:len(found)] for found in days_by_set(rows).values())  # days in date order
    for row in rows:
        values = {"gamma": row["p.gamma"], "order_size": row["p.order_size"]}
        assert row["task_id"] == make_task(spec.base, values, "spot", row["day"], SYMBOL).task_id
        assert 0.01 <= row["p.gamma"] <= 1 and row["p.order_size"] in SIZES


def test_a_searched_row_is_the_backtest_of_its_task(optuna_run):
    spec, _, _, _, rows = optuna_run
    row = rows[0]
    task = make_task(spec.base, {"gamma": row["p.gamma"], "order_size": row["p.order_size"]}, "spot", row["day"],
                     SYMBOL)
    direct = orjson.loads(orjson.dumps(run_task(spec, task)))  # as the store keeps a row
    assert direct["rows"] > 0  # the backtest walked the day
    assert {k: v for k, v in row.items() if k not in RUN_DEPENDENT} == \
        {k: v for k, v in direct.items() if k not in RUN_DEPENDENT}


def test_asha_stops_the_sets_behind_on_the_first_day(local_ray, dataset, tmp_path):
    """maker_fee decides: quoting at the touch without fee-aware spreads, the fills do not depend on the fee,
    so PnL falls strictly as the fee rises. Trials run one at a time with a seeded sampler, so the order of the
    six fees is fixed, and ASHA (grace 1, factor 2) stops a trial whose first day is below the median of the
    first days before it: with six distinct values that happens in all but the 22 of 720 orders that never
    fall below the running median, and the seeded order is not one of them."""
    root, symbols_by_day = dataset
    spec = SweepSpec(str(root), "spot", SimParams(strategy="join", fee_aware=False))
    figures, rows = search(spec, [Axis("maker_fee", (), 0.0, 0.002)], symbols_by_day, tmp_path / "sweep", "pnl", 6,
                           max_concurrent=1, seed=1)
    first_day = min(r["day"] for r in rows)
    first = sorted((r["p.maker_fee"], r["pnl"], r["set_id"]) for r in rows if r["day"] == first_day)
    assert len(first) == 6
    assert all(a[1] > b[1] for a, b in itertools.pairwise(first))  # a higher fee, a lower PnL
    days = days_by_set(rows)
    stopped = [sid for sid, found in days.items() if len(found) < 3]
    assert stopped and len(stopped) < 6
    best_pnl_of_stopped = max(pnl for _, pnl, sid in first if sid in stopped)
    assert best_pnl_of_stopped < max(pnl for _, pnl, sid in first if sid not in stopped)
    assert figures.ran == len(rows) == sum(len(found) for found in days.values()) and figures.failed == 0


def test_a_trial_whose_worker_dies_leaves_error_rows_for_its_days(local_ray, dataset, tmp_path):
    root, symbols_by_day = dataset
    dies = tmp_path / "dies.py"
    dies.write_text("import os\nos._exit(3)\n")  # the strategy's import ends the worker process
    spec = SweepSpec(str(root), "spot", SimParams(strategy=f"{dies}:Strategy"))
    axes = [parse_axis("gamma=0.01:1:log", search=True)]
    figures, rows = search(spec, axes, symbols_by_day, tmp_path / "sweep", "pnl", 2)
    assert len(rows) == 6 and figures.ran == 6 and figures.failed == 6
    assert all("ActorDiedError" in r["error"] for r in rows)
    assert {r["task_id"] for r in rows} == {
        make_task(spec.base, {"gamma": r["p.gamma"]}, "spot", r["day"], SYMBOL).task_id for r in rows}
    assert all(found == sorted(d.isoformat() for d in symbols_by_day) for found in days_by_set(rows).values())


def test_walk_forward_trades_the_days_with_a_fit_day_on_that_days_fits(local_ray, dataset, tmp_path):
    root, symbols_by_day = dataset
    first, second, third = sorted(symbols_by_day)
    spec = SweepSpec(str(root), "spot", SimParams())
    calibration = {(first.isoformat(), SYMBOL): {"sigma": 1.5, "A": 2.0, "k": 3.0, "error": None}}
    figures, rows = search(spec, [parse_axis("gamma=0.01:1:log", search=True)], symbols_by_day, tmp_path / "sweep",
                           "pnl", 1, fit_days={second: first, third: second}, calibration=calibration)
    by_day = {r["day"]: r for r in rows}
    assert sorted(by_day) == [second.isoformat(), third.isoformat()] and figures.ran == 2
    assert by_day[second.isoformat()]["error"] is None and by_day[second.isoformat()]["fit_sigma"] == 1.5
    assert by_day[second.isoformat()]["fit_day"] == first.isoformat()
    assert "no calibration of " + second.isoformat() in by_day[third.isoformat()]["error"] and figures.failed == 1


def test_a_trial_holds_the_values_a_grid_would():
    """A range is sampled as a number and used as its grid point would be: 12 significant digits, text for a
    decimal-text parameter, a whole number for an integer one; a grid range with a count is searched whole."""
    axes = [parse_axis("order_size=0.001:0.004:lin4", search=True), parse_axis("gamma=0.01:1:log", search=True),
            parse_axis("tolerance_ticks=0:3", search=True), parse_axis("fill_model=queue,cross", search=True)]
    space = param_space(axes)
    assert (space["order_size"].lower, space["order_size"].upper) == (0.001, 0.004)
    assert (space["tolerance_ticks"].lower, space["tolerance_ticks"].upper) == (0, 4)  # upper bound excluded
    assert space["fill_model"].categories == ["queue", "cross"]
    values = trial_values(axes, {"order_size": 0.0023456789012345678, "gamma": 0.123456789012345678,
                                 "tolerance_ticks": 2, "fill_model": "cross"})
    assert values == {"order_size": "0.00234567890123", "gamma": 0.123456789012, "tolerance_ticks": 2,
                      "fill_model": "cross"}
    make_task(SimParams(), values, "spot", "2026-01-01", SYMBOL)  # valid as a set
