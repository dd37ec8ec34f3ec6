"""The web UI (Gradio), mounted at /ui by `create_app`, over the same job queue as the API.

The UI submits to the queue and polls it like an API client, so UI and API users share the
GPU's one bounded queue; when it is full the page says "busy, try again". Errors show the
library's message and hint, never a traceback. Result PNGs are the queue's bytes (provenance
kept); the files handed to Gradio are deleted after the result TTL.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
from pydantic import ValidationError

from facefact.errors import FacefactError
from facefact.serving.jobs import JobInput, QueueFull, UnknownJob
from facefact.serving.photos import FaceChecker, decode_photo, photo_name
from facefact.serving.presets import STYLE_PRESETS
from facefact.serving.schemas import SCHEDULER_NAMES, GenerateSettings

NO_STYLE = "(none)"
SERVER_LORAS = "(server default)"


class ResultFiles:
    """PNG files for Gradio to serve, in a private temporary folder, removed after `ttl_s`."""

    def __init__(self, ttl_s: float):
        self._folder = tempfile.TemporaryDirectory(prefix="facefact-ui-")
        self.root, self.ttl_s = Path(self._folder.name), ttl_s
        self._lock = threading.Lock()
        threading.Thread(target=self._sweep_forever, name="facefact-ui-files", daemon=True).start()

    def _sweep_forever(self) -> None:
        while self.root.exists():
            time.sleep(min(30.0, max(0.05, self.ttl_s / 4)))
            self.sweep()

    def write(self, job_id: str, images) -> list[str]:
        folder = self.root / job_id
        folder.mkdir()
        paths = []
        for index, image in enumerate(images):
            path = folder / f"facefact_{image.seed}.png"
            if path.exists():
                path = folder / f"facefact_{image.seed}_{index}.png"
            path.write_bytes(image.png)
            paths.append(str(path))
        return paths

    def sweep(self) -> None:
        cutoff = time.time() - self.ttl_s
        with self._lock:
            for folder in list(self.root.iterdir()) if self.root.exists() else []:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)


def result_outputs(gallery_label: str, elem_ids: tuple[str, str, str, str]) -> list:
    """The results column of both tabs: the gallery, the PNG files (with their provenance metadata, which
    the gallery's own download drops), the seed used and a status line."""
    gallery, downloads, seed, status = elem_ids
    return [gr.Gallery(label=gallery_label, format="png", columns=2, elem_id=gallery),
            gr.File(label="PNG files (with their provenance metadata)", file_count="multiple", interactive=False,
                    elem_id=downloads),
            gr.Textbox(label="Seed used", interactive=False, elem_id=seed),
            gr.Markdown(elem_id=status)]

def checked_settings(schema, fields: dict):
    """The tab's settings as the API's schema, or a Gradio error listing each field that is wrong."""
    try:
        return schema(**fields)
    except ValidationError as err:
        raise gr.Error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()),
                       print_exception=False) from None

def message_of(err: FacefactError) -> str:
    text = f"{err.path}: {err.message}" if err.path and err.path not in err.message else err.message
    return f"{text}. {err.hint}" if err.hint else text


def face_check_view(checker: FaceChecker, files, max_pixels: int):
    """(face crops, markdown) for the photos just uploaded."""
    if not files:
        return [], ""
    crops, lines = [], []
    for index, file in enumerate(files):
        try:
            check = checker.check(decode_photo(Path(file).read_bytes(), index, max_pixels), index, with_crop=True)
        except FacefactError as err:
            words = f"{err.message}. {err.hint}" if err.hint else err.message
            lines.append(f"- **{photo_name(index)}: not usable** - {words}")
            continue
        crops.append((check.crop, photo_name(index)))
        words = "; ".join(check.notes)
        lines.append(f"- {photo_name(index)}: face found" + (f" - {words}" if words else ""))
    return crops, "\n".join(lines)


def build_ui(jobs, checker: FaceChecker, config) -> gr.Blocks:
    files = ResultFiles(config.result_ttl_s)
    with gr.Blocks(title="facefact", delete_cache=(60, max(60, int(config.result_ttl_s)))) as demo:
        gr.Markdown("## facefact - portraits of the person in your photos\nImages are AI-generated and say so "
                    "in their metadata. Photos are used for the job only; results are deleted after "
                    f"{config.result_ttl_s:g} s.")
        with gr.Tab("Portraits"), gr.Row():
            with gr.Column():
                photos = gr.File(label="Reference photos (one person)", file_count="multiple",
                                 file_types=["image"], elem_id="photos")
                face_crops = gr.Gallery(label="Face check: the face each photo gives", columns=4, height=200,
                                        object_fit="contain", allow_preview=False, fit_columns=False,
                                        elem_id="face_check")
                face_notes = gr.Markdown(elem_id="face_notes")
                settings = _settings_inputs(jobs.default_size(), jobs.loras(), _slider_max(jobs))
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                results = result_outputs("Portraits", ("gallery", "downloads", "used_seed", "status"))
        with gr.Tab("Template"):
            from facefact.serving.ui_template import build_template_tab

            build_template_tab(jobs, checker, config, files)
        # Behind Redis the workers say their model (SD1.5 or SDXL) once they run: each page load asks again.
        demo.load(lambda: _size_updates(jobs), None, settings[-2:], api_name=False, show_progress="hidden")
        photos.change(lambda f: face_check_view(checker, f, config.max_photo_pixels), photos, [face_crops, face_notes],
                      api_name=False, concurrency_limit=2)
        # The handlers mostly wait on the shared queue, which does the bounding ("busy" when full).
        button.click(_generate_handler(jobs, checker, config, files), [photos, *settings], results,
                     api_name=False, concurrency_limit=config.queue_size + jobs.workers + 1)
    return demo


def _slider_max(jobs) -> int:
    from facefact.serving.families import UI_MAX_SIDE

    return UI_MAX_SIDE.get(jobs.base_family() or "sd15", UI_MAX_SIDE["sd15"])


def _size_updates(jobs) -> list:
    """Width and height following the served family: its default size, its sliders' range."""
    size, top = jobs.default_size(), _slider_max(jobs)
    return [gr.update(value=size, maximum=top)] * 2


def _settings_inputs(size: int, loras: dict[str, float], max_side: int = 1024) -> list:
    """The generation settings, in the order `_generate_handler`'s function takes them; width and
    height from 64 to `max_side` (the served family's: 1024 for SD1.5, 2048 for SDXL)."""
    prompt = gr.Textbox(label="Prompt", value="a portrait in a garden", elem_id="prompt")
    negative = gr.Textbox(label="Negative prompt", elem_id="negative")
    style = gr.Dropdown([NO_STYLE, *STYLE_PRESETS], value=NO_STYLE, label="Style preset")
    with gr.Row(visible=bool(loras)):  # only when the server was started with --lora
        lora = gr.Dropdown([SERVER_LORAS, *loras], value=SERVER_LORAS, label="LoRA", elem_id="lora")
        lora_weight = gr.Slider(0, 1.5, value=1.0, step=0.05, label="LoRA weight")
    fact_scale = gr.Slider(0, 1.5, value=0.5, step=0.05, label="FACT scale (0 = base model)")
    count = gr.Slider(1, 8, value=2, step=1, label="Number of images", elem_id="n_images")
    with gr.Row():
        seed = gr.Number(label="Seed", value=0, precision=0, elem_id="seed")
        randomize = gr.Checkbox(label="Randomize seed", value=True, elem_id="randomize")
    with gr.Accordion("Advanced", open=False):
        steps = gr.Slider(1, 150, value=30, step=1, label="Steps", elem_id="steps")
        guidance = gr.Slider(0, 15, value=5.0, step=0.5, label="Guidance scale")
        scheduler = gr.Dropdown(list(SCHEDULER_NAMES), value="pndm", label="Scheduler")
        combine = gr.Dropdown(["concat", "mean", "weighted"], value="concat",
                              label="Several photos: all tokens (concat), their mean, or quality-weighted mean")
        fact_start = gr.Slider(0, 1, value=0, step=0.05, label="FACT starts at this fraction of the steps")
        width = gr.Slider(64, max_side, value=size, step=8, label="Width", elem_id="width")
        height = gr.Slider(64, max_side, value=size, step=8, label="Height", elem_id="height")
    return [prompt, negative, style, lora, lora_weight, fact_scale, count, seed, randomize, steps, guidance,
            scheduler, combine, fact_start, width, height]


def _generate_handler(jobs, checker: FaceChecker, config, files: ResultFiles):
    def generate(photo_files, prompt_text, negative_text, style_name, lora_name, lora_value, scale, n, seed_value,
                 random_seed, n_steps, guidance_value, scheduler_name, combine, fact_start, w, h,
                 progress=gr.Progress()):
        job_id = _submit(jobs, checker, config, photo_files, dict(
            prompt=prompt_text, negative_prompt=negative_text or None,
            style=None if style_name == NO_STYLE else style_name, fact_scale=scale, num_images=int(n),
            seed=None if random_seed else int(seed_value or 0), steps=int(n_steps), guidance=guidance_value,
            scheduler=scheduler_name, face_combine=combine, width=int(w), height=int(h),
            fact_window=(float(fact_start), 1.0) if fact_start else None,
            loras=None if lora_name in (None, SERVER_LORAS) else {lora_name: float(lora_value)}))
        result = _follow(jobs, job_id, progress)
        paths = files.write(job_id, result)
        notes = "\n".join(f"- {note}" for note in jobs.status(job_id).notes)
        return paths, paths, ", ".join(str(image.seed) for image in result), notes or "Done."
    return generate


def _submit(jobs, checker: FaceChecker, config, photo_files, fields: dict):
    if not photo_files:
        raise gr.Error("Add a reference photo first.", print_exception=False)
    settings = checked_settings(GenerateSettings, fields)
    data = [Path(file).read_bytes() for file in photo_files]
    try:
        for index, raw in enumerate(data):
            checker.check(decode_photo(raw, index, config.max_photo_pixels), index)
        job_id = jobs.submit(JobInput(photos=data, settings=settings, max_pixels=config.max_photo_pixels))
    except FacefactError as err:
        raise gr.Error(message_of(err), print_exception=False) from None
    except QueueFull as full:
        raise gr.Error(f"Busy, try again in about {full.retry_after_s} s.", print_exception=False) from None
    return job_id


def _follow(jobs, job_id: str, progress):
    """Wait for the job, showing its step progress; its images, or a readable error."""
    try:
        while True:
            status = jobs.wait(job_id, 0.25)
            if status.state == "queued":
                progress(0, desc=f"waiting in the queue ({(status.queue_position or 0) + 1})")
            elif status.state == "running" and status.progress.total:
                progress((status.progress.step, status.progress.total), desc="denoising", unit="steps")
            if status.state not in ("queued", "running"):
                break
        if status.state != "succeeded":
            detail = status.error
            raise gr.Error(f"{detail.message}. {detail.hint}" if detail.hint else detail.message,
                           print_exception=False)
        return jobs.images(job_id)
    except UnknownJob:
        raise gr.Error("The results expired before they could be shown; generate again.",
                       print_exception=False) from None
