"""Face analysis for facefact: load photos, detect faces with 5 landmarks, measure quality, align to
the ArcFace template, build face/head masks, and compare identities - offline, with bundled models.

Entry point: :class:`FaceAnalysis` (``FaceAnalysis().get(photo)``). See docs/faces.md.
"""
from facefact.faces.align import ARCFACE_TEMPLATE, similarity_transform
from facefact.faces.analysis import FaceAnalysis
from facefact.faces.backends import cosine_similarity
from facefact.faces.image_io import load_image
from facefact.faces.types import Face, FaceMasks, FaceQuality, FaceWarning, QualityThresholds

__all__ = [
    "ARCFACE_TEMPLATE", "Face", "FaceAnalysis", "FaceMasks", "FaceQuality", "FaceWarning",
    "QualityThresholds", "cosine_similarity", "load_image", "similarity_transform",
]
