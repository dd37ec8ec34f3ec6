"""The provenance dict of each generated image (what `out.metadata[i]` holds and PNGs carry).

Model ids only, never local paths (the metadata travels with the images, and a full path names
the user and their folders); hashes are added where files are written (`FACTPipelineOutput.save`).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

from facefact import __version__

# Scalar arguments of the diffusers parents worth recording when given (the rest are tensors,
# images or callbacks).
RECORDED_ARGUMENTS = ("strength", "eta", "guess_mode", "controlnet_conditioning_scale", "control_guidance_start",
                      "control_guidance_end", "clip_skip", "guidance_rescale", "padding_mask_crop")


def model_entry(source, local_file: Path | None, weight_name: str | None = None) -> dict:
    """{"id": ...} for a model given as `source` and found at `local_file`: a hub id as given (with
    the file's name), a local file or folder by its name only."""
    from facefact.pipelines.registry import looks_like_hub_id

    text = str(source)
    if text.startswith("modelscope:") or looks_like_hub_id(text):
        entry = {"id": text}
        if local_file is not None:
            entry["file"] = Path(local_file).name
        return entry
    return {"id": Path(local_file).name if local_file is not None else Path(text).name}


def base_model_entry(pipe) -> dict:
    from facefact.pipelines.registry import looks_like_hub_id

    tiny = getattr(pipe, "_facefact_tiny", None)
    if tiny is not None:
        return {"id": "facefact-tiny/base_model", "seed": tiny}
    where = str(getattr(pipe.config, "_name_or_path", "") or "")
    if not where:
        return {"id": "<components>"}
    return {"id": where if looks_like_hub_id(where) else Path(where).name}


def _scalar(value):
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return [float(v) for v in value]
    return None


def image_metadata(pipe, images, given, prompts, per_prompt, seeds, shared_generator, faces, fact_scale, cfg_face,
                   notes, request=None, row_notes=None) -> list[dict]:
    """Each image's provenance. With one person per prompt (`faces.rows`), prompt p's images name
    that person's photos and carry `row_notes[p]` instead of the whole call's notes."""
    models = {"base_model": base_model_entry(pipe), **copy.deepcopy(getattr(pipe, "_fact_models", {}) or {})}
    controlnet = getattr(pipe, "controlnet", None)
    if controlnet is not None:
        info = getattr(pipe, "_facefact_controlnet_info", None)
        if info is None:  # given to diffusers' own loading: named by where each was loaded from
            nets = list(getattr(controlnet, "nets", [controlnet]))
            info = [model_entry(n.config._name_or_path, None) if n.config.get("_name_or_path")
                    else {"id": "<ControlNetModel>"} for n in nets]
        models["controlnet"] = copy.deepcopy(info)
    if loras := pipe.lora_provenance():
        models["loras"] = loras
    negative = given("negative_prompt")
    settings = {
        "pipeline": type(pipe).__name__, "steps": given("num_inference_steps"), "guidance_scale": given("guidance_scale"),
        "scheduler": type(pipe.scheduler).__name__, "dtype": str(pipe.unet.dtype).replace("torch.", ""),
        "fact_scale": fact_scale if not isinstance(fact_scale, dict) else dict(fact_scale),
        "cfg_face": bool(cfg_face) if faces is not None else None,
    }
    if faces is not None and request is not None:
        settings.update(request.as_metadata())
    for name in RECORDED_ARGUMENTS:
        value = _scalar(given(name))
        if value is not None:
            settings[name] = value
    out = []
    for index, image in enumerate(images):
        row = index // per_prompt
        prompt = prompts[row] if row < len(prompts) else None
        row_faces = faces.rows[row] if faces is not None and faces.rows is not None else faces
        meta = {"generator": f"facefact {__version__}", "method": "FaceChain-FACT" if faces is not None else "base model",
                "ai_generated": True, "prompt": prompt if prompt is not None else "<prompt_embeds>",
                "negative_prompt": (negative[row] if isinstance(negative, list) else negative) or "",
                "seed": seeds[index] if index < len(seeds) else None, **settings,
                **_face_settings(row_faces, request is not None), "models": copy.deepcopy(models),
                "notes": list(row_notes[row] if row_notes is not None else notes)}
        if hasattr(image, "getpixel"):  # PIL
            meta["width"], meta["height"] = image.size
        elif hasattr(image, "shape") and len(image.shape) == 3:  # one image of output_type "np" / "pt"
            height, width = image.shape[:2] if image.shape[-1] in (1, 3, 4) else image.shape[1:]
            meta["width"], meta["height"] = int(width), int(height)
        if shared_generator:
            meta["batch_index"], meta["batch_size"] = index, len(images)
        out.append({k: v for k, v in meta.items() if v is not None})
    return out


def _face_settings(faces, with_request: bool) -> dict:
    """The reference photos behind one image's face tokens, and how they were combined."""
    out = {"num_reference_photos": faces.num_photos if faces is not None else 0}
    if faces is not None and with_request:
        out["face_combine"] = faces.combine  # what the tokens are (face_tokens= may come combined)
        if faces.weights is not None:
            out["photo_weights"] = [round(w, 4) for w in faces.weights]
    return out
