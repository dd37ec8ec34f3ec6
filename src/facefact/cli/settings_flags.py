"""CLI flags made from a settings dataclass's fields, so flag names, help texts, ranges and defaults
come from one place: GenerationSettings (generate, evaluate), TrainConfig (train), TemplateSettings
(template). A field `learning_rate` is the flag `--learning-rate` unless FLAGS names it otherwise
(the same in every command); `--help` shows each default; a flag not given stays None, so a config
file's value or the command's default can fill it. Config-file keys are the field names or the flag
names without dashes (`scale`, `n`).

    add_setting_flags(group, GenerationSettings, only=("steps", "guidance"), defaults={"steps": 30})
    settings = settings_from_args(args, GenerationSettings, defaults={"steps": 30}, section=config["generate"])
"""
from __future__ import annotations

import argparse
import re
from dataclasses import fields, replace

from facefact.errors import ConfigError
from facefact.pipelines.settings import default_of
from facefact.validation import arg_float, arg_int


# Fields whose flags are not `--field-name`, in every command that has them (the first is the one named).
FLAGS = {"num_images": ("-n", "--num-images"), "guidance": ("--guidance", "--guidance-scale"),
         "guidance_scale": ("--guidance", "--guidance-scale"), "fact_scale": ("--scale", "--fact-scale"),
         "face_combine": ("--combine",), "fact_window": ("--window",)}


def flag_names(f) -> list[str]:
    return list(FLAGS.get(f.name, ("--" + f.name.replace("_", "-"),)))


def config_names(cls) -> dict[str, str]:
    """Config key -> field: each field's name, and its flags' names without dashes (`scale`, `n`)."""
    names = {}
    for f in fields(cls):
        names[f.name] = f.name
        for flag in flag_names(f):
            names[flag.lstrip("-").replace("-", "_")] = f.name
    return names


def section_settings(cls, section: dict, base=None, where: str = "config section"):
    """A config-file section of `cls` settings: keys as config_names allows, errors naming the key as
    it was written (`scale:` is fact_scale)."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping of setting: value, not {type(section).__name__}")
    names = config_names(cls)
    given = {names.get(k, k): v for k, v in section.items()}
    try:
        return cls.from_mapping(given, base, where=where)
    except ConfigError as err:
        written = [k for k in section if names.get(k, k) != k and err.message.startswith(names[k])]
        note = f" (key '{written[0]}')" if written else ""
        hint = err.hint
        if err.message.startswith("unknown"):
            hint = f"known: {', '.join(sorted(set(names) | {'size'}))}"
        raise ConfigError(err.message + note, hint=hint) from None


def help_text(text: str, default) -> str:
    """The setting's help and its default (argparse formats help with %, hence the escaping)."""
    if default == "":
        shown = " (required)"
    elif default is None:
        shown = ""  # the text says what happens without it
    elif isinstance(default, bool):
        shown = f" (default: {'on' if default else 'off'})"
    elif isinstance(default, (tuple, list)):
        shown = f" (default: {','.join(map(str, default))})"
    else:
        shown = f" (default: {default})"
    return (text + shown).replace("%", "%%")


def _type(f, flag: str):
    """argparse's `type=` for a field: the range check of facefact.validation, naming the flag."""
    kind, low, high = str(f.type), f.metadata.get("low"), f.metadata.get("high")
    if kind.startswith("int"):
        return arg_int(flag, low=low, high=high)
    if kind.startswith("float"):
        return arg_float(flag, low=low, high=high)
    return None


def _syntax(parse, flag: str):
    """A parser of a CLI syntax as argparse's `type=`: its ConfigError becomes argparse's own message
    (argparse would otherwise print only "invalid value")."""
    def parse_flag(text: str):
        try:
            return parse(text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(err.message + (f"; {err.hint}" if err.hint else "")) from None
    parse_flag.__name__ = flag
    return parse_flag


def add_setting_flags(group, cls, *, only=None, skip=(), defaults: dict | None = None,
                      help_texts: dict | None = None, parsers: dict | None = None) -> None:
    """One flag per field of `cls` (those in `only`, if given, in the class's order).

    `defaults`: this command's defaults where they differ from the class's (shown in --help);
    `help_texts`: help where a class keeps it apart (TrainConfig.FIELD_HELP);
    `parsers`: {field: type callable} for a CLI syntax (`--scale down=0.3,up=0.6`)."""
    defaults, help_texts, parsers = defaults or {}, help_texts or {}, parsers or {}
    for f in fields(cls):
        if (only is not None and f.name not in only) or f.name in skip or f.metadata.get("cli") is False:
            continue
        names = flag_names(f)
        text = help_texts.get(f.name) or f.metadata.get("help") or ""
        default = f.metadata.get("shown") or defaults.get(f.name, default_of(f))
        kwargs = {"dest": f.name, "default": None, "help": help_text(text, default)}
        kind = str(f.type)
        if kind.startswith("bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind.startswith("tuple") and f.name not in parsers:
            kwargs.update(nargs="+", metavar="TEXT")
        elif f.metadata.get("choices"):
            kwargs["choices"] = list(f.metadata["choices"])
        else:
            kwargs["type"] = _syntax(parsers[f.name], names[0]) if f.name in parsers else _type(f, names[0])
            kwargs["metavar"] = f.metadata.get("metavar") or ("N" if kind.startswith("int") else
                                                              "X" if kind.startswith("float") else f.name.upper())
        group.add_argument(*names, **kwargs)


def given_flags(args, cls) -> dict:
    """{field: value} of the flags the user gave (argparse left the others None)."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}


def _image_side(text: str) -> int:
    from facefact.validation import check_image_size, whole_number

    try:
        side = whole_number("--size", text)
        if side <= 0:
            raise ConfigError(f"{side} is not a positive multiple of 8", hint="try 512, SD1.5's size")
        return check_image_size(side, side)[0]
    except ConfigError as err:
        words = err.message.removeprefix("--size").lstrip(" =").replace("image width ", "")
        raise argparse.ArgumentTypeError(words + (f"; {err.hint}" if err.hint else "")) from None


def add_size_flag(group, what: str = "the model's", *, one_side_flags: bool = True) -> None:
    """`--size N`: the shorthand for --width N --height N (config key `size` too); `one_side_flags`:
    the command has --width / --height as well."""
    sides = "; --width / --height set one side" if one_side_flags else ""
    group.add_argument("--size", type=_image_side, metavar="PX",
                       help=f"square image side, a multiple of 8 (default: {what}){sides}")


def settings_from_args(args, cls, *, defaults: dict | None = None, section: dict | None = None,
                       where: str = "the config file's `generate:` section"):
    """flag > config-file section > this command's defaults > the class's, checked - before any work."""
    base = replace(cls(), **(defaults or {}))
    if section:
        base = section_settings(cls, section, base, where=where)
    given = given_flags(args, cls)
    size = getattr(args, "size", None)
    if size is not None and "width" in {f.name for f in fields(cls)}:  # --size is the square shorthand
        given.setdefault("width", size)
        given.setdefault("height", size)
    try:
        return replace(base, **given).check()
    except ConfigError as err:  # a combination of flags (--seed with -n): say which flags, as typed
        named = [f for f in fields(cls) if f.name in given and re.search(rf"\b{f.name}\b", err.message)]
        typed = ", ".join(f"{flag_names(f)[0]} {given[f.name]}" for f in named)
        raise ConfigError(f"{typed}: {err.message}" if typed else err.message, hint=err.hint) from None
