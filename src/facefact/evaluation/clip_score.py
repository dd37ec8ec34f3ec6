"""CLIP-T: how well an image follows its prompt, as 100 x cosine(CLIP image, CLIP text) - the scale
used in the PuLID and FACT tables (~20 unrelated, ~30+ good for ViT-L/14).

The model comes from a local folder or a hub id already in the local cache (``--clip``); nothing is
downloaded unless the user's environment allows it. Images are preprocessed here with PIL + numpy
(resize shorter side, centre crop, normalise) so no torchvision-based image processor is needed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from facefact.errors import ModelNotFoundError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _features(output):
    """transformers 5 returns a model output whose pooler_output is the projection; 4.x a tensor."""
    return output if hasattr(output, "norm") else output.pooler_output


class ClipScorer:
    """Scores (image, text) pairs. Build with :meth:`load` (a path or cached hub id) or from objects."""

    def __init__(self, model, tokenizer, *, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, name: str = "clip"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.name = name

    @classmethod
    def load(cls, source: str | Path, device: str | None = None) -> "ClipScorer":
        from transformers import AutoTokenizer, CLIPModel

        local = Path(source).expanduser()
        try:
            model = CLIPModel.from_pretrained(str(local) if local.exists() else str(source),
                                              local_files_only=not local.exists())
            tokenizer = AutoTokenizer.from_pretrained(str(local) if local.exists() else str(source),
                                                      local_files_only=not local.exists())
        except (OSError, ValueError) as err:
            raise ModelNotFoundError(f"cannot load the CLIP model '{source}' ({str(err).splitlines()[0]})",
                                     hint="give a local folder of a transformers CLIPModel (e.g. "
                                          "openai/clip-vit-large-patch14 saved with save_pretrained)",
                                     setting="clip") from err
        mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        config = local / "preprocessor_config.json"
        if config.is_file():
            values = json.loads(config.read_text())
            mean, std = values.get("image_mean", mean), values.get("image_std", std)
        if device:
            model = model.to(device)
        return cls(model, tokenizer, mean=mean, std=std, name=str(source))

    def _pixels(self, image: Image.Image):
        import torch

        side = self.image_size
        image = image.convert("RGB")
        scale = side / min(image.size)
        w, h = max(side, round(image.width * scale)), max(side, round(image.height * scale))
        image = image.resize((w, h), Image.BICUBIC)
        left, top = (w - side) // 2, (h - side) // 2
        arr = np.asarray(image.crop((left, top, left + side, top + side)), np.float32) / 255.0
        arr = (arr - self.mean) / self.std
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())

    def score(self, images: list[Image.Image], texts: list[str]) -> list[float]:
        """100 x cosine for each (images[i], texts[i]) pair."""
        import torch

        device = next(self.model.parameters()).device
        with torch.inference_mode():
            pixels = torch.stack([self._pixels(im) for im in images]).to(device)
            tokens = self.tokenizer(texts, padding="max_length", truncation=True,
                                    max_length=min(77, self.model.config.text_config.max_position_embeddings),
                                    return_tensors="pt").to(device)
            img = _features(self.model.get_image_features(pixel_values=pixels)).float()
            txt = _features(self.model.get_text_features(input_ids=tokens["input_ids"],
                                                         attention_mask=tokens.get("attention_mask"))).float()
            img = img / img.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            txt = txt / txt.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            return [float(v) * 100.0 for v in (img * txt).sum(-1).cpu()]


def tiny_clip_scorer(seed: int = 0) -> ClipScorer:
    """A random-weight CLIP with the tiny pipeline's tokenizer: exercises the CLIP-T code path offline."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from facefact.pipelines.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    vocab = len(tokenizer)
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab - 2,
                         eos_token_id=vocab - 1, pad_token_id=vocab - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return ClipScorer(model, tokenizer, name="tiny-random-clip")
