"""The CLI starts fast: its parsers, and `faces inspect`, load neither torch nor diffusers.

Import tests, not timing tests (a busy machine makes timings flaky; bench/bench_cli.py prints those):
each runs a fresh interpreter, so modules an earlier test imported do not hide a heavy import.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "diffusers", "transformers", "accelerate")


def _loaded_after(code: str) -> dict:
    """Run `code` in a fresh interpreter; return which of HEAVY (and cv2, numpy, PIL) it left in sys.modules."""
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps({{m: m in sys.modules for m in {HEAVY + ('cv2', 'numpy', 'PIL')!r}}}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_building_every_parser_imports_no_heavy_library():
    loaded = _loaded_after("from facefact.cli.main import build_parser\nbuild_parser()")
    assert not any(loaded[m] for m in HEAVY), loaded
    assert not (loaded["cv2"] or loaded["numpy"] or loaded["PIL"]), f"the parsers need no OpenCV, NumPy or PIL: {loaded}"


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["train", "--help"], ["evaluate", "--help"],
                                  ["faces", "inspect", "--help"], ["models", "list", "--help"],
                                  ["convert", "--help"], ["prepare", "--help"], ["evaluate", "report", "--help"],
                                  ["template", "--help"], ["serve", "--help"]])
def test_help_of_every_command_imports_no_heavy_library(argv):
    loaded = _loaded_after(f"from facefact.cli.main import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass")
    assert not any(loaded[m] for m in HEAVY), loaded


def test_faces_inspect_of_a_photo_uses_the_face_stack_only():
    photo = ROOT / "examples" / "astronaut.jpg"
    loaded = _loaded_after(f"from facefact.cli.main import main\nimport contextlib, io\n"
                           f"with contextlib.redirect_stdout(io.StringIO()):\n    code = main(['faces', 'inspect', {str(photo)!r}])\n"
                           "assert code == 0, code")
    assert loaded["cv2"], "the probe ran the face stack"
    assert not any(loaded[m] for m in HEAVY), loaded


def test_package_names_still_resolve_on_first_use():
    loaded = _loaded_after("from facefact.pipelines import FACTStableDiffusionPipeline, FaceTokens\n"
                           "from facefact.training import train, TrainConfig, PrepareSettings\n"
                           "from facefact.faces import FaceAnalysis, load_image\n"
                           "import facefact.pipelines as p\nassert 'FACTStableDiffusionPipeline' in dir(p)\n"
                           "assert all(hasattr(p, name) for name in p.__all__)")
    assert loaded["torch"]  # the pipeline is real: importing it loads torch, as it must


def test_every_scheduler_the_cli_offers_builds():
    from diffusers import PNDMScheduler

    from facefact.cli.main import build_parser
    from facefact.pipelines.loading import make_scheduler

    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    offered = next(a.choices for a in generate._actions if a.dest == "scheduler")
    assert "pndm" in offered and "euler_a" in offered
    for name in offered:
        assert make_scheduler(name, PNDMScheduler().config).config["num_train_timesteps"] == 1000
