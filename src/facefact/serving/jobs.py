"""The in-process job queue: bounded, one worker thread per engine (device), results with a TTL.

Both the HTTP API and the web UI submit here, so they never compete for a GPU. A full queue
raises `QueueFull` at once (the API answers 429, the UI "busy, try again"). A job is stopped
between denoising steps when cancelled or past its timeout. Photos are dropped as soon as the
job has run; result PNGs are deleted `result_ttl` seconds after the job ends.

Batching (`max_batch` > 1): a worker takes the oldest queued job and up to `max_batch - 1` more
of its batch class (`engine.batch_class`: the same call but for prompt, seed and person) and runs
them as one pipeline call, one UNet batch. A job of the batch cancelled while it runs is
reported cancelled at the next step and its images are dropped when the batch ends; the batch
stops only once every job in it is cancelled. The batch shares one deadline (its jobs started
together), so a timeout fails them all. A job whose photos fail fails alone.
"""
from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field

from facefact.errors import FacefactError
from facefact.serving.engine import Engine, EngineResult, GeneratedPNG, PortraitJob, batch_class
from facefact.serving.metrics import Metrics
from facefact.serving.photos import decode_photo
from facefact.serving.schemas import ErrorDetail, GenerateSettings, JobStatus, Progress, TemplateJobSettings

logger = logging.getLogger(__name__)
FINISHED = ("succeeded", "failed", "cancelled")


class QueueFull(Exception):
    def __init__(self, retry_after_s: int):
        super().__init__(f"the queue is full; try again in about {retry_after_s} s")
        self.retry_after_s = retry_after_s


class UnknownJob(KeyError):
    """No such job, or its results have expired."""


class JobStopped(Exception):
    def __init__(self, state: str, detail: ErrorDetail):
        super().__init__(detail.message)
        self.state, self.detail = state, detail


@dataclass
class JobInput:
    photos: list[bytes]              # the uploads as sent (already checked); dropped once the job ran
    settings: GenerateSettings | TemplateJobSettings
    max_pixels: int = 4_000_000
    template: bytes | None = None    # a template job: the template photo, and which photos go to which face
    targets: dict[int, list[int]] | None = None


@dataclass
class Job:
    id: str
    input: JobInput | None
    state: str = "queued"
    step: int = 0
    total: int = 0
    images: list[GeneratedPNG] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: ErrorDetail | None = None
    finished_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


def error_detail(err: BaseException) -> ErrorDetail:
    """The library's message and hint; anything unexpected gets a generic message (no internals)."""
    if isinstance(err, FacefactError):
        code = {"NoFaceError": "no_face", "MultipleFacesError": "several_faces", "FaceQualityError": "face_quality",
                "ConfigError": "bad_settings", "ImageError": "bad_image", "TargetError": "bad_target"}.get(type(err).__name__, "error")
        message = f"{err.path}: {err.message}" if err.path and err.path not in err.message else err.message
        return ErrorDetail(code=code, message=message, hint=err.hint)
    if isinstance(err, MemoryError) or "out of memory" in str(err).lower():
        return ErrorDetail(code="out_of_memory", message="the server ran out of memory for this job",
                           hint="ask for fewer or smaller images")
    return ErrorDetail(code="internal", message="the job failed on the server", hint="see the server log")


class LocalJobs:
    """Jobs run in this process. `engines`: one per device, each gets its own worker thread."""
    backend = "local"

    def __init__(self, engines: list[Engine], queue_size: int = 8, job_timeout_s: float = 600.0,
                 result_ttl_s: float = 600.0, metrics: Metrics | None = None, clock=time.monotonic,
                 max_kept_jobs: int = 256, max_batch: int = 1):
        if not engines:
            raise ValueError("LocalJobs needs at least one engine")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.engines, self.queue_size, self.max_batch = engines, queue_size, max_batch
        self.job_timeout_s, self.result_ttl_s = job_timeout_s, result_ttl_s
        # Finished jobs kept at once, so memory stays bounded whatever the TTL: the oldest go first.
        self.max_kept_jobs = max_kept_jobs
        self._finished: collections.deque[str] = collections.deque()
        self.metrics = metrics or Metrics()
        self.metrics.bind_queue_depth(self.depth)
        self._clock = clock
        self._waiting: collections.deque[Job] = collections.deque()  # at most queue_size jobs
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)  # a job came in, or pause/resume/close
        self._paused = False
        self._stop = threading.Event()
        self._mean_job_s = 10.0
        self._threads = [threading.Thread(target=self._work, args=(engine,), name=f"facefact-{engine.name}",
                                          daemon=True) for engine in engines]
        self._threads.append(threading.Thread(target=self._sweep, name="facefact-ttl", daemon=True))
        for thread in self._threads:
            thread.start()

    # ---- what the API and UI call -----------------------------------------------------------
    @property
    def workers(self) -> int:
        return len(self.engines)

    def depth(self) -> int:
        return len(self._waiting)

    def default_size(self) -> int:
        return self.engines[0].default_size

    def base_family(self) -> str | None:
        return self.engines[0].base_family

    def loras(self) -> dict[str, float]:
        return dict(self.engines[0].lora_weights)

    def submit(self, job_input: JobInput) -> str:
        job = Job(id=secrets.token_urlsafe(12), input=job_input)
        with self._lock:
            if len(self._waiting) >= self.queue_size:
                self.metrics.job_finished("rejected")
                raise QueueFull(self._retry_after_locked())
            self._waiting.append(job)
            self._jobs[job.id] = job
            self.metrics.job_submitted(job_kind(job_input))
            self._evict_locked()
            self._wakeup.notify()
        return job.id

    def _retry_after_locked(self) -> int:
        return max(1, round(self._mean_job_s * (len(self._waiting) + 1) / self.workers))

    def status(self, job_id: str) -> JobStatus:
        job = self._get(job_id)
        position = None
        if job.state == "queued":
            with self._lock:
                position = next((i for i, queued in enumerate(self._waiting) if queued is job), None)
        expires = None
        if job.finished_at is not None:
            expires = max(0.0, job.finished_at + self.result_ttl_s - self._clock())
        return JobStatus(id=job.id, state=job.state, progress=Progress(step=job.step, total=job.total),
                         queue_position=position, images=[], notes=list(job.notes), error=job.error,
                         expires_in_s=expires)

    def images(self, job_id: str) -> list[GeneratedPNG]:
        return list(self._get(job_id).images)

    def wait(self, job_id: str, timeout_s: float | None = None) -> JobStatus:
        self._get(job_id).done.wait(timeout_s)
        return self.status(job_id)

    def cancel(self, job_id: str) -> JobStatus:
        job = self._get(job_id)
        job.cancel.set()
        with self._lock:
            if job.state == "queued":  # not started: out of the queue now
                self._waiting.remove(job)
                self._finish(job, "cancelled", ErrorDetail(code="cancelled", message="the job was cancelled"))
        return self.status(job_id)

    def pause(self) -> None:
        """Workers finish their current job and take no new one (queued jobs wait)."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._wakeup.notify_all()

    def close(self, wait_s: float = 60.0) -> bool:
        """Cancel every job and wait up to `wait_s` for the running ones to stop (each stops at its
        next step), so whoever shares the engines next never runs beside a leftover job.
        True when every worker thread has stopped."""
        with self._lock:
            self._stop.set()
            jobs = list(self._jobs.values())
            self._wakeup.notify_all()
        for job in jobs:
            job.cancel.set()
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    # ---- inside ------------------------------------------------------------------------------
    def _get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(job_id)
        return job

    def _finish(self, job: Job, state: str, error: ErrorDetail | None = None) -> None:
        if job.state in FINISHED:
            return
        job.state, job.error, job.input = state, error, None  # the photos go now
        job.finished_at = self._clock()
        self._finished.append(job.id)  # in finishing order (deque appends are atomic)
        self.metrics.job_finished(state if state != "failed" or error is None else
                                  ("timeout" if error.code == "timeout" else "failed"))
        job.done.set()

    def _next_jobs(self) -> list[tuple[Job, JobInput]] | None:
        """The oldest queued job and up to max_batch - 1 later ones of its batch class."""
        with self._lock:
            while not self._stop.is_set() and (self._paused or not self._waiting):
                self._wakeup.wait()
            if self._stop.is_set():
                return None
            first = self._waiting.popleft()
            taken = [first]
            kind = _batch_class(first.input)
            if kind is not None and self.max_batch > 1:
                taken += [job for job in self._waiting if _batch_class(job.input) == kind][:self.max_batch - 1]
                for job in taken[1:]:
                    self._waiting.remove(job)
            for job in taken:
                job.state, job.total = "running", job.input.settings.steps
            return [(job, job.input) for job in taken]

    @property
    def ready(self) -> bool:
        """Every engine warmed up (a compiled UNet has its graphs): what /health reports."""
        return all(engine.ready.is_set() for engine in self.engines)

    def _work(self, engine: Engine) -> None:
        if engine.warm_up_batches:
            try:
                engine.warm_up()  # before the first job: queued jobs wait for it, none pays a compile
            except Exception:  # noqa: BLE001 - serve anyway; the first jobs then compile as they come
                logger.exception("warm-up of %s failed", engine.name)
        while (taken := self._next_jobs()) is not None:
            self._run(engine, taken)

    def _run(self, engine: Engine, taken: list[tuple[Job, JobInput]]) -> None:
        jobs = [job for job, _ in taken]
        started = self._clock()
        self.metrics.batch_jobs.observe(len(jobs))
        try:
            outcomes = self._call_engine(engine, taken, self._step_watch(jobs, started + self.job_timeout_s))
        except JobStopped as stop:
            outcomes = [stop] * len(jobs)
        except Exception as err:
            if not isinstance(err, FacefactError):
                logger.exception("job failed")  # the settings and photos are not logged
            outcomes = [err] * len(jobs)
        for job, outcome in zip(jobs, outcomes):
            if isinstance(outcome, JobStopped):
                self._finish(job, outcome.state, outcome.detail)
            elif isinstance(outcome, Exception):
                self._finish(job, "failed", error_detail(outcome))
            elif job.state not in FINISHED:  # a job cancelled inside a batch: its images are dropped
                job.images, job.notes = outcome.images, outcome.notes
                self._finish(job, "succeeded")
        elapsed = self._clock() - started
        for _ in jobs:
            self.metrics.job_seconds.observe(elapsed)
        self._mean_job_s = 0.8 * self._mean_job_s + 0.2 * elapsed / len(jobs)

    def _step_watch(self, jobs: list[Job], deadline: float):
        """on_step for the engine: progress, and stopping between steps (cancel, timeout)."""
        last_step = [self._clock()]
        cancelled = ErrorDetail(code="cancelled", message="the job was cancelled")

        def on_step(step: int, total: int) -> None:
            now = self._clock()
            self.metrics.step_seconds.observe(now - last_step[0])
            last_step[0] = now
            for job in jobs:
                if job.state in FINISHED:  # cancelled earlier in this batch: its progress stays where it stopped
                    continue
                job.step, job.total = step, total
                if job.cancel.is_set() and len(jobs) > 1:
                    self._finish(job, "cancelled", cancelled)  # the batch goes on for the others
            if all(job.cancel.is_set() for job in jobs):
                raise JobStopped("cancelled", cancelled)
            if now > deadline:
                raise JobStopped("failed", ErrorDetail(
                    code="timeout", message=f"the job ran past the server's limit of {self.job_timeout_s:g} s",
                    hint="ask for fewer steps, fewer or smaller images"))
        return on_step

    @staticmethod
    def _call_engine(engine: Engine, taken: list[tuple[Job, JobInput]], on_step) -> list:
        """Each job's EngineResult or error. The uploads are dropped once decoded."""
        (job, job_input), *_ = taken
        if _batch_class(job_input) is None:
            job.input = None  # the job's own reference; the uploads go when this call returns
            return [run_alone(engine, job_input, on_step)]
        outcomes, portraits = [], []
        for job, job_input in taken:
            try:
                photos = [decode_photo(data, i, job_input.max_pixels) for i, data in enumerate(job_input.photos)]
                portraits.append(PortraitJob(photos, job_input.settings))
                outcomes.append(None)
            except FacefactError as err:  # this job's upload: the others go on
                outcomes.append(err)
            job.input = None
        results = iter(engine.generate_batch(portraits, on_step) if portraits else [])
        return [outcome if outcome is not None else next(results) for outcome in outcomes]

    def _sweep(self) -> None:
        interval = min(5.0, max(0.05, self.result_ttl_s / 4))
        while not self._stop.wait(interval):
            now = self._clock()
            with self._lock:
                expired = [job_id for job_id, job in self._jobs.items()
                           if job.finished_at is not None and now - job.finished_at >= self.result_ttl_s]
                for job_id in expired:
                    del self._jobs[job_id]
                self._evict_locked()

    def _evict_locked(self) -> None:
        """Forget the oldest finished jobs beyond `max_kept_jobs` (ids already expired just drop out)."""
        while len(self._finished) > self.max_kept_jobs or (self._finished and self._finished[0] not in self._jobs):
            self._jobs.pop(self._finished.popleft(), None)


def job_kind(job_input: JobInput) -> str:
    """What /metrics counts a submitted job as: "template" or "portrait"."""
    return "template" if job_input.template is not None else "portrait"


def run_alone(engine: Engine, job_input: JobInput, on_step=None) -> EngineResult:
    """One job run by itself: a template job, or a portrait job (a batch of one, or several people in
    one image). Every queue runs such a job through here - the in-process one and the Redis workers -
    so the same job gives the same pixels on either."""
    photos = [decode_photo(data, i, job_input.max_pixels) for i, data in enumerate(job_input.photos)]
    if job_input.template is None:
        return engine.generate(photos, job_input.settings, on_step)
    template = decode_photo(job_input.template, 0, job_input.max_pixels, name="template")
    return engine.generate_template(template, photos, job_input.targets, job_input.settings, on_step)


def _batch_class(job_input: JobInput) -> str | None:
    """The batch class of a queued job (None: it runs alone - template jobs, several people)."""
    if job_input.template is not None:
        return None
    return batch_class(job_input.settings, len(job_input.photos))
