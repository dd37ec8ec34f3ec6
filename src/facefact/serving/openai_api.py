"""OpenAI's images API on `facefact serve`: a drop-in for the official `openai` client and its kin.

    POST /v1/images/edits        reference photos (`image[]`) + prompt -> {"created", "data": [{"b64_json"}]}
    POST /v1/images/generations  refused: facefact draws the person of reference photos (use edits)
    GET  /v1/models              facefact's own route; its answer also carries OpenAI's model list

    client = OpenAI(base_url="http://127.0.0.1:7860/v1", api_key=KEY)
    client.images.edit(model="facefact", image=[open("me.jpg", "rb")], prompt="a portrait", n=2)

A request becomes a job on the same queue, with the same limits, photo checks and API key
(`Authorization: Bearer` is what the client sends) as `POST /v1/generate`, and waits for it the
same way. Every error is in OpenAI's shape {"error": {"message", "type", "param", "code"}} with
the status the client turns into its own exception: bad input of any kind is 400
(BadRequestError), a wrong key 401, an unknown model 404, a full queue 429 with Retry-After (the
client waits and retries on its own). 5xx answers say `x-should-retry: false`: a job that timed out
or failed would fail again. The template mode keeps its own route (`/v1/template`): OpenAI's
`mask` marks pixels to repaint in the first image, while a template job redraws detected faces
with other photos, so `image[]` would change meaning with a mask; a mask is refused, naming it.
"""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from facefact.serving.api import ApiError, checked_job_input, submit, wait_for_result
from facefact.serving.openai_form import OpenAIRequestError, parse_edit_fields
from facefact.serving.openai_schemas import (ImageData, ImageEditForm, ImagesResponse, OpenAIErrorBody,
                                             OpenAIErrorResponse)

PHOTO_CODES = ("no_face", "several_faces", "face_quality", "bad_image", "too_many_pixels", "too_many_photos",
               "no_photo")
ERROR_TYPES = {401: "invalid_request_error", 409: "server_error", 429: "rate_limit_error"}  # 401: as OpenAI says it
PHOTO_FIELDS = ("image", "image[]")  # one photo, or several (as the client sends a list)
EXTRA_FILES = 4  # file fields beyond the photos before the parser stops (a mask, a markup: named, then refused)


def openai_error(err: ApiError) -> JSONResponse:
    """facefact's error in OpenAI's shape; input errors (413, 415, 422 in facefact's own API) are 400, as OpenAI's."""
    status = 400 if err.status in (413, 415, 422) else err.status
    param = getattr(err, "param", None) or ("image" if err.detail.code in PHOTO_CODES else None)
    code = "invalid_api_key" if status == 401 else err.detail.code
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    message = f"{err.detail.message} ({err.detail.hint})" if err.detail.hint else err.detail.message
    headers = dict(err.headers)
    if status >= 500:
        headers["x-should-retry"] = "false"  # the official client would resend a job that just failed or timed out
    body = OpenAIErrorResponse(error=OpenAIErrorBody(message=message, type=kind, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class OpenAIErrorsRoute(APIRoute):
    """Answers this router's errors (the API key's and the form parser's included) in OpenAI's shape;
    anything unexpected still goes to the app's handler (logged, a JSON 500 without internals)."""

    def get_route_handler(self):
        handle = super().get_route_handler()

        async def handle_in_openai_shape(request: Request):
            try:
                return await handle(request)
            except ApiError as err:
                return openai_error(err)
            except StarletteHTTPException as err:  # a multipart body the parser refused
                return openai_error(ApiError(err.status_code, "bad_request", str(err.detail)))
        return handle_in_openai_shape


def openai_router(jobs, checker, config, require_key) -> APIRouter:
    router = APIRouter(prefix="/v1", route_class=OpenAIErrorsRoute, tags=["OpenAI images API"],
                       dependencies=[Depends(require_key)])
    errors = {code: {"model": OpenAIErrorResponse} for code in (400, 401, 404, 429, 504)}
    form_doc = {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": ImageEditForm.model_json_schema()}}}}

    @router.post("/images/edits", response_model=ImagesResponse, responses=errors, openapi_extra=form_doc)
    async def edit_images(request: Request):
        """Portraits of the person in the photos (`image[]`), as OpenAI's images.edit; waits for the result
        (up to the server's sync limit). facefact's settings (seed, fact_scale, steps, ...) go as further fields."""
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise OpenAIRequestError("the body must be multipart/form-data", None,
                                     hint="send the photos as file fields image[] (the openai client does)")
        async with request.form(max_files=config.max_photos + EXTRA_FILES, max_fields=256) as form:
            files = [(key, value) for key, value in form.multi_items() if not isinstance(value, str)]
            edit = parse_edit_fields([(key, value) for key, value in form.multi_items() if isinstance(value, str)])
            uploads = [value for key, value in files if key in PHOTO_FIELDS]
            refuse_other_files([key for key, _ in files], len(uploads), config.max_photos)
            photos = [await upload.read() for upload in uploads]
        job_id = submit(jobs, await checked_job_input(photos, edit.settings, checker, config))
        result = await wait_for_result(jobs, job_id, config.sync_timeout_s, "POST /v1/jobs (facefact's job API)")
        data = []
        for image in result.images:
            used = image.metadata.get("prompt")
            revised = used if used != edit.settings.prompt else None  # a style preset rewrote it
            if edit.response_format == "url":
                url = str(request.url_for("job_image", job_id=job_id, index=image.index))
                data.append(ImageData(url=url, revised_prompt=revised))
            else:
                data.append(ImageData(b64_json=image.png_base64, revised_prompt=revised))
        size = f"{result.images[0].metadata['width']}x{result.images[0].metadata['height']}" if result.images else None
        answer = ImagesResponse(created=int(time.time()), data=data, size=size)
        return JSONResponse(answer.model_dump(exclude_none=True))

    @router.post("/images/generations", responses=errors, include_in_schema=False)
    async def generate_images():
        raise OpenAIRequestError("facefact draws the person in reference photos: a prompt alone is not enough",
                                 "image", hint="call images.edit with image=[photos of the person]",
                                 code="image_required")
    return router


def refuse_other_files(names: list[str], photo_count: int, max_photos: int) -> None:
    for name in names:
        if name == "mask":
            raise OpenAIRequestError("mask is not supported here", "mask",
                                     hint="to redraw the faces of a photo, use facefact's template mode: "
                                          "POST /v1/template (docs/serving.md)")
        if name not in PHOTO_FIELDS:
            raise OpenAIRequestError(f"unexpected file field '{name}'", name,
                                     hint="send the reference photos as image[] (or one image)")
    if not photo_count:
        raise OpenAIRequestError("no reference photo was sent", "image",
                                 hint="add photos of the person as image[] file fields", code="no_photo")
    if photo_count > max_photos:
        raise OpenAIRequestError(f"{photo_count} photos sent; the server takes at most {max_photos}", "image",
                                 code="too_many_photos")
