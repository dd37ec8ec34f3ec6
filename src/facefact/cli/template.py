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

from facefact.errors import ConfigError

# flag dest -> TemplateSettings field (values given only; everything else keeps the released default)
_KNOBS = ["prompt", "negative_prompt", "max_faces", "min_face_px", "face_fraction", "crop_size", "strength",
          "guidance_scale", "steps", "scheduler", "fact_scale", "cfg_face", "canny_low", "canny_high",
          "canny_face_grow", "face_points", "landmark_source", "mask_grow", "mask_grow_below_eyes", "refine",
          "refine_strength", "refine_mask_grow", "refine_steps", "black_out_others", "pose_stage", "pose_fact_scale",
          "pose_steps"]


_RELEASE_SCALES = {"face_pose": 1.0, "canny": 0.2}


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
    p.add_argument("--prompt", help="text prompt (default: the release's fixed portrait prompt)")
    p.add_argument("--negative-prompt", dest="negative_prompt")
    p.add_argument("-n", "--num-images", dest="n", type=int, default=1, help="images (seeds seed..seed+n-1)")
    p.add_argument("--seed", type=int, help="first seed (random if not given; always in the metadata)")
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--name", help="file name stem (default: the prompt's first words)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _knob_flags(p)
    from facefact.cli.model_flags import add_model_flags

    m = add_model_flags(p, base_help="SD1.5 diffusers folder, hub id or .safetensors file (a 9-channel inpainting "
                                     "checkpoint works too)")
    m.add_argument("--tiny-kind", choices=["controlnet2", "unet9", "plain"], default="controlnet2",
                   help="with --model tiny: two ControlNets (as released), a 9-channel inpainting UNet, or neither")
    m.add_argument("--controlnet", action="append", default=[], metavar="PATH_OR_HUB_ID",
                   help="a ControlNet, repeat in --controls order (released: an OpenPose one, then a Canny one)")
    p.set_defaults(func=run)


def _knob_flags(p) -> None:
    from facefact.template.settings import CONTROL_KINDS, LANDMARK_SOURCES

    f = p.add_argument_group("faces and crop")
    f.add_argument("--max-faces", dest="max_faces", type=int, help="keep only the N largest template faces")
    f.add_argument("--min-face-px", dest="min_face_px", type=float, help="smallest face to redraw (default 48)")
    f.add_argument("--face-fraction", dest="face_fraction", type=float, help="face / crop side (default 0.7)")
    f.add_argument("--crop-size", dest="crop_size", type=int, help="crop the model works on (default 512)")
    f.add_argument("--keep-other-faces", dest="black_out_others", action="store_false", default=None,
                   help="do not black out the other faces in the model's input (they are never pasted over)")
    s = p.add_argument_group("main pass")
    s.add_argument("--strength", type=float, help="denoising strength (default 0.6)")
    s.add_argument("--guidance", dest="guidance_scale", type=float, help="guidance scale (default 5)")
    s.add_argument("--steps", type=int, help="nominal steps; strength x steps run (default 50)")
    s.add_argument("--scheduler", help="pndm (default), ddim, dpm++, dpm++karras, unipc, euler, euler_a")
    s.add_argument("--fact-scale", "--scale", dest="fact_scale", type=float, help="FACT scale (default 0.55)")
    s.add_argument("--no-cfg-face", dest="cfg_face", action="store_false", default=None)
    c = p.add_argument_group("controls and mask")
    c.add_argument("--controls", help=f"maps for the ControlNets, in order (default {','.join(CONTROL_KINDS)})")
    c.add_argument("--control-scales", dest="control_scales", help="main pass, one per control (default 1.0,0.2)")
    c.add_argument("--canny-low", dest="canny_low", type=int)
    c.add_argument("--canny-high", dest="canny_high", type=int)
    c.add_argument("--canny-face-grow", dest="canny_face_grow", type=float)
    c.add_argument("--face-points", dest="face_points", choices=["five", "dlib68"],
                   help="landmarks in the face map: the detector's 5, or OpenPose's 70 from dlib's 68-point model "
                        "(non-commercial licence)")
    c.add_argument("--landmark-source", dest="landmark_source", choices=list(LANDMARK_SOURCES))
    c.add_argument("--mask-grow", dest="mask_grow", type=float, help="default 0.04 sqrt(face area)")
    c.add_argument("--mask-grow-below-eyes", dest="mask_grow_below_eyes", type=float, help="default 0.1")
    q = p.add_argument_group("pose stage (off by default)")
    q.add_argument("--pose-stage", dest="pose_stage", action="store_true", default=None,
                   help="first draw a text-to-image portrait of the person and take the new face's landmarks "
                        "from it (the release's first step), not from the face photo")
    q.add_argument("--pose-fact-scale", dest="pose_fact_scale", type=float, help="default 0.5")
    q.add_argument("--pose-steps", dest="pose_steps", type=int, help="default: --steps")
    r = p.add_argument_group("refine pass")
    r.add_argument("--no-refine", dest="refine", action="store_false", default=None)
    r.add_argument("--refine-strength", dest="refine_strength", type=float, help="default 0.1")
    r.add_argument("--refine-control-scales", dest="refine_control_scales", help="default 0.8,0.8")
    r.add_argument("--refine-mask-grow", dest="refine_mask_grow", type=float, help="default 0.02")
    r.add_argument("--refine-steps", dest="refine_steps", type=int)


def settings_from_args(args):
    from facefact.template.settings import TemplateSettings

    given = {k: getattr(args, k) for k in _KNOBS if getattr(args, k, None) is not None}
    if args.controls:
        # Scales not given follow the maps: the release's 1.0 (face) / 0.2 (Canny), 0.8 when refining.
        given["controls"] = tuple(c.strip() for c in args.controls.split(",") if c.strip())
        given["control_scales"] = tuple(_RELEASE_SCALES.get(c, 1.0) for c in given["controls"])
        given["refine_control_scales"] = (0.8,) * len(given["controls"])
    for name in ("control_scales", "refine_control_scales"):
        if getattr(args, name):
            given[name] = _floats(getattr(args, name))
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
        return 0 if faces else 1
    h, w = loaded.rgb.shape[:2]
    print(f"template {w}x{h}: {len(faces)} face{'s' if len(faces) != 1 else ''} (numbered left to right)")
    for face in faces:
        small = " (too small to redraw)" if face.size_px < settings.min_face_px else ""
        print(f"  {face.describe()}{' (default target)' if face.number == default else ''}{small}")
    return 0 if faces else 1


def load_pipeline(args, analysis):
    """The FACT inpainting pipeline the template mode runs: tiny, or the models on disk / hub."""
    from facefact.cli.model_flags import check_device, model_locations
    from facefact.pipelines import registry
    from facefact.pipelines.build import load_fact_pipeline
    from facefact.template.tiny import tiny_kind_options

    config, config_path = registry.load_config(args.config)
    device = registry.resolve_setting("device", args.device, config, config_path).value
    dtype = registry.resolve_setting("dtype", args.dtype, config, config_path).value
    check_device(device)
    where = model_locations(args, config, config_path)
    if where["base_model"] == "tiny":
        if args.controlnet:
            raise ConfigError("--model tiny has its own ControlNets; choose them with --tiny-kind, drop --controlnet")
        options = tiny_kind_options(args.tiny_kind)
    else:
        options = {"controlnet": list(args.controlnet) or None}
    return load_fact_pipeline(where["base_model"], where["adapter"], where["encoder"], kind="inpaint",
                              device=device, dtype=dtype, face_analysis=analysis, **options)


def check_controlnet_count(args, settings) -> None:
    """One control map per ControlNet: said now, not after the weights are loaded."""
    count = (2 if args.tiny_kind == "controlnet2" else 0) if args.model == "tiny" and not args.base_model \
        else len(args.controlnet)
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
    maker = TemplatePortrait(None, analysis=FaceAnalysis(), settings=settings)
    if args.list_faces:
        return list_faces(args, maker, settings)
    if args.n < 1:
        raise ConfigError("-n must be at least 1")
    people = parse_faces(args.face, args.target)
    check_controlnet_count(args, settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FaceWarning)  # the same words come back as notes, printed once
        prepared = maker.prepare(args.template, people)  # every photo checked before any weights load
        maker.use_pipeline(load_pipeline(args, maker.analysis))
        return generate_and_write(args, maker, prepared)


def generate_and_write(args, maker, prepared) -> int:
    import torch
    from tqdm.auto import tqdm

    from facefact.pipelines.metadata import slug, write_png
    from facefact.template.debug import faces_overlay, save_png, write_plan_images

    if args.name and ("/" in args.name or "\\" in args.name or args.name.startswith(".")):
        raise ConfigError(f"--name '{args.name}' must be a plain file name stem")
    stem = args.name or slug(prepared.settings.prompt, 48)
    out_dir = Path(args.out).expanduser()
    total = args.n * len(prepared.plans)
    bar = tqdm(total=total, desc="faces", unit="face", file=sys.stderr, disable=args.quiet or args.json, leave=False)
    threads = torch.get_num_threads()
    if args.model == "tiny":  # tiny layers gain nothing from threads and lose a lot on a busy machine
        torch.set_num_threads(1)
    try:
        out = maker.generate(prepared, seed=args.seed, num_images=args.n, progress=lambda plan: bar.update(1))
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
