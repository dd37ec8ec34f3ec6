"""The template mode's HTTP routes: the numbered faces of a template photo, and template jobs.

    POST /v1/template/faces   template photo -> its faces, numbered left to right (what targets count)
    POST /v1/template/jobs    template + face photos + targets + TemplateJobSettings -> 202, a job id
    POST /v1/template         the same, waiting for the result (base64 PNGs, as POST /v1/generate)

Template jobs share the queue (in process, or over Redis with `facefact worker`s), the limits and
the job routes (`GET /v1/jobs/{id}`, its images, `DELETE`) with portrait jobs.
"""
from __future__ import annotations


from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from facefact.errors import FacefactError
from facefact.serving.api import ApiError, library_error, parse_settings, submit, wait_for_result
from facefact.serving.schemas import (ErrorResponse, GenerateResponse, JobCreated, TemplateFaces,
                                      TemplateJobSettings)
from facefact.serving.template_jobs import faces_report, template_job_input

SETTINGS_EXAMPLE = '{"strength": 0.6, "fact_scale": 0.55, "steps": 50, "seed": 7, "num_images": 2}'


def add_template_routes(app: FastAPI, jobs, checker, config, require_key) -> None:
    errors = {code: {"model": ErrorResponse} for code in (401, 413, 415, 422, 429)}
    template_field = File(..., description="the photo whose face(s) are redrawn")
    photos_field = File(..., description="photos of the new person (or people: see targets)")
    targets_field = Form(None, description='template face number -> photo index (or list), e.g. {"1": 0, "2": 1}; '
                                           "default: every photo is one person, for the largest face")
    settings_field = Form("{}", description="TemplateJobSettings as JSON", examples=[SETTINGS_EXAMPLE])

    async def read(template: UploadFile, photos: list[UploadFile], targets: str | None, settings: str):
        parsed = parse_settings(settings, TemplateJobSettings)
        if len(photos) > config.max_photos:
            raise ApiError(422, "too_many_photos", f"{len(photos)} photos sent; the server takes at most {config.max_photos}")
        template_data, data = await template.read(), [await photo.read() for photo in photos]
        try:
            return await run_in_threadpool(template_job_input, checker, template_data, data, targets, parsed,
                                           config.max_photo_pixels)
        except FacefactError as err:
            raise library_error(err) from None

    @app.post("/v1/template/faces", response_model=TemplateFaces, responses=errors,
              dependencies=[Depends(require_key)], tags=["template"])
    async def template_faces(template: UploadFile = template_field):
        """The template's faces, numbered left to right from 1, with boxes and sizes in pixels."""
        from facefact.template.settings import TemplateSettings

        data = await template.read()
        try:
            return await run_in_threadpool(faces_report, checker, data, config.max_photo_pixels,
                                           TemplateSettings().min_face_px)
        except FacefactError as err:
            raise library_error(err) from None

    @app.post("/v1/template/jobs", status_code=202, response_model=JobCreated, responses=errors,
              dependencies=[Depends(require_key)], tags=["template"])
    async def create_template_job(request: Request, template: UploadFile = template_field,
                                  photos: list[UploadFile] = photos_field, targets: str | None = targets_field,
                                  settings: str = settings_field):
        """Queue a template job; follow it at GET /v1/jobs/{id} (its images are PNGs with provenance)."""
        job_id = submit(jobs, await read(template, photos, targets, settings))
        url = str(request.url_for("get_job", job_id=job_id))
        return JSONResponse(JobCreated(id=job_id, status_url=url).model_dump(), status_code=202,
                            headers={"Location": url})

    @app.post("/v1/template", response_model=GenerateResponse, responses={**errors, 504: {"model": ErrorResponse}},
              dependencies=[Depends(require_key)], tags=["template"])
    async def template_sync(template: UploadFile = template_field, photos: list[UploadFile] = photos_field,
                            targets: str | None = targets_field, settings: str = settings_field):
        """Submit and wait (up to the server's sync limit); the PNGs come back base64-encoded in the JSON."""
        job_id = submit(jobs, await read(template, photos, targets, settings))
        return await wait_for_result(jobs, job_id, config.sync_timeout_s, "POST /v1/template/jobs")
