"""The Template tab starts from the loaded model's crop and steps: the release's 512 px / 50 steps for
SD1.5-sized models; the tiny models' own 128 px and 10 steps, said on the tab (at 512 / 50 a tiny-model
job took 10-11 minutes on 2 cores)."""
from __future__ import annotations

import pytest

gr = pytest.importorskip("gradio")

from facefact.serving.ui_template import _knob_inputs, knob_defaults  # noqa: E402
from facefact.template.settings import TemplateSettings  # noqa: E402


def _values(model_size: int) -> dict:
    with gr.Blocks():
        knobs = _knob_inputs(model_size)
    return {knob.elem_id: knob.value for knob in knobs if knob.elem_id in ("t_steps", "t_crop")}


def test_sd15_sized_models_start_from_the_release_values():
    release = TemplateSettings().for_family("sd15")
    assert _values(512) == {"t_steps": release.steps, "t_crop": release.crop_size} == {"t_steps": 50, "t_crop": 512}
    assert knob_defaults(512)["note"] == ""
    sdxl = TemplateSettings().for_family("sdxl")  # an SDXL model works at its own 1024 px
    assert _values(1024) == {"t_steps": sdxl.steps, "t_crop": sdxl.crop_size} == {"t_steps": 50, "t_crop": 1024}


def test_tiny_models_start_small_and_the_tab_says_why():
    assert _values(128) == {"t_steps": 10, "t_crop": 128}
    note = knob_defaults(128)["note"]
    assert "128 px" in note and "10 steps" in note and "512 px and 50 steps" in note
