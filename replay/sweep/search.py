"""`--search optuna`: Optuna picks the parameter sets, Ray Tune runs them, ASHA stops the poor ones early.

A trial is one parameter set, walked day by day in date order over every symbol of the day; after each day it
reports the objective of its rows so far, so the scheduler compares sets on the same number of days and stops
those in the lower half (ASHA) before they spend the rest. The rows travel with each report and are written to
the sweep's directory on the driver as they arrive, like the grid's; a trial that dies leaves rows with its
error for the days it did not report: no task of a started trial is silently missing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
from collections.abc import Iterator
from typing import Any

import orjson
from rich.progress import Progress

from replay.sweep.cluster import Clock, cluster_cpus, ray_module
from replay.sweep.results import objective_value, set_figures
from replay.sweep.runner import StageFigures, task_inputs
from replay.sweep.space import INTEGERS, Axis, SweepSpaceError, make_task, range_value, trading_days
from replay.sweep.store import SweepStore
from replay.sweep.task import SweepSpec, run_tasks, task_row

NO_VALUE = -1e300  # the objective reported while a trial has none (no task succeeded): ranks below any value
QUIET_TUNE = {
    "RAY_AIR_NEW_OUTPUT": "0",  # the older reporter, which verbose=0 silences (the new one prints a table)
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/JSON/TensorBoard copy of every report (rows included)
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # a trial works where the sweep was started (relative dataset paths)
}


def param_space(axes: list[Axis]) -> dict[str, Any]:
    """Tune's distribution of each axis: a list is a choice; a range is continuous (log-uniform for `log`), over
    whole numbers for integer parameters. Decimal-text parameters are sampled as numbers (see `trial_values`)."""
    from ray import tune

    space: dict[str, Any] = {}
    for axis in axes:
        if axis.low is None:
            space[axis.name] = tune.choice(list(axis.values))
        elif axis.name in INTEGERS:
            low, high = math.ceil(axis.low), math.floor(axis.high) + 1
            if low >= high:
                raise SweepSpaceError(f"{axis.name}: no whole number from {axis.low} to {axis.high}")
            space[axis.name] = tune.lograndint(low, high) if axis.log else tune.randint(low, high)
        else:
            space[axis.name] = (tune.loguniform if axis.log else tune.uniform)(axis.low, axis.high)
    return space


def trial_values(axes: list[Axis], config: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameter set as a grid's would hold it: a sampled number becomes the range point the parameter
    takes (12 significant digits; text for decimal-text parameters), a choice stays as given."""
    return {axis.name: config[axis.name] if axis.low is None
            else range_value(axis.name, config[axis.name]) for axis in axes}


def day_tasks(spec: SweepSpec, values: dict[str, Any], day: str, fit_day: str | None, symbols: list[str]) -> list:
    """The set's tasks on one day, unchecked: a sampled combination may be invalid (soft_limit above
    hard_limit), and its rows then say so."""
    return [make_task(spec.base, values, spec.market, day, symbol, fit_day, check=False) for symbol in symbols]


def run_trial(config: dict[str, Any], spec: SweepSpec, axes: list[Axis], days: list, objective: str,
              calibration: dict, prepare_errors: dict) -> None:
    """Tune's function trainable: the set's tasks day by day, a report (objective so far, the day's rows) after
    each day; ASHA ends it between two reports."""
    from ray import tune

    values = trial_values(axes, config)
    rows: list[dict] = []
    for number, (day, fit_day, symbols) in enumerate(days, 1):
        day_rows = run_tasks(spec, [task_inputs(task, calibration, prepare_errors)
                                    for task in day_tasks(spec, values, day, fit_day, symbols)])
        rows += day_rows
        value = objective_value(set_figures(rows), objective)
        tune.report({"objective": NO_VALUE if value is None else value, "day": number,
                     "rows": orjson.dumps(day_rows).decode()})


def trial_error_text(trial: Any) -> str:
    """The row error of a trial Tune gave up on: what its worker raised, or that it died. Read from the error
    Tune just pickled on this machine (its copy in the storage comes later)."""
    from ray import cloudpickle

    try:
        with open(trial.pickled_error_file, "rb") as file:
            error = cloudpickle.load(file)
    except (OSError, TypeError, EOFError, cloudpickle.pickle.UnpicklingError):
        return "the search trial failed (Tune kept no error)"
    cause = getattr(error, "cause", None) or error  # a RayTaskError wraps what the trial raised
    lines = str(cause).strip().splitlines()
    return f"the search trial failed: {type(cause).__name__}{': ' + lines[0][:300] if lines else ''}"


@contextlib.contextmanager
def quiet_tune() -> Iterator[None]:
    """Tune's and Optuna's console output and Tune's per-trial log files off while the search runs (the
    progress bar says what runs; a failure is in the rows)."""
    import optuna

    saved = {name: os.environ.get(name) for name in QUIET_TUNE}
    tune_logger = logging.getLogger("ray.tune")
    tune_level, optuna_level = tune_logger.level, optuna.logging.get_verbosity()
    os.environ.update(QUIET_TUNE)
    tune_logger.setLevel(logging.CRITICAL)  # a failed trial is in its rows, not a traceback on the console
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created" on every search
    try:
        yield
    finally:
        optuna.logging.set_verbosity(optuna_level)
        tune_logger.setLevel(tune_level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_search(spec: SweepSpec, axes: list[Axis], symbols_by_day: dict[dt.date, list[str]],
               fit_days: dict[dt.date, dt.date] | None, objective: str, trials: int, store: SweepStore,
               calibration: dict[tuple[str, str], dict], prepare_errors: dict[tuple[str, str], str | None],
               bar: Progress, *, seed: int = 1, max_concurrent: int | None = None) -> StageFigures:
    """`trials` parameter sets chosen by Optuna (TPE, seeded) over `axes`, each run day by day on Ray Tune with
    ASHA stopping the worse half at each rung; every row written to `store` as it arrives."""
    ray_module()  # Ray missing: how to install it
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    days = trading_days(symbols_by_day, fit_days)
    figures = StageFigures()
    job = bar.add_task("search", total=trials * sum(len(symbols) for _, _, symbols in days), failed=0, running=0)
    clock = Clock()

    def running(trials_now: list) -> int:
        return sum(t.status == "RUNNING" for t in trials_now)

    def write(rows: list[dict], trials_now: list) -> None:
        for row in rows:
            store.write(row)
            clock.mark()
            figures.ran += 1
            figures.failed += bool(row.get("error"))
            figures.task_seconds += row.get("runtime_s") or 0.0
        bar.update(job, advance=len(rows), failed=figures.failed, running=running(trials_now))

    class RowsToStore(tune.Callback):
        """On the driver: each report's rows into the store; a failed trial's missing days as error rows."""

        def __init__(self) -> None:
            self.days_reported: dict[str, int] = {}

        def __reduce__(self) -> tuple:
            # Tune pickles its callbacks with the tuner's state (for Tuner.restore, which a sweep does not
            # use): the driver's store and progress bar stay out, a no-op callback goes in
            return tune.Callback, ()

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.days_reported[trial.trial_id] = result["day"]
            write(orjson.loads(result["rows"]), trials)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            error = trial_error_text(trial)
            values = trial_values(axes, trial.config)
            missing = days[self.days_reported.get(trial.trial_id, 0):]
            write([{**task_row(spec, task), "error": error, "runtime_s": None}
                   for day, fit_day, symbols in missing for task in day_tasks(spec, values, day, fit_day, symbols)],
                  trials)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            bar.update(job, running=running(trials))

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            bar.update(job, running=running(trials))

    with quiet_tune():
        trainable = tune.with_parameters(run_trial, spec=spec, axes=axes, days=days, objective=objective,
                                         calibration=calibration, prepare_errors=prepare_errors)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(axes),
            tune_config=tune.TuneConfig(
                search_alg=OptunaSearch(metric="objective", mode="max", seed=seed),
                scheduler=ASHAScheduler(time_attr="training_iteration", metric="objective", mode="max",
                                        max_t=max(1, len(days)), grace_period=1, reduction_factor=2),
                num_samples=trials, max_concurrent_trials=max_concurrent or cluster_cpus()),
            run_config=tune.RunConfig(storage_path=str((store.out / "tune").absolute()), name="search", verbose=0,
                                      callbacks=[RowsToStore()]),
        )
        tuner.fit()
    figures.seconds = clock.elapsed()
    figures.first_result_s = clock.first
    bar.update(job, total=figures.ran, completed=figures.ran, running=0)
    return figures
