"""The server's image sizes per base family: what a request may ask for and what the UI offers.

SD1.5 models are made for 512 px and SDXL for 1024; a request without a size gets the loaded
model's own (the UNet's sample size: 512, 1024, or 128 for the tiny models). The largest size a
request may ask for follows the family too, so an SD1.5 server keeps its 1536 px limit and an SDXL
one allows 2048 (the library's own limit). Plain data, no torch: the API process behind Redis
never loads a model.
"""
from __future__ import annotations

from facefact.errors import ConfigError

FAMILY_NAMES = {"sd15": "Stable Diffusion 1.5", "sdxl": "SDXL"}
MAX_SIDE = {"sd15": 1536, "sdxl": 2048}       # what a request may ask for
UI_MAX_SIDE = {"sd15": 1024, "sdxl": 2048}    # the UI's sliders: twice the family's own size
NATIVE_SIZE = {"sd15": 512, "sdxl": 1024}     # the real bases' own size (Redis, before a worker says)
LARGEST_SIDE = max(MAX_SIDE.values())         # the request schema's bound; the family's is checked on submit


def max_side(family: str) -> int:
    return MAX_SIDE.get(family, MAX_SIDE["sd15"])


def check_request_size(width: int | None, height: int | None, family: str) -> None:
    """A request's size against the served family's limit (ConfigError naming the side and the limit)."""
    limit = max_side(family)
    for name, value in (("width", width), ("height", height)):
        if value is not None and value > limit:
            raise ConfigError(f"{name} {value} is larger than this server's {FAMILY_NAMES.get(family, family)} "
                              f"model takes ({limit} px)", hint=f"ask for at most {limit}, or leave the size out "
                              "for the model's own (GET /v1/models: default_size)", setting=name)
