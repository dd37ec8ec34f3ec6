"""FACT's model: TransFace encoder, Perceiver resampler, block fusers, checkpoints.

Names load on first use (facefact.lazy), so importing a light module of this package (such as
`facefact.model.fingerprint`) does not load diffusers."""
from facefact.lazy import lazy_exports

_EXPORTS = {
    "FACTFuser": "facefact.model.adapter", "FaceTokenPassthrough": "facefact.model.adapter",
    "EncoderConfig": "facefact.model.encoder", "TransFaceEncoder": "facefact.model.encoder",
    "FaceAdapter": "facefact.model.face_adapter", "check_sd15_layout": "facefact.model.face_adapter",
    "cross_attention_blocks": "facefact.model.layouts", "layout_blocks": "facefact.model.layouts",
    "unet_family": "facefact.model.layouts", "BLOCK_LAYOUTS": "facefact.model.layouts",
    "DEFAULT_LAYOUT": "facefact.model.layouts",
    "scales_per_block": "facefact.model.face_adapter",
    "Resampler": "facefact.model.resampler", "ResamplerConfig": "facefact.model.resampler",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
