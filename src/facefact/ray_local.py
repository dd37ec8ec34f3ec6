"""A private Ray instance on this machine (`--ray auto`, the tests' and the benchmark's clusters).

Ray is started in a child process of its own (a new session, so every Ray process it starts can be
stopped together), with the settings a command-line tool owes its user and nothing changed in the
calling process's environment:

- loopback only: `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` keeps every Ray listener on 127.0.0.1
  (without it Ray replaces 127.0.0.1 by the machine's address and listens on all interfaces);
- no usage reporting (`RAY_USAGE_STATS_ENABLED=0`), no dashboard;
- no token file in the home folder (`RAY_AUTH_MODE=disabled`: nothing but this machine can reach it);
- its own temporary folder, removed afterwards.

`nodes` > 1 starts several Ray nodes on this machine (ray.cluster_utils.Cluster), which is how the
tests get "a head and one more worker" without a second machine.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Iterator

from facefact.errors import ConfigError

PRIVATE_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_AUTH_MODE": "disabled"}
NODE_IP = "127.0.0.2"
START_TIMEOUT_S = 300.0  # an upper bound on a hang only: Ray starts in ~15 s on a busy 2-core box


class PrivateCluster:
    """A running private instance: `address` to pass to ray.init, `pid` of the holding process
    (every Ray process of the instance is its descendant)."""

    def __init__(self, process: subprocess.Popen, address: str, temp_dir: str):
        self.process, self.address, self.temp_dir = process, address, temp_dir

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def private_cluster(*, nodes: int = 1, cpus_per_node: int | None = None, env: dict | None = None) -> Iterator[str]:
    """Yield the address of a new private Ray instance; stop it (all its processes) afterwards."""
    with private_cluster_process(nodes=nodes, cpus_per_node=cpus_per_node, env=env) as cluster:
        yield cluster.address


@contextlib.contextmanager
def private_cluster_process(*, nodes: int = 1, cpus_per_node: int | None = None,
                            env: dict | None = None) -> Iterator[PrivateCluster]:
    temp_dir = tempfile.mkdtemp(prefix="facefact-ray-")
    spec = json.dumps({"nodes": nodes, "cpus_per_node": cpus_per_node, "temp_dir": temp_dir})
    errors = os.path.join(temp_dir, "holder.err")  # a file, not a pipe: Ray's chatter must never block it
    with open(errors, "w") as err_file:
        process = subprocess.Popen([sys.executable, "-m", "facefact.ray_local", spec], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=err_file, text=True, start_new_session=True,
                                   env={**os.environ, **(env or {}), **PRIVATE_ENV})
    try:
        address = _read_address(process, errors)
        yield PrivateCluster(process, address, temp_dir)
    finally:
        _stop(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _read_address(process: subprocess.Popen, errors: str) -> str:
    """The address line the child prints once Ray is up (or a ConfigError with its error)."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    text = line[0].strip() if line else ""
    if not text.startswith("address "):
        _stop(process)
        with open(errors, errors="replace") as fh:
            error = fh.read().strip().splitlines()
        raise ConfigError(f"could not start a local Ray instance: {error[-1] if error else 'no answer'}",
                          hint="check that `python -c 'import ray; ray.init()'` works here, or start a cluster "
                               "with `ray start --head` and pass its address to --ray", setting="ray")
    return text.split(" ", 1)[1]


def _stop(process: subprocess.Popen) -> None:
    """Ask the holder to shut Ray down (close its stdin), then end whatever is left of its session."""
    with contextlib.suppress(OSError, ValueError):
        process.stdin.close()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # its own session: only Ray processes it started
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    with contextlib.suppress(OSError, ValueError):
        process.stdout.close()


def _hold(spec: dict) -> None:
    """In the child: start the nodes, print the address, wait for stdin to close, stop them."""
    from ray.cluster_utils import Cluster

    head = {"include_dashboard": False, "temp_dir": spec["temp_dir"], "node_ip_address": NODE_IP}
    if spec["cpus_per_node"] is not None:
        head["num_cpus"] = spec["cpus_per_node"]
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        for _ in range(spec["nodes"] - 1):
            cluster.add_node(node_ip_address=NODE_IP,
                             **({"num_cpus": spec["cpus_per_node"]} if spec["cpus_per_node"] is not None else {}))
        cluster.wait_for_nodes()
        print(f"address {cluster.address}", flush=True)
        sys.stdin.read()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    _hold(json.loads(sys.argv[1]))
