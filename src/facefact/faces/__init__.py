"""Face analysis for facefact: load photos, detect faces with 5 landmarks, measure quality, align to
the ArcFace template, build face/head masks, and compare identities - offline, with bundled models.

Entry point: :class:`FaceAnalysis` (``FaceAnalysis().get(photo)``). See docs/faces.md.
Names load on first use: ``facefact.faces.image_io`` (photo loading, no OpenCV) stays light.
"""
from facefact.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["ARCFACE_TEMPLATE", "similarity_transform"], "facefact.faces.align"),
    "FaceAnalysis": "facefact.faces.analysis",
    "cosine_similarity": "facefact.faces.backends",
    "load_image": "facefact.faces.image_io",
    **dict.fromkeys(["Face", "FaceMasks", "FaceQuality", "FaceWarning", "QualityThresholds"], "facefact.faces.types"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
