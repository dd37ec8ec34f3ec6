"""`FACTMixin`: FACT for any diffusers SD1.5 or SDXL pipeline, in the pattern of diffusers' IP-Adapter.

    pipe = FACTStableDiffusionPipeline.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")
    pipe.load_fact_adapter("fact_adapter.safetensors", encoder="ms1mv2_model_TransFace_S.pt")
    pipe.set_fact_scale(0.5)                       # or {"down": 0.3, "mid": 0.5, "up": 0.6}
    out = pipe("a portrait", face_images=["me.jpg"], generator=torch.Generator().manual_seed(7))
    pipe.unload_fact_adapter()                     # the pipeline is the plain base model again

`load_fact_adapter` puts the adapter in diffusers' own GLIGEN slots (see FaceAdapter.attach);
FACT then lives with that UNet, so every pipeline sharing it (`from_pipe`, `Cls(**pipe.components)`)
shares FACT (see fact_state). Each call computes the face tokens once and hands them to the UNet
through `cross_attention_kwargs["gligen"]`, laid out for the guidance batch (null face tokens on
the unconditional side with `cfg_face`). Every argument of the diffusers parent's `__call__` passes
through unchanged, `generator=None` included (torch's global RNG, as the parent); each subclass's
`__call__` shows the parent's signature and docs plus FACT's keyword arguments (call_signature).
"""
from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import torch

from facefact.errors import ConfigError
from facefact.model import FaceAdapter, TransFaceEncoder
from facefact.pipelines import fact_state
from facefact.pipelines.call_signature import fact_keywords, twin_docstring, twin_signature
from facefact.pipelines.face_tokens import (FaceTokens, analyse_photos, combine_photos, encode_face_pixels,
                                            face_tokens_problem, guidance_objs, notes_of_each_prompt,
                                            per_prompt_tokens)
from facefact.pipelines.requests import FaceRequest, fact_window_callback, regions_for
from facefact.pipelines.lora import LoraProvenanceMixin
from facefact.pipelines.output import FACTPipelineOutput
from facefact.pipelines.provenance import image_metadata, model_entry
from facefact.pipelines.seeds import call_seeds
from facefact.pipelines.threads import scoped_cpu_threads

logger = logging.getLogger(__name__)
DEFAULT_FACT_SCALE = 0.5  # what the released apps use


class FACTMixin(LoraProvenanceMixin):
    # torch CPU threads during this pipeline's calls (set, then put back); None leaves the process's
    # count. `.tiny()` sets 1: threads only cost time on tiny layers (pipelines/threads.py).
    cpu_threads: int | None = None

    def __call__(self, *args, face_images=None, face_tokens=None, fact_scale=None, cfg_face: bool = True,
                 face_combine: str = "concat", fact_window=None, face_regions=None, **kwargs):
        request = FaceRequest(face_images, face_tokens, fact_scale, cfg_face, face_combine, fact_window, face_regions)
        with scoped_cpu_threads(self.cpu_threads):
            return self._call_with_faces(super().__call__, args, kwargs, request)

    def __init_subclass__(cls, **kwargs):
        """Each FACT pipeline class shows its diffusers parent's `__call__` signature and docs with
        FACT's keyword arguments added (see call_signature)."""
        super().__init_subclass__(**kwargs)
        parent = cls.diffusers_parent()
        if parent is None or "__call__" in cls.__dict__:
            return

        def __call__(self, *args, **kwargs):
            return FACTMixin.__call__(self, *args, **kwargs)

        keywords = fact_keywords(FACTMixin.__call__)
        __call__.__signature__ = twin_signature(parent.__call__, keywords)
        __call__.__doc__ = twin_docstring(parent.__call__.__doc__, keywords)
        __call__.__qualname__ = f"{cls.__qualname__}.__call__"
        __call__.__module__ = cls.__module__
        cls.__call__ = __call__

    @classmethod
    def diffusers_parent(cls):
        """The stock diffusers pipeline class this one adds FACT to (None for the mixin itself)."""
        from diffusers import DiffusionPipeline

        return next((c for c in cls.__mro__ if issubclass(c, DiffusionPipeline) and not issubclass(c, FACTMixin)),
                    None)

    def to_json_string(self) -> str:
        """The config as `save_pretrained` writes it to model_index.json: `_class_name` is the stock
        diffusers parent, so `DiffusionPipeline.from_pretrained` loads the folder as that pipeline
        (the FACT class's own `from_pretrained` loads it as the FACT class). FACT is never part of
        the folder: the UNet is saved as the base model; load the adapter again after loading."""
        config = json.loads(super().to_json_string())
        config["_class_name"] = self.diffusers_parent().__name__
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    @classmethod
    def tiny(cls, seed: int = 0, *, inpainting_unet: bool = False, num_controlnets: int = 1, face_analysis=None,
             cpu_threads: int | None = 1, layout: str | None = None):
        """This pipeline on tiny random-weight models (SD1.5 or SDXL, as the class) with a tiny FACT
        loaded, built offline in about a second: the whole path, no download (the images are noise).
        `inpainting_unet`: a 9-channel UNet (inpainting classes); ControlNet classes get
        `num_controlnets` tiny ControlNets; `layout`: the adapter's block layout ("first" or "all").
        `cpu_threads`: torch threads during its calls (1: several only cost time on tiny layers;
        None: the process's count). A tiny adapter trained by `facefact train` loads into it with
        `load_fact_adapter(path, encoder="tiny")`."""
        from facefact.pipelines.tiny import tiny_fact_pipeline

        pipe = tiny_fact_pipeline(cls, seed, inpainting_unet=inpainting_unet, num_controlnets=num_controlnets,
                                  face_analysis=face_analysis, layout=layout)
        pipe.cpu_threads = cpu_threads
        return pipe

    # ---- loading -------------------------------------------------------------------------------
    def load_fact_adapter(self, pretrained_model_name_or_path_or_dict, encoder=None, *, weight_name: str | None = None,
                          subfolder: str | None = None, encoder_weight_name: str | None = None,
                          revision: str | None = None, resampler_config=None, encoder_config=None,
                          face_analysis=None) -> None:
        """Load FACT into this pipeline's UNet - for every pipeline sharing that UNet (`from_pipe`,
        `Cls(**pipe.components)`).

        The adapter: a file (released `.ckpt` or facefact `.safetensors`), a folder (+ `weight_name`),
        a Hugging Face hub id (+ `weight_name`), ModelScope's release (`"modelscope:yucheng1996/FaceChain-FACT"`,
        + `weight_name`), a state dict or a FaceAdapter. The encoder (TransFace): the same forms, or
        None to take it from the adapter's folder / repository (`encoder_weight_name`). On a
        pipeline built by `.tiny()`, "tiny" names its tiny adapter or encoder (an adapter trained with
        `facefact train --model tiny` loads with `encoder="tiny"`). A FACT adapter loaded before, from
        this pipeline or another on the UNet, is replaced."""
        from facefact.pipelines.hub import resolve_weight_file
        from facefact.pipelines.tiny import tiny_parts

        pretrained_model_name_or_path_or_dict, encoder, tiny_models = tiny_parts(
            self, pretrained_model_name_or_path_or_dict, encoder)

        weight_for_encoder = encoder_weight_name
        if encoder is None and encoder_weight_name and isinstance(pretrained_model_name_or_path_or_dict, (str, Path)):
            encoder = pretrained_model_name_or_path_or_dict  # the same folder or repository
        if encoder is None:
            raise ConfigError("no face encoder given", hint="pass encoder= (the TransFace file, e.g. "
                                                            "ms1mv2_model_TransFace_S.pt, a folder or a hub id)")
        adapter, adapter_file, adapter_info = _load_adapter(pretrained_model_name_or_path_or_dict, self.unet, weight_name,
                                                            subfolder, revision, resampler_config)
        # an adapter for another base family (SD1.5 / SDXL) or layout: refused before the encoder is read
        adapter.check_fits(self.unet, adapter_file or getattr(self.config, "_name_or_path", None))
        if isinstance(encoder, TransFaceEncoder):
            face_encoder, encoder_file, encoder_info = encoder, None, {"id": "<TransFaceEncoder object>"}
        else:
            encoder_file = resolve_weight_file(encoder, what="TransFace encoder", weight_name=weight_for_encoder,
                                               subfolder=subfolder, revision=revision)
            face_encoder = TransFaceEncoder.from_checkpoint(encoder_file, encoder_config)
            encoder_info = model_entry(encoder, encoder_file, weight_for_encoder)
        face_analysis = face_analysis if face_analysis is not None else self.face_analysis
        self.unload_fact_adapter()  # for every pipeline on this UNet
        # An adapter already attached to this UNet (training's validation images) is used as it is:
        # whoever attached it detaches it.
        attached_here = fact_state.attach_for_load(self.unet, adapter, DEFAULT_FACT_SCALE)
        files = {role: path for role, path in (("adapter", adapter_file), ("encoder", encoder_file)) if path is not None}
        adapter.pipeline_state = fact_state.LoadedFACT(
            adapter, face_encoder.eval().requires_grad_(False).to(self.unet.device, torch.float32), face_analysis,
            {"adapter": adapter_info, "encoder": encoder_info, **tiny_models}, files, attached_here)

    def set_fact_scale(self, scale) -> None:
        """FACT's scale s for the next calls: a number (0 = the base model, 0.5 the release's value),
        or per UNet level / block: {"down": .., "mid": .., "up": ..} (blocks not named get 0)."""
        self._require_fact().set_scale(scale)

    def unload_fact_adapter(self) -> None:
        """Detach FACT from this pipeline's UNet - and so from every pipeline sharing that UNet: the
        UNet is as before, bit for bit."""
        fact_state.unload(getattr(self, "unet", None))

    # What is loaded, looked up through this pipeline's UNet each time (see fact_state)
    @property
    def fact_adapter(self) -> FaceAdapter | None:
        loaded = fact_state.loaded_fact(getattr(self, "unet", None))
        return loaded.adapter if loaded is not None else None

    @property
    def face_encoder(self) -> TransFaceEncoder | None:
        loaded = fact_state.loaded_fact(getattr(self, "unet", None))
        return loaded.encoder if loaded is not None else None

    @property
    def face_analysis(self):
        loaded = fact_state.loaded_fact(getattr(self, "unet", None))
        return loaded.analysis if loaded is not None else None

    @face_analysis.setter
    def face_analysis(self, analysis) -> None:
        """The FaceAnalysis the loaded FACT finds faces with (for every pipeline on this UNet)."""
        loaded = fact_state.loaded_fact(getattr(self, "unet", None))
        if loaded is None:
            raise ConfigError("no FACT adapter is loaded in this pipeline, so there is no face analysis to set",
                              hint="call pipe.load_fact_adapter(adapter, encoder=..., face_analysis=...)")
        loaded.analysis = analysis

    @property
    def _fact_models(self) -> dict:
        """role -> provenance entry of the FACT files loaded (the dict itself: loaders may rename)."""
        loaded = fact_state.loaded_fact(getattr(self, "unet", None))
        return loaded.models if loaded is not None else {}

    def _require_fact(self) -> FaceAdapter:
        loaded = fact_state.loaded_fact(getattr(self, "unet", None))
        if loaded is None:
            raise ConfigError("no FACT adapter is loaded in this pipeline",
                              hint="call pipe.load_fact_adapter(adapter, encoder=...) first")
        return loaded.adapter

    def to(self, *args, **kwargs):
        """`DiffusionPipeline.to`; the resampler follows the UNet (device and dtype; the fusers are
        UNet submodules already), the encoder follows the device and stays float32 (spec)."""
        super().to(*args, **kwargs)
        loaded = fact_state.loaded_fact(getattr(self, "unet", None))
        if loaded is not None:
            param = next(self.unet.parameters())
            loaded.adapter.resampler.to(param.device, param.dtype)
            loaded.encoder.to(param.device, torch.float32)
        return self

    # ---- faces -> tokens ------------------------------------------------------------------------
    def _analysis(self):
        loaded = fact_state.loaded_fact(self.unet)
        if loaded.analysis is None:
            from facefact.faces import FaceAnalysis

            loaded.analysis = FaceAnalysis()
        return loaded.analysis

    def encode_faces(self, face_images=None, face_pixels: torch.Tensor | None = None,
                     combine: str = "concat", qualities=None) -> FaceTokens:
        """Reference photos (paths, PIL images or RGB arrays) of one person -> FaceTokens, once per
        request, the photos combined as `combine` says ("concat", "mean", "weighted"). Keep the
        result to generate again without the photos: pass it as `face_tokens=` (or save it with
        facefact.pipelines.identity.save_identity)."""
        adapter = self._require_fact()
        notes: list[str] = []
        with scoped_cpu_threads(self.cpu_threads):
            if face_pixels is None:  # (pixels given: the photos' FaceQuality may come with them, for "weighted")
                face_pixels, qualities = analyse_photos(self._analysis(), face_images, notes)
            faces = self._encode_pixels(adapter, face_pixels, notes)
        return combine_photos(faces, combine, qualities, adapter.tokens_per_photo)

    def _encode_pixels(self, adapter, face_pixels, notes) -> FaceTokens:
        device = self._execution_device
        offloaded = getattr(self, "_offload_device", None) is not None
        self.face_encoder.to(device)
        adapter.resampler.to(device)
        try:
            return encode_face_pixels(face_pixels, self.face_encoder, adapter, device, notes)
        finally:
            if offloaded:  # with CPU offload, weights wait on the CPU between uses
                self.face_encoder.to("cpu")
                adapter.resampler.to("cpu")

    def _face_condition(self, face_images, face_tokens, combine: str = "concat") -> FaceTokens | None:
        if face_images is not None and face_tokens is not None:
            raise ConfigError("pass face_images= or face_tokens=, not both",
                              hint="face_images= are photos; face_tokens= what pipe.encode_faces(...) returned")
        if face_tokens is None:
            return None if face_images is None else self.encode_faces(face_images, combine=combine)
        if isinstance(face_tokens, (list, tuple)):  # one person per prompt: each prompt's own, checked
            return per_prompt_tokens([self._face_condition(None, one) for one in face_tokens])
        adapter = self._require_fact()
        if isinstance(face_tokens, (str, Path)):  # a saved identity (.fid): checked as it is read
            from facefact.pipelines.identity import load_identity

            return load_identity(self, face_tokens)
        if not isinstance(face_tokens, FaceTokens) and (not torch.is_tensor(face_tokens) or face_tokens.ndim != 3):
            raise ConfigError("face_tokens must be FaceTokens (from pipe.encode_faces), a saved identity (.fid), "
                              "a [1, 16n, C] tensor or a list of those (one per prompt)",
                              hint="make them with pipe.encode_faces(face_images)")
        given = face_tokens.tokens if isinstance(face_tokens, FaceTokens) else face_tokens
        width = self.unet.config.cross_attention_dim
        counts = (face_tokens.num_photos, face_tokens.combine) if isinstance(face_tokens, FaceTokens) else ()
        for tokens in (given, face_tokens.null) if isinstance(face_tokens, FaceTokens) else (given,):
            problem = face_tokens_problem(tokens, adapter, width, *counts)
            if problem:
                raise ConfigError(f"face_tokens: {problem}", setting="face_tokens",
                                  hint="pass the tokens pipe.encode_faces(...) made with this adapter, unchanged")
        if isinstance(face_tokens, FaceTokens):
            return face_tokens
        with torch.no_grad():
            null = adapter.null_face_tokens(face_tokens.shape[1] // adapter.tokens_per_photo)
        return FaceTokens(face_tokens, null, face_tokens.shape[1] // adapter.tokens_per_photo)

    # ---- the call -------------------------------------------------------------------------------
    def _call_with_faces(self, parent_call, args, kwargs, request: FaceRequest):
        signature = inspect.signature(parent_call)
        bound = signature.bind_partial(*args, **kwargs)

        def given(name):
            if name in bound.arguments:
                return bound.arguments[name]
            parameter = signature.parameters.get(name)
            return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default

        request.check()
        check_call_numbers(given)
        fact_scale, cfg_face = request.fact_scale, request.cfg_face
        prompts, notes_per_prompt = self._prompt_list(given("prompt"), given("prompt_embeds"))
        prompt_notes = list(dict.fromkeys(note for notes in notes_per_prompt for note in notes))
        per_prompt = given("num_images_per_prompt") or 1
        batch = len(prompts) * per_prompt
        generator = given("generator")  # handed on as given: None is torch's global RNG, as in the parent
        seeds = call_seeds(generator, batch, self._execution_device)  # before anything could draw from it
        faces, regions = self._request_faces(request, given)
        notes = (list(faces.notes) if faces is not None else []) + prompt_notes
        row_notes = notes_of_each_prompt(faces, notes_per_prompt)
        if "gligen" in (given("cross_attention_kwargs") or {}):
            raise ConfigError("cross_attention_kwargs['gligen'] is FACT's channel for the face tokens",
                              hint="pass face_images= or face_tokens= instead")
        if faces is not None:
            faces = faces.to(self._execution_device, self.unet.dtype)
            bound.arguments["cross_attention_kwargs"] = self._attention_kwargs(given, faces, regions, batch, cfg_face)
        adapter = getattr(self, "fact_adapter", None)
        previous = adapter.scale if adapter is not None else None
        try:
            if fact_scale is not None:
                self.set_fact_scale(fact_scale)
            used_scale = adapter.scale if adapter is not None else None
            if request.fact_window is not None and faces is not None:
                fact_window_callback(self, adapter, request.fact_window, bound, signature)
            result = parent_call(*bound.args, **bound.kwargs)
        finally:
            if adapter is not None:
                adapter.set_scale(previous)
        for note in notes:
            logger.warning(note)
        if not given("return_dict") and given("return_dict") is not None:
            return result
        shared_generator = not isinstance(generator, list) and batch > 1
        metadata = image_metadata(self, result.images, given, prompts, per_prompt, seeds, shared_generator, faces,
                                  used_scale if faces is not None else None, cfg_face, notes, request, row_notes)
        return FACTPipelineOutput(images=result.images,  # SDXL's output has no safety checker field
                                  nsfw_content_detected=getattr(result, "nsfw_content_detected", None),
                                  metadata=metadata, notes=notes, model_files=self._model_files())

    def _request_faces(self, request: FaceRequest, given):
        """(FaceTokens or None, FaceRegions or None) of one call."""
        if request.face_regions is not None:
            return regions_for(self, request, given)
        return self._face_condition(request.face_images, request.face_tokens, request.face_combine), None

    def _attention_kwargs(self, given, faces: FaceTokens, regions, batch: int, cfg_face: bool) -> dict:
        """The user's cross_attention_kwargs plus FACT's face tokens for every row of the UNet batch."""
        attention_kwargs = dict(given("cross_attention_kwargs") or {})
        guidance = given("guidance_scale")
        do_cfg = guidance is not None and guidance > 1 and self.unet.config.get("time_cond_proj_dim") is None
        attention_kwargs["gligen"] = {"objs": guidance_objs(faces, batch, do_cfg, cfg_face)}
        if regions is not None:  # every layer's masks on the device before the loop (FaceRegions.prepare)
            attention_kwargs["gligen"]["regions"] = regions.prepare(self._execution_device)
        return attention_kwargs

    def _prompt_list(self, prompt, prompt_embeds) -> tuple[list[str | None], list[list[str]]]:
        """The call's prompts, and each one's notes (the part the text encoder cuts off)."""
        if prompt is None:
            count = prompt_embeds.shape[0] if prompt_embeds is not None else 1
            return [None] * count, [[] for _ in range(count)]
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        tokenizer = getattr(self, "tokenizer", None) or getattr(self, "tokenizer_2", None)  # SDXL refiner: only the 2nd
        if tokenizer is None:
            return prompts, [[] for _ in prompts]
        notes = []
        for text in prompts:
            ids = tokenizer(text, truncation=False).input_ids
            limit = tokenizer.model_max_length
            cut = tokenizer.decode(ids[limit - 1:-1]).strip() if len(ids) > limit else None
            notes.append([f"the prompt is {len(ids)} tokens but the text encoder takes {limit}; this part was cut: "
                          f"'{cut}'"] if cut is not None else [])
        return prompts, notes

    def _model_files(self) -> dict:
        loaded = fact_state.loaded_fact(self.unet)
        files = {**(loaded.files if loaded is not None else {}), **self.lora_files()}
        for index, path in enumerate(getattr(self, "_facefact_controlnet_files", None) or []):
            if path is not None:
                files[f"controlnet:{index}"] = path
        base = Path(str(getattr(self.config, "_name_or_path", "") or ""))
        if str(base) and base.exists():
            files["base_model"] = base
        return files


def check_call_numbers(given) -> None:
    """The sizes and numbers diffusers takes on trust, refused up front with the limit (a 100000 px
    request would allocate gigabytes before failing; a NaN guidance makes black images)."""
    from facefact.validation import check_image_size, finite_float

    check_image_size(given("width"), given("height"))
    if given("guidance_scale") is not None:
        finite_float("guidance_scale", given("guidance_scale"), low=0.0)


def _load_adapter(source, unet, weight_name, subfolder, revision, resampler_config):
    """(FaceAdapter, local file or None, provenance entry) from any of load_fact_adapter's forms."""
    from facefact.pipelines.hub import resolve_weight_file

    if isinstance(source, FaceAdapter):
        if source.is_attached and not source.is_attached_to(unet):
            raise ConfigError("this FaceAdapter is attached to another UNet than the pipeline's",
                              hint="detach() it first, or use the pipeline whose UNet it is attached to")
        return source, None, {"id": "<FaceAdapter object>"}
    if isinstance(source, dict):
        return FaceAdapter.from_state_dict(source, resampler_config), None, {"id": "<state dict>"}
    path = resolve_weight_file(source, what="FACT adapter", weight_name=weight_name, subfolder=subfolder,
                               revision=revision)
    return FaceAdapter.from_checkpoint(path, resampler_config), path, model_entry(source, path, weight_name)

