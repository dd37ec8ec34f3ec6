"""Scale-out: the job queue in Redis, GPU workers anywhere (`facefact worker --redis URL`).

`RedisJobs` has the interface of `LocalJobs`, so the API and the UI run unchanged and stay
stateless. Jobs go through RQ with its JSON serializer (no pickle between machines); workers are
RQ `SimpleWorker`s (no fork per job: forking after CUDA init is unsafe) that load the models once.

Portrait and template jobs travel alike: the job holds the settings (and a template job's
`targets`), the uploads sit beside it in keys the worker takes (reads and deletes) when it starts
the job, and the worker runs it with the in-process queue's own `run_alone`, so the pixels are the
in-process server's. Keys, all with a TTL: `facefact:photos:<id>` (the face photos, base64 in JSON),
`facefact:template:<id>` (a template job's template photo, the bytes as uploaded),
`facefact:png:<id>:<k>` (results, `result_ttl`), `facefact:cancel:<id>` (a flag the worker checks
after every step). Progress is the RQ job's `meta`.

Liveness does not depend on how long a step takes: a thread in each worker refreshes
`facefact:worker:<name>` and, while a job runs, `facefact:alive:<id>` every quarter of
`heartbeat_s`, with a TTL of `heartbeat_s`. A worker killed outright stops refreshing them, so
within `heartbeat_s` `/health` stops counting it and its job reads `failed` / `worker_lost`.
The worker key holds its model's family and default size (JSON), which `/v1/models` and the UI show.
"""
from __future__ import annotations

import base64
import contextvars
import json
import logging
import secrets
import threading
import time

from redis import Redis
from rq import Queue, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException

from facefact.errors import FacefactError
from facefact.serving.engine import Engine, GeneratedPNG
from facefact.serving.jobs import JobInput, JobStopped, QueueFull, UnknownJob, error_detail, job_kind, run_alone
from facefact.serving.metrics import Metrics
from facefact.serving.schemas import ErrorDetail, GenerateSettings, JobStatus, Progress, TemplateJobSettings

logger = logging.getLogger(__name__)

QUEUE_NAME = "facefact"
RQ_STATE = {"queued": "queued", "deferred": "queued", "scheduled": "queued", "started": "running",
            "finished": "succeeded", "failed": "failed", "stopped": "cancelled", "canceled": "cancelled"}
# The worker running a job, for the job function (a SimpleWorker runs jobs in its own thread).
_CURRENT_WORKER: contextvars.ContextVar[FacefactWorker] = contextvars.ContextVar("facefact_worker")


def _key(kind: str, job_id: str, index: int | None = None) -> str:
    return f"facefact:{kind}:{job_id}" + (f":{index}" if index is not None else "")


def put_uploads(redis: Redis, job_id: str, job_input: JobInput, ttl_s: int) -> None:
    """A job's uploads into Redis (JSON and raw bytes, never pickle), for `take_uploads` on a worker."""
    with redis.pipeline() as pipe:
        pipe.set(_key("photos", job_id), json.dumps([base64.b64encode(data).decode() for data in job_input.photos]),
                 ex=ttl_s)
        if job_input.template is not None:
            pipe.set(_key("template", job_id), job_input.template, ex=ttl_s)
        pipe.execute()


def take_uploads(redis: Redis, job_id: str, template: bool) -> tuple[list[bytes], bytes | None] | None:
    """(photos, template photo or None), read and deleted at once; None when they expired (or the
    job was cancelled) before a worker took it."""
    with redis.pipeline() as pipe:  # MULTI: both keys leave together
        pipe.getdel(_key("photos", job_id))
        pipe.getdel(_key("template", job_id))
        photos, template_data = pipe.execute()
    if photos is None or (template and template_data is None):
        return None
    return [base64.b64decode(data) for data in json.loads(photos)], template_data


def drop_uploads(redis: Redis, job_id: str) -> None:
    redis.delete(_key("photos", job_id), _key("template", job_id))


class RedisJobs:
    backend = "redis"
    ready = True  # the API is ready at once; each `facefact worker --compile` warms up before it takes a job

    def __init__(self, redis_url: str, queue_size: int = 8, job_timeout_s: float = 600.0,
                 result_ttl_s: float = 600.0, queue_wait_s: float = 3600.0, metrics: Metrics | None = None,
                 queue_name: str = QUEUE_NAME, default_size: int = 512, base_family: str | None = None):
        self.redis = Redis.from_url(redis_url)
        self.queue = Queue(queue_name, connection=self.redis, serializer=JSONSerializer)
        self.queue_size, self.job_timeout_s, self.result_ttl_s = queue_size, job_timeout_s, result_ttl_s
        self.queue_wait_s = queue_wait_s  # a job not taken by then is dropped, photos included
        self.metrics = metrics or Metrics()
        self.metrics.bind_queue_depth(self.depth)
        # until a live worker says what it serves (model_info): the serve command's guess
        self._default_info = {"default_size": default_size, "base_family": base_family}

    def _live_workers(self) -> list[bytes | None]:
        """The heartbeat key's value of each worker on this queue, None for one not heard from within its
        heartbeat (RQ keeps a killed worker's registration for minutes)."""
        prefix = SimpleWorker.redis_worker_namespace_prefix
        names = [key.removeprefix(prefix) for key in SimpleWorker.all_keys(connection=self.redis, queue=self.queue)]
        if not names:
            return []
        return self.redis.mget([_key("worker", name) for name in names])

    @property
    def workers(self) -> int:
        """Workers on this queue that are alive now: registered with RQ and heard from within their heartbeat."""
        return sum(value is not None for value in self._live_workers())

    def model_info(self) -> dict:
        """A live worker's model family and default size, else the defaults this object was made with."""
        for value in self._live_workers():
            try:
                info = json.loads(value) if value is not None else None
            except ValueError:
                info = None  # an older worker's plain "1"
            if isinstance(info, dict) and info.get("base_family"):
                return {**self._default_info, **info}
        return dict(self._default_info)

    def base_family(self) -> str | None:
        return self.model_info()["base_family"]

    def depth(self) -> int:
        return self.queue.count

    def default_size(self) -> int:
        return int(self.model_info()["default_size"])

    def loras(self) -> dict[str, float]:
        return {}  # the workers know theirs; a request naming an unknown one fails with bad_settings

    def submit(self, job_input: JobInput) -> str:
        # Checked, then enqueued: two API processes may overshoot the bound by a job each, never more.
        if self.queue.count >= self.queue_size:
            self.metrics.job_finished("rejected")
            raise QueueFull(max(1, round(10 * (self.queue.count + 1) / max(1, self.workers))))
        job_id, kind = secrets.token_urlsafe(12), job_kind(job_input)
        put_uploads(self.redis, job_id, job_input, ttl_s=int(self.queue_wait_s + self.job_timeout_s) + 60)
        payload = {"kind": kind, "settings": job_input.settings.model_dump(), "max_pixels": job_input.max_pixels,
                   "timeout_s": self.job_timeout_s, "result_ttl_s": self.result_ttl_s}
        if job_input.targets is not None:  # JSON object keys are strings: the worker turns them back
            payload["targets"] = {str(number): indices for number, indices in job_input.targets.items()}
        # A fixed description: RQ's default is the call with its arguments, which would put the prompt in logs.
        self.queue.enqueue("facefact.serving.redis_jobs.run_job", payload, job_id=job_id, description="facefact job",
                           job_timeout=int(self.job_timeout_s) + 60, result_ttl=int(self.result_ttl_s),
                           failure_ttl=int(self.result_ttl_s), ttl=int(self.queue_wait_s),
                           meta={"step": 0, "total": job_input.settings.steps})
        self.metrics.job_submitted(kind)
        return job_id

    def _fetch(self, job_id: str) -> RQJob:
        try:
            return RQJob.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
        except NoSuchJobError:
            raise UnknownJob(job_id) from None

    def status(self, job_id: str) -> JobStatus:
        job = self._fetch(job_id)
        state = RQ_STATE.get(job.get_status(refresh=True).value, "queued")
        result = job.return_value() if state == "succeeded" else None
        error, notes, worker = None, [], None
        if result is not None:
            state, notes, worker = result["state"], result.get("notes", []), result.get("worker")
            error = ErrorDetail(**result["error"]) if result.get("error") else None
        elif state == "failed":
            error = ErrorDetail(code="internal", message="the job failed on a worker", hint="see the worker's log")
        elif state == "cancelled":
            error = ErrorDetail(code="cancelled", message="the job was cancelled")
        elif state == "running" and not self.redis.exists(_key("alive", job_id)):
            # The worker sets this key before RQ marks the job started, deletes it after RQ marks it ended
            # and refreshes it from a thread in between: missing while the job reads started both before
            # and after means its worker is gone. A job that ended between the reads is read again.
            if job.get_status(refresh=True).value != "started":
                return self.status(job_id)
            state, error = "failed", ErrorDetail(code="worker_lost", message="the worker running the job stopped",
                                                 hint="submit the job again")
        position = job.get_position() if state == "queued" else None
        expires = self.redis.ttl(job.key) if state not in ("queued", "running") else None
        meta = job.get_meta(refresh=False)
        return JobStatus(id=job_id, state=state, progress=Progress(step=meta.get("step", 0), total=meta.get("total", 0)),
                         queue_position=position, notes=notes, error=error, worker=worker,
                         expires_in_s=float(expires) if expires and expires > 0 else None)

    def images(self, job_id: str) -> list[GeneratedPNG]:
        job = self._fetch(job_id)
        result = job.return_value() if job.get_status(refresh=True).value == "finished" else None
        if not result or result["state"] != "succeeded":
            return []
        pngs = [self.redis.get(_key("png", job_id, i)) for i in range(len(result["images"]))]
        if any(png is None for png in pngs):
            raise UnknownJob(job_id)  # expired between the two reads
        return [GeneratedPNG(png=png, seed=entry["seed"], metadata=entry["metadata"])
                for png, entry in zip(pngs, result["images"])]

    def wait(self, job_id: str, timeout_s: float | None = None) -> JobStatus:
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else 1e9)
        while True:
            status = self.status(job_id)
            if status.state not in ("queued", "running") or time.monotonic() > deadline:
                return status
            time.sleep(0.05)

    def cancel(self, job_id: str) -> JobStatus:
        job = self._fetch(job_id)
        self.redis.set(_key("cancel", job_id), 1, ex=int(self.job_timeout_s + self.queue_wait_s) + 60)
        if job.get_status(refresh=True).value in ("queued", "deferred", "scheduled"):
            job.cancel()
            drop_uploads(self.redis, job_id)
        return self.status(job_id)

    def close(self) -> None:
        self.redis.close()


class FacefactWorker(SimpleWorker):
    """An RQ SimpleWorker holding one Engine; jobs run in this process, one at a time.

    SIGINT / SIGTERM: an idle worker stops at once; a busy one stops its job at the next step (the
    job reads `failed` / `worker_stopped`) and then stops. `stop_signal` says which signal it was."""

    def __init__(self, queues, engine: Engine, heartbeat_s: float = 10.0, **kwargs):
        kwargs.setdefault("serializer", JSONSerializer)
        super().__init__(queues, **kwargs)
        self.engine = engine
        self.heartbeat_s = heartbeat_s
        self.stop_signal: int | None = None
        self._current_job: str | None = None
        self._beating = threading.Event()

    # ---- liveness: a thread, so a slow step or a loaded machine never looks like a dead worker ----
    def _beat_once(self) -> None:
        ttl = max(1, round(self.heartbeat_s))
        with self.connection.pipeline() as pipe:
            pipe.set(_key("worker", self.name), json.dumps(self.engine.model_info()), ex=ttl)
            if (job_id := self._current_job) is not None:
                pipe.set(_key("alive", job_id), self.name, ex=ttl)
            pipe.execute()

    def _beat(self) -> None:
        while not self._beating.wait(self.heartbeat_s / 4):
            try:
                self._beat_once()
            except Exception:  # Redis briefly unreachable: the next beat tries again
                self.log.warning("Worker %s: heartbeat failed", self.name, exc_info=True)

    def register_birth(self):
        super().register_birth()
        self._beat_once()
        threading.Thread(target=self._beat, name="facefact-heartbeat", daemon=True).start()

    def register_death(self):
        self._beating.set()
        self.connection.delete(_key("worker", self.name))  # /health stops counting it now
        super().register_death()

    def subscribe(self):
        """RQ's command channel, polled every second: RQ polls every 60 s, and closing the channel
        waits for that poll, so an idle worker took a minute to stop on Ctrl-C."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=1, daemon=True,
                                                       exception_handler=self._pubsub_exception_handler)

    def request_stop(self, signum, frame):
        self.stop_signal = signum  # a running job sees it at its next step
        super().request_stop(signum, frame)

    def perform_job(self, job, queue, execution) -> bool:
        token = _CURRENT_WORKER.set(self)
        self._current_job = job.id
        self.connection.set(_key("alive", job.id), self.name, ex=max(1, round(self.heartbeat_s)))
        try:
            return super().perform_job(job, queue, execution)  # marks the job started, then ended
        finally:
            self._current_job = None
            self.connection.delete(_key("alive", job.id))
            _CURRENT_WORKER.reset(token)


def run_job(payload: dict) -> dict:
    """The RQ job function, run inside a FacefactWorker: uploads from Redis, PNGs back to Redis."""
    from rq import get_current_job

    worker, job = _CURRENT_WORKER.get(), get_current_job()
    redis = job.connection
    template = payload.get("kind") == "template"
    uploads = take_uploads(redis, job.id, template)  # the uploads leave Redis as the job starts
    if uploads is None:
        return {"state": "failed", "error": {"code": "expired", "message": "the job's photos expired before it ran",
                                             "hint": "submit it again"}}
    photos, template_data = uploads
    settings_model = TemplateJobSettings if template else GenerateSettings
    targets = payload.get("targets")
    job_input = JobInput(photos=photos, settings=settings_model.model_validate(payload["settings"]),
                         max_pixels=payload["max_pixels"], template=template_data,
                         targets={int(number): indices for number, indices in targets.items()} if targets else None)
    del photos, template_data, uploads
    try:
        result = run_alone(worker.engine, job_input, _step_watch(worker, job, payload))
    except JobStopped as stop:
        return {"state": stop.state, "error": stop.detail.model_dump(), "worker": worker.name}
    except JobTimeoutException:
        raise  # RQ's own limit (a step ran a minute past the job's deadline): RQ fails the job
    except Exception as err:  # the in-process queue's answer for the same error (a FacefactError's own message)
        if not isinstance(err, FacefactError):
            logger.exception("job failed")  # the settings and photos are not logged
        return {"state": "failed", "error": error_detail(err).model_dump(), "worker": worker.name}
    ttl = int(payload["result_ttl_s"])
    with redis.pipeline() as pipe:
        for index, image in enumerate(result.images):
            pipe.set(_key("png", job.id, index), image.png, ex=ttl)
        pipe.execute()
    return {"state": "succeeded", "notes": result.notes, "worker": worker.name,
            "images": [{"seed": image.seed, "metadata": image.metadata} for image in result.images]}


def _step_watch(worker: FacefactWorker, job: RQJob, payload: dict):
    """on_step for the engine: progress into the job's meta, and stopping between steps (the worker
    stopping, cancel, timeout)."""
    redis, deadline = job.connection, time.monotonic() + float(payload["timeout_s"])

    def on_step(step: int, total: int) -> None:
        job.meta.update(step=step, total=total)
        job.save_meta()
        if worker.stop_signal is not None:
            raise JobStopped("failed", ErrorDetail(code="worker_stopped", message="the worker running the job was "
                                                   "stopped", hint="submit the job again"))
        if redis.exists(_key("cancel", job.id)):
            raise JobStopped("cancelled", ErrorDetail(code="cancelled", message="the job was cancelled"))
        if time.monotonic() > deadline:
            raise JobStopped("failed", ErrorDetail(code="timeout", message=(
                f"the job ran past the server's limit of {payload['timeout_s']:g} s"),
                hint="ask for fewer steps, fewer or smaller images"))
    return on_step
