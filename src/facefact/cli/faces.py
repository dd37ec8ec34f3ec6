"""`facefact faces inspect PHOTO...`: faces, quality and identity similarity of photos, offline."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from facefact.cli.exit_codes import ExitCode
from facefact.cli.terminal import safe_text
from facefact.errors import FaceError, FaceQualityError, ImageError
from facefact.validation import arg_float


def register(subparsers) -> None:
    parser = subparsers.add_parser("faces", help="inspect faces in photos (detection, quality, identity)",
                                   description="Face analysis tools.")
    sub = parser.add_subparsers(dest="faces_command", metavar="ACTION")
    inspect = sub.add_parser("inspect", help="list faces, quality and the identity-similarity matrix",
                             description="Detect faces in each photo, report score and quality, and compare "
                                         "the main face of every photo with every other. Exit code 0 when every "
                                         "photo has a usable face, 3 (problem found) otherwise.")
    inspect.add_argument("photos", nargs="+", metavar="PHOTO", help="photo files (JPEG, PNG, WebP, ...)")
    inspect.add_argument("--embedder", choices=["sface", "dlib", "insightface"], default="sface",
                         help="identity model (default: sface)")
    inspect.add_argument("--strict", action="store_true", help="refuse photos with more than one face")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of tables")
    inspect.add_argument("--debug-dir", type=Path, metavar="DIR",
                         help="write overlays (boxes, landmarks, masks) and aligned crops here")
    inspect.add_argument("--min-size", type=arg_float("--min-size", low=0), default=None, metavar="PX",
                         help="smallest usable face (px)")
    inspect.add_argument("--mask-method", choices=["grabcut", "ellipse", "mediapipe"], default="grabcut",
                         help="how the face and head masks are found (default: grabcut)")
    inspect.set_defaults(func=run_inspect)
    parser.set_defaults(func=lambda args: (parser.print_help(), ExitCode.USER_ERROR)[1])


def _inspect_one(fa, path: str, args) -> dict:
    from facefact.faces.debug import write_debug_images
    from facefact.faces.numbering import largest, number_faces

    result = {"photo": path, "faces": [], "main_face": None, "problems": [], "notes": []}
    try:
        rgb = fa.load(path)
    except ImageError as err:
        result["problems"].append({"error": err.message, "hint": err.hint})
        return result
    result["size"] = [int(rgb.shape[1]), int(rgb.shape[0])]
    numbered = number_faces(fa.get(rgb))  # the numbering generate's PHOTO#N and the template use
    result["faces"] = [{"number": n.number, **n.face.as_dict()} for n in numbered]
    main = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the same note goes into the result instead
            main = fa.get_one(rgb, strict=args.strict, path=path)
    except FaceQualityError as err:  # still usable for comparison; tell the user why not for FACT
        result["problems"].append({"error": err.message, "hint": err.hint})
        main = largest(numbered).face
    except FaceError as err:
        result["problems"].append({"error": err.message, "hint": err.hint})
    if main is None:
        return result
    result["notes"] = list(main.notes)
    result["main_face"] = next(n.number for n in numbered if n.face.bbox == main.bbox)
    result["_embedding"] = fa.embed(rgb, main)
    if args.debug_dir:
        masks = fa.masks(rgb, main)
        stem = f"{len(list(args.debug_dir.glob('*_overlay.png'))) if args.debug_dir.exists() else 0:02d}_{Path(path).stem}"
        written = write_debug_images(args.debug_dir, stem, rgb, numbered, masks,
                                     fa.align(rgb, main),
                                     fa.fact_condition(rgb, main, masks))
        result["debug_images"] = [str(p) for p in written]
        result["mask_method"] = masks.method
    return result


def run_inspect(args) -> int:
    import numpy as np

    from facefact.faces import FaceAnalysis, QualityThresholds, cosine_similarity

    thresholds = QualityThresholds(min_size_px=args.min_size) if args.min_size is not None else None
    fa = FaceAnalysis(embedder=args.embedder, thresholds=thresholds, mask_method=args.mask_method)
    results = [_inspect_one(fa, str(p), args) for p in args.photos]
    with_face = [r for r in results if "_embedding" in r]
    matrix = cosine_similarity(np.stack([r["_embedding"] for r in with_face]),
                               np.stack([r["_embedding"] for r in with_face])) if with_face else np.zeros((0, 0))
    report = {
        "analysis": fa.describe(),
        "photos": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
        "similarity": {"photos": [r["photo"] for r in with_face], "cosine": np.round(matrix, 4).tolist(),
                       "threshold": fa.embedder.threshold},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_tables(report)
    return ExitCode.PROBLEM_FOUND if any(r["problems"] for r in results) else ExitCode.OK


def _user(text) -> str:
    """User text (file names, messages) for rich: no escape sequences, no rich markup."""
    from rich.markup import escape

    return escape(safe_text(text))


def faces_table(photos: list[dict]):
    """One row per face, narrow enough for an 80-column terminal: the face's top-left corner instead
    of its whole box (size gives the extent; --json has the box), a * on the face used, and long
    photo names folded onto more lines rather than cut."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0), caption_justify="left",
                  caption="faces numbered from 1, left to right; * the face used (the largest); "
                          "another: --face PHOTO#N")
    table.add_column("photo", overflow="fold", max_width=26)
    for name in ("face", "score", "at x,y", "size", "sharp", "yaw", "roll", "cut"):
        table.add_column(name, justify="left" if name in ("face", "at x,y") else "right", no_wrap=True)
    for photo in photos:
        for i, face in enumerate(photo["faces"]):
            q = face["quality"]
            used = "*" if face["number"] == photo["main_face"] else ""
            table.add_row(_user(Path(photo["photo"]).name) if i == 0 else "", f"{face['number']}{used}",
                          f"{face['score']:.2f}", ",".join(f"{v:.0f}" for v in face["bbox"][:2]),
                          f"{q['size_px']:.0f}", f"{q['sharpness']:.3f}", f"{q['yaw']:+.0f}", f"{q['roll']:+.0f}",
                          f"{q['cut_off']:.0%}")
        if not photo["faces"]:
            table.add_row(_user(Path(photo["photo"]).name), "-", "", "", "", "", "", "", "")
    return table


def _print_tables(report: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    user = _user
    console = Console(soft_wrap=True)  # long paths and hints stay on one line (greppable)
    info = report["analysis"]
    console.print(f"detector [bold]{info['detector']}[/], embedder [bold]{info['embedder']}[/] "
                  f"(same person if cosine >= {info['same_person_cosine_threshold']}), masks {info['mask_method']}")
    table = faces_table(report["photos"])
    console.print(table)
    for photo in report["photos"]:
        for note in photo["notes"]:
            console.print(f"[yellow]note[/] {user(photo['photo'])}: {user(note)}")
        for problem in photo["problems"]:
            console.print(f"[red]problem[/] {user(photo['photo'])}: {user(problem['error'])}\n"
                          f"  hint: {user(problem['hint'])}")
        for path in photo.get("debug_images", []):
            console.print(f"wrote {user(path)}")
    sim = report["similarity"]
    if len(sim["photos"]) > 1:
        matrix = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0), title="identity cosine similarity",
                       title_justify="left")
        matrix.add_column("#", justify="right", no_wrap=True)
        matrix.add_column("photo", overflow="fold", max_width=26)
        for i in range(len(sim["photos"])):
            matrix.add_column(str(i), justify="right", no_wrap=True)
        for i, (name, row) in enumerate(zip(sim["photos"], sim["cosine"])):
            cells = [f"[green]{v:.3f}[/]" if v >= sim["threshold"] else f"{v:.3f}" for v in row]
            matrix.add_row(str(i), user(Path(name).name), *cells)
        console.print(matrix)
