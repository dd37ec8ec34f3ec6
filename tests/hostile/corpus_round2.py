"""Corpus cases of issue 19: saved identities (.fid) damaged or forged, every output flag pointing at
a file / a read-only folder / out of its folder, a full disk for each kind of file written, damaged
JSON / safetensors where one is read, and huge templates."""
from __future__ import annotations

import json
import os
from pathlib import Path

import corpus_files as cf
from corpus import GENERATE, OK, PROBLEM_FOUND, USER_ERROR, Corpus, _assert
from corpus_settings import _cannot_write

FACE = str(cf.ASTRONAUT)
TEMPLATE = ["template", "--model", "tiny", "--steps", "2", "--no-refine", "--crop-size", "64", "--quiet"]
READ_ONLY = "/sys"  # a folder no one may write in, root included (sysfs)


# ---- saved identities ------------------------------------------------------------------------------
def _identity_files(folder: Path) -> dict[str, Path | str]:
    """A good .fid of the tiny models, one of another adapter, and forgeries of the good one."""
    import torch
    from safetensors.torch import load_file, save_file

    from facefact.model.tiny import tiny_face_adapter
    from facefact.pipelines import FACTStableDiffusionPipeline
    from facefact.pipelines.identity import save_identity

    pipe = FACTStableDiffusionPipeline.tiny()
    good = save_identity(pipe, pipe.encode_faces([FACE]), folder / "good.fid")
    other = FACTStableDiffusionPipeline.tiny()
    other.load_fact_adapter(tiny_face_adapter(other.unet, seed=9), encoder=other.face_encoder)
    made_elsewhere = save_identity(other, other.encode_faces([FACE]), folder / "other_model.fid")
    tensors = load_file(good)
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as handle:
        metadata = handle.metadata()
    tokens = tensors["tokens"]

    def forged(name: str, tokens_=None, null=None, extra=None, **meta) -> Path:
        state = {"tokens": tokens if tokens_ is None else tokens_, "null": tensors["null"] if null is None else null}
        state.update(extra or {})
        path = folder / f"{name}.fid"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path),
                  metadata={k: v for k, v in {**metadata, **meta}.items() if v is not None})
        return path

    def same(t):  # null tokens of the same (forged) shape
        return torch.zeros_like(t)

    wide = torch.zeros(1, 16, 7)
    zero = torch.zeros(1, 0, tokens.shape[2])
    many = torch.zeros(1, 200_000, tokens.shape[2])
    odd = torch.zeros(1, 17, tokens.shape[2])
    nan = tokens.clone()
    nan[0, 3, 5] = float("nan")
    return {
        "shape-3x5": forged("shape_3x5", torch.zeros(3, 5), torch.zeros(3, 5)),
        "width-7": forged("width_7", wide, same(wide)),
        "zero-tokens": forged("zero_tokens", zero, same(zero)),
        "200000-tokens": forged("many_tokens", many, same(many)),
        "17-tokens": forged("odd_tokens", odd, same(odd)),
        "weights-not-json": forged("weights_text", weights="{0.5,"),
        "num-photos-text": forged("photos_text", num_photos="abc"),
        "num-photos-zero": forged("photos_zero", num_photos="0"),
        "tokens-1e30": forged("huge", tokens * 1e30),
        "null-1e30": forged("huge_null", null=tensors["null"] * 1e30),
        "nan-token": forged("nan", nan),
        "combine-escape": forged("escape", combine="concat\x1b[2J\x1b]0;owned\x07"),
        "combine-unknown": forged("combine_sum", combine="sum"),
        "version-2": forged("version", format_version="2"),
        "unknown-key": forged("unknown_key", colour="blue"),
        "extra-tensor": forged("extra", extra={"photo": torch.zeros(4)}),
        "float16": forged("half", tokens.half(), tensors["null"].half()),
        "fingerprint-forged": forged("fingerprint", adapter_fingerprint="\x1b[31mred"),
        "weights-sum-2": forged("weights_sum", combine="weighted", weights="[2.0]"),
        "no-format": forged("no_format", format=None),
        "other-model": made_elsewhere,
        "fifo": cf.fifo(folder, "pipe.fid"),
        "directory": cf.directory(folder, "folder.fid"),
        "missing": folder / "missing.fid",
        "empty": cf.write(folder, "empty.fid", b""),
        "truncated": cf.truncated(folder, "cut.fid", good, 200),
        "dev-zero": "/dev/zero",
        "good": good,
    }


IDENTITY_WORDS = {  # what the message must say, beyond the file's name
    "shape-3x5": ["[3, 5]"], "width-7": ["7 wide", "32 wide"], "zero-tokens": ["empty"],
    "200000-tokens": ["too large"], "17-tokens": ["17 face tokens"], "weights-not-json": ["not valid JSON"], "num-photos-text": ["num_photos", "abc"],
    "num-photos-zero": ["num_photos"], "tokens-1e30": ["long"], "null-1e30": ["null"],
    "nan-token": ["NaN"], "combine-escape": ["combine"], "combine-unknown": ["sum"], "version-2": ["format_version"],
    "unknown-key": ["colour"], "extra-tensor": ["photo"], "float16": ["float16"],
    "fingerprint-forged": ["adapter_fingerprint"], "weights-sum-2": ["weights"], "no-format": ["not a facefact"],
    "other-model": ["another adapter"], "fifo": ["FIFO"], "directory": ["directory"], "missing": ["not found"],
    "empty": ["not a valid safetensors"], "truncated": ["not a valid safetensors"], "dev-zero": ["device file"],
}


def add_identity_cases(corpus: Corpus) -> None:
    shared = corpus.folder("identities")
    files = _identity_files(shared)
    for kind, words in IDENTITY_WORDS.items():
        path = files[kind]
        out = corpus.folder(f"fid-{kind}") / "out"
        name = Path(str(path)).name
        corpus.add(f"fid-{kind}", "identities", [*GENERATE, "--identity", path, "--out", out], USER_ERROR, name,
                   *words, check=_no_escape_echoed)
    for kind in ("shape-3x5", "combine-escape", "fifo", "num-photos-text", "no-format", "extra-tensor"):
        corpus.add(f"fid-show-{kind}", "identities", ["identity", "show", files[kind]], USER_ERROR,
                   Path(str(files[kind])).name, *IDENTITY_WORDS[kind], cwd=shared)
    corpus.add("fid-show-good", "identities", ["identity", "show", files["good"]], OK, "num_photos", cwd=shared,
               check=lambda case, result: _assert(json.loads(result["output"])["tokens"] == [1, 16, 32],
                                                  "identity show does not give the tokens' shape"))
    corpus.add("fid-good-with-other-region", "identities",  # two saved identities, one forged: named
               [*GENERATE, "--identity", f"{files['good']}@0,0,0.5,1", "--identity",
                f"{files['width-7']}@0.5,0,1,1", "--out", corpus.folder("fid-good-with-other-region") / "out"],
               USER_ERROR, "width_7.fid", "7 wide")


def _no_escape_echoed(case, result) -> None:
    _assert("owned" not in result["output"] or "\\x1b" in result["output"], "a terminal escape was echoed raw")


# ---- output flags up front ---------------------------------------------------------------------------
def add_more_output_cases(corpus: Corpus) -> None:
    def a_file(case_id: str) -> Path:
        return cf.write(corpus.folder(case_id), "taken", "a file, not a folder\n")

    template = [*TEMPLATE, "--template", FACE, "--face", FACE]
    adapter = cf.PARITY / "adapter.ckpt"
    cases = [  # (id, argv from the file in the way, words)
        ("template-out-is-file", lambda f: [*template, "--out", f], ["--out", "is a file"]),
        ("template-out-under-file", lambda f: [*template, "--out", f / "sub"], ["--out", "is a file"]),
        ("template-name-dotdot", lambda f: [*template, "--out", f.parent / "o", "--name", "../x"], ["--name", "../x"]),
        ("template-name-hidden", lambda f: [*template, "--out", f.parent / "o", "--name", ".x"], ["--name"]),
        ("template-name-too-long", lambda f: [*template, "--out", f.parent / "o", "--name", "n" * 300], ["--name"]),
        ("template-debug-dir-is-file", lambda f: [*template, "--out", f.parent / "o", "--debug-dir", f],
         ["--debug-dir", "is a file"]),
        ("template-list-debug-dir-is-file", lambda f: [*TEMPLATE, "--template", FACE, "--list-faces", "--debug-dir", f],
         ["--debug-dir", "is a file"]),
        ("gen-save-control-is-file", lambda f: [*GENERATE, "--face", FACE, "--controlnet", "tiny", "--control-image",
                                                FACE, "--save-control", f, "--out", f.parent / "o"],
         ["--save-control", "is a file"]),
        ("gen-name-dotdot", lambda f: [*GENERATE, "--face", FACE, "--out", f.parent / "o", "--name", "../x"],
         ["--name", "../x"]),
        ("identity-out-is-folder", lambda f: ["identity", "save", "--model", "tiny", "--face", FACE, "-o",
                                              _folder(f.parent / "dir.fid")], ["folder"]),
        ("identity-out-under-file", lambda f: ["identity", "save", "--model", "tiny", "--face", FACE, "-o",
                                               f / "a.fid"], ["-o", "is a file"]),
        ("prepare-out-under-file", lambda f: ["prepare", f.parent, "--out", f / "set", "--quiet"], ["is a file"]),
        ("eval-report-out-under-file", lambda f: ["evaluate", "report", f.parent, "--out", f / "r.html"],
         ["is a file"]),
    ]
    if _cannot_write(READ_ONLY):
        where = f"{READ_ONLY}/facefact-x"
        cases += [
            ("template-out-read-only", lambda f: [*template, "--out", where], ["--out", "cannot be created"]),
            ("template-debug-dir-read-only", lambda f: [*template, "--out", f.parent / "o", "--debug-dir", where],
             ["--debug-dir", "cannot be created"]),
            ("gen-save-control-read-only", lambda f: [*GENERATE, "--face", FACE, "--controlnet", "tiny",
                                                      "--control-image", FACE, "--save-control", where, "--out",
                                                      f.parent / "o"], ["--save-control", "cannot be created"]),
            ("identity-out-read-only", lambda f: ["identity", "save", "--model", "tiny", "--face", FACE, "-o",
                                                  f"{where}.fid"], ["-o", "cannot be created"]),
            ("prepare-out-read-only", lambda f: ["prepare", f.parent, "--out", where, "--quiet"], ["cannot be created"]),
            ("eval-out-read-only", lambda f: ["evaluate", "--identities", f.parent, "--out", where],
             ["--out", "cannot be created"]),
            ("eval-report-read-only", lambda f: ["evaluate", "report", f.parent, "--out", f"{where}.html"],
             ["cannot be created"]),
        ]
    for case_id, argv, words in cases:
        corpus.add(case_id, "outputs", argv(a_file(case_id)), USER_ERROR, *words)
    corpus.add("convert-out-read-only-under-dotdot", "outputs",
               ["convert", "--adapter", adapter, "--out", f"{READ_ONLY}/../{READ_ONLY}/x.safetensors"], USER_ERROR,
               "cannot be created")


def _folder(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


# ---- a full disk, for every kind of file written --------------------------------------------------------
def add_disk_full_cases(corpus: Corpus) -> None:
    """RLIMIT_FSIZE (see runner.py): each file may grow to `limit` bytes, so the first one larger fails."""
    adapter, encoder = cf.PARITY / "adapter.ckpt", cf.PARITY / "transface.pt"
    people = corpus.folder("full-people")
    (people / "ada").mkdir(exist_ok=True)
    (people / "ada" / "1.jpg").write_bytes(cf.ASTRONAUT.read_bytes())
    train_set = cf.prepared_set(corpus.folder("full-set"), "set", [cf.good_entry()])
    cases = [  # (id, argv given the case folder, byte limit, what the message names)
        ("convert-adapter", lambda f: ["convert", "--adapter", adapter, "--out", f / "a.safetensors"], 4096,
         "a.safetensors"),
        ("convert-encoder", lambda f: ["convert", "--encoder", encoder, "--out", f / "e.safetensors"], 4096,
         "e.safetensors"),
        ("identity-save", lambda f: ["identity", "save", "--model", "tiny", "--face", FACE, "-o", f / "a.fid"], 1024,
         "a.fid"),
        ("generate-png", lambda f: [*GENERATE, "--face", FACE, "--out", f / "out", "--name", "pic"], 1024, "pic_"),
        ("template-png", lambda f: [*TEMPLATE, "--template", FACE, "--face", FACE, "--out", f / "out", "--name", "t",
                                    "--seed", "1"], 4096, "t_1.png"),
        ("prepare", lambda f: ["prepare", people, "--out", f / "set", "--quiet", "--size", "64"], 1024, "set"),
        ("train-checkpoint", lambda f: ["train", "--model", "tiny", "--data", train_set, "--output-dir", f / "run",
                                        "--max-steps", "1", "--resolution", "64", "--shuffle-prob-end", "0",
                                        "--batch-size", "1", "--no-progress", "--checkpoint-every", "1"], 8192, "run"),
    ]
    for case_id, argv, limit, name in cases:
        folder = corpus.folder(f"full-{case_id}")
        corpus.add(f"full-{case_id}", "disk-full", argv(folder), USER_ERROR, name, "too large", "hint",
                   writes=True, max_file_bytes=limit, check=_no_file_left)


def _no_file_left(case, result) -> None:
    """A failed write leaves no file: an empty folder at most (the output folder made for the first write),
    the first log lines of a training run, or the samples `prepare` finished before the disk filled."""
    allowed = (".json", ".jsonl", ".log", ".txt", ".png", ".jpg", ".yaml")
    for dirpath, _, names in os.walk(case.cwd):
        for name in names:
            path = Path(dirpath) / name
            late_product = name.endswith((".safetensors", ".fid", ".pt")) or (
                "prepare" not in case.argv and "train" not in case.argv and name.endswith(allowed))
            _assert(not late_product, f"{path} was written although the disk was full")


# ---- damaged JSON / safetensors where one is read ------------------------------------------------------
def _base_with_unet_config(folder: Path, name: str, data: bytes | str) -> Path:
    (folder / name / "unet").mkdir(parents=True)
    cf.write(folder / name / "unet", "config.json", data)
    return folder / name


def add_damaged_file_cases(corpus: Corpus) -> None:
    shared = corpus.folder("damaged")
    adapter = cf.PARITY / "adapter.ckpt"
    bases = {
        "unet-config-not-json": (_base_with_unet_config(shared, "base_text", "{not json"), ["config.json", "JSON"]),
        "unet-config-binary": (_base_with_unet_config(shared, "base_bin", b"\x00\xff\x00"), ["config.json", "binary"]),
        "single-file-bad-header": (cf.bad_safetensors_header(shared, "base.safetensors"), ["base.safetensors"]),
        "single-file-not-sd": (cf.save_safetensors(shared, "lora.safetensors", {"x.weight": _zeros(2)}),
                               ["lora.safetensors", "not a Stable Diffusion"]),
    }
    fifo_base = shared / "base_fifo" / "unet"
    fifo_base.mkdir(parents=True)
    cf.fifo(fifo_base, "config.json")
    bases["unet-config-fifo"] = (shared / "base_fifo", ["config.json", "FIFO"])
    for kind, (base, words) in bases.items():
        out = corpus.folder(f"check-base-{kind}") / "out.safetensors"
        corpus.add(f"check-base-{kind}", "damaged", ["convert", "--adapter", adapter, "--out", out, "--check-base",
                                                     base], USER_ERROR, *words)
    info = {"format": "facefact.fact-training-set", "format_version": 1, "settings": {"size": 64}, "complete": True}
    sets = {
        "dataset-json-not-json": ("{broken", ["dataset.json", "not valid JSON"]),
        "dataset-json-list": ("[1, 2]", ["dataset.json", "not a facefact training set"]),
        "dataset-json-caches-text": (json.dumps({**info, "caches": {"latents": "x"}}), ["dataset.json", "caches"]),
    }
    for kind, (data, words) in sets.items():
        folder = corpus.folder(f"set-{kind}")
        root = cf.prepared_set(folder, "set", [cf.good_entry()])
        cf.write(root, "dataset.json", data)
        corpus.add(f"set-{kind}", "damaged", ["train", "--model", "tiny", "--data", root, "--output-dir",
                                              folder / "run", "--max-steps", "1", "--resolution", "64",
                                              "--shuffle-prob-end", "0", "--batch-size", "1", "--no-progress"],
                   USER_ERROR, *words, writes=True, check=_nothing_trained(folder / "run"))
    folder = corpus.folder("prepare-into-damaged-set")  # prepare resuming into a damaged set: the same words
    root = cf.prepared_set(folder, "set", [cf.good_entry()])
    cf.write(root, "dataset.json", "{broken")
    corpus.add("prepare-into-damaged-set", "damaged", ["prepare", corpus.folder("full-people"), "--out", root,
                                                       "--quiet", "--size", "64"], USER_ERROR, "dataset.json",
               "not valid JSON")


def _zeros(n: int):
    import torch

    return torch.zeros(n)


def _nothing_trained(run: Path):
    def check(case, result):
        _assert(not (run / "adapter.safetensors").exists() and not (run / "checkpoints").exists(), "a model was saved")
    return check


# ---- huge templates, --list-faces ------------------------------------------------------------------------
def add_template_cases(corpus: Corpus) -> None:
    from PIL import Image

    shared = corpus.folder("templates")
    no_face = cf.write(shared, "plain.png", cf.png_bytes(256, 256))
    corpus.add("template-list-no-face", "templates", [*TEMPLATE, "--template", no_face, "--list-faces"],
               PROBLEM_FOUND, "0 faces", cwd=shared)
    corpus.add("template-list-no-face-json", "templates", [*TEMPLATE, "--template", no_face, "--list-faces",
                                                           "--json"], PROBLEM_FOUND, '"faces": []', cwd=shared)
    bomb = cf.write(shared, "bomb.png", cf.png_header_only(12_000, 12_000))
    corpus.add("template-over-100mp", "templates", [*TEMPLATE, "--template", bomb, "--face", FACE, "--out",
                                                    corpus.folder("template-over-100mp") / "out"], USER_ERROR,
               "bomb.png", "144 megapixels", "every pixel")
    # Over the 50 MP of a face photo (which may be decoded at half size): a template keeps every pixel.
    big = shared / "big.jpg"
    canvas = Image.new("RGB", (7200, 7200), (120, 140, 160))
    canvas.paste(Image.open(cf.ASTRONAUT).convert("RGB").resize((1800, 1800)), (2700, 2700))
    canvas.save(big, quality=70)
    del canvas
    folder = corpus.folder("template-52mp-full-size")
    corpus.add("template-52mp-full-size", "templates", [*TEMPLATE, "--template", big, "--face", FACE, "--out",
                                                        folder / "out", "--name", "big", "--seed", "1"], OK, "big_1",
               writes=True, check=lambda case, result: _assert(
                   Image.open(folder / "out" / "big_1.png").size == (7200, 7200), "the template was not kept full size"))
