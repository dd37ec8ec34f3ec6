"""One way to get a ready FACT pipeline from model locations, for every command and the server.

    pipe = load_fact_pipeline("tiny", "tiny", "tiny")                       # all built-in tiny models
    pipe = load_fact_pipeline("tiny", "run/adapter.safetensors", "tiny")   # a trained adapter on tiny
    pipe = load_fact_pipeline("path/or/hub-id", adapter="fact.safetensors", encoder="transface.pt",
                              kind="inpaint", controlnet=["lllyasviel/control_v11p_sd15_openpose", ...])

"tiny" is one model source like any other: each of base model, adapter, encoder and ControlNet
is "tiny" or a real location, so a trained adapter runs on the tiny base and encoder it was
trained with ("tiny-sdxl": the tiny SDXL base). The base model's UNet config says its family
(SD1.5 or SDXL), which picks the FACT classes (`FACTStableDiffusion...` or `FACTStableDiffusionXL...`);
an adapter made for the other family is refused by name. Loading writes nothing: provenance hashes
are added where images are written.
"""
from __future__ import annotations

from pathlib import Path

import torch

from facefact.errors import ConfigError
from facefact.pipelines.classes import (FACTStableDiffusionControlNetImg2ImgPipeline,
                                        FACTStableDiffusionControlNetInpaintPipeline,
                                        FACTStableDiffusionControlNetPipeline, FACTStableDiffusionImg2ImgPipeline,
                                        FACTStableDiffusionInpaintPipeline, FACTStableDiffusionPipeline,
                                        FACTStableDiffusionXLControlNetImg2ImgPipeline,
                                        FACTStableDiffusionXLControlNetInpaintPipeline,
                                        FACTStableDiffusionXLControlNetPipeline, FACTStableDiffusionXLImg2ImgPipeline,
                                        FACTStableDiffusionXLInpaintPipeline, FACTStableDiffusionXLPipeline)
from facefact.pipelines.loading import (base_family, check_controlnet_family, check_controlnet_fits,
                                        load_base_pipeline, load_controlnet, pick_device_dtype)

TINY = "tiny"
TINY_XL = "tiny-sdxl"
KINDS = {  # kind -> (class without ControlNet, class with ControlNet)
    "txt2img": (FACTStableDiffusionPipeline, FACTStableDiffusionControlNetPipeline),
    "img2img": (FACTStableDiffusionImg2ImgPipeline, FACTStableDiffusionControlNetImg2ImgPipeline),
    "inpaint": (FACTStableDiffusionInpaintPipeline, FACTStableDiffusionControlNetInpaintPipeline),
}
XL_KINDS = {
    "txt2img": (FACTStableDiffusionXLPipeline, FACTStableDiffusionXLControlNetPipeline),
    "img2img": (FACTStableDiffusionXLImg2ImgPipeline, FACTStableDiffusionXLControlNetImg2ImgPipeline),
    "inpaint": (FACTStableDiffusionXLInpaintPipeline, FACTStableDiffusionXLControlNetInpaintPipeline),
}


def pipeline_class(kind: str = "txt2img", controlnet: bool = False, family: str = "sd15"):
    """The FACT class for `kind` (txt2img / img2img / inpaint), with or without ControlNet, for the
    base family ("sd15" or "sdxl")."""
    if kind not in KINDS:
        raise ConfigError(f"unknown pipeline kind '{kind}'", hint=f"use one of: {', '.join(KINDS)}")
    return (XL_KINDS if family == "sdxl" else KINDS)[kind][1 if controlnet else 0]


def load_fact_pipeline(base_model: str | Path, adapter: str | Path | None, encoder: str | Path | None, *, kind: str = "txt2img", controlnet=None,
                       device=None, dtype=None, face_analysis=None, adapter_weight_name: str | None = None,
                       encoder_weight_name: str | None = None, inpainting_unet: bool = False):
    """A FACT pipeline of `kind` with its adapter loaded. `controlnet`: None, "tiny", a location,
    or a list of them (a MultiControlNetModel)."""
    if isinstance(controlnet, (list, tuple)) and not controlnet:
        raise ConfigError("controlnet=[] names no ControlNet", hint="pass None for none, or one or more locations")
    nets = [] if controlnet is None else (list(controlnet) if isinstance(controlnet, (list, tuple)) else [controlnet])
    tiny_base = str(base_model) in (TINY, TINY_XL)
    family = ("sdxl" if str(base_model) == TINY_XL else "sd15") if tiny_base else base_family(base_model)
    cls = pipeline_class(kind, bool(nets), family)
    _refuse_adapter_of_other_family(adapter, family)  # before any weights load
    device, dtype = pick_device_dtype(device or ("cpu" if tiny_base else None), dtype or
                                      (torch.float32 if tiny_base else None))
    if tiny_base:
        if any(str(n) != TINY for n in nets):
            raise ConfigError("the tiny base model takes only tiny ControlNets", hint="use controlnet='tiny'")
        pipe = cls.tiny(inpainting_unet=inpainting_unet, num_controlnets=max(1, len(nets)),
                        face_analysis=face_analysis)
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
    else:
        if any(str(n) == TINY for n in nets):
            raise ConfigError("tiny ControlNets fit only the tiny base model", hint="pass a real ControlNet")
        pipe = _load_real_base(cls, base_model, nets, dtype, family)
    if not tiny_base or str(adapter) != TINY or str(encoder) != TINY:
        _load_adapter(pipe, adapter, encoder, adapter_weight_name, encoder_weight_name, face_analysis)
    return pipe.to(device)


def _refuse_adapter_of_other_family(adapter, family: str) -> None:
    """A facefact adapter file records the base family it was made for (its safetensors metadata):
    one for the other family is refused here, naming both, before the base model loads. Other
    sources (released .ckpt files, hub ids) are checked as they attach."""
    from facefact.model.layouts import family_of_label, refuse_other_family
    from facefact.pipelines.single_file import safetensors_header

    path = Path(str(adapter)).expanduser() if isinstance(adapter, (str, Path)) else None
    if path is None or path.suffix != ".safetensors" or not path.is_file():
        return
    with safetensors_header(path, "a FACT adapter", "the file is damaged; download or convert it again") as f:
        label = (f.metadata() or {}).get("base_family")
    if label is not None:
        refuse_other_family(family_of_label(label, path), family, path)


def _load_real_base(cls, base_model, nets, dtype, family: str):
    from diffusers import MultiControlNetModel

    from facefact.pipelines.provenance import model_entry

    loaded = [load_controlnet(n, dtype) for n in nets]
    for net, name in zip(loaded, nets):  # the other family's ControlNet: refused before the base loads
        check_controlnet_family(net, family, str(name))
    controlnet = None if not loaded else (loaded[0] if len(loaded) == 1 else MultiControlNetModel(loaded))
    pipe = load_base_pipeline(base_model, dtype, controlnet=controlnet, cls=cls)
    pipe.set_progress_bar_config(disable=True)
    if controlnet is not None:
        check_controlnet_fits(controlnet, pipe.unet, [str(n) for n in nets])
        local = [Path(str(n)).expanduser() if Path(str(n)).expanduser().exists() else None for n in nets]
        pipe._facefact_controlnet_info = [model_entry(n, path) for n, path in zip(nets, local)]
        pipe._facefact_controlnet_files = local  # hashed where images are written
    return pipe


def _load_adapter(pipe, adapter, encoder, adapter_weight_name, encoder_weight_name, face_analysis):
    """The adapter and encoder into `pipe`; "tiny" for either is the tiny pipeline's own
    (`load_fact_adapter` knows it)."""
    if adapter is None or encoder is None:
        raise ConfigError("a FACT pipeline needs an adapter and an encoder",
                          hint="pass both (files, folders, hub ids), or 'tiny' with the tiny base model")
    if getattr(pipe, "fact_adapter", None) is not None:
        pipe.unload_fact_adapter()
    pipe.load_fact_adapter(str(adapter) if str(adapter) == TINY else adapter,
                           encoder=str(encoder) if str(encoder) == TINY else encoder, weight_name=adapter_weight_name,
                           encoder_weight_name=encoder_weight_name, face_analysis=face_analysis)
