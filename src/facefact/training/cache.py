"""Optional caches of the frozen encoders' outputs, written by `facefact prepare` and read by training.

    samples/ab/<id>.latents.safetensors   mean, std: the VAE posterior of the target crop [4, S/8, S/8]
    samples/ab/<id>.tokens.safetensors    tokens: TransFace local tokens of the sample's condition [144, D]

Latents: the *distribution* (mean and std of `latent_dist`, unscaled, float32) is stored, not one
draw from it, so training still draws a fresh latent `mean + std * noise` every step from the same
per-sample generator as without the cache: a cached run computes what an uncached run computes (up
to float rounding of a batched vs single VAE forward). Twice the bytes of one draw (at 512 px,
2 x 64 KiB per sample), and no change in what the model sees.

Each cache is tied to the model that made it: dataset.json's `caches` entry and every file's
safetensors metadata carry the model's name and a fingerprint of its weights (SHA-256 over the VAE
*encoder* weights -- a fine-tuned decoder such as sd-vae-ft-mse keeps the cache valid -- or over the
face encoder's weights). Training recomputes the fingerprints of the models it loaded and refuses a
cache made by other weights. Files are written atomically; re-running prepare skips files whose
fingerprint and input file still match, so an interrupted cache run resumes.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from facefact.errors import ConfigError, DatasetError
from facefact.training.dataset_format import INFO_NAME, atomic_write_bytes, read_info, sample_stem

if TYPE_CHECKING:  # annotations only: importing torch here would load it for `facefact prepare` without caches
    import torch

LATENTS = "latents"
TOKENS = "encoder_tokens"
SUFFIX = {LATENTS: ".latents.safetensors", TOKENS: ".tokens.safetensors"}
INPUT = {LATENTS: "image", TOKENS: "condition"}  # which file of the sample each cache is computed from
CACHE_VERSION = 1
BATCH = 4


def cache_path(root: str | Path, sample_id: str, kind: str) -> Path:
    return Path(f"{sample_stem(root, sample_id)}{SUFFIX[kind]}")


def vae_fingerprint(vae) -> str:
    from facefact.model.fingerprint import fingerprint  # torch: only when a cache is made or checked

    return fingerprint(vae, ("encoder.", "quant_conv."))  # what makes the latents; the decoder does not


def encoder_fingerprint(encoder) -> str:
    from facefact.model.fingerprint import fingerprint

    return fingerprint(encoder)


def load_vae(spec: str):
    """The VAE exactly as `load_base_model(spec)` loads it (the same loader, every base-model form)."""
    from facefact.training.models import load_base_model

    return load_base_model(spec).vae


def _sha1(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _read_rgb(path: str | Path) -> torch.Tensor:
    import torch

    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    return torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def read_metadata(path: Path) -> dict | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            return handle.metadata() or {}
    except Exception:  # missing, truncated or not a safetensors file: treated as absent
        return None


def load_cached(path: Path, kind: str, expected_fingerprint: str) -> dict[str, torch.Tensor]:
    """The tensors of one cache file, after checking it was made by the expected weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as err:
        raise DatasetError(f"cannot read the {kind} cache file: {err}", path=path,
                           hint=f"run `facefact prepare` again with {_flag(kind)} to rebuild the cache, "
                                "or set use_cache: false") from err
    if meta.get("fingerprint") != expected_fingerprint:
        raise DatasetError(f"this {kind} cache file was made by other weights (fingerprint {meta.get('fingerprint')}, "
                           f"the data set's cache says {expected_fingerprint})", path=path,
                           hint=f"an interrupted cache run? run `facefact prepare` again with {_flag(kind)}")
    return tensors


def _flag(kind: str) -> str:
    return "--cache-latents --base-model ..." if kind == LATENTS else "--cache-encoder-tokens --encoder ..."


# ---- writing (facefact prepare) -------------------------------------------------------------------
def build_caches(out: Path, accepted: list[dict], existing: dict | None = None, *, base_model: str | None = None,
                 encoder: str | None = None, progress: bool = True) -> dict:
    """Compute the asked-for caches for every accepted sample (skipping valid files); returns the
    `caches` entry for dataset.json: the ones built now, plus the `existing` ones whose files are all
    still valid (a sample re-made since loses its cache files, and so its set's entry)."""
    import torch

    caches = dict(existing or {})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    jobs = []
    if base_model is not None:
        vae = load_vae(base_model)
        jobs.append((LATENTS, base_model, vae, vae_fingerprint(vae)))
    if encoder is not None:
        from facefact.training.models import load_encoder

        face_encoder = load_encoder(encoder).eval().requires_grad_(False)
        jobs.append((TOKENS, encoder, face_encoder, encoder_fingerprint(face_encoder)))
    for kind, spec, model, fp in jobs:
        caches[kind] = _build_one(out, accepted, kind, spec, model.to(device), fp, device, progress)
    for kind in [k for k in caches if k not in {job[0] for job in jobs}]:
        fp = caches[kind].get("fingerprint")
        if any((read_metadata(cache_path(out, r["id"], kind)) or {}).get("fingerprint") != fp for r in accepted):
            caches.pop(kind)  # a sample was (re)made since: that cache is incomplete now
    return caches


def _build_one(out: Path, accepted: list[dict], kind: str, spec: str, model, fp: str, device, progress: bool) -> dict:
    import torch
    from tqdm.auto import tqdm

    todo = []
    for record in accepted:
        source = out / record[INPUT[kind]]
        meta = read_metadata(cache_path(out, record["id"], kind))
        if meta is None or meta.get("fingerprint") != fp or meta.get("input_sha1") != _sha1(source):
            todo.append((record, source))
    bar = tqdm(total=len(accepted), initial=len(accepted) - len(todo), desc=f"cache {kind}", unit="sample",
               disable=not progress)
    size = None
    with torch.no_grad():
        for start in range(0, len(todo), BATCH):
            chunk = todo[start:start + BATCH]
            pixels = torch.stack([_read_rgb(source) for _, source in chunk]).to(device)
            if kind == LATENTS:
                posterior = model.encode(pixels).latent_dist
                outputs = [{"mean": m, "std": s} for m, s in zip(posterior.mean.float(), posterior.std.float())]
            else:
                outputs = [{"tokens": t} for t in model(pixels.float()).float()]
            for (record, source), tensors in zip(chunk, outputs):
                _write(cache_path(out, record["id"], kind), tensors, {
                    "format": "facefact.cache", "version": str(CACHE_VERSION), "kind": kind, "model": spec,
                    "fingerprint": fp, "input": record[INPUT[kind]], "input_sha1": _sha1(source)})
            bar.update(len(chunk))
    bar.close()
    if kind == LATENTS and accepted:
        with Image.open(out / accepted[0]["image"]) as img:
            size = img.size[0]
    return {"model": spec, "fingerprint": fp, "samples": len(accepted), "computed_now": len(todo),
            "dtype": "float32", "version": CACHE_VERSION, **({"image_size": size} if kind == LATENTS else {}),
            **({"stores": "latent_dist mean and std (unscaled)"} if kind == LATENTS else {})}


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save

    data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)


def remove_cache_files(out: Path, sample_id: str) -> None:
    """A sample being (re)written loses its cache files: they belong to its old pixels."""
    for kind in SUFFIX:
        cache_path(out, sample_id, kind).unlink(missing_ok=True)


# ---- reading (facefact train) ----------------------------------------------------------------------
def caches_for_training(data: str | Path, *, use_cache: bool, base_model: str, encoder_spec: str, vae, encoder,
                        image_size: int, resolution: int | None) -> dict[str, str]:
    """kind -> expected fingerprint, for each cache of the set that this run uses; ConfigError when a
    cache was made by other weights or at another size."""
    info_path = Path(data) / INFO_NAME
    if not use_cache or not os.path.lexists(info_path):
        return {}
    caches = read_info(data, hint=f"run `facefact prepare` again into {data}, or set use_cache: false").get(
        "caches") or {}
    use = {}
    if LATENTS in caches:
        entry, fp = caches[LATENTS], vae_fingerprint(vae)
        if entry.get("fingerprint") != fp:
            raise ConfigError(
                f"the latent cache of {data} was made with base model '{entry.get('model')}' (VAE fingerprint "
                f"{entry.get('fingerprint')}), but this run's base model '{base_model}' has VAE fingerprint {fp}",
                path=data, hint=f"run `facefact prepare ... --out {data} --cache-latents --base-model {base_model}` "
                                "to rebuild the cache for this model, or set use_cache: false", setting="use_cache")
        if resolution and resolution != entry.get("image_size", image_size):
            raise ConfigError(f"the latent cache of {data} is for {entry.get('image_size')} px images, but "
                              f"resolution is {resolution}", path=data,
                              hint="leave resolution unset (train at the prepared size), or set use_cache: false")
        use[LATENTS] = fp
    if TOKENS in caches:
        entry, fp = caches[TOKENS], encoder_fingerprint(encoder)
        if entry.get("fingerprint") != fp:
            raise ConfigError(
                f"the encoder-token cache of {data} was made with encoder '{entry.get('model')}' (fingerprint "
                f"{entry.get('fingerprint')}), but this run's encoder '{encoder_spec}' has fingerprint {fp}",
                path=data, hint=f"run `facefact prepare ... --out {data} --cache-encoder-tokens --encoder "
                                f"{encoder_spec}` to rebuild the cache, or set use_cache: false", setting="use_cache")
        use[TOKENS] = fp
    return use
