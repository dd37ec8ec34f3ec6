"""Generation pipelines: reference photos + prompt -> portraits.

Public names load on first use: light modules of this package (``registry``, ``scheduler_names``,
``metadata``) must import without torch and diffusers, so the CLI's parsers stay fast.
"""
from facefact.lazy import lazy_exports

_EXPORTS = {"FaceFactPipeline": "facefact.pipelines.fact", "FaceFactOutput": "facefact.pipelines.fact"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
