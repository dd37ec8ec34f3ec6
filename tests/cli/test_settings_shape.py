"""One settings dataclass per kind of work: GenerationSettings makes generate's and evaluate's flags,
the config file's `generate:` keys and the server's schema; TrainConfig and TemplateSettings make
train's and template's flags. Config-file and environment resolution live in cli/."""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import pytest

from facefact.cli.main import build_parser
from facefact.cli.settings_flags import config_names, section_settings
from facefact.pipelines.settings import GenerationSettings

SRC = Path(__file__).resolve().parents[2] / "src" / "facefact"


def _command(name):
    parser = build_parser()
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[name]


def _options(parser) -> dict[str, object]:
    return {a.dest: a for a in parser._actions if a.option_strings}


@pytest.mark.parametrize("cls_path", ["facefact.pipelines.settings:GenerationSettings",
                                      "facefact.template.settings:TemplateSettings"])
def test_every_setting_has_a_help_text(cls_path):
    import importlib

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    missing = [f.name for f in fields(cls) if f.metadata.get("cli") is not False and not f.metadata.get("help")]
    assert not missing


@pytest.mark.parametrize("command, expected", [
    ("generate", {f.name for f in fields(GenerationSettings)}),
    ("evaluate", {"negative_prompt", "steps", "guidance", "cfg_face", "scheduler"}),
])
def test_commands_take_the_generation_settings_with_their_own_help_and_ranges(command, expected):
    options = _options(_command(command))
    assert expected <= set(options)
    by_name = {f.name: f for f in fields(GenerationSettings)}
    for name in expected:
        action = options[name]
        assert action.default is None  # a flag not given leaves room for the config file / the command's default
        if name != "negative_prompt":  # evaluate says its default is the prompt set's
            assert by_name[name].metadata["help"].replace("%", "%%") in action.help, name
    # the same flag names in both commands
    generate, evaluate = _options(_command("generate")), _options(_command("evaluate"))
    for name in expected & set(evaluate):
        assert generate[name].option_strings == evaluate[name].option_strings


def test_evaluate_default_steps_is_the_librarys():
    from facefact.cli.evaluate import EVAL_STEPS
    from facefact.evaluation.methods import EVAL_STEPS as LIBRARY_EVAL_STEPS, RunSettings

    assert EVAL_STEPS == LIBRARY_EVAL_STEPS == RunSettings().generation.steps
    assert "(default: 30)" in _options(_command("evaluate"))["steps"].help


def test_generate_flags_become_the_settings_and_go_down_once(tmp_path):
    from facefact.cli.generate import resolve_options

    parser = _command("generate")
    args = parser.parse_args(["--face", "x.jpg", "--prompt", "p", "--scale", "down=0.3,up=0.6", "--window", "0.2,1",
                              "--combine", "mean", "--size", "64", "--height", "128", "-n", "3", "--seed", "5",
                              "--no-cfg-face", "--guidance-scale", "7"])
    settings, out = resolve_options(args, {"generate": {"steps": 4, "scale": 0.9, "out": str(tmp_path)}})
    assert out == str(tmp_path)
    assert (settings.fact_scale, settings.fact_window, settings.face_combine) == ({"down": 0.3, "up": 0.6},
                                                                                   (0.2, 1.0), "mean")
    assert (settings.width, settings.height, settings.num_images, settings.seed) == (64, 128, 3, 5)
    assert (settings.steps, settings.cfg_face, settings.guidance) == (4, False, 7.0)  # steps from the config
    kwargs = settings.pipeline_kwargs()
    assert kwargs["num_inference_steps"] == 4 and kwargs["guidance_scale"] == 7.0
    assert kwargs["num_images_per_prompt"] == 3 and kwargs["fact_window"] == (0.2, 1.0)


@pytest.mark.parametrize("line, message", [
    ("steps: 1000000", "steps = 1000000 is out of range"),
    ("guidance: .nan", "guidance must be a finite number"),
    ("stepz: 3", "unknown config `generate:` keys: stepz"),
    ("scheduler: heun", "scheduler must be one of"),
    ("cfg_face: 1", "cfg_face must be true or false"),
    ("size: 100", "image width 100 is not a positive multiple of 8"),
])
def test_config_generate_section_is_checked_with_the_settings_own_rules(tmp_path, line, message):
    from facefact.cli.config import load_config
    from facefact.errors import ConfigError

    path = tmp_path / "facefact.yaml"
    path.write_text(f"generate:\n  {line}\n  out: images\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert caught.value.path == str(path)


def test_config_keys_are_field_names_or_flag_names():
    names = config_names(GenerationSettings)
    assert names["scale"] == names["fact_scale"] == "fact_scale" and names["n"] == "num_images"
    assert names["combine"] == "face_combine" and names["window"] == "fact_window"
    s = section_settings(GenerationSettings, {"n": 2, "scale": "0.7", "size": 96, "window": [0.5, 1]})
    assert (s.num_images, s.fact_scale, s.width, s.height, s.fact_window) == (2, 0.7, 96, 96, (0.5, 1.0))
    s = GenerationSettings.from_mapping({"fact_scale": {"down": 0, "up": "1.5"}})  # the library: field names
    assert s.fact_scale == {"down": 0.0, "up": 1.5}
    with pytest.raises(ValueError, match="unknown settings keys: scale"):
        GenerationSettings.from_mapping({"scale": 0.5})


@pytest.mark.parametrize("values, message", [
    ({"steps": 1.5}, "steps must be a whole number"),
    ({"guidance": math.inf}, "guidance must be a finite number"),
    ({"fact_scale": 2.5}, "fact_scale = 2.5 is out of range"),
    ({"fact_scale": {"up": -1}}, r"fact_scale\[up\] = -1 is out of range"),
    ({"fact_window": (0.8, 0.2)}, "start must be before end"),
    ({"face_combine": "sum"}, "face_combine must be one of concat, mean, weighted"),
    ({"seed": 2**63 - 1, "num_images": 2}, "goes past the largest seed"),
    ({"num_images": 0}, "num_images = 0 is out of range"),
])
def test_library_settings_refuse_bad_values_as_value_errors_naming_the_setting(values, message):
    with pytest.raises(ValueError, match=message) as caught:
        GenerationSettings(**values).check()
    assert "--" not in str(caught.value)  # the library names settings, never flags


def test_server_schema_takes_names_help_and_defaults_from_the_settings():
    from facefact.serving.schemas import GenerateSettings

    shared = {f.name: f for f in fields(GenerationSettings)}
    schema = GenerateSettings.model_fields
    common = set(shared) & set(schema)
    assert common == set(shared)  # every generation setting is in the API, by the same name
    for name in common - {"fact_scale", "fact_window"}:  # those two describe the JSON form
        assert schema[name].description == shared[name].metadata["help"], name
    for name in common - {"steps"}:  # the server's one own default: 30 steps, for a quick web request
        assert schema[name].default == shared[name].default, name
    request = GenerateSettings(prompt="p", fact_scale_levels={"up": 0.7}, fact_window=(0.3, 1.0), steps=4)
    generation = request.generation(seed=9, negative_prompt="blur")
    assert generation.fact_scale == {"up": 0.7} and generation.seed == 9 and generation.steps == 4
    assert generation.pipeline_kwargs()["negative_prompt"] == "blur"
    from pydantic import ValidationError  # the schema's own checks are the library's, with its words

    with pytest.raises(ValidationError, match="start must be before end"):
        GenerateSettings(prompt="p", fact_window=(0.8, 0.2))
    with pytest.raises(ValidationError, match=r"fact_scale\[up\] = 3.0 is out of range"):
        GenerateSettings(prompt="p", fact_scale_levels={"up": 3})


def test_the_schedulers_offered_are_one_list():
    from facefact.pipelines.scheduler_names import SCHEDULER_NAMES
    from facefact.serving import schemas

    assert schemas.SCHEDULER_NAMES is SCHEDULER_NAMES
    assert tuple(_options(_command("generate"))["scheduler"].choices) == SCHEDULER_NAMES


def test_pipeline_kwargs_make_the_same_pixels_as_the_explicit_call():
    import numpy as np
    import torch

    from facefact.pipelines import FACTStableDiffusionPipeline

    torch.set_num_threads(1)
    pipe = FACTStableDiffusionPipeline.tiny()
    s = GenerationSettings(steps=2, guidance=3.0, width=64, height=64, seed=4, num_images=2, fact_scale=0.0).check()
    via_settings = pipe("a portrait", generator=s.generators(), output_type="np", **s.pipeline_kwargs()).images
    explicit = pipe("a portrait", num_inference_steps=2, guidance_scale=3.0, width=64, height=64,
                    num_images_per_prompt=2, fact_scale=0.0, output_type="np",
                    generator=[torch.Generator("cpu").manual_seed(4 + i) for i in range(2)]).images
    assert np.array_equal(via_settings, explicit)
    assert not np.array_equal(via_settings[0], via_settings[1])  # seeds 4 and 5


def test_config_and_environment_resolution_live_in_the_cli():
    """The library takes locations; which flag / env var / config key points where is cli/config.py's."""
    from facefact.pipelines import registry

    for name in ("load_config", "resolve_setting", "how_to_point", "models_dir", "ENV_VARS"):
        assert not hasattr(registry, name), name
    outside_cli = [p for p in SRC.rglob("*.py") if "cli" not in p.relative_to(SRC).parts]
    for path in outside_cli:
        text = path.read_text(encoding="utf-8")
        for word in ("FACEFACT_CONFIG", "FACEFACT_BASE_MODEL", "FACEFACT_ADAPTER", "FACEFACT_ENCODER",
                     "FACEFACT_DEVICE", "facefact.yaml"):
            assert word not in text, f"{path.relative_to(SRC)} reads {word}"


def test_template_flags_are_made_from_template_settings():
    from facefact.cli.template import KNOB_GROUPS, settings_from_args
    from facefact.template.settings import TemplateSettings

    options = _options(_command("template"))
    knobs = {name for group in KNOB_GROUPS.values() for name in group}
    cli_fields = {f.name for f in fields(TemplateSettings) if f.metadata.get("cli") is not False}
    assert knobs | {"prompt", "negative_prompt"} == cli_fields <= set(options)
    args = _command("template").parse_args(["--template", "t.jpg", "--controls", "canny", "--scale", "0.7",
                                            "--no-refine", "--no-black-out-others", "-n", "2"])
    settings = settings_from_args(args)
    assert settings.controls == ("canny",) and settings.control_scales == (0.2,) and settings.fact_scale == 0.7
    assert settings.refine is False and settings.black_out_others is False and args.num_images == 2


def test_library_errors_name_settings_and_the_cli_names_the_flag(tmp_path, capsys):
    """float16 on the CPU: the library says which setting (dtype) and what to do, never a flag; the CLI
    leads the same message with the flag of this command that sets it."""
    from facefact.cli.main import main
    from facefact.errors import ConfigError
    from facefact.pipelines.loading import pick_device_dtype

    with pytest.raises(ConfigError) as caught:
        pick_device_dtype("cpu", "float16")
    assert caught.value.setting == "dtype" and "--" not in str(caught.value)
    photo = Path(__file__).resolve().parents[2] / "examples" / "astronaut.jpg"
    code = main(["generate", "--model", "tiny", "--face", str(photo), "--prompt", "p", "--device", "cpu",
                 "--dtype", "float16", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "facefact generate: error: --dtype: float16 is not supported on the CPU" in err, err
    # a setting this command has no flag for is left as the library said it; a flag not given gets a line
    from facefact.cli.main import with_flag

    class Args:
        _flags = {"dtype": ["--dtype"], "fact_scale": ["--scale", "--fact-scale"]}

    assert with_flag(ConfigError("x", setting="clip"), Args(), ["--dtype", "float16"]) == "x"
    assert with_flag(ConfigError("x", setting="dtype"), Args(), ["--device", "cpu"]) == "x\n  flag: --dtype"
    assert with_flag(ConfigError("x", setting="fact_scale"), Args(), ["--fact-scale=3"]) == "--fact-scale: x"
    assert with_flag(ConfigError("use --dtype", setting="dtype"), Args(), ["--dtype", "f"]) == "use --dtype"  # once
