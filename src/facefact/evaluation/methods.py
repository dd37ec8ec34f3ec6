"""Generation methods an evaluation compares, behind one small protocol and a registry.

A method turns (prompt, reference photos, seed, size) into one image. Built in:

* ``fact:S`` - the FACT pipeline at adapter scale S (``fact`` alone = 0.5, the released apps' value);
  ``fact:S@START-END`` with a timestep window, ``fact:S~mean`` / ``~weighted`` combining several
  reference photos that way (sweep them: each is one point of the report's trade-off plot);
* ``base`` - the same base model with no face (plain text-to-image): the control that FACT's
  decoupling is measured against (adapter scale 0 is the base model bit for bit);
* ``ipadapter-faceid:PATH[@SCALE]`` - diffusers' IP-Adapter-FaceID, only when its weights exist at
  PATH and an ArcFace ONNX file is given for its embeddings (otherwise reported as skipped).

A method runs on the run's models, or on another one named after a ``+``: ``fact:0.5+tiny-sdxl``
(the built-in tiny SDXL), ``fact:0.5+xl`` (``xl`` one of the run's ``named_models``: a base, adapter
and encoder). So one run compares an SDXL FACT with the SD1.5 one on the same identities, prompts
and seeds; each model's methods get their own ``base+MODEL`` control, and each method's base
family (sd15 / sdxl) is recorded with its images and shown in the report.

Add your own with :func:`register_method`, or pass objects with the :class:`Method` shape to
``evaluate(methods=[...])``.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

from PIL import Image

from facefact.errors import ConfigError, FacefactError
from facefact.evaluation.run_settings import EVAL_STEPS, RunSettings  # noqa: F401 (EVAL_STEPS: its public name here)
from facefact.pipelines.registry import TINY_BASES

DEFAULT_FACT_SCALE = 0.5


class MethodUnavailable(FacefactError):
    """A method that is valid but cannot run here (its weights or packages are missing): skipped."""


@runtime_checkable
class Method(Protocol):
    name: str                 # shown in reports and used (slugged) in file names, e.g. "fact:0.5"
    uses_references: bool     # False: the image does not depend on the identity (cached once per prompt/seed)
    control: str | None       # name of the method whose image is this one's "no face" control, for decoupling

    def settings(self) -> dict: ...          # everything that changes the pixels (cache key)

    # Optional: ``prepare()`` loads models before the first timed image (called only if images are missing).

    def generate(self, prompt: str, references: list[Path], seed: int, size: int | None) -> Image.Image: ...


@dataclass
class MethodContext:
    """Heavy objects shared by the methods of one run, built on first use."""

    settings: RunSettings
    _fact_pipeline: object = field(default=None, repr=False)
    _models: dict | None = field(default=None, repr=False)
    # FACT encoder input per set of reference photos: analysed once per run, not once per image
    # (kept in memory only, for this run).
    _face_pixels: dict = field(default_factory=dict, repr=False)
    # What the face analysis said about the reference photos ("several faces; used the largest"...),
    # once per reference set, for the run's notes.
    notes: list = field(default_factory=list)
    # the contexts of the other models methods name (``fact:0.5+NAME``), each with its own pipeline
    _others: dict = field(default_factory=dict, repr=False)

    def for_model(self, name: str, spec: str) -> "MethodContext":
        """The context of the model `name` (built once); it shares this one's notes and face crops
        (the photos' analysis does not depend on the model)."""
        if name not in self._others:
            other = MethodContext(self.settings.for_model(name, spec))
            other.notes, other._face_pixels = self.notes, self._face_pixels
            self._others[name] = other
        return self._others[name]

    def other_models(self) -> dict:
        """{name: model provenance} of the other models methods used."""
        return {name: other.models() for name, other in self._others.items()}

    def face_pixels(self, references) -> object:
        key = tuple(str(p) for p in references)
        if key not in self._face_pixels:
            from facefact.pipelines.face_tokens import analyse_photos

            photo_notes: list[str] = []
            self._face_pixels[key] = analyse_photos(self.fact_pipeline()._analysis(), list(key), photo_notes)
            names = ", ".join(Path(p).name for p in key)
            self.notes.extend(f"references [{names}]: {note}" for note in dict.fromkeys(photo_notes))
        return self._face_pixels[key]

    def models(self) -> dict:
        """The settings' model provenance, hashed once per run."""
        if self._models is None:
            self._models = self.settings.model_provenance()
        return self._models

    def fact_pipeline(self):
        if self._fact_pipeline is None:
            from facefact.pipelines.build import load_fact_pipeline
            from facefact.pipelines.loading import make_scheduler

            s = self.settings
            tiny = s.model in TINY_BASES  # "tiny" is the default of each part; a given file replaces it
            pipe = load_fact_pipeline(s.model, s.adapter or ("tiny" if tiny else None),
                                      s.encoder or ("tiny" if tiny else None), device=s.device, dtype=s.dtype)
            pipe.scheduler = make_scheduler(s.generation.scheduler, pipe.scheduler.config)
            if s.cpu_threads is not None:  # evaluate --threads N wins over the tiny pipeline's one thread
                pipe.cpu_threads = s.cpu_threads
            self._fact_pipeline = pipe
        return self._fact_pipeline


class FactMethod:
    """The FACT pipeline at one adapter scale (optionally with a timestep window and a way to
    combine several photos); with ``use_face=False`` the bare base model."""

    def __init__(self, context: MethodContext, scale: float, *, use_face: bool = True, name: str | None = None,
                 window: tuple[float, float] | None = None, combine: str = "concat"):
        self.context, self.scale, self.use_face = context, float(scale), use_face
        self.window, self.combine = window, combine
        self.name = name or fact_method_name(self.scale, window, combine)
        self.uses_references = use_face
        self.uses_fact = True  # runs on the FACT pipeline (the run records its models)
        self.control = "base" if use_face else None

    @property
    def base_family(self) -> str:
        return self.context.settings.base_family()

    def prepare(self) -> None:
        """Load the models now, so the first image's time and memory do not include loading them."""
        self.context.fact_pipeline()

    def settings(self) -> dict:
        knobs = {"window": list(self.window) if self.window else None, "combine": self.combine}
        return {"method": "fact", "scale": self.scale, "use_face": self.use_face, **knobs,
                **self.context.settings.as_dict(), "models": self.context.models()}

    def generate(self, prompt, references, seed, size):
        import torch

        s = self.context.settings
        pipe = self.context.fact_pipeline()
        size = size or s.size or pipe.unet.config.sample_size * pipe.vae_scale_factor
        faces = None
        if self.use_face:
            pixels, qualities = self.context.face_pixels(references)
            faces = pipe.encode_faces(face_pixels=pixels, qualities=qualities, combine=self.combine)
        g = s.generation
        out = pipe(prompt, face_tokens=faces, negative_prompt=g.negative_prompt,
                   fact_scale=self.scale if self.use_face else 0.0, num_images_per_prompt=1,
                   fact_window=self.window if self.use_face else None, cfg_face=g.cfg_face,
                   generator=torch.Generator("cpu").manual_seed(seed), num_inference_steps=g.steps,
                   guidance_scale=g.guidance, height=size, width=size)
        return out.images[0]


class IPAdapterFaceIDMethod:
    """diffusers' IP-Adapter-FaceID (SD1.5) on the same base model, conditioned on ArcFace embeddings."""

    def __init__(self, context: MethodContext, weights: Path, scale: float = 1.0):
        self.context, self.weights, self.scale = context, weights, scale
        self.name = f"ipadapter-faceid:{scale:g}"
        self.uses_references, self.control = True, None
        self._pipe = self._faces = None
        if not weights.is_file():
            raise MethodUnavailable(f"skipped {self.name}: weights not found at {weights}",
                                    hint="download ip-adapter-faceid_sd15.bin yourself and pass its path")
        if context.settings.model in TINY_BASES or context.settings.base_family() != "sd15":
            raise MethodUnavailable(f"skipped {self.name}: it needs a real SD1.5 base model, not "
                                    f"'{context.settings.model}'")
        if importlib.util.find_spec("insightface") is None or not context.settings.arcface_onnx:
            raise MethodUnavailable(f"skipped {self.name}: its identity embeddings need insightface and "
                                    "an ArcFace ONNX file (arcface_onnx)",
                                    hint="pip install 'facefact[insightface]'")

    def settings(self) -> dict:
        return {"method": "ipadapter-faceid", "weights": str(self.weights), "scale": self.scale,
                **self.context.settings.as_dict()}

    def generate(self, prompt, references, seed, size):  # pragma: no cover - needs real weights
        import numpy as np
        import torch
        from diffusers import StableDiffusionPipeline

        from facefact.faces import FaceAnalysis

        s = self.context.settings
        if self._pipe is None:
            self._pipe = StableDiffusionPipeline.from_pretrained(s.model, safety_checker=None)
            self._pipe.load_ip_adapter(str(self.weights.parent), subfolder="", weight_name=self.weights.name,
                                       image_encoder_folder=None)
            self._pipe.set_ip_adapter_scale(self.scale)
            if s.device:
                self._pipe.to(s.device)
            self._faces = FaceAnalysis(embedder="insightface", embedder_options={"model_path": s.arcface_onnx})
        embeds = [self._faces.embed(p, self._faces.get_one(p)) for p in references]
        ident = torch.from_numpy(np.mean(embeds, axis=0)).reshape(1, 1, -1)
        id_embeds = torch.cat([torch.zeros_like(ident), ident]).to(self._pipe.device, self._pipe.unet.dtype)
        size = size or s.size or 512
        generator = torch.Generator("cpu").manual_seed(seed)
        g = s.generation
        return self._pipe(prompt, negative_prompt=g.negative_prompt, ip_adapter_image_embeds=[id_embeds],
                          num_inference_steps=g.steps, guidance_scale=g.guidance, height=size, width=size,
                          generator=generator).images[0]


def _parse_scale(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"bad method '{spec}': '{text}' is not a number",
                          hint="write the adapter scale as a number, e.g. fact:0.5", setting="methods") from None
    if not 0.0 <= value <= 3.0:
        raise ConfigError(f"bad method '{spec}': scale {value} is outside [0, 3]",
                          hint="FACT's released apps use 0.5; 0 is the base model")
    return value


def fact_method_name(scale: float, window=None, combine: str = "concat") -> str:
    name = f"fact:{scale:g}"
    if window:
        name += f"@{window[0]:g}-{window[1]:g}"
    return name + (f"~{combine}" if combine != "concat" else "")


def _make_fact(arg, context):
    """``fact[:S][@START-END][~COMBINE]``: scale, timestep window, how several photos combine."""
    spec = f"fact:{arg}" if arg else "fact"
    rest, _, combine = (arg or "").partition("~")
    scale_text, _, window_text = rest.partition("@")
    scale = DEFAULT_FACT_SCALE if scale_text == "" else _parse_scale(scale_text, spec)
    window = None
    if window_text:
        from facefact.pipelines.settings import check_window

        try:
            start, _, end = window_text.partition("-")
            window = check_window((float(start), float(end)))
        except (ValueError, ConfigError) as err:
            raise ConfigError(f"bad method '{spec}': window '{window_text}' is not START-END in [0, 1], start first",
                              hint="e.g. fact:0.5@0.3-1 (FACT from 30% of the steps on)", setting="methods") from err
    from facefact.pipelines.face_tokens import COMBINE_MODES

    combine = combine or "concat"
    if combine not in COMBINE_MODES:
        raise ConfigError(f"bad method '{spec}': unknown way to combine photos '{combine}'",
                          hint=f"use one of: {', '.join(COMBINE_MODES)}, e.g. fact:0.5~weighted", setting="methods")
    return FactMethod(context, scale, window=window, combine=combine)


def _make_base(arg, context):
    if arg:
        raise ConfigError(f"bad method 'base:{arg}': base takes no argument", hint="write base", setting="methods")
    return FactMethod(context, 0.0, use_face=False, name="base")


def _make_ipadapter_faceid(arg, context):
    if not arg:
        raise ConfigError("bad method 'ipadapter-faceid': the weights path is missing",
                          hint="write ipadapter-faceid:PATH/ip-adapter-faceid_sd15.bin[@SCALE]", setting="methods")
    path, _, scale = arg.rpartition("@") if "@" in arg else (arg, "", "")
    return IPAdapterFaceIDMethod(context, Path(path).expanduser(),
                                 _parse_scale(scale, arg) if scale else 1.0)


MethodFactory = Callable[[str | None, MethodContext], Method]
METHODS: dict[str, MethodFactory] = {"fact": _make_fact, "base": _make_base,
                                     "ipadapter-faceid": _make_ipadapter_faceid}


def register_method(name: str, factory: MethodFactory) -> None:
    """Make ``--method NAME[:ARG]`` build ``factory(ARG or None, context)``."""
    METHODS[name] = factory


def parse_method(spec: str, context: MethodContext) -> Method:
    """Build the method a ``--method`` value names (``SPEC`` or ``SPEC+MODEL``: on another model);
    ConfigError if malformed, MethodUnavailable if it cannot run."""
    text, plus, model = spec.strip().rpartition("+")
    if not plus or not re.fullmatch(r"[\w-]*", model):  # "+" in a path (ipadapter-faceid:c++/x.bin): no model
        text, plus, model = spec.strip(), "", ""
    kind, _, arg = text.partition(":")
    if kind not in METHODS:
        raise ConfigError(f"unknown method '{spec}'",
                          hint=f"choose from: {', '.join(METHODS)} (e.g. fact:0.5 and base; fact:0.5+tiny-sdxl on "
                               "another model)", setting="methods")
    if not plus:
        return METHODS[kind](arg or None, context)
    if not model:
        raise ConfigError(f"bad method '{spec}': no model named after '+'", hint="e.g. fact:0.5+tiny-sdxl",
                          setting="methods")
    method = METHODS[kind](arg or None, context.for_model(model, spec))
    method.name = f"{method.name}+{model}"
    if method.control:
        method.control = f"{method.control}+{model}"  # the same model's control
    return method


def method_slug(name: str) -> str:
    """A file-system-safe name for a method ("fact:0.5" -> "fact@0.5")."""
    return "".join(c if c.isalnum() or c in "-_.@" else "@" if c == ":" else "_" for c in name)
