"""TemplatePortrait end to end on tiny models: only the chosen faces change, nothing else does."""
from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from facefact.errors import ConfigError, NoFaceError
from facefact.template.portrait import TemplatePortrait
from template_checks import changed_pixels as _changed
from template_checks import reach as _reach


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("kind", ["controlnet2", "unet9", "plain"])
def test_only_the_face_changes(kind, family, inpaint_pipes, fast_settings, analysis, astronaut, grace_hopper):
    maker = TemplatePortrait(inpaint_pipes(kind, family), analysis=analysis, settings=fast_settings())
    out = maker(astronaut, grace_hopper, seed=5)
    result = np.asarray(out.images[0])
    assert result.shape == astronaut.shape
    changed = _changed(result, astronaut)
    plan = out.plans[0]
    assert not changed[~_reach(plan, astronaut.shape, 6)].any()  # every pixel outside: the template's
    face = np.zeros_like(changed)
    x1, y1, x2, y2 = (int(v) for v in plan.target.bbox)
    face[y1:y2, x1:x2] = True
    assert changed[face].mean() > 0.5  # the face itself was redrawn
    assert ("no ControlNet" in " ".join(out.notes)) == (kind != "controlnet2")


def test_other_face_untouched_and_two_identities_in_one_call(inpaint_pipes, fast_settings, analysis, group,
                                                              astronaut, grace_hopper):
    maker = TemplatePortrait(inpaint_pipes("controlnet2"), analysis=analysis, settings=fast_settings(refine=False))
    faces = maker.faces(group)
    one = maker(group, {1: grace_hopper}, seed=2)
    changed = _changed(one.images[0], group)
    x1, y1, x2, y2 = (int(np.floor(v)) for v in faces[1].bbox)
    assert not changed[y1:y2 + 1, x1:x2 + 1].any()  # face 2 is exactly the template's
    both = maker(group, {1: grace_hopper, 2: astronaut}, seed=2)
    changed2 = _changed(both.images[0], group)
    reach = _reach(both.plans[0], group.shape, 6) | _reach(both.plans[1], group.shape, 6)
    assert not changed2[~reach].any()
    for face in faces:
        fx1, fy1, fx2, fy2 = (int(v) for v in face.bbox)
        assert changed2[fy1:fy2, fx1:fx2].mean() > 0.5
    assert [f["number"] for f in both.metadata[0]["redrawn_faces"]] == [1, 2]
    # face 1 alone is the same seed's face 1 as in the two-person call: each target is its own job
    ax1, ay1, ax2, ay2 = (int(v) for v in faces[0].bbox)
    assert np.array_equal(np.asarray(one.images[0])[ay1:ay2, ax1:ax2], np.asarray(both.images[0])[ay1:ay2, ax1:ax2])


def test_same_seed_same_pixels(inpaint_pipes, fast_settings, analysis, astronaut, grace_hopper):
    maker = TemplatePortrait(inpaint_pipes("plain"), analysis=analysis, settings=fast_settings(refine=False))
    a = maker(astronaut, grace_hopper, seed=11, num_images=2)
    b = maker(astronaut, grace_hopper, seed=12)
    assert [m["seed"] for m in a.metadata] == [11, 12]
    assert np.array_equal(np.asarray(a.images[1]), np.asarray(b.images[0]))
    assert not np.array_equal(np.asarray(a.images[0]), np.asarray(a.images[1]))


def test_provenance_names_no_photo(inpaint_pipes, fast_settings, analysis, grace_hopper_path, astronaut, tmp_path):
    from facefact.pipelines.metadata import read_png_metadata, write_png

    maker = TemplatePortrait(inpaint_pipes("controlnet2"), analysis=analysis, settings=fast_settings(refine=False))
    template = tmp_path / "jane_doe_wedding.png"
    Image.fromarray(astronaut).save(template)
    out = maker(template, grace_hopper_path, seed=1)
    meta = read_png_metadata(write_png(out.images[0], tmp_path / "out.png", out.metadata[0]))
    saved = out.save(tmp_path / "saved")
    assert [p.name for p in saved] == ["template_1.png"] and read_png_metadata(saved[0])["seed"] == 1
    assert meta["ai_generated"] is True and meta["seed"] == 1
    assert meta["template"]["sha256"] == hashlib.sha256(template.read_bytes()).hexdigest()
    assert meta["redrawn_faces"][0]["number"] == 1 and meta["redrawn_faces"][0]["reference_photos"] == 1
    assert [c["map"] for c in meta["controls"]] == ["face_pose", "canny"]
    assert meta["template_settings"]["strength"] == 0.6 and meta["fact_scale"] == 0.55
    text = json.dumps(meta)
    assert "jane_doe" not in text and "grace_hopper" not in text


def test_bad_inputs(inpaint_pipes, fast_settings, analysis, astronaut, grace_hopper, tmp_path):
    from facefact.pipelines import FACTStableDiffusionInpaintPipeline, FACTStableDiffusionPipeline

    text_to_image = FACTStableDiffusionPipeline.tiny(face_analysis=analysis)
    with pytest.raises(ConfigError, match="cannot inpaint"):
        TemplatePortrait(text_to_image, analysis=analysis)
    without_fact = FACTStableDiffusionInpaintPipeline(**{k: v for k, v in text_to_image.components.items()
                                                          if k != "image_encoder"}, requires_safety_checker=False)
    text_to_image.unload_fact_adapter()
    with pytest.raises(ConfigError, match="no FACT adapter"):
        TemplatePortrait(without_fact, analysis=analysis)
    cn2 = inpaint_pipes("controlnet2")
    with pytest.raises(ConfigError, match="2 ControlNets but 1 controls"):
        TemplatePortrait(cn2, analysis=analysis, settings=fast_settings(controls=("canny",), control_scales=(1.0,),
                                                                         refine_control_scales=(1.0,)))(astronaut, grace_hopper)
    maker = TemplatePortrait(cn2, analysis=analysis, settings=fast_settings(refine=False))
    plain = tmp_path / "plain.png"
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(plain)
    with pytest.raises(NoFaceError, match="plain.png"):
        maker(astronaut, plain)
    with pytest.raises(NoFaceError, match="no face found in the template"):
        maker(plain, grace_hopper)
    with pytest.raises(ConfigError, match="the template has 1 face"):
        maker(astronaut, {2: grace_hopper})
    with pytest.raises(ConfigError, match="no step"):
        fast_settings(steps=5).validate()  # 5 x 0.1 < 1 refine step
    itself = maker(astronaut, astronaut, seed=0)
    assert any("is the template itself" in n for n in itself.notes)


def test_awkward_templates(inpaint_pipes, fast_settings, analysis, astronaut, grace_hopper, tmp_path):
    """CMYK, EXIF-rotated, large, transparent and 16-bit templates: the output keeps the loaded template's every pixel
    outside the edit, at its full size and displayed orientation."""
    from facefact.faces import load_image

    maker = TemplatePortrait(inpaint_pipes("plain"), analysis=analysis, settings=fast_settings(refine=False))
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(astronaut).convert("CMYK").save(cmyk, quality=95)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; viewers turn it 90 degrees clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(astronaut, 1))).save(rotated, quality=95, exif=exif)
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    transparent = tmp_path / "transparent.png"
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:, :100, 3] = 0  # a transparent strip at the left: composited on white
    Image.fromarray(rgba).save(transparent)
    deep = tmp_path / "sixteen_bit.png"
    gray16 = (cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
    Image.fromarray(gray16).save(deep)  # 16-bit grayscale PNG (mode I;16)
    for source in (cmyk, rotated, big, transparent, deep):
        loaded = load_image(source) if not isinstance(source, np.ndarray) else source
        out = maker(source, grace_hopper, seed=0)
        result = np.asarray(out.images[0])
        assert result.shape == loaded.shape
        changed = _changed(result, loaded)
        assert changed.any() and not changed[~_reach(out.plans[0], loaded.shape, 6)].any()
