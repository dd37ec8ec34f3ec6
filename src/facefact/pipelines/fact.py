"""`FaceFactPipeline`: reference photo(s) + prompt -> portraits of that person.

    pipe = FaceFactPipeline.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5",
                                            adapter="adapter.safetensors", encoder="transface.safetensors")
    out = pipe("a portrait in a garden", face_images=["me.jpg"], seed=7, num_images_per_prompt=4)
    out.images[0].save("me_garden.png")

It wraps a stock diffusers `StableDiffusionPipeline` (or its ControlNet sibling): the face tokens
are appended to the text embeddings that pipeline already accepts (`prompt_embeds`), with the
null face tokens on the unconditional side (`cfg_face`), so schedulers, LoRA, offloading and
callbacks all behave as diffusers users expect. Face tokens are computed once per request.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facefact import __version__
from facefact.errors import ConfigError
from facefact.model import (EncoderConfig, FaceAdapter, ResamplerConfig, TransFaceEncoder, check_sd15_layout,
                            cross_attention_blocks)
from facefact.pipelines.loading import (check_controlnet_fits, describe_file, load_base_pipeline, load_controlnet,
                                        make_scheduler, pick_device_dtype, require_file)

logger = logging.getLogger(__name__)

# Arguments the pipeline computes itself from its own parameters; passed through **sd_kwargs they
# would silently replace the face conditioning, the seeds or the image count.
_RESERVED_SD_KWARGS = {
    "prompt_embeds": "pass prompt= (and negative_prompt=); the face tokens are appended to its embeddings",
    "negative_prompt_embeds": "pass negative_prompt=; the null face tokens are appended to its embeddings",
    "num_images_per_prompt": "pass num_images_per_prompt= as FaceFactPipeline's own argument",
    "generator": "pass seed=; image i is made from seed + i",
}
# Per ControlNet: how many face tokens to cut off while a FaceFactPipeline call runs (0 otherwise).
_CONTROLNET_FACE_TOKENS = "_facefact_face_tokens"
_CONTROLNET_HOOK = "_facefact_text_only_hook"


def _text_only_for_controlnet(module, args, kwargs):
    # ControlNets were trained on text tokens only (spec section 5): cut the face tokens off.
    n_faces = getattr(module, _CONTROLNET_FACE_TOKENS, 0)
    states = kwargs.get("encoder_hidden_states")
    if states is not None and n_faces and states.shape[1] > n_faces:
        kwargs = {**kwargs, "encoder_hidden_states": states[:, :-n_faces]}
    return args, kwargs


@dataclass
class FaceFactOutput:
    images: list                                   # PIL images; image i was made from seeds[i]
    metadata: list[dict]                           # provenance per image (see facefact.pipelines.metadata)
    notes: list[str] = field(default_factory=list)  # what the user should know (several faces, cut prompt...)


class FaceFactPipeline:
    def __init__(self, sd_pipeline, encoder: TransFaceEncoder, adapter: FaceAdapter, face_analysis=None,
                 model_info: dict | None = None, default_size: int = 512):
        self.sd = sd_pipeline
        self.encoder = encoder.eval().requires_grad_(False)
        self.adapter = adapter
        self.face_analysis = face_analysis
        self.model_info = model_info or {}
        self._loras: dict[str, dict] = {}  # adapter name -> provenance entry (id, sha256, weight)
        self.default_size = default_size
        # Every request builds its scheduler from the base model's own config, never from the last
        # request's (an Euler config turned back into PNDM would not be the model's PNDM).
        self._scheduler_config = sd_pipeline.scheduler.config
        check_sd15_layout(self.sd.unet, self.model_info.get("base_model", {}).get("id"))
        # An adapter already attached to this UNet (training's validation images) is used as it is;
        # whoever attached it detaches it. Attached to another UNet is an error.
        self.attached_here = not adapter.is_attached
        if self.attached_here:
            adapter.attach(self.sd.unet)
            adapter.set_num_face_tokens(0)  # between requests the UNet is the plain base model
        elif not _attached_to(adapter, self.sd.unet):
            raise ConfigError("this FaceAdapter is attached to another UNet than the pipeline's",
                              hint="detach() it first, or pass the pipeline whose UNet it is attached to")
        self.encoder.to(self.sd.device, torch.float32)  # the reference runs the encoder in float32 always
        # One hook per ControlNet however many pipelines wrap it (stacked hooks would each cut the
        # face tokens off again); it cuts only while a request runs (see __call__).
        controlnet = getattr(self.sd, "controlnet", None)
        if controlnet is not None:
            described = self.model_info.get("controlnet") or {}
            names = ([entry.get("id") for entry in described] if isinstance(described, list)
                     else described.get("id"))
            check_controlnet_fits(controlnet, self.sd.unet, names)
        if controlnet is not None and getattr(controlnet, _CONTROLNET_HOOK, None) is None:
            setattr(controlnet, _CONTROLNET_FACE_TOKENS, 0)
            setattr(controlnet, _CONTROLNET_HOOK,
                    controlnet.register_forward_pre_hook(_text_only_for_controlnet, with_kwargs=True))

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, base_model: str | Path, adapter: str | Path, encoder: str | Path, *,
                        device=None, dtype=None, face_analysis=None, controlnet=None,
                        resampler_config: ResamplerConfig | None = None,
                        encoder_config: EncoderConfig | None = None) -> "FaceFactPipeline":
        device, dtype = pick_device_dtype(device, dtype)
        adapter_path = require_file(adapter, "FACT adapter", "--adapter")
        encoder_path = require_file(encoder, "TransFace encoder", "--encoder")
        face_adapter = FaceAdapter.from_checkpoint(adapter_path, resampler_config)
        face_encoder = TransFaceEncoder.from_checkpoint(encoder_path, encoder_config)
        controlnet, controlnet_info = _controlnets(controlnet, dtype)
        sd = load_base_pipeline(base_model, dtype, controlnet=controlnet).to(device)
        info = {"base_model": describe_file(base_model), "adapter": describe_file(adapter_path),
                "encoder": describe_file(encoder_path)}
        if controlnet_info is not None:
            info["controlnet"] = controlnet_info
        return cls(sd, face_encoder, face_adapter, face_analysis, info, default_size=512)

    @classmethod
    def tiny(cls, seed: int = 0, face_analysis=None, device=None, dtype=None,
             controlnet: bool = False) -> "FaceFactPipeline":
        """Tiny random-weight models, built offline in a second: the whole path, no download.
        With `controlnet=True`, a tiny random ControlNet made from the tiny UNet sits beside it."""
        from facefact.model.tiny import tiny_encoder, tiny_face_adapter
        from facefact.pipelines.tiny import TINY_IMAGE_SIZE, tiny_sd_controlnet_pipeline, tiny_sd_pipeline

        device, dtype = pick_device_dtype(device or "cpu", dtype or torch.float32)
        sd = (tiny_sd_controlnet_pipeline(seed) if controlnet else tiny_sd_pipeline(seed)).to(device)
        if dtype != torch.float32:
            sd.to(dtype=dtype)
        parts = ("base_model", "adapter", "encoder") + (("controlnet",) if controlnet else ())
        info = {name: {"id": f"facefact-tiny/{name}", "seed": seed} for name in parts}
        return cls(sd, tiny_encoder(seed), tiny_face_adapter(sd.unet, seed=seed + 1), face_analysis, info,
                   default_size=TINY_IMAGE_SIZE)

    @property
    def device(self) -> torch.device:
        return self.sd._execution_device

    def to(self, *args, **kwargs) -> "FaceFactPipeline":
        """Like `DiffusionPipeline.to` (a device, a dtype or both) for the diffusers models; the
        resampler follows the UNet (device and dtype, as `attach` placed it), the encoder follows
        the device only and stays float32 (spec: the encoder always runs in float32)."""
        self.sd.to(*args, **kwargs)
        unet_param = next(self.sd.unet.parameters())
        self.adapter.to(unet_param.device, unet_param.dtype)  # processors are UNet submodules already
        self.encoder.to(self.device, torch.float32)
        return self

    def enable_model_cpu_offload(self, **kwargs) -> None:
        self.sd.enable_model_cpu_offload(**kwargs)

    # ---- LoRA --------------------------------------------------------------------------------
    def load_lora_weights(self, lora, adapter_name: str | None = None, weight: float = 1.0, **kwargs) -> str:
        """diffusers' `load_lora_weights`, recorded in every image's provenance (`models.loras`:
        file name, short sha256, weight) and with clear errors. Returns the adapter name
        (`lora1`, `lora2`... unless given). Every loaded LoRA stays active at its weight (diffusers
        alone would keep only the last one active); change the weights with `set_adapters`."""
        from facefact.pipelines.loading import describe_lora, load_lora_into

        name = adapter_name or f"lora{len(self._loras) + 1}"
        if name in self._loras:
            raise ConfigError(f"a LoRA named '{name}' is loaded already", hint="pass another adapter_name")
        load_lora_into(self.sd, lora, name, **kwargs)
        described = describe_lora(lora, weight_name=kwargs.get("weight_name"), subfolder=kwargs.get("subfolder"))
        self._loras[name] = {**described, "weight": float(weight)}
        self.set_adapters(list(self._loras), [entry["weight"] for entry in self._loras.values()])
        return name

    def set_adapters(self, adapter_names, adapter_weights=None) -> None:
        """diffusers' `set_adapters`, kept in the provenance: the LoRAs named run at these weights
        (default 1.0), the other loaded ones are off (recorded as weight 0)."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        if adapter_weights is None or isinstance(adapter_weights, (int, float, dict)):
            adapter_weights = [1.0 if adapter_weights is None else adapter_weights] * len(names)
        unknown = [n for n in names if n not in self._loras]
        if unknown:
            raise ConfigError(f"no LoRA named {', '.join(unknown)} is loaded",
                              hint=f"loaded: {', '.join(self._loras) or 'none'}")
        self.sd.set_adapters(names, list(adapter_weights))
        chosen = dict(zip(names, adapter_weights))
        for name, entry in self._loras.items():
            weight = chosen.get(name, 0.0)
            entry["weight"] = float(weight) if isinstance(weight, (int, float)) else weight
        self._record_loras()

    def unload_lora_weights(self) -> None:
        self.sd.unload_lora_weights()
        self._loras.clear()
        self._record_loras()

    def _record_loras(self) -> None:
        if self._loras:
            self.model_info["loras"] = [dict(entry) for entry in self._loras.values()]
        else:
            self.model_info.pop("loras", None)

    # ---- faces -> tokens ---------------------------------------------------------------------
    def _analysis(self):
        if self.face_analysis is None:
            from facefact.faces import FaceAnalysis

            self.face_analysis = FaceAnalysis()
        return self.face_analysis

    def face_pixels(self, face_images, notes: list[str] | None = None) -> torch.Tensor:
        """Photos -> head-masked aligned faces [n, 3, 112, 112] in [-1, 1] (spec section 1)."""
        return face_pixels_from_photos(self._analysis(), face_images, notes)

    @torch.no_grad()
    def encode_faces(self, face_images=None, face_pixels: torch.Tensor | None = None, notes=None):
        """(face tokens, null face tokens), each [1, 16n, C] in the UNet's dtype."""
        if face_pixels is None:
            face_pixels = self.face_pixels(face_images, notes)
        encoder_device = next(self.encoder.parameters()).device
        adapter_device = self.adapter.resampler.latents.device
        # An outer autocast (training's validation images run under one) must not put the encoder in
        # half precision (spec: float32 always) nor recast the resampler away from its own dtype.
        with contextlib.ExitStack() as stack:
            for device_type in {encoder_device.type, adapter_device.type}:
                stack.enter_context(torch.autocast(device_type, enabled=False))
            tokens = self.encoder(face_pixels.to(encoder_device, torch.float32))
            tokens = tokens.to(adapter_device)
            face = self.adapter.face_tokens(tokens)
            null = self.adapter.null_face_tokens(len(face_pixels), tuple(tokens.shape[1:]))
        return face, null

    # ---- generation --------------------------------------------------------------------------
    def _check_prompt(self, prompt: str, notes: list[str]) -> None:
        tokenizer = self.sd.tokenizer
        ids = tokenizer(prompt, truncation=False).input_ids
        limit = tokenizer.model_max_length
        if len(ids) > limit:
            cut = tokenizer.decode(ids[limit - 1:-1])
            notes.append(f"the prompt is {len(ids)} tokens but the text encoder takes {limit}; this part was cut: "
                         f"'{cut.strip()}'")

    def __call__(self, prompt: str, face_images=None, *, negative_prompt: str | None = None,
                 adapter_scale: float = 0.5, cfg_face: bool = True, num_images_per_prompt: int = 1,
                 seed: int | None = None, num_inference_steps: int = 50, guidance_scale: float = 5.0,
                 height: int | None = None, width: int | None = None, scheduler: str = "pndm",
                 face_pixels: torch.Tensor | None = None, callback_on_step_end=None, **sd_kwargs) -> FaceFactOutput:
        # Built first: an unknown scheduler name is refused before any work.
        request_scheduler = make_scheduler(scheduler, self._scheduler_config)
        for name in sd_kwargs:
            if name in _RESERVED_SD_KWARGS:
                raise ConfigError(f"FaceFactPipeline sets '{name}' itself", hint=_RESERVED_SD_KWARGS[name])
        height, width = height or self.default_size, width or self.default_size
        if height % 8 or width % 8:
            raise ConfigError(f"image size {width}x{height} is not a multiple of 8",
                              hint=f"use e.g. {width // 8 * 8}x{height // 8 * 8}")
        if num_images_per_prompt < 1:
            raise ConfigError("num_images_per_prompt must be at least 1")
        if num_inference_steps < 1:
            raise ConfigError(f"num_inference_steps must be at least 1 (got {num_inference_steps})",
                              hint="use e.g. 30-50 steps for the released models")
        if face_pixels is None and isinstance(face_images, (list, tuple)) and len(face_images) == 0:
            raise ConfigError("face_images is an empty list",
                              hint="pass at least one reference photo, or face_images=None for no face")
        notes: list[str] = []
        self._check_prompt(prompt, notes)
        if negative_prompt:
            self._check_prompt(negative_prompt, notes)
        seed = secrets.randbelow(2**31) if seed is None else int(seed)
        seeds = [seed + i for i in range(num_images_per_prompt)]
        self.sd.scheduler = request_scheduler

        device = self.device
        do_cfg = guidance_scale > 1.0
        text, negative_text = self.sd.encode_prompt(prompt, device, 1, do_cfg, negative_prompt)
        has_faces = face_images is not None or face_pixels is not None
        if has_faces:
            face, null = self.encode_faces(face_images, face_pixels, notes)
            face, null = face.to(device, text.dtype), null.to(device, text.dtype)
            text = torch.cat([text, face], dim=1)
            if do_cfg:
                negative_text = torch.cat([negative_text, null if cfg_face else face], dim=1)
            n_photos = face.shape[1] // self.adapter.tokens_per_photo
        else:
            n_photos = 0
        n_face_tokens = face.shape[1] if has_faces else 0
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]  # same latents on every device
        # The adapter state is per request: restored afterwards, so `pipe.sd(...)` called directly
        # is the plain base model again (or, for an adapter attached by someone else, their state).
        previous = (self.adapter.scale, self.adapter.num_face_tokens)
        controlnet = getattr(self.sd, "controlnet", None)
        try:
            self.adapter.set_num_face_tokens(n_face_tokens)
            self.adapter.set_scale(adapter_scale)
            if controlnet is not None:
                setattr(controlnet, _CONTROLNET_FACE_TOKENS, n_face_tokens)
            result = self.sd(prompt_embeds=text, negative_prompt_embeds=negative_text if do_cfg else None,
                             num_images_per_prompt=num_images_per_prompt, generator=generators,
                             num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, height=height,
                             width=width, callback_on_step_end=callback_on_step_end, **sd_kwargs)
        finally:
            self.adapter.set_scale(previous[0])
            self.adapter.set_num_face_tokens(previous[1])
            if controlnet is not None:
                setattr(controlnet, _CONTROLNET_FACE_TOKENS, 0)
        for note in notes:
            logger.warning(note)
        settings = {"prompt": prompt, "negative_prompt": negative_prompt or "", "adapter_scale": adapter_scale,
                    "cfg_face": cfg_face, "num_reference_photos": n_photos, "steps": num_inference_steps,
                    "guidance_scale": guidance_scale, "width": width, "height": height, "scheduler": scheduler,
                    "dtype": str(text.dtype).replace("torch.", "")}
        if controlnet is not None:
            settings["control_scale"] = sd_kwargs.get("controlnet_conditioning_scale", 1.0)
        metadata = [{"generator": f"facefact {__version__}", "method": "FaceChain-FACT", "ai_generated": True,
                     "seed": s, **settings, "models": copy.deepcopy(self.model_info), "notes": notes} for s in seeds]
        return FaceFactOutput(images=result.images, metadata=metadata, notes=notes)


def _controlnets(controlnet, dtype: torch.dtype):
    """(the ControlNet for the diffusers pipeline, its provenance) for from_pretrained's `controlnet=`:
    None; a folder, single file or hub id (loaded in the pipeline's dtype); a ControlNetModel; or
    several - a MultiControlNetModel or a list of any of these, wrapped in a MultiControlNetModel -
    whose provenance is a list, one entry per ControlNet in order."""
    from diffusers import MultiControlNetModel

    from facefact.pipelines.registry import looks_like_hub_id

    def one(item):
        if isinstance(item, (str, Path)):
            return load_controlnet(item, dtype), describe_file(item)
        if not hasattr(item, "config") or isinstance(item, MultiControlNetModel):
            raise ConfigError(f"controlnet= got a {type(item).__name__}",
                              hint="pass a ControlNetModel, a folder, single file or hub id, or a list of them "
                                   "(or a MultiControlNetModel) for several")
        # Where it was loaded from: a hub id as given, a local folder by its name only (never the path)
        where = str(getattr(item.config, "_name_or_path", "") or "controlnet")
        return item, {"id": where if looks_like_hub_id(where) else Path(where).name}

    if controlnet is None:
        return None, None
    if not isinstance(controlnet, (list, tuple, MultiControlNetModel)):
        return one(controlnet)
    given = list(controlnet.nets) if isinstance(controlnet, MultiControlNetModel) else list(controlnet)
    if not given:
        raise ConfigError("controlnet= is an empty list", hint="pass one ControlNet or several, or controlnet=None")
    loaded = [one(item) for item in given]
    if isinstance(controlnet, MultiControlNetModel):
        return controlnet, [info for _, info in loaded]
    return MultiControlNetModel([net for net, _ in loaded]), [info for _, info in loaded]


def _attached_to(adapter: FaceAdapter, unet) -> bool:
    """True when every cross-attention block of `unet` runs this adapter's processor."""
    blocks = cross_attention_blocks(unet)
    return set(blocks) == set(adapter.block_paths) and all(
        blocks[path].attn2.processor is adapter.processor(path) for path in adapter.block_paths)


def face_pixels_from_photos(analysis, face_images, notes: list[str] | None = None) -> torch.Tensor:
    """Photos -> the FACT encoder's input [n, 3, 112, 112] in [-1, 1]: head-masked, aligned.

    Raises the face-analysis errors (no face, too small, ...) naming the photo. Callers that want
    to fail before loading any weights (the CLI) call this first and pass `face_pixels=` on.
    """
    if isinstance(face_images, (str, Path, np.ndarray)) or hasattr(face_images, "getpixel"):
        face_images = [face_images]  # one photo given on its own (path, array or PIL image)
    crops = []
    for index, source in enumerate(face_images):
        name = str(source) if isinstance(source, (str, Path)) else None
        image = analysis.load(source)
        face = analysis.get_one(image, strict=False, path=name)  # clear errors: no face, too small...
        if notes is not None:  # photo names stay out of notes: notes go into image metadata
            notes.extend(f"reference photo {index + 1}: {note}" for note in face.notes)
        crops.append(analysis.fact_condition(image, face))
    pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    return (pixels / 255.0 - 0.5) / 0.5
