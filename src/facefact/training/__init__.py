"""FACT training: `facefact prepare` (photos -> training set) and `facefact train` (decoupled training).

    from facefact.training import prepare_dataset, PrepareSettings, TrainConfig, train, load_config
    prepare_dataset("photos/", "trainset/", PrepareSettings(size=512), workers=8)
    result = train(TrainConfig(data="trainset/", base_model="sd15/", encoder="TransFace_S.pt"))
"""
from facefact.training.config import TrainConfig, config_from_dict, load_config
from facefact.training.prepare import PrepareSettings, list_photos, prepare_dataset
from facefact.training.schedule import shuffle_probability
from facefact.training.trainer import TrainResult, train

__all__ = ["PrepareSettings", "TrainConfig", "TrainResult", "config_from_dict", "list_photos", "load_config",
           "prepare_dataset", "shuffle_probability", "train"]
