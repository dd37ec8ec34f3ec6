"""FACT's model: TransFace encoder, Perceiver resampler, block fusers, checkpoints."""
from facefact.model.adapter import FACTFuser, FaceTokenPassthrough
from facefact.model.encoder import EncoderConfig, TransFaceEncoder
from facefact.model.face_adapter import (FaceAdapter, check_sd15_layout, cross_attention_blocks, refuse_sdxl,
                                         scales_per_block)
from facefact.model.resampler import Resampler, ResamplerConfig

__all__ = ["EncoderConfig", "TransFaceEncoder", "Resampler", "ResamplerConfig", "FaceAdapter", "FACTFuser",
           "FaceTokenPassthrough", "cross_attention_blocks", "check_sd15_layout", "refuse_sdxl", "scales_per_block"]
