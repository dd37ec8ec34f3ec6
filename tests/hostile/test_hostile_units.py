"""Issue 13's cases that need more than one command line: signals, leftovers of a killed run, a full
disk, and the small modules everything goes through (safe_open, validation, exit codes)."""
from __future__ import annotations

import errno
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from facefact.cli.exit_codes import ExitCode
from facefact.errors import ConfigError, ImageError

REPO = Path(__file__).resolve().parents[2]
ASTRONAUT = REPO / "examples" / "astronaut.jpg"


def _env(tmp_path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "FACEFACT_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "FACEFACT_HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
            "TRANSFORMERS_VERBOSITY": "error"}


def test_sigterm_is_handled_like_ctrl_c_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "facefact.cli.main", "generate", "--model", "tiny", "--face", str(ASTRONAUT),
               "--prompt", "a portrait", "--steps", "500", "--size", "64", "--out", str(out)]
    proc = subprocess.Popen(command, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(64), "")), daemon=True)
    reader.start()
    deadline = time.time() + 240
    while "denoising" not in "".join(seen) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "".join(seen)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    reader.join(timeout=10)
    err = "".join(seen)
    assert code == ExitCode.INTERRUPTED and "interrupted" in err and "Traceback" not in err, err
    assert not out.exists() or not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_stale_temporaries_of_our_naming_are_swept_on_the_next_run(tmp_path):
    from facefact.cli.main import main

    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".a-portrait_7.png.k2j3h4g5.png.tmp", out / ".adapter.safetensors.abcdefgh.tmp"]
    fresh = out / ".a-portrait_8.png.zzzzzzzz.png.tmp"          # a live writer's, maybe: kept
    foreign = [out / ".my-notes.tmp", out / "photo.tmp"]         # not ours: kept
    for path in [*stale, fresh, *foreign]:
        path.write_bytes(b"partial")
    old = time.time() - 3600
    for path in [*stale, *foreign]:
        os.utime(path, (old, old))
    code = main(["generate", "--model", "tiny", "--face", str(tmp_path / "missing.jpg"), "--prompt", "p",
                 "--out", str(out)])
    assert code == ExitCode.USER_ERROR  # refused on the photo, after the output folder was checked
    assert not any(p.exists() for p in stale) and fresh.exists() and all(p.exists() for p in foreign)


def test_a_full_disk_is_a_message_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    from facefact.cli.main import main
    from facefact.pipelines import metadata

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "x.png"))

    monkeypatch.setattr(metadata, "png_info", no_space)
    monkeypatch.setenv("FACEFACT_HOME", str(tmp_path / "home"))
    code = main(["generate", "--model", "tiny", "--face", str(ASTRONAUT), "--prompt", "p", "--steps", "1",
                 "--size", "64", "--quiet", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == ExitCode.USER_ERROR and "no space left on the device" in err and "x.png" in err, err
    assert not list((tmp_path / "out").iterdir())  # the temporary was removed


def test_exit_code_table_is_documented_once():
    doc = (REPO / "docs" / "refusals.md").read_text()
    for code in ExitCode:
        assert re.search(rf"^\|\s*{code.value}\s*\|\s*`?{code.name}`?", doc, re.M), code
    assert "facefact.cli.exit_codes" in doc


# ---- safe_open ---------------------------------------------------------------------------------------
def test_special_files_are_named_and_never_block(tmp_path):
    from facefact.safe_open import open_regular, special_file_kind

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    loop = tmp_path / "loop"
    os.symlink("loop", loop)
    assert special_file_kind(pipe) == "a FIFO (named pipe)"
    assert special_file_kind("/dev/zero").startswith("a device file")
    assert special_file_kind(loop).startswith("a symlink loop")
    assert special_file_kind(tmp_path) == "a directory"
    assert special_file_kind(tmp_path / "nothing") == "missing"
    started = time.time()
    with pytest.raises(ImageError, match="FIFO"):
        open_regular(pipe, ImageError)
    assert time.time() - started < 5
    regular = tmp_path / "a.bin"
    regular.write_bytes(b"abc")
    with open_regular(regular) as handle:  # blocking again once checked: reads the whole file
        assert handle.read() == b"abc"


def test_read_text_file_refuses_binary_and_bad_utf8(tmp_path):
    from facefact.safe_open import read_text_file

    (tmp_path / "bin").write_bytes(b"a\x00b")
    (tmp_path / "latin").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "ok").write_bytes("\ufeffcafé\n".encode("utf-8"))
    with pytest.raises(ConfigError, match="binary"):
        read_text_file(tmp_path / "bin", ConfigError)
    with pytest.raises(ConfigError, match="UTF-8"):
        read_text_file(tmp_path / "latin", ConfigError)
    assert read_text_file(tmp_path / "ok") == "café\n"  # the byte-order mark is dropped


# ---- validation -------------------------------------------------------------------------------------
def test_numbers_are_checked_with_their_range():
    from facefact.validation import MAX_SEED, finite_float, seed_value, strict_bool, whole_number

    assert finite_float("lr", "1e-4", low=0, low_open=True) == 1e-4  # YAML 1.1 reads 1e-4 as a string
    for bad in ("nan", float("inf"), -math.inf, True, None, "fast", [1]):
        with pytest.raises(ConfigError, match="lr"):
            finite_float("lr", bad)
    with pytest.raises(ConfigError, match="greater than 0"):
        finite_float("lr", 0, low=0, low_open=True)
    assert whole_number("batch_size", "2") == 2 and whole_number("batch_size", 2.0) == 2
    for bad in (1.7, "1.7", True, "two", float("nan")):
        with pytest.raises(ConfigError, match="batch_size"):
            whole_number("batch_size", bad)
    assert seed_value("seed", MAX_SEED) == MAX_SEED
    for bad in (MAX_SEED + 1, -1):
        with pytest.raises(ConfigError, match="seed"):
            seed_value("seed", bad)
    assert strict_bool("cfg_face", False) is False and strict_bool("cfg_face", "true") is True
    for bad in ("no", "yes", "off", 0, 1, None):
        with pytest.raises(ConfigError, match="cfg_face"):
            strict_bool("cfg_face", bad)


def test_image_sizes_have_a_documented_maximum():
    from facefact.validation import MAX_IMAGE_SIDE, check_image_size

    assert check_image_size(None, None) == (None, None)
    assert check_image_size(512, "768") == (512, 768)
    with pytest.raises(ConfigError, match=f"largest size facefact generates \\({MAX_IMAGE_SIDE} px\\)"):
        check_image_size(100_000, 64)
    with pytest.raises(ConfigError, match="not a positive multiple of 8"):
        check_image_size(64, 100)


def test_metadata_never_holds_nan():
    from facefact.pipelines.metadata import metadata_json

    with pytest.raises(ConfigError, match=r"metadata\.guidance_scale is nan"):
        metadata_json({"prompt": "p", "guidance_scale": float("nan")})
    assert metadata_json({"prompt": "p", "guidance_scale": 5.0}) == '{"guidance_scale": 5.0, "prompt": "p"}'


def test_user_text_is_printed_escaped():
    from facefact.cli.terminal import safe_text

    assert safe_text("a \x1b[2Jportrait\u202e") == "a \\x1b[2Jportrait\\u202e"
    assert safe_text("plain\ntext, café") == "plain\ntext, café"


def test_escape_sequences_in_a_cut_prompt_are_not_echoed_raw(tmp_path, monkeypatch, capsys):
    from facefact.cli.main import main

    monkeypatch.setenv("FACEFACT_HOME", str(tmp_path / "home"))
    prompt = "a portrait " + " ".join(f"word{i}" for i in range(90)) + " \x1b]0;pwned\x07 \x1b[2J end"
    code = main(["generate", "--model", "tiny", "--face", str(ASTRONAUT), "--prompt", prompt, "--steps", "1",
                 "--size", "64", "--quiet", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b" in err and "this part was cut" in err


def test_prepare_sweeps_stale_sample_temporaries(tmp_path):
    from facefact.cli.outputs import prepare_output_folder

    stale = tmp_path / "set" / "samples" / "ab" / ".abcdef.json.k2j3h4g5.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"{")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    keep = stale.with_name("abcdef.json")
    keep.write_bytes(b"{}")
    prepare_output_folder(tmp_path / "set", recursive=True)
    assert not stale.exists() and keep.exists()
