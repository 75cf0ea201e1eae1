"""Fixtures shared across test modules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass
class RayCluster:
    address: str
    env: dict[str, str]  # what a process needs to join it (the cluster's auth token)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> Iterator[RayCluster]:
    """One local Ray (a head node with 2 CPUs) for the whole test session, ended by its process id; the sweep
    tests run `replay sweep --address` against it, so none of them starts a Ray of its own."""
    from tests.ray_nodes import Node, token_env, wait_for_nodes

    directory = tmp_path_factory.mktemp("ray")
    env = token_env(directory)
    head = Node(env, directory / "head.log", cpus=2)
    try:
        wait_for_nodes(head.address, 1, env, [head])
        yield RayCluster(head.address, env)
    finally:
        head.stop()
