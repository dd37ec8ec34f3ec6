"""`FaceAdapter`: the trained part of FACT (resampler + 16 block adapters) as one object.

    adapter = FaceAdapter.from_checkpoint("adapter.safetensors")   # or the released .ckpt
    adapter.attach(pipe.unet)
    tokens = adapter.face_tokens(encoder_tokens)        # [1, 16n, C]
    null = adapter.null_face_tokens(n)                  # [1, 16n, C]
    adapter.set_scale(0.5); adapter.set_num_face_tokens(16 * n)
    ...
    adapter.detach()                                    # the UNet is exactly as before

The adapter owns its state (scale, token count, which UNet it is attached to); the UNet only
holds references to its processors while attached.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from facefact.errors import CheckpointError
from facefact.model.adapter import FACTAttnProcessor
from facefact.model.resampler import Resampler, ResamplerConfig

PROCESSOR_SUFFIX = ".attn2.processor"


def cross_attention_blocks(unet: nn.Module) -> dict[str, nn.Module]:
    """Block path (e.g. `down_blocks.0.attentions.0.transformer_blocks.0`) -> transformer block,
    for every block of the UNet whose attn2 is a text cross-attention."""
    blocks = {}
    for name, module in unet.named_modules():
        attn2 = getattr(module, "attn2", None)
        if attn2 is not None and hasattr(module, "norm2") and getattr(attn2, "is_cross_attention", False):
            blocks[name] = module
    return blocks


SD15_CROSS_ATTENTION_BLOCKS = 16


def refuse_sdxl(unet_config, source=None) -> None:
    """SDXL first, with its own words: its UNet config says so before any block is counted."""
    if unet_config.get("addition_embed_type") == "text_time":
        raise CheckpointError("this base model is SDXL; FACT adapters are for Stable Diffusion 1.5-family models",
                              path=source, hint="use an SD1.5-family base (e.g. majicmixRealistic, Realistic Vision)")


def check_sd15_layout(unet: nn.Module, source=None) -> None:
    """The UNet has the SD1.5 block layout FACT adapters are made for (16 cross-attention blocks)."""
    refuse_sdxl(unet.config, source)
    blocks = cross_attention_blocks(unet)
    if len(blocks) != SD15_CROSS_ATTENTION_BLOCKS or "mid_block.attentions.0.transformer_blocks.0" not in blocks:
        raise CheckpointError(
            f"the base model's UNet has {len(blocks)} cross-attention blocks; FACT needs the Stable Diffusion 1.5 "
            f"layout with {SD15_CROSS_ATTENTION_BLOCKS}", path=source,
            hint="use an SD1.5-family base model (SD2/SDXL and other layouts are not supported)")


class FaceAdapter(nn.Module):
    def __init__(self, resampler: Resampler, processors: dict[str, FACTAttnProcessor]):
        super().__init__()
        self.resampler = resampler
        self.block_paths = list(processors)
        # ModuleDict keys may not contain dots; the released layout is restored in released_state_dict().
        self.processors = nn.ModuleDict({p.replace(".", "/"): proc for p, proc in processors.items()})
        self._attached: list = []  # (block, original processor, norm2 pre-hook handle) while attached
        self.scale = 1.0
        self.num_face_tokens = resampler.config.num_queries

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def for_unet(cls, unet: nn.Module, resampler_config: ResamplerConfig | None = None) -> "FaceAdapter":
        """A fresh adapter for this UNet (random resampler, identity adapters: alpha = 0)."""
        blocks = cross_attention_blocks(unet)
        cross_dim = unet.config.cross_attention_dim
        config = resampler_config or ResamplerConfig(output_dim=cross_dim)
        if config.output_dim != cross_dim:
            raise CheckpointError(f"resampler output width {config.output_dim} != UNet cross-attention width {cross_dim}")
        # the width from attn2's query projection: norm2 is an nn.Identity while another adapter is attached
        processors = {path: FACTAttnProcessor(block.attn2.to_q.in_features, cross_dim) for path, block in blocks.items()}
        return cls(Resampler(config), processors)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], resampler_config: ResamplerConfig | None = None,
                        source: str | Path | None = None) -> "FaceAdapter":
        """Build from the released flat layout: `local_fac_prj.*` + `<block>.attn2.processor.*`."""
        from facefact.model.checkpoints import resampler_config_from_state, split_adapter_state

        resampler_state, processor_states = split_adapter_state(state, source)
        config = resampler_config_from_state(resampler_state, resampler_config, source)
        resampler = Resampler(config)
        _load_strict(resampler, resampler_state, "resampler (local_fac_prj.*)", source)
        processors = {}
        for path, proc_state in processor_states.items():
            if "linear.weight" not in proc_state:
                raise CheckpointError(f"adapter for {path} has no linear.weight", path=source)
            block_dim, cross_dim = proc_state["linear.weight"].shape
            proc = FACTAttnProcessor(block_dim, cross_dim)
            if "ln.weight" in proc_state:
                proc.ln = nn.LayerNorm(block_dim, eps=1e-5)
            _load_strict(proc, proc_state, f"adapter {path}", source)
            processors[path] = proc
        return cls(resampler, processors)

    @classmethod
    def from_checkpoint(cls, path: str | Path, resampler_config: ResamplerConfig | None = None) -> "FaceAdapter":
        """Load a released FACT `.ckpt` (torch.load weights_only) or a facefact `.safetensors`."""
        from facefact.model.checkpoints import read_adapter_file

        state, config = read_adapter_file(path, resampler_config)
        return cls.from_state_dict(state, config, source=path)

    def released_state_dict(self) -> dict[str, torch.Tensor]:
        """Flat state dict in the released layout (what `facefact convert` writes)."""
        out = {f"local_fac_prj.{k}": v for k, v in self.resampler.state_dict().items()}
        for path in self.block_paths:
            proc = self.processors[path.replace(".", "/")]
            for k, v in proc.state_dict().items():
                out[f"{path}{PROCESSOR_SUFFIX}.{k}"] = v
        return out

    def processor(self, path: str) -> FACTAttnProcessor:
        return self.processors[path.replace(".", "/")]

    def all_processors(self) -> list[FACTAttnProcessor]:
        return [self.processor(p) for p in self.block_paths]

    # ---- attach / detach --------------------------------------------------------------------
    @property
    def is_attached(self) -> bool:
        return bool(self._attached)

    def attach(self, unet: nn.Module) -> "FaceAdapter":
        if self._attached:
            raise RuntimeError("this FaceAdapter is already attached to a UNet; detach() it first")
        blocks = cross_attention_blocks(unet)
        self._check_layout(unet, blocks)
        taken = [p for p in self.block_paths if isinstance(blocks[p].attn2.processor, FACTAttnProcessor)]
        if taken:  # checked before touching anything: a refused attach leaves the UNet as it was
            raise RuntimeError(f"{taken[0]} already carries a FACT adapter (another FaceAdapter is attached)")
        param = next(unet.parameters())
        self.to(device=param.device, dtype=param.dtype)
        for path in self.block_paths:
            block, proc = blocks[path], self.processor(path)
            proc._base[0], proc._block_norm[0] = block.attn2.processor, block.norm2
            hook = block.norm2.register_forward_pre_hook(proc.remember_block_input)
            self._attached.append((block, block.attn2.processor, hook))
            block.attn2.set_processor(proc)
        self.set_scale(self.scale)
        self.set_num_face_tokens(self.num_face_tokens)
        return self

    def detach(self) -> None:
        for block, original_processor, hook in self._attached:
            proc = block.attn2.processor
            block.attn2.set_processor(original_processor)
            hook.remove()
            proc._base[0] = proc._block_norm[0] = proc._block_input = None
        self._attached = []

    def _check_layout(self, unet: nn.Module, blocks: dict) -> None:
        cross_dim = getattr(getattr(unet, "config", None), "cross_attention_dim", None)
        missing = [p for p in self.block_paths if p not in blocks]
        if missing or len(blocks) != len(self.block_paths):
            raise CheckpointError(
                f"this adapter has {len(self.block_paths)} block adapters for an SD1.5 block layout, but the UNet "
                f"has {len(blocks)} cross-attention blocks" + (f" and lacks {missing[:2]}" if missing else ""),
                hint="FACT adapters need a Stable Diffusion 1.5-family UNet (SDXL / SD2 layouts differ)")
        if cross_dim != self.resampler.config.output_dim:
            raise CheckpointError(
                f"the adapter makes {self.resampler.config.output_dim}-wide face tokens but the UNet's "
                f"cross-attention is {cross_dim} wide",
                hint="FACT adapters need a Stable Diffusion 1.5-family UNet (cross-attention 768)")
        for path in self.block_paths:
            width = blocks[path].norm2.normalized_shape[0]
            if width != self.processor(path).block_dim:
                raise CheckpointError(f"block {path} is {width} wide, its adapter {self.processor(path).block_dim}")

    # ---- per-request state ------------------------------------------------------------------
    def set_scale(self, scale: float) -> None:
        self.scale = float(scale)
        for proc in self.all_processors():
            proc.scale = self.scale

    def set_num_face_tokens(self, count: int) -> None:
        self.num_face_tokens = int(count)
        for proc in self.all_processors():
            proc.num_face_tokens = self.num_face_tokens

    @property
    def tokens_per_photo(self) -> int:
        return self.resampler.config.num_queries

    # ---- face tokens ------------------------------------------------------------------------
    def face_tokens(self, encoder_tokens: torch.Tensor) -> torch.Tensor:
        """Encoder tokens of n photos [n, T, D] -> [1, 16n, C], photos concatenated in order."""
        tokens = self.resampler(encoder_tokens.to(self.resampler.latents.dtype))
        return tokens.reshape(1, -1, tokens.shape[-1])

    def null_face_tokens(self, num_photos: int = 1, encoder_tokens_shape: tuple[int, int] | None = None) -> torch.Tensor:
        """The resampler applied to zero encoder tokens: the 'no face' condition (not zeros)."""
        n_tokens, width = encoder_tokens_shape or (144, self.resampler.config.embedding_dim)
        zeros = torch.zeros(num_photos, n_tokens, width, device=self.resampler.latents.device,
                            dtype=self.resampler.latents.dtype)
        return self.face_tokens(zeros)

    # ---- training: FAIR ------------------------------------------------------------------------
    @contextlib.contextmanager
    def fair_regularizer(self, face_mask: torch.Tensor):
        """Inside this context each forward pass records FAIR per layer; read with `fair_loss()`.

        face_mask: [B, 1, h, w] at latent resolution, 1 inside the face. With gradient
        checkpointing, run backward inside this context too: the recomputation re-runs FAIR."""
        for proc in self.all_processors():
            proc.fair_mask, proc.fair_value = face_mask, None
        try:
            yield self
        finally:
            for proc in self.all_processors():
                proc.fair_mask = None

    def fair_loss(self) -> torch.Tensor:
        """Mean over layers (and batch) of the FAIR values recorded by the last forward pass."""
        values = [p.fair_value for p in self.all_processors() if p.fair_value is not None]
        if not values:
            raise RuntimeError("no FAIR values recorded: run the UNet inside fair_regularizer() with face tokens")
        for proc in self.all_processors():
            proc.fair_value = None
        return torch.stack([v.mean() for v in values]).mean()


def _load_strict(module: nn.Module, state: dict, what: str, source) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{what}: missing {missing[:4]}, unexpected {unexpected[:4]}", path=source,
                              hint="is this a FACT adapter checkpoint of the released layout?")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{what}: {key} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}",
                                  path=source, hint="check the resampler sizes (heads, dim_head) of this checkpoint")
    module.load_state_dict(state, strict=True)
