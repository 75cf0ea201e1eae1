"""Parameter sweeps over many (day, symbol, parameter set) backtests, on Ray: `replay sweep`.

`space` (grids, ranges, tasks), `task` (one backtest as a result row), `store` (results per task, resume,
the tables) and `leaderboard` (HTML) know nothing of Ray; `cluster` (the task stages) and `search`
(Optuna through Ray Tune) run them on a local Ray or a cluster.
"""
