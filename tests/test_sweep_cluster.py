"""`replay sweep` on a Ray cluster (issue 13): two nodes give the rows one node gives, a task whose worker is
killed is retried (or, out of retries, recorded as failed while the others succeed), and Ctrl-C keeps what
finished for `--resume`. The test strategies are a user strategy file that misbehaves as its options say."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray  # noqa: F401 - in the dev lock: without it this module fails rather than skips

from replay.sweep.results import RUN_DEPENDENT
from tests.ray_nodes import Node, token_env, wait_for_nodes
from tests.synthetic_day import record_day, recorded_date
from tests.synthetic_days import copy_day
from tests.test_first_hour import ROOT, run

pytestmark = pytest.mark.xdist_group("ray")

SYMBOL = "BTCUSDT"
SWEEP_TIMEOUT_S = 120

STRATEGIES = '''
"""Quoters for the sweep tests: each quotes like a built-in and does one more thing its options ask for."""

import datetime as dt
import os
import signal
import time
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import ray

from replay.sim.strategies import AvellanedaStoikov, JoinTouch


def kill_own_worker():
    os.kill(os.getpid(), signal.SIGKILL)


class Placed(AvellanedaStoikov):
    """A-S quotes; each task writes the id of the Ray node it runs on into a new file in `where`, and holds its
    node's only CPU for a moment, so a node still starting its worker (under a loaded test machine) cannot be
    left out by the other node finishing every ~30 ms task first."""

    def __init__(self, params, where):
        super().__init__(params)
        (Path(where) / uuid.uuid4().hex).write_text(ray.get_runtime_context().get_node_id())
        time.sleep(0.5)


class CrashOnce(JoinTouch):
    """The first quote of the whole sweep (the one that creates `marker`) kills its worker."""

    def __init__(self, params, marker):
        self.marker = marker
        self.asked = False

    def quote(self, state):
        if not self.asked:
            self.asked = True
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                kill_own_worker()
        return super().quote(state)


class CrashOnDay(JoinTouch):
    """Kills its worker on every quote of the Berlin date `day`."""

    def __init__(self, params, day):
        self.day = day

    def quote(self, state):
        if dt.datetime.fromtimestamp(state.ts / 1e9, ZoneInfo("Europe/Berlin")).date().isoformat() == self.day:
            kill_own_worker()
        return super().quote(state)


class Slow(JoinTouch):
    """Sleeps `seconds` on each of its first `calls` quotes: a task that takes a while."""

    def __init__(self, params, seconds, calls):
        self.seconds = seconds
        self.calls = calls

    def quote(self, state):
        if self.calls > 0:
            self.calls -= 1
            time.sleep(self.seconds)
        return super().quote(state)
'''


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[str], Path]:
    """6 s of BTCUSDT on spot (day D) and its copy on D−1; the test strategies' file."""
    base = tmp_path_factory.mktemp("cluster")
    root = base / "data"
    assert record_day(root, "spot", [SYMBOL], 6.0) == 0
    today = recorded_date(root)
    strategies = base / "sweep_test_strategies.py"
    strategies.write_text(STRATEGIES)
    return root, [copy_day(root, "binance-spot", today, -1), today], strategies


def sweep(data: Path, address: str, env: dict[str, str], *args: str, out: Path) -> subprocess.CompletedProcess:
    return run("replay", "sweep", "--data", str(data), "--address", address, "--no-progress", "--out", str(out),
               *args, env=env)


def user_strategy(strategies: Path, name: str, **options) -> list[str]:
    return ["--strategy", f"{strategies}:{name}", "--param", f"strategy_options={json.dumps(options)}"]


def rows(out: Path) -> list[dict]:
    return pq.read_table(out / "results.parquet").to_pylist()


def without_run_figures(found: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in RUN_DEPENDENT} for r in found]


def test_two_nodes_run_the_tasks_and_give_the_rows_one_node_gives(dataset, ray_cluster, tmp_path):
    data, days, strategies = dataset
    where = tmp_path / "where"
    where.mkdir()
    gammas = [0.01, 0.05, 0.2, 1.0]
    args = ["--date", f"{days[0]}..{days[1]}", "--grid", f"gamma={','.join(map(str, gammas))}",
            *user_strategy(strategies, "Placed", where=str(where))]
    env = token_env(tmp_path)
    nodes = [Node(env, tmp_path / "head.log", cpus=1)]
    try:
        nodes.append(Node(env, tmp_path / "node.log", cpus=1, address=nodes[0].address))
        wait_for_nodes(nodes[0].address, 2, env, nodes)
        two = sweep(data, nodes[0].address, env, *args, out=tmp_path / "two")
    finally:
        for node in reversed(nodes):  # the head last
            node.stop()
    assert two.returncode == 0, two.stderr
    assert "Ray: 2 nodes, 2 CPUs" in two.stderr
    placed = [path.read_text() for path in where.iterdir()]
    assert len(placed) == len(gammas) * len(days) and len(set(placed)) == 2  # every task, on both nodes
    found = rows(tmp_path / "two")
    assert sorted((r["p.gamma"], r["day"]) for r in found) == sorted((g, d) for g in gammas for d in days)
    assert all(r["error"] is None and r["rows"] > 0 for r in found)

    one = sweep(data, ray_cluster.address, ray_cluster.env, *args, out=tmp_path / "one")
    assert one.returncode == 0, one.stderr
    assert "Ray: 1 node, 2 CPUs" in one.stderr
    assert without_run_figures(rows(tmp_path / "one")) == without_run_figures(found)


def test_a_task_whose_worker_is_killed_runs_again(dataset, ray_cluster, tmp_path):
    data, days, strategies = dataset
    marker = tmp_path / "killed-once"
    done = sweep(data, ray_cluster.address, ray_cluster.env, "--date", f"{days[0]}..{days[1]}",
                 "--grid", "gamma=0.05,0.5", *user_strategy(strategies, "CrashOnce", marker=str(marker)),
                 out=tmp_path / "sweep")
    assert done.returncode == 0, done.stderr
    assert marker.exists()  # a worker was killed
    found = rows(tmp_path / "sweep")
    assert len(found) == 4 and len({r["task_id"] for r in found}) == 4
    assert all(r["error"] is None and r["rows"] > 0 for r in found)


def test_out_of_retries_a_killed_task_is_a_failed_row_and_the_rest_succeed(dataset, ray_cluster, tmp_path):
    data, days, strategies = dataset
    crash_day, good_day = days[1], days[0]
    done = sweep(data, ray_cluster.address, ray_cluster.env, "--date", f"{days[0]}..{days[1]}", "--retries", "0",
                 "--grid", "gamma=0.05,0.5", *user_strategy(strategies, "CrashOnDay", day=crash_day),
                 out=tmp_path / "sweep")
    assert done.returncode == 1, done.stderr
    by_day: dict[str, list[dict]] = {}
    for row in rows(tmp_path / "sweep"):
        by_day.setdefault(row["day"], []).append(row)
    assert sorted(by_day) == sorted(days) and all(len(found) == 2 for found in by_day.values())
    assert all(r["error"] is None and r["rows"] > 0 for r in by_day[good_day])
    assert all(r["error"].startswith("WorkerCrashedError after 1 attempts") for r in by_day[crash_day]), by_day
    assert "failed: " in done.stdout and "WorkerCrashedError" in done.stdout


def test_ctrl_c_keeps_the_finished_tasks_and_resume_runs_the_rest(dataset, ray_cluster, tmp_path):
    data, days, strategies = dataset
    out = tmp_path / "sweep"
    gammas = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]  # 12 tasks of >= 1 s on 2 CPUs: >= 6 s
    args = ["--data", str(data), "--address", ray_cluster.address, "--no-progress", "--out", str(out),
            "--date", f"{days[0]}..{days[1]}", "--grid", f"gamma={','.join(map(str, gammas))}",
            *user_strategy(strategies, "Slow", seconds=0.2, calls=5)]
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **ray_cluster.env}
    environ.pop("CONFIG_PATH", None)
    # its own session, as a terminal's foreground job: Ctrl-C is SIGINT to the whole process group
    sweeping = subprocess.Popen([sys.executable, "-m", "replay.cli", "sweep", *args], cwd=ROOT, env=environ,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + SWEEP_TIMEOUT_S
        while not any((out / "tasks").glob("*.json")) and sweeping.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sweeping.poll() is None, sweeping.communicate()
        os.killpg(sweeping.pid, signal.SIGINT)
        stdout, stderr = sweeping.communicate(timeout=60)
    finally:
        if sweeping.poll() is None:
            os.killpg(sweeping.pid, signal.SIGKILL)
            sweeping.wait()
    assert sweeping.returncode == 130, stderr
    assert (out / "leaderboard.html").exists() and (out / "sets.parquet").exists()
    interrupted = rows(out)
    assert 1 <= len(interrupted) < len(gammas) * len(days), stdout
    assert all(r["error"] is None for r in interrupted)
    assert f"{len(interrupted)} task results: ran {len(interrupted)} now (0 done before), 0 failed" in stdout
    assert "interrupted: the tables hold the tasks that finished; the same command with --resume runs the rest" in stdout

    resumed = run("replay", "sweep", *args, "--resume", env=ray_cluster.env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"ran {len(gammas) * len(days) - len(interrupted)} now ({len(interrupted)} done before)" in resumed.stdout
    found = {r["task_id"]: r for r in rows(out)}
    assert sorted((r["p.gamma"], r["day"]) for r in found.values()) == sorted((g, d) for g in gammas for d in days)
    assert all(r["error"] is None for r in found.values())
    assert [found[r["task_id"]] for r in interrupted] == interrupted  # kept as they were, runtime_s too
