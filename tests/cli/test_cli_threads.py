"""The CLI's thread policy: tiny models on a CPU run on one thread, `--threads N` overrides it, real
models keep torch's default, and the process's setting is put back after the command."""
from __future__ import annotations

import pytest
import torch

from facefact.cli.main import main
from facefact.cli.threads import thread_count


def test_policy():
    assert thread_count(None, tiny=True, on_cpu=True) == 1
    assert thread_count(None, tiny=False, on_cpu=True) is None      # torch's default
    assert thread_count(None, tiny=True, on_cpu=False) is None      # the GPU does the work
    assert thread_count(3, tiny=True, on_cpu=True) == 3
    assert thread_count(3, tiny=False, on_cpu=False) == 3


@pytest.mark.parametrize("command", [["generate", "--face", "x.jpg", "--prompt", "p"], ["train", "--data", "x"],
                                     ["evaluate", "--identities", "x"]])
@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_threads_must_be_a_positive_whole_number(command, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--threads", value])
    assert exit_info.value.code == 2 and "--threads" in capsys.readouterr().err


def _record_threads(monkeypatch, module, name, result):
    seen = []

    def fake(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return result
    monkeypatch.setattr(module, name, fake)
    return seen


@pytest.fixture
def many_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


@pytest.mark.parametrize("flags, expected", [([], 1), (["--threads", "2"], 2)])
def test_train_on_tiny_models_runs_on_one_thread_unless_told(monkeypatch, tmp_path, many_threads, flags, expected):
    import facefact.training.trainer as trainer

    monkeypatch.setattr("facefact.cli.threads.runs_on_cpu", lambda device: True)
    seen = _record_threads(monkeypatch, trainer, "train", trainer.TrainResult(tmp_path, tmp_path / "a", None, 1))
    assert main(["train", "--data", str(tmp_path), "--model", "tiny", "--no-progress", *flags]) == 0
    assert seen == [expected] and torch.get_num_threads() == many_threads


def test_train_on_real_models_keeps_torch_default(monkeypatch, tmp_path, many_threads):
    import facefact.training.trainer as trainer

    monkeypatch.setattr("facefact.cli.threads.runs_on_cpu", lambda device: True)
    seen = _record_threads(monkeypatch, trainer, "train", trainer.TrainResult(tmp_path, tmp_path / "a", None, 1))
    assert main(["train", "--data", str(tmp_path), "--base-model", "sd15/", "--encoder", "e.pt"]) == 0
    assert seen == [many_threads]


def test_evaluate_on_tiny_models_runs_on_one_thread(monkeypatch, tmp_path, many_threads):
    import facefact.evaluation as evaluation
    from facefact.evaluation.results import EvalResults

    monkeypatch.setattr("facefact.cli.threads.runs_on_cpu", lambda device: True)
    results = EvalResults(config={"embedders": ["sface"]}, rows=[], groups=[], aggregate=[])
    seen = _record_threads(monkeypatch, evaluation, "evaluate", results)
    assert main(["evaluate", "--identities", str(tmp_path), "--model", "tiny", "--out", str(tmp_path / "r")]) == 0
    assert seen == [1] and torch.get_num_threads() == many_threads
