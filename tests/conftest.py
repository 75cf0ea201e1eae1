"""Fixtures shared across test modules."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_SESSION_RAY_ENV: dict[str, str] = {}


def pytest_configure(config) -> None:  # type: ignore[no-untyped-def]
    """The session Ray's auth token, in this process's environment before any test imports Ray (Ray reads it
    once, at import): tests can then join the session's Ray in-process too."""
    from tests.ray_nodes import token_env

    _SESSION_RAY_ENV.update(token_env(Path(tempfile.mkdtemp(prefix="ray-token-"))))
    os.environ.update(_SESSION_RAY_ENV)


def pytest_unconfigure(config) -> None:  # type: ignore[no-untyped-def]
    import shutil

    if _SESSION_RAY_ENV:
        shutil.rmtree(Path(_SESSION_RAY_ENV["RAY_AUTH_TOKEN_PATH"]).parent, ignore_errors=True)


@dataclass
class RayCluster:
    address: str
    env: dict[str, str]  # what a process needs to join it (the cluster's auth token)
    client_address: str  # the same cluster through Ray Client (ray://)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> Iterator[RayCluster]:
    """One local Ray (a head node with 2 CPUs) for the whole test session, ended by its process id; the sweep
    tests run `replay sweep --address` against it, so none of them starts a Ray of its own."""
    import subprocess
    import sys

    from tests.ray_nodes import Node, wait_for_nodes

    # the numba kernel compiled (or loaded) once here, into its on-disk cache: the workers of every sweep load it
    # instead of compiling it side by side on a fresh checkout
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", "from replay.sim.fast import load_kernel; load_kernel()"],
                   capture_output=True, cwd=root, timeout=600, check=True, env={**os.environ, "PYTHONPATH": str(root)})
    directory = tmp_path_factory.mktemp("ray")
    env = dict(_SESSION_RAY_ENV)
    head = Node(env, directory / "head.log", cpus=2)
    try:
        wait_for_nodes(head.address, 1, env, [head])
        yield RayCluster(head.address, env, f"ray://127.0.0.1:{head.client_port}")
    finally:
        head.stop()
