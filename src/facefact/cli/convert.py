"""`facefact convert`: released FACT / TransFace pickles -> safetensors that describe themselves.

    facefact convert --adapter adapter_maj_...ckpt --out fact_adapter.safetensors [--heads 12 --dim-head 64]
    facefact convert --encoder ms1mv2_model_TransFace_S.pt --out transface_s.safetensors [--heads 8]

The input is read with torch.load(weights_only=True) only. The output is checked before the
command reports success: it is read back and must hold exactly the same tensors and sizes.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from facefact.cli.outputs import prepare_output_file
from facefact.errors import CheckpointError, ConfigError
from facefact.validation import arg_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert released FACT / TransFace weights to safetensors",
        description="Convert a released FACT adapter (.ckpt) or TransFace encoder (.pt) to a safetensors file "
                    "with metadata (sizes, format), validating it on the way.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--adapter", metavar="IN", help="FACT adapter checkpoint (.ckpt/.pt/.safetensors)")
    what.add_argument("--encoder", metavar="IN", help="TransFace encoder checkpoint (.pt/.safetensors)")
    p.add_argument("--out", required=True, metavar="OUT.safetensors", help="the .safetensors file to write")
    p.add_argument("--heads", type=arg_int("--heads", low=1, high=1024),
                   help="attention heads (resampler: official 12; encoder: official 8); "
                        "the tensors do not say how their width is split")
    p.add_argument("--dim-head", type=arg_int("--dim-head", low=1, high=4096), dest="dim_head",
                   help="resampler head width (official 64)")
    p.add_argument("--check-base", metavar="BASE", dest="check_base",
                   help="also check the adapter fits this base model (diffusers folder, UNet folder, "
                        "single .safetensors or hub id)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def _resampler_config(state: dict, heads: int | None, dim_head: int | None, source):
    """ResamplerConfig with the user's head split; given one of the two, the other follows from the width."""
    from facefact.model import ResamplerConfig

    if heads is None and dim_head is None:
        return None
    key = "local_fac_prj.layers.0.0.to_q.weight"
    if key not in state:
        return None  # not an adapter: split_adapter_state says so clearly
    inner = state[key].shape[0]
    heads = heads or inner // dim_head
    dim_head = dim_head or inner // heads
    if heads * dim_head != inner:
        raise ConfigError(f"--heads {heads} x --dim-head {dim_head} != the resampler's attention width {inner}",
                          path=source)
    return ResamplerConfig(heads=heads, dim_head=dim_head)


def check_base(adapter, base: str) -> str:
    """Raise CheckpointError if `adapter` cannot attach to the base's UNet; else describe the base."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from facefact.model.layouts import family_name, layout_blocks, refuse_other_family, unet_family
    from facefact.pipelines.loading import base_unet_config

    config = base_unet_config(base)
    refuse_other_family(adapter.family, unet_family(config), base)
    if config.pop("single_file", False):
        width = config.get("cross_attention_dim")
        if width is not None and width != adapter.resampler.config.output_dim:
            raise CheckpointError(f"the base model's cross-attention is {width} wide, the adapter's face tokens "
                                  f"{adapter.resampler.config.output_dim}", path=base,
                                  hint=f"use a {family_name(adapter.family)} base of the adapter's width")
        return f"{family_name(adapter.family)} single file" + (f", cross-attention {width}" if width else "")
    with init_empty_weights():  # layout only: no memory for weights
        unet = UNet2DConditionModel.from_config(config)
    adapter.check_fits(unet, base)  # the exact check attach() makes
    return f"UNet with {len(layout_blocks(unet, adapter.layout))} blocks of layout '{adapter.layout}', fits"


def _same_tensors(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def convert_adapter(src: Path, out: Path, heads, dim_head, base: str | None) -> dict:
    from facefact.model import FaceAdapter
    from facefact.model.checkpoints import read_adapter_file, save_adapter, sniff_kind
    from facefact.model.layouts import adapter_base_family
    from facefact.pipelines.hashing import file_sha256

    state, config = read_adapter_file(src)  # config: the sizes a facefact safetensors file records
    if sniff_kind(state) == "encoder":
        raise CheckpointError("this is a TransFace encoder checkpoint, not a FACT adapter", path=src,
                              hint=f"convert it with --encoder {src}")
    chosen = _resampler_config(state, heads, dim_head, src)
    split = "given" if chosen is not None else "from the file" if config is not None else "guessed"
    adapter = FaceAdapter.from_state_dict(state, chosen or config, src)
    width = adapter.resampler.config.output_dim
    for path, proc in adapter.released_state_dict().items():
        if path.endswith(".attn2.processor.linear.weight") and proc.shape[1] != width:
            raise CheckpointError(f"block adapter {path} takes {proc.shape[1]}-wide face tokens, the resampler "
                                  f"makes {width}", path=src, hint="the file mixes parts of different adapters")
    family = adapter_base_family(adapter.block_paths, width, src)
    base_note = check_base(adapter, base) if base else None
    save_adapter(adapter, out, base_family=family, extra_metadata={"source_file": src.name, "source_sha256": file_sha256(src)})
    again = FaceAdapter.from_checkpoint(out)
    if again.resampler.config != adapter.resampler.config or not _same_tensors(
            adapter.released_state_dict(), again.released_state_dict()):
        out.unlink()
        raise CheckpointError("the converted file does not read back identically; nothing was written", path=out)
    return {"kind": "adapter", "resampler": adapter.resampler.config.to_dict(), "blocks": len(adapter.block_paths),
            "tensors": len(again.released_state_dict()), "base": base_note, "head_split": split}


def convert_encoder(src: Path, out: Path, heads) -> dict:
    from facefact.model import EncoderConfig, TransFaceEncoder
    from facefact.model.checkpoints import read_state_dict, save_encoder, sniff_kind

    try:
        encoder = TransFaceEncoder.from_checkpoint(src, EncoderConfig(num_heads=heads) if heads else None)
    except CheckpointError:
        if src.is_file() and src.stat().st_size and src.suffix != ".safetensors" \
                and sniff_kind(read_state_dict(src)) == "adapter":
            raise CheckpointError("this is a FACT adapter checkpoint, not a TransFace encoder", path=src,
                                  hint=f"convert it with --adapter {src}") from None
        raise
    split = "given" if heads else "from the file" if "encoder" in _safetensors_metadata(src) else "guessed"
    save_encoder(encoder, out)
    again = TransFaceEncoder.from_checkpoint(out)
    if again.config != encoder.config or not _same_tensors(encoder.state_dict(), again.state_dict()):
        out.unlink()
        raise CheckpointError("the converted file does not read back identically; nothing was written", path=out)
    return {"kind": "encoder", "encoder": encoder.config.to_dict(), "tensors": len(again.state_dict()),
            "head_split": split}


def _safetensors_metadata(path: Path) -> dict:
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return handle.metadata() or {}


def head_split_note(summary: dict) -> str | None:
    """Say so when the head count was not given and the file does not record it (the tensors only
    fix the attention width, not how it is split): the official split was assumed."""
    if summary.get("head_split") != "guessed":
        return None
    if summary["kind"] == "adapter":
        sizes = summary["resampler"]
        width, heads = sizes["heads"] * sizes["dim_head"], sizes["heads"]
        return (f"the file does not record how the resampler's attention width {width} splits into heads; assumed "
                f"{heads} head{'s' if heads != 1 else ''} of the official width {sizes['dim_head']} - if it was "
                "trained otherwise, convert again with --heads/--dim-head")
    return (f"the file does not record the encoder's head count; assumed the official "
            f"{summary['encoder']['num_heads']} - if it was trained otherwise, convert again with --heads")


def run(args) -> int:
    from facefact.pipelines.loading import quiet_libraries

    quiet_libraries()
    src = Path(args.adapter or args.encoder).expanduser()
    out = Path(args.out).expanduser()
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the name of the .safetensors file to write", path=out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, not '{out.suffix or out.name}'")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; not replacing it", path=out, hint="pass --overwrite or another --out")
    if os.path.realpath(out) == os.path.realpath(src):  # realpath: a symlink loop is not an exception here
        raise ConfigError("--out is the input file")
    prepare_output_file(out, "--out")
    if args.encoder and (args.dim_head or args.check_base):
        raise ConfigError("--dim-head and --check-base apply to --adapter only")
    if args.adapter:
        summary = convert_adapter(src, out, args.heads, args.dim_head, args.check_base)
    else:
        summary = convert_encoder(src, out, args.heads)
    summary.update({"input": str(src), "output": str(out), "bytes": out.stat().st_size})
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        sizes = summary.get("resampler") or summary.get("encoder")
        print(f"wrote {out} ({summary['kind']}, {summary['tensors']} tensors, {summary['bytes']:,} bytes); "
              f"read back identical", file=sys.stdout)
        print(f"  sizes: {json.dumps(sizes)}")
        if summary.get("base"):
            print(f"  base: {summary['base']}")
        if head_split_note(summary):
            print(f"note: {head_split_note(summary)}", file=sys.stderr)
    return 0
