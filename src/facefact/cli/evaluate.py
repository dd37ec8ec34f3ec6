"""`facefact evaluate`: generate identity x prompt x seed x method, measure, write results and a report.

    facefact evaluate --identities people/ --prompts default --seeds 4 \\
        --method fact:0.5 --method fact:1.0 --method base --out runs/fact --model tiny
    facefact evaluate report runs/a runs/b --out compare.html
"""
from __future__ import annotations

import warnings
from pathlib import Path

from facefact.cli.formatting import DefaultsHelpFormatter
from facefact.cli.model_flags import add_model_flags, is_tiny, model_locations
from facefact.cli.outputs import prepare_output_file, prepare_output_folder
from facefact.cli.ray_flags import add_ray_flag, ray_run
from facefact.cli.terminal import safe_text
from facefact.cli.threads import add_threads_flag, torch_threads
from facefact.errors import ConfigError
from facefact.cli.settings_flags import add_setting_flags, add_size_flag, settings_from_args
from facefact.pipelines.settings import GenerationSettings
from facefact.validation import arg_int, arg_seed

# The generation settings evaluate takes as flags (FACT's own knobs are each --method's), and its default.
EVAL_SETTINGS = ("negative_prompt", "steps", "guidance", "cfg_face", "scheduler")
EVAL_STEPS = 30


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="measure identity, prompt following, diversity and decoupling of methods",
        description="Generate every identity x prompt x seed x method, then measure face detection, identity "
                    "similarity (with an embedder FACT is not conditioned on), CLIP-T, diversity across seeds, "
                    "change outside the face vs the no-face control, time and memory. Writes results.json, "
                    "results.csv, aggregate.csv and a self-contained report.html; re-running reuses images.",
        formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--identities", type=Path, metavar="DIR",
                        help="folder with one sub-folder of reference photos per person (or a flat folder of photos)")
    parser.add_argument("--prompts", default="default", metavar="FILE",
                        help="a .txt (one prompt a line) or .yaml prompt file; 'default' (when not given): the "
                             "shipped set")
    parser.add_argument("--max-prompts", type=arg_int("--max-prompts", low=1), default=None, metavar="N",
                        help="use only the first N prompts")
    parser.add_argument("--seeds", type=arg_int("--seeds", low=1, high=10_000), default=2, metavar="N",
                        help="seeds per prompt (seed, seed+1, ...)")
    parser.add_argument("--seed", type=arg_seed("--seed"), default=0, help="first seed")
    parser.add_argument("--method", action="append", dest="methods", metavar="SPEC[+MODEL]",
                        help="fact:SCALE | base | ipadapter-faceid:PATH[@SCALE]; repeat to compare "
                             "(default: fact:0.5 and base). +MODEL: on another model than the run's - tiny, "
                             "tiny-sdxl or a --named-model - e.g. --model tiny --method fact:0.5 --method "
                             "fact:0.5+tiny-sdxl compares SDXL FACT with SD1.5 FACT (each gets its own base control)")
    parser.add_argument("--named-model", action="append", dest="named_models", default=[],
                        metavar="NAME=BASE[,ADAPTER,ENCODER]",
                        help="a further model for methods written SPEC+NAME (e.g. xl=sdxl-folder,fact-xl.safetensors,"
                             "transface.pt with --method fact:0.5+xl); its base family (SD1.5 / SDXL) comes from its "
                             "UNet config")
    parser.add_argument("--no-control", action="store_true",
                        help="do not add the 'base' control automatically (no decoupling metrics)")
    parser.add_argument("--out", type=Path, default=Path("facefact-eval"), metavar="DIR", help="run folder")
    add_model_flags(parser, base_help="the run's base model, SD1.5 or SDXL: diffusers folder, hub id or single "
                                      ".safetensors file ('tiny' / 'tiny-sdxl': the built-in ones)")
    g = parser.add_argument_group("generation settings (as in `facefact generate`; FACT's scale, window and "
                                  "combine mode are per --method)")
    add_setting_flags(g, GenerationSettings, only=EVAL_SETTINGS, defaults={"steps": EVAL_STEPS},
                      help_texts={"negative_prompt": "what the images should not show (default: the prompt set's)"})
    add_size_flag(g, "each model's own: 512 on SD1.5, 1024 on SDXL, 128 on the tiny models; give one to compare "
                     "families at one size", one_side_flags=False)
    add_threads_flag(parser)
    parser.add_argument("--embedder", action="append", dest="embedders", metavar="NAME",
                        help="identity model for evaluation: sface | dlib | arcface:PATH.onnx; repeat for "
                             "several, the first is primary (default: sface)")
    parser.add_argument("--clip", default=None, metavar="PATH",
                        help="CLIPModel folder or cached hub id for CLIP-T (without it CLIP-T is unavailable)")
    parser.add_argument("--arcface", default=None, metavar="ONNX", help="ArcFace ONNX for ipadapter-faceid")
    parser.add_argument("--compare", action="append", type=Path, default=[], metavar="RUN_DIR",
                        help="earlier runs to compare with in the report")
    parser.add_argument("--keep-embeddings", action="store_true",
                        help="also save output identity embeddings (embeddings.npz); references are never saved")
    parser.add_argument("--show-references", action="store_true",
                        help="embed thumbnails of the reference photos in report.html (off: the report is made "
                             "to be shared, the references are the users' own photos)")
    add_ray_flag(parser, "generate the images on a Ray cluster (Ray Data actors, one pipeline each, on a GPU "
                         "when the cluster has them); the metrics are measured here")
    parser.add_argument("--workers", type=arg_int("--workers", low=1, high=4096), default=None, metavar="N",
                        help="with --ray: pipelines across the cluster (one per GPU of the cluster when not given, "
                             "else one per CPU)")
    parser.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_evaluate)

    sub = parser.add_subparsers(dest="evaluate_command", metavar="report")
    report = sub.add_parser("report", help="HTML report of finished runs, compared side by side",
                            description="Write one self-contained HTML report of one or more evaluation runs.")
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders of `facefact evaluate`")
    report.add_argument("--out", dest="report_out", type=Path, default=Path("facefact-report.html"),
                        metavar="FILE", help="the HTML file to write (default: facefact-report.html)")
    report.add_argument("--max-seeds", type=arg_int("--max-seeds", low=1, high=100), default=2,
                        help="seed thumbnails per grid cell")
    report.add_argument("--show-references", action="store_true",
                        help="embed thumbnails of the reference photos (read again from the run's identities folder)")
    report.set_defaults(func=run_report)


def run_report(args) -> int:
    from facefact.evaluation.report import report_runs

    prepare_output_file(args.report_out, "--out")
    path = report_runs(args.runs, args.report_out, max_seeds_in_grid=args.max_seeds,
                       show_references=args.show_references)
    print(f"report: {path}")
    return 0


def _print_summary(results) -> None:
    primary = results.config["embedders"][0]
    cols = ["detection_rate", f"id_sim_{primary}", "clip_t", "drift_outside_px", "div_image_px", "time_s"]
    print("method".ljust(24) + "base".ljust(6) + "".join(c.rjust(18) for c in cols))
    for agg in results.aggregate:
        cells = "".join(("-" if agg.get(c) != agg.get(c) else f"{agg[c]:.3f}").rjust(18) for c in cols)
        print(agg["method"].ljust(24) + (agg.get("base_family") or "-").ljust(6) + cells)


def models_of_run(args) -> dict:
    """base_model / adapter / encoder as `facefact generate` finds them (flag > environment > config
    file > the known models; --model tiny: the built-in ones), every missing file named now. Runs
    without a FACT method need only the base model."""
    from facefact.cli import config as cli_config

    config, config_path = cli_config.load_config(args.config)
    if any(spec.startswith("fact") for spec in (args.methods or ["fact"])):
        return model_locations(args, config, config_path)
    if is_tiny(args):
        return {"base_model": args.base_model or args.model, "adapter": None, "encoder": None}
    directory = cli_config.models_dir(args.models_dir, config)
    return {"base_model": cli_config.resolve_setting("base_model", args.base_model, config, config_path,
                                                     directory).value, "adapter": None, "encoder": None}


def named_models(specs: list[str]) -> dict[str, dict]:
    """--named-model NAME=BASE[,ADAPTER,ENCODER] values -> {NAME: {model, adapter, encoder}}, each
    local file that does not exist named now (hub ids are looked up when loaded)."""
    import re

    from facefact.cli.model_flags import TINY_MODELS
    from facefact.pipelines.registry import looks_like_hub_id

    out = {}
    for spec in specs:
        name, equals, rest = spec.partition("=")
        parts = rest.split(",") if equals else []
        if not re.fullmatch(r"[\w-]+", name) or len(parts) not in (1, 3) or not all(parts):
            raise ConfigError(f"--named-model {spec}: write NAME=BASE or NAME=BASE,ADAPTER,ENCODER",
                              hint="NAME: letters, digits, - and _; e.g. xl=sdxl-folder,fact-xl.safetensors,transface.pt")
        if name in TINY_MODELS or name in out:
            raise ConfigError(f"--named-model {spec}: the name {name} is taken", hint="choose another NAME")
        for part in parts:
            if part not in ("tiny", *TINY_MODELS) and not Path(part).expanduser().exists() \
                    and not looks_like_hub_id(part):
                raise ConfigError(f"--named-model {spec}: {part} does not exist", path=part,
                                  hint="give an existing file or folder, or a hub id")
        out[name] = dict(zip(("model", "adapter", "encoder"), parts))
    return out


def run_evaluate(args) -> int:
    from facefact.evaluation import evaluate
    from facefact.evaluation.report import write_report
    from facefact.evaluation.results import EvalResults

    if args.identities is None:
        raise ConfigError("--identities is required", hint="facefact evaluate --identities DIR --out RUN_DIR")
    if args.workers is not None and args.ray is None:
        raise ConfigError("--workers is the number of pipelines on a Ray cluster; it needs --ray",
                          hint="add --ray ADDRESS (or --ray for a private Ray instance on this machine)")
    ray_context = ray_run(args)  # before any image is planned
    generation = settings_from_args(args, GenerationSettings, defaults={"steps": EVAL_STEPS})
    prepare_output_folder(args.out, "--out")
    earlier = [EvalResults.load(d) for d in args.compare]  # before any image is generated
    others = named_models(args.named_models)
    where = models_of_run(args)
    threads = torch_threads(args.threads, tiny=is_tiny(args), device=args.device)
    with warnings.catch_warnings(record=True) as caught, threads, ray_context:
        warnings.simplefilter("always")
        results = evaluate(
            args.identities, args.prompts, methods=args.methods or ["fact:0.5", "base"], seeds=args.seeds,
            first_seed=args.seed, out=args.out, model=where["base_model"], adapter=where["adapter"],
            encoder=where["encoder"],
            generation=generation, device=args.device, dtype=args.dtype,
            embedders=args.embedders or ["sface"], clip=args.clip, max_prompts=args.max_prompts,
            arcface_onnx=args.arcface, add_controls=not args.no_control, keep_embeddings=args.keep_embeddings,
            show_references=args.show_references, progress=not args.no_progress, cpu_threads=args.threads, ray=args.ray,
            workers=args.workers, named_models=others)
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"note: {safe_text(w.message)}")
    for note in results.notes:
        print(f"note: {safe_text(note)}")
    _print_summary(results)
    report = args.out / "report.html"
    if args.compare:
        write_report([results] + earlier, report,
                     show_references=args.show_references)
    print(f"results: {args.out / 'results.json'}, {args.out / 'results.csv'}; report: {report}")
    return 0
