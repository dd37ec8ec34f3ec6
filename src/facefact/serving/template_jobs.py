"""Template jobs (FACT's template mode) checked before they take a queue slot, for the API and the UI.

A template job is the template photo, one or more face photos and `targets` (template face
number -> indices of the photos of the person who goes there). Everything that can be refused
without the GPU is refused here: an unreadable photo, no face in the template, a target number
the template does not have (the message lists the faces found), a face photo without a face.
"""
from __future__ import annotations

import json

from facefact.errors import ConfigError
from facefact.serving.jobs import JobInput
from facefact.serving.photos import FaceChecker, decode_photo
from facefact.serving.schemas import TemplateFaceInfo, TemplateFaces, TemplateJobSettings

TEMPLATE = "template"


class TargetError(ConfigError):
    """`targets` names a face the template does not have, or photos that were not sent."""


def parse_targets(text: str | None, photo_count: int) -> dict[int, list[int]] | None:
    """'{"1": 0, "2": [1, 2]}' -> {1: [0], 2: [1, 2]}; None or '' -> None (all photos, largest face)."""
    if text is None or not text.strip():
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        raise TargetError("targets is not valid JSON", hint='e.g. {"1": 0, "2": 1}: template face 1 gets photo 0') from None
    if not isinstance(raw, dict) or not raw:
        raise TargetError("targets must be a JSON object {face number: photo index or list of indices}",
                          hint='e.g. {"1": 0, "2": 1}; leave it out to put every photo into the largest face')
    targets: dict[int, list[int]] = {}
    for key, value in raw.items():
        if not str(key).strip().isdigit() or int(key) < 1:
            raise TargetError(f"target '{key}' is not a face number", hint="faces are numbered 1, 2, ... left to right")
        indices = value if isinstance(value, list) else [value]
        if not indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise TargetError(f"target {key}: photo indices must be whole numbers", hint="e.g. 0, or [0, 1]")
        bad = [i for i in indices if not 0 <= i < photo_count]
        if bad:
            raise TargetError(f"target {key} names photo index {bad[0]}, but {photo_count} face photo"
                              f"{'s were' if photo_count != 1 else ' was'} sent (indices 0..{photo_count - 1})")
        targets[int(key)] = list(indices)
    unused = sorted(set(range(photo_count)) - {i for indices in targets.values() for i in indices})
    if unused:
        raise TargetError(f"face photo index {unused[0]} is given to no target",
                          hint="name every photo in targets, or send only the photos you use")
    return targets


def faces_report(checker: FaceChecker, data: bytes, max_pixels: int, min_face_px: float) -> TemplateFaces:
    """The template's numbered faces; NoFaceError when there is none."""
    from facefact.template.faces import choose_targets, largest

    rgb = decode_photo(data, 0, max_pixels, name=TEMPLATE)
    faces = checker.template_faces(rgb)
    choose_targets(faces, [], min_face_px=0.0, path=TEMPLATE)  # the library's "no face" error
    return TemplateFaces(width=int(rgb.shape[1]), height=int(rgb.shape[0]), default_target=largest(faces).number,
                         faces=[TemplateFaceInfo(**face.as_dict(), too_small=face.size_px < min_face_px)
                                for face in faces])


def template_job_input(checker: FaceChecker, template: bytes, photos: list[bytes], targets_text: str | None,
                       settings: TemplateJobSettings, max_pixels: int) -> JobInput:
    """The checked job (raises the library's errors: FaceError, ImageError, ConfigError / TargetError)."""
    from facefact.template.faces import choose_targets

    options = settings.template_settings()
    if not photos:
        raise ConfigError("no face photo was sent", hint="add one or more 'photos' file fields: the new person")
    targets = parse_targets(targets_text, len(photos))
    rgb = decode_photo(template, 0, max_pixels, name=TEMPLATE)
    faces = checker.template_faces(rgb)
    try:
        choose_targets(faces, list(targets or []), min_face_px=options.min_face_px, path=TEMPLATE)
    except TargetError:
        raise
    except ConfigError as err:  # a number out of range, or given twice: the message lists the faces found
        raise TargetError(err.message, path=err.path, hint=err.hint) from None
    for index, raw in enumerate(photos):
        checker.check(decode_photo(raw, index, max_pixels), index)
    return JobInput(photos=list(photos), settings=settings, max_pixels=max_pixels, template=template, targets=targets)
