"""Which base family a UNet is, and which of its transformer blocks carry a FACT fuser.

Base families (the UNet config says which; an adapter file's metadata says which it was made for):

    sd15   Stable Diffusion 1.5 (and its fine-tunes): 16 transformer stacks of one block each,
           768-wide text tokens; attention in down_blocks.0-2, mid, up_blocks.1-3
    sdxl   SDXL: `addition_embed_type="text_time"`, 2048-wide text tokens (two text encoders),
           11 transformer stacks (down_blocks.1-2, mid, up_blocks.0-1) holding 70 blocks (2 or 10 each)

Block layouts (where the fusers sit; FACT's own is one per stack, which on SD1.5 is every block):

    first  one fuser on the first block of each transformer stack: SD1.5 16, SDXL 11 (the default)
    all    a fuser on every transformer block with text cross-attention: SD1.5 16, SDXL 70

The layout is a property of the trained file (its block paths; facefact's safetensors also record
it), so loading never has to guess: an adapter attaches only to a UNet whose blocks of that layout
are exactly its own, and only to a UNet of its family (an SD1.5 adapter on SDXL and the reverse are
refused by name, before anything is loaded or attached).
"""
from __future__ import annotations

from torch import nn

from facefact.errors import CheckpointError, ConfigError

FAMILIES = {"sd15": "Stable Diffusion 1.5", "sdxl": "SDXL"}
FAMILY_WIDTHS = {"sd15": 768, "sdxl": 2048}  # the released bases' cross-attention width
BLOCK_LAYOUTS = {
    "first": "one fuser on the first transformer block of each transformer stack (FACT's own layout)",
    "all": "a fuser on every transformer block with text cross-attention",
}
DEFAULT_LAYOUT = "first"
FIRST_BLOCK = ".transformer_blocks.0"


def cross_attention_blocks(unet: nn.Module) -> dict[str, nn.Module]:
    """Block path (e.g. `down_blocks.0.attentions.0.transformer_blocks.0`) -> transformer block,
    for every block of the UNet whose attn2 is a text cross-attention."""
    blocks = {}
    for name, module in unet.named_modules():
        attn2 = getattr(module, "attn2", None)
        if attn2 is not None and hasattr(module, "norm2") and getattr(attn2, "is_cross_attention", False):
            blocks[name] = module
    return blocks


def check_layout_name(layout: str, source=None) -> str:
    """`layout` if it is one of BLOCK_LAYOUTS; a ConfigError for an argument, a CheckpointError
    naming the file when it comes from one (`source`)."""
    if layout not in BLOCK_LAYOUTS:
        error = CheckpointError if source is not None else ConfigError
        raise error(f"unknown FACT block layout {layout!r}", path=source,
                    hint=f"use one of: {', '.join(BLOCK_LAYOUTS)}", setting=None if source else "layout")
    return layout


def layout_blocks(unet: nn.Module, layout: str = DEFAULT_LAYOUT) -> dict[str, nn.Module]:
    """The blocks of `unet` that carry a fuser in `layout` (see the module docstring)."""
    blocks = cross_attention_blocks(unet)
    if check_layout_name(layout) == "all":
        return blocks
    return {path: block for path, block in blocks.items() if path.endswith(FIRST_BLOCK)}


def unet_family(unet_or_config) -> str:
    """'sdxl' for a UNet (or UNet config) with SDXL's text-time conditioning, else 'sd15'."""
    config = getattr(unet_or_config, "config", unet_or_config)
    embed_type = config.get("addition_embed_type") if hasattr(config, "get") else None
    return "sdxl" if embed_type == "text_time" else "sd15"


def paths_family(block_paths) -> str:
    """The family a set of block paths belongs to: SDXL's first down block has no attention and its
    up_blocks.0 has; SD1.5 the reverse."""
    paths = list(block_paths)
    no_first_down = not any(p.startswith("down_blocks.0.") for p in paths)
    return "sdxl" if no_first_down and any(p.startswith("up_blocks.0.") for p in paths) else "sd15"


def paths_layout(block_paths) -> str:
    """'first' when every path is a stack's first block, else 'all'."""
    return "first" if all(p.endswith(FIRST_BLOCK) for p in block_paths) else "all"


def family_name(family: str) -> str:
    return FAMILIES.get(family, family)


def family_of_label(label: str, source=None) -> str:
    """'sd15' / 'sdxl' from a file's `base_family` ('sd15', 'sdxl', or 'sd15-layout-N' for a
    test-width model of that layout)."""
    family = str(label).split("-layout-")[0]
    if family not in FAMILIES:
        raise CheckpointError(f"the adapter file says it was made for base family {label!r}, which facefact does "
                              f"not know", path=source, hint=f"known families: {', '.join(FAMILIES)}")
    return family


def refuse_other_family(adapter_family: str, base_family: str, source=None) -> None:
    """An adapter made for one base family never runs on the other: the refusal names both."""
    if adapter_family != base_family:
        raise CheckpointError(
            f"this FACT adapter was made for {family_name(adapter_family)} base models, but the base model is "
            f"{family_name(base_family)}", path=source,
            hint=f"use a FACT adapter trained for {family_name(base_family)}, or a {family_name(adapter_family)} "
                 f"base model")


# The real bases' block paths, for labelling a file (facefact convert): SD1.5's 16, SDXL's 70.
SD15_BLOCK_PATHS = frozenset(
    [f"down_blocks.{b}.attentions.{a}.transformer_blocks.0" for b in range(3) for a in range(2)]
    + ["mid_block.attentions.0.transformer_blocks.0"]
    + [f"up_blocks.{b}.attentions.{a}.transformer_blocks.0" for b in range(1, 4) for a in range(3)])
SDXL_STACK_DEPTHS = {**{f"down_blocks.1.attentions.{a}": 2 for a in range(2)},
                     **{f"down_blocks.2.attentions.{a}": 10 for a in range(2)}, "mid_block.attentions.0": 10,
                     **{f"up_blocks.0.attentions.{a}": 10 for a in range(3)},
                     **{f"up_blocks.1.attentions.{a}": 2 for a in range(3)}}
SDXL_BLOCK_PATHS = frozenset(f"{stack}.transformer_blocks.{i}" for stack, depth in SDXL_STACK_DEPTHS.items()
                             for i in range(depth))


def known_layout_family(block_paths) -> str | None:
    """'sd15' for exactly SD1.5's 16 blocks; 'sdxl' for blocks of SDXL's stacks that include each
    stack's first (SDXL's 11 or 70, or a test model with shallower stacks); else None."""
    paths = set(block_paths)
    if paths == SD15_BLOCK_PATHS:
        return "sd15"
    if paths <= SDXL_BLOCK_PATHS and all(f"{stack}{FIRST_BLOCK}" in paths for stack in SDXL_STACK_DEPTHS):
        return "sdxl"
    return None


# Widths that belong to no family an adapter's layout could be for
_OTHER_WIDTHS = {1024: "Stable Diffusion 2.x", 1280: "the SDXL refiner"}


def adapter_base_family(block_paths, cross_width: int, source=None) -> str:
    """'sd15' / 'sdxl' for an adapter made for the SD1.5 UNet (768-wide face tokens) / SDXL's
    (2048), 'sd15-layout-N' / 'sdxl-layout-N' for the same layout at a test width N; any other
    layout, or a width of the other family (or of SD2), is refused, not labelled."""
    family = known_layout_family(block_paths)
    if family is None:
        raise CheckpointError(f"the adapter's {len(set(block_paths))} blocks are neither the Stable Diffusion 1.5 "
                              f"UNet layout ({len(SD15_BLOCK_PATHS)} blocks) nor an SDXL layout", path=source,
                              hint="FACT adapters are for SD1.5-family or SDXL models; this file mixes layouts")
    wrong = {**_OTHER_WIDTHS, **{w: family_name(n) for n, w in FAMILY_WIDTHS.items() if n != family}}
    if cross_width in wrong:
        raise CheckpointError(f"the adapter's face tokens are {cross_width} wide, the width of {wrong[cross_width]}; "
                              f"its blocks are the {family_name(family)} layout, whose face tokens are "
                              f"{FAMILY_WIDTHS[family]} wide", path=source,
                              hint="use an adapter made consistently for one base family")
    return family if cross_width == FAMILY_WIDTHS[family] else f"{family}-layout-{cross_width}"
