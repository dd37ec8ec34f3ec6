"""`facefact train`: FACT decoupled training. Every setting of TrainConfig is a flag and a config key.

    facefact train --config examples/train_config.yaml --max-steps 2000
    facefact train --data tinyset/ --model tiny --max-steps 20       # try the loop with random models
    facefact train --data tinyset/ --model tiny-sdxl --max-steps 20  # the same on a random SDXL-layout base
    accelerate launch --multi_gpu -m facefact.cli.main train --config cfg.yaml   # several GPUs / nodes
    torchrun --nproc_per_node 2 -m facefact.cli.main train --config cfg.yaml     # several CPU processes

Ctrl-C or SIGTERM saves a checkpoint at the last finished step and says how to resume.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading

from facefact.cli.exit_codes import ExitCode
from facefact.cli.settings_flags import add_setting_flags, given_flags
from facefact.cli.threads import add_threads_flag, torch_threads
from facefact.errors import ConfigError
from facefact.pipelines.registry import TINY_BASES
from facefact.training.config import FIELD_HELP, TrainConfig

# --model NAME: the built-in random-weight models it stands for
TINY_MODELS = {"tiny": {"base_model": "tiny", "encoder": "tiny"},
               "tiny-sdxl": {"base_model": "tiny-sdxl", "encoder": "tiny"}}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a FACT adapter (resampler + block adapters) on a prepared set",
        description="Trains on a folder written by `facefact prepare`. Settings come from --config "
                    "(YAML or JSON, keys = the flag names with underscores) and flags given here override "
                    "it. --base-model (SD1.5-family or SDXL) and --encoder are required (or --model tiny / "
                    "tiny-sdxl for random-weight models). "
                    "Checkpoints go to OUTPUT_DIR/checkpoints; --resume latest continues exactly; Ctrl-C "
                    "saves a checkpoint first.")
    parser.add_argument("--config", help="YAML or JSON file with training settings")
    parser.add_argument("--model", choices=["fact", *TINY_MODELS], default=None,
                        help="'tiny': built-in random-weight base model and encoder (offline, seconds; the adapter "
                             "learns nothing useful) - the same as --base-model tiny --encoder tiny; 'tiny-sdxl': "
                             "the same with a random SDXL-layout base (--base-model tiny-sdxl --encoder tiny)")
    add_threads_flag(parser)
    add_setting_flags(parser, TrainConfig, help_texts=FIELD_HELP)
    parser.add_argument("--quiet", dest="progress", action="store_false", default=None,
                        help="no progress bar (the same as --no-progress, as in the other commands)")
    parser.set_defaults(func=run)


def config_from_args(args) -> TrainConfig:
    from facefact.training.config import config_from_dict, load_config

    given = given_flags(args, TrainConfig)
    model = getattr(args, "model", None)
    if model in TINY_MODELS:
        for name, tiny in TINY_MODELS[model].items():
            if given.get(name, tiny) != tiny:
                raise ConfigError(f"--model {model} uses the built-in random models; drop --{name.replace('_', '-')}")
            given[name] = tiny
    if args.config:
        return load_config(args.config, given)
    return config_from_dict(given)


@contextlib.contextmanager
def signals_as_interrupt():
    """SIGTERM (a scheduler or `kill` stopping the job) and SIGINT take Ctrl-C's path: checkpoint,
    then exit. SIGINT's handler is installed even when the run started with SIGINT ignored (a shell
    does that to `nohup facefact train ... &`), or `kill -INT` would not stop it. Both handlers
    are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    before = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, previous in before.items():
            signal.signal(signum, previous)


@contextlib.contextmanager
def training_notes(shown: bool = True):
    """Print facefact.training's notes (random models, resumed from which step) on stderr; with
    `shown` false (the other processes of a multi-process run) drop them, so a note appears once
    (Python would print an unhandled warning of each process)."""
    handler = logging.StreamHandler(sys.stderr) if shown else logging.NullHandler()
    handler.setFormatter(logging.Formatter("note: %(message)s"))
    logger = logging.getLogger("facefact.training")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def run(args) -> int:
    from facefact.cli.outputs import prepare_output_folder
    from facefact.training.trainer import TrainingInterrupted, train

    config = config_from_args(args).check()
    prepare_output_folder(config.output_dir, "--output-dir")
    main_process = os.environ.get("RANK", "0") == "0"  # one message per run, not one per process
    tiny = config.base_model in TINY_BASES and config.encoder == "tiny"
    try:
        with torch_threads(args.threads, tiny=tiny, device=None), signals_as_interrupt(), \
                training_notes(shown=main_process):
            result = train(config)
    except TrainingInterrupted as stop:
        if main_process:
            again = "run the same command again" if config.resume == "latest" else "add --resume latest"
            saved = "saved" if stop.saved_now else "kept"
            print(f"interrupted at step {stop.step} of {config.max_steps}; " + (
                f"checkpoint {saved}: {stop.checkpoint}\n  resume: {again} (or --resume {stop.checkpoint})"
                if stop.checkpoint else "no step had finished, nothing to resume"), file=sys.stderr)
        return ExitCode.INTERRUPTED
    if not main_process:
        return 0
    if result.adapter_path is not None:
        print(f"trained adapter: {result.adapter_path} (step {result.step})")
    else:
        print(f"stopped at step {result.step}; resume with --resume {result.last_checkpoint or 'latest'}")
    return 0
