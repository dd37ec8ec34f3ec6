"""TransFace ViT face encoder (frozen), exactly as FACT uses it (spec section 2).

FACT conditions on the encoder's *local* tokens [n, 144, D] - the final LayerNorm over the
12x12 patch grid - not on the recognition embedding. The recognition head (SE weighting +
`feature.*`) is ~38M parameters at D = 512 that generation never reads, so it is only built when
asked for (`with_head=True`, used to check parity with the reference and by nobody else).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facefact.errors import CheckpointError


@dataclass(frozen=True)
class EncoderConfig:
    img_size: int = 112
    patch_size: int = 9
    embed_dim: int = 512
    depth: int = 12
    num_heads: int = 8
    mlp_ratio: int = 4
    num_classes: int = 512  # width of the recognition head's output; only used with_head

    @property
    def num_patches(self) -> int:
        side = (self.img_size - self.patch_size) // self.patch_size + 1
        return side * side

    def to_dict(self) -> dict:
        return asdict(self)


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        # [n, t, 3, heads, c/heads]: q, k, v blocks in that order, heads inside each block.
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(n, t, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU6()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = _Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # row-major over (h, w)


class TransFaceEncoder(nn.Module):
    """Aligned faces [n, 3, 112, 112] in [-1, 1] -> local tokens [n, 144, D]."""

    def __init__(self, config: EncoderConfig | None = None, with_head: bool = False):
        super().__init__()
        self.config = config = config or EncoderConfig()
        dim, tokens = config.embed_dim, config.num_patches
        self.patch_embed = _PatchEmbed(config.patch_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.ModuleList(_Block(dim, config.num_heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.with_head = with_head
        if with_head:
            self.senet = nn.Sequential(nn.Linear(tokens * dim, tokens, bias=False), nn.ReLU(),
                                       nn.Linear(tokens, tokens, bias=False), nn.Sigmoid())
            self.feature = nn.Sequential(nn.Linear(tokens * dim, dim, bias=False), nn.BatchNorm1d(dim, eps=2e-5),
                                         nn.Linear(dim, config.num_classes, bias=False),
                                         nn.BatchNorm1d(config.num_classes, eps=2e-5))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        expected = (3, self.config.img_size, self.config.img_size)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
            raise ValueError(f"TransFaceEncoder expects aligned faces [n, {expected}], got {tuple(pixels.shape)}")
        x = self.patch_embed(pixels) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def global_embedding(self, local_tokens: torch.Tensor) -> torch.Tensor:
        """The recognition embedding (spec section 2, for completeness); needs with_head=True."""
        if not self.with_head:
            raise RuntimeError("build the encoder with with_head=True to compute the recognition embedding")
        flat = local_tokens.flatten(1)
        weights = self.senet(flat)
        return self.feature((local_tokens * weights[..., None]).flatten(1))

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: EncoderConfig | None = None,
                        with_head: bool = False) -> "TransFaceEncoder":
        """Load a TransFace state dict (`ms1mv2_model_TransFace_S.pt` layout) or a safetensors copy.

        Sizes that the tensors determine (width, depth, classes) are read from them; the head count
        cannot be, so it comes from `config` (official: 8).
        """
        from facefact.model.checkpoints import config_from_metadata, read_safetensors, read_state_dict

        if str(path).endswith(".safetensors"):
            state, metadata = read_safetensors(path)
            if config is None and "encoder" in metadata:  # files written by save_encoder say their sizes
                config = config_from_metadata(metadata, "encoder", EncoderConfig, path)
        else:
            state = read_state_dict(path)
        config = infer_encoder_config(state, config, path)
        model = cls(config, with_head=with_head)
        wanted = model.state_dict()
        missing = [k for k in wanted if k not in state]
        if missing:
            raise CheckpointError(
                f"not a TransFace encoder checkpoint: {len(missing)} expected tensors are missing "
                f"(e.g. {missing[:3]})", path=path,
                hint="pass the TransFace ViT weights (ms1mv2_model_TransFace_S.pt), not the FACT adapter")
        for key, tensor in wanted.items():
            if tuple(state[key].shape) != tuple(tensor.shape):
                raise CheckpointError(f"tensor {key} has shape {tuple(state[key].shape)}, expected "
                                      f"{tuple(tensor.shape)} for {config}", path=path)
        model.load_state_dict({k: state[k] for k in wanted}, strict=True)
        return model.eval().requires_grad_(False)


def infer_encoder_config(state: dict, config: EncoderConfig | None, path) -> EncoderConfig:
    base = config or EncoderConfig()
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        raise CheckpointError("not a TransFace encoder checkpoint (no patch_embed.proj.weight / pos_embed)",
                              path=path, hint="pass the TransFace ViT weights (ms1mv2_model_TransFace_S.pt)")
    dim, _, patch, _ = state["patch_embed.proj.weight"].shape
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] // dim if "blocks.0.mlp.fc1.weight" in state else base.mlp_ratio
    classes = state["feature.2.weight"].shape[0] if "feature.2.weight" in state else base.num_classes
    inferred = EncoderConfig(img_size=base.img_size, patch_size=patch, embed_dim=dim, depth=depth,
                             num_heads=base.num_heads, mlp_ratio=mlp_ratio, num_classes=classes)
    if state["pos_embed"].shape[1] != inferred.num_patches:
        raise CheckpointError(f"pos_embed has {state['pos_embed'].shape[1]} tokens, but a {patch}-px patch grid "
                              f"on {base.img_size}-px faces has {inferred.num_patches}", path=path)
    if dim % inferred.num_heads:
        raise CheckpointError(f"encoder width {dim} is not divisible by num_heads={inferred.num_heads}",
                              path=path, hint="pass the encoder's head count (official TransFace-S: 8)")
    return inferred
