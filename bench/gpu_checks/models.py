"""The models every check shares, built once per run on the device, and the inputs of each pipeline.

`--tiny`: the test suite's tiny random models (facefact.pipelines.tiny, facefact.model.tiny).
Otherwise SD1.5 at full size from its configs and FACT at the official sizes (bench/sd15.py), random
weights, created directly on the device. Each dtype gets its own copies, cast from one float32
master, so fp16 / bf16 / fp32 runs see the same weights.
"""
from __future__ import annotations

import copy
import gc

import numpy as np
import torch
from PIL import Image

# kind -> (FACT class name, UNet input channels, ControlNets)
KINDS = {
    "text2img": ("FACTStableDiffusionPipeline", 4, 0),
    "img2img": ("FACTStableDiffusionImg2ImgPipeline", 4, 0),
    "inpaint4": ("FACTStableDiffusionInpaintPipeline", 4, 0),
    "inpaint9": ("FACTStableDiffusionInpaintPipeline", 9, 0),
    "controlnet": ("FACTStableDiffusionControlNetPipeline", 4, 1),
    "controlnet_img2img": ("FACTStableDiffusionControlNetImg2ImgPipeline", 4, 1),
    "controlnet_inpaint": ("FACTStableDiffusionControlNetInpaintPipeline", 4, 2),
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SHORT = {v: k for k, v in DTYPES.items()}


class ModelSet:
    def __init__(self, device: torch.device, tiny: bool, size: int):
        self.device, self.tiny, self.size = device, tiny, size
        self._master: dict | None = None
        self._parts: dict = {}

    @property
    def master(self) -> dict:
        """float32 on the device: unet, unet9, vae, text_encoder, tokenizer, controlnets, adapter, encoder."""
        if self._master is None:
            self._master = _tiny_master() if self.tiny else _full_master(self.device, self.size)
            for name in ("unet", "unet9", "vae", "text_encoder", "adapter", "encoder"):
                self._master[name].to(self.device)
            for net in self._master["controlnets"]:
                net.to(self.device)
        return self._master

    def parts(self, dtype) -> dict:
        """This dtype's copies of the base models (shared by the pipelines of one dtype)."""
        if dtype not in self._parts:
            m = self.master
            self._parts[dtype] = {name: copy.deepcopy(m[name]).to(dtype=dtype)
                                  for name in ("unet", "unet9", "vae", "text_encoder")}
            self._parts[dtype]["controlnets"] = [copy.deepcopy(net).to(dtype=dtype) for net in m["controlnets"]]
        return self._parts[dtype]

    def adapter(self, dtype=torch.float32):
        """A fresh, unattached copy of the FACT adapter in `dtype`."""
        return copy.deepcopy(self.master["adapter"]).to(dtype=dtype)

    def release(self, dtype=None) -> None:
        """Frees one dtype's copies (all with None), so the next check has the memory."""
        for key in [dtype] if dtype is not None else list(self._parts):
            self._parts.pop(key, None)
        free_memory(self.device)

    def pipeline(self, kind: str, dtype, *, fact: bool = True, parts: dict | None = None):
        """A FACT pipeline of `kind` on this dtype's models (or on `parts`), FACT loaded when `fact`."""
        import facefact.pipelines as fp
        from diffusers import MultiControlNetModel

        from facefact.pipelines.tiny import tiny_scheduler

        class_name, channels, nets = KINDS[kind]
        parts = {**self.parts(dtype), **(parts or {})}
        components = {"vae": parts["vae"], "text_encoder": parts["text_encoder"], "tokenizer": self.master["tokenizer"],
                      "unet": parts["unet9" if channels == 9 else "unet"], "scheduler": tiny_scheduler(),
                      "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
        if nets:
            chosen = parts["controlnets"][:nets]
            components["controlnet"] = chosen[0] if nets == 1 else MultiControlNetModel(chosen)
        pipe = getattr(fp, class_name)(**components)
        pipe.set_progress_bar_config(disable=True)
        if fact:
            encoder = self.master["encoder"] if components["unet"].device.type == self.device.type else \
                copy.deepcopy(self.master["encoder"])  # the shared one stays on the device
            pipe.load_fact_adapter(self.adapter(dtype), encoder=encoder)
        return pipe


def _tiny_master() -> dict:
    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines.tiny import tiny_controlnet, tiny_sd_pipeline, tiny_unet

    sd = tiny_sd_pipeline(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet9 = tiny_unet(in_channels=9)
    return {"unet": sd.unet, "unet9": unet9.eval().requires_grad_(False), "vae": sd.vae,
            "text_encoder": sd.text_encoder, "tokenizer": sd.tokenizer,
            "controlnets": [tiny_controlnet(sd.unet, k) for k in range(2)],
            "adapter": tiny_face_adapter(sd.unet, seed=1), "encoder": tiny_encoder(0)}


def _full_master(device: torch.device, size: int) -> dict:
    from sd15 import official_adapter, official_encoder, sd15_parts, sd15_unet

    with torch.device(device):  # weights created and initialised where they run
        parts = sd15_parts(size, with_controlnets=True, seed=0)
        torch.manual_seed(1)
        unet9 = sd15_unet(size // 8, in_channels=9)
        adapter, encoder = official_adapter(parts["unet"], seed=2), official_encoder(seed=3)
    return {"unet": parts["unet"], "unet9": unet9, "vae": parts["vae"], "text_encoder": parts["text_encoder"],
            "tokenizer": parts["tokenizer"], "controlnets": list(parts["controlnet"].nets),
            "adapter": adapter, "encoder": encoder}


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def base_class(pipe):
    """The diffusers pipeline a FACT class extends (the same components run it without FACT)."""
    return next(c for c in type(pipe).__mro__[1:] if c.__module__.startswith("diffusers.pipelines"))


# ---- inputs ------------------------------------------------------------------------------------------
def face_pixels(seed: int = 0) -> torch.Tensor:
    """A synthetic FACT encoder input [1, 3, 112, 112] in [-1, 1] (no face detector needed)."""
    return torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_image(size: int, seed: int = 0) -> Image.Image:
    """A smooth colour image with some texture: a photo-like input for img2img / inpainting."""
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    noise = np.random.default_rng(seed).normal(0, 0.05, (size, size, 3))
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x * y)], axis=-1) + noise
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def test_mask(size: int) -> Image.Image:
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    return Image.fromarray(mask, mode="L")


def control_image(size: int, seed: int = 1) -> Image.Image:
    """Sparse white strokes on black, like a Canny or pose map."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((size, size, 3), np.uint8)
    for _ in range(12):
        x, y = rng.integers(0, size, 2)
        canvas[max(0, y - 1):y + 1, max(0, x - size // 6):x + size // 6] = 255
    return Image.fromarray(canvas)


def call_kwargs(kind: str, size: int, steps: int, seed: int = 0) -> dict:
    """The arguments one call of a `kind` pipeline takes (diffusers' own), output as float arrays."""
    _, _, nets = KINDS[kind]
    kwargs = dict(prompt="a portrait photo", negative_prompt="blurry", num_inference_steps=steps, guidance_scale=5.0,
                  height=size, width=size, output_type="np", generator=torch.Generator("cpu").manual_seed(seed))
    control = [control_image(size, 1 + k) for k in range(nets)]
    control = control[0] if nets == 1 else control
    if kind in ("img2img", "controlnet_img2img"):
        kwargs.update(image=test_image(size), strength=0.75)
    if kind.startswith("inpaint") or kind == "controlnet_inpaint":
        kwargs.update(image=test_image(size), mask_image=test_mask(size))
    if kind == "controlnet":
        kwargs["image"] = control
    elif nets:
        kwargs["control_image"] = control
    return kwargs


def to_uint8(images: np.ndarray) -> np.ndarray:
    """What the user's PNG holds (diffusers' numpy_to_pil rounding)."""
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


# ---- instrumentation (the check's own hooks, removed on exit) ------------------------------------------
class Probe:
    """Counts the calls of the text and face encoders, resampler, UNet and ControlNets during a pipeline call, and
    records the device and dtype of the face tokens as they reach the first fuser."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.counts: dict[str, int] = {}
        self.token_places: set[tuple[str, str]] = set()
        self._handles = []

    def _count(self, name: str):
        def hook(module, args, *rest):
            self.counts[name] = self.counts.get(name, 0) + 1
        return hook

    def __enter__(self) -> "Probe":
        pipe = self.pipe
        modules = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
        adapter = getattr(pipe, "fact_adapter", None)
        if adapter is not None:
            modules.update(resampler=adapter.resampler, encoder=pipe.face_encoder)

            def on_fuser(module, args):
                objs = args[1][0] if isinstance(args[1], tuple) else args[1]
                self.token_places.add((str(objs.device), SHORT.get(objs.dtype, str(objs.dtype))))
            self._handles.append(adapter.all_fusers()[0].register_forward_pre_hook(on_fuser))
        controlnet = getattr(pipe, "controlnet", None)
        for k, net in enumerate(getattr(controlnet, "nets", [controlnet] if controlnet is not None else [])):
            modules[f"controlnet{k}"] = net
        for name, module in modules.items():
            self.counts[name] = 0
            self._handles.append(module.register_forward_pre_hook(self._count(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def unet_state(unet) -> tuple[list[str], dict]:
    """The UNet's module names and a copy of every parameter and buffer (what unload must restore)."""
    tensors = {n: t.detach().clone() for n, t in [*unet.named_parameters(), *unet.named_buffers()]}
    return sorted(n for n, _ in unet.named_modules()), tensors


def same_state(before, after) -> bool:
    (names_a, tensors_a), (names_b, tensors_b) = before, after
    return (names_a == names_b and tensors_a.keys() == tensors_b.keys()
            and all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a))


def unet_place(unet) -> tuple[str, str]:
    param = next(unet.parameters())
    return str(param.device), SHORT.get(param.dtype, str(param.dtype))


def pipeline_modules(pipe) -> list:
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    if getattr(pipe, "fact_adapter", None) is not None:
        modules += [pipe.fact_adapter.resampler, pipe.face_encoder]  # the fusers are UNet modules already
    return modules


def vram_of_call(pipe, fn, device):
    """(fn's result, the pipeline's peak VRAM in MiB): the bytes of its weights on the GPU before the
    call plus what the call allocated at its peak beyond that - other models resident on the same GPU
    (the check's shared copies) are not counted. None on a CPU."""
    if device.type != "cuda":
        return fn(), None
    seen, resident = set(), 0
    for module in pipeline_modules(pipe):
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_cuda and id(tensor) not in seen:
                seen.add(id(tensor))
                resident += tensor.numel() * tensor.element_size()
    free_memory(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    torch.cuda.synchronize(device)
    return result, (resident + torch.cuda.max_memory_allocated(device) - before) / 2**20
