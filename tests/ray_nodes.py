"""Ray nodes started by the tests themselves on 127.0.0.1, and ended by their process ids.

`ray start --block` keeps a node in the foreground, so terminating that process ends the node and everything
it started; nothing is left for `ray stop` (which would also stop someone else's Ray). The cluster uses its own
auth token (Ray 2.5x turns token authentication on by default), written into the test's directory and given to
every process through the environment.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token_env(directory: Path) -> dict[str, str]:
    """The environment of a token-authenticated test cluster (a new token in `directory`)."""
    path = directory / "ray-token"
    path.write_text(secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}


class Node:
    """One `ray start --block` process: the head (no address) or a worker joining `address`."""

    def __init__(self, env: dict[str, str], log: Path, cpus: int, address: str | None = None) -> None:
        self.port = free_port() if address is None else None
        self.address = address or f"127.0.0.1:{self.port}"
        command = [RAY, "start", "--block", f"--num-cpus={cpus}", "--node-ip-address=127.0.0.1",
                   "--disable-usage-stats"]
        self.client_port = free_port() if address is None else None  # Ray Client: ray://127.0.0.1:PORT
        command += [f"--address={address}"] if address else ["--head", f"--port={self.port}",
                                                             f"--ray-client-server-port={self.client_port}",
                                                             "--include-dashboard=false"]
        self.log = log
        self.process = subprocess.Popen(command, env={**os.environ, **env}, stdout=log.open("wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        """SIGTERM to the node's `ray start`, which ends its raylet, workers (and, on the head, the GCS)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=10)


def live_nodes(address: str, env: dict[str, str], timeout: float) -> int | None:
    """The live nodes of the cluster at `address` as a short-lived driver in a new process sees them (None: it
    could not connect yet). A new process because Ray reads the auth mode from the environment once per process,
    when it is imported: this one's may predate the cluster's token, or belong to another test's Ray."""
    count = ("import sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
             "print(sum(1 for n in ray.nodes() if n.get('Alive')))")
    try:
        result = subprocess.run([sys.executable, "-c", count, address], env={**os.environ, **env},
                                capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    return int(result.stdout) if result.returncode == 0 else None


def wait_for_nodes(address: str, count: int, env: dict[str, str], nodes: list[Node]) -> None:
    """Until the cluster at `address` has `count` live nodes (a bounded poll)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for node in nodes:
            if node.process.poll() is not None:
                raise RuntimeError(f"ray node exited: {node.log.read_text()[-2000:]}")
        alive = live_nodes(address, env, max(1.0, deadline - time.monotonic()))
        if alive is not None and alive >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {count} nodes in {START_TIMEOUT_S} s")
