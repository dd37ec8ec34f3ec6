"""Noise from other libraries is dropped where facefact causes it, scoped to the call; real messages
still come through."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from facefact.logfilters import clip_truncation_notice, dropped_log_messages, empty_fp32_notice

ROOT = Path(__file__).resolve().parents[2]


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def diffusers_records():
    import diffusers  # noqa: F401  (sets up diffusers' own logger and handler)

    handler, logger = Records(), logging.getLogger("diffusers")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_the_empty_fp32_notice_is_dropped_only_inside_the_block(diffusers_records):
    from facefact.pipelines.tiny import tiny_unet

    unet = tiny_unet()
    unet.to("cpu", dtype=torch.float32)
    assert any("kept in float32: []" in m for m in diffusers_records), "diffusers no longer says it: drop the filter"
    diffusers_records.clear()
    with dropped_log_messages("diffusers.models.modeling_utils", empty_fp32_notice):
        unet.to("cpu", dtype=torch.float32)
        logging.getLogger("diffusers.models.modeling_utils").warning("unexpected LoRA keys: ['x']")
    assert diffusers_records == ["unexpected LoRA keys: ['x']"]  # a real warning still reaches the user
    unet.to("cpu", dtype=torch.float32)
    assert any("kept in float32: []" in m for m in diffusers_records)  # the filter is gone again


def test_generate_reports_a_cut_prompt_once(diffusers_records, capsys, tmp_path):
    from facefact.cli.main import main

    prompt = " ".join(["a very long prompt about a garden"] * 20)
    code = main(["generate", "--model", "tiny", "--face", str(ROOT / "examples" / "astronaut.jpg"), "--prompt", prompt,
                 "--steps", "1", "--size", "64", "--seed", "1", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("this part was cut") == 1
    assert not [m for m in diffusers_records if "truncated because CLIP" in m]


def test_clip_notice_predicate_matches_only_that_message():
    def record(text):
        return logging.LogRecord("diffusers", logging.WARNING, "", 0, text, None, None)

    assert clip_truncation_notice(record("The following part of your input was truncated because CLIP can only "
                                         "handle sequences up to 77 tokens: ['x']"))
    assert not clip_truncation_notice(record("No LoRA keys associated to CLIPTextModel found"))
    assert not empty_fp32_notice(record("There are modules in UNet that should be kept in float32: ['norm']."))


def test_dataloader_workers_are_capped_at_the_cores(monkeypatch, caplog):
    import os

    from facefact.training.trainer import worker_count

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    with caplog.at_level(logging.WARNING, logger="facefact.training"):
        assert worker_count(8) == 2
    assert "num_workers 8 is more than the 2 CPU cores" in caplog.text
    caplog.clear()
    assert worker_count(2) == 2 and worker_count(0) == 0 and not caplog.text


def test_the_python_api_imports_without_the_torchvision_notice():
    """The README's `from facefact.pipelines import FACTStableDiffusionPipeline` printed two lines about
    torchvision (which facefact never installs); a plain `import diffusers` pipeline import still does
    (so the filter is not hiding a notice that is gone), and no filter is left behind."""
    import importlib.util
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    env.pop("TRANSFORMERS_VERBOSITY", None)

    def stderr_of(code: str) -> str:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr

    ours = stderr_of("import logging\nfrom facefact.pipelines import FACTStableDiffusionPipeline\n"
                     "FACTStableDiffusionPipeline.__name__\n"
                     "assert not logging.getLogger('transformers').filters\n"
                     "assert not any(h.filters for h in logging.getLogger('transformers').handlers)")
    assert "requires torchvision" not in ours, ours
    if importlib.util.find_spec("torchvision") is None:
        assert "requires torchvision" in stderr_of("from diffusers import StableDiffusionPipeline")


def test_native_stderr_noise_is_dropped_and_everything_else_still_arrives(capfd):
    import os
    import sys

    from facefact.logfilters import MEDIAPIPE_NOISE, native_stderr_without

    with native_stderr_without(MEDIAPIPE_NOISE):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                    b"W0000 00:00:1796662864.429219    9930 inference_feedback_manager.cc:114] Feedback manager\n"
                    b"E0000 00:00:1796662864.429219    9930 calculator_graph.cc:12] a real failure\n")
        print("python's own stderr", file=sys.stderr)
    os.write(2, b"after the block\n")
    lines = capfd.readouterr().err.splitlines()
    assert sorted(lines) == sorted(["E0000 00:00:1796662864.429219    9930 calculator_graph.cc:12] a real failure",
                                    "python's own stderr", "after the block"]), lines
    assert lines[-1] == "after the block"  # fd 2 is stderr again after the block


def test_a_body_pose_prints_nothing_of_mediapipes_own(tmp_path):
    """In a fresh process, where MediaPipe writes its start-up lines (4 of them, straight to fd 2)."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("mediapipe", reason="the mediapipe extra is not installed")
    root = Path(__file__).resolve().parents[2]
    code = (f"from facefact.faces.pose import body_pose; body_pose({str(root / 'examples' / 'astronaut.jpg')!r}); "
            "print('done')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(root / "src")})
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
    assert done.stderr == "", done.stderr
