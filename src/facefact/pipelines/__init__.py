"""Generation pipelines: FACT on diffusers' SD1.5 pipelines (see `classes`), their output and provenance."""
from facefact.pipelines.classes import (FACT_PIPELINES, FACTStableDiffusionControlNetImg2ImgPipeline,
                                        FACTStableDiffusionControlNetInpaintPipeline,
                                        FACTStableDiffusionControlNetPipeline, FACTStableDiffusionImg2ImgPipeline,
                                        FACTStableDiffusionInpaintPipeline, FACTStableDiffusionPipeline)
from facefact.pipelines.face_tokens import FaceTokens
from facefact.pipelines.output import FACTPipelineOutput

__all__ = ["FACTStableDiffusionPipeline", "FACTStableDiffusionImg2ImgPipeline", "FACTStableDiffusionInpaintPipeline",
           "FACTStableDiffusionControlNetPipeline", "FACTStableDiffusionControlNetImg2ImgPipeline",
           "FACTStableDiffusionControlNetInpaintPipeline", "FACT_PIPELINES", "FACTPipelineOutput", "FaceTokens"]
