"""`facefact prepare PHOTOS --out DIR`: photos grouped by identity -> a FACT training set."""
from __future__ import annotations

import json
import sys
from facefact.cli.exit_codes import ExitCode
from facefact.cli.formatting import DefaultsHelpFormatter
from facefact.cli.outputs import prepare_output_folder
from facefact.cli.ray_flags import add_ray_flag, ray_run
from facefact.cli.settings_flags import add_setting_flags
from facefact.validation import arg_int


def register(subparsers) -> None:
    from facefact.training.prepare_settings import PrepareSettings

    parser = subparsers.add_parser(
        "prepare", help="turn photos grouped by person into a training set for `facefact train`",
        description="PHOTOS is a folder with one sub-folder per person (captions in optional sidecar "
                    "photo.txt files), or a CSV/JSONL manifest with columns path, identity[, caption]. "
                    "Writes the sample index (index/: JSON-Lines shards + manifest), per-sample files and "
                    "rejected.jsonl (every photo left out, and why). "
                    "Re-running the same command resumes an interrupted run and skips finished photos.",
        formatter_class=DefaultsHelpFormatter)
    parser.add_argument("photos", help="folder of per-person folders, or a .csv/.jsonl manifest")
    parser.add_argument("--out", required=True, help="output folder (the training set)")
    parser.add_argument("--no-identity-check", action="store_true",
                        help="skip the end check that each person's photos look like one person (and have no "
                             "near-duplicates); it embeds each crop once, in memory only")
    parser.add_argument("--workers", type=arg_int("--workers", low=1, high=4096), default=None,
                        help="processes analysing photos in parallel (default 1); with --ray: Ray actors across "
                             "the cluster, one per CPU of the cluster when not given")
    add_ray_flag(parser, "analyse the photos on a Ray cluster (Ray Data actors)")
    add_setting_flags(parser.add_argument_group("photo checks, crops and captions"), PrepareSettings)
    cache = parser.add_argument_group(
        "optional caches", "store the frozen encoders' outputs beside each sample, so `facefact train` skips "
                           "those forward passes; tied to the model that made them (training checks)")
    cache.add_argument("--cache-latents", action="store_true",
                       help="store the VAE posterior (mean, std) of each training crop; needs --base-model")
    cache.add_argument("--base-model", metavar="DIR|tiny",
                       help="the SD1.5-family or SDXL base model you will train with (its VAE), or 'tiny' / "
                            "'tiny-sdxl'")
    cache.add_argument("--cache-encoder-tokens", action="store_true",
                       help="store the TransFace tokens of each condition face; needs --encoder")
    cache.add_argument("--encoder", metavar="PATH|tiny", help="the TransFace checkpoint you will train with, or 'tiny'")
    parser.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from facefact.errors import ConfigError
    from facefact.training.prepare import PrepareSettings, prepare_dataset
    from facefact.cli.settings_flags import settings_from_args

    if args.cache_latents and not args.base_model:
        raise ConfigError("--cache-latents needs --base-model (the model whose VAE makes the latents)",
                          hint="add --base-model DIR (the folder you will train with) or --base-model tiny")
    if args.cache_encoder_tokens and not args.encoder:
        raise ConfigError("--cache-encoder-tokens needs --encoder (the TransFace checkpoint you will train with)",
                          hint="add --encoder PATH, or --encoder tiny")
    prepare_output_folder(args.out, "--out", recursive=True)  # samples/ab/ hold the per-sample temporaries
    settings = settings_from_args(args, PrepareSettings)
    with ray_run(args):  # before any photo is listed
        summary = prepare_dataset(args.photos, args.out, settings, workers=args.workers, progress=not args.quiet,
                                  ray=args.ray,
                                  cache_latents=args.base_model if args.cache_latents else None,
                                  cache_encoder_tokens=args.encoder if args.cache_encoder_tokens else None,
                                  check_people=not args.no_identity_check)
    print(json.dumps(summary, indent=1))
    for finding in summary["identity_checks"]:
        if finding["kind"] == "outlier":
            print(f"note: {finding['message']}: {', '.join(finding['photos'])}", file=sys.stderr)
        else:
            print(f"note: '{finding['identity']}' has near-duplicate photos (similarity {finding['similarity']}): "
                  f"{' and '.join(finding['photos'])}", file=sys.stderr)
    if summary["identities_with_one_photo"]:
        print(f"note: {len(summary['identities_with_one_photo'])} identities have a single usable photo; "
              "face shuffle needs at least two per person")
    return ExitCode.OK if summary["accepted"] else ExitCode.PROBLEM_FOUND
