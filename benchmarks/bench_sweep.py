"""`replay sweep` on a local Ray: tasks/s on 1 CPU and on every CPU, Ray's overhead per task, time to the first
result, and the same tasks in a plain for-loop and on a multiprocessing.Pool (no Ray: the peers' way).

Usage: python benchmarks/bench_sweep.py [--realdata DIR] [--market spot|usdm] [--grid NAME=VALUES ...] [--runs 3]
                                        [--json PATH]
Data (imported into a temp dataset, not timed): Berlin day 2024-08-09, BTCUSDT and ETHUSDT, from the hftbacktest
captures in ../shared/realdata: spot (default) spot_btcusdt_20240808 + _20240809 + spot_ethusdt_20240808 (11 min,
320k + 115k prepared rows), or usdm usdm_btcusdt_20240808 + usdm_ethusdt_20240808 (6 min, 467k + 444k rows, many
more fills). Both give tasks of ~20–40 ms, the longest these captures allow (a parameter such as a shorter
requote interval adds little); a recorded full day runs for seconds, so the overhead share measured here is an
upper bound: the per-task figure in ms is printed to scale it to longer tasks.
Sweep: --grid gamma=0.01:1:log5 --grid order_size=0.001,0.002,0.005,0.01 over the 2 symbols = 40 tasks.

Every timed sweep goes through `make_plan` + `run_plan`, what `replay sweep` runs, in this process with a fresh
--out, on a local Ray it starts (`--cpus 1`, then all of os.cpu_count()) and ends; the StageFigures it returns
give the task stage's wall time, the tasks' own runtime_s and the time to the first result. Overhead =
(stage wall time × CPUs − Σ runtime_s) / Σ runtime_s: scheduling, argument and result transfer, writing each row.
On a new Ray the first task of each worker process also imports numba and loads the kernel from its cache (the
`slowest ms` column); that is task time, and it is why the same sweep is run a second time on the same Ray: its
now warm workers give the rate a longer sweep approaches. The command itself (`replay sweep` in a subprocess:
Python start, imports, plan, Ray start, prepare and calibrate stages) is timed to its first result row (the row
file's mtime). The serial baseline runs the same tasks with `replay.sweep.task.run_task` in a loop here. One
untimed sweep first builds the prepared days and loads (or compiles) the numba cache. Timed figures: best of
--runs, interleaved. A $RAY_ADDRESS is ignored: the figures are for a Ray this benchmark starts on this machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from recorder.importer import import_captures
from recorder.markets import get_market
from replay.sim.params import SimParams
from replay.sweep.cluster import disconnect
from replay.sweep.command import SweepPlan, SweepResult, make_plan, run_plan
from replay.sweep.task import run_task

HERE = Path(__file__).resolve().parent
DEFAULT_REALDATA = HERE.parents[1] / "shared" / "realdata"
CAPTURES = {"spot": ["spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz", "spot_ethusdt_20240808.gz"],
            "usdm": ["usdm_btcusdt_20240808.gz", "usdm_ethusdt_20240808.gz"]}
DAY = dt.date(2024, 8, 9)
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
DEFAULT_GRID = ["gamma=0.01:1:log5", "order_size=0.001,0.002,0.005,0.01"]
RETRIES = 2  # the CLI's default
SPEEDUP_TARGET = 1.8  # all CPUs over 1 CPU, on 2 cores
OVERHEAD_TARGET = 0.05


def sweep_plan(root: Path, market: str, grid: list[str], out: Path) -> SweepPlan:
    """The plan `replay sweep --date DAY --symbols BTCUSDT,ETHUSDT --grid ... --out OUT` makes."""
    return make_plan(data=root, market=get_market(market), days=[DAY], recorded=[DAY], symbols_by_day={DAY: SYMBOLS},
                     base=SimParams(), grid=grid, config=None, search=None, trials=None, objective=None,
                     walk_forward=False, calibration=True, out=out)


def first_row_time(out: Path) -> float:
    """Wall-clock time the first task row of the sweep in `out` was written."""
    return min(path.stat().st_mtime for path in (out / "tasks").glob("*.json"))


def checked(rows: list[dict], planned: int, what: str) -> None:
    failed = [r for r in rows if r.get("error")]
    if len(rows) != planned or failed:
        raise SystemExit(f"bench_sweep: {what}: {len(rows)} of {planned} rows, {len(failed)} failed"
                         + (f" ({failed[0]['error']})" if failed else ""))


def task_times(rows: list[dict]) -> dict:
    runtimes = sorted(r["runtime_s"] for r in rows)
    return {"median_task_ms": runtimes[len(runtimes) // 2] * 1e3, "slowest_task_ms": runtimes[-1] * 1e3}


def stage_figures(result: SweepResult, cpus: int) -> dict:
    f = result.figures
    return {"cpus": cpus, "tasks": f.ran, "stage_s": f.seconds, "task_s": f.task_seconds,
            "tasks_per_s": f.ran / f.seconds, "overhead": (f.seconds * cpus - f.task_seconds) / f.task_seconds,
            "overhead_ms_per_task": (f.seconds * cpus - f.task_seconds) / f.ran * 1e3,
            "first_result_s": f.first_result_s, **task_times(result.rows)}


def timed_sweep(root: Path, market: str, grid: list[str], cpus: int, outs: Iterator[Path]) -> tuple[dict, dict]:
    """The sweep through make_plan + run_plan on a local Ray of `cpus` CPUs, started here and ended: once on its
    fresh workers (what a user's sweep starts with), then again on the same, now warm, workers."""
    runs = []
    started = time.time()
    try:
        for _ in range(2):
            plan = sweep_plan(root, market, grid, next(outs))
            result = run_plan(plan, address=None, cpus=cpus, resume=False, retries=RETRIES,
                              console=Console(file=io.StringIO()), progress=False)
            checked(result.rows, len(plan.tasks), f"sweep on {cpus} CPU(s)")
            runs.append(stage_figures(result, cpus))
            if len(runs) == 1:
                runs[0]["start_to_first_s"] = first_row_time(plan.out) - started
    finally:
        disconnect()
    return runs[0], runs[1]


def cli_sweep(root: Path, market: str, grid: list[str], out: Path) -> dict:
    """`replay sweep` in a subprocess on all CPUs (its own local Ray): command start to the first row, and to exit."""
    command = [sys.executable, "-c", "from replay.cli import main; main()", "sweep", "--data", str(root),
               "--market", market, "--date", DAY.isoformat(), "--symbols", ",".join(SYMBOLS), "--out", str(out),
               "--no-progress", *(f"--grid={axis}" for axis in grid)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    started_wall, started = time.time(), time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        try:  # anything of its Ray still in its process group
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    command_s = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"bench_sweep: replay sweep exited {process.returncode}:\n{output.decode()[-2000:]}")
    return {"start_to_first_s": first_row_time(out) - started_wall, "command_s": command_s}


def serial(root: Path, market: str, grid: list[str], out: Path) -> dict:
    """The sweep's tasks run by `run_task` in a plain loop in this process."""
    plan = sweep_plan(root, market, grid, out)
    started = time.perf_counter()
    rows = [run_task(plan.spec, task) for task in plan.tasks]
    seconds = time.perf_counter() - started
    checked(rows, len(plan.tasks), "serial loop")
    return {"tasks": len(rows), "seconds": seconds, "tasks_per_s": len(rows) / seconds,
            "task_s": sum(r["runtime_s"] for r in rows), **task_times(rows)}


def pool(root: Path, market: str, grid: list[str], out: Path, processes: int) -> dict:
    """The peers' way (hftbacktest's grid-search example): the same `run_task` calls mapped over a
    `multiprocessing.Pool`, its processes started and the kernel loaded in each before the clock starts (as
    the sweep's warm workers)."""
    import multiprocessing

    from replay.sim.fast import load_kernel

    plan = sweep_plan(root, market, grid, out)
    with multiprocessing.get_context("spawn").Pool(processes, initializer=load_kernel) as workers:
        workers.map(abs, range(processes * 4))  # every process started and through its initializer
        started = time.perf_counter()
        rows = workers.starmap(run_task, [(plan.spec, task) for task in plan.tasks], chunksize=1)
        seconds = time.perf_counter() - started
    checked(rows, len(plan.tasks), "multiprocessing.Pool")
    return {"tasks": len(rows), "seconds": seconds, "tasks_per_s": len(rows) / seconds,
            "task_s": sum(r["runtime_s"] for r in rows), **task_times(rows)}


def best(runs: list[dict]) -> dict:
    return max(runs, key=lambda r: r["tasks_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA)
    parser.add_argument("--market", choices=sorted(CAPTURES), default="spot")
    parser.add_argument("--grid", action="append", help=f"a swept parameter (repeat); default {' '.join(DEFAULT_GRID)}")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    captures = [args.realdata / "hftbacktest" / name for name in CAPTURES[args.market]]
    missing = [str(p) for p in captures if not p.exists()]
    if missing:
        raise SystemExit(f"bench_sweep: {missing[0]} not found (the real captures live in ../shared/realdata; "
                         f"--realdata DIR)")
    os.environ.pop("RAY_ADDRESS", None)
    grid = args.grid or DEFAULT_GRID
    cpus = os.cpu_count() or 1
    sizes = list(dict.fromkeys((1, cpus)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        dates = import_captures(captures, get_market(args.market), root).dates
        if DAY not in dates:
            raise SystemExit(f"bench_sweep: the captures hold {dates}, not {DAY}")
        outs = (Path(tmp) / f"out-{n}" for n in itertools.count())
        first, _ = timed_sweep(root, args.market, grid, cpus, outs)  # prepared days, numba cache, page cache
        print(f"data: {args.market} {DAY} {', '.join(SYMBOLS)} from {', '.join(CAPTURES[args.market])}; "
              f"{first['tasks']} tasks ({' x '.join(grid)} x {len(SYMBOLS)} symbols); {cpus} CPUs; best of {args.runs}")
        serial(root, args.market, grid, next(outs))  # this process's imports and numba cache
        fresh: dict[int, list[dict]] = {n: [] for n in sizes}
        warm: dict[int, list[dict]] = {n: [] for n in sizes}
        cli, loop, pools = [], [], []
        for _ in range(args.runs):  # interleaved, so a slow spell of the shared machine hits every figure
            for n in sizes:
                on_fresh, on_warm = timed_sweep(root, args.market, grid, n, outs)
                fresh[n].append(on_fresh)
                warm[n].append(on_warm)
            cli.append(cli_sweep(root, args.market, grid, next(outs)))
            loop.append(serial(root, args.market, grid, next(outs)))
            pools.append(pool(root, args.market, grid, next(outs), cpus))
    figures = {"market": args.market, "day": DAY.isoformat(), "grid": grid, "cpus": cpus, "runs": args.runs,
               "fresh": {n: best(fresh[n]) for n in sizes}, "warm": {n: best(warm[n]) for n in sizes},
               "serial": best(loop), "pool": best(pools), "cli": min(cli, key=lambda r: r["start_to_first_s"]),
               "first_result_s": min(r["first_result_s"] for r in fresh[cpus]),
               "start_to_first_s": min(r["start_to_first_s"] for r in fresh[cpus])}
    for kind in ("fresh", "warm"):
        figures[f"speedup_{kind}"] = figures[kind][cpus]["tasks_per_s"] / figures[kind][1]["tasks_per_s"]
    for kind in ("fresh", "warm"):
        figures[f"over_loop_{kind}"] = figures[kind][cpus]["tasks_per_s"] / figures["serial"]["tasks_per_s"]
    figures["over_pool_warm"] = figures["warm"][cpus]["tasks_per_s"] / figures["pool"]["tasks_per_s"]
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def report(f: dict) -> None:
    cpus, met = f["cpus"], {True: "met", False: "MISSED"}
    print(f"{'':34s}{'tasks/s':>8s}{'stage s':>9s}{'Σ task s':>10s}{'overhead':>10s}{'ms/task':>9s}{'median ms':>11s}"
          f"{'slowest ms':>12s}{'1st result':>12s}")
    for kind, what in (("fresh", "sweep on a new Ray"), ("warm", "again on its warm workers")):
        for n, r in f[kind].items():
            print(f"{what + f', {n} CPU' + ('s' if n > 1 else ''):34s}{r['tasks_per_s']:8.1f}{r['stage_s']:9.3f}"
                  f"{r['task_s']:10.3f}{r['overhead']:10.1%}{r['overhead_ms_per_task']:9.1f}{r['median_task_ms']:11.1f}"
                  f"{r['slowest_task_ms']:12.1f}{r['first_result_s']:11.3f}s")
    loop = f["serial"]
    print(f"{'for-loop of run_task, no Ray':34s}{loop['tasks_per_s']:8.1f}{loop['seconds']:9.3f}{loop['task_s']:10.3f}"
          f"{'':19s}{loop['median_task_ms']:11.1f}{loop['slowest_task_ms']:12.1f}")
    peer = f["pool"]
    print(f"{f'multiprocessing.Pool, {cpus} processes':34s}{peer['tasks_per_s']:8.1f}{peer['seconds']:9.3f}"
          f"{peer['task_s']:10.3f}{'':19s}{peer['median_task_ms']:11.1f}{peer['slowest_task_ms']:12.1f}")
    one, every = f["fresh"][1], f["fresh"][cpus]
    print(f"speed-up {cpus} CPUs / 1 CPU: {f['speedup_fresh']:.2f}x on a new Ray (target >= {SPEEDUP_TARGET}x on 2 "
          f"cores: {met[f['speedup_fresh'] >= SPEEDUP_TARGET]}), {f['speedup_warm']:.2f}x on warm workers")
    print(f"overhead per task on a new Ray: {one['overhead']:.1%} on 1 CPU, {every['overhead']:.1%} on {cpus} CPUs "
          f"(target < {OVERHEAD_TARGET:.0%}: {met[one['overhead'] < OVERHEAD_TARGET]} on 1 CPU, "
          f"{met[every['overhead'] < OVERHEAD_TARGET]} on {cpus}); on warm workers {f['warm'][1]['overhead']:.1%} "
          f"and {f['warm'][cpus]['overhead']:.1%}")
    print(f"first result on {cpus} CPUs: {f['first_result_s']:.3f} s after the task stage starts, "
          f"{f['start_to_first_s']:.2f} s after run_plan starts (Ray start, prepare and calibrate stages "
          f"included), {f['cli']['start_to_first_s']:.2f} s after `replay sweep` starts (the command: "
          f"{f['cli']['command_s']:.2f} s)")
    print(f"sweep on {cpus} CPUs over the for-loop: {f['over_loop_fresh']:.2f}x on a new Ray, {f['over_loop_warm']:.2f}x "
          f"on warm workers; over a multiprocessing.Pool of {cpus} warm processes (the peers' grid search): "
          f"{f['over_pool_warm']:.2f}x")


if __name__ == "__main__":
    main()
