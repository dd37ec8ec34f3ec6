"""The documented multi-process recipe, run as documented: `accelerate launch` starts two processes
(gloo DDP on CPU), they train, stop, resume and finish, and compute exactly what one process with
the doubled batch computes: each process drew its own half of every global batch (the same half
twice would train on other samples than the single run), gradients and logged losses are averaged
across processes, and only the main process writes."""
from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest

from facefact.model import FaceAdapter
from facefact.model.checkpoints import read_safetensors
from facefact.training import TrainConfig, train

SETTINGS = dict(max_steps=3, resolution=64, seed=4, learning_rate=1e-3, face_drop_prob=0.3, checkpoint_every=2)
HANG_GUARD_S = 600  # only an upper bound on a hang; two tiny-model processes take seconds


def _free_port() -> int:
    with socket.socket() as sock:  # not accelerate's default 29500: another run on this box may hold it
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(prepared, out, tmp_path, *extra: str, program=("-m", "facefact.cli.main"),
            succeeds=True) -> subprocess.CompletedProcess:
    # `--multi_gpu` is accelerate's torchrun launcher; with no GPU the processes train on the CPU over
    # gloo (`--cpu` would start a single process: several CPU processes need MPI there).
    accelerate = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                  "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *accelerate, *program, "train",
           "--data", str(prepared), "--output-dir", str(out), "--batch-size", "1", "--no-progress",
           "--model", "tiny", *flags, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}  # no user accelerate config
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=tmp_path, env=env)
    assert (done.returncode == 0) == succeeds, done.stderr[-3000:]
    return done


def _logged_losses(out) -> list[tuple[int, float]]:
    with open(out / "log.csv", newline="") as handle:
        return [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(handle)]


@pytest.mark.slow  # two `accelerate launch` runs of two processes each: ~1 min on a busy 2-core box
def test_accelerate_launch_two_processes_stop_resume_and_match_one_process(tmp_path, prepared):
    out = tmp_path / "ddp"
    first = _launch(prepared, out, tmp_path, "--stop-after-steps=2")
    assert first.stdout.count("stopped at step 2") == 1, first.stdout  # one process speaks
    assert first.stderr.count("random-weight 'tiny' models") == 1, first.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002"]
    second = _launch(prepared, out, tmp_path, "--resume=latest")
    assert second.stdout.count("trained adapter:") == 1, second.stdout
    assert second.stderr.count("resuming from") == 1, second.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000003"]
    assert sorted(p.name for p in out.iterdir()) == ["adapter.safetensors", "checkpoints", "log.csv"]
    FaceAdapter.from_checkpoint(out / "adapter.safetensors")  # loads as generation loads it

    single = train(TrainConfig(data=str(prepared), output_dir=str(tmp_path / "one"), batch_size=2, progress=False,
                               base_model="tiny", encoder="tiny", **SETTINGS))
    a, b = read_safetensors(out / "adapter.safetensors")[0], read_safetensors(single.adapter_path)[0]
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    assert any((a[k] != 0).any() for k in a if k.endswith("alpha_attn"))  # it did train
    logged = _logged_losses(out)  # one row per step across both runs, the loss of the global batch
    assert [step for step, _ in logged] == [1, 2, 3]
    for (_, loss), row in zip(logged, single.history):
        assert loss == pytest.approx(row["loss"], rel=1e-4, abs=1e-7)


NAN_ON_RANK_1 = """
import os, sys
import torch.nn.functional as F
from facefact.cli.main import main

if os.environ.get("RANK") == "1":  # this process's loss turns NaN from its second step; the other's stays finite
    real_mse, calls = F.mse_loss, []

    def mse_then_nan(prediction, target):
        calls.append(1)
        loss = real_mse(prediction, target)
        return loss * float("nan") if len(calls) >= 2 else loss
    F.mse_loss = mse_then_nan
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # one `accelerate launch` run of two processes
def test_a_nan_loss_on_one_process_stops_every_process(tmp_path, prepared):
    """Both processes stop at the diverged step with facefact's one-line error (the finite one told
    why), nothing of it saved. Before, the finite process went on into DDP's gradient all-reduce: on
    gloo it died there with a raw "Connection closed by peer" traceback (NCCL waits out its timeout)."""
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1)
    out = tmp_path / "ddp"
    done = _launch(prepared, out, tmp_path, "--checkpoint-every=1", program=(str(script),), succeeds=False)
    assert "the loss is nan" in done.stderr and "the loss of another training process is not finite" in done.stderr
    assert done.stderr.count("training diverged at step 2") == 2, done.stderr[-3000:]
    assert "[rank0]: Traceback" not in done.stderr and "[rank1]: Traceback" not in done.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000001"]
    assert not (out / "adapter.safetensors").exists()
