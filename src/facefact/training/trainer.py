"""`facefact train`: FACT's decoupled training of the resampler + block adapters (spec section 7).

One step, per micro-batch:
    latents  = VAE(target crop) * scaling          (frozen)
    tokens   = TransFace(condition photo)           (frozen; zeroed where the face is dropped)
    faces    = resampler(tokens)                    (trained)
    pred     = UNet(noisy latents, t, text, faces)  with the adapters attached (trained); SDXL: both text
                                                    encoders + pooled text + size/crop time ids
    loss     = MSE(pred, noise) + fair_weight * FAIR      (FAIR recorded in the same forward pass)

accelerate runs it: the same command trains on a CPU, one GPU, DDP or several nodes
(`accelerate launch -m facefact.cli.main train ...`), with mixed precision and accumulation.
"""
from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from facefact.errors import ConfigError
from facefact.logfilters import dropped_log_messages, empty_fp32_notice
from facefact.model.checkpoints import save_adapter
from facefact.training import checkpointing
from facefact.training.cache import caches_for_training
from facefact.pipelines.registry import TINY_BASES
from facefact.training.config import TrainConfig
from facefact.training.data import FaceTrainingSet, MicroBatchSampler
from facefact.training.fair import FairRegularizer
from facefact.training.models import (AdapterTrainingModule, build_adapter, copy_adapter_weights, encode_conditions,
                                      load_base_model,
                                      load_encoder, trainable_parameters)
from facefact.training.processes import check_processes_agree, mean_over_processes, on_every_process
from facefact.training.schedule import generator_for
from facefact.training.micro_conditioning import MISSING_NOTE
from facefact.training.text_conditioning import added_conditions, encode_prompts
from facefact.training.validation import save_validation_grid, validation_pipeline

logger = logging.getLogger(__name__)  # the CLI prints facefact.training's records; library users choose

LOG_COLUMNS = ["step", "loss", "mse", "fair", "lr", "shuffle_prob", "samples_per_s", "elapsed_s"]


@dataclass
class TrainResult:
    output_dir: Path
    adapter_path: Path | None          # final adapter (None when stopped early by stop_after_steps)
    last_checkpoint: Path | None
    step: int
    history: list[dict] = field(default_factory=list)  # one row per optimizer step of this run
    resumed_from: Path | None = None   # the checkpoint this run continued, if any
    start_step: int = 0                # the step it continued from


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, which the CLI turns into one) stopped training; the steps done were saved."""

    def __init__(self, step: int, checkpoint: Path | None, saved_now: bool):
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (no step had finished)"
        super().__init__(f"training interrupted at step {step}; {where}")
        self.step, self.checkpoint, self.saved_now = step, checkpoint, saved_now


def interrupted(accelerator, config: TrainConfig, step: int, start_step: int, resume_from: Path | None,
                adapter, optimizer, lr_scheduler) -> TrainingInterrupted:
    """Save the last finished step (main process only: no barrier, the other processes are stopping
    too) and describe it. A step cut short is redone on resume: its draws are functions of (seed, step)."""
    if step == start_step:
        return TrainingInterrupted(step, resume_from, saved_now=False)
    path = checkpointing.checkpoint_root(config.output_dir) / f"step-{step:08d}"
    if accelerator.is_main_process:
        path = checkpointing.save_checkpoint(config.output_dir, step, adapter, optimizer, lr_scheduler,
                                             accelerator.scaler, config.to_dict(), config.keep_checkpoints,
                                             metadata={"base_model": config.base_model})
    return TrainingInterrupted(step, path, saved_now=True)


def worker_count(requested: int) -> int:
    """DataLoader workers: at most one per CPU core this process may use (more only make torch warn
    and the workers compete for the cores); the cap is a note, not a silent change."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if requested > cores:
        logger.warning("num_workers %d is more than the %d CPU cores here; using %d", requested, cores, cores)
        return cores
    return requested


def make_optimizer(params, config: TrainConfig):
    kwargs = dict(lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                  weight_decay=config.weight_decay)
    if config.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError("optimizer adamw8bit needs bitsandbytes, which is not installed",
                              hint="pip install bitsandbytes (CUDA only), or use optimizer: adamw") from None
        return bnb.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def out_of_memory_error(config: TrainConfig, step: int) -> ConfigError:
    return ConfigError(
        f"out of memory at step {step} (batch_size={config.batch_size}, resolution={config.resolution or 'data set'}, "
        f"mixed_precision={config.mixed_precision}, gradient_checkpointing={config.gradient_checkpointing})",
        hint="lower batch_size (raise gradient_accumulation_steps to keep the effective batch), turn on "
             "gradient_checkpointing, use mixed_precision bf16/fp16, optimizer adamw8bit, or a lower resolution")


def diverged_error(config: TrainConfig, step: int, what: str) -> ConfigError:
    """Training stopped before the broken step was saved: the checkpoints on disk are the good ones."""
    kept = checkpointing.list_checkpoints(Path(config.output_dir))
    where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint had been written yet"
    return ConfigError(f"training diverged at step {step + 1}: {what}; stopped without saving it ({where})",
                       hint="lower learning_rate, keep max_grad_norm > 0, or use bf16 instead of fp16; resume from "
                            "the last good checkpoint (resume: latest)")


def check_batch_size(config: TrainConfig, num_samples: int) -> None:
    if config.batch_size > num_samples:
        raise ConfigError(f"batch_size {config.batch_size} is larger than the training set ({num_samples} samples)",
                          hint=f"use batch_size <= {num_samples}; raise gradient_accumulation_steps for a larger "
                               "effective batch, or add photos")


def train(config: TrainConfig) -> TrainResult:
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    config.check()
    if config.uses_random_models:
        logger.warning("training with random-weight 'tiny' models (base_model=%s, encoder=%s): this tries the "
                       "loop, the adapter learns nothing useful", config.base_model, config.encoder)
    # The data set first: a damaged set is refused before accelerate or any model is set up.
    dataset = FaceTrainingSet(config.data, resolution=config.resolution, seed=config.seed,
                              gradient_accumulation_steps=config.gradient_accumulation_steps,
                              face_drop_prob=config.face_drop_prob, text_drop_prob=config.text_drop_prob,
                              shuffle_prob_start=config.shuffle_prob_start, shuffle_prob_end=config.shuffle_prob_end,
                              shuffle_ramp_steps=config.ramp_steps)
    check_batch_size(config, len(dataset))
    # Several processes and no GPU (torchrun on CPUs): accelerate only picks gloo DDP when told cpu=True.
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in os.environ
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=launched and not torch.cuda.is_available(),
                              gradient_accumulation_steps=config.gradient_accumulation_steps)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    weight_dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[config.mixed_precision]
    torch.manual_seed(config.seed)  # model construction only; training draws come from schedule.generator_for
    output_dir = Path(config.output_dir)

    base = load_base_model(config.base_model)
    encoder = load_encoder(config.encoder).to(device)  # float32, as the reference runs it
    # Caches written by `facefact prepare` replace the frozen VAE / encoder forward; refused when
    # made by other weights (checked against the weights just loaded, before any dtype cast).
    dataset.use_caches(caches_for_training(config.data, use_cache=config.use_cache, base_model=config.base_model,
                                           encoder_spec=config.encoder, vae=base.vae, encoder=encoder,
                                           image_size=dataset.image_size, resolution=config.resolution))
    adapter = build_adapter(base.unet, encoder, config.init_adapter, tiny=config.base_model in TINY_BASES,
                            layout=config.layout)
    if base.family == "sdxl" and dataset.lacks_micro_conditioning and accelerator.is_main_process:
        logger.warning("%s (%d of %d samples)", MISSING_NOTE, dataset.lacks_micro_conditioning, len(dataset))
    with dropped_log_messages("diffusers.models.modeling_utils", empty_fp32_notice):
        for module in base.frozen_modules():
            module.to(device, dtype=weight_dtype)
        if weight_dtype == torch.float16 and base.family == "sdxl" and base.vae.config.get("force_upcast"):
            base.vae.to(dtype=torch.float32)  # SDXL's VAE overflows in fp16 (its config says so)
    if config.gradient_checkpointing:
        base.unet.enable_gradient_checkpointing()

    adapter.attach(base.unet)  # casts the adapter to the UNet's dtype; trained weights go back to fp32
    adapter.set_scale(1.0)
    adapter.requires_grad_(False)
    params = [p for _, p in trainable_parameters(adapter)]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)

    optimizer = make_optimizer(params, config)
    from diffusers.optimization import get_scheduler

    lr_scheduler = get_scheduler(config.lr_schedule, optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=config.max_steps)
    # The scheduler is stepped by hand once per optimizer step; accelerate's wrapper would step it
    # once per process.
    fair_regularizer = FairRegularizer(adapter)
    module, optimizer = accelerator.prepare(AdapterTrainingModule(adapter, base.unet, fair_regularizer), optimizer)

    start_step = 0
    resume_from = checkpointing.resolve_resume(config.resume, output_dir)
    if resume_from is not None:
        saved_adapter, state = checkpointing.load_checkpoint(resume_from)
        copy_adapter_weights(saved_adapter, adapter, resume_from)
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        if accelerator.scaler is not None and state["scaler"]:
            accelerator.scaler.load_state_dict(state["scaler"])
        checkpointing.set_rng_state(state["rng"])
        start_step = int(state["step"])
        if accelerator.is_main_process:
            logger.info("resuming from %s at step %d of %d", resume_from, start_step, config.max_steps)
    check_processes_agree(accelerator, start_step, dataset, config)

    stop_step = config.max_steps
    if config.stop_after_steps is not None:
        stop_step = min(stop_step, start_step + config.stop_after_steps)
    accumulation = config.gradient_accumulation_steps
    sampler = MicroBatchSampler(len(dataset), config.batch_size, config.seed, start_step * accumulation,
                                stop_step * accumulation, world_size=world, rank=rank)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=worker_count(config.num_workers))
    measure_fair = config.fair_weight > 0
    prediction_type = base.noise_scheduler.config.prediction_type
    log = TrainLog(output_dir, config, start_step) if accelerator.is_main_process else None

    def loss_and_backward(batch: dict, micro_step: int) -> tuple[float, float]:
        """Forward and backward of one micro-batch; backward stays inside the FAIR context because
        gradient checkpointing re-runs the forward (and FAIR's ops) during backward."""
        # One generator per sample of the global batch: N processes x batch b draw the same noise
        # as one process with batch N*b.
        generators = [generator_for(config.seed, 2, micro_step, slot) for slot in batch["slot"].tolist()]
        with torch.no_grad():
            if "latent_mean" in batch:  # cached posterior
                mean, std = batch["latent_mean"].to(device), batch["latent_std"].to(device)
            else:
                posterior = base.vae.encode(batch["pixel_values"].to(device, base.vae.dtype)).latent_dist
                mean, std = posterior.mean, posterior.std
            latent_noise = torch.stack([torch.randn(mean.shape[1:], generator=g) for g in generators])
            latents = mean.float() + std.float() * latent_noise.to(device)
            latents = latents * base.vae.config.scaling_factor
            text = encode_prompts(base, list(batch["caption"]), device)
            if "encoder_tokens" in batch:  # cached tokens of the condition
                tokens = batch["encoder_tokens"].to(device, torch.float32)
                tokens[batch["drop_face"].to(device)] = 0.0
            else:
                tokens = encode_conditions(encoder, batch["condition"].to(device), batch["drop_face"])
            face_mask = F.interpolate(batch["face_mask"].to(device), size=latents.shape[-2:], mode="area")
        noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in generators]).to(device)
        num_timesteps = base.noise_scheduler.config.num_train_timesteps
        timesteps = torch.cat([torch.randint(0, num_timesteps, (1,), generator=g) for g in generators]).to(device)
        noisy = base.noise_scheduler.add_noise(latents, noise, timesteps)
        target = noise if prediction_type == "epsilon" else base.noise_scheduler.get_velocity(latents, noise, timesteps)
        fair_context = fair_regularizer.measuring(face_mask) if measure_fair else contextlib.nullcontext()
        with fair_context:
            prediction, fair = module(noisy.to(weight_dtype), timesteps, text.embeds, tokens, measure_fair=measure_fair,
                                      added_cond_kwargs=added_conditions(text, batch["time_ids"], weight_dtype))
            mse = F.mse_loss(prediction.float(), target.float())
            mse_value, fair_value = mse.item(), fair.item()
            finite = math.isfinite(mse_value) and math.isfinite(fair_value)
            if not on_every_process(accelerator, finite):  # before it reaches the weights; all stop together
                raise diverged_error(config, step, f"the loss is {mse_value} (FAIR {fair_value})" if not finite
                                     else "the loss of another training process is not finite")
            accelerator.backward(mse + config.fair_weight * fair)
        return mse_value, fair_value

    step, started = start_step, time.time()
    bar = tqdm(total=config.max_steps, initial=start_step, desc="train", unit="step",
               disable=not (config.progress and accelerator.is_main_process))
    window = []
    history = []
    validation = None  # the FACT pipeline over the training components, built at the first validation
    module.train()
    try:
        for micro_step, batch in enumerate(loader, start=start_step * accumulation):
            try:
                with accelerator.accumulate(module):
                    window.append(loss_and_backward(batch, micro_step))
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(params, config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            except torch.OutOfMemoryError:
                raise out_of_memory_error(config, step) from None
            except RuntimeError as err:  # CPU allocators report OOM as a plain RuntimeError
                if "can't allocate memory" in str(err) or "out of memory" in str(err).lower():
                    raise out_of_memory_error(config, step) from err
                raise
            if not accelerator.sync_gradients:
                continue
            lr_scheduler.step()
            step += 1
            mse, fair = mean_over_processes(accelerator, window)
            window = []
            row = {"step": step, "loss": mse + config.fair_weight * fair, "mse": mse, "fair": fair,
                   "lr": lr_scheduler.get_last_lr()[0], "shuffle_prob": dataset.shuffle_probability(micro_step),
                   "samples_per_s": (step - start_step) * config.batch_size * accumulation * world
                   / (time.time() - started),
                   "elapsed_s": time.time() - started}
            history.append(row)
            bar.update()
            # FAIR is often 1e-4..1e-2: fixed 3 decimals showed 0.000 and looked switched off
            bar.set_postfix(loss=f"{row['loss']:.4g}", fair=f"{fair:.3g}" if measure_fair else "off")
            if log is not None:
                log.write(row, every=config.log_every)
            if config.validate_every and step % config.validate_every == 0 and accelerator.is_main_process:
                if validation is None:  # the UNet the adapter is attached to, never a DDP wrapper
                    validation = validation_pipeline(base, accelerator.unwrap_model(module).unet, encoder, adapter)
                save_validation_grid(output_dir / "validation" / f"step-{step:08d}.png", validation, dataset,
                                     list(config.validation_prompts), samples=config.validation_samples,
                                     size=dataset.image_size, steps=config.validation_steps,
                                     guidance=config.validation_guidance, seed=config.seed, autocast_dtype=weight_dtype,
                                     step=step)
            if not all(bool(torch.isfinite(p).all()) for p in params):  # an overflow in backward or the optimizer
                raise diverged_error(config, step, "the adapter weights became NaN or infinite")
            if step % config.checkpoint_every == 0 or step == stop_step:
                _save(accelerator, config, step, adapter, optimizer, lr_scheduler)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM turned into one by the CLI
        bar.close()
        if log is not None:
            log.close()
        raise interrupted(accelerator, config, step, start_step, resume_from, adapter, optimizer,
                          lr_scheduler) from None
    bar.close()
    if log is not None:
        log.close()

    last = checkpointing.list_checkpoints(output_dir)
    adapter_path = None
    if step >= config.max_steps:
        adapter_path = output_dir / "adapter.safetensors"
        if accelerator.is_main_process:
            save_adapter(adapter, adapter_path, extra_metadata={"training_step": step})
    accelerator.wait_for_everyone()
    adapter.detach()
    accelerator.end_training()
    return TrainResult(output_dir, adapter_path, last[-1] if last else None, step, history, resume_from, start_step)


def _save(accelerator, config: TrainConfig, step, adapter, optimizer, lr_scheduler):
    path = None
    if accelerator.is_main_process:
        path = checkpointing.save_checkpoint(config.output_dir, step, adapter, optimizer, lr_scheduler,
                                             accelerator.scaler, config.to_dict(), config.keep_checkpoints,
                                             metadata={"base_model": config.base_model})
    accelerator.wait_for_everyone()
    return path


class TrainLog:
    """log.csv always (rows after the resume step are dropped: they belong to the killed run);
    TensorBoard when asked."""

    def __init__(self, output_dir: Path, config: TrainConfig, start_step: int):
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / "log.csv"
        kept = []
        if start_step and self.path.is_file():
            with open(self.path, newline="") as handle:
                kept = [r for r in csv.DictReader(handle) if int(r["step"]) <= start_step]
        self.handle = open(self.path, "w", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=LOG_COLUMNS)
        self.writer.writeheader()
        self.writer.writerows(kept)
        self.tensorboard = None
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("tensorboard logging is on but the tensorboard package is not installed",
                                  hint="pip install tensorboard, or set tensorboard: false (log.csv is always written)") from None
            self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"))

    def write(self, row: dict, every: int) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v)
                              for k, v in row.items()})
        if row["step"] % max(every, 1) == 0:
            self.handle.flush()
        if self.tensorboard is not None:
            for key in ("loss", "mse", "fair", "lr", "shuffle_prob"):
                self.tensorboard.add_scalar(f"train/{key}", row[key], row["step"])

    def close(self) -> None:
        self.handle.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
