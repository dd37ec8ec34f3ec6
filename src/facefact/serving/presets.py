"""Style presets: prompt templates the UI and the API offer (`{prompt}` is the user's prompt).

Plain text, so they go with the prompt into every image's metadata; nothing else changes.
"""
from __future__ import annotations

STYLE_PRESETS: dict[str, dict[str, str]] = {
    "photo": {"prompt": "a photo of {prompt}, natural light, sharp focus, 85mm",
              "negative": "painting, drawing, cartoon, blurry, deformed"},
    "studio portrait": {"prompt": "studio portrait of {prompt}, soft box lighting, plain background, high detail",
                        "negative": "blurry, lowres, deformed, cluttered background"},
    "cinematic": {"prompt": "cinematic still of {prompt}, dramatic lighting, shallow depth of field, film grain",
                  "negative": "cartoon, flat lighting, lowres"},
    "watercolor": {"prompt": "watercolor painting of {prompt}, soft colours, paper texture",
                   "negative": "photo, 3d render"},
    "anime": {"prompt": "anime illustration of {prompt}, clean line art, vibrant colours",
              "negative": "photo, realistic, lowres"},
}


def apply_style(style: str | None, prompt: str, negative_prompt: str | None) -> tuple[str, str | None]:
    """(prompt, negative prompt) with the preset applied; the user's negative words come first."""
    if not style:
        return prompt, negative_prompt
    preset = STYLE_PRESETS[style]
    negative = ", ".join(part for part in (negative_prompt, preset["negative"]) if part)
    return preset["prompt"].format(prompt=prompt), negative or None
