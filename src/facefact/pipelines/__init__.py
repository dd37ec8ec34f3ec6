"""Generation pipelines: reference photos + prompt -> portraits."""
from facefact.pipelines.fact import FaceFactOutput, FaceFactPipeline

__all__ = ["FaceFactPipeline", "FaceFactOutput"]
