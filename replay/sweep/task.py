"""The work of a sweep, one piece at a time, without Ray: prepare a (day, symbol), calibrate it, run a task.

Each function takes plain values and returns a plain dict, so it runs the same in this process, in a Ray
worker on this machine or on another node that sees the same dataset path. A task reads the prepared day
the prepare stage built (memory-mapped: every worker on a node shares the pages) and runs it through the
numba kernel, the engine `replay --speed max` uses; its figures are those of that single backtest. Whatever a
task raises is its row's `error`: one bad day or strategy never stops the sweep.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from recorder.markets import get_market
from recorder.window import TradingWindow
from replay.sim.params import SimParams
from replay.sweep.results import PARAM_PREFIX, metrics, params_text
from replay.sweep.space import Task

WINDOW = TradingWindow(dt.time(8), dt.time(22))  # the backtest's default A–S window (replay.sim.run)


@dataclass(frozen=True)
class SweepSpec:
    """What every task of a sweep shares: the dataset, the market, the base parameters."""

    root: str
    market: str
    base: SimParams


def error_text(exc: BaseException) -> str:
    """One line: the exception and where in our code it was raised."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/replay/" in f.filename or
              "/recorder/" in f.filename]
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}{where}" if message else f"{type(exc).__name__}{where}"


def prepare(spec: SweepSpec, day: str, symbol: str) -> dict:
    """Build (or check) the prepared day of (day, symbol); {"day", "symbol", "rows", "built", "error"}."""
    from replay.prepared import load_or_build

    try:
        prepared = load_or_build(spec.root, get_market(spec.market), day, symbol)
        return {"day": day, "symbol": symbol, "rows": prepared.meta.rows, "built": prepared.built, "error": None}
    except Exception as exc:  # noqa: BLE001 - the day's error goes to its tasks' rows
        return {"day": day, "symbol": symbol, "rows": 0, "built": False, "error": error_text(exc)}


def calibrate(spec: SweepSpec, day: str, symbol: str, start_ns: int | None = None,
              end_ns: int | None = None) -> dict:
    """The calibration table row of (day, symbol), or of its span start_ns..end_ns, with the base parameters'
    σ half-life and fit window; `error` set (and the figures None) when the day cannot be read."""
    from replay.sim.calibrate import TABLE_COLUMNS, calibrate_day, table_row

    try:
        result = calibrate_day(spec.root, get_market(spec.market), day, symbol, spec.base.sigma_halflife,
                               spec.base.intensity_window, start_ns, end_ns)
        return {**table_row(day, result), "error": None}
    except Exception as exc:  # noqa: BLE001
        return {**{name: None for name, _ in TABLE_COLUMNS}, "date": day, "symbol": symbol,
                "error": error_text(exc)}


def walk_forward_params(params: SimParams, fit: dict) -> SimParams:
    """σ, A, k fixed to the previous day's fits; a component without a fit stays `auto` (estimated in the day)."""
    values = {name: fit[name] for name in ("sigma", "A", "k") if fit.get(name) is not None}
    return dataclasses.replace(params, **values)


def task_row(spec: SweepSpec, task: Task) -> dict:
    """The identity part of a task's row (what is known before it runs)."""
    values = dict(task.values)
    return {"task_id": task.task_id, "set_id": task.set_id, "day": task.day, "symbol": task.symbol,
            "market": spec.market, "strategy": values.get("strategy", spec.base.strategy),
            **{PARAM_PREFIX + name: value for name, value in task.values},
            "params": params_text(values), "seed": task.seed, "fit_day": task.fit_day}


class LoadedDay:
    """What the tasks of one (day, symbol) share when they run in one call: the replay's bounds, the mapped
    prepared day and its instrument steps, each read once."""

    def __init__(self, spec: SweepSpec, day: str, symbol: str) -> None:
        from replay.engine import TRADE, DayReplay
        from replay.prepared import load_or_build

        market = get_market(spec.market)
        self.replay = DayReplay(spec.root, market, day, [symbol], channels=(TRADE,))
        self.prepared = load_or_build(spec.root, market, day, symbol)
        self.symbol = symbol
        self._steps: dict[str | None, tuple[int, int]] = {}

    def steps(self, params: SimParams) -> tuple[int, int]:
        from replay.sim.run import prepared_steps

        if params.tick_size not in self._steps:
            self._steps[params.tick_size] = prepared_steps(self.prepared, self.replay, self.symbol, params)
        return self._steps[params.tick_size]


def run_task(spec: SweepSpec, task: Task, fit: dict | None = None, prepare_error: str | None = None,
             loaded: dict[tuple[str, str], LoadedDay] | None = None) -> dict:
    """One backtest of the sweep as its result row. `fit`: the calibration row of `task.fit_day`
    (walk-forward); `prepare_error`: the day could not be prepared, so the task fails with that error;
    `loaded`: the days already loaded by the tasks run before this one in the same call."""
    started = time.perf_counter()
    row = task_row(spec, task)
    if fit is not None:
        row.update(fit_sigma=fit.get("sigma"), fit_A=fit.get("A"), fit_k=fit.get("k"))
    try:
        if prepare_error is not None:
            raise RuntimeError(f"the day could not be prepared: {prepare_error}")
        if task.fit_day is not None and (fit is None or fit.get("error")):
            raise RuntimeError(f"no calibration of {task.fit_day}: {fit and fit.get('error')}")
        params = task.params(spec.base)
        if fit is not None:
            params = walk_forward_params(params, fit)
        loaded = {} if loaded is None else loaded
        key = (task.day, task.symbol)
        if key not in loaded:
            loaded[key] = LoadedDay(spec, task.day, task.symbol)
        result, walked = simulate_task(loaded[key], task, params.check())
        row.update(metrics(result), rows=walked, error=None)
    except Exception as exc:  # noqa: BLE001 - recorded in the row; the sweep goes on
        row["error"] = error_text(exc)
    row["runtime_s"] = time.perf_counter() - started
    return row


def run_tasks(spec: SweepSpec, items: list[tuple]) -> list[dict]:
    """`run_task` of each (task, fit, prepare_error) item, in one call: a day's replay bounds and prepared day
    are loaded once for the items of that (day, symbol), and a scheduler pays its per-call cost once."""
    loaded: dict[tuple[str, str], LoadedDay] = {}
    return [run_task(spec, *item, loaded=loaded) for item in items]


def simulate_task(day: LoadedDay, task: Task, params: SimParams) -> tuple[dict, int]:
    """The task's backtest summary and the prepared rows it walked (the kernel, as `replay --speed max`)."""
    from replay.sim.results import summarize
    from replay.sim.run import horizon_ns, simulate_prepared
    from replay.sim.strategies import StrategyError

    if day.prepared.meta.price_min is None:
        raise RuntimeError(f"no book level in {task.symbol} on {task.day}: nothing to simulate")
    horizon = horizon_ns(params, day.replay, day.replay.last_ns, WINDOW)
    walked = 0

    def count(chunk) -> None:  # type: ignore[no-untyped-def]
        nonlocal walked
        walked += len(chunk)

    try:
        record = simulate_prepared(day.prepared, day.replay, task.symbol, params, horizon, None, None, None, count,
                                   day.steps(params))
    except StrategyError as exc:
        raise RuntimeError(f"strategy stopped: {exc}") from None
    if record.first_ts is None:
        raise RuntimeError(f"no valid book in {task.symbol} on {task.day}: nothing was simulated")
    return summarize(record), walked
