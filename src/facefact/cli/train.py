"""`facefact train`: FACT decoupled training. Every setting of TrainConfig is a flag and a config key.

    facefact train --config examples/train_config.yaml --max-steps 2000
    accelerate launch --multi_gpu -m facefact.cli.main train --config cfg.yaml   # several GPUs / nodes
    torchrun --nproc_per_node 2 -m facefact.cli.main train --config cfg.yaml     # several CPU processes
"""
from __future__ import annotations

import argparse
import os
from dataclasses import fields

from facefact.training.config import TrainConfig


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a FACT adapter (resampler + block adapters) on a prepared set",
        description="Trains on a folder written by `facefact prepare`. Settings come from --config "
                    "(YAML or JSON, keys = the flag names with underscores) and flags given here override "
                    "it. Checkpoints go to OUTPUT_DIR/checkpoints; --resume latest continues exactly.")
    parser.add_argument("--config", help="YAML or JSON file with training settings")
    for f in fields(TrainConfig):
        kind = str(f.type)
        help_text = f"(default: {f.default!r})"
        if kind.startswith("bool"):
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind.startswith("tuple"):
            parser.add_argument(_flag(f.name), nargs="+", default=None, help=help_text)
        else:
            parser.add_argument(_flag(f.name), default=None, metavar=f.name.upper(), help=help_text)
    parser.set_defaults(func=run)


def config_from_args(args) -> TrainConfig:
    from facefact.training.config import config_from_dict, load_config

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    if args.config:
        return load_config(args.config, given)
    return config_from_dict(given)


def run(args) -> int:
    from facefact.cli.outputs import prepare_output_folder
    from facefact.training.trainer import train

    config = config_from_args(args).check()
    prepare_output_folder(config.output_dir, "--output-dir")
    result = train(config)
    if os.environ.get("RANK", "0") != "0":
        return 0  # one message per run, not one per process
    if result.adapter_path is not None:
        print(f"trained adapter: {result.adapter_path} (step {result.step})")
    else:
        print(f"stopped at step {result.step}; resume with --resume {result.last_checkpoint or 'latest'}")
    return 0
