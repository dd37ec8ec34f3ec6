"""A loss that turns NaN stops training before the broken step is saved (issue 13)."""
from __future__ import annotations

import pytest
import torch

from facefact.errors import ConfigError
from facefact.training import TrainConfig, train
from facefact.training import checkpointing


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, prepared, monkeypatch):
    import facefact.training.trainer as trainer

    real_mse = trainer.F.mse_loss
    calls = []

    def mse_then_nan(prediction, target):  # the second optimizer step diverges
        calls.append(1)
        loss = real_mse(prediction, target)
        return loss * float("nan") if len(calls) >= 2 else loss

    monkeypatch.setattr(trainer.F, "mse_loss", mse_then_nan)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="diverged at step 2") as info:
        train(TrainConfig(data=str(prepared), base_model="tiny", encoder="tiny", output_dir=str(out), max_steps=3,
                          checkpoint_every=1, resolution=64, progress=False))
    kept = checkpointing.list_checkpoints(out)
    assert [p.name for p in kept] == [kept[0].name] and str(kept[0]) in str(info.value)
    assert not (out / "adapter.safetensors").exists()
    adapter, _ = checkpointing.load_checkpoint(kept[0])
    assert all(bool(torch.isfinite(t).all()) for t in adapter.state_dict().values())


def test_a_batch_larger_than_the_set_is_refused(tmp_path, prepared):
    with pytest.raises(ConfigError, match="larger than the training set"):
        train(TrainConfig(data=str(prepared), base_model="tiny", encoder="tiny", output_dir=str(tmp_path / "run"),
                          max_steps=1, batch_size=4096, resolution=64, progress=False))
