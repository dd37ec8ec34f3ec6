"""One name for one setting across commands, help without doubled or empty defaults, and a faces table
that fits an 80-column terminal."""
from __future__ import annotations

import io
import re

import pytest

from facefact.cli.main import build_parser


def _command(*names):
    parser = build_parser()
    for name in names:
        parser = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[name]
    return parser


@pytest.mark.parametrize("command", [("evaluate",), ("prepare",), ("train",), ("generate",), ("template",)])
def test_help_shows_each_default_once_and_only_when_it_says_something(command):
    text = _command(*command).format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    entries = re.split(r"\n  (?=-)", text)  # one entry per option
    for entry in entries:
        assert entry.lower().count("(default") <= 1, entry


@pytest.mark.parametrize("command, extra, dest", [("generate", ["--face", "x.jpg", "--prompt", "p"], "guidance"),
                                                  ("evaluate", ["--identities", "people"], "guidance"),
                                                  ("template", ["--template", "t.jpg"], "guidance_scale")])
def test_guidance_has_one_name_everywhere(command, extra, dest):
    parser = _command(command)
    short = parser.parse_args([*extra, "--guidance", "3"])
    long = parser.parse_args([*extra, "--guidance-scale", "3"])
    assert getattr(short, dest) == getattr(long, dest) == 3.0


@pytest.mark.parametrize("command, extra, dest", [("generate", ["--face", "x.jpg", "--prompt", "p"], "quiet"),
                                                  ("evaluate", ["--identities", "people"], "no_progress"),
                                                  ("prepare", ["photos", "--out", "set"], "quiet")])
def test_progress_is_turned_off_by_the_same_flags_everywhere(command, extra, dest):
    parser = _command(command)
    assert not getattr(parser.parse_args(extra), dest)
    for flag in ("--quiet", "--no-progress"):
        assert getattr(parser.parse_args([*extra, flag]), dest) is True
    train = _command("train")
    assert train.parse_args(["--no-progress"]).progress is False


def test_base_model_names_the_sd_model_in_evaluate_as_in_generate_and_train():
    assert _command("evaluate").parse_args(["--base-model", "sd15/"]).base_model == "sd15/"
    assert _command("generate").parse_args(["--face", "x", "--prompt", "p", "--base-model", "sd15/"]).base_model
    assert _command("train").parse_args(["--base-model", "sd15/"]).base_model == "sd15/"


def test_faces_table_fits_80_columns():
    from rich.console import Console

    from facefact.cli.faces import faces_table

    quality = {"size_px": 170.0, "sharpness": 0.4031, "yaw": -12.4, "roll": 3.2, "cut_off": 0.0}
    face = {"score": 0.94, "bbox": [1183.4, 1120.2, 1353.0, 1290.7], "quality": quality}
    photos = [{"photo": "/photos/a_rather_long_photo_name_of_someone_at_a_party.jpg",
               "faces": [{"number": n, **face} for n in (1, 2, 3)], "main_face": 2},
              {"photo": "/photos/empty.jpg", "faces": [], "main_face": None}]
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(faces_table(photos))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    text = out.getvalue()
    assert " 2* " in text and " 1 " in text and " 3 " in text and "1183,1120" in text and "0.403" in text and "-12" in text
    assert "a_rather_long" in text and "empty.jpg" in text  # long names are folded, not cut to '…'
    assert "…" not in text


def _every_parser(parser, name="facefact"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, __import__("argparse")._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for sub_name, sub in action.choices.items():
                assert helps.get(sub_name), f"{name} {sub_name} has no help line"
                yield from _every_parser(sub, f"{name} {sub_name}")


def test_every_flag_of_every_command_has_help():
    missing = [f"{name} {action.option_strings or action.dest}" for name, parser in _every_parser(build_parser())
               for action in parser._actions
               if action.__class__.__name__ != "_SubParsersAction" and not (action.help or "").strip()]
    assert not missing, missing


def test_quiet_is_taken_by_every_command_with_a_progress_bar():
    assert _command("train").parse_args(["--quiet"]).progress is False
    assert _command("train").parse_args([]).progress is None  # not given: the config file's or the default
    for command in ("generate", "template", "prepare", "evaluate"):
        assert "--quiet" in _command(command)._option_string_actions, command


def test_evaluate_takes_generates_model_flags_and_its_size_help_names_only_its_flags():
    evaluate, generate = _command("evaluate"), _command("generate")
    for flag in ("--model", "--base-model", "--adapter", "--encoder", "--models-dir", "--config", "--device",
                 "--dtype"):
        a, b = evaluate._option_string_actions[flag], generate._option_string_actions[flag]
        assert (a.dest, a.choices, a.default) == (b.dest, b.choices, b.default), flag
    assert "--width" not in evaluate.format_help()


@pytest.mark.parametrize("argv, first_line", [
    (["generate", "--face", "x.jpg", "--prompt", "p", "--steps", "abc"],
     "facefact generate: error: argument --steps: must be a whole number, not 'abc'"),
    (["generate", "--face", "x.jpg", "--prompt", "p", "--bogus"],
     "facefact generate: error: unrecognized arguments: --bogus"),
    (["faces", "inspect", "x.jpg", "--nope"], "facefact faces inspect: error: unrecognized arguments: --nope"),
    (["generate", "--face", "x.jpg", "--prompt", "p", "--scale", "down=0.3,side=1"],
     "facefact generate: error: argument --scale/--fact-scale: fact_scale level 'side' is not a UNet level"),
])
def test_a_flag_error_is_one_line_naming_the_command_and_a_hint(capsys, argv, first_line):
    from facefact.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    code, err = exited.value.code, capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and lines[0].startswith(first_line) and len(lines) == 2, err
    command = first_line.split(": error")[0]
    assert lines[1] == f"  hint: `{command} --help` lists its flags" and "usage:" not in err


def test_every_missing_model_file_is_named_at_once_before_the_photos_are_read(cli, tmp_path):
    code, _, err = cli("generate", "--face", tmp_path / "not-read.jpg", "--prompt", "p",
                       "--models-dir", tmp_path / "models", "--base-model", tmp_path / "sd15")
    assert code == 2 and "3 model files not found" in err, err
    for what in ("base model not found", "adapter not found", "encoder not found"):
        assert what in err
    assert "not-read.jpg" not in err  # the models were checked first
