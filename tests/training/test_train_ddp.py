"""Two processes (torchrun, gloo DDP through accelerate) train and checkpoint, and compute exactly what
one process with the doubled batch computes: gradients are averaged across processes."""
from __future__ import annotations

import os
import subprocess
import sys


from facefact.model import FaceAdapter
from facefact.model.checkpoints import read_safetensors
from facefact.training import TrainConfig, train


def test_two_processes_train_checkpoint_and_match_one_process(tmp_path, prepared):
    settings = dict(max_steps=3, resolution=64, seed=4, learning_rate=1e-3, face_drop_prob=0.3, checkpoint_every=2)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    out = tmp_path / "ddp"
    # torchrun, because `accelerate launch --cpu` starts a single process unless MPI is set up;
    # on GPUs `accelerate launch --multi_gpu` runs the same command.
    # --standalone: torchrun picks a free port (not 29500, which another test run on this machine may hold)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "facefact.cli.main", "train",
           "--data", str(prepared), "--output-dir", str(out), "--batch-size", "1", "--no-progress", "--model", "tiny", *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000003"]
    FaceAdapter.from_checkpoint(out / "adapter.safetensors")  # loads as generation loads it

    single = train(TrainConfig(data=str(prepared), output_dir=str(tmp_path / "one"), batch_size=2, progress=False,
                               base_model="tiny", encoder="tiny", **settings))
    a, b = read_safetensors(out / "adapter.safetensors")[0], read_safetensors(single.adapter_path)[0]
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    assert any((a[k] != 0).any() for k in a if k.endswith("alpha_attn"))  # it did train
