"""`POST /v1/images/edits`' multipart form -> facefact's `GenerateSettings`, as OpenAI's client sends it.

The official client sends scalars as plain fields, lists as repeated `name[]` fields (a list of
lists as a flat run of `name[][]`) and dicts as `name[key]` fields, every value a string; its
`extra_body` arrives the same way. OpenAI's fields map onto facefact's settings (`n` ->
num_images, `size` -> width / height); facefact's other settings are accepted as further fields.
OpenAI fields that only tune OpenAI's own models are accepted and have no effect; those asking
for something facefact cannot give (streaming, transparency, JPEG, a mask) are refused, as is a
field nobody knows (OpenAI does the same), so a typo is never silently ignored.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import ValidationError

from facefact.serving.api import ApiError
from facefact.serving.openai_schemas import SERVED_MODEL
from facefact.serving.schemas import GenerateSettings

# OpenAI's own knobs for its models: nothing to do here, and harmless to accept.
NO_EFFECT = ("quality", "input_fidelity", "user", "safety_identifier", "moderation", "complexity")
# OpenAI fields whose value facefact can honour only as listed.
CHOICES = {"response_format": ("b64_json", "url"), "output_format": ("png",), "background": ("auto", "opaque"),
           "stream": ("false",), "partial_images": ("0",)}
NOT_SUPPORTED = ("markup", "frame_count", "frame_duration_ms", "svg", "output_compression")
# Settings that come from OpenAI's own fields, with the field to use instead.
MAPPED = {"num_images": "n", "width": "size", "height": "size"}
STRUCTURED = ("fact_window", "fact_scale_levels", "face_regions", "loras")  # may also come as JSON text
REGION_VALUES = 4  # face_regions: the client flattens [[x0, y0, x1, y1], ...] into one run of face_regions[][]
PARAM_OF_SETTING = {"num_images": "n", "width": "size", "height": "size"}


class OpenAIRequestError(ApiError):
    """A request refused in OpenAI's terms: 400 invalid_request_error naming the field (`param`)."""

    def __init__(self, message: str, param: str | None, hint: str | None = None, status: int = 400,
                 code: str = "invalid_value"):
        super().__init__(status, code, message, hint)
        self.param = param


@dataclass
class EditRequest:
    settings: GenerateSettings
    response_format: str


def parse_edit_fields(items: list[tuple[str, str]]) -> EditRequest:
    """The form's text fields (name, value) in order -> the request; raises OpenAIRequestError."""
    fields = group_fields(items)
    openai = {name: scalar(name, fields.pop(name)) for name in ("prompt", "model", "n", "size", *CHOICES, *NO_EFFECT)
              if name in fields}
    for name, allowed in CHOICES.items():
        if name in openai and openai[name] not in allowed:
            raise OpenAIRequestError(f"{name} '{openai[name]}' is not supported by facefact", name,
                                     hint=f"use {' or '.join(allowed)}, or leave it out")
    model = openai.get("model") or SERVED_MODEL
    if model != SERVED_MODEL:
        raise OpenAIRequestError(f"the model '{model}' does not exist on this server", "model",
                                 hint=f"use model='{SERVED_MODEL}' (GET /v1/models)", status=404,
                                 code="model_not_found")
    given = {"prompt": openai.get("prompt"), **size_fields(openai.get("size"))}
    if "n" in openai:
        given["num_images"] = openai["n"]
    given.update(facefact_settings(fields))
    if given["prompt"] is None:
        raise OpenAIRequestError("prompt is required", "prompt", hint="describe the image to draw")
    try:
        settings = GenerateSettings.model_validate(given)
    except ValidationError as err:
        raise settings_error(err) from None
    return EditRequest(settings=settings, response_format=openai.get("response_format", "b64_json"))


def group_fields(items: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """{field name: [(the brackets after it, value), ...]}: `fact_window[]` is field fact_window, '[]'."""
    fields: dict[str, list[tuple[str, str]]] = {}
    for key, value in items:
        name = key.split("[", 1)[0]
        fields.setdefault(name, []).append((key[len(name):], value))
    return fields


def scalar(name: str, entries: list[tuple[str, str]]) -> str:
    if len(entries) != 1 or entries[0][0]:
        raise OpenAIRequestError(f"{name} must be given once, as a plain value", name)
    return entries[0][1]


def size_fields(size: str | None) -> dict[str, str]:
    """'512x768' -> width 512, height 768 (checked as facefact's settings); None or 'auto': the model's size."""
    if size is None or size == "auto":
        return {}
    match = re.fullmatch(r"(\d{1,5})x(\d{1,5})", size.strip())
    if match is None:
        raise OpenAIRequestError(f"size '{size}' is not WIDTHxHEIGHT", "size",
                                 hint="e.g. 512x512 (multiples of 8, 64 to the model's max_size: 1536 on SD1.5, "
                                      "2048 on SDXL), or auto for the model's size")
    return {"width": match[1], "height": match[2]}


def facefact_settings(fields: dict[str, list[tuple[str, str]]]) -> dict[str, object]:
    """The remaining fields: facefact's GenerateSettings by name, decoded from the client's encoding."""
    settings: dict[str, object] = {}
    for name, entries in fields.items():
        if name in ("image", "mask"):
            raise OpenAIRequestError(f"{name} must be a file", name)
        if name in NOT_SUPPORTED:
            raise OpenAIRequestError(f"{name} is not supported by facefact", name, hint="leave it out")
        if name in MAPPED:
            raise OpenAIRequestError(f"{name} comes from OpenAI's '{MAPPED[name]}' field here", name,
                                     hint=f"send {MAPPED[name]} instead")
        if name not in GenerateSettings.model_fields or name == "prompt":
            own = [n for n in GenerateSettings.model_fields if n not in MAPPED and n != "prompt"]
            raise OpenAIRequestError(f"unknown parameter '{name}'", name, code="unknown_parameter",
                                     hint=f"OpenAI's fields, or facefact's settings: {', '.join(own)}")
        settings[name] = decode_value(name, entries)
    return settings


def decode_value(name: str, entries: list[tuple[str, str]]) -> object:
    """One field's value: a string, a list (`name[]`), a list of regions (`name[][]`), a dict (`name[key]`),
    or JSON text for a structured setting."""
    shapes = {suffix if suffix in ("", "[]", "[][]") else "[key]" for suffix, _ in entries}
    if len(shapes) != 1:
        raise OpenAIRequestError(f"{name} is given in two forms", name)
    shape = shapes.pop()
    values = [value for _, value in entries]
    if shape == "[]":
        return values
    if shape == "[][]" and name == "face_regions" and len(values) % REGION_VALUES == 0:
        return [values[i:i + REGION_VALUES] for i in range(0, len(values), REGION_VALUES)]
    if shape == "[key]":
        keys = [suffix[1:-1] for suffix, _ in entries]
        if not all(re.fullmatch(r"\[[^\[\]]*\]", suffix) for suffix, _ in entries) or len(set(keys)) != len(keys):
            raise OpenAIRequestError(f"{name} is not a flat mapping of names to values", name)
        return dict(zip(keys, values))
    if shape == "" and len(values) == 1:
        if name in STRUCTURED:
            try:
                return json.loads(values[0])
            except ValueError:
                raise OpenAIRequestError(f"{name} is neither a list / mapping nor JSON text", name) from None
        return values[0]
    raise OpenAIRequestError(f"{name} cannot be read as sent", name,
                             hint="send it as a plain value, a list or a mapping (extra_body), or as JSON text")


def settings_error(err: ValidationError) -> OpenAIRequestError:
    """Pydantic's complaints about the settings, each named by the request field it came from."""
    problems, params = [], []
    for problem in err.errors():
        setting = str(problem["loc"][0]) if problem["loc"] else "settings"
        param = PARAM_OF_SETTING.get(setting, setting)
        params.append(param)
        where = ".".join(str(p) for p in problem["loc"])
        problems.append(f"{param}: {problem['msg']}" if param == where else f"{param} ({where}): {problem['msg']}")
    return OpenAIRequestError("; ".join(problems), params[0] if params else None,
                              hint="see the fields of POST /v1/images/edits in /docs", code="bad_settings")
