"""`facefact template`: redraw faces of an existing photo with new people, keeping everything else.

    facefact template --template photo.jpg --face me.jpg [--target 2] -n 4 --seed 7 --out DIR
    facefact template --template group.jpg --face 1=alice.jpg --face 2=bob.jpg
    facefact template --template group.jpg --list-faces [--debug-dir DIR]

Order of work: settings, template, faces, targets and face photos are checked first (any mistake
costs nothing), then the model files, then weights are loaded. Heavy imports happen inside `run`.
Files: `{name}_{seed}.png` (name: --name, else the prompt's first words, never a photo's name);
the template and the face photos are copied nowhere unless --debug-dir / --save-control ask for it.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from facefact.cli.exit_codes import ExitCode
from facefact.errors import ConfigError

# `facefact template`'s flags, grouped; each is a TemplateSettings field (facefact.cli.settings_flags).
KNOB_GROUPS = {
    "faces and crop": ("max_faces", "min_face_px", "face_fraction", "crop_size", "black_out_others"),
    "main pass": ("strength", "guidance_scale", "steps", "scheduler", "fact_scale", "cfg_face"),
    "controls and mask": ("controls", "control_scales", "canny_low", "canny_high", "canny_face_grow", "face_points",
                          "landmark_source", "mask_grow", "mask_grow_below_eyes"),
    "pose stage (off by default)": ("pose_stage", "pose_fact_scale", "pose_steps"),
    "refine pass": ("refine", "refine_strength", "refine_control_scales", "refine_mask_grow", "refine_steps"),
}


_RELEASE_SCALES = {"face_pose": 1.0, "canny": 0.2}


def _names(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"'{text}' is not a comma-separated list of numbers", hint="e.g. 1.0,0.2") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "template", help="put a person into an existing photo (FACT's fixed-template mode)",
        description="Redraw one or several faces of a template photo with the people in --face, keeping every "
                    "other pixel. Faces are numbered left to right from 1 (see --list-faces); the default "
                    "target is the largest face. Defaults are the released ones.")
    p.add_argument("--template", required=True, metavar="PHOTO", help="the photo whose face(s) are redrawn")
    p.add_argument("--face", action="append", default=[], metavar="[N=]PHOTO",
                   help="photo of the new person; N=PHOTO puts that person into template face N (repeat for "
                        "several people); plain PHOTOs (repeatable) are one person for --target")
    p.add_argument("--target", type=int, metavar="N", help="template face for plain --face photos (default: largest)")
    p.add_argument("--list-faces", action="store_true", help="print the template's numbered faces and stop")
    p.add_argument("--debug-dir", type=Path, metavar="DIR",
                   help="write the numbered-faces overlay (and, when generating, crops, masks and controls)")
    p.add_argument("--save-control", action="store_true", help="write the control maps beside the images")
    from facefact.cli.settings_flags import add_setting_flags
    from facefact.pipelines.settings import GenerationSettings
    from facefact.template.settings import TemplateSettings

    add_setting_flags(p, TemplateSettings, only=("prompt", "negative_prompt"))
    add_setting_flags(p, GenerationSettings, only=("num_images", "seed"))
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--name", help="file name stem (default: the prompt's first words)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files of the same name")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _knob_flags(p)
    from facefact.cli.model_flags import add_model_flags

    m = add_model_flags(p, base_help="SD1.5 or SDXL base: diffusers folder, hub id or .safetensors/.ckpt file (its "
                                     "UNet config picks the family and the crop size; a 9-channel inpainting "
                                     "checkpoint works too); 'tiny' / 'tiny-sdxl': the built-in ones")
    m.add_argument("--tiny-kind", choices=["controlnet2", "unet9", "plain"], default="controlnet2",
                   help="with --model tiny / tiny-sdxl: two ControlNets (as released), a 9-channel inpainting UNet, "
                        "or neither")
    m.add_argument("--controlnet", action="append", default=[], metavar="PATH_OR_HUB_ID",
                   help="a ControlNet of the base's family, repeat in --controls order (released: an OpenPose one, "
                        "then a Canny one)")
    p.set_defaults(func=run)


def _knob_flags(p) -> None:
    from facefact.cli.settings_flags import add_setting_flags
    from facefact.template.settings import TemplateSettings

    comma_lists = {"controls": _names, "control_scales": _floats, "refine_control_scales": _floats}
    for title, names in KNOB_GROUPS.items():
        add_setting_flags(p.add_argument_group(title), TemplateSettings, only=names, parsers=comma_lists)


def settings_from_args(args):
    from facefact.cli.settings_flags import given_flags
    from facefact.template.settings import TemplateSettings

    given = given_flags(args, TemplateSettings)
    if args.controls:
        # Scales not given follow the maps: the release's 1.0 (face) / 0.2 (Canny), 0.8 when refining.
        given.setdefault("control_scales", tuple(_RELEASE_SCALES.get(c, 1.0) for c in args.controls))
        given.setdefault("refine_control_scales", (0.8,) * len(args.controls))
    return TemplateSettings(**given).validate()


def parse_faces(specs: list[str], target: int | None):
    """--face values -> what TemplatePortrait takes: a list of photos (one person) or {N: photo}."""
    numbered, plain = {}, []
    for spec in specs:
        head, sep, rest = spec.partition("=")
        if sep and head.strip().isdigit():
            number = int(head)
            if number in numbered:
                raise ConfigError(f"--face {number}= is given twice ({numbered[number]} and {rest})",
                                  hint="each template face gets one person; for several photos of one person use "
                                       "plain --face PHOTO --face PHOTO2 with --target N")
            numbered[number] = rest
        else:
            plain.append(spec)
    if numbered and plain:
        raise ConfigError("mix of --face N=PHOTO and plain --face PHOTO",
                          hint="number every photo (N=PHOTO), or give plain photos of one person with --target")
    if numbered:
        if target is not None:
            raise ConfigError("--target with --face N=PHOTO", hint="the numbers already say which face")
        return numbered
    if not plain:
        raise ConfigError("no --face photo given", hint="add --face PHOTO (or --list-faces to see the faces)")
    return {target: plain} if target is not None else plain


def list_faces(args, maker, settings) -> int:
    from facefact.template.debug import faces_overlay, save_png
    from facefact.template.faces import largest
    from facefact.template.portrait import load_template

    loaded = load_template(args.template, maker.analysis)
    faces = maker.faces(loaded.rgb, max_faces=settings.max_faces)
    default = largest(faces).number if faces else None
    if args.debug_dir:
        save_png(faces_overlay(loaded.rgb, faces), Path(args.debug_dir) / "template_faces.png")
    if args.json:
        print(json.dumps({"size": [int(loaded.rgb.shape[1]), int(loaded.rgb.shape[0])], "default_target": default,
                          "faces": [f.as_dict() for f in faces]}, indent=1))
        return 0 if faces else ExitCode.PROBLEM_FOUND
    h, w = loaded.rgb.shape[:2]
    print(f"template {w}x{h}: {len(faces)} face{'s' if len(faces) != 1 else ''} (numbered left to right)")
    for face in faces:
        small = " (too small to redraw)" if face.size_px < settings.min_face_px else ""
        print(f"  {face.describe()}{' (default target)' if face.number == default else ''}{small}")
    return 0 if faces else ExitCode.PROBLEM_FOUND  # as `faces inspect`: a check that found a problem


def check_model_files(args) -> str:
    """Every missing model file named at once, before the template and photos are analysed; returns
    the base model's family ("sd15" / "sdxl", from its UNet config), which sets the crop size."""
    from facefact.cli import config as cli_config
    from facefact.cli import model_flags
    from facefact.pipelines.loading import base_family
    from facefact.pipelines.registry import TINY_BASES

    config, config_path = cli_config.load_config(args.config)
    base = model_flags.model_locations(args, config, config_path)["base_model"]
    return TINY_BASES.get(base) or base_family(base)


def load_pipeline(args, analysis):
    """The FACT inpainting pipeline the template mode runs: tiny, or the models on disk / hub."""
    from facefact.cli import config as cli_config
    from facefact.cli import model_flags
    from facefact.template.tiny import tiny_kind_options

    config, config_path = cli_config.load_config(args.config)
    if model_flags.model_locations(args, config, config_path)["base_model"] in model_flags.TINY_MODELS:
        if args.controlnet:
            raise ConfigError(f"--model {args.model} has its own ControlNets; choose them with --tiny-kind, drop "
                              "--controlnet")
        options = tiny_kind_options(args.tiny_kind)
    else:
        options = {"controlnet": list(args.controlnet) or None}
    return model_flags.load_pipeline(args, config, config_path, analysis, kind="inpaint", **options)


def check_controlnet_count(args, settings) -> None:
    """One control map per ControlNet: said now, not after the weights are loaded."""
    from facefact.cli.model_flags import TINY_MODELS

    tiny = args.model in TINY_MODELS and not args.base_model
    count = (2 if args.tiny_kind == "controlnet2" else 0) if tiny else len(args.controlnet)
    if count and count != len(settings.controls):
        raise ConfigError(f"{count} ControlNet{'s' if count != 1 else ''} but {len(settings.controls)} control "
                          f"map{'s' if len(settings.controls) != 1 else ''} ({', '.join(settings.controls)})",
                          hint="give --controls with one map per --controlnet, in the same order "
                               "(e.g. --controls face_pose for an OpenPose ControlNet alone)")


def run(args) -> int:
    import logging

    from facefact.pipelines.loading import quiet_libraries

    quiet_libraries()
    logging.getLogger("facefact.pipelines").addHandler(logging.NullHandler())  # its notes are printed once, below
    from facefact.faces import FaceAnalysis
    from facefact.faces.types import FaceWarning
    from facefact.template.portrait import TemplatePortrait

    settings = settings_from_args(args)
    check_outputs(args, settings)  # before any work: nothing is generated for a place it cannot be written
    maker = TemplatePortrait(None, analysis=FaceAnalysis(), settings=settings)
    if args.list_faces:
        return list_faces(args, maker, settings)
    images = args.num_images or 1  # the range was checked by the flag (GenerationSettings.num_images)
    people = parse_faces(args.face, args.target)
    check_controlnet_count(args, settings)
    family = check_model_files(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FaceWarning)  # the same words come back as notes, printed once
        prepared = maker.prepare(args.template, people, family=family)  # every photo checked before weights load
        maker.use_pipeline(load_pipeline(args, maker.analysis))
        return generate_and_write(args, maker, prepared, images)


def check_outputs(args, settings) -> None:
    """Every place this run writes, checked up front, naming its flag: --out and --name (not for
    --list-faces, which writes only the overlay), --debug-dir."""
    from facefact.cli.outputs import check_file_name, check_name_stem, prepare_output_folder
    from facefact.pipelines.metadata import slug
    from facefact.pipelines.settings import MAX_SEED

    if args.debug_dir is not None:
        prepare_output_folder(args.debug_dir, "--debug-dir")
    if args.list_faces:
        return
    check_name_stem(args.name)
    out_dir = prepare_output_folder(args.out, "--out")
    stem = args.name or slug(settings.prompt, 48)
    check_file_name(out_dir, f".{stem}_{MAX_SEED}.png.XXXXXXXX.png.tmp", "--name")
    if args.debug_dir is not None:  # the longest debug picture's name
        check_file_name(Path(args.debug_dir), f".{stem}_face99_control_face_pose.png.XXXXXXXX.tmp", "--name")


def generate_and_write(args, maker, prepared, images: int) -> int:
    import torch
    from tqdm.auto import tqdm

    from facefact.cli.model_flags import is_tiny
    from facefact.pipelines.metadata import slug, write_png
    from facefact.template.debug import faces_overlay, save_png, write_plan_images

    stem = args.name or slug(prepared.settings.prompt, 48)
    out_dir = Path(args.out).expanduser()
    total = images * len(prepared.plans)
    bar = tqdm(total=total, desc="faces", unit="face", file=sys.stderr, disable=args.quiet or args.json, leave=False)
    threads = torch.get_num_threads()
    if is_tiny(args):  # tiny layers gain nothing from threads and lose a lot on a busy machine
        torch.set_num_threads(1)
    try:
        out = maker.generate(prepared, seed=args.seed, num_images=images, progress=lambda plan: bar.update(1))
    finally:
        bar.close()
        torch.set_num_threads(threads)
    written = [write_png(image, out_dir / f"{stem}_{meta['seed']}.png", meta, overwrite=args.overwrite)
               for image, meta in zip(out.images, out.metadata_with_hashes())]
    extra = []
    if args.save_control:
        extra += write_plan_images(out_dir, stem, out.plans, only_controls=True)
    if args.debug_dir:
        debug = Path(args.debug_dir)
        extra.append(save_png(faces_overlay(prepared.template.rgb, out.faces, [p.target for p in out.plans],
                                            out.plans), debug / f"{stem}_faces.png"))
        extra += write_plan_images(debug, stem, out.plans)
    if args.json:
        print(json.dumps({"images": [str(p) for p in written], "notes": out.notes, "extra_files": [str(p) for p in extra],
                          "metadata": out.metadata}, indent=1, ensure_ascii=False))
        return 0
    for note in out.notes:
        print(f"note: {note}", file=sys.stderr)
    for path in written:
        print(path)
    return 0
