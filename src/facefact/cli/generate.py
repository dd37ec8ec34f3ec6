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
from facefact.cli.model_flags import add_model_flags, load_pipeline
from facefact.cli.outputs import check_file_name, prepare_output_folder
from facefact.cli.terminal import safe_text
from facefact.cli.threads import add_threads_flag, torch_threads
from facefact.errors import ConfigError
from facefact.logfilters import clip_truncation_notice, dropped_log_messages
from facefact.validation import (MAX_SEED, arg_float, arg_int, arg_seed, check_image_size, finite_float,
                                 strict_bool, whole_number)

MAX_IMAGES = 1000    # per command: seeds seed..seed+n-1
MAX_STEPS = 500      # of 1000 training timesteps; PNDM at 1000 steps indexes past the schedule's end
MAX_GUIDANCE = 100.0
BUILTIN_DEFAULTS = {"negative_prompt": None, "steps": 50, "guidance": 5.0, "scale": 0.5, "cfg_face": True,
                    "size": None, "width": None, "height": None, "scheduler": "pndm", "n": 1, "out": "outputs"}


def register(subparsers) -> None:
    from facefact.pipelines.scheduler_names import SCHEDULER_NAMES

    p = subparsers.add_parser(
        "generate", help="portraits of the person in --face, from a text prompt",
        description="Generate portraits of the person in the reference photo(s) from a text prompt. "
                    "Settings: flag > environment > config file > built-in default.")
    p.add_argument("--face", action="append", default=[], metavar="PHOTO[@x0,y0,x1,y1]",
                   help="reference photo; repeat for several photos of the same person. With a region "
                        "(fractions of the image) per photo: several people in one image, e.g. "
                        "--face alice.jpg@0,0,0.5,1 --face bob.jpg@0.5,0,1,1")
    p.add_argument("--allow-low-quality", action="store_true",
                   help="use a reference face the quality checks refuse (small, blurred, turned away...); a note "
                        "says what was wrong. A group photo's face: --face group.jpg#N, numbered as "
                        "`facefact faces inspect` shows them (#0 the largest)")
    p.add_argument("--identity", action="append", default=[], metavar="FILE.fid[@x0,y0,x1,y1]",
                   help="a saved identity (`facefact identity save`) instead of photos")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", dest="negative_prompt")
    p.add_argument("-n", "--num-images", dest="n", type=arg_int("-n", low=1, high=MAX_IMAGES),
                   help="images to generate (seeds seed..seed+n-1)")
    p.add_argument("--seed", type=arg_seed("--seed"),
                   help="first seed (random if not given; always written to the metadata)")
    p.add_argument("--out", help="output folder (default: outputs)")
    p.add_argument("--name", help="file name stem (default: the prompt's first words; never the photo's name)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files of the same name")
    p.add_argument("--no-sheet", action="store_true", help="do not write the contact sheet")
    g = p.add_argument_group("sampling")
    g.add_argument("--steps", type=arg_int("--steps", low=1, high=MAX_STEPS), help="denoising steps (default 50)")
    g.add_argument("--guidance", "--guidance-scale", dest="guidance",
                   type=arg_float("--guidance", low=0, high=MAX_GUIDANCE),
                   help="classifier-free guidance scale (default 5)")
    g.add_argument("--scale", help="adapter scale: 0 = base model, 1 = full face (default 0.5); or per UNet "
                                  "level: down=0.3,mid=0.5,up=0.6 (levels not named: 0)")
    g.add_argument("--combine", choices=["concat", "mean", "weighted"], default="concat",
                   help="how several photos of one person combine: concat (FACT's own, 16 tokens each), mean, "
                        "or weighted by face quality (default concat)")
    g.add_argument("--window", metavar="START,END",
                   help="FACT only from START to END of the denoising steps (fractions, e.g. 0.3,1: a late "
                        "start keeps the base model's composition); 1,1 = the base model")
    g.add_argument("--no-cfg-face", dest="cfg_face", action="store_false", default=None,
                   help="unconditional branch uses the face tokens too, not the null face tokens")
    g.add_argument("--size", type=arg_int("--size"), help="square image size, a multiple of 8 (default: the model's)")
    g.add_argument("--width", type=arg_int("--width"))
    g.add_argument("--height", type=arg_int("--height"))
    g.add_argument("--scheduler", choices=list(SCHEDULER_NAMES))
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
    e.add_argument("--save-control", dest="save_control", metavar="DIR",
                   help="also write the control map used (control.png) to DIR, to look at it")
    e.add_argument("--control-scale", dest="control_scale", type=arg_float("--control-scale", low=0, high=10),
                   help="ControlNet strength (default 1.0)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def resolve_options(args, config: dict) -> dict:
    """Flag > config `generate:` section > built-in default, then every value checked with its
    range (a config file's values have not been through argparse) - before any loading."""
    section = config.get("generate") or {}
    if not isinstance(section, dict):
        raise ConfigError("the config file's `generate:` section must be a mapping of setting: value")
    opts = {k: getattr(args, k) if getattr(args, k, None) is not None else section.get(k, default)
            for k, default in BUILTIN_DEFAULTS.items()}
    opts["width"], opts["height"] = check_image_size(opts["width"] or opts["size"], opts["height"] or opts["size"])
    opts["n"] = whole_number("-n (images)", opts["n"], low=1, high=MAX_IMAGES)
    opts["steps"] = whole_number("--steps", opts["steps"], low=1, high=MAX_STEPS)
    opts["guidance"] = finite_float("--guidance", opts["guidance"], low=0, high=MAX_GUIDANCE)
    if isinstance(opts["scale"], (int, float)):  # a config file's number: parse_scale checks only text
        scale = finite_float("--scale", opts["scale"])
        if not 0.0 <= scale <= 2.0:
            raise ConfigError(f"adapter scale {opts['scale']} is outside 0..2", hint="0.5 is the released setting")
    opts["scale"] = parse_scale(opts["scale"])
    opts["window"] = parse_window(args.window)
    opts["cfg_face"] = strict_bool("cfg_face", opts["cfg_face"])
    for key in ("negative_prompt", "out", "scheduler"):
        if opts[key] is not None and not isinstance(opts[key], str):
            raise ConfigError(f"{key} must be text, not {opts[key]!r}")
    if args.seed is not None and args.seed + opts["n"] - 1 > MAX_SEED:
        raise ConfigError(f"--seed {args.seed} with -n {opts['n']} goes past the largest seed {MAX_SEED}")
    return opts


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
        if "/" in args.name or "\\" in args.name or args.name.startswith("."):
            raise ConfigError(f"--name '{args.name}' must be a plain file name stem")
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
    from facefact.pipelines import registry

    config, config_path = registry.load_config(args.config)
    opts = resolve_options(args, config)
    stem = output_stem(args, args.prompt)
    out_dir = prepare_output_folder(opts["out"], "--out")
    check_file_name(out_dir, f".{stem}_{MAX_SEED}-{MAX_IMAGES}_sheet.png.XXXXXXXX.png.tmp", "--name")
    extras = generate_extras.check_settings(args.lora, args.controlnet, args.control_image, args.control_scale,
                                            tiny=args.model == "tiny", pose_from=args.pose_from)
    notes: list[str] = []
    analysis = FaceAnalysis()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FaceWarning)  # the same words come back as notes, printed once below
        analysed = analyse_people(people(args.face, args.identity), analysis, notes,
                                  check_quality=not args.allow_low_quality)
        generate_extras.load_control_image(extras)
        if args.save_control and extras.control_image is not None:
            generate_extras.save_control_image(extras, args.save_control)
        return generate_and_write(args, opts, config, config_path, analysis, notes, stem, analysed, extras)


def generate_and_write(args, opts: dict, config: dict, config_path, analysis, notes: list[str], stem: str,
                       analysed, extras) -> int:
    import secrets

    import torch

    from facefact.cli import extras as generate_extras
    from facefact.pipelines.loading import make_scheduler
    from facefact.pipelines.metadata import contact_sheet, sheet_metadata, write_png

    # The pipeline logs its notes too; we print them ourselves, once.
    logging.getLogger("facefact.pipelines").addHandler(logging.NullHandler())
    generate_extras.check_files(extras)
    pipe = load_pipeline(args, config, config_path, analysis, extras.controlnet)
    generate_extras.apply(pipe, extras)
    pipe.scheduler = make_scheduler(opts["scheduler"], pipe.scheduler.config)
    callback, bar = progress_callback(int(opts["steps"]) + 1, not (args.quiet or args.json))
    default_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    size = (int(opts["width"] or default_size), int(opts["height"] or default_size))
    control = generate_extras.control_kwargs(extras, *size, notes)
    seed = secrets.randbelow(2**31) if args.seed is None else int(args.seed)
    n = int(opts["n"])
    threads = torch_threads(args.threads, tiny=args.model == "tiny", device=str(pipe.device))
    # the pipeline's own note names the cut words (once); diffusers' copy of it is dropped
    with contextlib.closing(bar), threads, dropped_log_messages("diffusers", clip_truncation_notice):
        out = pipe(args.prompt, **face_arguments(pipe, analysed, args.combine), fact_window=opts["window"],
                   negative_prompt=opts["negative_prompt"], fact_scale=opts["scale"], cfg_face=bool(opts["cfg_face"]),
                   num_images_per_prompt=n,
                   generator=[torch.Generator("cpu").manual_seed(seed + i) for i in range(n)],
                   num_inference_steps=int(opts["steps"]), guidance_scale=float(opts["guidance"]),
                   height=size[1], width=size[0], callback_on_step_end=callback, **control)
    notes = list(dict.fromkeys(notes + out.notes))  # photo notes (names kept for the user) + the pipeline's
    metadata = out.metadata_with_hashes()
    for meta in metadata:  # the files keep no trace of the photos, not even their names
        meta["notes"] = [anonymise(note, photo_names(people(args.face, args.identity))) for note in notes]
        meta["scheduler"] = opts["scheduler"]
        if extras.pose_from is not None:  # what the control image is (never which photo)
            meta["control_image"] = "body pose of a reference photo (MediaPipe, drawn as OpenPose COCO-18)"
    out_dir = Path(opts["out"]).expanduser()
    written = [write_png(image, out_dir / f"{stem}_{meta['seed']}.png", meta, overwrite=args.overwrite)
               for image, meta in zip(out.images, metadata)]
    sheet = None
    if len(out.images) > 1 and not args.no_sheet:
        seeds = [m["seed"] for m in metadata]
        sheet = write_png(contact_sheet(out.images), out_dir / f"{stem}_{seeds[0]}-{seeds[-1]}_sheet.png",
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
