"""Check 5: `facefact train` on the device - one step under bf16 autocast with FAIR on, and a run
stopped after step 1 and resumed, whose step 2 must equal step 2 of an uninterrupted run.

The runs go through `facefact.training.train` itself (accelerate, mixed precision "bf16": frozen
models in bf16, adapter trained in fp32), on a data set written by `facefact prepare` from the
sample photos (two people, two photos each). Full size: the SD1.5-size random base model saved as a
diffusers folder (fp16 on the GPU, read back as the trainer reads any base model), TransFace-S and
an opened official-size adapter saved as files; --tiny: the tiny models. On CUDA the check runs
with deterministic algorithms on (restored after): equality is then exact, as on a CPU.

The data set needs the face stack (with dlib); a GPU machine without it is given one prepared here:
`python bench/gpu_check.py --write-train-data .gpucheck/train-data` (see bench/gpu_check_setup.sh).
"""
from __future__ import annotations

import contextlib
import math
import tempfile
from pathlib import Path

import torch

CHECK = "training"


def write_train_data(out: Path, size: int) -> Path:
    """The check's training set: the two sample photos and their mirror images, one person each."""
    from PIL import Image

    from facefact.training.prepare import PrepareSettings, prepare_dataset
    from gpu_checks.template import sample_photos

    photos = Path(out).parent / f".{Path(out).name}-photos"
    for name, rgb in zip(("astronaut", "hopper"), sample_photos()):
        (photos / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(photos / name / "0.png")
        Image.fromarray(rgb[:, ::-1]).save(photos / name / "1.png")
        (photos / name / "0.txt").write_text(f"a portrait photo of {name}\n")
    prepare_dataset(photos, out, PrepareSettings(size=size), workers=1, progress=False)
    return Path(out)


@contextlib.contextmanager
def deterministic(device):
    """Deterministic kernels on CUDA while inside (torch's global switch, restored after)."""
    if device.type != "cuda":
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic = before[1]


def model_files(setup, folder: Path) -> dict:
    """TrainConfig's base_model / encoder / init_adapter for this run's models."""
    from diffusers import StableDiffusionPipeline

    from facefact.model.checkpoints import save_adapter
    from facefact.pipelines.tiny import tiny_scheduler  # SD1.5's PNDM configuration

    init = save_adapter(setup.models.adapter(torch.float32), folder / "init-adapter.safetensors")
    if setup.tiny:
        return {"base_model": "tiny", "encoder": "tiny", "init_adapter": str(init)}
    master = setup.models.master
    weights = setup.models.parts(torch.float16 if setup.device.type == "cuda" else torch.float32)
    StableDiffusionPipeline(vae=weights["vae"], text_encoder=weights["text_encoder"], tokenizer=master["tokenizer"],
                            unet=weights["unet"], scheduler=tiny_scheduler(),
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder / "base")
    setup.models.release()
    encoder = folder / "transface.pt"
    torch.save({k: v.cpu() for k, v in master["encoder"].state_dict().items()}, encoder)
    return {"base_model": str(folder / "base"), "encoder": str(encoder), "init_adapter": str(init)}


def run(setup) -> None:
    from facefact.model.checkpoints import read_safetensors
    from facefact.training import TrainConfig, train

    report = setup.report
    if not report.fits(setup.estimate("training")):
        report.skip(CHECK, "bf16 step and resume", "the --budget-s is spent")
        return
    with tempfile.TemporaryDirectory(prefix="facefact-gpu-check-") as scratch:
        folder = Path(scratch)
        data = setup.args.train_data
        if data is None:
            try:
                data = write_train_data(folder / "data", setup.size)
            except Exception as err:  # noqa: BLE001 - no face stack: say what to do instead
                report.skip(CHECK, "bf16 step and resume", f"cannot prepare a training set here ({type(err).__name__}: "
                                                         f"{err}); prepare one elsewhere and pass --train-data")
                return
        common = dict(data=str(data), resolution=setup.size, max_steps=2, batch_size=1, mixed_precision="bf16",
                      fair_weight=0.1, seed=5, learning_rate=1e-4, checkpoint_every=1, progress=False, log_every=1,
                      **model_files(setup, folder))
        with deterministic(setup.device):
            full = train(TrainConfig(output_dir=str(folder / "full"), **common))
            first = train(TrainConfig(output_dir=str(folder / "split"), stop_after_steps=1, **common))
            second = train(TrainConfig(output_dir=str(folder / "split"), resume="latest", **common))
        step = full.history[0]
        finite = all(math.isfinite(r["loss"]) and math.isfinite(r["fair"]) for r in full.history)
        report.require(CHECK, "bf16 step, FAIR on", finite and step["fair"] > 0,
                       f"loss {step['loss']:.4g}, MSE {step['mse']:.4g}, FAIR {step['fair']:.3g} (FAIR > 0: measured "
                       f"on the opened adapter's increment)", **{k: step[k] for k in ("loss", "mse", "fair")})
        a, b = read_safetensors(full.adapter_path)[0], read_safetensors(second.adapter_path)[0]
        differing = [k for k in a if k not in b or not torch.equal(a[k], b[k])]
        same_loss = [r["mse"] for r in full.history[1:]] == [r["mse"] for r in second.history]
        report.require(CHECK, "resumed step = uninterrupted step", first.step == 1 and not differing and same_loss,
                       f"adapter tensors differing {len(differing)} of {len(a)}; step-2 MSE {second.history[0]['mse']:.6g}"
                       f" vs {full.history[1]['mse']:.6g}", differing=differing[:5], same_mse=same_loss)
