"""Bad files, made at test time (nothing large is kept in git): photos, checkpoints, data sets, text files.

Every maker takes the folder to write into and returns the path it made (or a path that is bad
in itself, like /dev/zero). Specials (FIFOs, sockets, symlink loops) are made with os calls.
"""
from __future__ import annotations

import io
import json
import os
import socket
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
ASTRONAUT = REPO / "examples" / "astronaut.jpg"
PARITY = REPO / "tests" / "data" / "parity" / "fact_tiny_a"


# ---- special files -------------------------------------------------------------------------------
def fifo(folder: Path, name: str) -> Path:
    path = folder / name
    os.mkfifo(path)
    return path


def symlink_loop(folder: Path, name: str) -> Path:
    path = folder / name
    os.symlink(name, path)  # points at itself
    return path


def broken_symlink(folder: Path, name: str) -> Path:
    path = folder / name
    os.symlink(folder / "nowhere" / name, path)
    return path


def unix_socket(folder: Path, name: str) -> Path | None:
    path = folder / name
    if len(os.fsencode(path)) > 100:  # sun_path limit
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    return path


def directory(folder: Path, name: str) -> Path:
    path = folder / name
    path.mkdir()
    return path


def write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# ---- photos ----------------------------------------------------------------------------------------
def png_bytes(width: int, height: int, mode: str = "RGB", color=(120, 180, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width x height` (a decompression bomb's header) and a tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def float_tiff(folder: Path, name: str, bad_value: float) -> Path:
    pixels = np.full((64, 64), 0.5, np.float32)
    pixels[10, 10] = bad_value
    path = folder / name
    Image.fromarray(pixels, mode="F").save(path)
    return path


def corrupt_png(folder: Path, name: str) -> Path:
    data = bytearray(png_bytes(64, 64))
    data[60:70] = b"\xff" * 10  # inside IDAT: CRC and zlib stream broken
    return write(folder, name, bytes(data))


def truncated(folder: Path, name: str, source: Path, keep: int) -> Path:
    return write(folder, name, source.read_bytes()[:keep])


# ---- checkpoints ---------------------------------------------------------------------------------
def tiny_adapter_state() -> dict:
    import torch

    return {k: v.clone() for k, v in torch.load(PARITY / "adapter.ckpt", weights_only=True).items()}


def save_torch(folder: Path, name: str, obj) -> Path:
    import torch

    path = folder / name
    torch.save(obj, path)
    return path


def save_safetensors(folder: Path, name: str, tensors: dict, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path = folder / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


class RunsCode:
    """A pickle that would create `marker` if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def raw_pickle(folder: Path, name: str, marker: Path) -> Path:
    import pickle

    return write(folder, name, pickle.dumps({"state_dict": RunsCode(marker)}, protocol=4))


def zip_bomb(folder: Path, name: str) -> Path:
    path = folder / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (64 * 1024 * 1024))  # 64 MB of zeros: ~64 KB on disk
    return path


def adapter_with_metadata(folder: Path, name: str, resampler_entry: str) -> Path:
    return save_safetensors(folder, name, tiny_adapter_state(),
                            {"format": "facefact.fact-adapter", "format_version": "1", "resampler": resampler_entry})


def sdxl_layout_adapter(folder: Path, name: str) -> Path:
    state = tiny_adapter_state()
    moved = {k.replace("down_blocks.0.attentions.0.transformer_blocks.0", "down_blocks.1.attentions.0.transformer_blocks.1"): v
             for k, v in state.items()}
    return save_torch(folder, name, moved)


def wide_adapter(folder: Path, name: str, width: int = 2048) -> Path:
    """A consistent adapter for an SD1.5-layout UNet whose cross-attention is `width` wide."""
    import torch

    from facefact.model import FaceAdapter, ResamplerConfig
    from facefact.pipelines.tiny import tiny_sd_pipeline
    from diffusers import UNet2DConditionModel

    config = dict(tiny_sd_pipeline().unet.config)
    unet = UNet2DConditionModel.from_config({**config, "cross_attention_dim": width})
    small = ResamplerConfig(dim=32, depth=1, dim_head=8, heads=4, num_queries=4, embedding_dim=32,
                            output_dim=width, ff_mult=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        adapter = FaceAdapter.for_unet(unet, small)
    return save_torch(folder, name, adapter.released_state_dict())


def bad_safetensors_header(folder: Path, name: str) -> Path:
    return write(folder, name, struct.pack("<Q", 2**40) + b"{}")


# ---- prepared training sets ------------------------------------------------------------------------
def prepared_set(folder: Path, name: str, entries: list, *, image: bytes | None = None,
                 mask: bytes | None = None) -> Path:
    """A hand-made prepared set: dataset.json, index.jsonl from `entries` (dicts or raw lines) and,
    for the 'ok' sample files, small valid images (or the bytes given)."""
    root = folder / name
    (root / "samples" / "ok").mkdir(parents=True)
    (root / "samples" / "ok" / "a.image.png").write_bytes(image or png_bytes(64, 64))
    (root / "samples" / "ok" / "a.cond.png").write_bytes(png_bytes(112, 112))
    (root / "samples" / "ok" / "a.mask.png").write_bytes(mask or png_bytes(64, 64, "L", 255))
    (root / "dataset.json").write_text(json.dumps({"format": "facefact.fact-training-set", "format_version": 1,
                                                   "settings": {"size": 64}, "complete": True}))
    lines = [entry if isinstance(entry, str) else json.dumps(entry) for entry in entries]
    (root / "index.jsonl").write_text("".join(line + "\n" for line in lines))
    return root


def good_entry(**changes) -> dict:
    entry = {"id": "a", "identity": "alice", "caption": "a photo", "image": "samples/ok/a.image.png",
             "condition": "samples/ok/a.cond.png", "mask": "samples/ok/a.mask.png"}
    entry.update(changes)
    return entry
