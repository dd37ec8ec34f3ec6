"""Corpus cases for settings (flags, config files), outputs, training sets, prepare and prompt files."""
from __future__ import annotations

import json
from pathlib import Path

import corpus_files as cf
from corpus import GENERATE, OK, PROBLEM_FOUND, USER_ERROR, Corpus

FACE = str(cf.ASTRONAUT)
EVALUATE = ["evaluate", "--model", "tiny"]  # evaluate, as generate, defaults to the real models


# ---- numbers and types ------------------------------------------------------------------------------
GENERATE_FLAGS = [  # (id, flags, words the message must hold)
    ("guidance-nan", ["--guidance", "nan"], ["--guidance"]), ("guidance-inf", ["--guidance", "inf"], ["--guidance"]),
    ("guidance-neg-inf", ["--guidance", "-inf"], ["--guidance"]),
    ("guidance-huge", ["--guidance", "1e308"], ["--guidance"]), ("guidance-negative", ["--guidance", "-1"], ["--guidance"]),
    ("seed-2p63", ["--seed", str(2**63)], ["--seed"]), ("seed-negative", ["--seed", "-1"], ["--seed"]),
    ("seed-float", ["--seed", "1.5"], ["--seed"]), ("seed-text", ["--seed", "abc"], ["--seed"]),
    ("seed-range-overflow", ["--seed", str(2**63 - 1), "-n", "2"], ["--seed"]),
    ("steps-zero", ["--steps", "0"], ["--steps"]), ("steps-negative", ["--steps", "-5"], ["--steps"]),
    ("steps-huge", ["--steps", "100000"], ["--steps"]), ("steps-float", ["--steps", "1.5"], ["--steps"]),
    ("n-zero", ["-n", "0"], ["-n"]), ("n-float", ["-n", "1.5"], ["-n"]), ("n-huge", ["-n", "100000"], ["-n"]),
    ("size-huge", ["--size", "100000"], ["100000", "2048"]), ("size-not-8", ["--size", "100"], ["multiple of 8"]),
    ("size-zero", ["--size", "0"], ["multiple of 8"]), ("size-negative", ["--size", "-8"], ["multiple of 8"]),
    ("size-text", ["--size", "big"], ["--size"]), ("width-huge", ["--width", "4096", "--height", "64"], ["width", "2048"]),
    ("height-absurd", ["--height", str(10**20)], ["height"]),
    ("scale-nan", ["--scale", "nan"], ["--scale"]), ("scale-big", ["--scale", "3"], ["--scale"]),
    ("scale-negative", ["--scale", "-0.1"], ["--scale"]), ("control-scale-nan", ["--control-scale", "nan"], ["--control-scale"]),
]

GENERATE_CONFIGS = [  # (id, YAML text, words)
    ("cfg-face-no", "generate:\n  cfg_face: 'no'\n", ["cfg_face"]),
    ("cfg-steps-text", "generate:\n  steps: ten\n", ["steps", "facefact.yaml"]),  # the file's key, not a flag
    ("cfg-guidance-nan", "generate:\n  guidance: .nan\n", ["guidance", "facefact.yaml"]),
    ("cfg-scale-list", "generate:\n  scale: [1]\n", ["'scale'", "facefact.yaml"]),
    ("cfg-n-float", "generate:\n  n: 1.5\n", ["'n'", "facefact.yaml"]),
    ("cfg-size-huge", "generate:\n  size: 16384\n", ["2048"]),
    ("cfg-not-mapping", "- a\n- b\n", ["mapping"]),
    ("cfg-unknown-key", "colour: blue\n", ["colour"]),
    ("cfg-binary", b"\x00\x01\x02binary\xff", ["binary"]),
]

TRAIN_FLAGS = [  # a value that is not a number of the setting's kind: argparse names the flag; a range: the setting
    ("batch-float", ["--batch-size", "1.7"], ["--batch-size"]), ("lr-nan", ["--learning-rate", "nan"], ["--learning-rate"]),
    ("lr-inf", ["--learning-rate", "inf"], ["--learning-rate"]), ("lr-zero", ["--learning-rate", "0"], ["learning_rate"]),
    ("fair-nan", ["--fair-weight", "nan"], ["--fair-weight"]), ("fair-negative", ["--fair-weight", "-1"], ["fair_weight"]),
    ("seed-2p63", ["--seed", str(2**63)], ["seed"]), ("max-steps-zero", ["--max-steps", "0"], ["max_steps"]),
    ("face-drop-2", ["--face-drop-prob", "2"], ["face_drop_prob"]), ("beta1-nan", ["--adam-beta1", "nan"], ["--adam-beta1"]),
    ("grad-norm-inf", ["--max-grad-norm", "inf"], ["--max-grad-norm"]),
    ("resolution-huge", ["--resolution", "100000"], ["resolution"]), ("workers-negative", ["--num-workers", "-1"], ["num_workers"]),
    ("steps-text", ["--max-steps", "ten"], ["--max-steps"]),
]

TRAIN_CONFIGS = [
    ("batch-float", "batch_size: 1.7\n", ["batch_size"]), ("use-cache-no", "use_cache: 'no'\n", ["use_cache"]),
    ("lr-text", "learning_rate: fast\n", ["learning_rate"]), ("max-steps-text", "max_steps: ten\n", ["max_steps"]),
    ("prompts-number", "validation_prompts: 5\n", ["validation_prompts"]),
    ("checkpointing-yes", "gradient_checkpointing: 'yes'\n", ["gradient_checkpointing"]),
    ("lr-nan", "learning_rate: .nan\n", ["learning_rate"]), ("list", "- 1\n- 2\n", ["mapping"]),
    ("unknown-key", "learning_rat: 0.1\n", ["learning_rat"]), ("binary", b"\x00\x00\xffbinary", ["binary"]),
]

PREPARE_FLAGS = [
    ("crop-zero", ["--crop-scale", "0"], ["--crop-scale"]), ("crop-nan", ["--crop-scale", "nan"], ["--crop-scale"]),
    ("min-face-nan", ["--min-face-size", "nan"], ["--min-face-size"]),
    ("caption-words-negative", ["--max-caption-words", "-1"], ["--max-caption-words"]),
    ("size-zero", ["--size", "0"], ["--size"]), ("workers-zero", ["--workers", "0"], ["--workers"]),
    ("yaw-inf", ["--max-yaw", "inf"], ["--max-yaw"]), ("score-2", ["--min-score", "2"], ["--min-score"]),
]


def add_number_cases(corpus: Corpus) -> None:
    for case_id, flags, words in GENERATE_FLAGS:
        out = corpus.folder(f"gen-{case_id}") / "out"
        corpus.add(f"gen-{case_id}", "numbers", [*GENERATE, "--face", FACE, "--out", out, *flags], USER_ERROR, *words)
    for case_id, text, words in GENERATE_CONFIGS:
        folder = corpus.folder(f"gen-{case_id}")
        config = cf.write(folder, "facefact.yaml", text)
        base = [a for a in GENERATE if a not in ("--steps", "1", "--size", "64")]  # flags would win over the file
        fast = [] if b"steps" in (text if isinstance(text, bytes) else text.encode()) else ["--steps", "1"]
        corpus.add(f"gen-{case_id}", "numbers", [*base, *fast, "--face", FACE, "--out", folder / "out",
                                                 "--config", config], USER_ERROR, *words)
    for case_id, flags, words in TRAIN_FLAGS:
        folder = corpus.folder(f"train-{case_id}")
        corpus.add(f"train-{case_id}", "numbers", ["train", "--model", "tiny", "--data", folder / "set",
                                                   "--output-dir", folder / "run", "--no-progress", *flags],
                   USER_ERROR, *words)
    for case_id, text, words in TRAIN_CONFIGS:
        folder = corpus.folder(f"train-config-{case_id}")
        config = cf.write(folder, "train.yaml", text)
        corpus.add(f"train-config-{case_id}", "numbers", ["train", "--model", "tiny", "--config", config, "--data",
                                                          folder / "set", "--output-dir", folder / "run"],
                   USER_ERROR, *words)
    photos = corpus.folder("prepare-photos")
    for case_id, flags, words in PREPARE_FLAGS:
        out = corpus.folder(f"prepare-{case_id}") / "out"
        corpus.add(f"prepare-{case_id}", "numbers", ["prepare", photos, "--out", out, "--quiet", *flags],
                   USER_ERROR, *words)
    evaluate = [("guidance-nan", ["--guidance-scale", "nan"], ["--guidance-scale"]),
                ("seed-negative", ["--seed", "-1"], ["--seed"]), ("size-huge", ["--size", "100000"], ["2048"]),
                ("steps-huge", ["--steps", "5000"], ["--steps"]), ("seeds-zero", ["--seeds", "0"], ["--seeds"])]
    for case_id, flags, words in evaluate:
        folder = corpus.folder(f"eval-{case_id}")
        corpus.add(f"eval-{case_id}", "numbers", [*EVALUATE, "--identities", folder, "--out", folder / "run",
                                                  "--no-progress", *flags], USER_ERROR, *words)
    for case_id, flags in (("min-size-nan", ["--min-size", "nan"]), ("min-size-negative", ["--min-size", "-1"])):
        corpus.add(f"inspect-{case_id}", "numbers", ["faces", "inspect", FACE, *flags], USER_ERROR, "--min-size")
    for case_id, flags, words in (("heads-zero", ["--heads", "0"], ["--heads"]),
                                  ("dim-head-text", ["--dim-head", "x"], ["--dim-head"])):
        folder = corpus.folder(f"convert-{case_id}")
        corpus.add(f"convert-{case_id}", "numbers", ["convert", "--adapter", cf.PARITY / "adapter.ckpt", "--out",
                                                     folder / "o.safetensors", *flags], USER_ERROR, *words)


# ---- outputs -------------------------------------------------------------------------------------------
def add_output_cases(corpus: Corpus) -> None:
    def a_file(case_id: str) -> Path:
        return cf.write(corpus.folder(case_id), "taken", "a file, not a folder\n")

    adapter = cf.PARITY / "adapter.ckpt"
    long_name = "n" * 300
    cases = [
        ("gen-out-is-file", lambda f: [*GENERATE, "--face", FACE, "--out", f], ["is a file"]),
        ("gen-out-under-file", lambda f: [*GENERATE, "--face", FACE, "--out", f / "sub"], ["is a file"]),
        ("gen-name-too-long", lambda f: [*GENERATE, "--face", FACE, "--out", f.parent / "out", "--name", long_name],
         ["--name"]),
        ("gen-out-name-too-long", lambda f: [*GENERATE, "--face", FACE, "--out", f.parent / long_name], ["--out"]),
        ("convert-out-under-file", lambda f: ["convert", "--adapter", adapter, "--out", f / "a.safetensors"], ["is a file"]),
        ("convert-out-is-dir", lambda f: ["convert", "--adapter", adapter, "--out", f.parent], ["folder"]),
        ("convert-out-name-too-long", lambda f: ["convert", "--adapter", adapter, "--out",
                                                 f.parent / f"{long_name}.safetensors"], ["--out"]),
        ("prepare-out-is-file", lambda f: ["prepare", f.parent, "--out", f, "--quiet"], ["is a file"]),
        ("train-output-is-file", lambda f: ["train", "--model", "tiny", "--data", f.parent, "--output-dir", f],
         ["is a file"]),
        ("eval-out-is-file", lambda f: [*EVALUATE, "--identities", f.parent, "--out", f], ["is a file"]),
        ("eval-report-out-is-dir", lambda f: ["evaluate", "report", f.parent, "--out", f.parent], ["folder"]),
    ]
    if _cannot_write("/sys"):  # a folder no one may write in, root included (sysfs)
        cases += [("gen-out-not-writable", lambda f: [*GENERATE, "--face", FACE, "--out", "/sys/facefact-out"],
                   ["/sys/facefact-out", "cannot be created"]),
                  ("convert-out-not-writable", lambda f: ["convert", "--adapter", adapter, "--out",
                                                          "/sys/facefact.safetensors"], ["cannot be created"]),
                  ("train-output-not-writable", lambda f: ["train", "--model", "tiny", "--data", f.parent,
                                                           "--output-dir", "/sys/run"],
                   ["--output-dir", "cannot be created"])]
    for case_id, argv, words in cases:
        corpus.add(case_id, "outputs", argv(a_file(case_id)), USER_ERROR, *words)


def _cannot_write(folder: str) -> bool:
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            return False
    except OSError:
        return True


# ---- prepared training sets -------------------------------------------------------------------------
def add_training_set_cases(corpus: Corpus) -> None:
    def train(case_id: str, entries, *words, image=None, mask=None, at_training_time=False):
        folder = corpus.folder(f"set-{case_id}")
        data = cf.prepared_set(folder, "set", entries, image=image, mask=mask)
        extra = ["--max-steps", "1", "--resolution", "64", "--shuffle-prob-end", "0", "--batch-size", "1",
                 "--no-progress", "--checkpoint-every", "1"]
        case = corpus.add(f"set-{case_id}", "training", ["train", "--model", "tiny", "--data", data, "--output-dir",
                                                         folder / "run", *extra], USER_ERROR, *words,
                          writes=at_training_time)
        if at_training_time:  # found when the sample is read (as sample 50,000 of a real set would be)
            case.check = lambda case_, result: _assert_nothing_trained(folder / "run")

    good = cf.good_entry
    train("absolute-path", [good(image="/etc/hostname")], "index.jsonl line 1", "/etc/hostname")
    train("dotdot-path", [good(mask="../../../etc/hostname")], "index.jsonl line 1", "mask")
    train("not-object", ["[1, 2, 3]"], "index.jsonl line 1", "not a JSON object")
    train("not-json", ["{broken"], "line 1", "not valid JSON")
    train("missing-keys", [{"id": "a", "identity": "x"}], "index.jsonl line 1", "lacks")
    train("path-number", [good(condition=5)], "condition", "inside the training set")
    train("empty-index", [], "empty")
    train("batch-larger", [good()], "batch_size")  # --batch-size 2 added below
    corpus.cases[-1].argv[corpus.cases[-1].argv.index("--batch-size") + 1] = "2"
    train("missing-image", [good(image="samples/ok/nothing.png")], "nothing.png", "missing", "prepare")
    train("corrupt-image", [good()], "a.image.png", "not an image", "prepare", image=b"\x89PNG\r\n\x1a\ngarbage",
          at_training_time=True)
    train("huge-mask", [good()], "a.mask.png", "megapixels", mask=cf.png_header_only(12000, 12000),
          at_training_time=True)
    folder = corpus.folder("set-symlink-out")
    data = cf.prepared_set(folder, "set", [good(image="samples/ok/link.png")])
    (data / "samples" / "ok" / "link.png").symlink_to("/etc/hostname")
    corpus.add("set-symlink-out", "training", ["train", "--model", "tiny", "--data", data, "--output-dir", folder / "run",
                                               "--shuffle-prob-end", "0", "--no-progress"], USER_ERROR,
               "outside the training set")
    folder = corpus.folder("set-no-index")
    (folder / "set").mkdir()
    corpus.add("set-no-index", "training", ["train", "--model", "tiny", "--data", folder / "set", "--output-dir",
                                            folder / "run"],
               USER_ERROR, "index.jsonl")


def _assert_nothing_trained(run: Path) -> None:
    assert not (run / "adapter.safetensors").exists() and not (run / "checkpoints").exists(), "a model was saved"


# ---- prepare: bad entries are recorded and the run goes on ------------------------------------------
def _rejected(case, reasons: dict[str, str]):
    """Check: rejected.jsonl gives each named entry (file name, or manifest:line) its reason; the index exists."""
    def check(case_, result):
        rows = [json.loads(line) for line in (case.cwd / "out" / "rejected.jsonl").read_text().splitlines()]
        found = {Path(row["source"]).name: row["reason"] for row in rows}
        for name, reason in reasons.items():
            assert found.get(name) == reason, (name, reason, found)
        assert (case.cwd / "out" / "index" / "manifest.json").is_file(), "no index written"
    return check


def add_prepare_cases(corpus: Corpus) -> None:
    folder = corpus.folder("prepare-mixed")
    person = folder / "photos" / "alice"
    person.mkdir(parents=True)
    (person / "good.jpg").write_bytes(cf.ASTRONAUT.read_bytes())
    (person / "broken.jpg").write_text("not a photo")
    (person / "other.jpg").write_bytes(cf.ASTRONAUT.read_bytes())
    (person / "other.txt").write_bytes(b"\xff\xfe caption in UTF-16 \x00")
    for name, data in (("x.avif", b"\0\0\0\x1cftypavif"), ("x.heic", b"\0\0\0\x18ftypheic"), ("x.gif", b"GIF89a"),
                       ("x.svg", b"<svg/>")):
        (person / name).write_bytes(data)
    cf.fifo(person, "pipe.jpg")
    case = corpus.add("prepare-mixed", "prepare", ["prepare", folder / "photos", "--out", folder / "out", "--quiet",
                                                   "--size", "64"], OK, "rejected", writes=True)
    case.check = _rejected(case, {"broken.jpg": "unreadable", "other.jpg": "bad_caption_file",
                                  "x.avif": "unsupported_format", "x.heic": "unsupported_format",
                                  "x.gif": "unsupported_format", "x.svg": "unsupported_format",
                                  "pipe.jpg": "unreadable"})
    folder = corpus.folder("prepare-jsonl")
    manifest = cf.write(folder, "m.jsonl", "\n".join([json.dumps({"path": str(cf.ASTRONAUT), "identity": "a"}),
                                                      "[1, 2]", "not json", json.dumps({"path": "x.jpg"})]) + "\n")
    case = corpus.add("prepare-jsonl", "prepare", ["prepare", manifest, "--out", folder / "out", "--quiet",
                                                   "--size", "64"], OK, "rejected", writes=True)
    case.check = _rejected(case, {"m.jsonl:2": "bad_manifest_row", "m.jsonl:3": "bad_manifest_row",
                                  "m.jsonl:4": "bad_manifest_row"})
    for case_id, data, words in (("binary-csv", b"path,identity\n\x00\x01\x02\xff\xfe", ["binary"]),
                                 ("utf16-csv", "path,identity\n".encode("utf-16"), ["manifest"]),
                                 ("empty-csv", b"", ["no photos"])):
        folder = corpus.folder(f"prepare-{case_id}")
        manifest = cf.write(folder, "m.csv", data)
        corpus.add(f"prepare-{case_id}", "prepare", ["prepare", manifest, "--out", folder / "out", "--quiet"],
                   USER_ERROR, "m.csv", *words)
    folder = corpus.folder("prepare-only-bad")
    (folder / "photos" / "bob").mkdir(parents=True)
    (folder / "photos" / "bob" / "a.jpg").write_text("nope")
    corpus.add("prepare-only-bad", "prepare", ["prepare", folder / "photos", "--out", folder / "out", "--quiet"],
               PROBLEM_FOUND, "rejected", writes=True)


# ---- prompt files ------------------------------------------------------------------------------------
PROMPT_FILES = [
    ("binary.txt", b"\x00\x01\x02\x03\xff", ["binary"]), ("string.yaml", "just one string\n", ["single str"]),
    ("number.yaml", "42\n", ["single int"]), ("empty.txt", "", ["no prompts"]),
    ("broken.json", '["a", ', ["invalid JSON"]), ("object.json", '{"prompts": "a portrait"}', ["must be a list"]),
    ("ints.json", "[1, 2, 3]", ["prompt entry"]), ("latin1.txt", "caf\xe9 portrait\n".encode("latin-1"), ["UTF-8"]),
    ("bad.yaml", "prompts: [a, b\n", ["invalid YAML"]), ("negative.yaml", "negative_prompt: [1]\nprompts: [a]\n",
                                                         ["negative_prompt"]),
]


def add_prompt_cases(corpus: Corpus) -> None:
    people = corpus.folder("eval-people")
    (people / "ada").mkdir(exist_ok=True)
    (people / "ada" / "1.jpg").write_bytes(cf.ASTRONAUT.read_bytes())
    specials = {"fifo": cf.fifo(people, "prompts.txt"), "directory": cf.directory(people, "prompts.yaml")}
    files = {name: cf.write(corpus.folder("eval-prompts"), name, data) for name, data, _ in PROMPT_FILES}
    for name, _, words in PROMPT_FILES:
        folder = corpus.folder(f"eval-prompts-{name}")
        corpus.add(f"eval-prompts-{name}", "prompts", [*EVALUATE, "--identities", people, "--prompts", files[name],
                                                       "--out", folder / "run", "--no-progress"], USER_ERROR,
                   name, *words)
    for kind, path in specials.items():
        folder = corpus.folder(f"eval-prompts-{kind}")
        corpus.add(f"eval-prompts-{kind}", "prompts", [*EVALUATE, "--identities", people, "--prompts", path,
                                                       "--out", folder / "run", "--no-progress"], USER_ERROR, path.name)
    folder = corpus.folder("eval-compare-missing")
    corpus.add("eval-compare-missing", "prompts", [*EVALUATE, "--identities", people, "--compare", folder / "nope",
                                                   "--out", folder / "run", "--no-progress"], USER_ERROR, "nope")
    folder = corpus.folder("eval-embedder-bad")
    corpus.add("eval-embedder-bad", "prompts", [*EVALUATE, "--identities", people, "--embedder", "nosuch",
                                                "--out", folder / "run", "--no-progress", "--steps", "1"],
               USER_ERROR, "nosuch")
