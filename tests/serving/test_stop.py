"""Stopping `facefact serve` and `facefact worker` as an operator or a container runtime does: Ctrl-C
(SIGINT) or SIGTERM stops each within seconds and ends it with exit code 130 (docs/refusals.md), idle or busy; a
taken port is refused before any model loads."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from serve_helpers import REPO, SMALL, free_port, start_worker

pytestmark = pytest.mark.slow  # each process loads the tiny models: 10-40 s on a busy machine
# Issue 18's bound, from the signal until the process stops serving (its port refuses connections, the worker is
# gone from /health): a container runtime waits 10 s before SIGKILL. That stop waits on nothing; the exit after it
# is the interpreter's teardown, CPU work that a busy 2-core box (two pytest workers and more) stretches, so the
# exit is held to GONE_WITHIN_S, an upper bound on a hang (the bug this guards against waited 65 s on Redis).
STOPPED_WITHIN_S = 5
GONE_WITHIN_S = 30
INTERRUPTED = 130
# A prompt far over CLIP's 77 tokens, of words no log line has otherwise: diffusers and the pipeline both
# name the cut part, and docs/serving.md promises that no prompt reaches the server's log.
LONG_PROMPT = "a portrait of " + " ".join(["marmalade zeppelin quokka"] * 40)
PROMPT_WORDS = ("marmalade", "zeppelin", "quokka")


def long_prompt_job(url: str, photo: bytes, path: str = "/v1/jobs", **settings) -> httpx.Response:
    return httpx.post(url + path, files=[("photos", ("a.jpg", photo, "image/jpeg"))], timeout=120,
                      data={"settings": json.dumps({**SMALL, "prompt": LONG_PROMPT, **settings})})


def wait_until(condition, what: str, processes=(), limit_s: float = 600):
    """Poll `condition()` until true; `limit_s` only bounds a hang. A process that died fails at once."""
    deadline = time.monotonic() + limit_s
    while not condition():
        for process in processes:
            assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, f"{what} did not happen within {limit_s} s"
        time.sleep(0.2)


def stop(process: subprocess.Popen, signum: int, serving) -> tuple[int, float, str]:
    """Send `signum`; (exit code, its output: stdout and stderr) once the process is gone. Asserts that
    `serving()` turned false within STOPPED_WITHIN_S and that the process was gone within GONE_WITHIN_S."""
    started = time.monotonic()
    process.send_signal(signum)
    while process.poll() is None and serving() and time.monotonic() - started < STOPPED_WITHIN_S:
        time.sleep(0.05)
    stopped = time.monotonic() - started
    try:
        output, _ = process.communicate(timeout=GONE_WITHIN_S - stopped + 60)  # the 60 s only to report a hang
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    gone = time.monotonic() - started
    assert stopped < STOPPED_WITHIN_S, f"{signal.Signals(signum).name}: still serving after {stopped:.1f} s"
    assert gone < GONE_WITHIN_S, f"{signal.Signals(signum).name}: stopped serving, but gone only after {gone:.1f} s"
    return process.returncode, output


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def start_serve(port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "facefact.cli.main", "serve", "--model", "tiny", "--no-ui",
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_serve_keeps_prompts_out_of_its_log_and_stops_within_seconds(astronaut_bytes):
    ports = {signal.SIGTERM: free_port(), signal.SIGINT: free_port()}
    servers = {signum: start_serve(port) for signum, port in ports.items()}  # both load at once
    try:
        for signum, port in ports.items():
            wait_until(lambda: up(f"http://127.0.0.1:{port}"), "facefact serve starting", servers.values())
        answer = long_prompt_job(f"http://127.0.0.1:{ports[signal.SIGTERM]}", astronaut_bytes, path="/v1/generate")
        assert answer.status_code == 200, answer.text
        assert "quokka" in " ".join(answer.json()["notes"])  # the client is told which part was cut
        for signum, server in servers.items():
            code, err = stop(server, signum, serving=lambda: listening(ports[signum]))
            assert (code, signum.name) == (INTERRUPTED, signum.name), err
            assert "facefact serve: interrupted" in err and "Traceback" not in err
            assert not any(word in err for word in PROMPT_WORDS), err
    finally:
        for server in servers.values():
            server.kill() if server.poll() is None else None


def test_worker_stops_within_seconds_idle_or_busy_and_health_counts_live_workers(redis_url, checker,
                                                                                 astronaut_bytes):
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.redis_jobs import RedisJobs
    from serve_helpers import running_server

    names = ("idle-term", "busy-int")
    workers = {name: start_worker(redis_url, name, text=True) for name in names}
    jobs = RedisJobs(redis_url, queue_size=8, result_ttl_s=60)
    try:
        with running_server(create_app(jobs, checker, ServerConfig(ui=False))) as url:
            def workers_alive() -> int:
                return httpx.get(url + "/health").json()["workers"]
            wait_until(lambda: workers_alive() == 2, "two workers starting", workers.values())
            code, err = stop(workers.pop("idle-term"), signal.SIGTERM, serving=lambda: workers_alive() == 2)
            assert code == INTERRUPTED and "facefact worker: interrupted" in err, (code, err)
            assert "Traceback" not in err, err
            assert workers_alive() == 1  # a stopped worker is gone from /health at once
            job_id = long_prompt_job(url, astronaut_bytes, steps=150).json()["id"]
            wait_until(lambda: httpx.get(f"{url}/v1/jobs/{job_id}").json()["progress"]["step"] >= 1,
                       "the job starting", workers.values())
            # Ctrl-C mid-job
            code, err = stop(workers.pop("busy-int"), signal.SIGINT, serving=lambda: workers_alive() == 1)
            assert code == INTERRUPTED and "Traceback" not in err, (code, err)
            assert not any(word in err for word in PROMPT_WORDS), err
            status = jobs.wait(job_id, 30)
            assert status.state == "failed" and status.error.code == "worker_stopped", status
            assert status.progress.step < 150 and workers_alive() == 0
    finally:
        for worker in workers.values():
            worker.kill()
            worker.wait(30)
