"""Reference photos -> FACT face tokens, once per request (spec sections 1-3, 5).

    condition = encode_face_tokens(photos, analysis, encoder, adapter, device)
    condition.tokens   # [1, 16n, C]: photos concatenated in the order given
    condition.null     # [1, 16n, C]: the resampler on zero encoder tokens (not zeros)
    condition.notes    # what face analysis said ("2 faces found; using the largest", ...)

`guidance_objs` lays them out for diffusers' UNet batch: [uncond rows..., cond rows...], the
null face tokens on the unconditional side when `cfg_face` (what the released apps do).
`per_prompt_tokens` stacks one person's FaceTokens per prompt (`face_tokens=[a, b]`): each prompt's
images get their own person, so different people share one UNet batch (the server's batching).

Several photos of one person are combined on purpose (`combine`):
- "concat" (FACT's own, the default): 16 tokens per photo, concatenated in the order given;
- "mean": the mean of the photos' 16 tokens;
- "weighted": their mean weighted by face quality - detector score x size (up to the encoder's
  112 px) x sharpness (up to 0.1) x cos(yaw) - reported per photo in the notes and metadata.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facefact.errors import ConfigError
from facefact.pipelines.settings import COMBINE_MODES


@dataclass
class FaceTokens:
    tokens: torch.Tensor                 # [1, 16n, C] (concat) or [1, 16, C] (mean, weighted)
    null: torch.Tensor                   # the same shape
    num_photos: int
    notes: list[str] = field(default_factory=list)
    combine: str = "concat"
    weights: list[float] | None = None   # per photo, "weighted" only (sum 1)
    # One per prompt when these are several people stacked by per_prompt_tokens (tokens [P, T, C]);
    # each prompt's images take their provenance (photos, combination, notes) from theirs.
    rows: list["FaceTokens"] | None = None

    def to(self, device, dtype) -> "FaceTokens":
        return FaceTokens(self.tokens.to(device, dtype), self.null.to(device, dtype), self.num_photos, self.notes,
                          self.combine, self.weights, self.rows)


def per_prompt_tokens(rows: list[FaceTokens]) -> FaceTokens:
    """One person's FaceTokens per prompt -> one FaceTokens whose row p is prompt p's ([P, T, C]).
    Every prompt must have the same number of tokens T (the UNet batch is one tensor)."""
    if not rows:
        raise ConfigError("face_tokens is an empty list", hint="pass one FaceTokens per prompt, or one for all")
    count = rows[0].tokens.shape[1]
    for k, row in enumerate(rows[1:], start=2):
        if row.tokens.shape[1] != count:
            raise ConfigError(f"face_tokens for prompt {k} are {row.tokens.shape[1]} tokens, for prompt 1 {count}: "
                              "every prompt's face tokens must have the same count", setting="face_tokens",
                              hint="give each prompt as many photos (or combine them with 'mean'), or call once "
                                   "per person")
    device = rows[0].tokens.device
    tokens = torch.cat([row.tokens.to(device) for row in rows])
    null = torch.cat([row.null.to(device) for row in rows])
    notes = [f"prompt {k}: {note}" for k, row in enumerate(rows, start=1) for note in row.notes]
    combines = {row.combine for row in rows}
    return FaceTokens(tokens, null, rows[0].num_photos, notes, combines.pop() if len(combines) == 1 else "per prompt",
                      None, list(rows))


def quality_weight(quality) -> float:
    """How much a photo counts in a "weighted" combination (see the module docstring)."""
    import math

    size = min(1.0, quality.size_px / 112.0)
    sharpness = min(1.0, max(quality.sharpness, 0.0) / 0.1)
    pose = max(math.cos(math.radians(min(abs(quality.yaw), 90.0))), 0.0)
    return max(quality.score * size * sharpness * pose, 1e-3)


def combine_photos(faces: FaceTokens, mode: str, qualities=None, tokens_per_photo: int = 16) -> FaceTokens:
    """FaceTokens of n photos concatenated -> combined by `mode` (exact for one photo: its tokens)."""
    if mode not in COMBINE_MODES:
        raise ConfigError(f"unknown way to combine photos '{mode}'", hint=f"use one of: {', '.join(COMBINE_MODES)}")
    if mode == "concat":
        return faces
    n = faces.num_photos
    per_photo = faces.tokens.reshape(n, tokens_per_photo, -1)
    null = faces.null.reshape(n, tokens_per_photo, -1)[:1]  # the null tokens of each photo are the same
    if mode == "mean":
        weights = None
        combined = per_photo.mean(0, keepdim=True)
    else:
        if qualities is None or len(qualities) != n:
            raise ConfigError("a weighted combination needs the photos' face analysis",
                              hint="pass face_images= (photos), not face pixels, or use combine='mean'")
        raw = [quality_weight(q) for q in qualities]
        weights = [w / sum(raw) for w in raw]
        scale = torch.tensor(weights, dtype=per_photo.dtype, device=per_photo.device)[:, None, None]
        combined = (per_photo * scale).sum(0, keepdim=True)
    notes = list(faces.notes)
    if weights is not None:
        notes.append("photo weights: " + ", ".join(f"photo {i + 1}: {w:.2f}" for i, w in enumerate(weights)))
    return FaceTokens(combined, null, n, notes, mode, weights)


# float16 / bfloat16 pipelines make (and may save) rounded tokens; the bound itself is exact.
_NORM_ROUNDING_ROOM = 1.01


def face_tokens_problem(tokens: torch.Tensor, adapter, width: int, num_photos: int | None = None,
                        combine: str = "concat") -> str | None:
    """What makes `tokens` unusable with this adapter and a UNet whose cross-attention is `width`
    wide, in words; None when nothing does. Checked: the shape [1, 16n, C] (16 = the adapter's
    tokens per photo; n = `num_photos` for "concat", 1 for a combination), finite values, and no
    token longer than the adapter's resampler can make (`Resampler.max_output_norm`): larger ones
    (a forged or damaged file) would drown the image in noise or turn it black."""
    per_photo = adapter.tokens_per_photo
    if tokens.ndim != 3 or tokens.shape[0] != 1:
        return f"the face tokens have the shape {list(tokens.shape)}, not [1, tokens, width]"
    count, got_width = int(tokens.shape[1]), int(tokens.shape[2])
    if got_width != width:
        return f"the face tokens are {got_width} wide; the loaded UNet's cross-attention is {width} wide"
    if count == 0 or count % per_photo:
        return f"there are {count} face tokens, not a positive multiple of {per_photo} (one block per photo)"
    if num_photos is not None:
        expected = per_photo * num_photos if combine == "concat" else per_photo
        if count != expected:
            return (f"there are {count} face tokens for {num_photos} photo(s) combined by '{combine}' "
                    f"({expected} expected)")
    if not torch.isfinite(tokens).all():
        return "the face tokens hold NaN or infinite values"
    bound = adapter.resampler.max_output_norm() * _NORM_ROUNDING_ROOM + 1e-3
    largest = float(tokens.detach().float().norm(dim=-1).max())
    if largest > bound:
        return (f"a face token is {largest:.4g} long; the loaded adapter's resampler makes none longer than "
                f"{bound:.4g}")
    return None


def notes_of_each_prompt(faces: FaceTokens | None, prompt_notes: list[list[str]]) -> list[list[str]] | None:
    """With one person per prompt, each prompt's notes (its person's, then its own prompt's), which
    are all its images carry; None otherwise (every image carries the call's notes)."""
    if faces is None or faces.rows is None:
        return None
    if len(faces.rows) != len(prompt_notes):
        raise ConfigError(f"{len(faces.rows)} face_tokens for {len(prompt_notes)} prompts", setting="face_tokens",
                          hint="pass one FaceTokens per prompt, or one FaceTokens for every prompt")
    return [row.notes + own for row, own in zip(faces.rows, prompt_notes)]


def guidance_objs(faces: FaceTokens, batch: int, do_cfg: bool, cfg_face: bool) -> torch.Tensor:
    """Face tokens for each row of the UNet batch: `batch` rows, twice that under guidance with the
    unconditional rows first (diffusers' order). Per-prompt tokens ([P, T, C]) go to their prompt's
    images, which diffusers keeps together: prompt p's images are rows p*k .. p*k + k - 1."""
    cond = _each_row(faces.tokens, batch)
    if not do_cfg:
        return cond
    uncond = _each_row(faces.null if cfg_face else faces.tokens, batch)
    return torch.cat([uncond, cond])


def _each_row(tokens: torch.Tensor, batch: int) -> torch.Tensor:
    if tokens.shape[0] == 1:
        return tokens.expand(batch, -1, -1)
    return tokens.repeat_interleave(batch // tokens.shape[0], dim=0)  # [P] -> [P * images per prompt]


def face_pixels_from_photos(analysis, face_images, notes: list[str] | None = None) -> torch.Tensor:
    """Photos -> the FACT encoder's input [n, 3, 112, 112] in [-1, 1]: head-masked, aligned.

    Raises the face-analysis errors (no face, too small, ...) naming the photo. Callers that want
    to fail before loading any weights (the CLI) call this first and pass the pixels on.
    """
    return analyse_photos(analysis, face_images, notes)[0]


def analyse_photos(analysis, face_images, notes: list[str] | None = None, check_quality: bool = True):
    """(encoder input [n, 3, 112, 112], each photo's FaceQuality). A photo given as "PATH#N" uses
    face N of it (from 1, left to right, as `faces inspect` and the template
    mode number them); several photos that do not look like one
    person get a note naming the odd one out; `check_quality=False` uses a face the quality checks
    refuse (with a note saying why it would have been)."""
    if isinstance(face_images, (str, Path, np.ndarray)) or hasattr(face_images, "getpixel"):
        face_images = [face_images]  # one photo given on its own (path, array or PIL image)
    face_images = list(face_images)
    if not face_images:
        raise ConfigError("face_images is an empty list",
                          hint="pass at least one reference photo, or face_images=None for no face")
    from facefact.pipelines.references import outlier_notes, split_face_number, usable_face

    crops, qualities, embeddings = [], [], []
    for index, source in enumerate(face_images):
        source, number = split_face_number(source)
        name = str(source) if isinstance(source, (str, Path)) else None
        image = analysis.load(source)
        face = usable_face(analysis, image, name, number, check_quality, notes, index)
        if notes is not None:  # photo names stay out of notes: notes go into image metadata
            notes.extend(f"reference photo {index + 1}: {note}" for note in face.notes)
        crops.append(analysis.fact_condition(image, face))
        qualities.append(face.quality)
        if len(face_images) > 1:
            embeddings.append(analysis.embed(image, face))
    if notes is not None and len(embeddings) > 1:
        notes.extend(outlier_notes(embeddings, analysis.embedder.threshold, analysis.embedder.name))
    pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    return (pixels / 255.0 - 0.5) / 0.5, qualities


@torch.no_grad()
def encode_face_pixels(pixels: torch.Tensor, encoder, adapter, device, notes: list[str] | None = None) -> FaceTokens:
    """[n, 3, 112, 112] in [-1, 1] -> FaceTokens on `device`, in the resampler's dtype.

    The encoder always runs in float32 (spec); an outer autocast (training's validation images run
    under one) must not change that nor recast the resampler away from its own dtype."""
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, 112, 112):
        raise ConfigError(f"face pixels must be [n, 3, 112, 112], got {list(pixels.shape)}",
                          hint="pass face_images= (photos), or face pixels made by face_pixels_from_photos")
    device = torch.device(device)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device.type, enabled=False))
        encoder_param = next(encoder.parameters())
        encoder_device = encoder_param.device
        tokens = encoder(pixels.to(encoder_device, torch.float32)).to(adapter.resampler.latents.device)
        face = adapter.face_tokens(tokens)
        null = adapter.null_face_tokens(len(pixels), tuple(tokens.shape[1:]))
    return FaceTokens(face.to(device), null.to(device), len(pixels), list(notes or []))
