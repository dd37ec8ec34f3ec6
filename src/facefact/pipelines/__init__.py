"""Generation pipelines: FACT on diffusers' SD1.5 and SDXL pipelines (see `classes`), their output and provenance.

Public names load on first use (facefact.lazy): light modules of this package (``registry``,
``settings``, ``scheduler_names``, ``metadata``) must import without torch and diffusers, so the CLI's parsers
stay fast (tests/cli/test_cli_imports.py).
"""
from facefact.lazy import lazy_exports

_CLASSES = "facefact.pipelines.classes"
_EXPORTS = {
    **dict.fromkeys(["FACTStableDiffusionPipeline", "FACTStableDiffusionImg2ImgPipeline",
                     "FACTStableDiffusionInpaintPipeline", "FACTStableDiffusionControlNetPipeline",
                     "FACTStableDiffusionControlNetImg2ImgPipeline", "FACTStableDiffusionControlNetInpaintPipeline",
                     "FACT_PIPELINES", "FACTStableDiffusionXLPipeline", "FACTStableDiffusionXLImg2ImgPipeline",
                     "FACTStableDiffusionXLInpaintPipeline", "FACTStableDiffusionXLControlNetPipeline",
                     "FACTStableDiffusionXLControlNetImg2ImgPipeline", "FACTStableDiffusionXLControlNetInpaintPipeline",
                     "FACT_XL_PIPELINES"], _CLASSES),
    "FaceTokens": "facefact.pipelines.face_tokens",
    "FACTPipelineOutput": "facefact.pipelines.output",
    "GenerationSettings": "facefact.pipelines.settings",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
