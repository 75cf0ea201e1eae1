"""A grid sweep on Ray, stage by stage: prepare each (day, symbol) once, calibrate the days, run the tasks.

Everything a stage produces is written to the sweep's directory as it arrives (`SweepStore`), and what is
there already (a resumed sweep) is not run again. The prepared days are built once, by one worker each,
into the prepared-day cache every node reads; the tasks then memory-map them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from replay.sweep import task as work
from replay.sweep.cluster import Clock, Stage, cluster_cpus, lost_worker_text
from replay.sweep.space import Task
from replay.sweep.store import SweepStore
from replay.sweep.task import SweepSpec

MAX_GROUP = 8
GROUPS_PER_CPU = 4


@dataclass
class StageFigures:
    """What a run of the task stage did, for the summary line and the benchmark."""

    ran: int = 0
    skipped: int = 0  # done in an earlier run (--resume)
    failed: int = 0
    seconds: float = 0.0
    first_result_s: float | None = None
    task_seconds: float = 0.0  # the tasks' own wall time, summed
    prepare_errors: dict[tuple[str, str], str] = field(default_factory=dict)
    interrupted: bool = False  # Ctrl-C stopped the stage; the figures are those of what finished


def progress_bar(console: Console, enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[failed]} failed · {task.fields[running]} running"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, disable=not enabled, transient=False)


def prepare_days(spec: SweepSpec, pairs: list[tuple[str, str]], retries: int, bar: Progress) -> dict:
    """(day, symbol) -> prepare error (None: ready), each prepared day built once on some worker."""
    errors: dict[tuple[str, str], str | None] = {}
    stage = Stage(work.prepare, retries, (spec,))
    job = bar.add_task("prepare", total=len(pairs), failed=0, running=0)

    def done(item: tuple, value: object) -> None:
        errors[item] = lost_worker_text(value, retries) if isinstance(value, BaseException) else value["error"]
        bar.update(job, advance=1, failed=sum(e is not None for e in errors.values()), running=stage.running)

    stage.run(pairs, done)
    return errors


def calibrate(spec: SweepSpec, items: list[tuple], retries: int, bar: Progress,
              on_row: Callable[[dict], None] | None = None) -> dict[tuple[str, str], dict]:
    """The calibration row of each (day, symbol[, start_ns, end_ns]) item, errors included, one Ray task each."""
    rows: dict[tuple[str, str], dict] = {}
    stage = Stage(work.calibrate, retries, (spec,))
    job = bar.add_task("calibrate", total=len(items), failed=0, running=0)

    def done(item: tuple, value: object) -> None:
        if isinstance(value, BaseException):
            value = {"date": item[0], "symbol": item[1], "error": lost_worker_text(value, retries)}
        rows[item[:2]] = value
        if on_row is not None:
            on_row(value)
        bar.update(job, advance=1, failed=sum(bool(r.get("error")) for r in rows.values()), running=stage.running)

    stage.run(items, done)
    return rows


def calibrate_days(spec: SweepSpec, store: SweepStore, pairs: list[tuple[str, str]], retries: int,
                   bar: Progress) -> dict[tuple[str, str], dict]:
    """The calibration row of each (day, symbol) that could be calibrated, computed once per sweep directory."""
    rows = store.calibration()
    fresh = calibrate(spec, [pair for pair in pairs if pair not in rows], retries, bar, store.write_calibration)
    return {**rows, **{pair: row for pair, row in fresh.items() if not row.get("error")}}


def task_inputs(task: Task, calibration: dict[tuple[str, str], dict], prepare_errors: dict
                ) -> tuple[Task, dict | None, str | None]:
    """`run_task`'s arguments for `task`: the calibration of its fit day (an error when that day has none)
    and the error of preparing its day."""
    fit = calibration.get((task.fit_day, task.symbol)) if task.fit_day else None
    if task.fit_day and fit is None:
        fit = {"error": "the day could not be calibrated"}
    return task, fit, prepare_errors.get((task.day, task.symbol))


def task_groups(items: list[tuple], cpus: int) -> list[list[tuple]]:
    """The (task, fit, prepare_error) items in groups of one (day, symbol), each group one Ray call: a day is
    loaded once per group and Ray's per-call cost (~2 ms, a twentieth of a short task) is paid once per group.
    At least `GROUPS_PER_CPU` groups per CPU keep every worker busy to the end; at most `MAX_GROUP` tasks per
    group keep the rows coming."""
    by_day: dict[tuple[str, str], list[tuple]] = {}
    for item in items:
        by_day.setdefault((item[0].day, item[0].symbol), []).append(item)
    size = max(1, min(MAX_GROUP, len(items) // max(1, cpus * GROUPS_PER_CPU)))
    return [same[i:i + size] for same in by_day.values() for i in range(0, len(same), size)]


def run_tasks(spec: SweepSpec, tasks: list[Task], store: SweepStore, retries: int, bar: Progress,
              calibration: dict[tuple[str, str], dict], prepare_errors: dict) -> StageFigures:
    """Every task not done yet, in groups (`task_groups`), each row written as its group finishes; Ctrl-C ends
    the stage with the figures of what finished (`interrupted`)."""
    done_before = store.done()
    todo = [t for t in tasks if t.task_id not in done_before]
    figures = StageFigures(skipped=len(tasks) - len(todo))
    stage = Stage(work.run_tasks, retries, (spec,))
    cpus = cluster_cpus()
    job = bar.add_task("tasks", total=len(tasks), completed=figures.skipped, failed=0, running=0)
    clock = Clock()

    def done(group: tuple, value: object) -> None:
        (items,) = group
        if isinstance(value, BaseException):  # the worker died on every attempt
            value = [{**work.task_row(spec, item[0]), "error": lost_worker_text(value, retries), "runtime_s": None}
                     for item in items]
        for row in value:
            store.write(row)
            figures.ran += 1
            figures.failed += bool(row.get("error"))
            figures.task_seconds += row.get("runtime_s") or 0.0
        clock.mark()
        bar.update(job, advance=len(value), failed=figures.failed, running=min(stage.running, cpus))

    groups = task_groups([task_inputs(t, calibration, prepare_errors) for t in todo], cpus)
    try:
        stage.run(((group,) for group in groups), done, lambda: bar.update(job, running=min(stage.running, cpus)))
    except KeyboardInterrupt:
        figures.interrupted = True
    figures.seconds = clock.elapsed()
    figures.first_result_s = clock.first
    return figures
