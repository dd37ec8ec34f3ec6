"""`TemplatePortrait`: put one or several people into an existing photo, keeping everything else.

    maker = TemplatePortrait(pipe)                              # a FACT inpainting-capable pipeline
    faces = maker.faces("group.jpg")                            # numbered left to right
    out = maker("group.jpg", {1: "alice.jpg", 2: ["bob.jpg", "bob2.jpg"]}, seed=7, num_images=2)

For every output and every target face: the main inpaint of the face crop (512 px on SD1.5, 1024 on
SDXL: the base family's own size, from the UNet config, unless ``crop_size`` is set; strength 0.6,
guidance 5, 50 PNDM steps, FACT scale 0.55, cfg_face, controls face landmarks 1.0 + Canny 0.2), an optional
refine pass (strength 0.1, controls 0.8 / 0.8, face mask + 0.02 sqrt(area)), then the crop is pasted
into the full-resolution template through a feathered mask; every pixel outside it is the
template's own. Output i is made from seed + i.
"""
from __future__ import annotations

import copy
import hashlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facefact import __version__
from facefact.errors import ConfigError
from facefact.template import backend
from facefact.template.faces import TemplateFace, choose_targets, find_faces
from facefact.template.geometry import paste
from facefact.template.masks import paste_weight
from facefact.template.prepare import Identity, TargetPlan, plan_target, refine_inputs
from facefact.template.settings import TemplateSettings

# A template keeps its full resolution (only the face crops meet the model): up to 100 megapixels
# (300 MB of RGB; a 10000 x 10000 photo), twice the limit of a face photo, which may be decoded smaller.
TEMPLATE_MAX_PIXELS = 100_000_000


@dataclass
class TemplateOutput:
    images: list                       # PIL images at the template's full resolution; image i from seeds[i]
    metadata: list[dict]               # provenance per image
    notes: list[str] = field(default_factory=list)
    faces: list[TemplateFace] = field(default_factory=list)   # every kept template face, numbered
    plans: list[TargetPlan] = field(default_factory=list)     # crops, masks and controls per target
    model_files: dict = field(default_factory=dict)           # role -> local file, hashed when saved

    def metadata_with_hashes(self) -> list[dict]:
        """The metadata with the local model files' short sha256 (as FACT pipeline outputs add them)."""
        from facefact.pipelines.output import FACTPipelineOutput

        return FACTPipelineOutput(images=self.images, nsfw_content_detected=None, metadata=self.metadata,
                                  model_files=self.model_files).metadata_with_hashes()

    def save(self, folder, name: str = "template", overwrite: bool = False) -> list:
        """Every image as ``<folder>/<name>_<seed>.png`` with its provenance (and model hashes)."""
        from facefact.pipelines.metadata import write_png

        return [write_png(image, Path(folder) / f"{name}_{meta['seed']}.png", meta, overwrite=overwrite)
                for image, meta in zip(self.images, self.metadata_with_hashes())]


@dataclass
class LoadedTemplate:
    """The template photo as loaded; ``name`` is its path (kept out of the provenance)."""

    rgb: np.ndarray
    name: str | None
    sha256: str


@dataclass
class Prepared:
    """The output of :meth:`TemplatePortrait.prepare`: what the diffusion passes need."""

    template: LoadedTemplate
    faces: list[TemplateFace]
    plans: list[TargetPlan]
    settings: TemplateSettings
    notes: list[str]
    family: str | None = None   # the base family the crop size was chosen for (None: crop_size was set)


def load_template(source, analysis) -> LoadedTemplate:
    """The template as RGB (EXIF orientation applied, alpha on white, CMYK / 16-bit converted), and
    the sha256 of its file (of its pixels for an in-memory image) for the provenance."""
    from facefact.faces.image_io import load_image

    name = str(source) if isinstance(source, (str, Path)) else None
    # Never decoded downscaled (as a face photo may be): every pixel of the template comes back.
    rgb = load_image(source, max_pixels=TEMPLATE_MAX_PIXELS, downscale=False) if name else analysis.load(source)
    digest = hashlib.sha256(Path(source).read_bytes() if name else rgb.tobytes()).hexdigest()
    return LoadedTemplate(rgb=rgb, name=name, sha256=digest)


def _as_list(photos) -> list:
    return list(photos) if isinstance(photos, (list, tuple)) else [photos]


class TemplatePortrait:
    """Redraws chosen faces of template photos with new identities through a FACT inpainting pipeline
    (``pipe``: see :mod:`facefact.template.backend`). ``analysis``: a FaceAnalysis (made on first
    use); ``settings``: the defaults of every call."""

    def __init__(self, pipe, *, analysis=None, settings: TemplateSettings | None = None):
        self.pipe, self.info = None, None
        if pipe is not None:
            self.use_pipeline(pipe)
        self.settings = (settings or TemplateSettings()).validate()
        self._analysis = analysis
        self._landmarker = None
        self._sibling = self._sibling_of = None  # the pose stage's text-to-image pipeline, made on first use

    def use_pipeline(self, pipe) -> None:
        """Set (or replace) the pipeline; one that cannot inpaint is refused here, naming what to use."""
        self.info = backend.inspect_pipeline(pipe)
        self.pipe = pipe

    @property
    def analysis(self):
        if self._analysis is None:
            from facefact.faces import FaceAnalysis

            self._analysis = FaceAnalysis()
        return self._analysis

    def faces(self, template, *, max_faces: int | None = None) -> list[TemplateFace]:
        """The template's faces, numbered left to right (what ``targets`` count)."""
        rgb = template if isinstance(template, np.ndarray) else load_template(template, self.analysis).rgb
        return find_faces(self.analysis, rgb, max_faces=max_faces if max_faces is not None else self.settings.max_faces)

    # ---- inputs -------------------------------------------------------------------------------
    def identities(self, people, template: LoadedTemplate) -> list[tuple[int | None, Identity]]:
        """``people``: photo(s) of one person (for the largest face), or {face number: photo(s)}."""
        pairs = people.items() if isinstance(people, dict) else [(None, people)]
        out = []
        for number, photos in pairs:
            photos = _as_list(photos)
            if not photos:
                raise ConfigError(f"no photo given for template face {number}")
            loaded, found, notes = [], [], []
            for photo in photos:
                name = str(photo) if isinstance(photo, (str, Path)) else None
                rgb = self.analysis.load(photo)
                found.append(self.analysis.get_one(rgb, strict=False, path=name))
                loaded.append(rgb)
                if rgb.shape == template.rgb.shape and np.array_equal(rgb, template.rgb):
                    notes.append(f"the face photo for face {number or 'largest'} is the template itself: "
                                 "that face is redrawn from a face of the template (allowed)")
            out.append((number, Identity(photos=loaded, faces=found, notes=notes)))
        return out

    def _check_controls(self, settings: TemplateSettings, notes: list[str]) -> None:
        count = self.info.num_controlnets
        if count == 0:
            notes.append("the pipeline has no ControlNet: the face landmarks and template edges are not used; "
                         "only the mask and the identity guide the redrawn face")
        elif count != len(settings.controls):
            raise ConfigError(
                f"the pipeline has {count} ControlNet{'s' if count != 1 else ''} but {len(settings.controls)} "
                f"controls are set ({', '.join(settings.controls)})",
                hint="set TemplateSettings.controls to one map per ControlNet, in their order "
                     "(the release: OpenPose -> face_pose, Canny -> canny)", setting="controls")

    # ---- the call -----------------------------------------------------------------------------
    def prepare(self, template, people, *, settings: TemplateSettings | None = None,
                family: str | None = None) -> "Prepared":
        """Everything before diffusion - template, faces, targets, identities, crops, masks,
        controls - so that every bad input fails before any denoising step (the CLI calls this
        before it loads weights, with ``pipe=None``). ``family``: the base family ("sd15" / "sdxl")
        whose crop size to use where ``crop_size`` is not set; default: the pipeline's."""
        from facefact.pipelines.loading import SCHEDULERS

        settings = (settings or self.settings).validate()
        if settings.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler '{settings.scheduler}'", hint=f"choose one of: {', '.join(SCHEDULERS)}")
        family = self._crop_family(settings, family)
        if family is not None:
            settings = settings.for_family(family)
        notes: list[str] = []
        loaded = load_template(template, self.analysis)
        faces = find_faces(self.analysis, loaded.rgb, max_faces=settings.max_faces)
        pairs = self.identities(people, loaded)
        numbers = [n for n, _ in pairs if n is not None]
        targets = choose_targets(faces, numbers, min_face_px=settings.min_face_px, path=loaded.name)
        plans = [plan_target(loaded.rgb, faces, target, identity, settings, self._dlib68(settings))
                 for target, (_, identity) in zip(targets, pairs)]
        for _, identity in pairs:
            notes.extend(identity.notes)
        return Prepared(template=loaded, faces=faces, plans=plans, settings=settings, notes=notes, family=family)

    def _crop_family(self, settings: TemplateSettings, family: str | None) -> str | None:
        """The family whose crop size applies (None where ``crop_size`` is set): the pipeline's, or
        ``family`` before there is one; a ``family`` other than the pipeline's is refused."""
        from facefact.model.layouts import family_name

        mine = self.info.family if self.info is not None else None
        if family is not None and mine is not None and family != mine:
            raise ConfigError(f"family '{family}' given, but the pipeline's base model is {family_name(mine)}",
                              hint="leave family out: the pipeline's own is used")
        if settings.crop_size is not None:
            return None
        if (family or mine) is None:
            raise ConfigError("the crop size follows the base model's family, and there is no pipeline yet",
                              hint="pass family='sd15' or 'sdxl' (or the pipeline first), or set crop_size",
                              setting="crop_size")
        return family or mine

    def __call__(self, template, people, *, seed: int | None = None, num_images: int = 1,
                 settings: TemplateSettings | None = None, progress=None) -> TemplateOutput:
        """``people``: photo(s) of one person (redraws the largest face), or {face number: photo(s)}
        (numbers count left to right from 1). Output i is made from ``seed + i``."""
        return self.generate(self.prepare(template, people, settings=settings), seed=seed, num_images=num_images,
                             progress=progress)

    def generate(self, prepared: "Prepared", *, seed: int | None = None, num_images: int = 1,
                 progress=None) -> TemplateOutput:
        if self.pipe is None:
            raise ConfigError("this TemplatePortrait has no pipeline", hint="pass a FACT inpainting pipeline")
        if num_images < 1:
            raise ConfigError("num_images must be at least 1")
        settings, plans = prepared.settings, prepared.plans
        if prepared.family is not None and prepared.family != self.info.family:
            from facefact.model.layouts import family_name

            raise ConfigError(f"these inputs were prepared for a {family_name(prepared.family)} base "
                              f"({settings.crop_size} px crops), but the pipeline's base model is "
                              f"{family_name(self.info.family)}",
                              hint="prepare them again with this pipeline (or set crop_size)", setting="crop_size")
        notes = list(prepared.notes)
        self._check_controls(settings, notes)
        seed = secrets.randbelow(2**31) if seed is None else int(seed)
        tokens = [self.pipe.encode_faces(plan.identity.photos) for plan in plans]  # once per person
        images, metadata, model_files = [], [], {}
        for index in range(num_images):
            image, last, used = self._one_image(prepared, tokens, seed + index, notes, progress)
            images.append(Image.fromarray(image))
            model_files = dict(last.model_files or {})
            metadata.append(self._provenance(prepared.template, prepared.faces, used, settings, seed + index,
                                             (last.metadata or [{}])[0], notes))
        notes = list(dict.fromkeys(notes))
        for meta in metadata:
            meta["notes"] = list(notes)
        return TemplateOutput(images=images, metadata=metadata, notes=notes, faces=prepared.faces, plans=plans,
                              model_files=model_files)

    def _pose_stage_plan(self, prepared: Prepared, plan: TargetPlan, face_tokens, seed: int,
                         notes: list[str]) -> TargetPlan:
        """``plan`` with the new face's shape taken from a pose-stage portrait (``plan`` unchanged, and
        a note, when the stage cannot run or draws no face)."""
        from facefact.template import pose_stage

        number = plan.target.number
        control, why = pose_stage.body_pose_control(plan.image)
        net = pose_stage.openpose_controlnet(self.pipe, prepared.settings.controls) if control is not None else None
        if control is None:
            notes.append(f"pose stage, face {number}: no body pose of the template crop ({why}); it runs without "
                         "ControlNet")
        elif net is None:
            notes.append(f"pose stage, face {number}: no OpenPose ControlNet to follow the template's body pose; "
                         "it runs without ControlNet")
        else:
            notes.append(f"pose stage, face {number}: follows the template crop's body pose (MediaPipe, drawn "
                         "as OpenPose) through the OpenPose ControlNet")
        if self._sibling is None or any(a is not b for a, b in zip(self._sibling_of, (self.pipe, net))):
            self._sibling, self._sibling_of = pose_stage.text_to_image_sibling(self.pipe, net), (self.pipe, net)
        shape, note = pose_stage.pose_stage_shape(self._sibling, self.info, face_tokens, prepared.settings, seed,
                                                  plan.crop.size, self.analysis, number,
                                                  control if net is not None else None)
        if shape is None:
            notes.append(note)
            return plan
        return plan_target(prepared.template.rgb, prepared.faces, plan.target, plan.identity, prepared.settings,
                           self._dlib68(prepared.settings), shape_from=shape)

    def _dlib68(self, settings: TemplateSettings):
        if settings.face_points == "dlib68" and self._landmarker is None:
            from facefact.template.controls import Dlib68

            self._landmarker = Dlib68()
        return self._landmarker

    def _request(self, plan: TargetPlan, tokens, settings: TemplateSettings, seed: int, *, image, mask, controls,
                 strength, scales, steps) -> backend.InpaintRequest:
        used = [controls[name] for name in settings.controls] if self.info.num_controlnets else []
        return backend.InpaintRequest(
            prompt=settings.prompt, negative_prompt=settings.negative_prompt, image=image, mask=mask,
            controls=used, control_scales=list(scales), strength=strength, steps=steps,
            guidance_scale=settings.guidance_scale, scheduler=settings.scheduler, fact_scale=settings.fact_scale,
            cfg_face=settings.cfg_face, face_tokens=tokens, seed=seed, extra=dict(settings.extra))

    def _one_image(self, prepared: Prepared, tokens: list, seed: int, notes: list[str],
                   progress) -> tuple[np.ndarray, object, list[TargetPlan]]:
        """One output: every target redrawn in turn (each from the template's own crop, seeded with
        ``seed``) and pasted into the full-resolution result. Returns the plans used (the pose stage
        changes them per output)."""
        settings, template = prepared.settings, prepared.template.rgb
        out, last, used = template, None, []
        for plan, face_tokens in zip(prepared.plans, tokens):
            if settings.pose_stage:
                plan = self._pose_stage_plan(prepared, plan, face_tokens, seed, notes)
            used.append(plan)
            result, last = backend.run_inpaint(self.pipe, self.info, self._request(
                plan, face_tokens, settings, seed, image=plan.image, mask=plan.mask, controls=plan.controls,
                strength=settings.strength, scales=settings.control_scales, steps=settings.steps))
            notes.extend(last.notes or [])
            edited = plan.mask
            if settings.refine:
                mask, controls, refine_notes = refine_inputs(plan, result, settings, self.analysis, self._landmarker)
                notes.extend(refine_notes)
                result, last = backend.run_inpaint(self.pipe, self.info, self._request(
                    plan, face_tokens, settings, seed, image=result, mask=mask, controls=controls,
                    strength=settings.refine_strength, scales=settings.refine_control_scales,
                    steps=settings.refine_steps or settings.steps))
                notes.extend(last.notes or [])
                edited = np.maximum(edited, mask)
            weight = paste_weight(plan.crop, template.shape, edited, plan.target.bbox, plan.protected)
            out = paste(out, plan.crop, result, weight)
            if progress is not None:
                progress(plan)
        return out, last, used

    def _provenance(self, loaded: LoadedTemplate, faces, plans, settings: TemplateSettings, seed: int,
                    model_meta: dict, notes: list[str]) -> dict:
        """What made this image; the template and face photos themselves are not in it (only the
        template's hash, and how many photos each face got)."""
        h, w = loaded.rgb.shape[:2]
        knobs = {k: v for k, v in settings.as_dict().items() if k not in ("prompt", "negative_prompt")}
        models = copy.deepcopy(model_meta.get("models") or {})
        return {
            "generator": f"facefact {__version__}", "method": "FaceChain-FACT template", "ai_generated": True,
            "seed": seed, "prompt": settings.prompt, "negative_prompt": settings.negative_prompt,
            "steps": settings.steps, "guidance_scale": settings.guidance_scale, "scheduler": settings.scheduler,
            "fact_scale": settings.fact_scale, "cfg_face": settings.cfg_face, "width": w, "height": h,
            "num_reference_photos": sum(len(p.identity.photos) for p in plans),
            "template": {"sha256": loaded.sha256, "width": w, "height": h, "faces_found": len(faces)},
            "redrawn_faces": [{**p.target.as_dict(), "reference_photos": len(p.identity.photos),
                               "shape_from": p.shape_from,
                               "crop": {"x0": p.crop.x0, "y0": p.crop.y0, "side": p.crop.side, "size": p.crop.size}}
                              for p in plans],
            "controls": ([{"map": c, "scale": s, "refine_scale": r} for c, s, r in
                          zip(settings.controls, settings.control_scales, settings.refine_control_scales)]
                         if self.info.num_controlnets else []),
            "pipeline": {"class": self.info.name, "base_family": self.info.family,
                         "unet_in_channels": self.info.unet_in_channels, "controlnets": self.info.num_controlnets},
            "template_settings": knobs, "models": models, "notes": list(notes),
        }
