"""Ray for the sweep: connect (a local instance by default, a cluster by address) and run a stage of work.

A stage submits one Ray task per item, at most a few per CPU of the cluster at a time, and hands every
result back as it arrives, so rows are written while the rest runs. A task whose worker process dies (killed,
out of memory, node lost) is retried by Ray up to `retries` times; after that its failure is handed back
like any result and the sweep records it: no item of a stage is ever silently missing. Ctrl-C cancels what
is still running; what finished stays handed back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

INSTALL_HINT = "replay sweep needs Ray: pip install 'avellaneda-mm[sweep]' (or: pip install 'ray[tune]' optuna)"
CLIENT_ATTEMPTS = 3  # connections to a Ray Client server (ray://)
IN_FLIGHT_PER_CPU = 4  # submitted ahead per CPU: workers never wait, memory stays bounded on huge sweeps
# A shared argument smaller than this travels inside each task, as Ray inlines small arguments (its
# max_direct_call_object_size); a bigger one is put in the object store once. An object-store argument costs
# every task a fetch from the store: about 0.3 ms, 1 % of a 30 ms task (benchmarks/bench_sweep.py).
INLINE_BYTES = 100 * 1024


_started = False  # whether `connect` started or joined Ray in this process


class RayUnavailable(RuntimeError):
    """Ray could not be started or reached (a wrong address, no auth token, a cluster that is down)."""


class RayMissing(RuntimeError):
    """Ray is not installed."""


def ray_module():  # type: ignore[no-untyped-def]
    try:
        import ray
    except ImportError:
        raise RayMissing(INSTALL_HINT) from None
    return ray


def connect(address: str | None = None, cpus: int | None = None) -> str:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local Ray with one worker per core
    (`cpus` to use fewer); a Ray already started in this process is used as it is. Says where it runs."""
    global _started
    ray = ray_module()
    if not ray.is_initialized():
        _started = True
        # "local": a new instance, even when /tmp/ray names a cluster that was (or still is) running here
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False,
                                   "configure_logging": True}
        if address == "local":
            options.update(num_cpus=cpus, include_dashboard=False)
        # every worker of this job loads the numba kernel as it starts (~0.3 s after numba's import), while the
        # prepare and calibrate stages run, not inside its first backtest
        options["runtime_env"] = {"worker_process_setup_hook": "replay.sweep.cluster.load_kernel"}
        # Ray Client's server starts a process per driver, and that start sometimes fails at once ("Initialization
        # failure from server": seen about one connection in three on a loaded 2-core machine): try again
        attempts = CLIENT_ATTEMPTS if address.startswith("ray://") else 1
        for attempt in range(1, attempts + 1):
            try:
                ray.init(address=address, **options)
                break
            except Exception as exc:  # noqa: BLE001 - a refused connection, a timeout, no token: one line
                if attempt < attempts and "Initialization failure" in str(exc):
                    time.sleep(1.0)
                    continue
                _started = False
                where = "a local Ray" if address == "local" else f"the Ray cluster at {address}"
                raise RayUnavailable(f"cannot start or reach {where}: {str(exc).strip().splitlines()[0]}") from None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus_total = int(ray.cluster_resources().get("CPU", 0))
    return f"Ray: {len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus_total} CPUs"


def load_kernel() -> None:
    """A worker's setup hook: the kernel loaded up front. A failure here only costs the first task the load."""
    from replay.sim.fast import load_kernel as load

    try:
        load()
    except Exception:  # the task will load (and report) it again
        logging.getLogger(__name__).warning("could not load the simulation kernel at worker start", exc_info=True)


def disconnect() -> None:
    """Leave Ray if `connect` joined or started it (a Ray the caller started stays up)."""
    global _started
    if _started:
        ray_module().shutdown()
        _started = False


def cluster_cpus() -> int:
    return max(1, int(ray_module().cluster_resources().get("CPU", 1)))


class Stage:
    """One kind of work over many items on Ray: `run` submits, waits, and calls `on_result(item, value)` per
    item as it finishes. `value` is what the function returned, or the `RayError` of a task Ray gave up on."""

    def __init__(self, function: Callable, retries: int, shared: tuple = ()) -> None:
        ray = ray_module()
        self.ray = ray
        self.remote = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=False)(function)
        self.shared = tuple(value if len(ray.cloudpickle.dumps(value)) < INLINE_BYTES else ray.put(value)
                            for value in shared)
        self.pending: dict[Any, Any] = {}

    @property
    def running(self) -> int:
        return len(self.pending)

    def run(self, items: Iterable[tuple], on_result: Callable[[tuple, Any], None],
            on_tick: Callable[[], None] | None = None) -> None:
        ray = self.ray
        queue = iter(items)
        limit = IN_FLIGHT_PER_CPU * cluster_cpus()
        try:
            self._fill(queue, limit)
            while self.pending:
                done, _ = ray.wait(list(self.pending), num_returns=1, timeout=0.5)
                for ref in done:
                    item = self.pending.pop(ref)
                    try:
                        value = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        value = exc
                    on_result(item, value)
                self._fill(queue, limit)
                if on_tick is not None:
                    on_tick()
        except BaseException:
            self.cancel()
            raise

    def _fill(self, queue, limit: int) -> None:  # type: ignore[no-untyped-def]
        while len(self.pending) < limit:
            item = next(queue, None)
            if item is None:
                return
            self.pending[self.remote.remote(*self.shared, *item)] = item

    def cancel(self) -> None:
        """Stop every task still queued or running (Ctrl-C), without waiting for their results."""
        for ref in self.pending:
            with contextlib.suppress(Exception):  # a task that finished meanwhile cannot be cancelled
                self.ray.cancel(ref, force=True)
        self.pending.clear()


def lost_worker_text(exc: BaseException, retries: int) -> str:
    """The row's error for a task Ray gave up on (its worker died on every attempt)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__} after {retries + 1} attempts: {first[:300]}"


class Clock:
    """Seconds since the stage began, for the ETA and the time to the first result."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def mark(self) -> None:
        if self.first is None:
            self.first = self.elapsed()
