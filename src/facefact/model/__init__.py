"""FACT's model: TransFace encoder, Perceiver resampler, block adapters, checkpoints."""
from facefact.model.adapter import FACTAttnProcessor
from facefact.model.encoder import EncoderConfig, TransFaceEncoder
from facefact.model.face_adapter import FaceAdapter, check_sd15_layout, cross_attention_blocks, refuse_sdxl
from facefact.model.resampler import Resampler, ResamplerConfig

__all__ = ["EncoderConfig", "TransFaceEncoder", "Resampler", "ResamplerConfig", "FaceAdapter",
           "FACTAttnProcessor", "cross_attention_blocks", "check_sd15_layout", "refuse_sdxl"]
