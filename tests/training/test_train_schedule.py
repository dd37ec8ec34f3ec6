"""Curriculum, face shuffle, face/text drop and data order: the pure decisions of a training step."""
from __future__ import annotations

import pytest
import torch

from facefact.errors import ConfigError, DatasetError
from facefact.training.config import TrainConfig, config_from_dict, load_config
from facefact.training.data import FaceTrainingSet, MicroBatchSampler, SampleKey
from facefact.training.schedule import choose_condition, generator_for, micro_batch_indices, shuffle_probability


def test_curriculum_ramps_linearly_then_holds():
    values = [shuffle_probability(step, 0.2, 0.8, ramp_steps=6) for step in range(10)]
    assert values[0] == pytest.approx(0.2)
    assert values[3] == pytest.approx(0.5)
    assert values[6:] == pytest.approx([0.8] * 4)
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert shuffle_probability(0, 0.2, 0.8, ramp_steps=0) == 0.8  # no ramp: the end value from the start


def test_dataset_reports_the_configured_curriculum(prepared):
    data = FaceTrainingSet(prepared, gradient_accumulation_steps=2, shuffle_prob_start=0.0, shuffle_prob_end=1.0,
                           shuffle_ramp_steps=4)
    # micro-steps 0,1 are optimizer step 0; 8 and later are past the ramp
    assert [data.shuffle_probability(m) for m in (0, 1, 2, 4, 8, 20)] == pytest.approx([0, 0, 0.25, 0.5, 1, 1])


def test_shuffle_never_pairs_an_image_with_itself(prepared):
    data = FaceTrainingSet(prepared, shuffle_prob_start=1.0, shuffle_prob_end=1.0, face_drop_prob=0.0)
    for micro_step in range(40):
        for index in range(len(data)):
            choice = data.decide(SampleKey(index, micro_step, 0, 0))
            partner = data.samples[choice["condition_index"]]
            assert choice["condition_index"] != index
            assert partner["identity"] == data.samples[index]["identity"]
    item = data[SampleKey(0, 3, 0, 0)]
    assert item["condition_index"] != 0 and item["condition"].shape == (3, 112, 112)


def test_shuffle_probability_zero_keeps_own_photo_and_lone_identities_are_kept():
    generator = generator_for(0, 1)
    assert all(choose_condition(2, [2, 5, 7], 0.0, generator) == 2 for _ in range(20))
    assert all(choose_condition(4, [4], 1.0, generator) == 4 for _ in range(20))  # nobody else to pick


def test_shuffle_draws_every_other_photo_evenly():
    generator = generator_for(0, 2)
    picks = [choose_condition(0, [0, 1, 2, 3], 1.0, generator) for _ in range(600)]
    assert set(picks) == {1, 2, 3} and min(picks.count(i) for i in (1, 2, 3)) > 150


def test_face_and_text_drop_rates(prepared):
    data = FaceTrainingSet(prepared, face_drop_prob=0.1, text_drop_prob=0.3, shuffle_prob_end=0.0)
    choices = [data.decide(SampleKey(i % len(data), m, 0, 0)) for m in range(500) for i in range(2)]
    assert 0.06 < sum(c["drop_face"] for c in choices) / len(choices) < 0.14
    assert 0.25 < sum(c["drop_text"] for c in choices) / len(choices) < 0.35
    dropped = next(SampleKey(0, m, 0, 0) for m in range(500) if data.decide(SampleKey(0, m, 0, 0))["drop_text"])
    assert data[dropped]["caption"] == ""


def test_dropped_face_is_exactly_the_null_face():
    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines.tiny import tiny_unet
    from facefact.training.models import encode_conditions

    encoder, adapter = tiny_encoder(), tiny_face_adapter(tiny_unet())
    condition = torch.rand(3, 3, 112, 112) * 2 - 1
    tokens = encode_conditions(encoder, condition, torch.tensor([False, True, False]))
    faces = adapter.resampler(tokens)
    null = adapter.null_face_tokens(1)[0]
    assert torch.equal(faces[1], null)
    assert not torch.allclose(faces[0], null) and not torch.allclose(faces[2], null)


def test_data_order_is_a_function_of_step_and_covers_each_epoch():
    n, seen = 7, []
    for micro_step in range(7):  # 7 micro-steps x 2 processes x batch 1 = 2 epochs of 7
        for rank in range(2):
            seen += micro_batch_indices(micro_step, 1, n, seed=3, world_size=2, rank=rank)
    assert sorted(seen[:7]) == list(range(7)) and sorted(seen[7:]) == list(range(7))
    resumed = list(MicroBatchSampler(n, 2, seed=3, start=4, stop=6))
    full = list(MicroBatchSampler(n, 2, seed=3, start=0, stop=6))
    assert resumed == full[4:]


def test_identities_with_one_photo_are_refused_when_shuffle_is_on(tmp_path, prepared):
    import json
    import shutil

    from facefact.training.sample_index import written_entries

    rows = written_entries(prepared)
    lonely = tmp_path / "set"
    lonely.mkdir()
    keep = [r for r in rows if r["identity"] == "astronaut"] + [next(r for r in rows if r["identity"] == "hopper")]
    for r in keep:  # a set of its own: entries must stay inside it
        for key in ("image", "condition", "mask"):
            target = lonely / r[key]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(prepared / r[key], target)
    (lonely / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))  # an older facefact's index
    with pytest.raises(DatasetError, match="only one photo"):
        FaceTrainingSet(lonely, shuffle_prob_end=1.0)
    assert len(FaceTrainingSet(lonely, shuffle_prob_start=0.0, shuffle_prob_end=0.0)) == len(keep)


def test_empty_or_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        FaceTrainingSet(tmp_path / "nope")
    with pytest.raises(DatasetError, match="not a prepared training set"):
        FaceTrainingSet(tmp_path)
    (tmp_path / "index.jsonl").write_text("")
    with pytest.raises(DatasetError, match="empty"):
        FaceTrainingSet(tmp_path)


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("data: /x\nmax_steps: 7\nfair_weight: 0.05\ngradient_checkpointing: true\n"
                    "validation_prompts: [a, b]\n")
    config = load_config(path, {"max_steps": "9"})
    assert (config.max_steps, config.fair_weight, config.gradient_checkpointing) == (9, 0.05, True)
    assert config.validation_prompts == ("a", "b")
    with pytest.raises(ConfigError, match="unknown training settings"):
        config_from_dict({"learning_rat": 1})
    with pytest.raises(ConfigError, match="probability"):
        TrainConfig(data="x", base_model="tiny", encoder="tiny", face_drop_prob=1.5).check()
    with pytest.raises(ConfigError, match="no training data"):
        TrainConfig().check()


def test_no_dead_cache_or_shuffle_api():
    """Caches are the data set's business (FaceTrainingSet.use_caches); the sampler's copy set an
    attribute nothing read, and TrainConfig.uses_face_shuffle was never called (FaceTrainingSet
    decides whether face shuffle needs pairs). Neither should come back as a second source of truth."""
    assert hasattr(FaceTrainingSet, "use_caches")
    assert not hasattr(MicroBatchSampler, "use_caches")
    assert not hasattr(TrainConfig, "uses_face_shuffle")
