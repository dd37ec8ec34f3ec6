"""`facefact identity`: save a person's face tokens to a file (opt-in), or show what one holds.

    facefact identity save --face a.jpg --face b.jpg [--combine weighted] -o alice.fid [model flags]
    facefact identity show alice.fid
    facefact generate --identity alice.fid --prompt "..."

Faces are personal data: nothing is written unless this command is run. A `.fid` holds face
tokens (not the photos, not their names) tied to the encoder and adapter they were made with.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from facefact.cli.outputs import prepare_output_file
from facefact.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser("identity", help="save a person's face tokens to a .fid file, or show one",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="identity_command", metavar="ACTION")
    save = sub.add_parser("save", help="encode reference photos once and write their face tokens (.fid)")
    save.add_argument("--face", action="append", required=True, metavar="PHOTO",
                      help="reference photo of the person; repeat for several photos")
    save.add_argument("-o", "--out", required=True, help="the file to write (NAME.fid)")
    save.add_argument("--combine", choices=["concat", "mean", "weighted"], default="concat",
                      help="how several photos combine (default concat: 16 tokens per photo, as FACT)")
    save.add_argument("--overwrite", action="store_true", help="replace an existing file")
    from facefact.cli.model_flags import add_model_flags

    add_model_flags(save, "models (as for generate: the identity only works with these)")
    save.set_defaults(func=run_save)
    show = sub.add_parser("show", help="what a .fid file holds (no model needed)")
    show.add_argument("file", metavar="FILE.fid", help="a saved identity (`facefact identity save`)")
    show.set_defaults(func=run_show)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_save(args) -> int:
    from facefact.cli.model_flags import load_pipeline, model_locations
    from facefact.faces import FaceAnalysis
    from facefact.cli import config as cli_config
    from facefact.pipelines.identity import save_identity

    out = Path(args.out).expanduser()
    if out.suffix != ".fid":
        raise ConfigError(f"-o {out}: a saved identity's name ends in .fid", path=out)
    prepare_output_file(out, "-o")  # a folder in the way, a read-only place: said before any work
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists", path=out, hint="pass --overwrite to replace it, or choose another name")
    config, config_path = cli_config.load_config(args.config)
    model_locations(args, config, config_path)  # every missing model file named before the photos are analysed
    analysis = FaceAnalysis()
    from facefact.pipelines.face_tokens import analyse_photos

    notes: list[str] = []
    pixels, qualities = analyse_photos(analysis, args.face, notes)  # before any weights are loaded
    pipe = load_pipeline(args, config, config_path, analysis)
    faces = pipe.encode_faces(face_pixels=pixels, qualities=qualities, combine=args.combine)
    save_identity(pipe, faces, out)
    for note in dict.fromkeys(notes + faces.notes):
        print(f"note: {note}", file=sys.stderr)
    print(out)
    return 0


def run_show(args) -> int:
    from facefact.pipelines.identity import read_identity

    print(json.dumps(read_identity(Path(args.file).expanduser()).summary(), indent=1))
    return 0
