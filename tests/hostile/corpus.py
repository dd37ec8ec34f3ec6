"""The hostile-input corpus: bad photos, checkpoints, settings, outputs, data sets and prompt files,
each paired with the command line that meets it and what facefact must do (issue 13).

    cases = build_corpus(root)   # writes the bad files under root, returns [Case, ...]

A case expects an exit code from the documented table (facefact.cli.exit_codes), words in the
output that name the file or setting, and - unless it is allowed to write - no change at all in its
folder (nothing half-written). Every case also gets: no traceback, no raw escape character, an end
within the runner's time limit and memory limit.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import corpus_files as cf

USER_ERROR, PROBLEM_FOUND, OK = 2, 3, 0
GENERATE = ["generate", "--model", "tiny", "--prompt", "a portrait", "--steps", "1", "--size", "64", "--quiet"]


@dataclass
class Case:
    id: str
    group: str
    argv: list[str]
    code: int
    mentions: list[str]
    cwd: Path
    writes: bool = False                              # allowed to change its folder
    check: Callable[["Case", dict], None] | None = None  # extra assertions on the result
    notes: dict = field(default_factory=dict)
    max_file_bytes: int | None = None                 # a "full disk": no file may grow past this


class Corpus:
    def __init__(self, root: Path):
        self.root = root
        self.cases: list[Case] = []

    def folder(self, case_id: str) -> Path:
        path = self.root / case_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, case_id: str, group: str, argv, code: int, *mentions: str, writes: bool = False,
            check=None, cwd: Path | None = None, max_file_bytes: int | None = None) -> Case:
        case = Case(case_id, group, [str(a) for a in argv], code, list(mentions), cwd or self.folder(case_id),
                    writes, check, max_file_bytes=max_file_bytes)
        self.cases.append(case)
        return case


# ---- photos: every bad photo through `faces inspect` (3: problem found) and `generate` (2) ------------
def _photo_makers(folder: Path) -> dict[str, Path | str | None]:
    astronaut = cf.ASTRONAUT
    return {
        "fifo": cf.fifo(folder, "pipe.jpg"),
        "dev_zero": "/dev/zero",
        "dev_null": "/dev/null",
        "directory": cf.directory(folder, "album.jpg"),
        "symlink_loop": cf.symlink_loop(folder, "loop.jpg"),
        "broken_symlink": cf.broken_symlink(folder, "gone.jpg"),
        "socket": cf.unix_socket(folder, "sock.jpg"),
        "missing": folder / "missing.jpg",
        "empty": cf.write(folder, "empty.jpg", b""),
        "text": cf.write(folder, "notes.jpg", "this is not a photo\n"),
        "html": cf.write(folder, "page.jpg", "<html><body>404 not found</body></html>"),
        "truncated_jpeg": cf.truncated(folder, "cut.jpg", astronaut, 2000),
        "header_only_jpeg": cf.truncated(folder, "head.jpg", astronaut, 300),
        "corrupt_png": cf.corrupt_png(folder, "corrupt.png"),
        "strip_wide": cf.write(folder, "wide.png", cf.png_bytes(10000, 10)),
        "strip_tall": cf.write(folder, "tall.png", cf.png_bytes(10, 10000)),
        "one_pixel": cf.write(folder, "dot.png", cf.png_bytes(1, 1)),
        "nan_tiff": cf.float_tiff(folder, "nan.tif", float("nan")),
        "inf_tiff": cf.float_tiff(folder, "inf.tif", float("inf")),
        "bomb_header": cf.write(folder, "bomb.png", cf.png_header_only(100_000, 100_000)),
        "zero_width": cf.write(folder, "zero.png", cf.png_header_only(0, 64)),
        "heic_magic": cf.write(folder, "phone.jpg", b"\0\0\0\x18ftypheic" + b"\0" * 64),
        "avif": cf.write(folder, "pic.avif", b"\0\0\0\x1cftypavif" + b"\0" * 64),
        "svg": cf.write(folder, "logo.svg", '<svg xmlns="http://www.w3.org/2000/svg"></svg>'),
        "pdf": cf.write(folder, "scan.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"),
        "no_face": cf.write(folder, "plain.png", cf.png_bytes(256, 256)),
        "escape_name": cf.write(folder, "evil\x1b[31mred.jpg", "not an image"),
        "unreadable": _unreadable(folder),
    }


# Special files and degenerate images get their own `faces inspect` run; the rest share one.
SEPARATE_INSPECT = {"fifo", "dev_zero", "symlink_loop", "socket", "strip_wide", "nan_tiff", "bomb_header",
                    "escape_name", "one_pixel", "no_face"}


def _unreadable(folder: Path) -> Path | None:
    if os.geteuid() == 0:
        return None  # root reads anything
    path = cf.write(folder, "locked.jpg", cf.ASTRONAUT.read_bytes())
    path.chmod(0)
    return path


def _photo_mention(path) -> str:
    name = Path(str(path)).name
    return name.encode("unicode_escape").decode() if not name.isprintable() else name


def add_photo_cases(corpus: Corpus) -> None:
    shared = corpus.folder("photos")
    photos = {kind: path for kind, path in _photo_makers(shared).items() if path is not None}
    for kind, path in photos.items():
        out = corpus.folder(f"generate-{kind}") / "out"
        corpus.add(f"generate-{kind}", "photos", [*GENERATE, "--face", path, "--out", out], USER_ERROR,
                   _photo_mention(path))
        if kind in SEPARATE_INSPECT:
            corpus.add(f"inspect-{kind}", "photos", ["faces", "inspect", path], PROBLEM_FOUND, _photo_mention(path),
                       cwd=shared)
    for kind in ("fifo", "strip_wide", "nan_tiff", "dev_zero"):  # the same photo as a ControlNet's input
        out = corpus.folder(f"generate-control-{kind}") / "out"
        corpus.add(f"generate-control-{kind}", "photos", [*GENERATE, "--face", cf.ASTRONAUT, "--controlnet", "tiny",
                                                          "--control-image", photos[kind], "--out", out],
                   USER_ERROR, _photo_mention(photos[kind]))
    # the rest through one `faces inspect` (it takes many photos; each must be named, one problem each)
    rest = [path for kind, path in photos.items() if kind not in SEPARATE_INSPECT]
    case = corpus.add("inspect-all-others", "photos", ["faces", "inspect", *rest, cf.ASTRONAUT], PROBLEM_FOUND,
                      *[_photo_mention(p) for p in rest], cwd=shared)
    case.check = lambda case_, result: _assert(result["output"].count("problem ") >= len(rest),
                                               "not every bad photo is reported as a problem")
    corpus.add("inspect-json", "photos", ["faces", "inspect", "--json", *rest[:6]], PROBLEM_FOUND,
               *[Path(str(p)).name for p in rest[:6]], cwd=shared)


# ---- checkpoints: `convert` refuses each (2), `models check` reports it (3) ---------------------------
def _checkpoint_makers(folder: Path, marker: Path) -> dict[str, Path | str]:
    import torch

    state = cf.tiny_adapter_state()
    first = next(iter(state))
    nan_state = {**state, first: torch.full_like(state[first], float("nan"))}
    inf_state = {**state, first: torch.full_like(state[first], float("inf"))}
    return {
        "raw_pickle": cf.raw_pickle(folder, "evil.ckpt", marker),
        "zip_bomb": cf.zip_bomb(folder, "bomb.ckpt"),
        "python_object": cf.save_torch(folder, "object.ckpt", {**state, "extra": cf.RunsCode(marker)}),
        "bool_tensor": cf.save_safetensors(folder, "bool.safetensors", {**state, first: state[first] > 0}),
        "int8_tensor": cf.save_safetensors(folder, "int8.safetensors", {**state, first: state[first].to(torch.int8)}),
        "complex_tensor": cf.save_torch(folder, "complex.ckpt", {**state, first: state[first].to(torch.complex64)}),
        "nan_weights": cf.save_safetensors(folder, "nan.safetensors", nan_state),
        "inf_weights": cf.save_torch(folder, "inf.ckpt", inf_state),
        "meta_not_json": cf.adapter_with_metadata(folder, "meta_text.safetensors", "{heads: 12"),
        "meta_list": cf.adapter_with_metadata(folder, "meta_list.safetensors", "[12, 64]"),
        "meta_unknown_key": cf.adapter_with_metadata(folder, "meta_key.safetensors", '{"heads": 4, "colour": 1}'),
        "meta_heads_zero": cf.adapter_with_metadata(folder, "meta_zero.safetensors", '{"heads": 0}'),
        "meta_heads_text": cf.adapter_with_metadata(folder, "meta_str.safetensors", '{"heads": "4"}'),
        "meta_heads_negative": cf.adapter_with_metadata(folder, "meta_neg.safetensors", '{"dim_head": -8}'),
        "sdxl_layout": cf.sdxl_layout_adapter(folder, "sdxl.ckpt"),
        "wide_2048": cf.wide_adapter(folder, "wide.ckpt"),
        "bad_header": cf.bad_safetensors_header(folder, "header.safetensors"),
        "truncated": cf.truncated(folder, "cut.ckpt", cf.PARITY / "adapter.ckpt", 20_000),
        "empty": cf.write(folder, "empty.ckpt", b""),
        "text": cf.write(folder, "readme.ckpt", "see https://example.org for the weights\n"),
        "html": cf.write(folder, "page.safetensors", "<html>403 Forbidden</html>"),
        "fifo": cf.fifo(folder, "pipe.ckpt"),
        "dev_zero": "/dev/zero",
        "directory": cf.directory(folder, "folder.ckpt"),
        "symlink_loop": cf.symlink_loop(folder, "loop.ckpt"),
        "encoder_as_adapter": cf.PARITY / "transface.pt",
    }


def add_checkpoint_cases(corpus: Corpus) -> None:
    shared = corpus.folder("checkpoints")
    marker = shared / "PICKLE-RAN"
    makers = _checkpoint_makers(shared, marker)
    no_code_ran = lambda case, result: _assert(not marker.exists(), "a pickle payload ran")  # noqa: E731
    words = {"raw_pickle": ["raw pickle"], "zip_bomb": ["zip bomb"], "bool_tensor": ["bool"],
             "int8_tensor": ["int8"], "complex_tensor": ["complex64"], "nan_weights": ["NaN"],
             "inf_weights": ["NaN or infinite"], "meta_not_json": ["not valid JSON"], "meta_list": ["JSON object"],
             "meta_unknown_key": ["colour"], "meta_heads_zero": ["heads"], "meta_heads_text": ["heads"],
             "meta_heads_negative": ["dim_head"], "sdxl_layout": ["layout"], "wide_2048": ["2048", "SDXL"],
             "fifo": ["FIFO"], "dev_zero": ["device file"], "symlink_loop": ["symlink loop"],
             "encoder_as_adapter": ["not a FACT adapter"], "directory": ["directory"], "empty": ["empty"]}
    for kind, path in makers.items():
        out = corpus.folder(f"convert-{kind}") / "out.safetensors"
        heads = ["--heads", "4"] if kind == "wide_2048" else []  # its small resampler: 4 heads x 8
        corpus.add(f"convert-{kind}", "checkpoints", ["convert", "--adapter", path, "--out", out, *heads], USER_ERROR,
                   Path(str(path)).name, *words.get(kind, []), check=no_code_ran)
    for kind in ("raw_pickle", "zip_bomb", "nan_weights", "fifo", "bool_tensor", "python_object"):
        out = corpus.folder(f"convert-encoder-{kind}") / "enc.safetensors"
        corpus.add(f"convert-encoder-{kind}", "checkpoints", ["convert", "--encoder", makers[kind], "--out", out],
                   USER_ERROR, Path(str(makers[kind])).name, check=no_code_ran)
    for kind in ("fifo", "dev_zero", "directory"):  # a LoRA that is not a file
        out = corpus.folder(f"generate-lora-{kind}") / "out"
        corpus.add(f"generate-lora-{kind}", "checkpoints", [*GENERATE, "--face", cf.ASTRONAUT, "--lora", makers[kind],
                                                            "--out", out], USER_ERROR, Path(str(makers[kind])).name)
    for kind in ("raw_pickle", "nan_weights", "fifo", "meta_heads_zero"):
        corpus.add(f"models-check-{kind}", "checkpoints",
                   ["models", "check", "--adapter", makers[kind], "--encoder", cf.PARITY / "transface.pt"],
                   PROBLEM_FOUND, Path(str(makers[kind])).name, check=no_code_ran)


def _assert(ok: bool, message: str) -> None:
    assert ok, message
