"""`FaceAdapter`: the trained part of FACT (resampler + block fusers) as one object, for SD1.5 or SDXL.

    adapter = FaceAdapter.from_checkpoint("adapter.safetensors")   # or the released .ckpt
    adapter.attach(unet)                                # block.fuser = FACTFuser, unet.position_net
    faces = adapter.face_tokens(encoder_tokens)         # [1, 16n, C]
    null = adapter.null_face_tokens(n)                  # [1, 16n, C]
    adapter.set_scale(0.5)                              # or {"down": .., "mid": .., "up": ..}
    unet(latents, t, text, cross_attention_kwargs={"gligen": {"objs": faces}})
    adapter.detach()                                    # the UNet is exactly as before
    FaceAdapter.attached_to(unet)                       # the adapter attached to a UNet, or None

Attaching sets diffusers' own GLIGEN slots: ``block.fuser`` in each block of the adapter's layout
(SD1.5: the 16 cross-attention blocks; SDXL "first": the first block of each of the 11 stacks, the
other blocks an empty slot, since diffusers calls every block's fuser) and a passthrough
``unet.position_net`` (a base UNet has neither; a UNet that has one is refused). An adapter made for
the other base family (facefact.model.layouts) is refused by name before anything is touched. No hook, processor or existing attribute of the UNet is touched, except that
checkpoints carrying ``processor.ln.*`` (the block norm the reference moved into its processor,
spec section 4) have those values copied into the block's ``norm2`` while attached; detach
copies the originals back. While attached, the UNet's ``state_dict()`` leaves the fusers out and
shows the original norms, so a UNet saved then reloads as the base model.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from facefact.errors import CheckpointError, ConfigError
from facefact.model.adapter import EmptyFuserSlot, FACTFuser, FaceTokenPassthrough
from facefact.model.layouts import (DEFAULT_LAYOUT, check_layout_name, cross_attention_blocks, family_name,
                                    layout_blocks, paths_family, paths_layout, refuse_other_family, unet_family)
from facefact.model.resampler import Resampler, ResamplerConfig

PROCESSOR_SUFFIX = ".attn2.processor"
# UNet levels for per-level scales: a block path's first part
LEVELS = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}
SD15_CROSS_ATTENTION_BLOCKS = 16


def check_trainable_layout(unet: nn.Module, source=None) -> None:
    """The UNet is one FACT training takes: an SDXL UNet (text-time conditioning, cross-attention
    blocks), or one of the SD1.5 block layout (`check_sd15_layout`)."""
    if unet_family(unet) != "sdxl":
        check_sd15_layout(unet, source)
    elif not cross_attention_blocks(unet) or not unet.config.get("addition_time_embed_dim"):
        raise CheckpointError("the base model's UNet says it is SDXL (text_time conditioning) but has no "
                              "cross-attention blocks or no addition_time_embed_dim", path=source,
                              hint="use an SDXL base model saved by diffusers (or an SD1.5-family one)")


def check_sd15_layout(unet: nn.Module, source=None) -> None:
    """The UNet has the SD1.5 block layout (16 cross-attention blocks)."""
    blocks = cross_attention_blocks(unet)
    if len(blocks) != SD15_CROSS_ATTENTION_BLOCKS or "mid_block.attentions.0.transformer_blocks.0" not in blocks:
        raise CheckpointError(
            f"the base model's UNet has {len(blocks)} cross-attention blocks; FACT training needs the Stable "
            f"Diffusion 1.5 layout with {SD15_CROSS_ATTENTION_BLOCKS}", path=source,
            hint="use an SD1.5-family or SDXL base model (SD2 and other layouts are not supported)")


class FaceAdapter(nn.Module):
    def __init__(self, resampler: Resampler, fusers: dict[str, FACTFuser],
                 block_norms: dict[str, nn.LayerNorm] | None = None, family: str | None = None,
                 layout: str | None = None):
        super().__init__()
        self.resampler = resampler
        self.block_paths = list(fusers)
        # The base family ("sd15" / "sdxl") and block layout ("first" / "all") this adapter is for
        # (facefact.model.layouts): given by the file's metadata or the UNet it was made for, else read
        # from its block paths (a released checkpoint: SD1.5, one fuser per stack).
        self.family = family or paths_family(self.block_paths)
        self.layout = check_layout_name(layout or paths_layout(self.block_paths))
        # ModuleDict keys may not contain dots; the released layout is restored in released_state_dict().
        self.fusers = nn.ModuleDict({_key(p): fuser for p, fuser in fusers.items()})
        # A checkpoint's `processor.ln.*`: replaces the block's norm2 values while attached
        self.block_norms = nn.ModuleDict({_key(p): norm for p, norm in (block_norms or {}).items()})
        # The UNet and its blocks while attached, in plain lists: they are not our submodules
        self._attached: list = []
        self._unet: list = []
        self.scale: float | dict = 1.0
        # What the pipeline that loaded this adapter keeps with it while it is attached (face encoder,
        # face analysis, provenance): every pipeline on the UNet finds it here; detach() drops it.
        self.pipeline_state = None

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def for_unet(cls, unet: nn.Module, resampler_config: ResamplerConfig | None = None,
                 layout: str = DEFAULT_LAYOUT) -> "FaceAdapter":
        """A fresh adapter for this UNet, SD1.5 or SDXL (random resampler whose face tokens are as wide
        as the UNet's cross-attention, identity fusers: alpha = 0) with fusers on the blocks `layout`
        names: "first" (one per transformer stack, FACT's own; SD1.5 16, SDXL 11) or "all" (every
        cross-attention block; SDXL 70). See facefact.model.layouts."""
        blocks = layout_blocks(unet, layout)
        cross_dim = unet.config.cross_attention_dim
        config = resampler_config or ResamplerConfig(output_dim=cross_dim)
        if config.output_dim != cross_dim:
            raise CheckpointError(f"resampler output width {config.output_dim} != UNet cross-attention width {cross_dim}")
        fusers = {path: FACTFuser(block.norm2.normalized_shape[0], cross_dim, block.attn2.heads)
                  for path, block in blocks.items()}
        return cls(Resampler(config), fusers, family=unet_family(unet), layout=layout)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], resampler_config: ResamplerConfig | None = None,
                        source: str | Path | None = None, family: str | None = None,
                        layout: str | None = None) -> "FaceAdapter":
        """Build from the released flat layout: `local_fac_prj.*` + `<block>.attn2.processor.*`
        (family and layout: as a file's metadata says, else read from the block paths)."""
        from facefact.model.checkpoints import resampler_config_from_state, split_adapter_state

        resampler_state, block_states = split_adapter_state(state, source)
        config = resampler_config_from_state(resampler_state, resampler_config, source)
        resampler = Resampler(config)
        _load_strict(resampler, resampler_state, "resampler (local_fac_prj.*)", source)
        fusers, norms = {}, {}
        for path, block_state in block_states.items():
            if "linear.weight" not in block_state:
                raise CheckpointError(f"adapter for {path} has no linear.weight", path=source)
            block_dim, cross_dim = block_state["linear.weight"].shape
            if "ln.weight" in block_state or "ln.bias" in block_state:
                norms[path] = nn.LayerNorm(block_dim, eps=1e-5)
                _load_strict(norms[path], {k[3:]: v for k, v in block_state.items() if k.startswith("ln.")},
                             f"adapter {path} (ln)", source)
            fusers[path] = FACTFuser(block_dim, cross_dim)  # heads: the block's own, set by attach
            _load_strict(fusers[path], {k: v for k, v in block_state.items() if not k.startswith("ln.")},
                         f"adapter {path}", source)
        return cls(resampler, fusers, norms, family, layout)

    @classmethod
    def from_checkpoint(cls, path: str | Path, resampler_config: ResamplerConfig | None = None) -> "FaceAdapter":
        """Load a released FACT `.ckpt` (torch.load weights_only) or a facefact `.safetensors`
        (whose metadata says the base family and block layout it was made for)."""
        from facefact.model.checkpoints import adapter_target, read_adapter

        state, config, metadata = read_adapter(path, resampler_config)
        family, layout = adapter_target(metadata, state, path)
        return cls.from_state_dict(state, config, source=path, family=family, layout=layout)

    def released_state_dict(self) -> dict[str, torch.Tensor]:
        """Flat state dict in the released layout (what `facefact convert` writes)."""
        out = {f"local_fac_prj.{k}": v for k, v in self.resampler.state_dict().items()}
        for path in self.block_paths:
            for k, v in self.fuser(path).state_dict().items():
                out[f"{path}{PROCESSOR_SUFFIX}.{k}"] = v
            if _key(path) in self.block_norms:
                for k, v in self.block_norms[_key(path)].state_dict().items():
                    out[f"{path}{PROCESSOR_SUFFIX}.ln.{k}"] = v
        return out

    def fuser(self, path: str) -> FACTFuser:
        return self.fusers[_key(path)]

    def all_fusers(self) -> list[FACTFuser]:
        return [self.fuser(p) for p in self.block_paths]

    @property
    def owns_block_norms(self) -> bool:
        """True when the checkpoint carried `ln.*`, which replaces the blocks' norm2 while attached."""
        return len(self.block_norms) > 0

    # ---- attach / detach --------------------------------------------------------------------
    @property
    def is_attached(self) -> bool:
        return bool(self._unet)

    def is_attached_to(self, unet: nn.Module) -> bool:
        """Whether this adapter sits in `unet` - also when `unet` is the `torch.compile` wrapper of
        that UNet (`pipe.unet = torch.compile(pipe.unet)`, as diffusers' docs do it)."""
        return bool(self._unet) and self._unet[0] is getattr(unet, "_orig_mod", unet)

    @staticmethod
    def attached_to(unet: nn.Module) -> "FaceAdapter | None":
        """The FaceAdapter attached to `unet` (found through the UNet's own GLIGEN slot), or None."""
        position_net = getattr(unet, "position_net", None)
        adapter = position_net.adapter if isinstance(position_net, FaceTokenPassthrough) else None
        return adapter if adapter is not None and adapter.is_attached_to(unet) else None

    @torch.no_grad()
    def attach(self, unet: nn.Module) -> "FaceAdapter":
        if self._unet:
            raise RuntimeError("this FaceAdapter is already attached to a UNet; detach() it first")
        self.check_fits(unet)
        blocks = cross_attention_blocks(unet)
        # checked before touching anything: a refused attach leaves the UNet as it was
        taken = [p for p, block in blocks.items() if getattr(block, "fuser", None) is not None]
        if taken or getattr(unet, "position_net", None) is not None:
            what = "a FACT adapter" if isinstance(getattr(blocks[taken[0]], "fuser", None) if taken else None,
                                                   (FACTFuser, EmptyFuserSlot)) else "a GLIGEN fuser / position_net"
            raise RuntimeError(f"{taken[0] if taken else 'the UNet'} already carries {what} "
                               "(another adapter is attached, or this is a GLIGEN UNet)")
        param = next(unet.parameters())
        self.to(device=param.device, dtype=param.dtype)
        for path in self.block_paths:
            block, fuser = blocks[path], self.fuser(path)
            fuser.heads = block.attn2.heads
            fuser.original_norm = None
            if _key(path) in self.block_norms:
                norm = self.block_norms[_key(path)]
                fuser.original_norm = (block.norm2.weight.detach().clone(), block.norm2.bias.detach().clone())
                block.norm2.weight.copy_(norm.weight)
                block.norm2.bias.copy_(norm.bias)
            block.fuser = fuser
            self._attached.append(block)
        for path, block in blocks.items():  # blocks outside the layout: diffusers calls their fuser too
            if path not in self.block_paths:
                block.fuser = EmptyFuserSlot()
                self._attached.append(block)
        unet.position_net = FaceTokenPassthrough(self)
        self._unet = [unet]
        self.set_scale(self.scale)
        return self

    @torch.no_grad()
    def detach(self) -> None:
        if not self._unet:
            return
        for block in self._attached:
            fuser = block.fuser
            if getattr(fuser, "original_norm", None) is not None:
                block.norm2.weight.copy_(fuser.original_norm[0])
                block.norm2.bias.copy_(fuser.original_norm[1])
                fuser.original_norm = None
            del block.fuser
        del self._unet[0].position_net
        self._attached, self._unet = [], []
        self.pipeline_state = None

    def check_fits(self, unet: nn.Module, source=None) -> None:
        """Raise CheckpointError unless this adapter attaches to `unet`: the same base family (an SD1.5
        adapter on an SDXL UNet and the reverse are refused by name), exactly its layout's blocks, the
        same widths. Reads configs and shapes only, so callers check before any work."""
        refuse_other_family(self.family, unet_family(unet), source)
        blocks = layout_blocks(unet, self.layout)
        family = family_name(self.family)
        missing = [p for p in self.block_paths if p not in blocks]
        if missing or len(blocks) != len(self.block_paths):
            raise CheckpointError(
                f"this adapter has {len(self.block_paths)} block adapters ({family}, layout '{self.layout}'), but the "
                f"UNet has {len(blocks)} cross-attention blocks in that layout" + (f" and lacks {missing[:2]}" if missing else ""), path=source,
                hint=f"use a base model of the {family} block layout this adapter was trained for")
        cross_dim = getattr(getattr(unet, "config", None), "cross_attention_dim", None)
        if cross_dim != self.resampler.config.output_dim:
            raise CheckpointError(
                f"the adapter makes {self.resampler.config.output_dim}-wide face tokens but the UNet's "
                f"cross-attention is {cross_dim} wide", path=source,
                hint=f"use a {family} base model with the cross-attention width this adapter was trained for")
        for path in self.block_paths:
            width = blocks[path].norm2.normalized_shape[0]
            if width != self.fuser(path).block_dim:
                raise CheckpointError(f"block {path} is {width} wide, its adapter {self.fuser(path).block_dim}",
                                      path=source)

    # ---- per-request state ------------------------------------------------------------------
    def set_scale(self, scale: float | dict) -> None:
        """FACT's s: one number, or per UNet level / block as in diffusers' `set_ip_adapter_scale`:
        {"down": 0.3, "mid": 0.5, "up": 0.6} or block paths (`"up_blocks.2"`, a whole block path);
        the longest matching key wins, blocks no key names get 0."""
        per_block = scales_per_block(scale, self.block_paths)
        for path, value in per_block.items():
            self.fuser(path).scale = value
        self.scale = scale

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


def _key(path: str) -> str:
    return path.replace(".", "/")


def scales_per_block(scale, block_paths: list[str]) -> dict[str, float]:
    """Block path -> FACT scale from one number or a dict of levels / block-path prefixes."""
    import math

    def number(value, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"FACT scale {where} must be a finite number, not {value!r}")
        return float(value)

    if not isinstance(scale, dict):
        value = number(scale, "")
        return {path: value for path in block_paths}
    names = {v: k for k, v in LEVELS.items()}
    prefixes = {}
    for key, value in scale.items():
        prefix = names.get(key, key)
        if not any(path == prefix or path.startswith(prefix + ".") for path in block_paths):
            raise ConfigError(f"FACT scale key {key!r} names no block",
                              hint="use 'down', 'mid', 'up' or a block path such as 'up_blocks.1'")
        prefixes[prefix] = number(value, f"for {key!r}")
    out = {}
    for path in block_paths:
        matching = [p for p in prefixes if path == p or path.startswith(p + ".")]
        out[path] = prefixes[max(matching, key=len)] if matching else 0.0
    return out


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
