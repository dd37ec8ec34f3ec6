"""The in-process queue and the UI's result files on their own: memory and disk stay bounded."""
from __future__ import annotations

import time

import pytest

from serve_helpers import SMALL, close_jobs


def test_only_the_newest_finished_jobs_are_kept(engine, astronaut_bytes):
    from facefact.serving.jobs import JobInput, LocalJobs, UnknownJob
    from facefact.serving.schemas import GenerateSettings

    jobs = LocalJobs([engine], max_kept_jobs=2, result_ttl_s=600)
    try:
        ids = []
        for seed in range(3):
            ids.append(jobs.submit(JobInput(photos=[astronaut_bytes], settings=GenerateSettings(**SMALL, seed=seed))))
            assert jobs.wait(ids[-1], 60).state == "succeeded"
        jobs.submit(JobInput(photos=[astronaut_bytes], settings=GenerateSettings(**SMALL)))  # evicts on submit
        with pytest.raises(UnknownJob):
            jobs.status(ids[0])
        assert [jobs.images(job_id)[0].seed for job_id in ids[1:]] == [1, 2]
    finally:
        close_jobs(jobs)


def test_ui_result_files_are_deleted_after_the_ttl():
    pytest.importorskip("gradio")
    from facefact.serving.engine import GeneratedPNG
    from facefact.serving.ui import ResultFiles

    files = ResultFiles(ttl_s=0.2)
    paths = files.write("job1", [GeneratedPNG(png=b"\x89PNG fake", seed=5, metadata={}),
                                 GeneratedPNG(png=b"\x89PNG fake", seed=5, metadata={})])
    assert [p.rsplit("/", 1)[1] for p in paths] == ["facefact_5.png", "facefact_5_1.png"]
    deadline = time.monotonic() + 120  # only bounds a hang
    while (files.root / "job1").exists():
        assert time.monotonic() < deadline, "the files were not swept"
        time.sleep(0.05)
