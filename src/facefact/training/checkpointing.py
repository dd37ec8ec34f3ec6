"""Training checkpoints: one folder per step, written atomically, the last K kept.

    output_dir/checkpoints/step-00000500/
        adapter.safetensors   the trained adapter (facefact format: `facefact generate --adapter` reads it)
        training_state.pt     optimizer, LR schedule, grad scaler, RNG, step; tensors and plain
                              containers only, so `torch.load(weights_only=True)` reads it
        config.json           the settings of the run (for people; resume uses the current ones)

The folder is written under a temporary name and renamed when complete, so a kill at any moment
leaves either the previous checkpoints or a complete new one. The data position needs no saving:
the data order and all random choices are functions of (seed, step) (see schedule.py).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from facefact.errors import CheckpointError
from facefact.model import FaceAdapter
from facefact.model.checkpoints import atomic_save_torch, save_adapter

STEP_DIR = re.compile(r"^step-(\d+)$")
ADAPTER_FILE = "adapter.safetensors"
STATE_FILE = "training_state.pt"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """'latest' -> the newest checkpoint of output_dir (None if there is none yet), else the folder given."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file() or not (path / ADAPTER_FILE).is_file():
        raise CheckpointError(f"{path} is not a facefact training checkpoint (needs {ADAPTER_FILE} and {STATE_FILE})",
                              path=path, hint="pass a folder such as OUTPUT/checkpoints/step-00000500, or 'latest'")
    return path


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: str | Path, step: int, adapter: FaceAdapter, optimizer, lr_scheduler, scaler,
                    config: dict, keep: int, metadata: dict | None = None) -> Path:
    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_adapter(adapter, staging / ADAPTER_FILE, extra_metadata={"training_step": step, **(metadata or {})})
        state = {"step": step, "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                 "scaler": scaler.state_dict() if scaler is not None else {}, "rng": rng_state()}
        atomic_save_torch(state, staging / STATE_FILE)  # a full disk: an OSError naming the file
        (staging / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
        if final.exists():  # the same step saved again (e.g. a re-run): replace it
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> tuple[FaceAdapter, dict]:
    """(the saved adapter, the training state) of a checkpoint folder."""
    try:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or pickled objects: all mean 'unusable'
        raise CheckpointError(f"cannot read {path / STATE_FILE}: {err}", path=path,
                              hint="resume from an earlier checkpoint folder") from err
    return FaceAdapter.from_checkpoint(path / ADAPTER_FILE), state
