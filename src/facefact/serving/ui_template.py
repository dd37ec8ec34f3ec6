"""The web UI's Template tab: FACT's template mode over the same job queue as the API.

Upload a template photo -> its faces, boxed and numbered left to right (the numbers the template
mode and `targets` use) -> pick the face(s) to redraw and upload the new person's photo(s) (one
person, or two) -> generate. Errors are the library's words; a full queue says "busy, try again".
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from facefact.errors import FacefactError
from facefact.serving.jobs import QueueFull
from facefact.serving.schemas import SCHEDULER_NAMES, TemplateJobSettings
from facefact.serving.template_jobs import TEMPLATE, faces_report, template_job_input

NO_FACE = "(none)"


def faces_view(checker, file, max_pixels: int):
    """(numbered-faces picture, markdown, first target choices, second target choices) for the upload."""
    empty = gr.update(choices=[], value=None)
    if not file:
        return None, "", empty, gr.update(choices=[NO_FACE], value=NO_FACE)
    from facefact.serving.photos import decode_photo
    from facefact.template.settings import TemplateSettings
    from facefact.serving.ui import message_of

    data = Path(file).read_bytes()
    try:
        report = faces_report(checker, data, max_pixels, TemplateSettings().min_face_px)
    except FacefactError as err:
        return None, f"**Template not usable** - {message_of(err)}", empty, gr.update(choices=[NO_FACE], value=NO_FACE)
    rgb = decode_photo(data, 0, max_pixels, name=TEMPLATE)
    picture = numbered_faces(rgb, checker.template_faces(rgb), report.default_target)
    lines = [f"{len(report.faces)} face{'s' if len(report.faces) != 1 else ''} found, numbered left to right:"]
    for face in report.faces:
        words = " (default: the largest)" if face.number == report.default_target else ""
        words += " - too small to redraw" if face.too_small else ""
        lines.append(f"- face {face.number}: {face.width:.0f}x{face.height:.0f} px{words}")
    numbers = [str(face.number) for face in report.faces]
    return (picture, "\n".join(lines), gr.update(choices=numbers, value=str(report.default_target)),
            gr.update(choices=[NO_FACE, *numbers], value=NO_FACE))


def numbered_faces(rgb, faces, default: int, side: int = 768):
    """The template at ``side`` px on its long side, each face boxed with its number in large type
    (the default target in red), readable at the UI's size."""
    import cv2

    scale = side / max(rgb.shape[:2])
    out = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    for face in faces:
        x1, y1, x2, y2 = (int(round(v * scale)) for v in face.bbox)
        colour = (255, 40, 40) if face.number == default else (255, 210, 0)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 4)
        label = str(face.number)
        (w, h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 1.4, 3)
        top = max(0, y1 - h - 14)
        cv2.rectangle(out, (x1, top), (x1 + w + 12, top + h + 14), colour, -1)
        cv2.putText(out, label, (x1 + 6, top + h + 7), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (0, 0, 0), 3, cv2.LINE_AA)
    return out


def build_template_tab(jobs, checker, config, files) -> None:
    """The tab's components and handlers (call inside `gr.Blocks`)."""
    from facefact.serving.ui import result_outputs  # ui imports this module when it builds the tab
    with gr.Row():
        with gr.Column():
            template = gr.File(label="Template photo (its other pixels are kept)", file_types=["image"],
                               elem_id="template")
            faces = gr.Image(label="Faces found (numbered left to right)", show_label=False, interactive=False,
                             height=260, elem_id="template_faces")  # no label box over the first face's number
            faces_notes = gr.Markdown(elem_id="template_notes")
            with gr.Row():
                target_1 = gr.Dropdown([], label="Redraw face", elem_id="target_1")
                person_1 = gr.File(label="...with this person (photos)", file_count="multiple", file_types=["image"],
                                   elem_id="person_1")
            with gr.Accordion("Second person (optional)", open=False), gr.Row():
                target_2 = gr.Dropdown([NO_FACE], value=NO_FACE, label="Also redraw face", elem_id="target_2")
                person_2 = gr.File(label="...with this person (photos)", file_count="multiple", file_types=["image"],
                                   elem_id="person_2")
            knobs = _knob_inputs(jobs.default_size())
            button = gr.Button("Generate", variant="primary", elem_id="template_generate")
        with gr.Column():
            results = result_outputs("Template portraits", ("template_gallery", "template_downloads",
                                                             "template_seed", "template_status"))
    template.change(lambda f: faces_view(checker, f, config.max_photo_pixels), template,
                    [faces, faces_notes, target_1, target_2], api_name=False, concurrency_limit=2)
    button.click(_generate_handler(jobs, checker, config, files),
                 [template, target_1, person_1, target_2, person_2, *knobs], results,
                 api_name=False, concurrency_limit=config.queue_size + jobs.workers + 1)


# SD1.5's own image size: the release's template defaults (crop 512, 50 steps) are for models this size.
RELEASE_MODEL_SIZE = 512
SMALL_MODEL_STEPS = 10


def knob_defaults(model_size: int) -> dict:
    """The Template tab's starting crop and steps for the loaded model: the release's for an SD1.5-sized
    model; for a smaller one (the tiny test models, 128 px) its own size as the crop and 10 steps -
    at the release's 512 px and 50 steps a tiny-model job took 10-11 minutes on 2 CPU cores."""
    from facefact.template.settings import TemplateSettings

    release = TemplateSettings()
    if model_size >= RELEASE_MODEL_SIZE:  # the model's own size: 512 on SD1.5 (the release's), 1024 on SDXL
        return {"crop_size": model_size, "steps": release.steps, "note": ""}
    return {"crop_size": model_size, "steps": SMALL_MODEL_STEPS,
            "note": f"This server's model works at {model_size} px (the tiny test models): the face crop starts "
                    f"at {model_size} px and {SMALL_MODEL_STEPS} steps so a job takes seconds; the release's "
                    f"values for SD1.5 models are {RELEASE_MODEL_SIZE} px and {release.steps} steps."}


def _knob_inputs(model_size: int) -> list:
    """The template knobs, in the order `_generate_handler`'s function takes them: the release's
    defaults, with the crop and steps the loaded model's (knob_defaults)."""
    start = knob_defaults(model_size)
    strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="Strength (how much of the face is redrawn)",
                         elem_id="t_strength")
    fact_scale = gr.Slider(0, 1.5, value=0.55, step=0.05, label="FACT scale", elem_id="t_fact_scale")
    count = gr.Slider(1, 8, value=1, step=1, label="Number of images", elem_id="t_n_images")
    with gr.Row():
        seed = gr.Number(label="Seed", value=0, precision=0, elem_id="t_seed")
        randomize = gr.Checkbox(label="Randomize seed", value=True, elem_id="t_randomize")
    gr.Markdown(start["note"], visible=bool(start["note"]), elem_id="t_model_note")  # why not 512 / 50
    with gr.Accordion("Advanced", open=False, elem_id="t_advanced"):
        steps = gr.Slider(1, 150, value=start["steps"], step=1, label="Steps (strength x steps run)",
                          elem_id="t_steps")
        guidance = gr.Slider(0, 15, value=5.0, step=0.5, label="Guidance scale")
        scheduler = gr.Dropdown(list(SCHEDULER_NAMES), value="pndm", label="Scheduler")
        refine = gr.Checkbox(label="Refine pass (the release's light second pass)", value=True, elem_id="t_refine")
        crop = gr.Slider(64, 1024, value=start["crop_size"], step=8, label="Face crop size the model works on",
                         elem_id="t_crop")
        prompt = gr.Textbox(label="Prompt (empty: the release's portrait prompt)", elem_id="t_prompt")
    return [strength, fact_scale, count, seed, randomize, steps, guidance, scheduler, refine, crop, prompt]


def _generate_handler(jobs, checker, config, files):
    from facefact.serving.ui import _follow

    def generate(template_file, first, first_files, second, second_files, strength, scale, n, seed_value,
                 random_seed, n_steps, guidance, scheduler, refine, crop, prompt, progress=gr.Progress()):
        job_id = _submit(jobs, checker, config, template_file, [(first, first_files), (second, second_files)], dict(
            strength=strength, fact_scale=scale, num_images=int(n), seed=None if random_seed else int(seed_value or 0),
            steps=int(n_steps), guidance=guidance, scheduler=scheduler, refine=bool(refine), crop_size=int(crop),
            prompt=prompt or None))
        result = _follow(jobs, job_id, progress)
        paths = files.write(job_id, result)
        notes = "\n".join(f"- {note}" for note in jobs.status(job_id).notes)
        return paths, paths, ", ".join(str(image.seed) for image in result), notes or "Done."
    return generate


def _people(pairs) -> tuple[list[bytes], str]:
    """[(face number, photo files)] -> (every photo's bytes, targets JSON mapping each face to its photos)."""
    import json

    photos, targets = [], {}
    for number, photo_files in pairs:
        if number in (None, "", NO_FACE) or not photo_files:
            continue
        if str(number) in targets:
            raise gr.Error(f"Face {number} is picked for both people; pick another face for the second one.",
                           print_exception=False)
        targets[str(number)] = list(range(len(photos), len(photos) + len(photo_files)))
        photos += [Path(f).read_bytes() for f in photo_files]
    return photos, json.dumps(targets)


def _submit(jobs, checker, config, template_file, pairs, fields: dict) -> str:
    from facefact.serving.ui import message_of

    if not template_file:
        raise gr.Error("Add a template photo first.", print_exception=False)
    photos, targets = _people(pairs)
    if not photos:
        raise gr.Error("Pick a face and add a photo of the person who goes there.", print_exception=False)
    from facefact.serving.ui import checked_settings

    settings = checked_settings(TemplateJobSettings, fields)
    try:
        job_input = template_job_input(checker, Path(template_file).read_bytes(), photos, targets, settings,
                                       config.max_photo_pixels)
        return jobs.submit(job_input)
    except FacefactError as err:
        raise gr.Error(message_of(err), print_exception=False) from None
    except QueueFull as full:
        raise gr.Error(f"Busy, try again in about {full.retry_after_s} s.", print_exception=False) from None
