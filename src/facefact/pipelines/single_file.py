"""What an original-layout single file (a `.safetensors` / `.ckpt` community fine-tune, as A1111 and
ComfyUI share them) holds, told by diffusers' own detection - `infer_diffusers_model_type`, the
function `from_single_file` picks its config with - so the FACT classes chosen for a file are the
ones diffusers will load it as. Only names and shapes are read: a .safetensors file's header, a
.ckpt memory-mapped through weights-only unpickling (never a full unpickle).
"""
from __future__ import annotations

from pathlib import Path

import torch

from facefact.errors import CheckpointError, ModelNotFoundError

# diffusers' single-file model types -> the FACT family whose pipeline classes run them. SD 2.x runs
# on the SD1.5 classes as in diffusers (a FACT adapter then refuses its 1024-wide text by width).
MODEL_TYPE_FAMILIES = {"v1": "sd15", "inpainting": "sd15", "v2": "sd15", "inpainting_v2": "sd15",
                       "xl_base": "sdxl", "xl_inpaint": "sdxl", "playground-v2-5": "sdxl"}
UNET_PREFIX = "model.diffusion_model."
BASE_HINT = "the file is damaged or not a base model; download it again"


def safetensors_header(path: Path, what: str, hint: str):
    """The open safetensors file (its header read, no tensor loaded) for a `with`; a file that is not
    one (a damaged header, a FIFO, ...) is a CheckpointError naming it."""
    from safetensors import SafetensorError, safe_open

    from facefact.safe_open import require_regular_file

    require_regular_file(path, CheckpointError, missing_cls=ModelNotFoundError, hint=hint)
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not {what}: not a readable .safetensors file "
                              f"({str(err).splitlines()[0][:200] if str(err) else type(err).__name__})",
                              path=path, hint=hint) from err


class _Shape:
    """What diffusers' detection reads of a tensor: its shape (`in` and `.shape` only)."""

    __slots__ = ("shape",)

    def __init__(self, shape):
        self.shape = torch.Size(shape)


def checkpoint_shapes(path: str | Path) -> dict:
    """{key: object with `.shape`} of a single file, without reading its values."""
    from facefact.model.checkpoints import read_state_dict

    path = Path(path)
    if path.suffix == ".safetensors":
        with safetensors_header(path, "a Stable Diffusion checkpoint", BASE_HINT) as f:
            return {key: _Shape(f.get_slice(key).get_shape()) for key in f.keys()}
    return read_state_dict(path, check_values=False)  # weights-only, memory-mapped


def single_file_model_type(checkpoint: dict, path) -> str:
    """diffusers' name for what the checkpoint holds ("v1", "xl_base", "xl_inpaint", "controlnet", ...)."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    try:
        return infer_diffusers_model_type(checkpoint)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path} is not a Stable Diffusion 1.5 or SDXL checkpoint: diffusers cannot tell what "
                              f"it holds ({type(err).__name__})", path=path, hint=BASE_HINT) from err


def single_file_unet_config(path: str | Path) -> dict:
    """The part of a base model's UNet config a single file tells: SDXL's text-time conditioning (the
    family, as `layouts.unet_family` reads it), the cross-attention width, `single_file: True`, and
    diffusers' `model_type`. A file diffusers reads as something else (an SDXL refiner, a
    ControlNet, SD3, Flux, ...) is refused naming what it is."""
    from facefact.model.layouts import family_name

    path = Path(path)
    checkpoint = checkpoint_shapes(path)
    model_type = single_file_model_type(checkpoint, path)
    family = MODEL_TYPE_FAMILIES.get(model_type)
    if family is None:
        what = "an SDXL refiner" if model_type == "xl_refiner" else f"a '{model_type}' model (as diffusers reads it)"
        raise CheckpointError(f"{path} is {what}, not a {family_name('sd15')} or {family_name('sdxl')} base model",
                              path=path, setting="base_model",
                              hint="FACT runs on a Stable Diffusion 1.5-family or SDXL base (not a refiner, ControlNet "
                                   "or other architecture); pass such a base model")
    widths = [shape.shape[1] for key, shape in sorted(checkpoint.items())
              if key.startswith(UNET_PREFIX) and key.endswith(".attn2.to_k.weight") and len(shape.shape) == 2]
    if not widths:
        raise CheckpointError("not a Stable Diffusion checkpoint (no UNet cross-attention found)", path=path,
                              hint=BASE_HINT)
    config = {"cross_attention_dim": int(widths[0]), "single_file": True, "model_type": model_type}
    if family == "sdxl":
        config["addition_embed_type"] = "text_time"
    return config
