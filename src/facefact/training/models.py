"""The models of a training run: frozen base (UNet, VAE, text encoder), frozen face encoder, and
the trainable FaceAdapter, plus the one module DDP wraps (`AdapterTrainingModule`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from facefact.errors import CheckpointError
from facefact.model import FaceAdapter, ResamplerConfig, TransFaceEncoder, check_sd15_layout



@dataclass
class BaseModel:
    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    noise_scheduler: object   # DDPM-style: add_noise, num_train_timesteps, prediction_type
    scheduler_config: dict    # the folder's own (inference) scheduler, for validation images


def load_base_model(spec: str) -> BaseModel:
    """'tiny' (random weights, built in-process) or any base model `facefact generate` takes - a
    diffusers folder, a hub id or a single .safetensors/.ckpt file - through the same loader."""
    import torch
    from diffusers import DDPMScheduler

    if spec == "tiny":
        from facefact.pipelines.tiny import tiny_sd_pipeline

        pipe = tiny_sd_pipeline()
    else:
        from facefact.pipelines.loading import load_base_pipeline

        pipe = load_base_pipeline(spec, torch.float32)
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    scheduler_config = dict(pipe.scheduler.config)
    check_sd15_layout(unet, spec)
    noise_scheduler = DDPMScheduler.from_config(scheduler_config)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval()
    return BaseModel(unet, vae, text_encoder, tokenizer, noise_scheduler, scheduler_config)


def load_encoder(spec: str) -> TransFaceEncoder:
    if spec == "tiny":
        from facefact.model.tiny import tiny_encoder

        return tiny_encoder()
    return TransFaceEncoder.from_checkpoint(spec)


def build_adapter(unet: nn.Module, encoder: TransFaceEncoder, init_adapter: str | None, tiny: bool) -> FaceAdapter:
    """A fresh adapter (identity at init: alpha = 0), or one loaded to continue training."""
    if init_adapter:
        return FaceAdapter.from_checkpoint(init_adapter)
    cross_dim = unet.config.cross_attention_dim
    if tiny:
        from facefact.model.tiny import tiny_resampler_config

        config = tiny_resampler_config(cross_dim)
    else:
        config = ResamplerConfig(output_dim=cross_dim)
    if config.embedding_dim != encoder.config.embed_dim:
        config = ResamplerConfig(**{**config.to_dict(), "embedding_dim": encoder.config.embed_dim})
    return FaceAdapter.for_unet(unet, config)


def trainable_parameters(adapter: FaceAdapter) -> list[tuple[str, nn.Parameter]]:
    """Resampler + block fusers. A checkpoint's `ln.*` block norms are not trained: while attached
    their values stand in the frozen UNet's norm2, and they are saved back as loaded."""
    out = [(f"resampler.{n}", p) for n, p in adapter.resampler.named_parameters()]
    for path, fuser in zip(adapter.block_paths, adapter.all_fusers()):
        out += [(f"{path}.{n}", p) for n, p in fuser.named_parameters()]
    return out


def copy_adapter_weights(source: FaceAdapter, target: FaceAdapter) -> None:
    """Load `source`'s trained weights into `target` (which may be attached), exactly."""
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

    def forward(self, noisy_latents, timesteps, text_embeds, encoder_tokens, measure_fair: bool = False):
        face_tokens = self.adapter.resampler(encoder_tokens.to(self.adapter.resampler.latents.dtype))  # [B, 16, C]
        faces = {"gligen": {"objs": face_tokens.to(text_embeds.dtype)}}  # to the fusers, out of band
        prediction = self._unet[0](noisy_latents, timesteps, encoder_hidden_states=text_embeds,
                                   cross_attention_kwargs=faces).sample
        fair = self.fair.loss() if measure_fair else prediction.new_zeros(())
        return prediction, fair
