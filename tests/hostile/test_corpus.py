"""Issue 13's acceptance: the hostile-input corpus through the real CLI, each case in its own process.

For every case: the documented exit code, no traceback, no raw escape character, words naming the
file or setting, its folder unchanged (nothing half-written) unless it may write, no temporaries of
facefact's naming anywhere, and an end within the runner's time and memory limits.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import corpus
import corpus_round2
import corpus_settings

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
GROUPS = ["photos", "checkpoints", "numbers", "outputs", "training", "prepare", "prompts", "identities",
          "disk-full", "damaged", "templates"]
TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?\.tmp$")

pytestmark = pytest.mark.slow  # the whole corpus runs once, in its session fixture: minutes


def _snapshot(folder: Path) -> dict[str, int]:
    files = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            try:
                files[str(path.relative_to(folder))] = path.lstat().st_size if path.is_file() else -1
            except OSError:
                files[str(path.relative_to(folder))] = -2
    return files


@pytest.fixture(scope="session")
def corpus_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    built = corpus.Corpus(root / "cases")
    for add in (corpus.add_photo_cases, corpus.add_checkpoint_cases, corpus_settings.add_number_cases,
                corpus_settings.add_output_cases, corpus_settings.add_training_set_cases,
                corpus_settings.add_prepare_cases, corpus_settings.add_prompt_cases,
                corpus_round2.add_identity_cases, corpus_round2.add_more_output_cases,
                corpus_round2.add_disk_full_cases, corpus_round2.add_damaged_file_cases,
                corpus_round2.add_template_cases):
        add(built)
    before = {case.id: _snapshot(case.cwd) for case in built.cases}
    cases_file = root / "cases.json"
    cases_file.write_text(json.dumps([{"id": c.id, "argv": c.argv, "cwd": str(c.cwd), "max_file_bytes": c.max_file_bytes}
                                      for c in built.cases]))
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "FACEFACT_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "FACEFACT_HOME": str(root / "home"), "XDG_CONFIG_HOME": str(root / "xdg"),
           "FACEFACT_HASH_CACHE": str(root / "hashes.json")}
    for var in ("FACEFACT_CONFIG", "FACEFACT_ADAPTER", "FACEFACT_ENCODER", "FACEFACT_BASE_MODEL"):
        env.pop(var, None)
    subprocess.run([sys.executable, str(HERE / "runner.py"), str(cases_file), str(root / "results.json")],
                   env=env, check=True, timeout=900, cwd=root)
    results = json.loads((root / "results.json").read_text())
    return built, before, results


def _problems(case, before, result) -> list[str]:
    output = result["output"]
    problems = []
    if result["timed_out"]:
        problems.append(f"did not finish within the time limit ({result['seconds']} s)")
    if result["code"] != case.code:
        problems.append(f"exit code {result['code']}, expected {case.code}")
    if "Traceback" in output:
        problems.append("a traceback")
    if "\x1b" in output:
        problems.append("a raw escape character in the output")
    missing = [m for m in case.mentions if m.lower() not in output.lower()]
    if missing:
        problems.append(f"the message does not mention {missing}")
    if not case.writes and _snapshot(case.cwd) != before:
        problems.append("its folder changed (something was written)")
    if case.check is not None and not problems:
        try:
            case.check(case, result)
        except AssertionError as err:
            problems.append(f"check failed: {err}")
    return problems


def test_the_corpus_is_large_and_covers_every_class(corpus_run):
    built, _, _ = corpus_run
    assert len(built.cases) >= 150
    assert {case.group for case in built.cases} == set(GROUPS)
    assert len({case.id for case in built.cases}) == len(built.cases)


@pytest.mark.parametrize("group", GROUPS)
def test_every_case_is_refused_cleanly(corpus_run, group):
    built, before, results = corpus_run
    failures = []
    for case in (c for c in built.cases if c.group == group):
        problems = _problems(case, before[case.id], results[case.id])
        if problems:
            tail = results[case.id]["output"][-800:]
            failures.append(f"{case.id} ({' '.join(case.argv)}): {'; '.join(problems)}\n    output: {tail}")
    assert not failures, "\n".join(failures)


def test_no_temporary_file_is_left_anywhere(corpus_run):
    built, _, _ = corpus_run
    left = [str(Path(d) / n) for d, _, names in os.walk(built.root) for n in names if TEMPORARY.match(n)]
    assert not left
