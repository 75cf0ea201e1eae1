"""The numerical experiment of Avellaneda & Stoikov (2008), vectorised over paths with numpy.

Mid price: a ±σ√dt coin-flip walk from s0. Each step, each side of the quote is filled with probability
A·exp(−k·δ)·dt, δ being the quote's distance from the mid. The *inventory* strategy quotes around the
reservation price r = s − qγσ²(T−t); the *symmetric* strategy uses the same spread centred on the mid.

The paper's table does not follow from one reading of its formulas: its spread column is
(2/γ)·ln(1+γ/k) alone, while its quoting rule adds γσ²(T−t). `spread_convention` picks one:
``paper`` (spread = (2/γ)·ln(1+γ/k), as the table's column) or ``model`` (the full optimal spread
γσ²(T−t) + (2/γ)·ln(1+γ/k)). Nothing here is tuned to the paper's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONVENTIONS = ("paper", "model")


@dataclass(frozen=True)
class PaperSetup:
    s0: float = 100.0
    T: float = 1.0
    sigma: float = 2.0
    dt: float = 0.005
    A: float = 140.0
    k: float = 1.5

    def check(self, gamma: float) -> None:
        for name, value in (("gamma", gamma), ("k", self.k), ("A", self.A), ("sigma", self.sigma),
                            ("dt", self.dt), ("T", self.T)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")


def simulate(gamma: float, strategy: str, paths: int = 1000, seed: int = 1, setup: PaperSetup = PaperSetup(),
             spread_convention: str = "paper") -> dict:
    """One table row: mean spread, profit mean/std, final inventory mean/std over `paths` paths."""
    setup.check(gamma)
    if strategy not in ("inventory", "symmetric"):
        raise ValueError(f"strategy must be inventory or symmetric, got {strategy!r}")
    if spread_convention not in CONVENTIONS:
        raise ValueError(f"spread convention must be one of {CONVENTIONS}, got {spread_convention!r}")
    if paths < 1:
        raise ValueError(f"paths must be >= 1, got {paths}")
    rng = np.random.default_rng(seed)
    steps = round(setup.T / setup.dt)
    s = np.full(paths, setup.s0)
    q = np.zeros(paths)
    cash = np.zeros(paths)
    base = 2.0 / gamma * np.log1p(gamma / setup.k)
    spreads = np.empty(steps)
    for i in range(steps):
        tau = setup.T - i * setup.dt
        spread = base + (gamma * setup.sigma**2 * tau if spread_convention == "model" else 0.0)
        spreads[i] = spread
        centre = s - q * gamma * setup.sigma**2 * tau if strategy == "inventory" else s
        ask, bid = centre + spread / 2, centre - spread / 2
        p_ask = np.minimum(1.0, setup.A * np.exp(-setup.k * (ask - s)) * setup.dt)
        p_bid = np.minimum(1.0, setup.A * np.exp(-setup.k * (s - bid)) * setup.dt)
        sold = rng.random(paths) < p_ask
        bought = rng.random(paths) < p_bid
        q += bought.astype(float) - sold
        cash += np.where(sold, ask, 0.0) - np.where(bought, bid, 0.0)
        s += np.where(rng.random(paths) < 0.5, 1.0, -1.0) * setup.sigma * np.sqrt(setup.dt)
    profit = cash + q * s
    return {
        "gamma": gamma, "strategy": strategy, "spread": float(spreads.mean()),
        "profit_mean": float(profit.mean()), "profit_std": float(profit.std(ddof=1)) if paths > 1 else 0.0,
        "q_mean": float(q.mean()), "q_std": float(q.std(ddof=1)) if paths > 1 else 0.0,
        "paths": paths, "seed": seed, "spread_convention": spread_convention,
    }


def table(gammas: list[float], paths: int = 1000, seed: int = 1, spread_convention: str = "paper") -> list[dict]:
    return [simulate(g, strategy, paths, seed, spread_convention=spread_convention)
            for g in gammas for strategy in ("inventory", "symmetric")]
