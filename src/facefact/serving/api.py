"""The HTTP API (FastAPI) under /v1, /health, /metrics and the web UI at /ui, over one job queue.

    app = create_app(jobs, FaceChecker(), ServerConfig(api_key="..."))
    uvicorn.run(app, host="127.0.0.1", port=7860)

`jobs` is a `LocalJobs` (models in this process) or a `RedisJobs` (workers elsewhere): the API
and the UI only submit, poll, fetch and cancel, so both run the same on either.
"""
from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI, File, Form, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from facefact.errors import FaceError, FacefactError, ImageError
from facefact.serving.api_docs import add_docs_routes
from facefact.serving.jobs import JobInput, QueueFull, UnknownJob, error_detail
from facefact.serving.limits import BodyLimitMiddleware
from facefact.serving.photos import FaceChecker, PhotoTooLargeError, decode_photo
from facefact.serving.schemas import (
    ErrorDetail,
    ErrorResponse,
    FaceReport,
    GeneratedImage,
    GenerateResponse,
    GenerateSettings,
    Health,
    ImageResult,
    JobCreated,
    JobStatus,
    ModelsInfo,
)

STATUS_OF_CODE = {"no_face": 422, "several_faces": 422, "face_quality": 422, "bad_settings": 422, "bad_target": 422,
                  "bad_image": 415, "too_many_pixels": 413, "timeout": 504, "cancelled": 409, "out_of_memory": 507, "internal": 500}


@dataclass
class ServerConfig:
    queue_size: int = 8
    max_upload_mb: float = 20.0
    max_photo_pixels: int = 16_000_000
    max_photos: int = 4
    job_timeout_s: float = 600.0
    result_ttl_s: float = 600.0
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    sync_timeout_s: float = 120.0
    ui: bool = True


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, hint: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.detail = ErrorDetail(code=code, message=message, hint=hint)


def _error_response(status: int, detail: ErrorDetail, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=detail).model_dump(), status_code=status, headers=headers)


def library_error(err: FacefactError) -> ApiError:
    detail = error_detail(err)
    if isinstance(err, PhotoTooLargeError):
        detail.code = "too_many_pixels"
    elif isinstance(err, ImageError):
        detail.code = "bad_image"
    status = STATUS_OF_CODE.get(detail.code, 422 if isinstance(err, FaceError) else 400)
    return ApiError(status, detail.code, detail.message, detail.hint)


def parse_settings(text: str, model=GenerateSettings):
    try:
        return model.model_validate_json(text)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in err.errors())
        raise ApiError(422, "bad_settings", f"bad settings: {problems}",
                       hint=f"settings is a JSON object; see {model.__name__} in /docs") from None


# Gradio's login form asks for a user name too; only the password (the API key) is checked.
LOGIN_MESSAGE = "Any user name works; the password is the server's API key (--api-key / FACEFACT_API_KEY)."


def create_app(jobs, checker: FaceChecker, config: ServerConfig | None = None) -> FastAPI:
    config = config or ServerConfig()
    app = FastAPI(title="facefact", version=_version(), docs_url=None, redoc_url=None,
                  description="Portraits of the person in reference photos (FaceChain-FACT). Jobs are queued; "
                              "results are deleted after the server's TTL.")
    app.state.jobs, app.state.checker, app.state.config = jobs, checker, config
    _install_error_handlers(app)
    add_docs_routes(app)  # Swagger UI from this machine, not a CDN
    require_key = _key_dependency(config.api_key)
    _add_job_routes(app, jobs, checker, config, require_key)
    _add_sync_routes(app, jobs, checker, config, require_key)
    _add_service_routes(app, jobs, config, require_key)
    from facefact.serving.template_api import add_template_routes

    add_template_routes(app, jobs, checker, config, require_key)
    from facefact.serving.openai_api import openai_router

    app.include_router(openai_router(jobs, checker, config, require_key))
    if config.ui:
        import gradio as gr

        from facefact.serving.ui import build_ui

        demo = build_ui(jobs, checker, config)
        key = config.api_key.encode() if config.api_key else None
        auth = (lambda user, password: secrets.compare_digest(str(password).encode(), key)) if key else None
        gr.mount_gradio_app(app, demo, path="/ui", auth=auth, auth_message=LOGIN_MESSAGE,
                            max_file_size=int(config.max_upload_mb * 2**20), ssr_mode=False, mcp_server=False,
                            footer_links=[])
        app.add_api_route("/", lambda: RedirectResponse("/ui/"), include_in_schema=False)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    app.add_middleware(BodyLimitMiddleware, max_bytes=int(config.max_upload_mb * 2**20))
    return app


def _version() -> str:
    from facefact import __version__

    return __version__


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return _error_response(err.status, err.detail, err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return _error_response(err.status_code, ErrorDetail(code=code, message=str(err.detail),
                                                            hint="see the API in /docs"), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):  # logged by the server; the client gets no internals
        return _error_response(500, ErrorDetail(code="internal", message="the server failed on this request",
                                                hint="see the server log"))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        return _error_response(422, ErrorDetail(code="bad_request", message=problems,
                                                hint="see the request schema in /docs"))


def _key_dependency(api_key: str | None):
    header = APIKeyHeader(name="X-API-Key", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    async def require_key(key: str | None = Security(header),
                          token: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        if api_key is None:
            return
        given = key or (token.credentials if token else None)
        if given is None or not secrets.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "unauthorized", "a valid API key is needed",
                           hint="send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'",
                           headers={"WWW-Authenticate": "Bearer"})
    return require_key


async def read_job_input(photos: list[UploadFile], settings_text: str, checker: FaceChecker,
                         config: ServerConfig) -> JobInput:
    """Settings and photos checked here, so a bad request is refused before it takes a queue slot."""
    settings = parse_settings(settings_text)
    if not photos:
        raise ApiError(422, "no_photo", "no reference photo was sent", hint="add one or more 'photos' file fields")
    if len(photos) > config.max_photos:
        raise ApiError(422, "too_many_photos", f"{len(photos)} photos sent; the server takes at most {config.max_photos}")
    return await checked_job_input([await photo.read() for photo in photos], settings, checker, config)


async def checked_job_input(data: list[bytes], settings: GenerateSettings, checker: FaceChecker,
                            config: ServerConfig) -> JobInput:
    """The job of these photos (each decoded under the pixel limit, with a usable face) and settings."""
    def check_all():
        for index, raw in enumerate(data):
            checker.check(decode_photo(raw, index, config.max_photo_pixels), index)
    try:
        await run_in_threadpool(check_all)
    except FacefactError as err:
        raise library_error(err) from None
    return JobInput(photos=data, settings=settings, max_pixels=config.max_photo_pixels)


def submit(jobs, job_input: JobInput) -> str:
    from facefact.serving.families import check_request_size

    settings = job_input.settings  # a portrait's size (a template job's crop size has its own bound)
    try:
        check_request_size(getattr(settings, "width", None), getattr(settings, "height", None),
                           jobs.base_family() or "sd15")
    except FacefactError as err:
        raise library_error(err) from None
    try:
        return jobs.submit(job_input)
    except QueueFull as full:
        raise ApiError(429, "queue_full", "the server is busy: the job queue is full",
                       hint=f"try again in about {full.retry_after_s} s",
                       headers={"Retry-After": str(full.retry_after_s)}) from None


def job_status(jobs, job_id: str, request: Request) -> JobStatus:
    try:
        status = jobs.status(job_id)
        if status.state == "succeeded":
            status.images = [ImageResult(index=i, seed=image.seed, metadata=image.metadata,
                                         url=str(request.url_for("job_image", job_id=job_id, index=i)))
                             for i, image in enumerate(jobs.images(job_id))]
        return status
    except UnknownJob:
        raise ApiError(404, "unknown_job", f"no job {job_id}", hint="it never existed, or its results expired") from None


def _add_job_routes(app: FastAPI, jobs, checker: FaceChecker, config: ServerConfig, require_key) -> None:
    errors = {code: {"model": ErrorResponse} for code in (401, 404, 413, 415, 422, 429)}
    photos_field = File(..., description="reference photos of one person (JPEG, PNG, WebP)")
    settings_field = Form(..., description="GenerateSettings as JSON", examples=['{"prompt": "a portrait"}'])

    @app.post("/v1/jobs", status_code=202, response_model=JobCreated, responses=errors,
              dependencies=[Depends(require_key)], tags=["jobs"])
    async def create_job(request: Request, photos: list[UploadFile] = photos_field, settings: str = settings_field):
        job_id = submit(jobs, await read_job_input(photos, settings, checker, config))
        url = str(request.url_for("get_job", job_id=job_id))
        return JSONResponse(JobCreated(id=job_id, status_url=url).model_dump(), status_code=202,
                            headers={"Location": url})

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus, responses=errors, dependencies=[Depends(require_key)],
             tags=["jobs"])
    async def get_job(job_id: str, request: Request):
        return job_status(jobs, job_id, request)

    @app.get("/v1/jobs/{job_id}/images/{index}.png", responses={200: {"content": {"image/png": {}}}, **errors},
             response_class=Response, dependencies=[Depends(require_key)], tags=["jobs"])
    async def job_image(job_id: str, index: int):
        try:
            images = jobs.images(job_id)
        except UnknownJob:
            raise ApiError(404, "unknown_job", f"no job {job_id}", hint="it never existed, or its results expired") from None
        if not 0 <= index < len(images):
            raise ApiError(404, "unknown_image", f"job {job_id} has no image {index}",
                           hint=f"it has {len(images)} (indices from 0); a job has images once it succeeded")
        return Response(images[index].png, media_type="image/png",
                        headers={"Content-Disposition": f'attachment; filename="facefact_{images[index].seed}.png"'})

    @app.delete("/v1/jobs/{job_id}", response_model=JobStatus, responses=errors, dependencies=[Depends(require_key)],
                tags=["jobs"])
    async def cancel_job(job_id: str, request: Request):
        try:
            jobs.cancel(job_id)
        except UnknownJob:
            raise ApiError(404, "unknown_job", f"no job {job_id}") from None
        return job_status(jobs, job_id, request)



def _add_sync_routes(app: FastAPI, jobs, checker: FaceChecker, config: ServerConfig, require_key) -> None:
    errors = {code: {"model": ErrorResponse} for code in (401, 413, 415, 422, 429)}
    photos_field = File(..., description="reference photos of one person (JPEG, PNG, WebP)")
    settings_field = Form(..., description="GenerateSettings as JSON", examples=['{"prompt": "a portrait"}'])

    @app.post("/v1/generate", response_model=GenerateResponse, responses={**errors, 504: {"model": ErrorResponse}},
              dependencies=[Depends(require_key)], tags=["jobs"])
    async def generate(photos: list[UploadFile] = photos_field, settings: str = settings_field):
        """Submit and wait (up to the server's sync limit); the PNGs come back base64-encoded in the JSON."""
        job_id = submit(jobs, await read_job_input(photos, settings, checker, config))
        return await wait_for_result(jobs, job_id, config.sync_timeout_s, "POST /v1/jobs")

    @app.post("/v1/faces", response_model=list[FaceReport], responses=errors, dependencies=[Depends(require_key)],
              tags=["faces"])
    async def check_faces(photos: list[UploadFile] = photos_field):
        """The face each photo would give: box, how many faces were seen, quality notes."""
        data = [await photo.read() for photo in photos]
        try:
            checks = await run_in_threadpool(lambda: [checker.check(decode_photo(raw, i, config.max_photo_pixels), i)
                                                      for i, raw in enumerate(data)])
        except FacefactError as err:
            raise library_error(err) from None
        return [FaceReport(photo=c.photo, bbox=c.bbox, faces_found=c.faces_found, notes=c.notes) for c in checks]


def _add_service_routes(app: FastAPI, jobs, config: ServerConfig, require_key) -> None:
    @app.get("/health", response_model=Health, tags=["service"],
             responses={503: {"model": Health, "description": "warming up (a compiled UNet's graphs at start)"}})
    async def health():
        ready = bool(jobs.ready)
        health = Health(status="ok" if ready else "warming_up", ready=ready, queue_depth=jobs.depth(),
                        queue_size=config.queue_size, workers=jobs.workers, backend=jobs.backend,
                        base_family=jobs.base_family())
        # 503 while warming up: a load balancer's readiness probe sends no traffic yet
        return health if ready else JSONResponse(health.model_dump(), status_code=503)

    @app.get("/v1/models", response_model=ModelsInfo, dependencies=[Depends(require_key)], tags=["service"])
    async def models():
        from facefact.serving.presets import STYLE_PRESETS
        from facefact.serving.schemas import SCHEDULER_NAMES

        from facefact.serving.families import max_side

        family = jobs.base_family()
        return ModelsInfo(loras=jobs.loras(), styles=list(STYLE_PRESETS), schedulers=list(SCHEDULER_NAMES),
                          default_size=jobs.default_size(), base_family=family, max_size=max_side(family or "sd15"))

    @app.get("/metrics", dependencies=[Depends(require_key)], response_class=Response, tags=["service"])
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(jobs.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def wait_for_result(jobs, job_id: str, timeout_s: float, poll_with: str) -> GenerateResponse:
    """A synchronous call's answer: the job's PNGs (base64) once done; 504 after `timeout_s` (the job
    is cancelled), the job's own error otherwise."""
    status = await run_in_threadpool(jobs.wait, job_id, timeout_s)
    if status.state in ("queued", "running"):
        jobs.cancel(job_id)
        raise ApiError(504, "timeout", f"no result within {timeout_s:g} s",
                       hint=f"use {poll_with} and poll for long jobs")
    if status.state != "succeeded":
        raise ApiError(STATUS_OF_CODE.get(status.error.code, 500), status.error.code, status.error.message,
                       status.error.hint)
    images = [GeneratedImage(index=i, seed=image.seed, metadata=image.metadata,
                             png_base64=base64.b64encode(image.png).decode())
              for i, image in enumerate(jobs.images(job_id))]
    return GenerateResponse(id=job_id, images=images, notes=status.notes)
