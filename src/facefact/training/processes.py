"""What the training processes of one `accelerate launch` decide together: the step's logged loss,
whether to stop, and that they start alike. One process in a plain run: each is then a no-op."""
from __future__ import annotations

import torch

from facefact.errors import ConfigError
from facefact.training.config import TrainConfig


def on_every_process(accelerator, holds: bool) -> bool:
    """Whether `holds` is true on every training process. A process that stopped alone would leave the
    others in DDP's gradient all-reduce (gloo: a raw connection error; NCCL: a wait until its timeout);
    deciding together makes them all stop with facefact's own error."""
    if accelerator.num_processes == 1:
        return holds
    flags = torch.tensor([1.0 if holds else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flags, reduction="sum").item() == accelerator.num_processes)


def mean_over_processes(accelerator, window: list[tuple[float, float]]) -> tuple[float, float]:
    """(MSE, FAIR) of one optimizer step: the mean over its micro-batches and over all processes, so
    log.csv and the progress bar show the loss of the global batch (what one process with the whole
    batch would log), not the main process's share. One small all-reduce per step."""
    local = torch.tensor([[m, f] for m, f in window], dtype=torch.float64).mean(dim=0)
    if accelerator.num_processes == 1:
        return float(local[0]), float(local[1])
    total = accelerator.reduce(local.to(accelerator.device), reduction="mean").cpu()
    return float(total[0]), float(total[1])


def check_processes_agree(accelerator, start_step: int, dataset, config: TrainConfig) -> None:
    """Every process starts at the same step on the same set. A node that cannot see the checkpoint
    (output_dir not shared) or holds another copy of the set would otherwise train out of step."""
    if accelerator.num_processes == 1:
        return
    from accelerate.utils import gather_object

    seen = gather_object([(start_step, len(dataset), dataset.samples.fingerprint())])
    if len(set(seen)) > 1:
        raise ConfigError(
            f"the {accelerator.num_processes} processes disagree on where training starts (step, samples, index) "
            f"per process: {seen}", path=config.output_dir,
            hint="put output_dir on a filesystem every node shares (resume reads the main process's "
                 "checkpoints), and give every node the same prepared set (a shared folder or an exact copy)")
