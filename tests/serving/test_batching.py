"""The in-process queue batches portrait jobs: queued jobs of one batch class (different people,
prompts and seeds) run as one UNet batch and give the images they give alone."""
from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import pytest

from serve_helpers import SMALL, close_jobs

WAIT_S = 120  # an upper bound on a hang, never a timing


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


@contextlib.contextmanager
def unet_batches(engine, on_call=None):
    """The batch size of every UNet call while inside (a test's own forward hook)."""
    sizes: list[int] = []

    def record(module, args, kwargs):
        sizes.append(int(args[0].shape[0]))
        if on_call is not None:
            on_call(len(sizes))
    handle = engine.pipeline.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield sizes
    finally:
        handle.remove()


def rows_exact(unet, alone: int, batched: int) -> bool:
    """Whether this CPU's GEMM gives the UNet's one-row-per-image layers (the time embedding and each
    ResNet's time projection) the same rows for `alone` rows as inside `batched` rows; the kernels,
    and so the answer, depend on the CPU (MKL takes another kernel below 4 rows on AVX2)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    for name, layer in unet.named_modules():
        if isinstance(layer, torch.nn.Linear) and "time_emb" in name:
            rows = torch.randn(batched, layer.in_features, generator=generator)
            with torch.no_grad():
                if not torch.equal(layer(rows[:alone]), layer(rows)[:alone]):
                    return False
    return True


def job(photo: bytes, **settings):
    from facefact.serving.jobs import JobInput
    from facefact.serving.schemas import GenerateSettings

    # Euler: one UNet call per step (PNDM makes one more)
    return JobInput(photos=[photo], settings=GenerateSettings(**{**SMALL, "scheduler": "euler", **settings}))


def run_queued(engine, inputs, max_batch: int, on_call=None):
    """Queue every input while the worker is held, then let it run: (jobs, their ids, UNet batch sizes)."""
    from facefact.serving.jobs import LocalJobs

    jobs = LocalJobs([engine], max_batch=max_batch)
    try:
        jobs.pause()  # the worker takes nothing until every job is queued
        ids = [jobs.submit(one) for one in inputs]
        with unet_batches(engine, on_call and (lambda n: on_call(jobs, ids, n))) as sizes:
            jobs.resume()
            statuses = [jobs.wait(job_id, WAIT_S) for job_id in ids]
        return jobs, ids, statuses, sizes
    except BaseException:
        close_jobs(jobs)
        raise


@pytest.fixture(scope="module")
def people(astronaut_bytes, grace_hopper_path):
    with open(grace_hopper_path, "rb") as f:
        hopper = f.read()
    return [job(astronaut_bytes, prompt="a portrait in a garden", seed=11),
            job(hopper, prompt="a painting", negative_prompt="dark", seed=12, style=None)]


def test_two_people_run_as_one_unet_batch_and_give_their_own_images(engine, people):
    # Two images per job: 4 UNet rows alone under guidance, 8 batched. On the CPU, MKL's sgemm takes
    # another kernel below 4 rows, and the UNet's time-embedding layers have one row per image, so
    # one-image jobs (2 rows alone) differ from their batched selves by float rounding (one grey
    # level in a few pixels; docs/serving.md). From 4 rows on, every layer is row-exact on AVX2.
    two_each = [dataclasses.replace(one, settings=one.settings.model_copy(update={"num_images": 2}))
                for one in people]
    alone, ids, statuses, sizes = run_queued(engine, two_each, max_batch=1)
    try:
        assert [s.state for s in statuses] == ["succeeded"] * 2
        assert sizes == [4] * 4  # one job (two images, two rows each under guidance) per call, 2 steps each
        expected = [alone.images(job_id) for job_id in ids]
    finally:
        close_jobs(alone)
    batched, ids, statuses, sizes = run_queued(engine, two_each, max_batch=4)
    try:
        assert [s.state for s in statuses] == ["succeeded"] * 2
        assert sizes == [8] * 2  # both jobs in every UNet call
        metrics = batched.metrics.render().decode()
        assert "facefact_batch_jobs_count 1.0" in metrics and "facefact_batch_jobs_sum 2.0" in metrics
        exact = rows_exact(engine.pipeline.unet, alone=4, batched=8)
        for job_id, want in zip(ids, expected):
            got = batched.images(job_id)
            assert [g.metadata for g in got] == [w.metadata for w in want]
            assert [g.seed for g in got] == [w.seed for w in want]
            for g, w in zip(got, want):
                difference = np.abs(pixels(g.png) - pixels(w.png))
                # pixel-exact where this CPU's GEMM is row-exact at 4 and 8 rows (AVX2 MKL: yes)
                assert difference.max() == 0 if exact else difference.max() <= 1
            assert batched.status(job_id).notes == want[0].metadata["notes"]
        hopper_image = pixels(batched.images(ids[1])[0].png)
        assert np.abs(pixels(batched.images(ids[0])[0].png) - hopper_image).max() > 0
    finally:
        close_jobs(batched)


def test_only_jobs_of_one_settings_class_share_a_batch(engine, people, astronaut_bytes):
    other_steps = job(astronaut_bytes, steps=3, seed=5)
    jobs, ids, statuses, sizes = run_queued(engine, [people[0], other_steps, people[1]], max_batch=4)
    try:
        assert [s.state for s in statuses] == ["succeeded"] * 3
        assert sizes == [4] * 2 + [2] * 3  # the two-step pair together, then the three-step job alone
        metrics = jobs.metrics.render().decode()
        assert "facefact_batch_jobs_count 2.0" in metrics and "facefact_batch_jobs_sum 3.0" in metrics
    finally:
        close_jobs(jobs)


def test_a_job_cancelled_inside_a_batch_leaves_the_others(engine, people):
    def cancel_first(jobs, ids, call):
        if call == 1:  # both jobs are running now
            jobs.cancel(ids[0])

    jobs, ids, statuses, sizes = run_queued(engine, people, max_batch=4, on_call=cancel_first)
    try:
        assert [s.state for s in statuses] == ["cancelled", "succeeded"]
        assert jobs.images(ids[0]) == [] and len(jobs.images(ids[1])) == 1
        assert statuses[0].progress.step == 1 and statuses[1].progress.step == 2  # stopped after its first step
        assert sizes == [4] * 2  # the batch went on for the other job
    finally:
        close_jobs(jobs)


def test_a_job_whose_photo_has_no_face_fails_alone(engine, people, faceless_png):
    jobs, ids, statuses, sizes = run_queued(engine, [people[0], job(faceless_png, seed=3)], max_batch=4)
    try:
        assert [s.state for s in statuses] == ["succeeded", "failed"]
        assert statuses[1].error.code == "no_face"
        assert sizes == [2] * 2
    finally:
        close_jobs(jobs)


def test_max_batch_must_be_positive(engine):
    from facefact.serving.jobs import LocalJobs

    with pytest.raises(ValueError, match="max_batch"):
        LocalJobs([engine], max_batch=0)


def test_batch_classes_differ_by_everything_but_prompt_seed_and_person():
    from facefact.serving.engine import batch_class
    from facefact.serving.schemas import GenerateSettings

    def kind(num_photos: int = 1, **settings):
        return batch_class(GenerateSettings(**{**SMALL, **settings}), num_photos)

    assert kind() == kind(prompt="another", negative_prompt="dark", seed=9, style="cinematic")
    assert kind() == kind(2, face_combine="mean")  # 16 tokens either way
    for other in (kind(steps=3), kind(width=128), kind(scheduler="euler"), kind(fact_scale=0.7), kind(num_images=2),
                  kind(fact_window=(0.3, 1.0)), kind(cfg_face=False), kind(2)):
        assert other != kind()
    assert kind(2, face_regions=[(0, 0, 0.5, 1), (0.5, 0, 1, 1)]) is None  # several people in one image: alone
