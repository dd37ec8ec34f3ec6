"""Helpers the server tests import (a uniquely named module: `from conftest import ...` picks up
whichever folder's conftest was imported first when several test folders run together)."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMALL = {"prompt": "a portrait", "steps": 2, "width": 64, "height": 64, "guidance": 5.0}


def close_jobs(jobs) -> None:
    """Cancel a test's jobs and wait until none runs: the next test shares the engine (its pipeline and
    face analysis), which must never run two jobs at once."""
    assert jobs.close(), "a job still runs on the shared engine after 60 s"


def free_port() -> int:
    """A port free a moment ago, for a child process to listen on. Another process may take it first (pytest-xdist
    runs tests in parallel): a child that cannot listen exits, and the test fails instead of talking to a stranger."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app):
    """`app` served by uvicorn on 127.0.0.1 in a thread; yields the base URL."""
    import uvicorn

    listening = socket.socket()  # bound here and handed over: no other process can take the port in between
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        listening.close()


def start_worker(url: str, name: str, text: bool = False, model: str = "tiny") -> subprocess.Popen:
    """`facefact worker --model MODEL` on the Redis at `url`; its stdout and stderr in one pipe (.stdout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "facefact.cli.main", "worker", "--redis", url, "--model", model,
                             "--name", name], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=text)
