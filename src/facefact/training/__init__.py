"""FACT training: `facefact prepare` (photos -> training set) and `facefact train` (decoupled training).

    from facefact.training import prepare_dataset, PrepareSettings, TrainConfig, train, load_config
    prepare_dataset("photos/", "trainset/", PrepareSettings(size=512), workers=8)
    result = train(TrainConfig(data="trainset/", base_model="sd15/", encoder="TransFace_S.pt"))

Names load on first use, so `facefact train --help` builds its parser from ``training.config``
without importing torch.
"""
from facefact.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["TrainConfig", "config_from_dict", "load_config"], "facefact.training.config"),
    "PrepareSettings": "facefact.training.prepare_settings",
    **dict.fromkeys(["list_photos", "prepare_dataset"], "facefact.training.prepare"),
    "shuffle_probability": "facefact.training.schedule",
    **dict.fromkeys(["TrainResult", "train"], "facefact.training.trainer"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
