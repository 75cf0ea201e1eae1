"""`replay sweep`: plan the tasks, run them on Ray (a grid, or an Optuna search), write the tables and the page.

Every input is checked before Ray starts (days, symbols, axes, every parameter set), so bad input costs one
line and exit 2. At the end, complete or interrupted, the tables and the leaderboard are rebuilt from the rows
written so far. Exit codes: 0 all tasks succeeded, 1 some failed (each row says why), 130 Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from replay.sim.params import SimParams
from replay.sweep.results import OBJECTIVES, aggregate, set_table, sort_tasks, task_table
from replay.sweep.space import (
    Axis,
    Task,
    digest,
    expand,
    load_sweep_config,
    parse_axis,
    plan,
    previous_days,
    set_params,
)
from replay.sweep.store import SweepStore
from replay.sweep.task import SweepSpec

DEFAULT_OBJECTIVE = "pnl"
SEARCHES = ("optuna",)
DEFAULT_TRIALS = 50
MODEL_STRATEGIES = ("as", "glft")  # the strategies that take σ, A, k (walk-forward)


class SweepInputError(ValueError):
    """Bad input to `replay sweep`; one line."""


@dataclass
class SweepPlan:
    """A checked sweep: what runs, where its files go, and its definition (whose hash names it)."""

    spec: SweepSpec
    axes: list[Axis]
    days: list[dt.date]
    symbols_by_day: dict[dt.date, list[str]]
    fit_days: dict[dt.date, dt.date] | None
    tasks: list[Task]
    objective: str
    search: str | None
    trials: int
    calibration: bool
    definition: dict
    out: Path
    notes: list[str]

    @property
    def swept(self) -> list[str]:
        return [axis.name for axis in self.axes]

    @property
    def calibration_pairs(self) -> list[tuple[str, str]]:
        """(day, symbol) to calibrate: the traded days (for the page) and the days fits are taken from."""
        pairs = set()
        if self.calibration:
            pairs |= {(d.isoformat(), s) for d, symbols in self.symbols_by_day.items() for s in symbols}
        for day, fit_day in (self.fit_days or {}).items():
            pairs |= {(fit_day.isoformat(), s) for s in self.symbols_by_day[day]}
        return sorted(pairs)


def day_symbols(root: Path, market, day: dt.date, wanted: list[str] | None) -> tuple[list[str], str | None]:  # type: ignore[no-untyped-def]
    """The symbols to sweep on `day`, and why the day cannot be read (None: it can). A damaged file is not bad
    input to the sweep: the day's tasks fail with it, the other days run."""
    from replay.engine import TRADE, DayReplay
    from schemas import DatasetError

    try:
        return DayReplay(root, market, day, wanted, channels=(TRADE,)).symbols, None
    except DatasetError as exc:
        recorded = sorted(p.name.split("=", 1)[1]
                          for p in (root / market.exchange / "depth" / f"date={day}").glob("symbol=*"))
        missing = [s for s in wanted or [] if s not in recorded]
        if missing:
            raise SweepInputError(f"no {', '.join(missing)} on {day}; available symbols: {', '.join(recorded)}") \
                from None
        return wanted or recorded, str(exc)


def _absolute_strategy(params: SimParams) -> SimParams:
    """A strategy given as a file path is made absolute: Ray workers do not share the driver's directory."""
    path, sep, name = params.strategy.rpartition(":")
    if sep and path.endswith(".py") and not Path(path).is_absolute():
        return dataclasses.replace(params, strategy=f"{Path(path).resolve()}:{name}")
    return params


def make_plan(*, data: Path, market, days: list[dt.date], recorded: list[dt.date],  # type: ignore[no-untyped-def]
              symbols_by_day: dict[dt.date, list[str]], base: SimParams, grid: list[str], config: Path | None,
              search: str | None, trials: int | None, objective: str | None, walk_forward: bool,
              calibration: bool, out: Path | None) -> SweepPlan:
    """The sweep's tasks and definition from the command's inputs; SweepInputError on anything unusable."""
    section = load_sweep_config(config, search is not None)
    search = search or section.search
    if search is not None and search not in SEARCHES:
        raise SweepInputError(f"--search {search!r}: one of {', '.join(SEARCHES)}")
    flags = [parse_axis(text, search is not None) for text in grid]
    by_flag = {axis.name for axis in flags}
    axes = [axis for axis in section.grid if axis.name not in by_flag] + flags
    objective = objective or section.objective or DEFAULT_OBJECTIVE
    if objective not in OBJECTIVES:
        raise SweepInputError(f"--objective {objective!r}: one of {', '.join(OBJECTIVES)}")
    trials = trials or section.trials or DEFAULT_TRIALS
    if search is not None and not axes:
        raise SweepInputError("--search needs parameters to search: --grid NAME=LOW:HIGH[:log] or NAME=A,B")
    if search is None:
        continuous = [axis.name for axis in axes if not axis.values]
        if continuous:
            raise SweepInputError(f"{continuous[0]}: a range without a count is for --search; give a count "
                                  f"(e.g. :log5) or a step")
    base = _absolute_strategy(base)
    notes = []
    fit_days = None
    if walk_forward:
        strategies = {base.strategy, *(v for a in axes if a.name == "strategy" for v in a.values)}
        if not strategies <= set(MODEL_STRATEGIES):
            raise SweepInputError(f"--walk-forward fits σ, A, k for {' and '.join(MODEL_STRATEGIES)}; the sweep runs "
                                  f"{', '.join(sorted(strategies - set(MODEL_STRATEGIES)))}")
        fitted = [a.name for a in axes if a.name in ("sigma", "A", "k")]
        if fitted:
            raise SweepInputError(f"--walk-forward takes {fitted[0]} from the previous day's fit; do not sweep it")
        fit_days = previous_days(days, recorded)
        skipped = [d for d in days if d not in fit_days]
        if skipped:
            notes.append(f"walk-forward: {', '.join(map(str, skipped))} has no recorded day before it: "
                         "not traded")
        if not fit_days:
            raise SweepInputError("--walk-forward: no day of --date has a recorded day before it to calibrate on")
    sets = expand([a for a in axes if a.values]) if search is None else []
    for values in sets:
        set_params(base, values)
    if search is not None:
        set_params(base, {})
    tasks = plan(base, sets, market.name, symbols_by_day, fit_days)
    definition = {
        "market": market.name, "days": [d.isoformat() for d in days],
        "symbols": {d.isoformat(): s for d, s in symbols_by_day.items()},
        "base": dataclasses.asdict(base), "axes": [dataclasses.asdict(a) for a in axes],
        "walk_forward": walk_forward, "search": search, "trials": trials if search else None,
        "calibration": calibration,
    }
    sweep_id = digest(definition, 8)
    definition = {"id": sweep_id, **definition, "objective": objective, "data": str(data)}
    spec = SweepSpec(str(data.resolve()), market.name, base)
    out = (out or data / "reports" / market.exchange / f"sweep-{sweep_id}").resolve()
    return SweepPlan(spec, axes, days, symbols_by_day, fit_days, tasks, objective, search, trials, calibration,
                     definition, out, notes)


@dataclass
class SweepResult:
    rows: list[dict]
    sets: list[dict]
    files: list[Path]
    interrupted: bool
    figures: object


def run_plan(sweep: SweepPlan, *, address: str | None, cpus: int | None, resume: bool, retries: int,
             console: Console, progress: bool) -> SweepResult:
    """Run the planned sweep on Ray and write its tables; Ctrl-C keeps what finished (`interrupted`)."""
    from replay.sweep import runner
    from replay.sweep.cluster import connect

    store = SweepStore(sweep.out)
    store.open(sweep.definition, resume)
    console.print(connect(address, cpus), highlight=False)
    for note in sweep.notes:
        console.print(note, highlight=False)
    figures = runner.StageFigures()
    calibration: dict = {}
    interrupted = False
    bar = runner.progress_bar(console, progress)
    try:
        with bar:
            pairs = sorted({(d.isoformat(), s) for d in (sweep.fit_days or sweep.symbols_by_day)
                            for s in sweep.symbols_by_day[d]})
            prepare_errors = runner.prepare_days(sweep.spec, pairs, retries, bar)
            calibration = runner.calibrate_days(sweep.spec, store, sweep.calibration_pairs, retries, bar)
            if sweep.search is None:
                figures = runner.run_tasks(sweep.spec, sweep.tasks, store, retries, bar, calibration, prepare_errors)
            else:
                from replay.sweep.search import run_search

                figures = run_search(sweep.spec, sweep.axes, sweep.symbols_by_day, sweep.fit_days, sweep.objective,
                                     sweep.trials, store, calibration, prepare_errors, bar)
    except KeyboardInterrupt:  # in a stage before the tasks, or in a search
        interrupted = True
    rows, sets, files = finish(sweep, store)
    return SweepResult(rows, sets, files, interrupted or figures.interrupted, figures)


def finish(sweep: SweepPlan, store: SweepStore) -> tuple[list[dict], list[dict], list[Path]]:
    """The tables and the leaderboard from the rows written so far (a resumed or interrupted sweep too)."""
    from replay.sim.calibrate import TABLE_COLUMNS, write_table
    from replay.sweep.leaderboard import render_leaderboard

    planned = {t.task_id for t in sweep.tasks}
    rows = [r for r in store.rows() if sweep.search is not None or r["task_id"] in planned]
    order = list(dict.fromkeys(t.set_id for t in sweep.tasks)) or [r["set_id"] for r in rows]
    rows = sort_tasks(rows, order)
    sets = aggregate(rows, sweep.objective, sweep.swept)
    files = [store.write_table("results.parquet", task_table(rows, sweep.swept)),
             store.write_table("sets.parquet", set_table(sets, sweep.swept))]
    calibration = sorted(store.calibration().values(), key=lambda r: (r["date"], r["symbol"]))
    if calibration:
        columns = [name for name, _ in TABLE_COLUMNS]
        path = store.out / "calibration.parquet"
        write_table([{c: r.get(c) for c in columns} for r in calibration], path)
        files.append(path)
    days = sweep.definition["days"]
    title = f"sweep {sweep.definition['id']}: {sweep.spec.market} {days[0]}" + (
        f" to {days[-1]}" if len(days) > 1 else "")
    files.append(store.write_text("leaderboard.html", render_leaderboard(
        rows, sets, calibration, title=title, objective=sweep.objective, swept=sweep.swept)))
    return rows, sets, files
