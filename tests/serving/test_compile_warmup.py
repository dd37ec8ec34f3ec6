"""`serve --compile`: the compiled UNet is warmed up before the first job, /health says ready only then,
and jobs of any scale, person and batch size up to --max-batch compile nothing more (issue 20).
Compiled with backend "eager": dynamo's capture and guards, which decide recompiles, without C++."""
from __future__ import annotations

import time

import pytest
import torch
from torch._dynamo.utils import counters

from serve_helpers import close_jobs

pytestmark = pytest.mark.slow  # dynamo traces the tiny UNet (~1 min per graph on a busy 2-core box)
WAIT_S = 900  # an upper bound on a hang, never a timing


def job(photo: bytes, **settings):
    from facefact.serving.jobs import JobInput
    from facefact.serving.schemas import GenerateSettings

    return JobInput(photos=[photo], settings=GenerateSettings(**{"prompt": "a portrait", "steps": 2, **settings}))


def test_a_compiled_engine_is_warm_before_its_first_job(checker, astronaut_bytes, grace_hopper_path):
    from fastapi.testclient import TestClient

    from facefact.pipelines import FACTStableDiffusionPipeline
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.engine import Engine
    from facefact.serving.jobs import LocalJobs

    torch._dynamo.reset()
    engine = Engine(FACTStableDiffusionPipeline.tiny(seed=0))
    engine.compile_unet(batch_sizes=(1, 2), backend="eager")
    with open(grace_hopper_path, "rb") as f:
        hopper = f.read()
    engine._busy.acquire()  # the warm-up waits for it: /health is seen before it can finish
    held = True
    jobs = LocalJobs([engine], max_batch=2)
    try:
        client = TestClient(create_app(jobs, checker, ServerConfig(ui=False)))
        warming = client.get("/health")
        assert warming.status_code == 503 and warming.json()["status"] == "warming_up" and not warming.json()["ready"]
        engine._busy.release()
        held = False
        deadline = time.monotonic() + WAIT_S
        while not jobs.ready and time.monotonic() < deadline:
            time.sleep(0.5)
        ready = client.get("/health")
        assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["status"] == "ok"
        graphs = counters["stats"]["unique_graphs"]
        assert graphs == 4  # batch 1 and 2 (dynamic batch from then on), each with FACT acting and with none (scale 0)
        with torch._dynamo.config.patch(error_on_recompile=True):
            jobs.pause()  # two people queued together: one UNet batch of 2
            ids = [jobs.submit(job(astronaut_bytes, fact_scale=0.8, seed=1)),
                   jobs.submit(job(hopper, fact_scale=0.8, seed=2))]
            jobs.resume()
            ids.append(jobs.submit(job(hopper, fact_scale=0.3, fact_window=(0.5, 1.0), seed=3)))
            statuses = [jobs.wait(one, WAIT_S) for one in ids]
        assert [s.state for s in statuses] == ["succeeded"] * 3, [s.error for s in statuses]
        assert counters["stats"]["unique_graphs"] == graphs
    finally:
        if held:
            engine._busy.release()
        close_jobs(jobs)
        torch._dynamo.reset()
