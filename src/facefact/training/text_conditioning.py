"""The text side of a training step: prompt embeddings, and on SDXL the UNet's added conditions.

SD1.5: the text encoder's last hidden state [B, 77, 768].
SDXL, as diffusers' SDXL pipeline and `train_text_to_image_sdxl.py` encode a prompt: both text
encoders' penultimate hidden states side by side [B, 77, 768 + 1280], and the pooled (projected)
embedding of the second encoder [B, 1280], which goes to the UNet with the size/crop `time_ids`
(training/micro_conditioning.py). An empty caption (text drop) is encoded like any other, as that
script does.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class TextConditioning(NamedTuple):
    embeds: torch.Tensor                  # encoder_hidden_states
    pooled: torch.Tensor | None = None    # SDXL: text encoder 2's pooled projection


def _token_ids(tokenizer, prompts: list[str], device) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


@torch.no_grad()
def encode_prompts(base, prompts: list[str], device) -> TextConditioning:
    """The prompts through the base model's frozen text encoder(s) (`base`: training.models.BaseModel)."""
    if base.text_encoder_2 is None:
        return TextConditioning(base.text_encoder(_token_ids(base.tokenizer, prompts, device))[0])
    hidden, pooled = [], None
    for tokenizer, encoder in ((base.tokenizer, base.text_encoder), (base.tokenizer_2, base.text_encoder_2)):
        output = encoder(_token_ids(tokenizer, prompts, device), output_hidden_states=True)
        pooled = output[0]                   # the last encoder's (CLIPTextModelWithProjection: text_embeds)
        hidden.append(output.hidden_states[-2])
    return TextConditioning(torch.cat(hidden, dim=-1), pooled)


def added_conditions(text: TextConditioning, time_ids: torch.Tensor, dtype: torch.dtype) -> dict | None:
    """SDXL's `added_cond_kwargs` for the UNet (None on SD1.5)."""
    if text.pooled is None:
        return None
    return {"text_embeds": text.pooled.to(dtype), "time_ids": time_ids.to(text.pooled.device, dtype)}
