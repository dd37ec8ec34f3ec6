"""`facefact generate`: reference photo(s) + prompt -> PNGs with provenance, and a contact sheet.

Order of work is chosen so mistakes cost nothing: settings and sizes are checked, then the photos
(face found, usable), then the model files exist - and only then are weights loaded.
Heavy imports (torch, diffusers) happen inside `run`, so `facefact --help` stays fast.

Output policy: `{name}_{seed}.png` in --out (name: --name, else the prompt's first words - never
the reference photo's file name, which is often a person's name); a name that is taken is never
replaced silently - `{name}_{seed}-1.png` is written instead - unless --overwrite. The photos themselves and their
face embeddings are never written anywhere.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings
from pathlib import Path

from facefact.cli.identity_flags import (analyse_people, face_arguments, parse_scale, parse_window, people,
                                        photo_names)
from facefact.cli.model_flags import add_model_flags, is_tiny, load_pipeline, model_locations
from facefact.cli.outputs import check_file_name, check_name_stem, prepare_output_folder
from facefact.cli.terminal import safe_text
from facefact.cli.threads import add_threads_flag, torch_threads
from facefact.cli.settings_flags import add_setting_flags, add_size_flag, settings_from_args
from facefact.errors import ConfigError
from facefact.logfilters import clip_truncation_notice, dropped_log_messages
from facefact.pipelines.settings import MAX_IMAGES, MAX_SEED, GenerationSettings
from facefact.validation import arg_float

# The CLI's own syntaxes of two settings: `--scale down=0.3,up=0.6`, `--window 0.3,1`.
CLI_SYNTAX = {"fact_scale": parse_scale, "fact_window": parse_window}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="portraits of the person in --face, from a text prompt",
        description="Generate portraits of the person in the reference photo(s) from a text prompt. "
                    "Settings: flag > environment > config file > built-in default.")
    p.add_argument("--face", action="append", default=[], metavar="PHOTO[#N][@x0,y0,x1,y1]",
                   help="reference photo; repeat for several photos of the same person. A group photo's "
                        "face: group.jpg#N, faces numbered from 1, left to right (as `facefact faces "
                        "inspect` and `facefact template` show them; default: the largest). With a region "
                        "(fractions of the image) per photo: several people in one image, e.g. "
                        "--face alice.jpg@0,0,0.5,1 --face bob.jpg@0.5,0,1,1")
    p.add_argument("--allow-low-quality", action="store_true",
                   help="use a reference face the quality checks refuse (small, blurred, turned away...); a note "
                        "says what was wrong")
    p.add_argument("--identity", action="append", default=[], metavar="FILE.fid[@x0,y0,x1,y1]",
                   help="a saved identity (`facefact identity save`) instead of photos")
    p.add_argument("--prompt", required=True, help="what the images show, e.g. \"a portrait in a garden\"")
    p.add_argument("--out", help="output folder (default: outputs)")
    p.add_argument("--name", help="file name stem (default: the prompt's first words; never the photo's name)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files of the same name")
    p.add_argument("--no-sheet", action="store_true", help="do not write the contact sheet")
    g = p.add_argument_group("generation settings (also config keys of the `generate:` section)")
    add_setting_flags(g, GenerationSettings, parsers=CLI_SYNTAX)
    add_size_flag(g, "the model's own: 512 on SD1.5, 1024 on SDXL, 128 on the tiny models")
    m = add_model_flags(p)
    add_threads_flag(m)
    e = p.add_argument_group("LoRA and ControlNet")
    e.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]",
                   help="a LoRA for the base model (.safetensors), at WEIGHT (default 1.0); repeat for several")
    e.add_argument("--controlnet", metavar="PATH_OR_HUB_ID",
                   help="a ControlNet beside the face adapter (folder, file or hub id; 'tiny' with --model tiny)")
    e.add_argument("--control-image", dest="control_image", metavar="IMAGE",
                   help="the ControlNet's input, used as given (make the edge, pose or depth map yourself)")
    e.add_argument("--pose-from", dest="pose_from", metavar="PHOTO",
                   help="instead of --control-image: the body pose of the person in PHOTO, drawn as an OpenPose "
                        "map (MediaPipe, offline; the mediapipe extra), for an OpenPose --controlnet")
    e.add_argument("--pose-detector", dest="pose_detector", metavar="mediapipe|openpose:DIR",
                   help="who finds the pose for --pose-from: mediapipe (default; body only, offline) or "
                        "openpose:DIR, controlnet_aux's OpenPose (body, hands and face) on lllyasviel/Annotators' "
                        "body_pose_model.pth, hand_pose_model.pth and facenet.pth in DIR (needs controlnet_aux)")
    e.add_argument("--save-control", dest="save_control", metavar="DIR",
                   help="also write the control map used (control.png) to DIR, to look at it")
    e.add_argument("--control-scale", dest="control_scale", type=arg_float("--control-scale", low=0, high=10),
                   help="ControlNet strength (default 1.0)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def resolve_options(args, config: dict) -> tuple[GenerationSettings, str]:
    """(settings, output folder): flag > config `generate:` section > built-in default, every value
    checked with its range (a config file's values have not been through argparse) - before any loading."""
    section = dict(config.get("generate") or {})
    out = args.out if args.out is not None else section.pop("out", "outputs")
    section.pop("out", None)
    if not isinstance(out, str):
        raise ConfigError(f"out must be a folder name, not {out!r}")
    return settings_from_args(args, GenerationSettings, section=section), out


def progress_callback(total: int, enabled: bool):
    """A `callback_on_step_end` that drives a tqdm bar on stderr (diffusers' own bar is turned off)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="denoising", unit="step", file=sys.stderr, disable=not enabled, leave=False)

    def callback(pipe, step, timestep, kwargs):
        if step == 0 and getattr(pipe, "num_timesteps", None):
            bar.total = pipe.num_timesteps  # PNDM runs steps + 1 model calls; the pipeline knows the count
            bar.refresh()
        bar.update(1)
        return kwargs
    return callback, bar


def output_stem(args, prompt: str) -> str:
    from facefact.pipelines.metadata import slug

    if args.name:
        check_name_stem(args.name)
        return args.name
    # Never the reference photo's name by default: file names are shared along with the images,
    # and photo names are often people's names ("Jane Doe passport.jpg"). --name chooses freely.
    return slug(prompt, 48)


def anonymise(note: str, photos: list[str]) -> str:
    for i, photo in enumerate(photos):
        note = note.replace(str(photo), f"reference photo {i + 1}")
    return note


def run(args) -> int:
    from facefact.cli import extras as generate_extras
    from facefact.pipelines.loading import quiet_libraries

    quiet_libraries()
    from facefact.faces import FaceAnalysis
    from facefact.faces.types import FaceWarning
    from facefact.cli import config as cli_config

    config, config_path = cli_config.load_config(args.config)
    settings, out = resolve_options(args, config)
    stem = output_stem(args, args.prompt)
    out_dir = prepare_output_folder(out, "--out")
    check_file_name(out_dir, f".{stem}_{MAX_SEED}-{MAX_IMAGES}_sheet.png.XXXXXXXX.png.tmp", "--name")
    if args.save_control:
        prepare_output_folder(args.save_control, "--save-control")
    extras = generate_extras.check_settings(args.lora, args.controlnet, args.control_image, args.control_scale,
                                            tiny=is_tiny(args), pose_from=args.pose_from,
                                            pose_detector=args.pose_detector)
    model_locations(args, config, config_path)  # every missing model file named now, before any photo work
    notes: list[str] = []
    analysis = FaceAnalysis()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FaceWarning)  # the same words come back as notes, printed once below
        analysed = analyse_people(people(args.face, args.identity), analysis, notes,
                                  check_quality=not args.allow_low_quality)
        generate_extras.load_control_image(extras)
        if args.save_control and extras.control_image is not None:
            generate_extras.save_control_image(extras, args.save_control)
        return generate_and_write(args, settings, out_dir, config, config_path, analysis, notes, stem, analysed,
                                  extras)


def generate_and_write(args, settings: GenerationSettings, out_dir: Path, config: dict, config_path, analysis,
                       notes: list[str], stem: str, analysed, extras) -> int:
    import secrets
    from dataclasses import replace

    from facefact.cli import extras as generate_extras
    from facefact.pipelines.loading import make_scheduler
    from facefact.pipelines.metadata import contact_sheet, sheet_metadata, write_png

    # The pipeline logs its notes too; we print them ourselves, once.
    logging.getLogger("facefact.pipelines").addHandler(logging.NullHandler())
    generate_extras.check_files(extras)
    pipe = load_pipeline(args, config, config_path, analysis, extras.controlnet)
    generate_extras.apply(pipe, extras)
    pipe.scheduler = make_scheduler(settings.scheduler, pipe.scheduler.config)
    callback, bar = progress_callback(settings.steps + 1, not (args.quiet or args.json))
    default_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    settings = replace(settings, width=settings.width or default_size, height=settings.height or default_size,
                       seed=secrets.randbelow(2**31) if settings.seed is None else settings.seed)
    control = generate_extras.control_kwargs(extras, settings.width, settings.height, notes)
    threads = torch_threads(args.threads, tiny=is_tiny(args), device=str(pipe.device))
    # the pipeline's own note names the cut words (once); diffusers' copy of it is dropped
    with contextlib.closing(bar), threads, dropped_log_messages("diffusers", clip_truncation_notice):
        out = pipe(args.prompt, **face_arguments(pipe, analysed, settings.face_combine), **settings.pipeline_kwargs(),
                   generator=settings.generators(), callback_on_step_end=callback, **control)
    notes = list(dict.fromkeys(notes + out.notes))  # photo notes (names kept for the user) + the pipeline's
    metadata = out.metadata_with_hashes()
    for meta in metadata:  # the files keep no trace of the photos, not even their names
        meta["notes"] = [anonymise(note, photo_names(people(args.face, args.identity))) for note in notes]
        meta["scheduler"] = settings.scheduler
        if extras.pose_from is not None:  # what the control image is (never which photo)
            meta["control_image"] = (
                "body, hand and face pose of a reference photo (controlnet_aux OpenPose, lllyasviel/Annotators "
                "weights)" if extras.openpose_weights else
                "body pose of a reference photo (MediaPipe, drawn as OpenPose COCO-18)")
    written = [write_png(image, out_dir / f"{stem}_{meta['seed']}.png", meta, overwrite=args.overwrite)
               for image, meta in zip(out.images, metadata)]
    sheet = None
    if len(out.images) > 1 and not args.no_sheet:
        seeds = [m["seed"] for m in metadata]
        picture = contact_sheet(out.images, labels=[f"seed {seed}" for seed in seeds])
        sheet = write_png(picture, out_dir / f"{stem}_{seeds[0]}-{seeds[-1]}_sheet.png",
                          sheet_metadata(metadata), overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"images": [str(p) for p in written], "contact_sheet": str(sheet) if sheet else None,
                          "notes": notes, "metadata": metadata}, indent=1, ensure_ascii=False))
        return 0
    for note in notes:
        print(f"note: {safe_text(note)}", file=sys.stderr)
    for path in written:
        print(safe_text(path))
    if sheet:
        print(f"{safe_text(sheet)}  (contact sheet)")
    return 0
