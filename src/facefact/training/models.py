"""The models of a training run: frozen base (UNet, VAE, text encoder(s)), frozen face encoder, and
the trainable FaceAdapter, plus the one module DDP wraps (`AdapterTrainingModule`).

The base is an SD1.5-family or an SDXL model (its UNet config says which, facefact.model.layouts);
an SDXL base brings its second text encoder and tokenizer."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from facefact.errors import CheckpointError, ConfigError
from facefact.model import FaceAdapter, ResamplerConfig, TransFaceEncoder
from facefact.model.face_adapter import check_trainable_layout
from facefact.model.layouts import DEFAULT_LAYOUT, family_name, unet_family



@dataclass
class BaseModel:
    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    noise_scheduler: object   # DDPM-style: add_noise, num_train_timesteps, prediction_type
    scheduler_config: dict    # the folder's own (inference) scheduler, for validation images
    text_encoder_2: nn.Module | None = None   # SDXL: the second text encoder (with projection)
    tokenizer_2: object = None

    @property
    def family(self) -> str:
        return unet_family(self.unet)

    def frozen_modules(self) -> list[nn.Module]:
        return [m for m in (self.unet, self.vae, self.text_encoder, self.text_encoder_2) if m is not None]


def load_base_model(spec: str) -> BaseModel:
    """'tiny' / 'tiny-sdxl' (random weights, built in-process) or any base model `facefact generate`
    takes - a diffusers folder, a hub id or a single .safetensors/.ckpt file, SD1.5 or SDXL - through
    the same loader."""
    import torch
    from diffusers import DDPMScheduler

    if spec == "tiny":
        from facefact.pipelines.tiny import tiny_sd_pipeline

        pipe = tiny_sd_pipeline()
    elif spec == "tiny-sdxl":
        from facefact.pipelines.tiny_xl import tiny_sdxl_pipeline

        pipe = tiny_sdxl_pipeline()
    else:
        from diffusers import StableDiffusionXLPipeline

        from facefact.pipelines.loading import base_family, load_base_pipeline

        cls = StableDiffusionXLPipeline if base_family(spec) == "sdxl" else None
        pipe = load_base_pipeline(spec, torch.float32, cls=cls)
    scheduler_config = dict(pipe.scheduler.config)
    check_trainable_layout(pipe.unet, spec)
    base = BaseModel(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer,
                     DDPMScheduler.from_config(scheduler_config), scheduler_config,
                     getattr(pipe, "text_encoder_2", None), getattr(pipe, "tokenizer_2", None))
    for module in base.frozen_modules():
        module.requires_grad_(False).eval()
    return base


def load_encoder(spec: str) -> TransFaceEncoder:
    if spec == "tiny":
        from facefact.model.tiny import tiny_encoder

        return tiny_encoder()
    return TransFaceEncoder.from_checkpoint(spec)


def build_adapter(unet: nn.Module, encoder: TransFaceEncoder, init_adapter: str | None, tiny: bool,
                  layout: str | None = None) -> FaceAdapter:
    """A fresh adapter (identity at init: alpha = 0) with fusers on the blocks of `layout` (default
    "first"), or one loaded to continue training (its own layout; a different `layout` is refused)."""
    if init_adapter:
        adapter = FaceAdapter.from_checkpoint(init_adapter)
        if layout is not None and layout != adapter.layout:
            raise ConfigError(f"layout is '{layout}' but init_adapter {init_adapter} has block layout "
                              f"'{adapter.layout}'", path=init_adapter, setting="layout",
                              hint=f"leave layout unset (or '{adapter.layout}') to continue that adapter")
        adapter.check_fits(unet, init_adapter)  # an adapter of the other family: refused by name, now
        return adapter
    cross_dim = unet.config.cross_attention_dim
    if tiny:
        from facefact.model.tiny import tiny_resampler_config

        config = tiny_resampler_config(cross_dim)
    else:
        config = ResamplerConfig(output_dim=cross_dim)
    if config.embedding_dim != encoder.config.embed_dim:
        config = ResamplerConfig(**{**config.to_dict(), "embedding_dim": encoder.config.embed_dim})
    return FaceAdapter.for_unet(unet, config, layout or DEFAULT_LAYOUT)


def trainable_parameters(adapter: FaceAdapter) -> list[tuple[str, nn.Parameter]]:
    """Resampler + block fusers. A checkpoint's `ln.*` block norms are not trained: while attached
    their values stand in the frozen UNet's norm2, and they are saved back as loaded."""
    out = [(f"resampler.{n}", p) for n, p in adapter.resampler.named_parameters()]
    for path, fuser in zip(adapter.block_paths, adapter.all_fusers()):
        out += [(f"{path}.{n}", p) for n, p in fuser.named_parameters()]
    return out


def copy_adapter_weights(source: FaceAdapter, target: FaceAdapter, where=None) -> None:
    """Load `source`'s trained weights into `target` (which may be attached), exactly; a checkpoint
    of another base family or block layout is refused naming both."""
    if (source.family, source.layout, set(source.block_paths)) != (target.family, target.layout,
                                                                   set(target.block_paths)):
        raise CheckpointError(
            f"the checkpoint holds an adapter for {family_name(source.family)} (layout '{source.layout}', "
            f"{len(source.block_paths)} fusers), this run trains one for {family_name(target.family)} (layout "
            f"'{target.layout}', {len(target.block_paths)} fusers)", path=where,
            hint="resume with the base_model and layout the checkpoint was trained with, or start a new output_dir")
    target.resampler.load_state_dict(source.resampler.state_dict())
    for path in target.block_paths:
        missing, unexpected = target.fuser(path).load_state_dict(source.fuser(path).state_dict(), strict=False)
        if missing or unexpected:
            raise CheckpointError(f"adapter weights for {path} do not match: missing {missing}, unexpected {unexpected}")


@torch.no_grad()
def encode_conditions(encoder: TransFaceEncoder, condition: torch.Tensor, drop_face: torch.Tensor) -> torch.Tensor:
    """Encoder tokens [B, 144, D] of the condition photos; a dropped face gets all-zero tokens, which
    the resampler turns into exactly the null face tokens used for guidance at inference."""
    tokens = encoder(condition.float())
    tokens[drop_face.to(tokens.device)] = 0.0
    return tokens


class AdapterTrainingModule(nn.Module):
    """Encoder tokens -> resampler -> UNet (with the adapter attached) -> noise prediction.

    This is the module accelerate/DDP wraps: calling it is what lets DDP synchronise the adapter's
    gradients. The frozen UNet is held outside the module tree on purpose, so DDP neither broadcasts
    nor tracks its ~860M parameters."""

    def __init__(self, adapter: FaceAdapter, unet: nn.Module, fair=None):
        super().__init__()
        self.adapter = adapter
        self._unet = [unet]
        self.fair = fair  # a FairRegularizer whose measuring() context is open when FAIR is measured

    @property
    def unet(self) -> nn.Module:
        return self._unet[0]

    def forward(self, noisy_latents, timesteps, text_embeds, encoder_tokens, measure_fair: bool = False,
                added_cond_kwargs: dict | None = None):
        """added_cond_kwargs: SDXL's {"text_embeds": pooled text, "time_ids": size/crop}; None on SD1.5."""
        face_tokens = self.adapter.resampler(encoder_tokens.to(self.adapter.resampler.latents.dtype))  # [B, 16, C]
        faces = {"gligen": {"objs": face_tokens.to(text_embeds.dtype)}}  # to the fusers, out of band
        extra = {} if added_cond_kwargs is None else {"added_cond_kwargs": added_cond_kwargs}
        prediction = self._unet[0](noisy_latents, timesteps, encoder_hidden_states=text_embeds,
                                   cross_attention_kwargs=faces, **extra).sample
        fair = self.fair.loss() if measure_fair else prediction.new_zeros(())
        return prediction, fair
