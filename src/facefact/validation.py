"""Every number, flag and switch a user gives is checked here, once, with its range.

Settings arrive as CLI strings, YAML/JSON values (where ``1e-4`` is a *string* to YAML 1.1 and
``"no"`` a truthy one to Python) or keyword arguments. Each check returns the clean value or raises
:class:`~facefact.errors.ConfigError` naming the setting and the allowed range - never a NaN that
poisons every image, a float truncated to an int, or a string read as ``True``.

    finite_float("guidance", value, low=0, high=50)
    whole_number("batch_size", value, low=1)
    seed_value("seed", value)                 # 0 .. MAX_SEED
    strict_bool("cfg_face", value)            # True/False (and the strings "true"/"false") only
    check_image_size(width, height)           # multiples of 8, at most MAX_IMAGE_SIDE
    parser.add_argument("--guidance", type=arg_float("guidance", low=0, high=50))   # argparse flavour
"""
from __future__ import annotations

import argparse
import math
from typing import Callable

from facefact.errors import ConfigError

# torch.Generator.manual_seed and numpy take 64-bit seeds; signed 64-bit is what every backend
# (and the JSON metadata readers) agree on.
MAX_SEED = 2**63 - 1
# The largest image side generation accepts. SD1.5 is made for 512 px; 2048 px (16x the pixels)
# already needs ~20 GB of accelerator memory, and beyond it the latents alone exhaust memory.
MAX_IMAGE_SIDE = 2048
LATENT_FACTOR = 8


def _error(name: str, message: str, *, hint: str | None = None) -> ConfigError:
    """The check's error, naming its setting (a flag name like "--steps" is the CLI's own wording)."""
    return ConfigError(message, hint=hint, setting=name if name.isidentifier() else None)


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _range_words(low, high) -> str:
    low, high = (None if v is None else _num(v) for v in (low, high))
    if low is not None and high is not None:
        return f"between {low} and {high}"
    if low is not None:
        return f"at least {low}"
    return f"at most {high}"


def finite_float(name: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """A finite float within [low, high] (low excluded when `low_open`); numeric strings accepted."""
    if isinstance(value, bool) or value is None:
        raise _error(name, f"{name} must be a number, not {value!r}")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise _error(name, f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        bounded = low is not None or high is not None
        raise _error(name, f"{name} must be a finite number, not {value!r}",
                     hint=f"use a value {_range_words(low, high)}" if bounded else None)
    too_low = low is not None and (number <= low if low_open else number < low)
    if too_low or (high is not None and number > high):
        words = f"greater than {_num(low)}" + (f" and at most {_num(high)}" if high is not None else "") if low_open \
            else _range_words(low, high)
        raise _error(name, f"{name} = {value!r} is out of range: it must be {words}")
    return number


def whole_number(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """An int within [low, high]. 2, "2" and 2.0 are accepted; 1.7, True, "two" are not."""
    if isinstance(value, bool) or value is None:
        raise _error(name, f"{name} must be a whole number, not {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise _error(name, f"{name} must be a whole number, not {text!r}") from None
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise _error(name, f"{name} must be a whole number, not {value!r}")
        value = int(value)
    if not isinstance(value, int):
        try:
            value = int(value)  # numpy integers
        except (TypeError, ValueError):
            raise _error(name, f"{name} must be a whole number, not {value!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise _error(name, f"{name} = {value} is out of range: it must be {_range_words(low, high)}")
    return value


def seed_value(name: str, value) -> int:
    return whole_number(name, value, low=0, high=MAX_SEED)


def strict_bool(name: str, value) -> bool:
    """True or False. YAML's own booleans pass; the strings "true"/"false" too; "no", "yes", "off",
    1 and 0 are refused rather than guessed ("no" is truthy to Python)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _error(name, f"{name} must be true or false, not {value!r}",
                 hint="write true or false without quotes")


def one_of(name: str, value, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise _error(name, f"{name} must be one of {', '.join(map(str, options))}, not {value!r}")
    return value


def check_image_size(width, height, *, max_side: int = MAX_IMAGE_SIDE) -> tuple[int | None, int | None]:
    """Generation width and height (None: the model's default): positive multiples of 8, at most
    `max_side`. Refused up front - a 100000 px request would otherwise allocate gigabytes and die."""
    clean = []
    for name, value in (("width", width), ("height", height)):
        if value is None:
            clean.append(None)
            continue
        number = whole_number(name, value)
        if number <= 0 or number % LATENT_FACTOR:
            raise _error(name, f"image {name} {value} is not a positive multiple of 8",
                         hint=f"Stable Diffusion works on 8x smaller latents; try "
                              f"{min(max(8, number // 8 * 8), max_side)}")
        if number > max_side:
            raise _error(name, f"image {name} {number} is larger than the largest size facefact generates "
                               f"({max_side} px)", hint=f"use at most {max_side} (the model is made for 512); "
                                                        "upscale the result for larger prints")
        clean.append(number)
    return clean[0], clean[1]


def check_finite_tree(value, where: str = "value") -> None:
    """Raise ConfigError if a JSON-bound structure holds NaN or infinity (invalid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} is {value}, which cannot be written as JSON",
                          hint="a setting or a measurement is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite_tree(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_finite_tree(item, f"{where}[{i}]")


# ---- argparse flavour: the same checks as `type=` callables (argparse names the flag) ---------------
def _argparse_type(check: Callable, name: str, **limits) -> Callable[[str], object]:
    def parse(text: str):
        try:
            return check(name, text, **limits)
        except ConfigError as err:
            message = err.message  # argparse names the flag itself: "argument --guidance: ..."
            if message.startswith(name):
                message = message[len(name):].lstrip(" =")
            raise argparse.ArgumentTypeError(message) from None
    parse.__name__ = name  # argparse says "invalid <name> value" for other errors
    return parse


def arg_float(name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False):
    return _argparse_type(finite_float, name, low=low, high=high, low_open=low_open)


def arg_int(name: str, *, low: int | None = None, high: int | None = None):
    return _argparse_type(whole_number, name, low=low, high=high)


def arg_seed(name: str = "seed"):
    return _argparse_type(seed_value, name)
