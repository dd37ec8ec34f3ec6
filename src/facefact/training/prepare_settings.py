"""The settings of `facefact prepare`, in a module of their own: the CLI's parser reads their
defaults without loading NumPy, PIL or OpenCV (`facefact --help` stays fast)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facefact.errors import ConfigError
from facefact.validation import MAX_IMAGE_SIDE, finite_float, whole_number


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that changes the written files; stored in dataset.json and checked on resume."""

    size: int = 512                 # side of the target crop (the training resolution)
    crop_scale: float = 1.5         # crop side / longer side of the face box (the release's 1.5x)
    mask: str = "face"              # which mask FAIR uses: 'face' (skin, brows to chin) or 'head' (+ hair)
    image_format: str = "jpg"       # target crop: 'jpg' (quality 95, ~10x smaller) or 'png' (lossless)
    min_face_size: float = 40.0
    min_sharpness: float = 0.02     # stricter than FaceAnalysis' 0.015: targets teach sharpness (docs/training.md)
    max_yaw: float = 45.0
    min_score: float = 0.6
    default_caption: str = "a photo of a person"
    caption_model: str | None = None  # local transformers image-to-text model folder
    max_caption_words: int = 20

    def check(self) -> None:
        whole_number("--size", self.size, high=MAX_IMAGE_SIDE)
        finite_float("--crop-scale", self.crop_scale, low=0.5, high=10.0)
        finite_float("--min-face-size", self.min_face_size, low=0.0)
        finite_float("--min-sharpness", self.min_sharpness, low=0.0)
        finite_float("--max-yaw", self.max_yaw, low=0.0, high=180.0)
        finite_float("--min-score", self.min_score, low=0.0, high=1.0)
        whole_number("--max-caption-words", self.max_caption_words, low=1, high=10_000)
        if not isinstance(self.default_caption, str) or not self.default_caption.strip():
            raise ConfigError("--default-caption must be a non-empty text")
        if self.mask not in ("face", "head"):
            raise ConfigError(f"--mask must be 'face' or 'head', not {self.mask!r}")
        if self.image_format not in ("jpg", "png"):
            raise ConfigError(f"--image-format must be 'jpg' or 'png', not {self.image_format!r}")
        if self.size < 64 or self.size % 8:
            raise ConfigError(f"--size {self.size} must be a multiple of 8 and at least 64 (the VAE downsamples 8x)")
        if self.caption_model is not None and not Path(self.caption_model).is_dir():
            raise ConfigError(f"captioning model not found locally: {self.caption_model}", path=self.caption_model,
                              hint="facefact never downloads weights: pass a local transformers image-to-text "
                                   "model folder (e.g. a BLIP snapshot), or leave out --caption-model and give "
                                   "captions as sidecar .txt files, a manifest 'caption' column or --default-caption")
