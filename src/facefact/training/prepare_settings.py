"""The settings of `facefact prepare`, in a module of their own: the CLI's parser reads their
defaults without loading NumPy, PIL or OpenCV (`facefact --help` stays fast)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from facefact.errors import ConfigError
from facefact.pipelines.settings import setting
from facefact.validation import MAX_IMAGE_SIDE, finite_float, one_of, whole_number


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that changes the written files; stored in dataset.json and checked on resume. Each
    field's help and range (`setting(...)`) make `facefact prepare`'s flags."""

    size: int = setting(512, "side of the training crop in px (the training resolution: 512 for SD1.5, 1024 for "
                             "SDXL), a multiple of 8",
                        low=64, high=MAX_IMAGE_SIDE)
    crop_scale: float = setting(1.5, "crop side / longer side of the face box (the release's 1.5x)", low=0.5, high=10.0)
    mask: str = setting("face", "the region FAIR lets the adapter change: face (skin, brows to chin) or head "
                                "(+ hair)", choices=("face", "head"))
    image_format: str = setting("jpg", "target crops as jpg (quality 95, ~10x smaller) or png (lossless)",
                                choices=("jpg", "png"))
    min_face_size: float = setting(40.0, "smallest face kept: px, shorter box side", low=0.0)
    # stricter than FaceAnalysis' 0.015: targets teach sharpness (docs/training.md)
    min_sharpness: float = setting(0.02, "smallest sharpness kept (training targets teach it)", low=0.0)
    max_yaw: float = setting(45.0, "largest head turn kept, degrees", low=0.0, high=180.0)
    min_score: float = setting(0.6, "smallest detector confidence kept", low=0.0, high=1.0)
    default_caption: str = setting("a photo of a person", "caption of photos without a manifest caption, a "
                                                          "sidecar .txt or a captioning model")
    caption_model: str | None = setting(None, "local transformers image-to-text model folder that captions the "
                                              "photos (never downloaded)", metavar="DIR")
    max_caption_words: int = setting(20, "longest caption kept, in words", low=1, high=10_000)

    def check(self) -> "PrepareSettings":
        for name in ("size", "max_caption_words"):
            f = _FIELDS[name]
            whole_number(name, getattr(self, name), low=f.metadata["low"], high=f.metadata["high"])
        for name in ("crop_scale", "min_face_size", "min_sharpness", "max_yaw", "min_score"):
            f = _FIELDS[name]
            finite_float(name, getattr(self, name), low=f.metadata["low"], high=f.metadata["high"])
        if not isinstance(self.default_caption, str) or not self.default_caption.strip():
            raise ConfigError("default_caption must be a non-empty text", setting="default_caption")
        one_of("mask", self.mask, _FIELDS["mask"].metadata["choices"])
        one_of("image_format", self.image_format, _FIELDS["image_format"].metadata["choices"])
        if self.size % 8:
            raise ConfigError(f"size {self.size} must be a multiple of 8 (the VAE downsamples 8x)", setting="size")
        if self.caption_model is not None and not Path(self.caption_model).is_dir():
            raise ConfigError(f"captioning model not found locally: {self.caption_model}", path=self.caption_model,
                              hint="facefact never downloads weights: give a local transformers image-to-text "
                                   "model folder (e.g. a BLIP snapshot), or none and captions as sidecar .txt "
                                   "files, a manifest 'caption' column or a default caption",
                              setting="caption_model")
        return self


_FIELDS = {f.name: f for f in fields(PrepareSettings)}
