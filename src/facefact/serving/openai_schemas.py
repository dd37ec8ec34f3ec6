"""The shapes of OpenAI's images API that `facefact serve` speaks (pydantic models: also the OpenAPI schema).

Plain data without FastAPI, so `schemas.ModelsInfo` can carry the model list the official
client's `models.list()` reads, and the routes in `openai_api` can answer in these shapes.
"""
from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field

SERVED_MODEL = "facefact"  # the one model id a facefact server lists and accepts as `model`


class OpenAIErrorBody(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, rate_limit_error or server_error")
    param: str | None = Field(default=None, description="the request field at fault, when there is one")
    code: str | None = Field(default=None, description="facefact's error code (no_face, queue_full, ...), or "
                                                       "OpenAI's own (invalid_api_key, model_not_found)")


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorBody


class ModelCard(BaseModel):
    """One entry of `GET /v1/models`' `data`, as OpenAI's `Model`."""
    id: str = SERVED_MODEL
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))  # no release date to give: the answer's time
    owned_by: str = "facefact"


class ImageData(BaseModel):
    b64_json: str | None = Field(default=None, description="the PNG, base64 (response_format b64_json)")
    url: str | None = Field(default=None, description="the PNG's job URL (response_format url): needs the API key "
                                                      "when the server has one; deleted after the result TTL")
    revised_prompt: str | None = Field(default=None, description="the prompt used, when a style preset changed it")


class ImagesResponse(BaseModel):
    created: int = Field(description="Unix time of the answer")
    data: list[ImageData]
    output_format: Literal["png"] = "png"
    size: str | None = Field(default=None, description="WIDTHxHEIGHT of the images")


class ImageEditForm(BaseModel):
    """`POST /v1/images/edits`' multipart fields (for the API's documentation; the route reads the form
    itself so every error is in OpenAI's shape). facefact's own settings may be added as further fields."""
    image: list[bytes] = Field(description="reference photos of one person, as `image[]` (or one `image`)",
                               json_schema_extra={"items": {"type": "string", "format": "binary"}})
    prompt: str = Field(description="what to draw, up to 2000 characters")
    model: str | None = Field(default=None, description=f"'{SERVED_MODEL}' (GET /v1/models)")
    n: int = Field(default=1, ge=1, le=8, description="images; image i uses seed + i")
    size: str | None = Field(default=None, description="WIDTHxHEIGHT, multiples of 8 from 64 to 1536 on "
                                                       "SD1.5, 2048 on SDXL (GET /v1/models: max_size), or 'auto' "
                                                       "(the model's size)")
    response_format: Literal["b64_json", "url"] = "b64_json"
    seed: int | None = Field(default=None, description="and every other GenerateSettings field: fact_scale, steps, "
                                                       "guidance, negative_prompt, style, scheduler, ...")
