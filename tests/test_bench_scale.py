"""The scale benchmark (benchmarks/bench_scale.py) on a tiny synthetic day: fresh-process runs, its table,
a missing day skipped in one line, bad arguments refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from longday import make_long_day


def run_bench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(BENCHMARKS.parent)}
    return subprocess.run([sys.executable, str(BENCHMARKS / "bench_scale.py"), *args], capture_output=True,
                          text=True, env=env, check=False, timeout=300)


def test_measures_a_day_and_skips_a_missing_one(tmp_path: Path) -> None:
    root, _ = make_long_day(tmp_path / "messages_0.02h", 0.02, rate="messages")
    done = run_bench("--hours", "0.02,0.03", "--rate", "messages", "--data", str(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("0.03 h: ") and "skipped" in line for line in lines)
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["hours", "rows"])
    row = lines[header + 1].split()
    assert row[0] == "0.02" and len(lines[header + 2].split()) != len(row)  # one day measured
    rows, cold_rate, warm_rate = (int(row[i].replace(",", "")) for i in (1, 3, 5))
    assert rows > 1000 and cold_rate > 0 and warm_rate > 0
    assert any(line.startswith("peak RSS") and "under 1 GiB" in line for line in lines)
    assert (root / "prepared").is_dir()  # the cold run built the prepared day there


def test_nothing_to_measure_and_bad_hours(tmp_path: Path) -> None:
    assert run_bench("--hours", "1", "--data", str(tmp_path)).returncode == 1
    bad = run_bench("--hours", "1,x")
    assert bad.returncode == 2 and "hours must be comma-separated numbers" in bad.stderr
