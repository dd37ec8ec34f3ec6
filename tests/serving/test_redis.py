"""Scale-out: a stateless API over Redis and two `facefact worker` processes (RQ SimpleWorker, JSON)."""
from __future__ import annotations

import io
import json
import time

import httpx
import numpy as np
import pytest
from serve_helpers import SMALL, running_server, start_worker
from PIL import Image

pytest.importorskip("rq")
pytestmark = pytest.mark.slow  # worker processes start in 10-40 s on a busy machine


@pytest.fixture(scope="module")
def workers(redis_url):
    """Two `facefact worker` processes ("gpu-a", "gpu-b") on the module's Redis."""
    from facefact.serving.redis_jobs import RedisJobs

    started = {name: start_worker(redis_url, name) for name in ("gpu-a", "gpu-b")}
    probe = RedisJobs(redis_url)
    deadline = time.monotonic() + 600  # only bounds a hang: each start loads torch and the models
    while probe.workers < 2:
        for process in started.values():
            assert process.poll() is None, process.stdout.read().decode()[-2000:]
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.2)
    yield started
    for process in started.values():
        process.terminate()
    for process in started.values():
        process.wait(20)


def submit(url, photo: bytes, settings: dict) -> str:
    answer = httpx.post(url + "/v1/jobs", files=[("photos", ("a.jpg", photo, "image/jpeg"))],
                        data={"settings": json.dumps(settings)})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def test_two_workers_share_the_queue_and_match_the_local_path(redis_url, workers, checker, engine, astronaut_bytes):
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.redis_jobs import RedisJobs

    jobs = RedisJobs(redis_url, queue_size=8, result_ttl_s=60)
    with running_server(create_app(jobs, checker, ServerConfig(ui=False))) as url:
        assert httpx.get(url + "/health").json()["workers"] == 2
        seeds = [21, 22, 23, 24, 25, 26]
        ids = [submit(url, astronaut_bytes, {**SMALL, "seed": seed, "steps": 6}) for seed in seeds]
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
    with running_server(create_app(jobs, checker, ServerConfig(ui=True, queue_size=1))) as url:
        assert httpx.get(url + "/ui/").status_code == 200  # the UI runs on the shared queue too
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
        # template jobs run in the single-process server only: a clear 501, nothing queued
        template = httpx.post(url + "/v1/template/jobs", data={"settings": "{}"},
                              files=[("template", ("t.jpg", astronaut_bytes, "image/jpeg")),
                                     ("photos", ("a.jpg", astronaut_bytes, "image/jpeg"))])
        assert template.status_code == 501 and template.json()["error"]["code"] == "not_supported"
        assert "without --redis" in template.json()["error"]["hint"]
        faces = httpx.post(url + "/v1/template/faces", files=[("template", ("t.jpg", astronaut_bytes, "image/jpeg"))])
        assert faces.status_code == 200 and len(faces.json()["faces"]) == 1  # face finding needs no worker


def test_cancel_a_running_job_over_redis(redis_url, workers, checker, astronaut_bytes):
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.redis_jobs import RedisJobs

    jobs = RedisJobs(redis_url, queue_size=8, result_ttl_s=60)
    with running_server(create_app(jobs, checker, ServerConfig(ui=False))) as url:
        job_id = submit(url, astronaut_bytes, {**SMALL, "steps": 150})
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/v1/jobs/{job_id}").json()["progress"]["step"] < 1:
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.05)
        assert httpx.delete(f"{url}/v1/jobs/{job_id}").status_code == 200
        status = jobs.wait(job_id, 30)
        assert status.state == "cancelled" and status.progress.step < 150 and status.error.code == "cancelled"
        assert httpx.get(f"{url}/v1/jobs/{job_id}/images/0.png").status_code == 404


def test_a_killed_worker_fails_its_job_and_the_other_finishes_the_rest(redis_url, workers, checker, astronaut_bytes):
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.redis_jobs import RedisJobs

    jobs = RedisJobs(redis_url, queue_size=8, result_ttl_s=60)
    with running_server(create_app(jobs, checker, ServerConfig(ui=False))) as url:
        long_job = submit(url, astronaut_bytes, {**SMALL, "steps": 150})
        deadline = time.monotonic() + 60
        while (runner := jobs.redis.get(f"facefact:alive:{long_job}")) is None:
            assert time.monotonic() < deadline, "the long job did not start"
            time.sleep(0.05)
        workers[runner.decode()].kill()  # SIGKILL mid-job: no chance to clean up
        others = [submit(url, astronaut_bytes, {**SMALL, "seed": seed}) for seed in (1, 2)]
        lost = jobs.wait(long_job, 60)  # within the worker's 10 s heartbeat; 60 only bounds a hang
        assert lost.state == "failed" and lost.error.code == "worker_lost", lost
        deadline = time.monotonic() + 60
        while (health := httpx.get(url + "/health").json())["workers"] != 1:  # RQ still lists the dead one
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        finished = [jobs.wait(job_id, 60) for job_id in others]
        assert [s.state for s in finished] == ["succeeded", "succeeded"]
        assert {s.worker for s in finished} == {"gpu-a", "gpu-b"} - {runner.decode()}
