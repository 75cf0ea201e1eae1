"""The Avellaneda-Stoikov paper's simulation: formulas, determinism, stability, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from replay.montecarlo import simulate, table


def test_spread_conventions_match_the_formulas():
    g, k, sigma, dt = 0.1, 1.5, 2.0, 0.005
    paper = simulate(g, "inventory", paths=10)["spread"]
    assert paper == pytest.approx(2 / g * math.log(1 + g / k))
    model = simulate(g, "inventory", paths=10, spread_convention="model")["spread"]
    mean_tau = sum(1.0 - i * dt for i in range(200)) / 200  # T - t over the steps, averaged
    assert model == pytest.approx(2 / g * math.log(1 + g / k) + g * sigma**2 * mean_tau)


def test_deterministic_for_a_seed_and_rows_have_the_documented_keys():
    assert simulate(0.1, "inventory", 200, seed=3) == simulate(0.1, "inventory", 200, seed=3)
    rows = table([0.1], paths=50, seed=2)
    assert [r["strategy"] for r in rows] == ["inventory", "symmetric"]
    assert set(rows[0]) >= {"gamma", "strategy", "spread", "profit_mean", "profit_std", "q_mean", "q_std",
                            "paths", "seed"}


def test_statistics_are_stable_across_seeds_within_their_standard_errors():
    a = simulate(0.1, "inventory", 1000, seed=1)
    b = simulate(0.1, "inventory", 1000, seed=2)
    se = math.hypot(a["profit_std"], b["profit_std"]) / math.sqrt(1000)
    assert abs(a["profit_mean"] - b["profit_mean"]) < 4 * se
    se_q = math.hypot(a["q_std"], b["q_std"]) / math.sqrt(1000)
    assert abs(a["q_mean"] - b["q_mean"]) < 4 * se_q


def test_inventory_strategy_trades_profit_for_much_less_risk():
    inv, sym = table([0.1], paths=1000, seed=1)
    assert inv["q_std"] < sym["q_std"] / 2 and inv["profit_std"] < sym["profit_std"] / 2


def test_cli_table_json_and_bad_parameters(tmp_path):
    out = tmp_path / "mc.json"
    ok = subprocess.run([sys.executable, "-m", "replay.cli", "montecarlo", "--gamma", "0.1", "--paths", "100",
                         "--json", str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and "inventory" in ok.stdout
    assert len(json.loads(out.read_text())) == 2
    for args, word in ((["--gamma", "0"], "gamma"), (["--spread-convention", "x"], "spread convention"),
                       (["--paths", "0"], "paths")):
        bad = subprocess.run([sys.executable, "-m", "replay.cli", "montecarlo", *args], capture_output=True,
                             text=True, timeout=60, check=False)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1 and word in lines[0]
