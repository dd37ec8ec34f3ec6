"""Ctrl-C / SIGTERM during `facefact train` saves the last finished step and says how to resume; the
resumed run says where it continues; a run names its models (tiny is an explicit, announced choice);
every setting has a help text; the curriculum default follows the recipe."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facefact.cli.main import build_parser, main
from facefact.training.config import FIELD_HELP, TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def _log_steps(out: Path) -> int:
    log = out / "log.csv"
    return max(0, len(log.read_text().splitlines()) - 1) if log.is_file() else 0


def _ignore_sigint():  # what a shell does to `nohup facefact train ... &`
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("signum, started_ignoring_sigint", [(signal.SIGINT, False), (signal.SIGTERM, False),
                                                             (signal.SIGINT, True)])
def test_a_signal_saves_a_checkpoint_and_the_resumed_run_says_from_where(tmp_path, prepared, signum,
                                                                        started_ignoring_sigint, capsys):
    out = tmp_path / "run"
    common = ["--data", str(prepared), "--model", "tiny", "--resolution", "64", "--no-progress", "--seed", "1",
              "--output-dir", str(out)]
    cmd = [sys.executable, "-m", "facefact.cli.main", "train", *common, "--max-steps", "10000",
           "--checkpoint-every", "10000", "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_ignore_sigint if started_ignoring_sigint else None)
    deadline = time.time() + 180
    while time.time() < deadline and _log_steps(out) < 2 and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "random-weight 'tiny' models" in err  # the run said what it trains on
    found = re.search(r"interrupted at step (\d+) of 10000; checkpoint saved: (\S+)\n  resume: add --resume latest",
                      err)
    assert found, err[-2000:]
    step, checkpoint = int(found.group(1)), Path(found.group(2))
    assert step >= 2 and checkpoint == out / "checkpoints" / f"step-{step:08d}"
    assert (checkpoint / "adapter.safetensors").is_file() and (checkpoint / "training_state.pt").is_file()
    assert not (out / "adapter.safetensors").exists()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # no half-written folder

    capsys.readouterr()
    assert main(["train", *common, "--max-steps", str(step + 1), "--resume", "latest"]) == 0
    captured = capsys.readouterr()
    assert f"resuming from {checkpoint} at step {step} of {step + 1}" in captured.err
    assert f"trained adapter: {out / 'adapter.safetensors'} (step {step + 1})" in captured.out


def test_real_runs_need_both_models_and_tiny_is_explicit(tmp_path, prepared, capsys):
    assert main(["train", "--data", str(prepared), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no base model or face encoder given" in err and "--base-model" in err and "'tiny'" in err
    assert main(["train", "--data", str(prepared), "--base-model", "sd15/"]) == 2  # the encoder is missing
    assert main(["train", "--data", str(prepared), "--model", "tiny", "--base-model", "sd15/"]) == 2
    assert "drop --base-model" in capsys.readouterr().err
    with pytest.raises(Exception, match="no base model"):
        TrainConfig(data=str(prepared)).check()


def _train_parser():
    return build_parser()._subparsers._group_actions[0].choices["train"]


def test_every_train_flag_has_a_help_text():
    assert set(FIELD_HELP) == {f for f in TrainConfig.__dataclass_fields__}
    actions = [a for a in _train_parser()._actions if a.option_strings and a.dest != "help"]
    assert len(actions) >= len(FIELD_HELP) + 3  # + --config, --model, --threads
    for action in actions:
        assert action.help and len(action.help) > 10, action.option_strings
    text = _train_parser().format_help()
    assert "(default: None)" not in text and "(required) (required)" not in text
    assert "--data DATA" in text and "--max-steps N" in text


def test_the_default_curriculum_follows_the_recipe():
    assert TrainConfig(max_steps=290_000).ramp_steps == 20_000      # examples/train_config.yaml
    assert TrainConfig(max_steps=1000).ramp_steps == 69             # the same share of a shorter run
    assert TrainConfig(max_steps=1000, shuffle_ramp_steps=0).ramp_steps == 0  # explicit: as given
    from facefact.training.config import load_config

    example = load_config(ROOT / "examples" / "train_config.yaml")
    assert example.ramp_steps == 20_000 and example.max_steps == 290_000
